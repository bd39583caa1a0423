package replica_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/replica"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// epoch is a whole second, so times survive the database's precision.
var epoch = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

const delay = 72 * time.Hour

// vault is one whole vault in the test process: its own database, data
// directory, admin set, clock, checkpoint key and HTTP API.
type vault struct {
	id     string
	st     *store.Store
	pool   *pgxpool.Pool
	clk    *clock.Fake
	issuer *auth.Issuer
	signer note.Signer
	vkey   string
	admins map[string]ed25519.PrivateKey
	srv    *httptest.Server
	logs   *syncBuffer
	// chunkGETs counts GET /v1/chunks/{hash} served: chunk bodies sent.
	chunkGETs atomic.Int64
	// override, if set, answers a request instead of the API (a
	// compromised primary).
	override atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
	events   []store.Event
	mu       sync.Mutex
	reg      *prometheus.Registry
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newVault starts a vault whose admins are named prefix-a, prefix-b and
// prefix-c (two approvals and a delay to delete).
func newVault(t testing.TB, id, prefix string) *vault {
	t.Helper()
	dir := t.TempDir()
	blobs, err := disk.Open(dir, disk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	packs, err := pack.Open(filepath.Join(dir, "packs"), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	jnl, err := journal.Open(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.NewPool(t)
	clk := clock.NewFake(epoch)
	pgtest.FollowClock(t, pool, clk)
	v := &vault{id: id, pool: pool, clk: clk, admins: map[string]ed25519.PrivateKey{}, logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	g := store.Genesis{Policy: store.Policy{ApprovalsRequired: 2, Delay: store.Duration(delay),
		GovernanceApprovals: 2, GovernanceDelay: store.Duration(7 * 24 * time.Hour)}}
	for _, s := range []string{"a", "b", "c"} {
		priv, pub, err := approval.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		v.admins[prefix+"-"+s] = priv
		g.Admins = append(g.Admins, store.Admin{Name: prefix + "-" + s, Key: pub})
	}
	log := slog.New(slog.NewTextHandler(v.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v.st = store.New(pool, blobs, clk, log, store.NewMetrics(v.reg), store.Options{
		MaxChunkSize: 4 << 20, Packs: packs, PackThreshold: 16 << 10, VaultID: id, Journal: jnl, Genesis: &g,
		Deletion:     store.DeletionPolicy{ApprovalsRequired: 2, Delay: delay, Expiry: 7 * 24 * time.Hour},
		DatabaseTime: func(context.Context) (time.Time, error) { return clk.Now(), nil },
		Notify: func(_ context.Context, e store.Event) {
			v.mu.Lock()
			defer v.mu.Unlock()
			v.events = append(v.events, e)
		},
	})
	if err := v.st.SeedAdminSet(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, audit.Origin(id))
	if err != nil {
		t.Fatal(err)
	}
	if v.signer, err = note.NewSigner(skey); err != nil {
		t.Fatal(err)
	}
	v.vkey = vkey
	key, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	v.issuer = auth.NewIssuer(key, id, clk)
	verifier := auth.NewVerifier(key.Public().(ed25519.PublicKey), id, v.st, clk)
	h := api.NewHandler(api.Options{Store: v.st, Verifier: verifier, Log: log, CheckpointKey: vkey})
	v.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := v.override.Load(); f != nil && (*f)(w, r) {
			return
		}
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/chunks/") && !strings.HasSuffix(r.URL.Path, "/retention") {
			v.chunkGETs.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		v.srv.Close()
		v.st.Close()
		packs.Close()
		jnl.Close()
		if t.Failed() {
			t.Logf("%s log:\n%s", id, v.logs.String())
		}
	})
	return v
}

// sign signs a checkpoint of the log as it is, as the server's audit loop
// does every second.
func (v *vault) sign(t testing.TB) {
	t.Helper()
	if _, _, err := v.st.SignCheckpoint(context.Background(), v.signer); err != nil {
		t.Fatalf("%s: SignCheckpoint: %v", v.id, err)
	}
}

func (v *vault) token(t testing.TB, role auth.Role) string {
	t.Helper()
	var tok string
	var err error
	if auth.Scoped(role) {
		tok, _, err = v.issuer.IssueScoped(role, "test-"+string(role), 300*24*time.Hour, auth.AllSources())
	} else {
		tok, _, err = v.issuer.Issue(role, "test-"+string(role), 300*24*time.Hour)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// put stores content as an agent would.
func (v *vault) put(t testing.TB, b []byte) chunk.Hash {
	t.Helper()
	h := chunk.Sum(b)
	if _, err := v.st.PutChunk(context.Background(), "agent", h, bytes.NewReader(b), time.Time{}); err != nil {
		t.Fatal(err)
	}
	return h
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// backup stores n random chunks of the given sizes under a two-level
// manifest tree and commits a snapshot; it returns the snapshot and the
// content by hash.
func (v *vault) backup(t testing.TB, source, name string, until time.Time, sizes ...int) (store.Snapshot, map[chunk.Hash][]byte) {
	t.Helper()
	content := map[chunk.Hash][]byte{}
	var leaf, top []chunk.Hash
	for i, n := range sizes {
		b := randomBytes(t, n)
		h := v.put(t, b)
		content[h] = b
		if i%2 == 0 {
			leaf = append(leaf, h)
		} else {
			top = append(top, h)
		}
	}
	mb, err := manifest.Manifest{Chunks: leaf}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	child := v.put(t, mb)
	content[child] = mb
	rb, err := manifest.Manifest{Chunks: top, Children: []chunk.Hash{child}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	root := v.put(t, rb)
	content[root] = rb
	res, err := v.st.CommitSnapshot(context.Background(), "agent", store.NewSnapshot{Source: source, Name: name,
		TakenAt: v.clk.Now(), RetainUntil: until, ManifestRoot: root, Tags: []string{"nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Snapshot, content
}

// delete runs a deletion of snapshots through the whole governed process:
// a signed request, two other admins' approvals, the delay, the executor.
func (v *vault) delete(t testing.TB, prefix string, snapshots ...int64) store.RunReport {
	t.Helper()
	ctx := context.Background()
	sign := func(name string, id int64, action string) store.Signature {
		msg, err := v.st.Statement(ctx, id, action, name)
		if err != nil {
			t.Fatal(err)
		}
		return store.Signature{Signer: name, Format: approval.FormatRaw, Value: ed25519.Sign(v.admins[name], msg)}
	}
	d, err := v.st.RequestDeletion(ctx, prefix+"-a", store.DeletionTargets{Kind: store.DeleteSnapshots, Snapshots: snapshots}, "clean-up")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.st.SignRequest(ctx, prefix+"-a", d.ID, sign(prefix+"-a", d.ID, approval.ActionRequest)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{prefix + "-b", prefix + "-c"} {
		if _, err := v.st.ApproveDeletion(ctx, name, d.ID, sign(name, d.ID, approval.ActionApprove)); err != nil {
			t.Fatal(err)
		}
	}
	v.clk.Advance(delay + time.Minute)
	rep, err := v.st.RunDue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := v.st.GetDeletion(ctx, d.ID); got.State != store.StateExecuted {
		t.Fatalf("deletion %d: %s, want executed", d.ID, got.State)
	}
	return rep
}

// replicaOf returns a replicator on r pulling from p.
func replicaOf(t testing.TB, r, p *vault, o replica.Options) *replica.Replicator {
	t.Helper()
	if o.Primary == nil {
		c, err := client.New(p.srv.URL, p.token(t, auth.RoleReplicator), p.srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		o.Primary = c
	}
	o.Source, o.URL, o.Store, o.Clock = "primary", p.srv.URL, r.st, r.clk
	o.Log = slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.Notify == nil {
		o.Notify = func(_ context.Context, e store.Event) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.events = append(r.events, e)
		}
	}
	rp, err := replica.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

// readAll returns chunk h's content on v, or fails.
func (v *vault) readAll(t testing.TB, h chunk.Hash) []byte {
	t.Helper()
	rc, _, err := v.st.OpenChunk(context.Background(), h)
	if err != nil {
		t.Fatalf("%s: OpenChunk(%s): %v", v.id, h, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("%s: read %s: %v", v.id, h, err)
	}
	return b
}

// snapshots returns v's snapshots by source/name.
func (v *vault) snapshots(t testing.TB) map[string]store.Snapshot {
	t.Helper()
	all, err := v.st.AllSnapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Snapshot{}
	for _, s := range all {
		out[s.Source+"/"+s.Name] = s
	}
	return out
}

// auditActions counts v's audit entries by action.
func (v *vault) auditActions(t testing.TB) map[string]int {
	t.Helper()
	entries, err := v.st.AuditEntries(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range entries {
		out[e.Action]++
	}
	return out
}

func (v *vault) eventTypes() map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]int{}
	for _, e := range v.events {
		out[e.Type]++
	}
	return out
}
