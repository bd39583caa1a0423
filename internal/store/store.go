package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// Defaults for Options.
const (
	DefaultMinRetention = 30 * 24 * time.Hour
	DefaultMaxRetention = 100 * 365 * 24 * time.Hour
	DefaultMaxChunkSize = 64 << 20
	DefaultMaxBatch     = 10_000
	// DefaultPackThreshold: chunks up to this size are packed. Below it a
	// file per chunk costs more in create, rename and directory fsync than
	// in writing the data; see docs/benchmarks.md for the measurements.
	DefaultPackThreshold = 256 << 10
	// DefaultCommitTimeout bounds a group commit and an upload's index
	// look-ups: a stalled database fails uploads with ErrUnavailable
	// instead of holding them (and their sockets) indefinitely.
	DefaultCommitTimeout = 15 * time.Second
)

// Options tunes a Store. Zero fields take the defaults.
type Options struct {
	// MinRetention is how long every new chunk is kept at least.
	MinRetention time.Duration
	// MaxRetention bounds how far ahead retain_until may be set: retention
	// can never be shortened, so a typo such as year 9999 must be refused
	// rather than lock data forever.
	MaxRetention time.Duration
	// MaxChunkSize is the largest chunk accepted, in bytes.
	MaxChunkSize int64
	// MaxBatch is the most hashes one Missing or Retain call may name.
	MaxBatch int
	// Packs, if set, stores small chunks as records in pack files with
	// group commit; nil stores every chunk as its own file.
	Packs *pack.Packs
	// PackThreshold is the largest chunk that is packed.
	PackThreshold int64
	// Deletion is the server's deletion policy. With an admin set, a request
	// takes the stronger of this and the admin set's policy (a server flag
	// can raise the bar, never lower what the admins signed).
	Deletion DeletionPolicy
	// VaultID names the vault in every signed statement, so that a
	// signature for one vault is worthless on another.
	VaultID string
	// DatabaseTime reads the database's clock, which the executor checks
	// the server's clock against before it deletes anything. Nil: SELECT
	// clock_timestamp(). Tests inject the fake clock's view.
	DatabaseTime func(ctx context.Context) (time.Time, error)
	// MaxClockSkew is how far the two clocks may disagree.
	MaxClockSkew time.Duration
	// Notify, if set, is told of every deletion event after it committed
	// (a webhook, so that humans notice a deletion in flight).
	Notify func(ctx context.Context, e Event)

	// Journal is the data directory's journal of audit entries (invariant
	// 8). The server always has one; nil only in tests of parts that do
	// not need it, and then the executor executes no deletion and removes
	// no content.
	Journal *journal.Journal
	// Genesis is the genesis admin set pinned in the data directory
	// (admins.json): the journal's genesis entry must be exactly it, and
	// every later admin set must follow from it by signed changes. Nil: no
	// admins are pinned, and the executor executes no deletion.
	Genesis *Genesis

	// MaxManifestSize is the largest chunk a snapshot commit will read as a
	// manifest, in bytes.
	MaxManifestSize int64
	// MaxManifestDepth is the deepest manifest tree a snapshot may have
	// (the root is level 1).
	MaxManifestDepth int
	// MaxManifests bounds the manifest references a snapshot commit
	// follows, counting a manifest shared by several parents each time.
	MaxManifests int
	// RetentionBatch is how many chunks one statement handles when a
	// snapshot commit or extension propagates retention.
	RetentionBatch int

	// CommitTimeout is the deadline of every upload's index work, counted
	// from when the upload hands its chunk to the committer: a group whose
	// transaction does not finish in time fails with ErrUnavailable, and
	// nothing in it is acknowledged. It also bounds single-row look-ups.
	CommitTimeout time.Duration
	// FreeSpace reads the space of the filesystem holding the content.
	// Nil: free space is not checked, and no reserve is kept.
	FreeSpace func() (Space, error)
	// Reserve is the free space below which new content is refused with
	// ErrInsufficientStorage (see space.go). Zero: refused only once the
	// filesystem is full.
	Reserve Reserve
	// SpaceCacheTTL is how long a free-space reading is reused.
	SpaceCacheTTL time.Duration
	// ReconcileCursor is the file that keeps an unfinished reconcile
	// pass's position, so that a restart resumes it (online.go). Empty:
	// every pass starts over.
	ReconcileCursor string
	// ReconcileBatch is how many chunk files or index rows the background
	// reconcile checks per query; the cursor is saved every ten batches.
	ReconcileBatch int
	// QuotaCacheTTL is how long the quota settings are reused (see
	// quota.go).
	QuotaCacheTTL time.Duration
}

func (o *Options) setDefaults() {
	if o.MinRetention == 0 {
		o.MinRetention = DefaultMinRetention
	}
	if o.MaxRetention == 0 {
		o.MaxRetention = DefaultMaxRetention
	}
	if o.MaxChunkSize == 0 {
		o.MaxChunkSize = DefaultMaxChunkSize
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.PackThreshold == 0 {
		o.PackThreshold = DefaultPackThreshold
	}
	o.PackThreshold = min(o.PackThreshold, pack.MaxRecord)
	if o.Deletion.ApprovalsRequired == 0 {
		o.Deletion.ApprovalsRequired = DefaultApprovalsRequired
	}
	if o.Deletion.Delay == 0 {
		o.Deletion.Delay = DefaultDeletionDelay
	}
	if o.Deletion.Expiry == 0 {
		o.Deletion.Expiry = DefaultRequestExpiry
	}
	if o.MaxClockSkew == 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}
	if o.MaxManifestSize == 0 {
		o.MaxManifestSize = DefaultMaxManifestSize
	}
	if o.MaxManifestDepth == 0 {
		o.MaxManifestDepth = DefaultMaxManifestDepth
	}
	if o.MaxManifests == 0 {
		o.MaxManifests = DefaultMaxManifests
	}
	if o.RetentionBatch == 0 {
		o.RetentionBatch = DefaultRetentionBatch
	}
	if o.SpaceCacheTTL == 0 {
		o.SpaceCacheTTL = DefaultSpaceCacheTTL
	}
	if o.CommitTimeout == 0 {
		o.CommitTimeout = DefaultCommitTimeout
	}
	if o.ReconcileBatch == 0 {
		o.ReconcileBatch = reconcileBatch
	}
	if o.QuotaCacheTTL == 0 {
		o.QuotaCacheTTL = DefaultQuotaCacheTTL
	}
}

// lookupCtx bounds one index look-up of a request: besides the pool's
// statement and lock timeouts, it also bounds the wait for a free
// connection, which under a stall is where requests queue.
func (s *Store) lookupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.CommitTimeout)
}

// Store is the vault's chunk store: content in Blobs, index in PostgreSQL.
// It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	blobs   Blobs
	clk     clock.Clock
	log     *slog.Logger
	opts    Options
	metrics *Metrics

	packs     *pack.Packs
	committer *committer // nil without packs
	packBufs  sync.Pool  // *[]byte of PackThreshold+1 bytes

	// hashLocks serialise, per hash, writing a new chunk's content and
	// indexing it against the executor removing the content of a deleted
	// chunk of the same hash: without them a re-upload racing its own
	// deletion could lose its file after being acknowledged.
	hashLocks [4096]sync.Mutex
	// executing counts executions in progress; uploads of already stored
	// chunks re-check their row only while it is non-zero.
	executing atomic.Int32
	// exec is the executor's memory of what it already alarmed about.
	exec execAlarms
	// beforeDeleteBatch, set only by tests (export_test.go), runs before
	// each batch of chunk deletions: races with the executor are made
	// deterministic with it.
	beforeDeleteBatch func(deletion int64)

	rev revocations

	// ckpt holds the latest signed checkpoint and any rollback found under
	// it, in memory: see audit_checkpoint.go.
	ckpt checkpointGuard

	// space caches the free-space reading and holds the read-only state:
	// see space.go.
	space spaceGuard

	// online holds the write gate and progress of the start-up
	// reconcile, and the orphans of failed commits: see online.go.
	online onlineState
	// quotas caches the quota settings: see quota.go.
	quotas quotaCache
}

// New returns a Store over an open pool and blob store. metrics may be nil.
func New(pool *pgxpool.Pool, blobs Blobs, clk clock.Clock, log *slog.Logger, metrics *Metrics, opts Options) *Store {
	opts.setDefaults()
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	s := &Store{pool: pool, blobs: blobs, clk: clk, log: log.With("component", "store"), opts: opts, metrics: metrics, packs: opts.Packs}
	if s.packs != nil {
		s.committer = newCommitter(s, s.packs)
		n := int(opts.PackThreshold) + 1
		s.packBufs.New = func() any { b := make([]byte, n); return &b }
	}
	return s
}

// Close stops the group committer, after every upload handed to it has been
// answered. Call it once no more uploads can arrive.
func (s *Store) Close() {
	if s.committer != nil {
		s.committer.close()
	}
}

// Options returns the store's effective options.
func (s *Store) Options() Options { return s.opts }

// Ping reports whether the index database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return dbErr("ping", err)
	}
	return nil
}

// Custom SQLSTATEs raised by the triggers in migrations/.
const (
	sqlstateRetentionShortened = "WV001"
	sqlstateImmutableChunk     = "WV002"
	sqlstateNoDelete           = "WV003"
	sqlstateAppendOnly         = "WV004"
	sqlstateUniqueViolation    = "23505"
	sqlstateQueryCanceled      = "57014"
	sqlstateLockNotAvailable   = "55P03"
)

// Unavailable reports whether err means the database cannot be reached or
// used right now (down, hung, timed out), so that the same call may succeed
// later: the server retries its start-up connection on such errors only.
func Unavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || connectionErr(err)
}

// dbErr translates a driver error once, at the store boundary, so callers
// and the HTTP layer only ever see the store's sentinels. Only a failure to
// reach or keep the database (connectionErr) becomes ErrUnavailable, "retry
// later"; any other error keeps its meaning and is an internal failure: an
// integrity failure answered 503 would invite retries instead of an alarm.
func dbErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if isStoreErr(err) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == sqlstateRetentionShortened:
			return fmt.Errorf("store: %s: %w: %s", op, ErrRetentionShortened, pgErr.Message)
		case pgErr.Code == sqlstateImmutableChunk, pgErr.Code == sqlstateNoDelete, pgErr.Code == sqlstateAppendOnly:
			return fmt.Errorf("store: %s: %w: %s", op, ErrImmutable, pgErr.Message)
		case pgErr.Code == sqlstateUniqueViolation:
			return fmt.Errorf("store: %s: %w: %s", op, ErrConflict, pgErr.Message)
		}
	}
	if NoSpace(err) {
		// The data directory is full (the journal's append failed inside
		// the transaction): 507, not "index unavailable". Checked first,
		// since a syscall.Errno also passes for a net.Error below.
		return fmt.Errorf("store: %s: %w", op, err)
	}
	if connectionErr(err) {
		return fmt.Errorf("store: %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// connectionErr reports whether err means that the database cannot be
// reached or used right now, so that the same request may succeed later:
// a failed connect, a request that never left (pgconn.SafeToRetry), a
// timeout, a closed pool or connection, a broken socket; from the server,
// SQLSTATE class 08 (connection exception), 53 (insufficient resources),
// 57P01-57P03 (admin or crash shutdown, cannot connect now), and the
// pool's own bounds on waiting: 57014 (statement_timeout; a request's own
// cancellation arrives as context.Canceled, checked before) and 55P03
// (lock_timeout). A stalled database is "retry later", never a hang.
func connectionErr(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "53"):
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03":
			return true
		case pgErr.Code == sqlstateQueryCanceled, pgErr.Code == sqlstateLockNotAvailable:
			return true
		}
		return false
	}
	var (
		connect *pgconn.ConnectError
		netErr  net.Error
	)
	// A bare syscall.Errno passes for a net.Error (it has Timeout and
	// Temporary): only a network operation's error counts, so that an
	// EIO from the journal's fsync is a failure, not "retry later".
	if errors.As(err, &netErr) {
		if _, bare := netErr.(syscall.Errno); bare {
			netErr = nil
		}
	}
	return errors.As(err, &connect) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, puddle.ErrClosedPool) || errors.Is(err, pgconn.ErrConnClosed) ||
		netErr != nil || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// retainUntil decides a new chunk's retention: at least now+MinRetention,
// later if asked, never past now+MaxRetention.
func (s *Store) retainUntil(now, requested time.Time) (time.Time, error) {
	floor := now.Add(s.opts.MinRetention)
	if requested.IsZero() || requested.Before(floor) {
		return floor, nil
	}
	if requested.After(now.Add(s.opts.MaxRetention)) {
		return time.Time{}, invalid("retain_until", "more than %s ahead", s.opts.MaxRetention)
	}
	return requested, nil
}

// limitReader fails with ErrTooLarge once more than max bytes are read, so
// the store never writes an oversized chunk whatever its caller checked.
type limitReader struct {
	r   io.Reader
	max int64
	n   int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return 0, fmt.Errorf("store: chunk larger than %d bytes: %w", l.max, ErrTooLarge)
	}
	return n, err
}

// isStoreErr reports whether err already carries one of the store's own
// meanings, which dbErr must pass through rather than reinterpret.
func isStoreErr(err error) bool {
	var (
		inv     *InvalidError
		missing *MissingChunksError
	)
	for _, e := range []error{ErrNotFound, ErrConflict, ErrRetentionShortened, ErrImmutable,
		ErrUnavailable, ErrCorrupt, ErrDamaged, ErrContentMissing, ErrTooLarge, ErrInsufficientStorage, ErrQuotaExceeded, ErrSelfApproval, ErrClockSkew,
		ErrRequiresApproval, ErrBadSignature, ErrIntegrity, ErrAuditTree, ErrAuditChainBroken, ErrRollback} {
		if errors.Is(err, e) {
			return true
		}
	}
	return errors.As(err, &inv) || errors.As(err, &missing)
}

func (s *Store) hashLock(h chunk.Hash) *sync.Mutex {
	return &s.hashLocks[int(h[0])<<4|int(h[1]>>4)]
}

// Event is a deletion, damage or scrub event, as sent to Options.Notify.
type Event struct {
	// deletion.requested, .approved, .scheduled, .cancelled, .expired,
	// .executed; chunk.damaged, chunk.repaired; scrub.pass;
	// replica.disappeared, replica.alarm
	Type     string    `json:"type"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
	Deletion Deletion  `json:"deletion"`
	// Damage is set for chunk.damaged and chunk.repaired.
	Damage *Damage `json:"damage,omitempty"`
	// Scrub is set for scrub.pass.
	Scrub *ScrubStatus `json:"scrub,omitempty"`
	// Replica is set for replica.disappeared and replica.alarm.
	Replica *ReplicaAlert `json:"replica,omitempty"`
}

// ReplicaAlert is what a replica reports about its primary: something it
// still holds disappeared from the primary, or the primary's log no
// longer extends the checkpoint the replica kept.
type ReplicaAlert struct {
	Source string `json:"source"`
	URL    string `json:"url"`
	// Kind and Item name what disappeared (replica.disappeared).
	Kind string `json:"kind,omitempty"`
	Item string `json:"item,omitempty"`
	// Reason says why replication stopped (replica.alarm).
	Reason string `json:"reason,omitempty"`
}

func (s *Store) notify(ctx context.Context, typ, actor string, d Deletion) {
	if s.opts.Notify != nil {
		s.opts.Notify(ctx, Event{Type: typ, At: s.clk.Now().UTC(), Actor: actor, Deletion: d})
	}
}
