package replica_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/pgtest"
	"github.com/wormvault/wormvault/internal/replica"
	"github.com/wormvault/wormvault/internal/store"
)

// sizes mixes packed (under 16 KiB) and file chunks.
var sizes = []int{100, 5000, 40_000, 300, 70_000, 12_000, 1}

// TestReplicaCopiesSnapshotsVerified: two vaults with their own databases,
// data directories and admin sets. A pass copies every snapshot, with its
// name, tags, manifest root and at least the primary's retention, every
// chunk it reaches byte for byte, and the primary's holds as the replica's
// own; it logs replica.pass with the primary checkpoint. A retention
// extension on the primary follows at the next pass.
func TestReplicaCopiesSnapshotsVerified(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, r := newVault(t, "wv-primary", "p"), newVault(t, "wv-replica", "r")
	s1, c1 := p.backup(t, "db01", "mon", epoch.AddDate(1, 0, 0), sizes...)
	s2, c2 := p.backup(t, "web01", "mon", epoch.AddDate(0, 2, 0), 200, 20_000)
	if _, err := p.st.PlaceHold(ctx, "p-a", store.NewHold{Name: "case 7", Reason: "litigation", Snapshots: []int64{s2.ID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.st.PlaceHold(ctx, "p-b", store.NewHold{Name: "db", Reason: "regulator", Source: "db01"}); err != nil {
		t.Fatal(err)
	}
	p.sign(t)
	m := replica.NewMetrics(prometheus.NewRegistry())
	rp := replicaOf(t, r, p, replica.Options{Metrics: m})

	rep, err := rp.Pass(ctx)
	if err != nil {
		t.Fatalf("Pass: %v (%+v)", err, rep)
	}
	if rep.Snapshots != 2 || rep.Holds != 2 || rep.Chunks != int64(len(c1)+len(c2)) || rep.CheckpointSize == 0 {
		t.Errorf("report %+v; want 2 snapshots, 2 holds, %d chunks", rep, len(c1)+len(c2))
	}
	got := r.snapshots(t)
	for _, ps := range []store.Snapshot{s1, s2} {
		rs, ok := got[ps.Source+"/"+ps.Name]
		switch {
		case !ok:
			t.Fatalf("snapshot %s/%s not on the replica", ps.Source, ps.Name)
		case rs.ManifestRoot != ps.ManifestRoot || rs.ChunkCount != ps.ChunkCount || rs.TotalBytes != ps.TotalBytes ||
			!rs.TakenAt.Equal(ps.TakenAt) || strings.Join(rs.Tags, ",") != strings.Join(ps.Tags, ","):
			t.Errorf("replica's %s/%s = %+v, primary's %+v", ps.Source, ps.Name, rs, ps)
		case rs.RetainUntil.Before(ps.RetainUntil):
			t.Errorf("replica retains %s/%s until %s, before the primary's %s", ps.Source, ps.Name, rs.RetainUntil, ps.RetainUntil)
		case rs.CommittedBy != "replica:primary" || !rs.Held:
			t.Errorf("replica's %s/%s committed by %q, held %v; want replica:primary, held", ps.Source, ps.Name, rs.CommittedBy, rs.Held)
		}
	}
	for _, content := range []map[chunk.Hash][]byte{c1, c2} {
		for h, b := range content {
			if !bytes.Equal(r.readAll(t, h), b) {
				t.Errorf("chunk %s differs on the replica", h)
			}
			if c, err := r.st.Stat(ctx, h); err != nil || c.UploadedBy != "replica:primary" {
				t.Errorf("replica's chunk %s: %+v, %v", h, c, err)
			}
		}
	}
	holds, err := r.st.HoldsPlacedBy(ctx, "replica:primary")
	if err != nil || len(holds) != 2 || holds[0].Name != "case 7" || holds[1].Kind != store.HoldSource {
		t.Errorf("replica's holds %+v, %v", holds, err)
	}
	if a := r.auditActions(t); a[store.ActionReplicaPass] != 1 || a[store.ActionReplicaSource] != 1 {
		t.Errorf("replica's audit actions %v; want one replica.source and one replica.pass", a)
	}
	src, err := r.st.GetReplicaSource(ctx, "primary")
	if err != nil || src.KeptSize != rep.CheckpointSize || src.CheckpointKey != p.vkey {
		t.Errorf("replica source %+v, %v", src, err)
	}
	if v := replica.MetricsChunks(m, "primary"); v != float64(rep.Chunks) {
		t.Errorf("wormvault_replica_chunks_total = %v, want %d", v, rep.Chunks)
	}

	// The primary extends a retention: the replica follows; holds are not
	// placed twice.
	if _, err := p.st.ExtendSnapshot(ctx, "agent", s2.ID, epoch.AddDate(3, 0, 0)); err != nil {
		t.Fatal(err)
	}
	p.sign(t)
	if rep, err = rp.Pass(ctx); err != nil || rep.Extended != 1 || rep.Holds != 0 || rep.Snapshots != 0 {
		t.Fatalf("second pass %+v, %v; want one extension and nothing else", rep, err)
	}
	if rs := r.snapshots(t)["web01/mon"]; !rs.RetainUntil.Equal(epoch.AddDate(3, 0, 0)) {
		t.Errorf("replica's web01/mon retained until %s after the primary's extension", rs.RetainUntil)
	}
}

// TestReplicaSecondPassTransfersNothing: a pass over an unchanged primary
// fetches no chunk body (counted on the primary's HTTP side); after one
// new snapshot that shares most chunks, only the new chunks are fetched.
func TestReplicaSecondPassTransfersNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, r := newVault(t, "wv-primary", "p"), newVault(t, "wv-replica", "r")
	_, c1 := p.backup(t, "db01", "mon", epoch.AddDate(1, 0, 0), sizes...)
	p.sign(t)
	rp := replicaOf(t, r, p, replica.Options{})
	if _, err := rp.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	first := p.chunkGETs.Load()
	if first != int64(len(c1)) {
		t.Errorf("first pass fetched %d chunk bodies, want %d", first, len(c1))
	}
	rep, err := rp.Pass(ctx)
	if err != nil || rep.Chunks != 0 || rep.Bytes != 0 {
		t.Fatalf("unchanged pass %+v, %v", rep, err)
	}
	if n := p.chunkGETs.Load() - first; n != 0 {
		t.Fatalf("an unchanged pass fetched %d chunk bodies from the primary, want 0", n)
	}
	// A new snapshot reusing the old leaf manifest and one new chunk.
	var leaf chunk.Hash
	for h, b := range c1 {
		if m, err := manifest.Parse(b); err == nil && len(m.Children) == 0 {
			leaf = h
		}
	}
	newChunk := p.put(t, randomBytes(t, 3000))
	root := p.put(t, mustManifest(t, []chunk.Hash{newChunk}, []chunk.Hash{leaf}))
	if _, err := p.st.CommitSnapshot(ctx, "agent", store.NewSnapshot{Source: "db01", Name: "tue", TakenAt: p.clk.Now(),
		RetainUntil: epoch.AddDate(1, 0, 0), ManifestRoot: root}); err != nil {
		t.Fatal(err)
	}
	p.sign(t)
	before := p.chunkGETs.Load()
	if rep, err = rp.Pass(ctx); err != nil || rep.Snapshots != 1 || rep.Chunks != 2 {
		t.Fatalf("pass after a new snapshot %+v, %v; want 1 snapshot and 2 chunks (its root and one new chunk)", rep, err)
	}
	if n := p.chunkGETs.Load() - before; n != 2 {
		t.Errorf("fetched %d chunk bodies, want 2", n)
	}
}

// TestPrimaryDeletionDoesNotPropagate: the primary's admins delete a
// snapshot through the full governed process; the replica keeps the
// snapshot and every chunk, and reports each disappearance once (ERROR
// log, metric, webhook event).
func TestPrimaryDeletionDoesNotPropagate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, r := newVault(t, "wv-primary", "p"), newVault(t, "wv-replica", "r")
	gone, content := p.backup(t, "db01", "old", epoch.AddDate(0, 1, 1), 100, 50_000, 700)
	p.backup(t, "db01", "new", epoch.AddDate(1, 0, 0), 300)
	p.sign(t)
	m := replica.NewMetrics(prometheus.NewRegistry())
	rp := replicaOf(t, r, p, replica.Options{Metrics: m, CheckChunks: -1})
	if _, err := rp.Pass(ctx); err != nil {
		t.Fatal(err)
	}

	p.clk.Advance(40 * 24 * time.Hour) // past db01/old's retention on the primary
	rep := p.delete(t, "p", gone.ID)
	if len(rep.Executed) != 1 {
		t.Fatalf("primary's executor: %+v", rep)
	}
	for h := range content {
		if _, err := p.st.Stat(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("primary still has chunk %s (%v): the deletion did not run", h, err)
		}
	}
	p.sign(t)

	pass, err := rp.Pass(ctx)
	if err != nil {
		t.Fatalf("Pass: %v", err)
	}
	if want := 1 + len(content); pass.Disappeared != want {
		t.Errorf("pass reported %d disappearances, want %d (the snapshot and its %d chunks)", pass.Disappeared, want, len(content))
	}
	if _, ok := r.snapshots(t)["db01/old"]; !ok {
		t.Fatal("the primary's deletion removed the replica's snapshot")
	}
	for h, b := range content {
		if !bytes.Equal(r.readAll(t, h), b) {
			t.Errorf("replica's chunk %s changed", h)
		}
	}
	if v := replica.MetricsDisappeared(m, "primary", "snapshot"); v != 1 {
		t.Errorf("wormvault_replica_disappeared_total{kind=snapshot} = %v, want 1", v)
	}
	if !strings.Contains(r.logs.String(), "level=ERROR msg=\"DISAPPEARED from the primary") {
		t.Error("no ERROR log for the disappearance")
	}
	if n := r.eventTypes()["replica.disappeared"]; n != 1+len(content) {
		t.Errorf("%d replica.disappeared events, want %d", n, 1+len(content))
	}
	// Reported once: the next pass finds nothing new.
	if pass, err = rp.Pass(ctx); err != nil || pass.Disappeared != 0 {
		t.Errorf("next pass %+v, %v; want no new disappearance", pass, err)
	}
	list, n, err := r.st.ReplicaDisappeared(ctx, "primary", 100)
	if err != nil || n != int64(1+len(content)) || list[0].Kind == "" {
		t.Errorf("recorded disappearances %v (%d), %v", list, n, err)
	}
}

// truncatePrimaryLog removes every entry after the first n from p's
// audit log, with their tree hashes and every checkpoint of more than n
// entries, as the primary's database owner erasing evidence would.
func truncatePrimaryLog(t testing.TB, p *vault, n int64) {
	t.Helper()
	ctx := context.Background()
	owner := pgtest.OwnerPool(t, p.pool)
	for _, tbl := range []string{"audit_log", "audit_hashes", "audit_checkpoints", "audit_chunks"} {
		if _, err := owner.Exec(ctx, "ALTER TABLE "+tbl+" DISABLE TRIGGER USER"); err != nil {
			t.Fatal(err)
		}
	}
	s := strconv.FormatInt(n, 10)
	for _, q := range []string{
		"DELETE FROM audit_log WHERE seq > " + s,
		"DELETE FROM audit_hashes WHERE idx >= " + strconv.FormatInt(tlog.StoredHashCount(n), 10),
		"DELETE FROM audit_checkpoints WHERE size > " + s,
		"DELETE FROM audit_chunks WHERE leaf >= " + s,
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestPrimaryLogRollbackStopsReplica: the primary's database owner rolls
// its audit log back behind the checkpoint the replica kept. The replica
// raises the alarm (ERROR log, metric, webhook, replica.alarm in its own
// log), copies nothing newer, stays stopped on later passes, and resumes
// only after one of its own admins acknowledges.
func TestPrimaryLogRollbackStopsReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, r := newVault(t, "wv-primary", "p"), newVault(t, "wv-replica", "r")
	p.backup(t, "db01", "mon", epoch.AddDate(1, 0, 0), 100, 200)
	p.sign(t)
	early, err := p.st.AuditTreeSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := replica.NewMetrics(prometheus.NewRegistry())
	rp := replicaOf(t, r, p, replica.Options{Metrics: m})
	if _, err := rp.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	p.backup(t, "db01", "tue", epoch.AddDate(1, 0, 0), 300)
	p.sign(t)
	if _, err := rp.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	kept, _ := r.st.GetReplicaSource(ctx, "primary")
	if kept.KeptSize <= early {
		t.Fatalf("kept checkpoint of size %d, want more than %d", kept.KeptSize, early)
	}

	// New data on the primary, then the owner's rollback, and the primary
	// serving from the rolled-back database (restarted: the process that
	// signed the newer checkpoints would keep serving them).
	p.backup(t, "db01", "wed", epoch.AddDate(1, 0, 0), 400)
	truncatePrimaryLog(t, p, early)
	restarted := store.New(p.pool, nil, p.clk, slog.New(slog.NewTextHandler(p.logs, nil)), nil, store.Options{VaultID: p.id})
	serve := func(w http.ResponseWriter, req *http.Request) bool {
		if req.URL.Path != "/v1/audit/checkpoint" {
			return false
		}
		cp, err := restarted.LatestCheckpoint(req.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return true
		}
		w.Write(cp.Note)
		return true
	}
	p.override.Store(&serve)
	for i := range 2 {
		rep, err := rp.Pass(ctx)
		if !errors.Is(err, replica.ErrAlarm) {
			t.Fatalf("pass %d after the rollback: %+v, %v; want ErrAlarm", i, rep, err)
		}
	}
	if _, ok := r.snapshots(t)["db01/wed"]; ok {
		t.Fatal("the replica copied a snapshot newer than the rolled-back log")
	}
	if src, _ := r.st.GetReplicaSource(ctx, "primary"); src.Alarm == "" || src.KeptSize != kept.KeptSize {
		t.Errorf("replica source after the rollback %+v; want an alarm and the kept checkpoint unchanged (%d)", src, kept.KeptSize)
	}
	if v := replica.MetricsAlarm(m, "primary"); v != 1 {
		t.Errorf("wormvault_replica_alarm = %v, want 1", v)
	}
	if a := r.auditActions(t); a[store.ActionReplicaAlarm] != 1 {
		t.Errorf("replica's audit actions %v; want one replica.alarm", a)
	}
	if n := r.eventTypes()["replica.alarm"]; n != 1 {
		t.Errorf("%d replica.alarm events, want 1", n)
	}
	if !strings.Contains(r.logs.String(), "level=ERROR msg=\"ALERT: the primary's audit log does not extend") {
		t.Error("no ERROR log for the alarm")
	}

	// An admin of the replica acknowledges: the next pass pins the
	// primary's current checkpoint and copies again.
	if _, err := r.st.AcknowledgeReplicaAlarm(ctx, "r-a", "primary", "restored from backup, checked with its operators"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.AcknowledgeReplicaAlarm(ctx, "r-a", "primary", "again"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second acknowledgement: %v, want ErrConflict", err)
	}
	if rep, err := rp.Pass(ctx); err != nil || rep.Snapshots != 1 {
		t.Fatalf("pass after the acknowledgement %+v, %v; want db01/wed copied", rep, err)
	}
	if a := r.auditActions(t); a[store.ActionReplicaAcknowledge] != 1 {
		t.Errorf("replica's audit actions %v; want one replica.acknowledge", a)
	}
}

// TestPrimaryLogForkStopsReplica: a compromised primary serves a
// checkpoint signed with its own key for another history of the same
// size, then one that does not extend the kept one: both alarm.
func TestPrimaryLogForkStopsReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		grow int64
	}{{"same size", 0}, {"larger", 5}} {
		t.Run(tt.name, func(t *testing.T) {
			p, r := newVault(t, "wv-primary", "p"), newVault(t, "wv-replica", "r")
			p.backup(t, "db01", "mon", epoch.AddDate(1, 0, 0), 100)
			p.sign(t)
			rp := replicaOf(t, r, p, replica.Options{})
			if _, err := rp.Pass(ctx); err != nil {
				t.Fatal(err)
			}
			src, _ := r.st.GetReplicaSource(ctx, "primary")
			forged, err := audit.Sign(audit.Checkpoint{Origin: audit.Origin(p.id), Size: src.KeptSize + tt.grow, Root: tlog.RecordHash([]byte("forged"))}, p.signer)
			if err != nil {
				t.Fatal(err)
			}
			serve := func(w http.ResponseWriter, req *http.Request) bool {
				if req.URL.Path != "/v1/audit/checkpoint" {
					return false
				}
				w.Write(forged)
				return true
			}
			p.override.Store(&serve)
			p.backup(t, "db01", "tue", epoch.AddDate(1, 0, 0), 200)
			if _, err := rp.Pass(ctx); !errors.Is(err, replica.ErrAlarm) {
				t.Fatalf("pass over a forked log: %v, want ErrAlarm", err)
			}
			if _, ok := r.snapshots(t)["db01/tue"]; ok {
				t.Fatal("copied past a forked log")
			}
		})
	}
}

// TestReplicaResumesAfterInterruption: a pass cut off mid-copy (its
// context cancelled after some chunks) keeps what it stored, commits no
// half snapshot, and the next pass fetches only what is left.
func TestReplicaResumesAfterInterruption(t *testing.T) {
	t.Parallel()
	p, r := newVault(t, "wv-primary", "p"), newVault(t, "wv-replica", "r")
	p.backup(t, "db01", "mon", epoch.AddDate(1, 0, 0), sizes...)
	p.sign(t)
	total := int64(len(sizes) + 2)
	ctx, cancel := context.WithCancel(context.Background())
	var served int64
	cut := func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/v1/chunks/") {
			if served++; served > 4 {
				cancel()
			}
		}
		return false
	}
	p.override.Store(&cut)
	rp := replicaOf(t, r, p, replica.Options{Workers: 1})
	if _, err := rp.Pass(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pass: %v, want context.Canceled", err)
	}
	if len(r.snapshots(t)) != 0 {
		t.Fatal("a snapshot was committed before all its chunks were stored")
	}
	p.override.Store(nil)
	before := p.chunkGETs.Load()
	rep, err := rp.Pass(context.Background())
	if err != nil || rep.Snapshots != 1 {
		t.Fatalf("resumed pass %+v, %v", rep, err)
	}
	if fetched := p.chunkGETs.Load() - before; fetched >= total || fetched+before < total {
		t.Errorf("resumed pass fetched %d chunks after %d; want only the rest of %d", fetched, before, total)
	}
}

// TestReplicaRefusesBadSourceName: a bad name is refused before anything
// is stored.
func TestReplicaRefusesBadSourceName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "-x", "a b", "x/y", strings.Repeat("a", 65)} {
		if _, err := replica.New(replica.Options{Source: name}); err == nil {
			t.Errorf("New(%q) = nil error", name)
		}
	}
}

func mustManifest(t testing.TB, chunks, children []chunk.Hash) []byte {
	t.Helper()
	b, err := manifest.Manifest{Chunks: chunks, Children: children}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestScopedReplicatorCopiesOnlyItsSources: a replicator token scoped to
// db01 copies db01's snapshots and nothing of web01's, and does not report
// web01's snapshots as disappeared.
func TestScopedReplicatorCopiesOnlyItsSources(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, r := newVault(t, "wv-primary", "p"), newVault(t, "wv-replica", "r")
	p.backup(t, "db01", "mon", epoch.AddDate(1, 0, 0), 100, 200)
	_, web := p.backup(t, "web01", "mon", epoch.AddDate(1, 0, 0), 300)
	p.sign(t)
	tok, _, err := p.issuer.IssueScoped(auth.RoleReplicator, "db-site", 24*time.Hour, auth.Scope{Sources: []string{"db01"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(p.srv.URL, tok, p.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	rp := replicaOf(t, r, p, replica.Options{Primary: c})
	rep, err := rp.Pass(ctx)
	if err != nil || rep.Snapshots != 1 || rep.PrimarySnapshots != 1 || rep.Disappeared != 0 {
		t.Fatalf("scoped pass %+v, %v; want db01/mon only", rep, err)
	}
	if _, ok := r.snapshots(t)["web01/mon"]; ok {
		t.Fatal("copied a snapshot outside the token's scope")
	}
	for h := range web {
		if _, err := r.st.Stat(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("web01's chunk %s on the replica (%v)", h, err)
		}
	}
}
