package api

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// FuzzReadBatch attacks the batch body parser with arbitrary frames: it
// must never panic or over-read, refuse with a client error (never a
// server one), and whatever it accepts must be exactly the frames sent,
// each within the batch limits.
func FuzzReadBatch(f *testing.F) {
	const max = 8
	f.Add(AppendFrame(nil, []byte("chunk")))
	f.Add(AppendFrame(AppendFrame(nil, []byte("one")), []byte{}))
	f.Add(AppendFrame(nil, []byte("x"))[:frameHeader-1])
	f.Add(append(AppendFrame(nil, []byte("x")), 0xff))
	huge := AppendFrame(nil, nil)
	huge[chunk.Size] = 0xff // a length of about 4 GiB
	f.Add(huge)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := readBatch(bytes.NewReader(body), int64(len(body)), max)
		if err != nil {
			if status, _ := errorStatus(err); status != http.StatusBadRequest {
				t.Fatalf("readBatch refused %d bytes with status %d (%v): a malformed body is the client's error", len(body), status, err)
			}
			return
		}
		if len(items) == 0 || len(items) > max {
			t.Fatalf("accepted %d items (limit %d)", len(items), max)
		}
		var enc []byte
		for _, it := range items {
			if len(it.Data) > MaxBatchChunk {
				t.Fatalf("accepted a %d-byte chunk (limit %d)", len(it.Data), MaxBatchChunk)
			}
			n := len(enc)
			enc = AppendFrame(enc, it.Data)
			copy(enc[n:], it.Hash[:]) // AppendFrame hashes the content; the frame carries the claimed hash
		}
		if !bytes.Equal(enc, body) {
			t.Fatalf("the accepted frames do not re-encode to the body")
		}
	})
}

// FuzzReadJSON attacks the JSON request reader every admin and agent
// request goes through: unknown fields, trailing data and bodies over the
// limit are refused as the client's error (400 or 413), never accepted
// silently and never a server error.
func FuzzReadJSON(f *testing.F) {
	h := chunk.Sum([]byte("seed")).String()
	f.Add(`{"hashes":["` + h + `"]}`)
	f.Add(`{"hashes":["` + h + `"],"retain_until":"2030-01-01T00:00:00Z"}`)
	f.Add(`{"hashes":[]} {"hashes":[]}`)
	f.Add(`{"hashes":["` + h + `"],"evil":1}`)
	f.Add(`{"hashes":` + strings.Repeat("[", 300))
	f.Fuzz(func(t *testing.T, body string) {
		const limit = 256
		r := httptest.NewRequest(http.MethodPost, "/v1/chunks/missing", strings.NewReader(body))
		var req hashesRequest
		err := readJSON(httptest.NewRecorder(), r, limit, &req)
		if err != nil {
			if status, _ := errorStatus(err); status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
				t.Fatalf("readJSON(%q): status %d (%v)", body, status, err)
			}
			return
		}
		if len(body) > limit {
			t.Fatalf("accepted a %d-byte body over the %d-byte limit", len(body), limit)
		}
		if _, err := parseHashes(req.Hashes, 4); err != nil {
			var invalid *store.InvalidError
			if !errors.As(err, &invalid) {
				t.Fatalf("parseHashes: %v is not an InvalidError", err)
			}
		}
	})
}
