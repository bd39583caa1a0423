package main

// Issue 13, item 4 and acceptance 4: the audit log cannot be rolled back.
// The database's owner truncates the log (triggers disabled); the running
// server stops signing and alarms, a restart refuses, and auditors' kept
// checkpoints, older or newer than the truncation point, make verify fail.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
)

// ownerExec runs statements with the audit tables' triggers disabled, as
// the tables' owner (or a superuser) can. It is the one place to point at
// an owner connection once the tests' own pool is the runtime role.
func ownerExec(t testing.TB, f *auditLogFixture, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	for _, tbl := range []string{"audit_log", "audit_hashes", "audit_checkpoints", "audit_chunks"} {
		if _, err := f.owner.Exec(ctx, "ALTER TABLE "+tbl+" DISABLE TRIGGER USER"); err != nil {
			t.Fatalf("disable triggers on %s: %v", tbl, err)
		}
	}
	for _, sql := range sqls {
		if _, err := f.owner.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// truncateAuditLog removes every entry after the first n, with their tree
// hashes, chunk index and every checkpoint of more than n entries: a consistent,
// shorter log, as an owner erasing evidence would leave it.
func truncateAuditLog(t testing.TB, f *auditLogFixture, n int64) {
	t.Helper()
	ownerExec(t, f,
		"DELETE FROM audit_log WHERE seq > "+strconv.FormatInt(n, 10),
		"DELETE FROM audit_hashes WHERE idx >= "+strconv.FormatInt(tlog.StoredHashCount(n), 10),
		"DELETE FROM audit_checkpoints WHERE size > "+strconv.FormatInt(n, 10),
		"DELETE FROM audit_chunks WHERE leaf >= "+strconv.FormatInt(n, 10))
}

// auditSize is the number of entries in the database's log.
func (f *auditLogFixture) auditSize(t testing.TB) int64 {
	t.Helper()
	n, err := f.store.AuditTreeSize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// grow stores and logs k more chunks and signs, as the server does.
func (f *auditLogFixture) grow(t testing.TB, k int) {
	t.Helper()
	f.putChunks(t, k)
	f.integrate(t)
}

// keptCheckpoint returns the data directory's latest-checkpoint.
func (f *auditLogFixture) keptCheckpoint(t testing.TB) []byte {
	t.Helper()
	return mustReadFile(t, filepath.Join(f.dir, config.LatestCheckpointFile))
}

// metricValue returns the value of a counter or gauge without labels.
func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// wantRefusedToSign checks that one tick of the audit-log loop signs
// nothing and leaves the data directory's checkpoint as it was.
func wantRefusedToSign(t testing.TB, f *auditLogFixture, kept []byte) {
	t.Helper()
	ctx := context.Background()
	signed, err := signCheckpoint(ctx, f.store, f.dir, f.keys)
	if !errors.Is(err, store.ErrRollback) || signed {
		t.Fatalf("signCheckpoint = %v, %v; want a refusal (ErrRollback)", signed, err)
	}
	if got := f.keptCheckpoint(t); !bytes.Equal(got, kept) {
		t.Fatalf("latest-checkpoint was replaced:\n%s\nwas:\n%s", got, kept)
	}
	var after int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM audit_checkpoints WHERE size > 6").Scan(&after); err != nil || after != 0 {
		t.Fatalf("%d checkpoints signed over the tampered log (%v), want none", after, err)
	}
}

// TestAuditTruncationStopsSigning: the owner truncates the log (entries,
// tree hashes and the newer checkpoints) between two ticks. The running
// server signs nothing, keeps its latest-checkpoint, alarms (ALERT log,
// metrics, /readyz), keeps serving the checkpoint it signed, and keeps
// refusing after the log has grown past its old size again.
func TestAuditTruncationStopsSigning(t *testing.T) {
	t.Parallel()
	f := newAuditLogFixture(t)
	f.grow(t, 4)
	if n := f.auditSize(t); n != 8 {
		t.Fatalf("log size %d, want 8", n)
	}
	kept := f.keptCheckpoint(t)
	if !strings.Contains(string(kept), "\n8\n") {
		t.Fatalf("latest-checkpoint %q, want size 8", kept)
	}
	if v := metricValue(t, f.reg, "wormvault_audit_log_consistent"); v != 1 {
		t.Errorf("wormvault_audit_log_consistent = %v before the attack, want 1", v)
	}

	truncateAuditLog(t, f, 6)
	wantRefusedToSign(t, f, kept)
	if v := metricValue(t, f.reg, "wormvault_audit_rollback_detected_total"); v != 1 {
		t.Errorf("wormvault_audit_rollback_detected_total = %v, want 1", v)
	}
	if v := metricValue(t, f.reg, "wormvault_audit_log_consistent"); v != 0 {
		t.Errorf("wormvault_audit_log_consistent = %v, want 0", v)
	}
	if !strings.Contains(f.logs.String(), "ALERT: the audit log does not extend the last checkpoint") {
		t.Errorf("no ALERT in the log:\n%s", f.logs.String())
	}
	resp, err := http.Get(f.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), `"integrity"`) {
		t.Errorf("/readyz = %d %s, want 500 integrity", resp.StatusCode, body)
	}
	// Auditors are still served the checkpoint the vault signed, not the
	// older one the database now holds.
	served, err := f.store.LatestCheckpoint(context.Background())
	if err != nil || !bytes.Equal(served.Note, kept) {
		t.Errorf("served checkpoint %q, %v; want the kept one", served.Note, err)
	}

	// New entries take the log past its old size: still refused, and
	// reported once.
	f.putChunks(t, 4)
	if n := f.auditSize(t); n <= 8 {
		t.Fatalf("log size %d, want it past the signed 8", n)
	}
	wantRefusedToSign(t, f, kept)
	if v := metricValue(t, f.reg, "wormvault_audit_rollback_detected_total"); v != 1 {
		t.Errorf("wormvault_audit_rollback_detected_total = %v after a second refusal, want 1 (one detection)", v)
	}
}

// TestAuditForkStopsSigning: the owner truncates the log and appends other
// entries until it is longer than the last signed checkpoint, all between
// two ticks. The size grew, but the tree no longer extends the checkpoint:
// nothing is signed.
func TestAuditForkStopsSigning(t *testing.T) {
	t.Parallel()
	f := newAuditLogFixture(t)
	f.grow(t, 4)
	kept := f.keptCheckpoint(t)
	truncateAuditLog(t, f, 6)
	rewrite(t, f)
	if n := f.auditSize(t); n <= 8 {
		t.Fatalf("log size %d, want it past the signed 8", n)
	}
	wantRefusedToSign(t, f, kept)
	if err := f.store.AuditIntegrity(); !errors.Is(err, store.ErrRollback) {
		t.Errorf("AuditIntegrity = %v, want ErrRollback", err)
	}
}

// rewrite appends other entries than the ones removed, past the signed
// size: later, and more of them.
func rewrite(t testing.TB, f *auditLogFixture) {
	t.Helper()
	f.clk.Advance(time.Minute)
	f.putChunks(t, 4)
}

// errStarted: serve got as far as serving.
var errStarted = errors.New("vault serve started")

// serveOnce runs `vault serve` on the fixture's data directory and
// database. It returns serve's error if it exits on its own, or
// errStarted (after stopping it) once it serves.
func serveOnce(t testing.TB, f *auditLogFixture) (error, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sink := newLogSink()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data-dir", f.dir, "--database-url", f.dbURL, "--listen", "127.0.0.1:0"},
			envOf(nil), strings.NewReader(""), io.Discard, sink)
	}()
	for {
		lines, changed := sink.snapshot()
		if _, ok := findRecord(lines, "vault serving"); ok {
			cancel()
			<-done
			return errStarted, sink.String()
		}
		select {
		case err := <-done:
			return err, sink.String()
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("vault serve neither served nor exited within 60s; log:\n%s", sink.String())
		}
	}
}

// wantRefusedStart checks that serve exits with an error naming the
// rollback guard and mentioning want, without serving.
func wantRefusedStart(t testing.TB, f *auditLogFixture, want string) {
	t.Helper()
	err, log := serveOnce(t, f)
	if err == nil || errors.Is(err, errStarted) {
		t.Fatalf("vault serve = %v, want a refusal; log:\n%s", err, log)
	}
	t.Logf("vault serve: %v", err)
	if !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), want) {
		t.Fatalf("vault serve = %v, want a refusal to start mentioning %q", err, want)
	}
}

// TestRestartRefusesTruncatedAuditLog: after the owner truncated the log,
// with or without the newer checkpoint rows, `vault serve` refuses to
// start; and with the data directory's checkpoint gone, the database's
// own signed checkpoint still makes it refuse.
func TestRestartRefusesTruncatedAuditLog(t *testing.T) {
	t.Parallel()
	t.Run("checkpoint rows removed too", func(t *testing.T) {
		t.Parallel()
		f := newAuditLogFixture(t)
		f.grow(t, 4)
		// The control: the same harness sees this vault start.
		if err, log := serveOnce(t, f); !errors.Is(err, errStarted) {
			t.Fatalf("vault serve before the attack = %v; log:\n%s", err, log)
		}
		truncateAuditLog(t, f, 6)
		wantRefusedStart(t, f, "has 6 entries, but the vault signed a checkpoint of 8")
	})
	t.Run("entries removed, tree hashes left", func(t *testing.T) {
		t.Parallel()
		f := newAuditLogFixture(t)
		f.grow(t, 4)
		ownerExec(t, f, "DELETE FROM audit_log WHERE seq > 6")
		wantRefusedStart(t, f, "entries were removed")
	})
	t.Run("data directory checkpoint gone", func(t *testing.T) {
		t.Parallel()
		f := newAuditLogFixture(t)
		f.grow(t, 4)
		ownerExec(t, f,
			"DELETE FROM audit_log WHERE seq > 6",
			"DELETE FROM audit_hashes WHERE idx >= "+strconv.FormatInt(tlog.StoredHashCount(6), 10))
		if err := os.Remove(filepath.Join(f.dir, config.LatestCheckpointFile)); err != nil {
			t.Fatal(err)
		}
		wantRefusedStart(t, f, "the database's own latest signed checkpoint")
	})
}

// TestRestartRefusesForkedAuditLog: the owner truncated the log and wrote
// other entries past the last signed checkpoint's size, removing the
// newer checkpoint rows; or planted a checkpoint row the vault did not
// sign. `vault serve` refuses to start.
func TestRestartRefusesForkedAuditLog(t *testing.T) {
	t.Parallel()
	t.Run("rewritten past the checkpoint", func(t *testing.T) {
		t.Parallel()
		f := newAuditLogFixture(t)
		f.grow(t, 4)
		truncateAuditLog(t, f, 6)
		rewrite(t, f)
		if n := f.auditSize(t); n <= 8 {
			t.Fatalf("log size %d, want it past the signed 8", n)
		}
		wantRefusedStart(t, f, "first 8 audit entries hash to")
	})
	t.Run("checkpoint row not signed by the vault", func(t *testing.T) {
		t.Parallel()
		f := newAuditLogFixture(t)
		f.grow(t, 4)
		ownerExec(t, f, `INSERT INTO audit_checkpoints (size, root, note, signed_at)
			VALUES (9, decode(repeat('ab', 32), 'hex'), 'wormvault/audit-cli-test', now())`)
		wantRefusedStart(t, f, "not one this vault signed")
	})
}

// TestVerifyFailsWhenLogShrank is acceptance 4 from the auditors' side.
// Two auditors verified: one when the log had 4 entries, one at 8. The
// owner truncates it to 6. Whatever the server serves, neither verify
// passes, and neither kept checkpoint moves.
func TestVerifyFailsWhenLogShrank(t *testing.T) {
	t.Parallel()
	f := newAuditLogFixture(t)
	older := filepath.Join(t.TempDir(), "older")
	newer := filepath.Join(t.TempDir(), "newer")
	for _, state := range []string{older, newer} {
		if r := f.run(t, "audit", "verify", "--state", state, "--key", f.keys.vkey); r.err != nil {
			t.Fatalf("verify at 4: %v\n%s", r.err, r.stdout)
		}
	}
	f.grow(t, 4)
	if r := f.run(t, "audit", "verify", "--state", newer); r.err != nil {
		t.Fatalf("verify at 8: %v\n%s", r.err, r.stdout)
	}
	// Each successful run advanced the kept state.
	keptOlder := mustReadFile(t, filepath.Join(older, stateCheckpointFile))
	keptNewer := mustReadFile(t, filepath.Join(newer, stateCheckpointFile))
	if !strings.Contains(string(keptOlder), "\n4\n") || !strings.Contains(string(keptNewer), "\n8\n") {
		t.Fatalf("kept checkpoints %q and %q, want sizes 4 and 8", keptOlder, keptNewer)
	}

	truncateAuditLog(t, f, 6)
	// The server's next tick refuses to sign the shorter log.
	if _, err := signCheckpoint(context.Background(), f.store, f.dir, f.keys); !errors.Is(err, store.ErrRollback) {
		t.Fatalf("signCheckpoint after truncation = %v, want ErrRollback", err)
	}

	for _, tt := range []struct {
		name, state string
		kept        []byte
		want        string // in the error or the report
	}{
		// The truncation point is past this auditor's checkpoint: the
		// shorter log still extends it, but the vault cannot prove that
		// the checkpoint it signed extends it.
		{"kept checkpoint older than the truncation point", older, keptOlder, "cannot prove"},
		// Its checkpoint is the served one: entries 7 and 8 are missing.
		{"kept checkpoint newer than the truncation point", newer, keptNewer, "entries were removed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := f.run(t, "audit", "verify", "--state", tt.state)
			if r.err == nil || strings.Contains(r.stdout, "OK") {
				t.Fatalf("verify after truncation passed:\n%s", r.stdout)
			}
			if !strings.Contains(r.err.Error()+r.stdout, tt.want) {
				t.Errorf("verify: %v\n%s\nwant it to say %q", r.err, r.stdout, tt.want)
			}
			if got := mustReadFile(t, filepath.Join(tt.state, stateCheckpointFile)); !bytes.Equal(got, tt.kept) {
				t.Errorf("the kept checkpoint moved after a failed run: %q", got)
			}
		})
	}
}

// TestCheckpointFileNeverReplacedByOlder: even a store that holds no
// checkpoint (one that signs whatever the database says) cannot make the
// server replace latest-checkpoint with a shorter or forked checkpoint:
// the file is checked before it is replaced.
func TestCheckpointFileNeverReplacedByOlder(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		tamper func(t testing.TB, f *auditLogFixture)
	}{
		{"shorter", func(t testing.TB, f *auditLogFixture) { truncateAuditLog(t, f, 6) }},
		{"forked", func(t testing.TB, f *auditLogFixture) { truncateAuditLog(t, f, 6); rewrite(t, f) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newAuditLogFixture(t)
			f.grow(t, 4)
			kept := f.keptCheckpoint(t)
			tt.tamper(t, f)
			blobs, err := disk.Open(f.dir, disk.Options{})
			if err != nil {
				t.Fatal(err)
			}
			forgetful := store.New(f.pool, blobs, f.clk, slog.New(slog.DiscardHandler), nil, store.Options{VaultID: auditFixtureVaultID})
			_, err = signCheckpoint(context.Background(), forgetful, f.dir, f.keys)
			if !errors.Is(err, store.ErrRollback) {
				t.Fatalf("signCheckpoint = %v, want a refusal to replace the file (ErrRollback)", err)
			}
			if got := f.keptCheckpoint(t); !bytes.Equal(got, kept) {
				t.Fatalf("latest-checkpoint was replaced:\n%s\nwas:\n%s", got, kept)
			}
		})
	}
}
