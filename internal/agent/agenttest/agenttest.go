// Package agenttest runs a real vault in process for the agent's tests: the
// API handler over a store on a fresh PostgreSQL database (internal/pgtest)
// and a data directory in t.TempDir(), with agent and reader tokens, and
// an optional middleware in front of the API to count, hold or break
// requests.
package agenttest

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// Options configures a test vault.
type Options struct {
	// Middleware, if set, wraps the API handler.
	Middleware func(http.Handler) http.Handler
	// PackThreshold is the largest chunk stored in a pack file; 0 means
	// the vault's default (256 KiB), negative disables packs.
	PackThreshold int64
}

// Vault is a running test vault.
type Vault struct {
	URL     string
	DataDir string
	Store   *store.Store
	// Agent, Reader and Auditor are tokens of those roles.
	Agent, Reader, Auditor string
}

// New starts a vault for one test; it stops at cleanup.
func New(t testing.TB, o Options) *Vault {
	t.Helper()
	pool := pgtest.NewPool(t)
	dir := filepath.Join(t.TempDir(), "data")
	blobs, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatalf("disk.Open: %v", err)
	}
	so := store.Options{}
	if o.PackThreshold >= 0 {
		packs, err := pack.Open(filepath.Join(dir, "packs"), pack.Options{})
		if err != nil {
			t.Fatalf("pack.Open: %v", err)
		}
		t.Cleanup(func() { packs.Close() })
		so.Packs, so.PackThreshold = packs, o.PackThreshold
		if so.PackThreshold == 0 {
			so.PackThreshold = 256 << 10
		}
	}
	log := slog.New(slog.DiscardHandler)
	clk := clock.Real{}
	st := store.New(pool, blobs, clk, log, nil, so)
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	const vaultID = "agent-test"
	var h http.Handler = api.NewHandler(api.Options{Store: st, Verifier: auth.NewVerifier(key.Public().(ed25519.PublicKey), vaultID, st, clk), Log: log})
	if o.Middleware != nil {
		h = o.Middleware(h)
	}
	srv := httptest.NewServer(h)
	// Cleanups run last-registered first: the server stops (waiting for
	// its handlers) before the store's committer and the pool close.
	t.Cleanup(st.Close)
	t.Cleanup(srv.Close)
	v := &Vault{URL: srv.URL, DataDir: dir, Store: st}
	issuer := auth.NewIssuer(key, vaultID, clk)
	for role, dst := range map[auth.Role]*string{auth.RoleAgent: &v.Agent, auth.RoleReader: &v.Reader, auth.RoleAuditor: &v.Auditor} {
		issue := issuer.Issue
		if auth.Scoped(role) {
			issue = func(role auth.Role, subject string, ttl time.Duration) (string, auth.Claims, error) {
				return issuer.IssueScoped(role, subject, ttl, auth.AllSources())
			}
		}
		tok, _, err := issue(role, "test-"+string(role), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		*dst = tok
	}
	return v
}

// Client returns a client of the vault with token.
func (v *Vault) Client(t testing.TB, token string) *client.Client {
	t.Helper()
	c, err := client.New(v.URL, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// BlobPath is where the disk store keeps a chunk that is not packed.
func (v *Vault) BlobPath(h chunk.Hash) string {
	s := h.String()
	return filepath.Join(v.DataDir, "blake3", s[0:2], s[2:4], s)
}

// Uploads records the chunks uploaded through it (PUT and batch), by
// hash, whatever the vault answered, and the number of missing checks.
// It is safe for concurrent use.
type Uploads struct {
	mu      sync.Mutex
	counts  map[chunk.Hash]int
	bytes   int64
	missing int
	active  map[*http.Request][]chunk.Hash
	before  func(w http.ResponseWriter, r *http.Request, hashes []chunk.Hash) bool
}

// SetBefore sets a function that runs before each upload request reaches
// the vault, with the hashes it carries; it may block, or answer the
// request itself and return false to keep it from the vault. nil removes
// it.
func (u *Uploads) SetBefore(fn func(w http.ResponseWriter, r *http.Request, hashes []chunk.Hash) bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.before = fn
}

// NewUploads returns an empty record.
func NewUploads() *Uploads {
	return &Uploads{counts: map[chunk.Hash]int{}, active: map[*http.Request][]chunk.Hash{}}
}

// Middleware records the requests that pass through it.
func (u *Uploads) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var hashes []chunk.Hash
		var size int64
		switch {
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/chunks/"):
			h, err := chunk.ParseHash(strings.TrimPrefix(r.URL.Path, "/v1/chunks/"))
			if err == nil {
				hashes = []chunk.Hash{h}
				size = r.ContentLength
			}
		case r.Method == http.MethodPost && r.URL.Path == "/v1/chunks/batch":
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			for off := 0; off+chunk.Size+4 <= len(body); {
				h := chunk.Hash(body[off : off+chunk.Size])
				n := int(binary.BigEndian.Uint32(body[off+chunk.Size:]))
				hashes = append(hashes, h)
				size += int64(n)
				off += chunk.Size + 4 + n
			}
		case r.Method == http.MethodPost && r.URL.Path == "/v1/chunks/missing":
			u.mu.Lock()
			u.missing++
			u.mu.Unlock()
		}
		if len(hashes) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		u.mu.Lock()
		for _, h := range hashes {
			u.counts[h]++
		}
		u.bytes += size
		u.active[r] = hashes
		before := u.before
		u.mu.Unlock()
		defer func() {
			u.mu.Lock()
			delete(u.active, r)
			u.mu.Unlock()
		}()
		if before != nil && !before(w, r, hashes) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Counts returns a copy of the uploads by hash.
func (u *Uploads) Counts() map[chunk.Hash]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[chunk.Hash]int, len(u.counts))
	for h, n := range u.counts {
		out[h] = n
	}
	return out
}

// InFlight returns the hashes of the upload requests that have started
// and not yet been answered.
func (u *Uploads) InFlight() map[chunk.Hash]bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := map[chunk.Hash]bool{}
	for _, hs := range u.active {
		for _, h := range hs {
			out[h] = true
		}
	}
	return out
}

// Bytes returns the chunk bytes sent so far.
func (u *Uploads) Bytes() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bytes
}

// Missing returns the number of missing checks so far.
func (u *Uploads) Missing() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.missing
}

// Reset forgets what was recorded.
func (u *Uploads) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.counts, u.bytes, u.missing = map[chunk.Hash]int{}, 0, 0
}

// WriteRandomFile writes size bytes from a ChaCha8 stream seeded by seed
// to name, streaming (1 MiB at a time), with mode perm.
func WriteRandomFile(t testing.TB, name string, size int64, seed uint64, perm os.FileMode) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rng := rand.NewChaCha8(key)
	buf := make([]byte, 1<<20)
	for size > 0 {
		b := buf[:min(int64(len(buf)), size)]
		rng.Read(b)
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		size -= int64(len(b))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, perm); err != nil { // umask
		t.Fatal(err)
	}
}

// node is what CompareTrees compares of one path.
type node struct {
	kind   string
	mode   os.FileMode
	mtime  time.Time
	size   int64
	sum    chunk.Hash
	target string
}

func scan(t testing.TB, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{mode: info.Mode(), mtime: info.ModTime()}
		switch {
		case info.Mode().IsRegular():
			n.kind, n.size = "file", info.Size()
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			hw := chunk.NewHasher()
			_, err = io.Copy(hw, f)
			f.Close()
			if err != nil {
				return err
			}
			n.sum = chunk.SumOf(hw)
		case info.IsDir():
			n.kind = "dir"
		case info.Mode()&os.ModeSymlink != 0:
			n.kind = "symlink"
			if n.target, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			n.kind = "special"
		}
		out[filepath.ToSlash(rel)] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// CompareTrees fails the test unless got holds exactly what want holds
// (except the paths in skip, absent from got): the same paths, types,
// modes, modification times (to the nanosecond, symbolic links included),
// content and link targets. The roots' own times are not compared.
func CompareTrees(t testing.TB, want, got string, skip ...string) {
	t.Helper()
	w, g := scan(t, want), scan(t, got)
	for _, s := range skip {
		if _, ok := g[s]; ok {
			t.Errorf("%s: restored, want it skipped", s)
		}
		delete(w, s)
	}
	for p, wn := range w {
		gn, ok := g[p]
		if !ok {
			t.Errorf("%s: missing from the restore", p)
			continue
		}
		if p == "." {
			wn.mtime, gn.mtime = time.Time{}, time.Time{}
		}
		if wn != gn {
			t.Errorf("%s: restored %+v, want %+v", p, gn, wn)
		}
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			t.Errorf("%s: in the restore, not in the source", p)
		}
	}
}
