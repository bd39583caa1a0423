//go:build !unix

package agent

import (
	"os"
	"time"
)

// setSymlinkTime does nothing where links have no settable time.
func setSymlinkTime(*os.Root, string, time.Time) error { return nil }
