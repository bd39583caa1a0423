package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func entry(seq int64, tag string) Record {
	return Record{Seq: seq, Payload: []byte(fmt.Sprintf(`{"seq":%d,"tag":%q}`, seq, tag))}
}

func appendAll(t *testing.T, j *Journal, tag string, from, to int64) {
	t.Helper()
	var prev []byte
	if from > 1 {
		var err error
		if prev, err = j.Entry(from - 1); err != nil {
			t.Fatal(err)
		}
	}
	var recs []Record
	for s := from; s <= to; s++ {
		recs = append(recs, entry(s, tag))
	}
	if err := j.Append(from-1, prev, recs); err != nil {
		t.Fatal(err)
	}
}

func scanAll(t *testing.T, j *Journal) []string {
	t.Helper()
	var out []string
	if err := j.Scan(1, func(seq int64, p []byte) error {
		out = append(out, string(p))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// treeOf computes the Merkle tree hash of payloads the way the database's
// audit tree does.
func treeOf(t *testing.T, payloads []string) tlog.Hash {
	t.Helper()
	var hashes []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	for i, p := range payloads {
		hs, err := tlog.StoredHashes(int64(i), []byte(p), r)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hs...)
	}
	h, err := tlog.TreeHash(int64(len(payloads)), r)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestAppendReopenScan(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, j, "a", 1, 5)
	appendAll(t, j, "b", 6, 6)
	j.Close()

	j, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Head() != 6 {
		t.Fatalf("head %d, want 6", j.Head())
	}
	got := scanAll(t, j)
	if len(got) != 6 || got[5] != string(entry(6, "b").Payload) {
		t.Fatalf("scan: %q", got)
	}
	th, err := j.TreeHash(6)
	if err != nil {
		t.Fatal(err)
	}
	if th != treeOf(t, got) {
		t.Fatal("journal tree hash differs from the tree of its entries")
	}
}

// A transaction that appended entries and rolled back is followed by one
// that appends the same seqs: the later records are the entries.
func TestRolledBackEntriesAreReplaced(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, j, "a", 1, 3)
	appendAll(t, j, "phantom", 4, 5) // never committed
	// The database's head is entry 3: the next transaction appends 4.
	p3, _ := j.Entry(3)
	if err := j.Append(3, p3, []Record{entry(4, "real")}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got := scanAll(t, j)
	if len(got) != 4 || got[3] != string(entry(4, "real").Payload) {
		t.Fatalf("after replacement: %q", got)
	}
}

// The database's log truncated below what it had committed: the journal
// refuses to follow it.
func TestAppendRefusesTruncatedDatabase(t *testing.T) {
	j, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	appendAll(t, j, "a", 1, 3)
	appendAll(t, j, "a", 4, 6) // confirms 3
	p6, _ := j.Entry(6)
	if err := j.Confirm(6, p6); err != nil {
		t.Fatal(err)
	}
	p2, _ := j.Entry(2)
	err = j.Append(2, p2, []Record{entry(3, "rewritten")})
	if !errors.Is(err, ErrDiverged) {
		t.Fatalf("append on a truncated database: %v, want ErrDiverged", err)
	}
	if got := scanAll(t, j); len(got) != 6 || got[2] != string(entry(3, "a").Payload) {
		t.Fatalf("journal changed: %q", got)
	}
}

// Entries in the database that the server never journaled (forged by SQL)
// stop the journal, as does a database head that differs from the
// journal's entry.
func TestAppendRefusesForgedDatabaseEntries(t *testing.T) {
	j, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	appendAll(t, j, "a", 1, 2)
	if err := j.Append(3, []byte("forged"), []Record{entry(4, "x")}); !errors.Is(err, ErrDiverged) {
		t.Fatalf("database ahead: %v, want ErrDiverged", err)
	}
	if err := j.Append(2, []byte("edited"), []Record{entry(3, "x")}); !errors.Is(err, ErrDiverged) {
		t.Fatalf("database head edited: %v, want ErrDiverged", err)
	}
	if j.Head() != 2 {
		t.Fatalf("head %d, want 2", j.Head())
	}
}

// A crash mid-append leaves a torn record; it was never fsynced, so never
// committed, and is cut off at open. A bad record before the end is
// corruption, reported.
func TestTornTailCutCorruptMiddleRefused(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, j, "a", 1, 3)
	j.Close()
	seg := filepath.Join(dir, fmt.Sprintf("%016d%s", 1, suffix))
	st, _ := os.Stat(seg)
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{200, 0, 0, 0, 1, 2, 3}) // half a header
	f.Close()
	j, err = Open(dir)
	if err != nil {
		t.Fatalf("open with torn tail: %v", err)
	}
	if j.Head() != 3 {
		t.Fatalf("head %d, want 3", j.Head())
	}
	appendAll(t, j, "a", 4, 4)
	j.Close()
	if st2, _ := os.Stat(seg); st2.Size() <= st.Size() {
		t.Fatal("append after cutting the tail did not grow the segment")
	}

	// Flip a byte of entry 2's payload: corruption in the middle.
	b, _ := os.ReadFile(seg)
	off := headerSize + len(entry(1, "a").Payload) + headerSize + 3
	b[off] ^= 0xff
	os.Chmod(seg, 0o640)
	if err := os.WriteFile(seg, b, 0o640); err != nil {
		t.Fatal(err)
	}
	// The damaged record is followed by good ones, so it is not a tail.
	if _, err := Open(dir); err == nil {
		t.Fatal("open of a journal with a corrupt record in the middle succeeded")
	}
}

func TestSegmentsRoll(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 1<<20)
	var prev []byte
	for s := int64(1); s <= 70; s++ {
		p := append([]byte(fmt.Sprintf("%d:", s)), big...)
		if err := j.Append(s-1, prev, []Record{{Seq: s, Payload: p}}); err != nil {
			t.Fatal(err)
		}
		prev = p
	}
	j.Close()
	ents, _ := os.ReadDir(dir)
	if len(ents) < 2 {
		t.Fatalf("%d segments after 70 MiB, want 2", len(ents))
	}
	j, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	n := 0
	j.Scan(1, func(seq int64, p []byte) error {
		n++
		if want := fmt.Sprintf("%d:", seq); string(p[:len(want)]) != want {
			t.Fatalf("entry %d reads %q", seq, p[:8])
		}
		return nil
	})
	if n != 70 {
		t.Fatalf("scanned %d, want 70", n)
	}
}
