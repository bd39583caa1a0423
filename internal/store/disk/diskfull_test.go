package disk_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/loopfs"
	"github.com/wormvault/wormvault/internal/store/disk"
)

// TestOpenOnFullDisk: a vault must start on a completely full filesystem
// to serve restores, so Open tolerates a probe that fails for want of
// space (and only that), leaves no probe behind, serves reads, and Put
// fails with ENOSPC until space is freed. Space reports the filesystem.
func TestOpenOnFullDisk(t *testing.T) {
	t.Parallel()
	mnt := loopfs.Mount(t, 16<<20)
	dir := filepath.Join(mnt, "data")
	d := mustOpen(t, dir, disk.Options{})
	data := bytes.Repeat([]byte("restore me "), 1000)
	h := mustPut(t, d, data)
	ballast := filepath.Join(mnt, "ballast")
	loopfs.Fill(t, ballast)

	d = mustOpen(t, dir, disk.Options{})
	if tmps := tempFiles(t, dir); len(tmps) != 0 {
		t.Errorf("Open on a full disk left temp files: %v", tmps)
	}
	sp, err := d.Space()
	if err != nil || sp.Free != 0 || sp.Total < 8<<20 {
		t.Errorf("Space on a full 16 MiB filesystem = %+v, %v; want 0 free of about 16 MiB", sp, err)
	}
	rc, _, err := d.Open(context.Background(), h)
	if err != nil {
		t.Fatalf("Open blob on a full disk: %v", err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("read %d bytes on a full disk, want the stored %d", len(got), len(data))
	}
	big := bytes.Repeat([]byte{7}, 1<<20)
	if _, err := d.Put(context.Background(), chunk.Sum(big), bytes.NewReader(big)); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Put on a full disk: %v, want ENOSPC", err)
	}
	if tmps := tempFiles(t, dir); len(tmps) != 0 {
		t.Errorf("failed Put left temp files: %v", tmps)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(context.Background(), chunk.Sum(big), bytes.NewReader(big)); err != nil {
		t.Errorf("Put after space was freed: %v", err)
	}
	if sp, err := d.Space(); err != nil || sp.Free < 1<<20 {
		t.Errorf("Space after space was freed = %+v, %v", sp, err)
	}
}
