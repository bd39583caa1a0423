package pack

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/wormvault/wormvault/internal/loopfs"
)

// mustReadAll checks that every record appended so far reads back.
func mustReadAll(t *testing.T, p *Packs, recs []Record, locs []Location) {
	t.Helper()
	for i, r := range recs {
		got, err := p.Read(locs[i], r.Hash, int64(len(r.Data)))
		if err != nil || !bytes.Equal(got, r.Data) {
			t.Errorf("Read record %d at %+v: err %v, equal %v", i, locs[i], err, bytes.Equal(got, r.Data))
		}
	}
}

// mustPackSizes returns the size of every pack file in dir.
func mustPackSizes(t *testing.T, p *Packs) map[int64]int64 {
	t.Helper()
	ids, err := p.IDs()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int64]int64, len(ids))
	for _, id := range ids {
		if out[id], err = p.Size(id); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestAppendRecoversAfterDiskFull is issue 14's wedge: after ENOSPC the
// writer must not stay "closed" until a restart, nor leave empty packs
// behind, and appends must resume by themselves once space is freed.
func TestAppendRecoversAfterDiskFull(t *testing.T) {
	t.Parallel()
	mnt := loopfs.Mount(t, 16<<20)
	dir := filepath.Join(mnt, "packs")
	p := mustOpen(t, dir, Options{})

	var acked []Record
	var ackedLocs []Location
	recs := records(t, 4096, 100_000)
	locs, _, err := p.Append(recs)
	if err != nil {
		t.Fatalf("Append before the disk is full: %v", err)
	}
	acked, ackedLocs = append(acked, recs...), append(ackedLocs, locs...)
	first := p.Active()
	sizeBefore, _ := p.Size(first)

	ballast := filepath.Join(mnt, "ballast")
	loopfs.Fill(t, ballast)

	// The write fails for want of space: the pack it failed in is cut back
	// to its last durable record, and no pack is open.
	_, _, err = p.Append(records(t, 200_000))
	if !NoSpace(err) {
		t.Fatalf("Append on a full disk: %v, want ENOSPC", err)
	}
	if got, _ := p.Size(first); got != sizeBefore {
		t.Errorf("pack %d is %d bytes after the failed append, want it cut back to %d", first, got, sizeBefore)
	}
	if p.Active() != 0 || !NoSpace(p.Err()) {
		t.Errorf("after the failure: Active %d, Err %v; want 0 and ENOSPC", p.Active(), p.Err())
	}
	// Every later attempt fails with the cause, not "closed", and leaves no
	// empty pack behind.
	for range 3 {
		if _, _, err := p.Append(records(t, 100)); !NoSpace(err) {
			t.Fatalf("Append while still full: %v, want ENOSPC", err)
		}
		if err := p.Ready(); !NoSpace(err) {
			t.Fatalf("Ready while still full: %v, want ENOSPC", err)
		}
	}
	if sizes := mustPackSizes(t, p); len(sizes) != 1 || sizes[first] != sizeBefore {
		t.Errorf("packs on disk while full = %v, want only pack %d of %d bytes", sizes, first, sizeBefore)
	}
	mustReadAll(t, p, acked, ackedLocs)

	// Space returns: the next append starts a new pack, without a restart.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err != nil {
		t.Fatalf("Ready after space was freed: %v", err)
	}
	recs = records(t, 1, 50_000)
	locs, _, err = p.Append(recs)
	if err != nil {
		t.Fatalf("Append after space was freed: %v", err)
	}
	if locs[0].Pack <= first || p.Err() != nil {
		t.Errorf("records went to pack %d (Err %v), want a new pack after %d", locs[0].Pack, p.Err(), first)
	}
	acked, ackedLocs = append(acked, recs...), append(ackedLocs, locs...)
	mustReadAll(t, p, acked, ackedLocs)
}

// TestOpenOnFullDisk: a vault must start on a full filesystem (to serve
// reads), so Open succeeds without an open pack, and the first append
// after space returns starts one.
func TestOpenOnFullDisk(t *testing.T) {
	t.Parallel()
	mnt := loopfs.Mount(t, 16<<20)
	dir := filepath.Join(mnt, "packs")
	p := mustOpen(t, dir, Options{})
	recs := records(t, 3000)
	locs, _, err := p.Append(recs)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	ballast := filepath.Join(mnt, "ballast")
	loopfs.Fill(t, ballast)

	q, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open on a full disk: %v, want success without an open pack", err)
	}
	t.Cleanup(func() { q.Close() })
	if q.Active() != 0 || !NoSpace(q.Err()) {
		t.Errorf("Open on a full disk: Active %d, Err %v; want 0 and ENOSPC", q.Active(), q.Err())
	}
	if ids, _ := q.IDs(); len(ids) != 1 {
		t.Errorf("packs after Open on a full disk = %v, want only the first (no empty pack left)", ids)
	}
	mustReadAll(t, q, recs, locs)
	if _, _, err := q.Append(records(t, 10)); !NoSpace(err) {
		t.Errorf("Append on a full disk: %v, want ENOSPC", err)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	more := records(t, 10)
	if _, _, err := q.Append(more); err != nil {
		t.Errorf("Append after space was freed: %v", err)
	}
}

// TestClosedStaysClosed: only Close (or OpenReadOnly) makes appends fail
// for good.
func TestClosedStaysClosed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := mustOpen(t, dir, Options{})
	p.Close()
	if _, _, err := p.Append(records(t, 10)); err == nil {
		t.Error("Append after Close succeeded")
	}
	if err := p.Ready(); err == nil {
		t.Error("Ready after Close = nil")
	}
	r, err := OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := r.IDs()
	if _, _, err := r.Append(records(t, 10)); err == nil {
		t.Error("Append on a read-only Packs succeeded")
	}
	if after, _ := r.IDs(); len(after) != len(before) {
		t.Errorf("a read-only Packs created a pack: %v -> %v", before, after)
	}
}
