package api

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
)

func TestChunkLifecycle(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 64<<10)

	// A new chunk: 201 with its index row, the minimum retention by default.
	c := ts.put(t, h, body, http.StatusCreated)
	wantUntil := t0.Add(minRetention)
	if c.Hash != h.String() || c.Size != int64(len(body)) || c.Created == nil || !*c.Created ||
		!c.StoredAt.Equal(t0) || !c.RetainUntil.Equal(wantUntil) {
		t.Fatalf("PUT new = %+v (created %v), want hash %s size %d created true stored_at %v retain_until %v",
			c, deref(c.Created), h, len(body), t0, wantUntil)
	}
	if n := ts.countRows(t, "chunks"); n != 1 {
		t.Fatalf("chunks rows = %d, want 1", n)
	}
	if got := ts.retainUntil(t, h); !got.Equal(wantUntil) {
		t.Fatalf("row retain_until = %v, want %v", got, wantUntil)
	}
	if got, want := ts.blobFiles(t), []string{blobFile(h)}; !slices.Equal(got, want) {
		t.Fatalf("blob files = %v, want %v", got, want)
	}
	fi, err := os.Stat(ts.absPath(blobFile(h)))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o440 {
		t.Errorf("blob file mode = %v, want 0440", fi.Mode().Perm())
	}
	onDisk, err := os.ReadFile(ts.absPath(blobFile(h)))
	if err != nil || !bytes.Equal(onDisk, body) {
		t.Fatalf("blob file content differs from the upload (err %v)", err)
	}

	// The same chunk again: 200, not created, nothing new.
	ts.clk.Advance(time.Hour)
	before := ts.state(t)
	c = ts.put(t, h, body, http.StatusOK)
	if c.Created == nil || *c.Created || !c.StoredAt.Equal(t0) || !c.RetainUntil.Equal(wantUntil) || c.Size != int64(len(body)) {
		t.Fatalf("PUT again = %+v (created %v), want created false stored_at %v retain_until %v", c, deref(c.Created), t0, wantUntil)
	}
	ts.assertUnchanged(t, before)

	// The re-upload is verified: other bytes of the same length are refused.
	other := bytes.Clone(body)
	other[len(other)/2] ^= 1
	resp := ts.do(t, http.MethodPut, chunkPath(h), ts.token(t, auth.RoleAgent), other, nil)
	wantError(t, resp, http.StatusUnprocessableEntity, "hash_mismatch")
	ts.assertUnchanged(t, before)

	// HEAD: size and retention, no body.
	resp = ts.do(t, http.MethodHead, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD: status %d, want 200", resp.StatusCode)
	}
	if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(body)) {
		t.Errorf("HEAD Content-Length = %q, want %d", got, len(body))
	}
	if got, want := resp.Header.Get(HeaderRetainUntil), wantUntil.Format(time.RFC3339); got != want {
		t.Errorf("HEAD %s = %q, want %q", HeaderRetainUntil, got, want)
	}
	if len(resp.body) != 0 {
		t.Errorf("HEAD sent %d body bytes", len(resp.body))
	}

	// GET as reader: exactly the bytes.
	resp = ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: status %d, want 200; body %.200s", resp.StatusCode, resp.body)
	}
	if !bytes.Equal(resp.body, body) {
		t.Fatalf("GET returned %d bytes that differ from the %d uploaded", len(resp.body), len(body))
	}
	if got := resp.Header.Get("Content-Type"); got != "application/octet-stream" {
		t.Errorf("GET Content-Type = %q", got)
	}
	if got, want := resp.Header.Get(HeaderRetainUntil), wantUntil.Format(time.RFC3339); got != want {
		t.Errorf("GET %s = %q, want %q", HeaderRetainUntil, got, want)
	}

	// The uploader is recorded and visible to an auditor.
	resp = ts.do(t, http.MethodGet, chunkPath(h)+"/retention", ts.token(t, auth.RoleAuditor), nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET retention: status %d; body %s", resp.StatusCode, resp.body)
	}
	var rc chunkResponse
	decodeJSON(t, resp, &rc)
	if rc.UploadedBy != "test-agent" || rc.Hash != h.String() || !rc.RetainUntil.Equal(wantUntil) {
		t.Errorf("retention = %+v, want uploaded_by test-agent, retain_until %v", rc, wantUntil)
	}

	// Unknown chunks: 404 for GET and HEAD.
	_, unknown := randomChunk(t, 10)
	wantError(t, ts.do(t, http.MethodGet, chunkPath(unknown), ts.token(t, auth.RoleReader), nil, nil), http.StatusNotFound, "not_found")
	wantError(t, ts.do(t, http.MethodHead, chunkPath(unknown), ts.token(t, auth.RoleAgent), nil, nil), http.StatusNotFound, "not_found")
	ts.assertUnchanged(t, before)
}

func TestPutMaxSizeBoundary(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, testMaxChunk)
	c := ts.put(t, h, body, http.StatusCreated)
	if c.Size != testMaxChunk {
		t.Fatalf("size = %d, want %d", c.Size, testMaxChunk)
	}
	// Chunked, so that only the stream limit, not Content-Length, is at work.
	resp := ts.do(t, http.MethodPut, chunkPath(h), ts.token(t, auth.RoleAgent), bytes.NewReader(body), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chunked re-upload of exactly the maximum: status %d; body %s", resp.StatusCode, resp.body)
	}
}

func TestMissing(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	agent := ts.token(t, auth.RoleAgent)
	var stored, absent []chunk.Hash
	for range 2 {
		b, h := randomChunk(t, 100)
		ts.put(t, h, b, http.StatusCreated)
		stored = append(stored, h)
	}
	for range 3 {
		_, h := randomChunk(t, 100)
		absent = append(absent, h)
	}
	before := ts.state(t)

	tests := []struct {
		name string
		ask  []chunk.Hash
		want []chunk.Hash
	}{
		{"mixed, in order, deduplicated",
			[]chunk.Hash{absent[2], stored[0], absent[0], absent[2], stored[1], absent[1], absent[0]},
			[]chunk.Hash{absent[2], absent[0], absent[1]}},
		{"all stored", []chunk.Hash{stored[1], stored[0], stored[1]}, nil},
		{"none stored", []chunk.Hash{absent[1], absent[0]}, []chunk.Hash{absent[1], absent[0]}},
		{"empty list", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ask := hexes(tt.ask)
			if ask == nil {
				ask = []string{}
			}
			resp := ts.postJSON(t, "/v1/chunks/missing", agent, map[string]any{"hashes": ask})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d; body %s", resp.StatusCode, resp.body)
			}
			var got struct {
				Missing []string `json:"missing"`
			}
			decodeJSON(t, resp, &got)
			want := hexes(tt.want)
			if want == nil {
				want = []string{}
			}
			if got.Missing == nil || !slices.Equal(got.Missing, want) {
				t.Errorf("missing(%v) = %v, want %v (body %s)", ask, got.Missing, want, resp.body)
			}
		})
	}
	ts.assertUnchanged(t, before)
}

func TestRetainExtends(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	agent := ts.token(t, auth.RoleAgent)
	b1, h1 := randomChunk(t, 100)
	b2, h2 := randomChunk(t, 100)
	ts.put(t, h1, b1, http.StatusCreated)
	ts.put(t, h2, b2, http.StatusCreated)
	_, unknown := randomChunk(t, 100)
	audit := ts.countRows(t, "audit_log")

	until := t0.Add(90 * 24 * time.Hour)
	resp := ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{
		"hashes": []string{h1.String(), unknown.String(), h2.String(), h1.String()}, "retain_until": until,
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("retain: status %d; body %s", resp.StatusCode, resp.body)
	}
	var got retainResult
	decodeJSON(t, resp, &got)
	if got.Extended != 2 || got.Unchanged != 0 || !slices.Equal(got.NotFound, []string{unknown.String()}) || !got.RetainUntil.Equal(until) {
		t.Fatalf("retain = %+v, want extended 2, unchanged 0, not_found [%s], retain_until %v", got, unknown, until)
	}
	for _, h := range []chunk.Hash{h1, h2} {
		if u := ts.retainUntil(t, h); !u.Equal(until) {
			t.Errorf("retain_until of %s = %v, want %v", h, u, until)
		}
	}
	if n := ts.countRows(t, "audit_log"); n != audit+1 {
		t.Errorf("audit entries = %d, want %d (one per extension)", n, audit+1)
	}

	// The same again changes nothing and writes no audit entry.
	before := ts.state(t)
	resp = ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": []string{h1.String(), h2.String()}, "retain_until": until})
	decodeJSON(t, resp, &got)
	if resp.StatusCode != http.StatusOK || got.Extended != 0 || got.Unchanged != 2 || got.NotFound == nil || len(got.NotFound) != 0 {
		t.Fatalf("retain again: status %d, %+v; want 200, extended 0, unchanged 2, not_found []", resp.StatusCode, got)
	}
	ts.assertUnchanged(t, before)
}

// TestRetainShorterReportsEffectiveDate: asking for less than a chunk's
// current retention changes nothing, and the answer says how long the
// chunk is really kept, not the shorter date asked for.
func TestRetainShorterReportsEffectiveDate(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	agent := ts.token(t, auth.RoleAgent)
	b1, h1 := randomChunk(t, 100)
	b2, h2 := randomChunk(t, 100)
	ts.put(t, h1, b1, http.StatusCreated)
	ts.put(t, h2, b2, http.StatusCreated)
	long, longer, short := t0.Add(400*24*time.Hour), t0.Add(500*24*time.Hour), t0.Add(100*24*time.Hour)
	for h, until := range map[chunk.Hash]time.Time{h1: long, h2: longer} {
		if resp := ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": []string{h.String()}, "retain_until": until}); resp.StatusCode != http.StatusOK {
			t.Fatalf("retain %s until %v: status %d; body %s", h, until, resp.StatusCode, resp.body)
		}
	}

	before := ts.state(t)
	for _, tt := range []struct {
		name   string
		hashes []string
		want   time.Time
	}{
		{"one chunk", []string{h1.String()}, long},
		// Every listed chunk is kept at least until the earliest of them.
		{"two chunks", []string{h2.String(), h1.String()}, long},
		{"with an unknown hash", []string{h2.String(), strings.Repeat("ab", 32)}, longer},
	} {
		resp := ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": tt.hashes, "retain_until": short})
		var got retainResult
		decodeJSON(t, resp, &got)
		if resp.StatusCode != http.StatusOK || got.Extended != 0 || !got.RetainUntil.Equal(tt.want) {
			t.Errorf("%s: retain until %v: status %d, %+v; want 200, extended 0, retain_until %v (the effective date, not the one asked for)",
				tt.name, short, resp.StatusCode, got, tt.want)
		}
	}
	ts.assertUnchanged(t, before)

	// Partly longer: the ones asked for are extended, and the answer is the
	// date asked for, which is now the earliest.
	mid := t0.Add(450 * 24 * time.Hour)
	resp := ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": []string{h1.String(), h2.String()}, "retain_until": mid})
	var got retainResult
	decodeJSON(t, resp, &got)
	if got.Extended != 1 || got.Unchanged != 1 || !got.RetainUntil.Equal(mid) {
		t.Errorf("retain until %v over %v and %v: %+v; want extended 1, unchanged 1, retain_until %v", mid, long, longer, got, mid)
	}
}

func TestPutRetainUntilHeader(t *testing.T) {
	t.Parallel()
	floor := t0.Add(minRetention)
	later := t0.Add(400 * 24 * time.Hour)
	tests := []struct {
		name   string
		header string
		want   time.Time
	}{
		{"later than the minimum", later.Format(time.RFC3339), later},
		{"earlier than the minimum", t0.Add(24 * time.Hour).Format(time.RFC3339), floor},
		{"in the past", t0.Add(-24 * time.Hour).Format(time.RFC3339), floor},
		{"with an offset", later.In(time.FixedZone("x", 5*3600)).Format(time.RFC3339), later},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t)
			body, h := randomChunk(t, 100)
			resp := ts.do(t, http.MethodPut, chunkPath(h), ts.token(t, auth.RoleAgent), body, http.Header{HeaderRetainUntil: {tt.header}})
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("status %d; body %s", resp.StatusCode, resp.body)
			}
			var c chunkResponse
			decodeJSON(t, resp, &c)
			if !c.RetainUntil.Equal(tt.want) {
				t.Errorf("response retain_until = %v, want %v", c.RetainUntil, tt.want)
			}
			if got := ts.retainUntil(t, h); !got.Equal(tt.want) {
				t.Errorf("row retain_until = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("re-upload extends, never shortens", func(t *testing.T) {
		t.Parallel()
		ts := newTestServer(t)
		body, h := randomChunk(t, 100)
		ts.put(t, h, body, http.StatusCreated)
		audit := ts.countRows(t, "audit_log")
		agent := ts.token(t, auth.RoleAgent)

		resp := ts.do(t, http.MethodPut, chunkPath(h), agent, body, http.Header{HeaderRetainUntil: {later.Format(time.RFC3339)}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("re-PUT later: status %d; body %s", resp.StatusCode, resp.body)
		}
		var c chunkResponse
		decodeJSON(t, resp, &c)
		if c.Created == nil || *c.Created || !c.RetainUntil.Equal(later) {
			t.Errorf("re-PUT later = %+v, want created false, retain_until %v", c, later)
		}
		if got := ts.retainUntil(t, h); !got.Equal(later) {
			t.Errorf("row retain_until = %v, want %v", got, later)
		}
		if n := ts.countRows(t, "audit_log"); n != audit+1 {
			t.Errorf("audit entries = %d, want %d: an extension is audited", n, audit+1)
		}

		before := ts.state(t)
		for _, earlier := range []time.Time{later.Add(-time.Hour), t0.Add(time.Hour)} {
			resp = ts.do(t, http.MethodPut, chunkPath(h), agent, body, http.Header{HeaderRetainUntil: {earlier.Format(time.RFC3339)}})
			decodeJSON(t, resp, &c)
			if resp.StatusCode != http.StatusOK || !c.RetainUntil.Equal(later) {
				t.Errorf("re-PUT asking %v: status %d, retain_until %v; want 200, %v", earlier, resp.StatusCode, c.RetainUntil, later)
			}
		}
		ts.assertUnchanged(t, before)
	})

	bad := []struct {
		name, header string
	}{
		{"not RFC 3339", "tomorrow"},
		{"date only", later.Format(time.DateOnly)},
		{"beyond the maximum retention", t0.AddDate(101, 0, 0).Format(time.RFC3339)},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t)
			body, h := randomChunk(t, 100)
			before := ts.state(t)
			resp := ts.do(t, http.MethodPut, chunkPath(h), ts.token(t, auth.RoleAgent), body, http.Header{HeaderRetainUntil: {tt.header}})
			wantError(t, resp, http.StatusBadRequest, "invalid")
			ts.assertUnchanged(t, before)
		})
	}
}

// TestBadHashInPath sends requests verbatim over TCP, because net/http's
// client could normalise some of these targets. Policy: only the canonical
// form (64 lowercase hex digits) names a chunk. A target that chi still
// routes to /v1/chunks/{hash} must be 400 "invalid"; one whose "/" or ".."
// makes it match no route must be 404 "not_found". Either way nothing is
// stored, no file appears anywhere under the test's temp root, and
// /etc/passwd is untouched.
func TestBadHashInPath(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 100)
	hex := h.String()
	var encoded strings.Builder
	for i := range len(hex) {
		fmt.Fprintf(&encoded, "%%%02x", hex[i])
	}
	i := strings.IndexAny(hex, "abcdef")
	mixedCase := hex[:i] + strings.ToUpper(hex[i:i+1]) + hex[i+1:]
	tests := []struct {
		name, hash string
		status     int
		code       string
	}{
		{"too short", hex[:63], 400, "invalid"},
		{"too long", hex + "0", 400, "invalid"},
		{"non-hex", hex[:63] + "g", 400, "invalid"},
		{"uppercase", strings.ToUpper(hex), 400, "invalid"},
		{"one uppercase letter", mixedCase, 400, "invalid"},
		{"0x prefix", "0x" + hex[:62], 400, "invalid"},
		{"percent-encoded digits", encoded.String(), 400, "invalid"},
		{"encoded slashes", "..%2F..%2Fetc%2Fpasswd", 400, "invalid"},
		{"encoded lowercase slashes", "..%2f..%2f..%2f..%2fetc%2fpasswd", 400, "invalid"},
		{"encoded dots", "%2e%2e", 400, "invalid"},
		{"encoded dots and slash", "%2e%2e%2f" + hex[:55], 400, "invalid"},
		{"dot dot", "..", 400, "invalid"},
		{"NUL", hex[:63] + "%00", 400, "invalid"},
		{"space", hex[:63] + "%20", 400, "invalid"},
		{"traversal", "../../etc/passwd", 404, "not_found"},
		{"traversal after a hash", hex + "/../../../etc/passwd", 404, "not_found"},
		{"traversal to the chunk", "../chunks/" + hex, 404, "not_found"},
		{"empty", "", 404, "not_found"},
	}
	passwd, passwdErr := os.Stat("/etc/passwd")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.state(t)
			req := fmt.Sprintf("PUT /v1/chunks/%s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\n"+
				"Content-Length: %d\r\nConnection: close\r\n\r\n%s", tt.hash, ts.token(t, auth.RoleAgent), len(body), body)
			wantError(t, rawRequest(t, ts.Server, req), tt.status, tt.code)
			ts.assertUnchanged(t, before)

			for _, m := range []string{http.MethodGet, http.MethodHead} {
				req := fmt.Sprintf("%s /v1/chunks/%s HTTP/1.1\r\nHost: vault\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n",
					m, tt.hash, ts.token(t, auth.RoleReader))
				resp := rawRequest(t, ts.Server, req)
				wantError(t, resp, tt.status, tt.code)
				if bytes.Contains(resp.body, []byte("root:")) {
					t.Fatalf("%s served /etc/passwd", m)
				}
			}
		})
	}
	if passwdErr == nil {
		after, err := os.Stat("/etc/passwd")
		if err != nil || !after.ModTime().Equal(passwd.ModTime()) || after.Size() != passwd.Size() {
			t.Errorf("/etc/passwd changed: %v", err)
		}
	}
	// The canonical form itself works on the same server.
	ts.put(t, h, body, http.StatusCreated)
}

func TestPutHashMismatch(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	stored, storedHash := randomChunk(t, 4096)
	ts.put(t, storedHash, stored, http.StatusCreated)
	_, newHash := randomChunk(t, 4096)

	flipped := bytes.Clone(stored)
	flipped[0] ^= 0x80
	tests := []struct {
		name string
		hash chunk.Hash
		body []byte
	}{
		{"new chunk, other content", newHash, stored},
		{"new chunk, empty body", newHash, []byte{}},
		{"stored chunk, one bit flipped", storedHash, flipped},
		{"stored chunk, truncated", storedHash, stored[:len(stored)-1]},
		{"stored chunk, extended", storedHash, append(bytes.Clone(stored), 0)},
		{"stored chunk, empty body", storedHash, []byte{}},
	}
	for _, tt := range tests {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/chunked=%v", tt.name, chunked), func(t *testing.T) {
				before := ts.state(t)
				var body any = tt.body
				if chunked {
					body = bytes.NewReader(tt.body)
				}
				resp := ts.do(t, http.MethodPut, chunkPath(tt.hash), ts.token(t, auth.RoleAgent), body, nil)
				wantError(t, resp, http.StatusUnprocessableEntity, "hash_mismatch")
				ts.assertUnchanged(t, before)
			})
		}
	}
}

func TestPutTooLarge(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	big, bigHash := randomChunk(t, 2<<20)
	over, overHash := randomChunk(t, testMaxChunk+1)
	stored, storedHash := randomChunk(t, 1000)
	ts.put(t, storedHash, stored, http.StatusCreated)

	tests := []struct {
		name string
		hash chunk.Hash
		body any
	}{
		{"one byte over, honest Content-Length", overHash, over},
		{"2 MiB, honest Content-Length", bigHash, big},
		{"one byte over, chunked", overHash, bytes.NewReader(over)},
		{"2 MiB, chunked", bigHash, bytes.NewReader(big)},
		{"stored chunk, oversize chunked body", storedHash, bytes.NewReader(append(bytes.Clone(stored), big...))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.state(t)
			resp := ts.do(t, http.MethodPut, chunkPath(tt.hash), ts.token(t, auth.RoleAgent), tt.body, nil)
			wantError(t, resp, http.StatusRequestEntityTooLarge, "too_large")
			ts.assertUnchanged(t, before)
		})
	}
}

func TestRetainErrors(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	agent := ts.token(t, auth.RoleAgent)
	body, h := randomChunk(t, 100)
	ts.put(t, h, body, http.StatusCreated)
	long := t0.Add(200 * 24 * time.Hour)
	resp := ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": []string{h.String()}, "retain_until": long})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("retain: status %d; body %s", resp.StatusCode, resp.body)
	}
	ts.clk.Advance(time.Hour)

	t.Run("earlier than current retention", func(t *testing.T) {
		before := ts.state(t)
		shorter := t0.Add(100 * 24 * time.Hour)
		resp := ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": []string{h.String()}, "retain_until": shorter})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d; body %s", resp.StatusCode, resp.body)
		}
		var got retainResult
		decodeJSON(t, resp, &got)
		if got.Extended != 0 || got.Unchanged != 1 || len(got.NotFound) != 0 {
			t.Errorf("retain shorter = %+v, want extended 0, unchanged 1, not_found []", got)
		}
		if u := ts.retainUntil(t, h); !u.Equal(long) {
			t.Errorf("retain_until = %v, want unchanged %v", u, long)
		}
		ts.assertUnchanged(t, before)
	})

	t.Run("unknown hash", func(t *testing.T) {
		before := ts.state(t)
		_, unknown := randomChunk(t, 100)
		resp := ts.postJSON(t, "/v1/chunks/retain", agent, map[string]any{"hashes": []string{unknown.String()}, "retain_until": long})
		var got retainResult
		decodeJSON(t, resp, &got)
		if resp.StatusCode != http.StatusOK || got.Extended != 0 || got.Unchanged != 0 || !slices.Equal(got.NotFound, []string{unknown.String()}) {
			t.Errorf("retain unknown: status %d, %+v; want 200, not_found [%s]", resp.StatusCode, got, unknown)
		}
		ts.assertUnchanged(t, before)
	})

	tooMany := make([]string, testMaxBatch+1)
	for i := range tooMany {
		tooMany[i] = h.String()
	}
	future := long.Add(time.Hour).Format(time.RFC3339)
	bad := []struct {
		name, body string
		status     int
		code       string
		inMessage  string
	}{
		{"retain_until in the past", `{"hashes":["` + h.String() + `"],"retain_until":"` + t0.Add(-time.Hour).Format(time.RFC3339) + `"}`, 400, "invalid", "retain_until"},
		{"retain_until now", `{"hashes":["` + h.String() + `"],"retain_until":"` + t0.Add(time.Hour).Format(time.RFC3339) + `"}`, 400, "invalid", "retain_until"},
		{"retain_until beyond the maximum", `{"hashes":["` + h.String() + `"],"retain_until":"` + t0.AddDate(101, 0, 0).Format(time.RFC3339) + `"}`, 400, "invalid", "retain_until"},
		{"retain_until missing", `{"hashes":["` + h.String() + `"]}`, 400, "invalid", "retain_until"},
		{"retain_until not a time", `{"hashes":["` + h.String() + `"],"retain_until":"soon"}`, 400, "invalid", ""},
		{"no hashes", `{"hashes":[],"retain_until":"` + future + `"}`, 400, "invalid", "hashes"},
		{"invalid JSON", `{"hashes":[`, 400, "invalid", ""},
		{"not an object", `["` + h.String() + `"]`, 400, "invalid", ""},
		{"empty body", ``, 400, "invalid", ""},
		{"unknown field", `{"hashes":["` + h.String() + `"],"retain_until":"` + future + `","shorten":true}`, 400, "invalid", "shorten"},
		{"trailing data", `{"hashes":["` + h.String() + `"],"retain_until":"` + future + `"} {}`, 400, "invalid", "trailing"},
		{"too many hashes", `{"hashes":["` + strings.Join(tooMany, `","`) + `"],"retain_until":"` + future + `"}`, 400, "invalid", "at most 100"},
		{"bad hash at index 2", `{"hashes":["` + h.String() + `","` + h.String() + `","` + strings.ToUpper(h.String()) + `"],"retain_until":"` + future + `"}`, 400, "invalid", "hashes[2]"},
		{"hash not a string", `{"hashes":[1],"retain_until":"` + future + `"}`, 400, "invalid", ""},
		{"far beyond the body limit", `{"hashes":["` + strings.Repeat("a", 4<<20) + `"],"retain_until":"` + future + `"}`, 413, "too_large", ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.state(t)
			resp := ts.do(t, http.MethodPost, "/v1/chunks/retain", agent, tt.body, http.Header{"Content-Type": {"application/json"}})
			msg := wantError(t, resp, tt.status, tt.code)
			if !strings.Contains(msg, tt.inMessage) {
				t.Errorf("message %q does not mention %q", msg, tt.inMessage)
			}
			ts.assertUnchanged(t, before)
		})
	}
}

func TestMissingErrors(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	agent := ts.token(t, auth.RoleAgent)
	body, h := randomChunk(t, 100)
	ts.put(t, h, body, http.StatusCreated)
	tooMany := make([]string, testMaxBatch+1)
	for i := range tooMany {
		_, x := randomChunk(t, 8)
		tooMany[i] = x.String()
	}
	many := strings.Repeat(`"`+h.String()+`",`, 100_000)
	bad := []struct {
		name, body string
		status     int
		code       string
		inMessage  string
	}{
		{"invalid JSON", `{"hashes":`, 400, "invalid", ""},
		{"empty body", ``, 400, "invalid", ""},
		{"wrong type", `{"hashes":"` + h.String() + `"}`, 400, "invalid", ""},
		{"unknown field", `{"hashes":[],"all":true}`, 400, "invalid", "all"},
		{"trailing data", `{"hashes":[]}x`, 400, "invalid", "trailing"},
		{"too many hashes", `{"hashes":["` + strings.Join(tooMany, `","`) + `"]}`, 400, "invalid", "at most 100"},
		{"too short hash at index 1", `{"hashes":["` + h.String() + `","` + h.String()[:10] + `"]}`, 400, "invalid", "hashes[1]"},
		{"uppercase hash at index 0", `{"hashes":["` + strings.ToUpper(h.String()) + `"]}`, 400, "invalid", "hashes[0]"},
		{"path in hash", `{"hashes":["../../etc/passwd"]}`, 400, "invalid", "hashes[0]"},
		{"far beyond the body limit", `{"hashes":[` + many + `"` + h.String() + `"]}`, 413, "too_large", ""},
	}
	before := ts.state(t)
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.do(t, http.MethodPost, "/v1/chunks/missing", agent, tt.body, http.Header{"Content-Type": {"application/json"}})
			msg := wantError(t, resp, tt.status, tt.code)
			if !strings.Contains(msg, tt.inMessage) {
				t.Errorf("message %q does not mention %q", msg, tt.inMessage)
			}
			ts.assertUnchanged(t, before)
		})
	}
}

func TestCorruptContent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		damage   func(t *testing.T, path string, content []byte)
		wantCode string
	}{
		{"same length, other bytes", func(t *testing.T, path string, content []byte) {
			other := bytes.Clone(content)
			other[len(other)-1] ^= 0xff
			overwrite(t, path, other)
		}, "corrupt"},
		{"truncated", func(t *testing.T, path string, content []byte) {
			overwrite(t, path, content[:len(content)/2])
		}, "corrupt"},
		{"emptied", func(t *testing.T, path string, content []byte) {
			overwrite(t, path, nil)
		}, "corrupt"},
		{"deleted", func(t *testing.T, path string, content []byte) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "content_missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t)
			body, h := randomChunk(t, 256<<10)
			ts.put(t, h, body, http.StatusCreated)
			path := ts.absPath(blobFile(h))
			tt.damage(t, path, body)
			damaged, _ := os.ReadFile(path)

			resp := ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil)
			msg := wantError(t, resp, http.StatusInternalServerError, tt.wantCode)
			if len(damaged) > 0 && bytes.Contains(resp.body, damaged[:64]) || bytes.Contains(resp.body, body[:64]) {
				t.Errorf("response carries chunk bytes")
			}
			if strings.Contains(msg, ts.root) {
				t.Errorf("message %q reveals a path", msg)
			}
		})
	}
}

// overwrite replaces a read-only blob file's content in place.
func overwrite(t *testing.T, path string, content []byte) {
	t.Helper()
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, content, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, fs.FileMode(0o440)); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentPutSameChunk(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 512<<10)
	const n = 20
	agent := ts.token(t, auth.RoleAgent)
	start := make(chan struct{})
	type result struct {
		response
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			<-start
			r, err := send(ts.Server, http.MethodPut, chunkPath(h), agent, body, nil)
			results <- result{r, err}
		}()
	}
	close(start)
	created := 0
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("PUT: %v", r.err)
		}
		switch r.StatusCode {
		case http.StatusCreated:
			created++
		case http.StatusOK:
		default:
			t.Errorf("PUT: status %d; body %s", r.StatusCode, r.body)
		}
	}
	if created != 1 {
		t.Errorf("%d responses were 201, want exactly 1", created)
	}
	if n := ts.countRows(t, "chunks"); n != 1 {
		t.Errorf("chunks rows = %d, want 1", n)
	}
	if got, want := ts.blobFiles(t), []string{blobFile(h)}; !slices.Equal(got, want) {
		t.Errorf("blob files = %v, want %v", got, want)
	}
	resp := ts.do(t, http.MethodGet, chunkPath(h), ts.token(t, auth.RoleReader), nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(resp.body, body) {
		t.Errorf("GET after concurrent PUTs: status %d, %d bytes; want 200 and the content", resp.StatusCode, len(resp.body))
	}
}

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}

func hexes(hs []chunk.Hash) []string {
	if hs == nil {
		return nil
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}
