// Package blobtest is the conformance suite that every store.Blobs
// implementation runs (perkeep's storagetest). It checks the contract written
// on the interface: round trips, verification on write, nothing left behind
// by any failed Put, idempotent and concurrent Puts, and the not-found
// errors.
package blobtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// Run runs the suite. open must return a new, empty store for each call; it
// is called once per subtest, with that subtest's t, and should register any
// clean-up on it. Subtests run in parallel.
func Run(t *testing.T, open func(t *testing.T) store.Blobs) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b store.Blobs)
	}{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"Large", testLarge},
		{"HashMismatch", testHashMismatch},
		{"HashMismatchKeepsExisting", testHashMismatchKeepsExisting},
		{"PutExisting", testPutExisting},
		{"ConcurrentSamePut", testConcurrentSamePut},
		{"WalkListsAll", testWalkListsAll},
		{"WalkStopsOnError", testWalkStopsOnError},
		{"WalkCancelled", testWalkCancelled},
		{"NotFound", testNotFound},
		{"Quarantine", testQuarantine},
		{"Remove", testRemove},
		{"ReaderError", testReaderError},
		{"CancelledBeforePut", testCancelledBeforePut},
		{"CancelledDuringPut", testCancelledDuringPut},
		{"CleanTempKeepsBlobs", testCleanTempKeepsBlobs},
		{"StageInvisibleUntilPublished", testStageInvisibleUntilPublished},
		{"StageDiscardLeavesNothing", testStageDiscardLeavesNothing},
		{"StageHashMismatch", testStageHashMismatch},
		{"StagePublishCancelled", testStagePublishCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// content returns n deterministic pseudo-random bytes for seed.
func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seedBytes(seed)).Read(b) // never fails
	return b
}

func seedBytes(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

func mustPut(t *testing.T, b store.Blobs, data []byte) chunk.Hash {
	t.Helper()
	h := chunk.Sum(data)
	n, err := b.Put(t.Context(), h, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Put(%s, %d bytes) error = %v", h, len(data), err)
	}
	if n != int64(len(data)) {
		t.Fatalf("Put(%s) size = %d, want %d", h, n, len(data))
	}
	return h
}

// mustRead opens h and returns its whole content, checking the size Open
// reports against what it reads.
func mustRead(t *testing.T, b store.Blobs, h chunk.Hash) []byte {
	t.Helper()
	rc, size, err := b.Open(t.Context(), h)
	if err != nil {
		t.Fatalf("Open(%s) error = %v", h, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", h, err)
	}
	if int64(len(got)) != size {
		t.Fatalf("Open(%s) size = %d, but read %d bytes", h, size, len(got))
	}
	return got
}

// walkAll returns every blob Walk reports, failing on duplicates.
func walkAll(t *testing.T, b store.Blobs) map[chunk.Hash]int64 {
	t.Helper()
	seen := make(map[chunk.Hash]int64)
	err := b.Walk(t.Context(), func(h chunk.Hash, size int64) error {
		if _, dup := seen[h]; dup {
			t.Errorf("Walk reported %s twice", h)
		}
		seen[h] = size
		return nil
	})
	if err != nil {
		t.Fatalf("Walk error = %v", err)
	}
	return seen
}

// mustBeAbsent checks that h is not stored: Stat and Open say ErrNotFound.
func mustBeAbsent(t *testing.T, b store.Blobs, h chunk.Hash) {
	t.Helper()
	if size, err := b.Stat(t.Context(), h); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat(%s) = %d, %v; want ErrNotFound", h, size, err)
	}
	rc, _, err := b.Open(t.Context(), h)
	if err == nil {
		rc.Close()
	}
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Open(%s) error = %v, want ErrNotFound", h, err)
	}
}

// mustBeEmpty checks that Walk reports nothing.
func mustBeEmpty(t *testing.T, b store.Blobs) {
	t.Helper()
	if got := walkAll(t, b); len(got) != 0 {
		t.Errorf("Walk reported %d blobs (%v), want none", len(got), got)
	}
}

func testRoundTrip(t *testing.T, b store.Blobs) {
	data := content(1, 100_000)
	h := mustPut(t, b, data)

	if got := mustRead(t, b, h); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes that differ from the %d put", len(got), len(data))
	}
	size, err := b.Stat(t.Context(), h)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("Stat(%s) = %d, %v; want %d, nil", h, size, err, len(data))
	}

	// The reader is an io.ReadSeekCloser: ranges must work.
	rc, _, err := b.Open(t.Context(), h)
	if err != nil {
		t.Fatalf("Open(%s) error = %v", h, err)
	}
	defer rc.Close()
	const off = 12345
	if pos, err := rc.Seek(off, io.SeekStart); err != nil || pos != off {
		t.Fatalf("Seek(%d) = %d, %v", off, pos, err)
	}
	part := make([]byte, 100)
	if _, err := io.ReadFull(rc, part); err != nil {
		t.Fatalf("read after Seek: %v", err)
	}
	if !bytes.Equal(part, data[off:off+100]) {
		t.Errorf("read after Seek(%d) differs from the content at that offset", off)
	}
}

func testEmpty(t *testing.T, b store.Blobs) {
	h := mustPut(t, b, nil)
	if h != chunk.Sum([]byte{}) {
		t.Fatalf("hash of empty = %s", h)
	}
	if got := mustRead(t, b, h); len(got) != 0 {
		t.Errorf("read back %d bytes, want 0", len(got))
	}
	if size, err := b.Stat(t.Context(), h); err != nil || size != 0 {
		t.Errorf("Stat(empty) = %d, %v; want 0, nil", size, err)
	}
	if got := walkAll(t, b); len(got) != 1 || got[h] != 0 {
		t.Errorf("Walk = %v, want only %s with size 0", got, h)
	}
}

func testLarge(t *testing.T, b store.Blobs) {
	const size = 20 << 20
	gen := func() io.Reader { return io.LimitReader(rand.NewChaCha8(seedBytes(20)), size) }
	hw := chunk.NewHasher()
	if _, err := io.Copy(hw, gen()); err != nil {
		t.Fatal(err)
	}
	h := chunk.SumOf(hw)

	n, err := b.Put(t.Context(), h, gen())
	if err != nil || n != size {
		t.Fatalf("Put(20 MiB) = %d, %v; want %d, nil", n, err, size)
	}
	rc, got, err := b.Open(t.Context(), h)
	if err != nil || got != size {
		t.Fatalf("Open = size %d, %v; want %d, nil", got, err, size)
	}
	defer rc.Close()
	vr := chunk.NewVerifyingReader(rc, h)
	if _, err := io.Copy(io.Discard, vr); err != nil {
		t.Fatalf("reading back 20 MiB: %v", err)
	}
	if vr.N() != size {
		t.Errorf("read back %d bytes, want %d", vr.N(), size)
	}
}

func testHashMismatch(t *testing.T, b store.Blobs) {
	data := content(2, 5000)
	wrong := chunk.Sum([]byte("something else"))
	_, err := b.Put(t.Context(), wrong, bytes.NewReader(data))
	if !errors.Is(err, chunk.ErrHashMismatch) {
		t.Fatalf("Put under the wrong hash: error = %v, want ErrHashMismatch", err)
	}
	mustBeAbsent(t, b, wrong)
	mustBeAbsent(t, b, chunk.Sum(data))
	mustBeEmpty(t, b)
}

func testHashMismatchKeepsExisting(t *testing.T, b store.Blobs) {
	data := content(3, 5000)
	h := mustPut(t, b, data)
	_, err := b.Put(t.Context(), h, bytes.NewReader(content(4, 5000)))
	if !errors.Is(err, chunk.ErrHashMismatch) {
		t.Fatalf("Put of other content under an existing hash: error = %v, want ErrHashMismatch", err)
	}
	if got := mustRead(t, b, h); !bytes.Equal(got, data) {
		t.Fatal("a rejected Put changed the existing blob")
	}
	if got := walkAll(t, b); len(got) != 1 {
		t.Errorf("Walk reported %d blobs, want 1", len(got))
	}
}

func testPutExisting(t *testing.T, b store.Blobs) {
	data := content(5, 3000)
	h := mustPut(t, b, data)
	mustPut(t, b, data)
	if got := mustRead(t, b, h); !bytes.Equal(got, data) {
		t.Fatal("content changed after a second Put")
	}
	if got := walkAll(t, b); len(got) != 1 || got[h] != int64(len(data)) {
		t.Errorf("Walk = %v, want only %s with size %d", got, h, len(data))
	}
}

func testConcurrentSamePut(t *testing.T, b store.Blobs) {
	const n = 20
	data := content(6, 70_000)
	h := chunk.Sum(data)
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			size, err := b.Put(t.Context(), h, bytes.NewReader(data))
			if err == nil && size != int64(len(data)) {
				err = fmt.Errorf("size %d, want %d", size, len(data))
			}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Put %d: %v", i, err)
		}
	}
	if got := walkAll(t, b); len(got) != 1 || got[h] != int64(len(data)) {
		t.Errorf("Walk = %v, want only %s with size %d", got, h, len(data))
	}
	if got := mustRead(t, b, h); !bytes.Equal(got, data) {
		t.Error("content differs after concurrent Puts")
	}
}

func testWalkListsAll(t *testing.T, b store.Blobs) {
	want := make(map[chunk.Hash]int64)
	for i := range 50 {
		data := content(uint64(100+i), 10*i) // includes the empty blob
		want[mustPut(t, b, data)] = int64(len(data))
	}
	got := walkAll(t, b)
	if len(got) != len(want) {
		t.Errorf("Walk reported %d blobs, want %d", len(got), len(want))
	}
	for h, size := range want {
		if gs, ok := got[h]; !ok || gs != size {
			t.Errorf("Walk: %s = %d (present %v), want %d", h, gs, ok, size)
		}
	}
}

func testWalkStopsOnError(t *testing.T, b store.Blobs) {
	for i := range 3 {
		mustPut(t, b, content(uint64(200+i), 100))
	}
	stop := errors.New("stop")
	calls := 0
	err := b.Walk(t.Context(), func(chunk.Hash, int64) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Walk with fn failing = %v after %d calls, want %v after 1", err, calls, stop)
	}
}

func testWalkCancelled(t *testing.T, b store.Blobs) {
	mustPut(t, b, content(7, 100))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := b.Walk(ctx, func(chunk.Hash, int64) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Walk(cancelled) error = %v, want context.Canceled", err)
	}
}

func testNotFound(t *testing.T, b store.Blobs) {
	h := chunk.Sum([]byte("never stored"))
	mustBeAbsent(t, b, h)
	if err := b.Quarantine(t.Context(), h); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Quarantine(absent) error = %v, want ErrNotFound", err)
	}
	// A stored neighbour must not make the absent one findable.
	mustPut(t, b, content(8, 10))
	mustBeAbsent(t, b, h)
}

func testQuarantine(t *testing.T, b store.Blobs) {
	data := content(9, 4000)
	h := mustPut(t, b, data)
	keep := mustPut(t, b, content(10, 4000))
	if err := b.Quarantine(t.Context(), h); err != nil {
		t.Fatalf("Quarantine(%s) error = %v", h, err)
	}
	mustBeAbsent(t, b, h)
	if got := walkAll(t, b); len(got) != 1 || got[keep] == 0 {
		t.Errorf("Walk after Quarantine = %v, want only %s", got, keep)
	}
	if err := b.Quarantine(t.Context(), h); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second Quarantine error = %v, want ErrNotFound", err)
	}
	// A good copy can be stored again after the bad one was moved away.
	mustPut(t, b, data)
	if got := mustRead(t, b, h); !bytes.Equal(got, data) {
		t.Error("content differs after re-put following Quarantine")
	}
}

func testRemove(t *testing.T, b store.Blobs) {
	h := mustPut(t, b, content(11, 5000))
	keep := mustPut(t, b, content(12, 5000))
	if err := b.Remove(t.Context(), h); err != nil {
		t.Fatalf("Remove(%s) error = %v", h, err)
	}
	mustBeAbsent(t, b, h)
	if got := walkAll(t, b); len(got) != 1 || got[keep] == 0 {
		t.Errorf("Walk after Remove = %v, want only %s", got, keep)
	}
	// Idempotent: the executor reruns after a crash.
	if err := b.Remove(t.Context(), h); err != nil {
		t.Errorf("second Remove error = %v, want nil", err)
	}
}

// readError is the error the suite's failing reader returns. It is a type so
// that the suite can check errors.As as well as errors.Is, as the API does
// for *http.MaxBytesError.
type readError struct{ After int64 }

func (e *readError) Error() string {
	return fmt.Sprintf("blobtest: reader failed after %d bytes", e.After)
}

// failingReader returns data and then, instead of EOF, err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func testReaderError(t *testing.T, b store.Blobs) {
	for _, after := range []int{0, 1000, 3 << 20} {
		t.Run(fmt.Sprint(after), func(t *testing.T) {
			full := content(11, after+1000)
			h := chunk.Sum(full)
			rerr := &readError{After: int64(after)}
			_, err := b.Put(t.Context(), h, &failingReader{r: bytes.NewReader(full[:after]), err: rerr})
			if !errors.Is(err, rerr) {
				t.Fatalf("Put with a reader failing after %d bytes: error = %v, want %v", after, err, rerr)
			}
			var re *readError
			if !errors.As(err, &re) || re.After != int64(after) {
				t.Errorf("errors.As(%v, *readError) failed", err)
			}
			mustBeAbsent(t, b, h)
			mustBeEmpty(t, b)
		})
	}
}

func testCancelledBeforePut(t *testing.T, b store.Blobs) {
	data := content(12, 1000)
	h := chunk.Sum(data)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := b.Put(ctx, h, bytes.NewReader(data)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put(cancelled) error = %v, want context.Canceled", err)
	}
	mustBeAbsent(t, b, h)
	mustBeEmpty(t, b)
}

// cancellingReader cancels its context on its first read, as a client that
// goes away mid-upload does, and then keeps serving the content.
type cancellingReader struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	c.cancel()
	return c.r.Read(p)
}

func testCancelledDuringPut(t *testing.T, b store.Blobs) {
	data := content(13, 3<<20)
	h := chunk.Sum(data)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := b.Put(ctx, h, &cancellingReader{r: bytes.NewReader(data), cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put cancelled mid-stream: error = %v, want context.Canceled", err)
	}
	mustBeAbsent(t, b, h)
	mustBeEmpty(t, b)
}

func testCleanTempKeepsBlobs(t *testing.T, b store.Blobs) {
	data := content(14, 2000)
	h := mustPut(t, b, data)
	if _, err := b.CleanTemp(t.Context()); err != nil {
		t.Fatalf("CleanTemp error = %v", err)
	}
	if got := mustRead(t, b, h); !bytes.Equal(got, data) {
		t.Error("CleanTemp changed a stored blob")
	}
	if got := walkAll(t, b); len(got) != 1 {
		t.Errorf("Walk after CleanTemp reported %d blobs, want 1", len(got))
	}
}

func testStageInvisibleUntilPublished(t *testing.T, b store.Blobs) {
	data := content(21, 70_000)
	h := chunk.Sum(data)
	st, err := b.Stage(t.Context(), h, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Stage error = %v", err)
	}
	defer st.Discard()
	if st.Size() != int64(len(data)) {
		t.Errorf("staged size = %d, want %d", st.Size(), len(data))
	}
	mustBeAbsent(t, b, h)
	mustBeEmpty(t, b)
	if err := st.Publish(t.Context()); err != nil {
		t.Fatalf("Publish error = %v", err)
	}
	st.Discard() // after Publish: must not remove the blob
	if got := mustRead(t, b, h); !bytes.Equal(got, data) {
		t.Error("published content differs")
	}
}

func testStageDiscardLeavesNothing(t *testing.T, b store.Blobs) {
	data := content(22, 5000)
	h := chunk.Sum(data)
	st, err := b.Stage(t.Context(), h, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Stage error = %v", err)
	}
	st.Discard()
	st.Discard() // twice is harmless
	mustBeAbsent(t, b, h)
	if n, err := b.CleanTemp(t.Context()); err != nil || n != 0 {
		t.Errorf("CleanTemp after Discard = %d, %v; want nothing left to clean", n, err)
	}
}

func testStageHashMismatch(t *testing.T, b store.Blobs) {
	data := content(23, 5000)
	wrong := chunk.Sum([]byte("another"))
	if _, err := b.Stage(t.Context(), wrong, bytes.NewReader(data)); !errors.Is(err, chunk.ErrHashMismatch) {
		t.Fatalf("Stage with the wrong hash: error = %v, want ErrHashMismatch", err)
	}
	mustBeAbsent(t, b, wrong)
	if n, err := b.CleanTemp(t.Context()); err != nil || n != 0 {
		t.Errorf("CleanTemp after a refused Stage = %d, %v; want nothing left to clean", n, err)
	}
}

func testStagePublishCancelled(t *testing.T, b store.Blobs) {
	data := content(24, 5000)
	h := chunk.Sum(data)
	st, err := b.Stage(t.Context(), h, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Stage error = %v", err)
	}
	defer st.Discard()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := st.Publish(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled context: error = %v, want context.Canceled", err)
	}
	mustBeAbsent(t, b, h)
}
