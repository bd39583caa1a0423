// Package config loads the vault server's settings from flags and VAULT_*
// environment variables (flags win), and refuses unsafe ones.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults.
const (
	DefaultListen       = "127.0.0.1:8420"
	DefaultMaxChunkSize = 64 << 20
	DefaultMinRetention = 30 * 24 * time.Hour
	DefaultDBMaxConns   = 16
	// The background scrub reads at most this much per second, and starts
	// a full pass at most once per interval.
	DefaultScrubBandwidth = "50MiB"
	DefaultScrubInterval  = "24h"
	// DefaultFreeSpaceReserve is the free space kept back from new
	// content on the data directory's filesystem.
	DefaultFreeSpaceReserve = "1GiB"
	// Deletion policy defaults and floors.
	DefaultApprovalsRequired = 2
	DefaultDeletionDelay     = 72 * time.Hour
	DefaultRequestExpiry     = 7 * 24 * time.Hour
	SafeMinDeletionDelay     = time.Hour
	// MaxChunkSizeLimit bounds the configurable chunk size: a chunk is a
	// unit of dedup and of streaming, not a whole backup.
	MaxChunkSizeLimit = 1 << 30
	// SafeMinRetention is the smallest minimum retention allowed outside
	// dev mode: below a day, "immutable" would mean little.
	SafeMinRetention = 24 * time.Hour

	// Bounded waits (issue 14): how long the vault waits on its database
	// before it answers 503 instead of hanging.
	DefaultDBConnectTimeout   = 10 * time.Second
	DefaultDBStatementTimeout = 60 * time.Second
	DefaultDBLockTimeout      = 5 * time.Second
	DefaultCommitTimeout      = 15 * time.Second

	// Bounded resources (issue 14): connections, slow bodies, batch memory.
	DefaultMaxConns          = 8192
	DefaultMaxConnsPerClient = 256
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMinBodyRate       = 4 << 10 // bytes per second
	DefaultBodyRateGrace     = 10 * time.Second
	// DefaultReadTimeout bounds reading one whole request, body included:
	// the backstop behind the minimum body rate (a large chunk on a slow
	// but honest link must fit in it).
	DefaultReadTimeout = 15 * time.Minute
	// DefaultMaxRequestsPerToken is api.DefaultMaxRequestsPerToken.
	DefaultMaxRequestsPerToken = 64
	DefaultBatchMemory         = 256 << 20
)

// ErrUnsafe is wrapped by Validate's refusals.
var ErrUnsafe = errors.New("config: unsafe setting")

// Serve is the configuration of `vault serve`.
type Serve struct {
	DataDir      string
	DatabaseURL  string
	Listen       string
	TLSCert      string
	TLSKey       string
	MaxChunkSize int64
	// PackThreshold: chunks up to this size are appended to pack files with
	// group commit; 0 stores every chunk as its own file.
	PackThreshold   int64
	MinRetention    time.Duration
	DBMaxConns      int
	LogFormat       string // "json" or "text"
	LogLevel        string // "debug", "info", "warn", "error"
	ShutdownTimeout time.Duration
	// Dev relaxes the safety floors (short retention) for local trials; the
	// server logs it loudly at start.
	Dev bool
	// ApprovalsRequired is how many admins other than the requester must
	// approve a deletion.
	ApprovalsRequired int
	// DeletionDelay runs from the quorum to execution.
	DeletionDelay time.Duration
	// RequestExpiry is how long a deletion request waits for its quorum.
	RequestExpiry time.Duration
	// ExecutorInterval is how often the executor looks for due deletions.
	ExecutorInterval time.Duration
	// WebhookURL, if set, receives every deletion event as JSON.
	WebhookURL string
	// PprofListen, when set, serves net/http/pprof on a separate listener
	// (keep it on loopback: profiles reveal internals).
	PprofListen string
	// AllowPlaintext allows plain HTTP on a non-loopback address, for
	// deployments behind a TLS-terminating proxy (e.g. docker-compose).
	AllowPlaintext bool

	// DBConnectTimeout bounds one attempt to connect to the database; at
	// start the vault retries with backoff until one succeeds.
	DBConnectTimeout time.Duration
	// DBStatementTimeout and DBLockTimeout are the pool's
	// statement_timeout and lock_timeout: no query waits longer.
	DBStatementTimeout time.Duration
	DBLockTimeout      time.Duration
	// CommitTimeout bounds each group commit and an upload's index
	// look-ups: past it the upload fails with 503, never hangs.
	CommitTimeout time.Duration

	// MaxConns caps open client connections; at the cap an idle one is
	// closed to admit a new one. MaxConnsPerClient caps them per client IP
	// (0: no per-client cap, e.g. behind a proxy that has its own).
	MaxConns          int
	MaxConnsPerClient int
	// ReadHeaderTimeout and IdleTimeout are the HTTP server's.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// MinBodyRate is the slowest an upload body may arrive, in bytes per
	// second averaged from its start, once BodyRateGrace has passed; 0
	// disables the check.
	MinBodyRate   int64
	BodyRateGrace time.Duration
	// ReadTimeout is the HTTP server's bound on reading one request,
	// headers and body: past it the connection is closed.
	ReadTimeout time.Duration
	// MaxRequestsPerToken caps one token's concurrent requests (429
	// beyond); 0: no cap.
	MaxRequestsPerToken int
	// BatchMemory bounds the bytes of batch bodies held in memory at once.
	BatchMemory int64
	// ScrubBandwidth bounds the background scrub's reads, in bytes per
	// second; 0 disables the background scrub.
	ScrubBandwidth int64
	// ScrubInterval is the least time between the starts of two full
	// background scrub passes.
	ScrubInterval time.Duration
	// ReserveBytes, or ReservePercent of the filesystem's size when it is
	// set, is the free space on the data directory's filesystem below
	// which uploads are refused (507), so that start-up, the journal and
	// reads always have room.
	ReserveBytes   int64
	ReservePercent float64
}

// LoadServe parses args (without the subcommand name) over the environment
// read through getenv.
func LoadServe(args []string, getenv func(string) string, stderr io.Writer) (Serve, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	return LoadServeFlags(args, getenv, fs)
}

// LoadServeFlags is LoadServe on the caller's flag set, whose output and
// usage (the command's -h) are the caller's.
func LoadServeFlags(args []string, getenv func(string) string, fs *flag.FlagSet) (Serve, error) {
	var c Serve
	getenv = WithFiles(getenv)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&c.DataDir, "data-dir", env("VAULT_DATA_DIR", ""), "the vault data directory `DIR`, made by vault init (VAULT_DATA_DIR)")
	fs.StringVar(&c.DatabaseURL, "database-url", env("VAULT_DATABASE_URL", ""), "PostgreSQL URL (VAULT_DATABASE_URL, or VAULT_DATABASE_URL_FILE)")
	fs.StringVar(&c.Listen, "listen", env("VAULT_LISTEN", DefaultListen), "listen address (VAULT_LISTEN)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("VAULT_TLS_CERT", ""), "TLS certificate file (VAULT_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("VAULT_TLS_KEY", ""), "TLS key file (VAULT_TLS_KEY)")
	maxChunk := fs.String("max-chunk-size", env("VAULT_MAX_CHUNK_SIZE", "64MiB"), "largest chunk accepted (VAULT_MAX_CHUNK_SIZE)")
	packThreshold := fs.String("pack-threshold", env("VAULT_PACK_THRESHOLD", "256KiB"), "chunks up to this size go to pack files; 0 disables packing (VAULT_PACK_THRESHOLD)")
	minRet := fs.String("min-retention", env("VAULT_MIN_RETENTION", "30d"), "minimum retention of every chunk (VAULT_MIN_RETENTION)")
	fs.IntVar(&c.DBMaxConns, "db-max-conns", atoi(env("VAULT_DB_MAX_CONNS", ""), DefaultDBMaxConns), "database pool size (VAULT_DB_MAX_CONNS)")
	fs.StringVar(&c.LogFormat, "log-format", env("VAULT_LOG_FORMAT", "json"), "log format: json or text (VAULT_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", env("VAULT_LOG_LEVEL", "info"), "log level: debug, info, warn, error (VAULT_LOG_LEVEL)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may run on at shutdown")
	fs.IntVar(&c.ApprovalsRequired, "approvals-required", atoi(env("VAULT_APPROVALS_REQUIRED", ""), DefaultApprovalsRequired), "admins other than the requester who must approve a deletion (VAULT_APPROVALS_REQUIRED)")
	deletionDelay := fs.String("deletion-delay", env("VAULT_DELETION_DELAY", "72h"), "wait between a deletion's quorum and its execution, in which any admin can cancel (VAULT_DELETION_DELAY)")
	requestExpiry := fs.String("request-expiry", env("VAULT_REQUEST_EXPIRY", "7d"), "how long a deletion request waits for its quorum (VAULT_REQUEST_EXPIRY)")
	executorInterval := fs.String("executor-interval", env("VAULT_EXECUTOR_INTERVAL", "30s"), "how often due deletions are executed (VAULT_EXECUTOR_INTERVAL)")
	fs.StringVar(&c.WebhookURL, "webhook-url", env("VAULT_WEBHOOK_URL", ""), "POST every deletion event as JSON to this URL (VAULT_WEBHOOK_URL)")
	fs.StringVar(&c.PprofListen, "pprof-listen", env("VAULT_PPROF_LISTEN", ""), "serve pprof profiles on this address, e.g. 127.0.0.1:6060; off by default (VAULT_PPROF_LISTEN)")
	reserve := fs.String("free-space-reserve", env("VAULT_FREE_SPACE_RESERVE", DefaultFreeSpaceReserve),
		"free space kept on the data directory's filesystem: uploads get 507 at or below it; a size (1GiB) or a share of the filesystem (2%); 0 refuses only when full (VAULT_FREE_SPACE_RESERVE)")
	fs.BoolVar(&c.Dev, "dev", env("VAULT_DEV", "") == "1", "dev mode: relax safety floors, loudly (VAULT_DEV=1)")
	scrubBandwidth := fs.String("scrub-bandwidth", env("VAULT_SCRUB_BANDWIDTH", DefaultScrubBandwidth), "most bytes per second the background scrub reads; 0 disables it (VAULT_SCRUB_BANDWIDTH)")
	scrubInterval := fs.String("scrub-interval", env("VAULT_SCRUB_INTERVAL", DefaultScrubInterval), "least time between the starts of two full scrub passes (VAULT_SCRUB_INTERVAL)")
	fs.BoolVar(&c.AllowPlaintext, "allow-plaintext", env("VAULT_ALLOW_PLAINTEXT", "") == "1", "allow plain HTTP on a non-loopback address (VAULT_ALLOW_PLAINTEXT=1)")
	var envErrs []error
	durationFlag(fs, &envErrs, &c.DBConnectTimeout, "db-connect-timeout", env("VAULT_DB_CONNECT_TIMEOUT", ""), DefaultDBConnectTimeout,
		"bound on one database connection attempt; at start the vault retries with backoff (VAULT_DB_CONNECT_TIMEOUT)")
	durationFlag(fs, &envErrs, &c.DBStatementTimeout, "db-statement-timeout", env("VAULT_DB_STATEMENT_TIMEOUT", ""), DefaultDBStatementTimeout,
		"the pool's statement_timeout (VAULT_DB_STATEMENT_TIMEOUT)")
	durationFlag(fs, &envErrs, &c.DBLockTimeout, "db-lock-timeout", env("VAULT_DB_LOCK_TIMEOUT", ""), DefaultDBLockTimeout,
		"the pool's lock_timeout (VAULT_DB_LOCK_TIMEOUT)")
	durationFlag(fs, &envErrs, &c.CommitTimeout, "commit-timeout", env("VAULT_COMMIT_TIMEOUT", ""), DefaultCommitTimeout,
		"deadline of each group commit and upload index look-up; past it the upload gets 503 (VAULT_COMMIT_TIMEOUT)")
	fs.IntVar(&c.MaxConns, "max-conns", atoi(env("VAULT_MAX_CONNS", ""), DefaultMaxConns),
		"most open client connections; at the cap the longest-idle one is closed (VAULT_MAX_CONNS)")
	fs.IntVar(&c.MaxConnsPerClient, "max-conns-per-client", atoi(env("VAULT_MAX_CONNS_PER_CLIENT", ""), DefaultMaxConnsPerClient),
		"most open connections from one client IP; 0: no per-client cap (VAULT_MAX_CONNS_PER_CLIENT)")
	durationFlag(fs, &envErrs, &c.ReadHeaderTimeout, "read-header-timeout", env("VAULT_READ_HEADER_TIMEOUT", ""), DefaultReadHeaderTimeout,
		"time a client has to send its request headers (VAULT_READ_HEADER_TIMEOUT)")
	durationFlag(fs, &envErrs, &c.IdleTimeout, "idle-timeout", env("VAULT_IDLE_TIMEOUT", ""), DefaultIdleTimeout,
		"how long an idle keep-alive connection stays open (VAULT_IDLE_TIMEOUT)")
	minRate := fs.String("min-body-rate", env("VAULT_MIN_BODY_RATE", "4KiB"),
		"slowest upload body accepted, bytes per second after the grace period; 0 disables (VAULT_MIN_BODY_RATE)")
	durationFlag(fs, &envErrs, &c.BodyRateGrace, "body-rate-grace", env("VAULT_BODY_RATE_GRACE", ""), DefaultBodyRateGrace,
		"how long an upload body may take before the minimum rate applies (VAULT_BODY_RATE_GRACE)")
	durationFlag(fs, &envErrs, &c.ReadTimeout, "read-timeout", env("VAULT_READ_TIMEOUT", ""), DefaultReadTimeout,
		"longest time to read one whole request, body included; past it the connection is closed (VAULT_READ_TIMEOUT)")
	fs.IntVar(&c.MaxRequestsPerToken, "max-requests-per-token", atoi(env("VAULT_MAX_REQUESTS_PER_TOKEN", ""), DefaultMaxRequestsPerToken),
		"most concurrent requests of one token; more get 429; 0: no cap (VAULT_MAX_REQUESTS_PER_TOKEN)")
	batchMem := fs.String("batch-memory", env("VAULT_BATCH_MEMORY", "256MiB"),
		"most bytes of batch upload bodies held in memory at once (VAULT_BATCH_MEMORY)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("config: unexpected arguments: %q", fs.Args())
	}
	if len(envErrs) > 0 {
		return c, errors.Join(envErrs...)
	}
	if c.DatabaseURL == "" {
		if file := getenv("VAULT_DATABASE_URL_FILE"); file != "" {
			if _, err := os.ReadFile(file); err != nil {
				return c, fmt.Errorf("config: VAULT_DATABASE_URL_FILE: %w", err)
			}
		}
	}
	var err error
	if c.MaxChunkSize, err = ParseSize(*maxChunk); err != nil {
		return c, fmt.Errorf("config: max chunk size: %w", err)
	}
	if c.PackThreshold, err = ParseSize(*packThreshold); err != nil {
		return c, fmt.Errorf("config: pack threshold: %w", err)
	}
	if c.DeletionDelay, err = ParseDuration(*deletionDelay); err != nil {
		return c, fmt.Errorf("config: deletion delay: %w", err)
	}
	if c.RequestExpiry, err = ParseDuration(*requestExpiry); err != nil {
		return c, fmt.Errorf("config: request expiry: %w", err)
	}
	if c.ExecutorInterval, err = ParseDuration(*executorInterval); err != nil {
		return c, fmt.Errorf("config: executor interval: %w", err)
	}
	if c.MinRetention, err = ParseDuration(*minRet); err != nil {
		return c, fmt.Errorf("config: min retention: %w", err)
	}
	if c.MinBodyRate, err = ParseSize(*minRate); err != nil {
		return c, fmt.Errorf("config: min body rate: %w", err)
	}
	if c.BatchMemory, err = ParseSize(*batchMem); err != nil {
		return c, fmt.Errorf("config: batch memory: %w", err)
	}
	if c.ScrubBandwidth, err = ParseSize(*scrubBandwidth); err != nil {
		return c, fmt.Errorf("config: scrub bandwidth: %w", err)
	}
	if c.ScrubInterval, err = ParseDuration(*scrubInterval); err != nil {
		return c, fmt.Errorf("config: scrub interval: %w", err)
	}
	if c.ReserveBytes, c.ReservePercent, err = ParseReserve(*reserve); err != nil {
		return c, fmt.Errorf("config: free space reserve: %w", err)
	}
	return c, c.Validate()
}

// Validate refuses settings that are incomplete or unsafe, with a message
// that says what to do.
func (c Serve) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("config: no data directory: pass --data-dir or set VAULT_DATA_DIR (create one with `vault init`)")
	case c.DatabaseURL == "":
		return errors.New("config: no database: pass --database-url or set VAULT_DATABASE_URL")
	case c.MaxChunkSize < 1024 || c.MaxChunkSize > MaxChunkSizeLimit:
		return fmt.Errorf("%w: max chunk size %d must be between 1KiB and 1GiB", ErrUnsafe, c.MaxChunkSize)
	case c.PackThreshold < 0 || c.PackThreshold > 16<<20:
		return fmt.Errorf("config: pack threshold %d must be between 0 (off) and 16MiB", c.PackThreshold)
	case c.MinRetention <= 0:
		return fmt.Errorf("%w: min retention must be positive, got %s", ErrUnsafe, c.MinRetention)
	case c.MinRetention < SafeMinRetention && !c.Dev:
		return fmt.Errorf("%w: min retention %s is below %s; only --dev allows that", ErrUnsafe, c.MinRetention, SafeMinRetention)
	case c.ApprovalsRequired < 1:
		return fmt.Errorf("%w: approvals required must be at least 1, got %d: one stolen admin login must never be enough to delete", ErrUnsafe, c.ApprovalsRequired)
	case c.DeletionDelay <= 0:
		return fmt.Errorf("%w: deletion delay must be positive, got %s", ErrUnsafe, c.DeletionDelay)
	case c.DeletionDelay < SafeMinDeletionDelay && !c.Dev:
		return fmt.Errorf("%w: deletion delay %s is below %s, too short for anyone to notice and cancel; only --dev allows that", ErrUnsafe, c.DeletionDelay, SafeMinDeletionDelay)
	case c.ScrubBandwidth < 0:
		return fmt.Errorf("config: scrub bandwidth %d must be 0 (off) or positive", c.ScrubBandwidth)
	case c.ScrubInterval < time.Minute:
		return fmt.Errorf("config: scrub interval %s must be at least a minute", c.ScrubInterval)
	case c.RequestExpiry <= 0:
		return fmt.Errorf("config: request expiry must be positive, got %s", c.RequestExpiry)
	case c.ExecutorInterval < time.Second:
		return fmt.Errorf("config: executor interval must be at least 1s, got %s", c.ExecutorInterval)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("config: --tls-cert and --tls-key go together")
	case c.DBMaxConns < 2:
		return fmt.Errorf("config: db max conns must be at least 2, got %d", c.DBMaxConns)
	case c.ReserveBytes < 0 || c.ReservePercent < 0 || c.ReservePercent > MaxReservePercent:
		return fmt.Errorf("config: free space reserve must be a size or a share between 0%% and %d%%", MaxReservePercent)
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("config: log format must be json or text, got %q", c.LogFormat)
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		return err
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	if c.PprofListen != "" && !isLoopback(c.PprofListen) {
		return fmt.Errorf("%w: pprof on %s would expose internals; listen on loopback", ErrUnsafe, c.PprofListen)
	}
	if c.TLSCert == "" && !c.AllowPlaintext && !isLoopback(c.Listen) {
		return fmt.Errorf("%w: plain HTTP on %s would send tokens and data in the clear: "+
			"give --tls-cert and --tls-key, listen on 127.0.0.1, or pass --allow-plaintext behind a TLS proxy", ErrUnsafe, c.Listen)
	}
	return nil
}

// validateLimits refuses waits and caps that would make the vault hang or
// refuse everyone.
func (c Serve) validateLimits() error {
	switch {
	case c.DBConnectTimeout < 100*time.Millisecond:
		return fmt.Errorf("config: db connect timeout must be at least 100ms, got %s", c.DBConnectTimeout)
	case c.DBStatementTimeout < 100*time.Millisecond:
		return fmt.Errorf("config: db statement timeout must be at least 100ms, got %s", c.DBStatementTimeout)
	case c.DBLockTimeout < 10*time.Millisecond || c.DBLockTimeout > c.DBStatementTimeout:
		return fmt.Errorf("config: db lock timeout must be between 10ms and the statement timeout (%s), got %s", c.DBStatementTimeout, c.DBLockTimeout)
	case c.CommitTimeout < 100*time.Millisecond:
		return fmt.Errorf("config: commit timeout must be at least 100ms, got %s", c.CommitTimeout)
	case c.MaxConns < 16:
		return fmt.Errorf("config: max conns must be at least 16, got %d", c.MaxConns)
	case c.MaxConnsPerClient < 0 || c.MaxConnsPerClient > c.MaxConns:
		return fmt.Errorf("config: max conns per client must be between 0 (no cap) and max conns (%d), got %d", c.MaxConns, c.MaxConnsPerClient)
	case c.ReadHeaderTimeout < 100*time.Millisecond:
		return fmt.Errorf("config: read header timeout must be at least 100ms, got %s", c.ReadHeaderTimeout)
	case c.IdleTimeout < time.Second:
		return fmt.Errorf("config: idle timeout must be at least 1s, got %s", c.IdleTimeout)
	case c.ReadTimeout < time.Second:
		return fmt.Errorf("config: read timeout must be at least 1s, got %s", c.ReadTimeout)
	case c.MaxRequestsPerToken < 0:
		return fmt.Errorf("config: max requests per token must be 0 (no cap) or more, got %d", c.MaxRequestsPerToken)
	case c.BodyRateGrace < 0:
		return fmt.Errorf("config: body rate grace must not be negative, got %s", c.BodyRateGrace)
	case c.BatchMemory < 16<<20:
		return fmt.Errorf("config: batch memory must be at least 16MiB (one batch body), got %d", c.BatchMemory)
	}
	return nil
}

// durationFlag defines a duration flag whose default comes from the
// environment value env (ParseDuration's syntax) or else def.
// A malformed environment value is reported through errs.
func durationFlag(fs *flag.FlagSet, errs *[]error, p *time.Duration, name, env string, def time.Duration, usage string) {
	*p = def
	if env != "" {
		d, err := ParseDuration(env)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("config: %s: %w", name, err))
		}
		*p = d
	}
	fs.Func(name, fmt.Sprintf("%s (default %s)", usage, def), func(s string) error {
		d, err := ParseDuration(s)
		if err != nil {
			return err
		}
		*p = d
		return nil
	})
}

// WithFiles wraps getenv so that an unset VAULT_X is read from the file
// named by VAULT_X_FILE, if any: secrets such as the database URL need not
// sit in the environment.
func WithFiles(getenv func(string) string) func(string) string {
	return func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		if file := getenv(name + "_FILE"); file != "" {
			if b, err := os.ReadFile(file); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		return ""
	}
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func atoi(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}

// ParseDuration is time.ParseDuration plus a "d" (24h) unit: "30d", "36h".
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseFloat(n, 64)
		if err != nil || days < 0 || days > 365*1000 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(days * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return d, nil
}

// ParseLogLevel reads a log level: debug, info, warn or error, in any
// case. slog itself would also take offsets ("info+2") and fall back
// silently on a typo; a typo here must not quietly hide the debug lines
// someone asked for, or flood a log meant to be quiet.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("config: log level must be one of debug, info, warn, error; got %q", s)
}

// MaxReservePercent bounds a free-space reserve given as a share: above it
// the reserve would mostly keep the disk empty.
const MaxReservePercent = 50

// ParseReserve reads a free-space reserve: a size as ParseSize reads it
// ("1GiB", "0"), or a share of the filesystem ("2%"), returned as percent.
func ParseReserve(s string) (bytes int64, percent float64, err error) {
	if n, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		if err != nil || p < 0 || p > MaxReservePercent || p != p {
			return 0, 0, fmt.Errorf("invalid share %q: want 0%% to %d%%", s, MaxReservePercent)
		}
		return 0, p, nil
	}
	b, err := ParseSize(s)
	return b, 0, err
}

// ParseSize reads a byte count with an optional binary unit: "4096",
// "64KiB", "1MiB", "1GiB".
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}
