package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/config"
	"github.com/wormvault/wormvault/internal/connlimit"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/notify"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/disk"
	"github.com/wormvault/wormvault/internal/store/pack"
)

func runServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	// Pull replication from a primary (replicate.go): off unless --replicate-from.
	rf := addReplicaFlags(fs, getenv, "replicate-")
	replicateEvery := fs.Duration("replicate-interval", time.Minute, "with --replicate-from: time between replication passes")
	cfg, err := config.LoadServeFlags(args, getenv, fs)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if cfg.Dev {
		log.Warn("DEV MODE: safety floors are relaxed; never run a real vault like this")
	}
	// Bind before any slow step (the database, migrations, the journal's
	// checks): a port already in use fails the start at once, and probes
	// get an answer ("starting") while the rest comes up.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	if cfg.PprofListen != "" {
		if err := servePprof(ctx, cfg.PprofListen, log); err != nil {
			ln.Close()
			return err
		}
	}
	sw := newSwitchHandler(api.Starting())
	hs := startHTTP(ln, sw, cfg, log, reg)
	// A failed start closes the listener; after a graceful stop this is a
	// no-op.
	defer hs.close()
	v, err := config.ReadVault(cfg.DataDir)
	if err != nil {
		return err
	}
	key, err := auth.ReadKeyFile(v.SigningKeyPath(cfg.DataDir))
	if err != nil {
		return fmt.Errorf("serve: token-signing key: %w", err)
	}
	// One process writes the data directory's journal at a time.
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer unlock()

	// Each start-up step's duration, at debug level: what a slow start is
	// waiting for.
	stepAt := time.Now()
	step := func(name string) {
		log.Debug("start-up step done", "step", name, "duration", time.Since(stepAt))
		stepAt = time.Now()
	}
	pool, err := openServeDB(ctx, cfg.DatabaseURL, dbOptions{
		MaxConns:         cfg.DBMaxConns,
		ConnectTimeout:   cfg.DBConnectTimeout,
		StatementTimeout: cfg.DBStatementTimeout,
		LockTimeout:      cfg.DBLockTimeout,
	}, log)
	if err != nil {
		return err
	}
	defer pool.Close()
	step("open database")

	blobs, err := disk.Open(cfg.DataDir, disk.Options{Logger: log})
	if err != nil {
		return err
	}
	var packs *pack.Packs
	if cfg.PackThreshold > 0 {
		if packs, err = pack.Open(filepath.Join(cfg.DataDir, "packs"), pack.Options{}); err != nil {
			return err
		}
		defer packs.Close()
	}
	// The journal: the data directory's copy of the audit log, written
	// before each change commits (invariant 8).
	jdir := filepath.Join(cfg.DataDir, config.JournalDir)
	_, statErr := os.Stat(jdir)
	freshJournal := errors.Is(statErr, iofs.ErrNotExist)
	jnl, err := journal.Open(jdir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer jnl.Close()
	clk := clock.Real{}
	if cfg.Dev && cfg.DeletionDelay < config.SafeMinDeletionDelay {
		log.Warn("DEV MODE: deletion delay below the safe minimum", "deletion_delay", cfg.DeletionDelay)
	}
	// The genesis admin set pinned in the data directory: the executor
	// verifies every later admin set, and every deletion, from it.
	genesis, hasAdmins, err := readAdmins(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	var pinned *store.Genesis
	if hasAdmins {
		pinned = &genesis
	}
	var notifyFn func(context.Context, store.Event)
	if cfg.WebhookURL != "" {
		wh := notify.NewWebhook(cfg.WebhookURL, nil, log)
		go wh.Run(ctx)
		notifyFn = wh.Notify
	}
	st := store.New(pool, blobs, clk, log, store.NewMetrics(reg), store.Options{
		MinRetention:  cfg.MinRetention,
		MaxChunkSize:  cfg.MaxChunkSize,
		Packs:         packs,
		PackThreshold: cfg.PackThreshold,
		Deletion: store.DeletionPolicy{
			ApprovalsRequired: cfg.ApprovalsRequired,
			Delay:             cfg.DeletionDelay,
			Expiry:            cfg.RequestExpiry,
		},
		Notify:        notifyFn,
		VaultID:       v.ID,
		CommitTimeout: cfg.CommitTimeout,
		Journal:       jnl,
		Genesis:       pinned,
		FreeSpace:     blobs.Space,
		Reserve:       store.Reserve{Bytes: cfg.ReserveBytes, Percent: cfg.ReservePercent},
		// In the data directory, beside what it walks: see reconcileAtStart.
		ReconcileCursor: filepath.Join(cfg.DataDir, reconcileCursorFile),
	})
	// Uploads wait for the start-up reconcile's first, short part.
	st.BeginReconcile()
	// Pending deletions, checkpoint age and the database pool, read at each scrape.
	reg.MustRegister(st.Collector())
	// Runs after the HTTP server has stopped (defers run in reverse): every
	// upload handed to the group committer is answered before it exits.
	defer st.Close()

	// The audit log's rollback guard, before anything is appended.
	ckpt, err := loadCheckpointKey(cfg.DataDir, v.ID, log)
	if err != nil {
		return err
	}
	step("open data directory, journal")
	if err := st.EnsureAuditTree(ctx); err != nil {
		if errors.Is(err, store.ErrAuditTree) {
			return fmt.Errorf("serve: refusing to start: the audit log's stored tree does not match its entries: %w", err)
		}
		return fmt.Errorf("serve: %w", err)
	}
	step("audit tree")
	if err := guardRollback(ctx, st, cfg.DataDir, ckpt, log); err != nil {
		return err
	}
	step("rollback guard")
	jrep, err := st.CheckJournal(ctx, freshJournal)
	if err != nil {
		return fmt.Errorf("serve: refusing to start: %w", err)
	}
	if jrep.Imported > 0 {
		// A vault from before chunk commits were logged with their rows:
		// log the ones its integrator had not reached, once.
		for {
			n, err := st.IntegrateChunks(ctx, store.DefaultIntegrateBatch)
			if err != nil {
				return fmt.Errorf("serve: log earlier chunk commits: %w", err)
			}
			if n < store.DefaultIntegrateBatch {
				break
			}
		}
	}
	step("check journal")
	log.Info("journal checked", "entries", jrep.JournalEntries, "imported", jrep.Imported, "rolled_forward", jrep.RolledForward)

	if err := seedAdmins(ctx, st, cfg.DataDir, log); err != nil {
		return err
	}
	if _, err := signCheckpoint(ctx, st, cfg.DataDir, ckpt); err != nil {
		if !store.NoSpace(err) {
			return fmt.Errorf("serve: sign audit checkpoint: %w", err)
		}
		// Signed and stored in the index; only the data directory's copy
		// waits for space (the audit loop retries it every second).
		log.Warn("cannot keep the audit checkpoint in the data directory: its filesystem is full", "err", err)
	}

	// Damage and scrub metrics come from the database, so that a restart
	// does not reset them.
	step("admins, checkpoint")
	dmg, err := st.LoadDamageMetrics(ctx)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := st.LoadScrubMetrics(ctx); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if dmg.Open > 0 {
		log.Error("DAMAGE: chunks are damaged and await a re-upload (vault scrub status --damaged)", "count", dmg.Open)
	}

	step("damage and scrub metrics")
	verifier, err := newServeVerifier(ctx, st, key.Public().(ed25519.PublicKey), v, clk, log)
	if err != nil {
		return err
	}
	handler := api.NewHandler(api.Options{
		Store:    st,
		Verifier: verifier,
		Log:      log,
		Registry: reg,

		CheckpointKey:    ckpt.vkey,
		CheckpointMaxAge: checkpointMaxAge,

		MinBodyRate:         cfg.MinBodyRate,
		BodyRateGrace:       cfg.BodyRateGrace,
		MaxRequestsPerToken: cfg.MaxRequestsPerToken,
		BatchMemory:         cfg.BatchMemory,
	})
	go runAuditLog(ctx, st, cfg.DataDir, ckpt, time.Second, log)
	go st.WatchRevocations(ctx)
	go runScrubLoop(ctx, st, cfg.ScrubBandwidth, cfg.ScrubInterval, log)
	go runAdoptOrphans(ctx, st, orphanRetry, log)

	// Reads are served from here on. Uploads are admitted once the
	// reconcile's first part has checked the temp files and the pack
	// tails; the rest runs in the background (readonly.go), and the
	// deletion executor starts only after it.
	sw.set(handler)
	log.Info("serving reads", "url", hs.url())
	// The index against the journal: one pass over each, long on a large
	// vault, so it runs while reads are served (content is verified
	// against its hash whatever the index says). Uploads, missing-chunk
	// queries and snapshot commits wait for it, as does everything that
	// follows: an index whose rows were removed or forged must not steer
	// what agents upload, and the vault stops if it fails.
	if err := st.CheckIndex(ctx); err != nil {
		return fmt.Errorf("serve: refusing to start: %w", err)
	}
	step("check index")
	startExecutor := func() { go runExecutor(ctx, st, cfg.ExecutorInterval, log) }
	if err := reconcileAtStart(ctx, st, readOnlyRetry, log, startExecutor); err != nil {
		return err
	}
	// Replication writes through the store like an upload: it starts once
	// uploads are admitted.
	if rf.from != "" {
		if err := runReplication(ctx, st, rf, *replicateEvery, reg, notifyFn, log); err != nil {
			return err
		}
	}
	log.Info("vault serving", "vault_id", v.ID, "url", hs.url(), "version", version())
	return hs.wait(ctx, cfg.ShutdownTimeout, log)
}

// listen binds the API's address. A port already in use is the usual
// failure; it is said plainly, before anything slow has run.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("serve: cannot listen on %s: the address is already in use (another vault, or another program, holds the port; choose another with --listen): %w", addr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("serve: cannot listen on %s: %w", addr, err)
	}
	return ln, nil
}

// switchHandler serves the starting handler until set installs the API.
type switchHandler struct {
	h atomic.Pointer[http.Handler]
}

func newSwitchHandler(h http.Handler) *switchHandler {
	s := &switchHandler{}
	s.set(h)
	return s
}

func (s *switchHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *switchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// checkpointMaxAge: /readyz is degraded once the audit loop (which runs
// every second) has not managed to cover the log with a signed checkpoint
// for this long.
const checkpointMaxAge = time.Minute

// newServeVerifier builds the server's token verifier: the current key,
// the retired keys until their last token expires, and never a distrusted
// key. The keys vault.json lists as distrusted are recorded in the
// database too (if a rebuild or a lost row dropped them), which is where
// the verifier looks them up: a distrusted key is refused even while it
// is still the current one, until the server restarts with the new key.
func newServeVerifier(ctx context.Context, st *store.Store, pub ed25519.PublicKey, v config.Vault, clk clock.Clock, log *slog.Logger) (*auth.Verifier, error) {
	distrusted := map[string]bool{}
	for _, dk := range v.DistrustedKeys {
		distrusted[dk.KID] = true
		if err := st.DistrustKey(ctx, "vault.json", dk.KID, dk.PublicKey, dk.Reason); err != nil {
			return nil, fmt.Errorf("serve: distrusted key %s: %w", dk.KID, err)
		}
	}
	if distrusted[auth.KeyID(pub)] {
		log.Error("the current token-signing key is distrusted: every token is refused until `vault token rotate-key --compromised` completes and the server restarts", "kid", auth.KeyID(pub))
	}
	verifier := auth.NewVerifier(pub, v.ID, st, clk)
	for _, rk := range v.RetiredKeys {
		if distrusted[rk.KID] {
			continue
		}
		if err := verifier.AddRetiredKey(rk.PublicKey, rk.NotAfter); err != nil {
			return nil, fmt.Errorf("serve: retired key %s: %w", rk.KID, err)
		}
	}
	return verifier, nil
}

// httpServer is the API's server, serving from the moment the listener is
// bound.
type httpServer struct {
	srv    *http.Server
	ln     net.Listener
	scheme string
	errc   chan error
	once   sync.Once
}

// startHTTP serves h on ln in the background.
//
// Connections are capped in total and per client IP (connlimit): at the
// total cap the longest idle connection is closed to admit a new one, so
// idle sockets, which need no token, cannot lock out working clients.
func startHTTP(ln net.Listener, h http.Handler, cfg config.Serve, log *slog.Logger, reg prometheus.Registerer) *httpServer {
	limiter := connlimit.New(cfg.MaxConns, cfg.MaxConnsPerClient)
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wormvault_connections_refused_total",
		Help: "Client connections closed by a cap: reason per_client, total (all busy), or evicted (longest idle, to admit a new one).",
	}, []string{"reason"})
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wormvault_connections_open", Help: "Client connections open now.",
	}, func() float64 { return float64(limiter.Open()) })
	reg.MustRegister(refused, open)
	limiter.OnRefuse = func(reason string) { refused.WithLabelValues(reason).Inc() }
	warnFileLimit(cfg.MaxConns, log)
	hs := &httpServer{ln: ln, scheme: "http", errc: make(chan error, 1)}
	ln = limiter.Listener(ln)
	hs.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		// Bodies are bounded by the minimum body rate (api) first; the
		// read timeout is the backstop (--read-timeout), long enough for
		// a large chunk on a slow link.
		ReadTimeout:    cfg.ReadTimeout,
		WriteTimeout:   15 * time.Minute,
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
		ConnState:      limiter.ConnState,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLSCert != "" {
		hs.scheme = "https"
	}
	go func() {
		if cfg.TLSCert != "" {
			hs.errc <- hs.srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			hs.errc <- hs.srv.Serve(ln)
		}
	}()
	log.Info("listening", "url", hs.url())
	return hs
}

func (hs *httpServer) url() string { return hs.scheme + "://" + hs.ln.Addr().String() }

// close stops serving at once (a start that failed).
func (hs *httpServer) close() {
	hs.once.Do(func() { hs.srv.Close() })
}

// wait serves until ctx is done, then shuts down gracefully: in-flight
// uploads may finish within the shutdown timeout; after it, connections
// are closed and an unfinished upload is discarded whole (its temp file
// removed, no row written).
func (hs *httpServer) wait(ctx context.Context, timeout time.Duration, log *slog.Logger) error {
	select {
	case err := <-hs.errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: waiting for in-flight requests", "timeout", timeout)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	hs.once.Do(func() {
		if err = hs.srv.Shutdown(sctx); err != nil {
			log.Warn("shutdown timed out; closing connections, unfinished uploads are discarded", "err", err)
			hs.srv.Close()
		}
	})
	if err := <-hs.errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// fdHeadroom is what the vault needs besides client connections: the
// database pool, pack and chunk files, the journal, the listener.
const fdHeadroom = 256

// warnFileLimit warns when the open-file limit cannot hold max client
// connections and the vault's own files: the cap would not protect it.
func warnFileLimit(max int, log *slog.Logger) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if uint64(max)+fdHeadroom > rl.Cur {
		log.Warn("open-file limit is below max-conns plus the vault's own files: lower --max-conns or raise the limit (ulimit -n)",
			"nofile", rl.Cur, "max_conns", max, "headroom", fdHeadroom)
	}
}

// servePprof serves the runtime profiles on their own loopback listener,
// never on the API's, until ctx is done.
func servePprof(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: pprof: %w", err)
	}
	srv := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Warn("pprof profiling enabled", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return nil
}

// pprofMux serves the runtime profiles, never the command line: the
// process's arguments may hold the database URL with its password, and
// pprof's /debug/pprof/cmdline would print them. Nothing here reads the
// environment.
func pprofMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
	// Index serves the named runtime profiles (heap, goroutine, ...); the
	// link it shows to cmdline answers 404 above.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// runExecutor executes due deletions every interval until ctx is done.
func runExecutor(ctx context.Context, st *store.Store, every time.Duration, log *slog.Logger) {
	log = log.With("component", "executor")
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep, err := st.RunDue(ctx)
		if err != nil && ctx.Err() == nil {
			log.Error("executor run failed", "err", err)
		}
		if len(rep.Executed)+len(rep.Expired) > 0 {
			log.Info("executor run", "executed", rep.Executed, "expired", rep.Expired)
		}
	}
}
