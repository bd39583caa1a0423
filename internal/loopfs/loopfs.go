// Package loopfs gives tests a small, real filesystem of their own: an
// ext4 image, loop-mounted, that they can fill to the last block. Disk-full
// behaviour cannot be trusted to a fake: what fails first (a create, a
// write, an fsync), and what still works on a full filesystem, is the
// kernel's to decide.
//
// Mounting needs root, mkfs.ext4, mount and a loop device. Where any is
// missing the test is skipped with a message that says which, never
// silently passed.
package loopfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Mount creates an ext4 image of size bytes, mounts it on a new directory
// and returns that directory. The filesystem has no blocks reserved for
// root (mkfs -m 0), so that "full" means full for a server running as root
// too. It is unmounted at cleanup, even if the test fails; a mount that is
// still busy then is detached lazily.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loopfs: skipped: mounting a loop filesystem needs root (run the tests as root, as CI does)")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("loopfs: skipped: %s not found (install e2fsprogs and mount): %v", tool, err)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("loopfs: mkfs.ext4 %s: %v\n%s", img, err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("loopfs: skipped: cannot loop-mount an image here (no loop device, or not allowed in this container): %v: %s",
			err, strings.TrimSpace(string(out)))
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Logf("loopfs: umount %s: %v: %s; detaching lazily", mnt, err, strings.TrimSpace(string(out)))
			if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
				t.Errorf("loopfs: umount -l %s: %v: %s", mnt, err, strings.TrimSpace(string(out)))
			}
		}
	})
	return mnt
}

// Fill writes the file path until the filesystem has no block left, syncs
// it, and returns how many bytes it took. Removing the file frees them.
func Fill(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatalf("loopfs: fill: %v", err)
	}
	defer f.Close()
	var n int64
	// Large writes first, then single blocks, so that the last free block
	// goes too.
	for _, step := range []int{1 << 20, 4 << 10, 1 << 10} {
		buf := make([]byte, step)
		for {
			m, err := f.Write(buf)
			n += int64(m)
			if errors.Is(err, unix.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatalf("loopfs: fill %s: %v", path, err)
			}
		}
	}
	// ext4 may find more room at writeback than it promised at write
	// time, or less: sync, and take what is left.
	if err := f.Sync(); err != nil && !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("loopfs: fill %s: sync: %v", path, err)
	}
	for {
		m, err := f.Write(make([]byte, 1<<10))
		n += int64(m)
		if err != nil {
			break
		}
	}
	_ = f.Sync()
	return n
}

// Available returns the bytes available to unprivileged users on the
// filesystem holding path.
func Available(t testing.TB, path string) int64 {
	t.Helper()
	free, err := available(path)
	if err != nil {
		t.Fatal(err)
	}
	return free
}

func available(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("loopfs: statfs %s: %w", path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
