package pack

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
)

func records(t testing.TB, sizes ...int) []Record {
	t.Helper()
	out := make([]Record, len(sizes))
	for i, n := range sizes {
		b := make([]byte, n)
		rand.Read(b)
		out[i] = Record{Hash: chunk.Sum(b), Data: b}
	}
	return out
}

func mustOpen(t testing.TB, dir string, o Options) *Packs {
	t.Helper()
	p, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestAppendReadScan(t *testing.T) {
	t.Parallel()
	p := mustOpen(t, t.TempDir(), Options{})
	recs := records(t, 0, 1, 4096, 100_000)
	locs, sealed, err := p.Append(recs)
	if err != nil || sealed {
		t.Fatalf("Append: %v, sealed %v", err, sealed)
	}
	for i, r := range recs {
		got, err := p.Read(locs[i], r.Hash, int64(len(r.Data)))
		if err != nil || !bytes.Equal(got, r.Data) {
			t.Errorf("Read record %d: err %v, equal %v", i, err, bytes.Equal(got, r.Data))
		}
	}
	// The wrong hash or size at a location is refused.
	if _, err := p.Read(locs[2], recs[1].Hash, 4096); !errors.Is(err, ErrBadRecord) {
		t.Errorf("Read with wrong hash: %v, want ErrBadRecord", err)
	}
	if _, err := p.Read(locs[2], recs[2].Hash, 4095); !errors.Is(err, ErrBadRecord) {
		t.Errorf("Read with wrong size: %v, want ErrBadRecord", err)
	}
	var seen []ScannedRecord
	end, err := p.Scan(p.Active(), func(r ScannedRecord) error { seen = append(seen, r); return nil })
	if err != nil || len(seen) != len(recs) {
		t.Fatalf("Scan: %d records, %v", len(seen), err)
	}
	for i, r := range seen {
		if !r.Valid || r.Hash != recs[i].Hash || r.Location != locs[i] {
			t.Errorf("scanned %d = %+v, want valid at %+v", i, r, locs[i])
		}
	}
	if size, _ := p.Size(p.Active()); end != size {
		t.Errorf("Scan end = %d, want pack size %d", end, size)
	}
}

func TestSealAtLimitAndReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := mustOpen(t, dir, Options{Limit: 10_000})
	first := p.Active()
	locs, sealed, err := p.Append(records(t, 6000, 6000))
	if err != nil || !sealed {
		t.Fatalf("Append past the limit: sealed %v, %v", sealed, err)
	}
	if p.Active() == first || locs[0].Pack != first {
		t.Errorf("active %d after seal, records in %d; want a new pack after %d", p.Active(), locs[0].Pack, first)
	}
	st, _ := os.Stat(p.path(first))
	if st.Mode().Perm() != 0o440 {
		t.Errorf("sealed pack mode = %v, want 0440", st.Mode().Perm())
	}
	p.Close()
	q := mustOpen(t, dir, Options{})
	if q.Active() <= first+1 {
		t.Errorf("reopen started pack %d, want a fresh one after %d", q.Active(), first+1)
	}
	ids, _ := q.IDs()
	if len(ids) != 3 {
		t.Errorf("IDs = %v, want 3 packs", ids)
	}
}

func TestTornTailAndCorruptRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := mustOpen(t, dir, Options{})
	id := p.Active()
	recs := records(t, 1000, 2000, 3000)
	locs, _, err := p.Append(recs)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	path := p.path(id)
	good, _ := os.ReadFile(path)

	// A torn tail: half of a fourth record.
	extra := records(t, 5000)[0]
	torn := appendHeader(bytes.Clone(good), extra.Hash, len(extra.Data))
	torn = append(torn, extra.Data[:2500]...)
	os.WriteFile(path, torn, 0o640)
	// Damage inside the middle record's data.
	torn[locs[1].Offset+HeaderSize+10] ^= 0xff
	os.WriteFile(path, torn, 0o640)

	q := mustOpen(t, dir, Options{})
	var valid []bool
	end, err := q.Scan(id, func(r ScannedRecord) error { valid = append(valid, r.Valid); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, true}; !equalBools(valid, want) {
		t.Errorf("validity = %v, want %v (only the damaged record is bad)", valid, want)
	}
	if end != int64(len(good)) {
		t.Errorf("end = %d, want %d (the torn record excluded)", end, len(good))
	}
	if err := q.Truncate(id, end); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != end || st.Mode().Perm() != 0o440 {
		t.Errorf("after Truncate: size %d mode %v; want %d, 0440", st.Size(), st.Mode().Perm(), end)
	}
	if err := q.Truncate(q.Active(), 8); err == nil {
		t.Error("Truncate of the open pack succeeded")
	}
	// Neighbours of the damaged record still read.
	if _, err := q.Read(locs[2], recs[2].Hash, 3000); err != nil {
		t.Errorf("neighbour read: %v", err)
	}
}

func equalBools(a, b []bool) bool {
	return slices.Equal(a, b)
}

func TestPunch(t *testing.T) {
	t.Parallel()
	p := mustOpen(t, t.TempDir(), Options{})
	recs := records(t, 64<<10, 64<<10)
	locs, _, err := p.Append(recs)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Punch(locs[0], 64<<10)
	if errors.Is(err, ErrNoHolePunch) {
		t.Skip("filesystem without hole punching")
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Read(locs[0], recs[0].Hash, 64<<10); !errors.Is(err, ErrBadRecord) {
		t.Errorf("punched record read: %v, want ErrBadRecord", err)
	}
	if got, err := p.Read(locs[1], recs[1].Hash, 64<<10); err != nil || !bytes.Equal(got, recs[1].Data) {
		t.Errorf("neighbour after punch: %v", err)
	}
	// A scan steps over the hole to the next record.
	var found []Location
	end, err := p.Scan(p.Active(), func(r ScannedRecord) error { found = append(found, r.Location); return nil })
	if size, _ := p.Size(p.Active()); err != nil || len(found) != 1 || found[0] != locs[1] || end != size {
		t.Errorf("Scan after punch = %v, end %d, %v; want only %v, end %d", found, end, err, locs[1], size)
	}
}

func BenchmarkAppend4KiB(b *testing.B) {
	p := mustOpen(b, b.TempDir(), Options{})
	recs := records(b, make([]int, 128)...)
	for i := range recs {
		recs[i] = records(b, 4096)[0]
	}
	b.SetBytes(128 * 4096)
	for b.Loop() {
		if _, _, err := p.Append(recs); err != nil {
			b.Fatal(err)
		}
	}
}

// A read-only open creates nothing, reads and scans what is there, and
// refuses appends.
func TestOpenReadOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := mustOpen(t, dir, Options{})
	recs := records(t, 10, 2000)
	locs, _, err := p.Append(recs)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := p.IDs()
	ro, err := OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := ro.IDs(); !slices.Equal(before, after) || ro.Active() != 0 {
		t.Errorf("OpenReadOnly: packs %v (before %v), active %d; want no new pack and no active one", after, before, ro.Active())
	}
	if got, err := ro.Read(locs[1], recs[1].Hash, 2000); err != nil || !bytes.Equal(got, recs[1].Data) {
		t.Errorf("Read through a read-only open: %v", err)
	}
	n := 0
	if _, err := ro.Scan(locs[0].Pack, func(ScannedRecord) error { n++; return nil }); err != nil || n != 2 {
		t.Errorf("Scan through a read-only open: %d records, %v", n, err)
	}
	if _, _, err := ro.Append(recs); err == nil {
		t.Error("Append through a read-only open succeeded")
	}
	if _, err := OpenReadOnly(dir + "/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly of a missing directory: %v, want ErrNotExist", err)
	}
}
