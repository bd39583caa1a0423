//go:build unix

package agent

import (
	"os"
	"path"
	"time"

	"golang.org/x/sys/unix"
)

// setSymlinkTime sets the modification time of the symbolic link name
// itself (never its target), through a descriptor of its directory opened
// within root: os.Root has no Lchtimes.
func setSymlinkTime(root *os.Root, name string, t time.Time) error {
	d, err := root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.UtimesNanoAt(int(d.Fd()), path.Base(name), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
