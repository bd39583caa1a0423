package disk

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/wormvault/wormvault/internal/store"
)

// Space returns the size of the filesystem holding the data directory and
// the bytes on it available to an unprivileged process (statfs f_bavail):
// the figure a store.Reserve is measured against. A vault run as root may
// write past it into the blocks the filesystem keeps for root, so the
// reserve errs on the safe side.
func (d *Disk) Space() (store.Space, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.dir, &st); err != nil {
		return store.Space{}, fmt.Errorf("disk: statfs %s: %w", d.dir, err)
	}
	bs := int64(st.Bsize)
	return store.Space{Free: int64(st.Bavail) * bs, Total: int64(st.Blocks) * bs}, nil
}
