package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/clock"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/store"
)

// ErrAlarm: the primary's audit log does not extend the checkpoint this
// replica kept (rolled back, forked, or signed by another key), and
// replication from it is stopped until an admin of the replica
// acknowledges.
var ErrAlarm = errors.New("replica: the primary's audit log was rolled back or forked; replication stopped until an admin of this replica acknowledges")

// Defaults for Options.
const (
	DefaultWorkers     = 4
	DefaultCheckChunks = 1000
	// missingBatch is how many hashes one missing query names, here and
	// on the primary (well under either vault's MaxBatch).
	missingBatch = 100
	listPage     = 500
	// retentionMargin is added to the replica's own minimum when the
	// primary's retention is shorter: the commit checks the floor at its
	// own time, after the copy.
	retentionMargin = time.Hour
)

// Options configure a Replicator.
type Options struct {
	// Source names the primary on this replica (replica_sources.name);
	// URL is the primary's address, as recorded.
	Source string
	URL    string
	// Primary talks to the primary with a replicator token.
	Primary *client.Client
	// CheckpointKey pins the primary's checkpoint verifier key. Empty: the
	// key recorded at the first pass, or at the first pass the key the
	// primary serves (trust on first use; compare it out of band).
	CheckpointKey string
	// Store is this vault's store, where copies go.
	Store *store.Store
	Log   *slog.Logger
	// Clock is the store's clock (nil: the real one): retention floors
	// are measured on it.
	Clock clock.Clock
	// Metrics, if set, receives the replication metrics.
	Metrics *Metrics
	// Notify, if set, receives replica.disappeared and replica.alarm
	// events (the webhook).
	Notify func(context.Context, store.Event)
	// Workers is how many chunks are fetched at once (0: DefaultWorkers).
	Workers int
	// CheckChunks is how many copied chunks each pass looks up on the
	// primary, continuing where the last pass stopped (0:
	// DefaultCheckChunks; negative: all of them).
	CheckChunks int
	// BytesPerSecond bounds the chunk bytes fetched; 0: no bound.
	BytesPerSecond int64
	// Progress, if set, is called after each snapshot.
	Progress func(Progress)
}

// Progress is where a pass stands.
type Progress struct {
	Snapshot       string `json:"snapshot"`
	SnapshotsDone  int    `json:"snapshots_done"`
	SnapshotsTotal int    `json:"snapshots_total"`
	Chunks         int64  `json:"chunks"`
	Bytes          int64  `json:"bytes"`
}

// Report is what a pass did.
type Report struct {
	Source string `json:"source"`
	// CheckpointSize is the size of the primary checkpoint the pass
	// verified and recorded.
	CheckpointSize int64 `json:"checkpoint_size"`
	// PrimarySnapshots counts the snapshots the primary lists.
	PrimarySnapshots int `json:"primary_snapshots"`
	// Snapshots counts the snapshots copied; Extended those whose
	// retention was raised to the primary's; Holds the holds placed.
	Snapshots int `json:"snapshots"`
	Extended  int `json:"extended"`
	Holds     int `json:"holds"`
	// Chunks and Bytes count the chunk bodies fetched from the primary.
	Chunks int64 `json:"chunks"`
	Bytes  int64 `json:"bytes"`
	// ChunksChecked counts the copied chunks looked up on the primary;
	// Disappeared the disappearances found this pass (new ones only).
	ChunksChecked int `json:"chunks_checked"`
	Disappeared   int `json:"disappeared"`
	// Failed lists the snapshots not copied, and why.
	Failed []string `json:"failed,omitempty"`
}

// Replicator pulls from one primary into this vault's store. Pass is not
// safe for concurrent use.
type Replicator struct {
	o      Options
	actor  string
	log    *slog.Logger
	cursor chunk.Hash // the disappearance check's position among copied chunks
	lim    *limiter
}

// New returns a Replicator.
func New(o Options) (*Replicator, error) {
	if err := store.CheckReplicaName(o.Source); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	if o.Primary == nil || o.Store == nil || o.Log == nil {
		return nil, errors.New("replica: Primary, Store and Log are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.CheckChunks == 0 {
		o.CheckChunks = DefaultCheckChunks
	}
	return &Replicator{o: o, actor: store.ReplicaActor(o.Source), log: o.Log.With("component", "replica", "source", o.Source),
		lim: newLimiter(o.BytesPerSecond)}, nil
}

// Pass runs one replication pass: verify the primary's checkpoint against
// the kept one, copy new snapshots and their chunks, raise retention,
// mirror holds, report disappearances, then record the pass (with the
// primary checkpoint) in this vault's log. It returns ErrAlarm (wrapped)
// if the primary's log does not extend the kept checkpoint, or if an alarm
// is in force; nothing is copied then.
func (r *Replicator) Pass(ctx context.Context) (Report, error) {
	rep := Report{Source: r.o.Source}
	start := time.Now()
	src, err := r.source(ctx)
	if err != nil {
		return rep, err
	}
	if src.Alarm != "" {
		r.o.Metrics.alarm(r.o.Source, true)
		return rep, fmt.Errorf("%w (since %s: %s)", ErrAlarm, src.AlarmAt.UTC().Format(time.RFC3339), src.Alarm)
	}
	cpNote, cp, err := r.checkPrimary(ctx, src)
	if err != nil {
		return rep, err
	}
	r.o.Metrics.alarm(r.o.Source, false)
	rep.CheckpointSize = cp.Size

	primary, err := r.primarySnapshots(ctx)
	if err != nil {
		return rep, err
	}
	rep.PrimarySnapshots = len(primary)
	local, err := r.o.Store.AllSnapshots(ctx)
	if err != nil {
		return rep, fmt.Errorf("replica: %w", err)
	}
	byKey := make(map[string]store.Snapshot, len(local))
	for _, s := range local {
		byKey[key(s.Source, s.Name)] = s
	}
	primaryIDs := map[int64]string{}
	onPrimary := map[string]bool{}
	var todo []client.Snapshot
	for _, ps := range primary {
		k := key(ps.Source, ps.Name)
		primaryIDs[ps.ID] = k
		onPrimary[k] = true
		ls, ok := byKey[k]
		switch {
		case !ok:
			todo = append(todo, ps)
		case ls.ManifestRoot != ps.ManifestRoot:
			rep.Failed = append(rep.Failed, fmt.Sprintf("%s: this vault has a snapshot of that name with another manifest root (%s, the primary's is %s)", k, ls.ManifestRoot, ps.ManifestRoot))
		case ps.RetainUntil.After(ls.RetainUntil):
			// Retention follows the primary's extensions, never its
			// shortening (the primary cannot shorten either).
			if _, err := r.o.Store.ExtendSnapshot(ctx, r.actor, ls.ID, ps.RetainUntil); err != nil {
				rep.Failed = append(rep.Failed, fmt.Sprintf("%s: extend retention to %s: %v", k, ps.RetainUntil.Format(time.RFC3339), err))
			} else {
				rep.Extended++
			}
		}
	}
	r.lag(todo)
	for i, ps := range todo {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		k := key(ps.Source, ps.Name)
		ls, err := r.copySnapshot(ctx, ps, &rep)
		if err != nil {
			if ctx.Err() != nil || store.Unavailable(err) {
				return rep, fmt.Errorf("replica: copy snapshot %s: %w", k, err)
			}
			r.log.ErrorContext(ctx, "snapshot not copied", "snapshot", k, "err", err)
			rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", k, err))
			continue
		}
		byKey[k] = ls
		rep.Snapshots++
		r.o.Metrics.snapshot(r.o.Source)
		r.lag(todo[i+1:])
		if r.o.Progress != nil {
			r.o.Progress(Progress{Snapshot: k, SnapshotsDone: i + 1, SnapshotsTotal: len(todo), Chunks: rep.Chunks, Bytes: rep.Bytes})
		}
	}

	if err := r.mirrorHolds(ctx, primaryIDs, byKey, &rep); err != nil {
		return rep, err
	}
	if err := r.checkDisappeared(ctx, src, local, onPrimary, &rep); err != nil {
		return rep, err
	}
	if err := r.o.Store.RecordReplicaPass(ctx, r.o.Source, cpNote, cp.Size, rep); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return rep, fmt.Errorf("%w: %w", ErrAlarm, err)
		}
		return rep, fmt.Errorf("replica: %w", err)
	}
	r.o.Metrics.pass(r.o.Source, time.Now(), len(rep.Failed) == 0)
	r.log.InfoContext(ctx, "replication pass", "checkpoint_size", cp.Size, "snapshots", rep.Snapshots, "extended", rep.Extended,
		"holds", rep.Holds, "chunks", rep.Chunks, "bytes", rep.Bytes, "checked", rep.ChunksChecked,
		"disappeared", rep.Disappeared, "failed", len(rep.Failed), "duration", time.Since(start))
	if len(rep.Failed) > 0 {
		return rep, fmt.Errorf("replica: %d snapshots not copied: %s", len(rep.Failed), strings.Join(rep.Failed, "; "))
	}
	return rep, nil
}

func key(source, name string) string { return source + "/" + name }

// source returns the primary's row, recording it (and pinning its
// checkpoint key) on first use.
func (r *Replicator) source(ctx context.Context) (store.ReplicaSource, error) {
	src, err := r.o.Store.GetReplicaSource(ctx, r.o.Source)
	switch {
	case err == nil && (r.o.CheckpointKey == "" || r.o.CheckpointKey == src.CheckpointKey):
		if src.URL == r.o.URL || r.o.URL == "" {
			return src, nil
		}
		return r.o.Store.EnsureReplicaSource(ctx, r.o.Source, r.o.URL, src.CheckpointKey)
	case err == nil:
		return src, fmt.Errorf("replica: source %s: the checkpoint key given (%s) is not the one pinned at first use (%s): %w",
			r.o.Source, r.o.CheckpointKey, src.CheckpointKey, store.ErrConflict)
	case !errors.Is(err, store.ErrNotFound):
		return src, fmt.Errorf("replica: %w", err)
	}
	k := r.o.CheckpointKey
	if k == "" {
		if k, err = r.o.Primary.AuditKey(ctx); err != nil {
			return src, fmt.Errorf("replica: fetch the primary's checkpoint key: %w", err)
		}
		r.log.WarnContext(ctx, "pinning the checkpoint key the primary serves (trust on first use): compare it with `vault audit key` on the primary", "key", k)
	}
	if _, err := note.NewVerifier(k); err != nil {
		return src, fmt.Errorf("replica: the primary's checkpoint key %q: %w", k, err)
	}
	return r.o.Store.EnsureReplicaSource(ctx, r.o.Source, r.o.URL, k)
}

// checkPrimary fetches the primary's signed checkpoint and checks that it
// extends the one kept. A checkpoint that does not verify, or does not
// extend the kept one, raises the alarm.
func (r *Replicator) checkPrimary(ctx context.Context, src store.ReplicaSource) ([]byte, audit.Checkpoint, error) {
	v, err := note.NewVerifier(src.CheckpointKey)
	if err != nil {
		return nil, audit.Checkpoint{}, fmt.Errorf("replica: pinned checkpoint key: %w", err)
	}
	msg, err := r.o.Primary.AuditCheckpoint(ctx)
	if err != nil {
		return nil, audit.Checkpoint{}, fmt.Errorf("replica: fetch the primary's checkpoint: %w", err)
	}
	cp, err := audit.OpenCheckpoint(msg, v)
	if err != nil {
		return nil, cp, r.raise(ctx, src, fmt.Sprintf("the primary's checkpoint does not verify with the pinned key: %v", err))
	}
	if src.KeptCheckpoint == nil {
		return msg, cp, nil
	}
	kept, err := audit.OpenCheckpoint(src.KeptCheckpoint, v)
	if err != nil {
		return nil, cp, r.raise(ctx, src, fmt.Sprintf("the kept checkpoint does not verify: %v", err))
	}
	switch {
	case cp.Size < kept.Size:
		return nil, cp, r.raise(ctx, src, fmt.Sprintf("the primary's checkpoint has %d entries, fewer than the %d of the checkpoint kept: its log was rolled back", cp.Size, kept.Size))
	case cp.Size == kept.Size && cp.Root != kept.Root:
		return nil, cp, r.raise(ctx, src, fmt.Sprintf("the primary signed another root (%s) for the kept size %d (%s): its log was forked", cp.Root, cp.Size, kept.Root))
	case cp.Size > kept.Size:
		proof, err := r.o.Primary.AuditConsistency(ctx, kept.Size, cp.Size)
		var ce *client.Error
		if errors.As(err, &ce) && ce.StatusCode >= 400 && ce.StatusCode < 500 &&
			ce.StatusCode != http.StatusUnauthorized && ce.StatusCode != http.StatusForbidden && ce.StatusCode != http.StatusTooManyRequests {
			// The primary refuses the range: it signed a checkpoint its
			// own log does not reach.
			return nil, cp, r.raise(ctx, src, fmt.Sprintf("the primary signed a checkpoint of size %d and cannot prove it extends the kept one of size %d (%v)", cp.Size, kept.Size, err))
		}
		if err != nil {
			// Fail closed, without an alarm: an outage looks the same.
			return nil, cp, fmt.Errorf("replica: the primary cannot prove that its checkpoint of size %d extends the kept one of size %d: %w", cp.Size, kept.Size, err)
		}
		if err := tlog.CheckTree(proof, cp.Size, cp.Root, kept.Size, kept.Root); err != nil {
			return nil, cp, r.raise(ctx, src, fmt.Sprintf("the primary's checkpoint of size %d does not extend the kept one of size %d (%v): its log was forked", cp.Size, kept.Size, err))
		}
	}
	return msg, cp, nil
}

func (r *Replicator) raise(ctx context.Context, src store.ReplicaSource, reason string) error {
	raised, err := r.o.Store.RaiseReplicaAlarm(ctx, r.o.Source, reason)
	if err != nil {
		return fmt.Errorf("replica: raise alarm (%s): %w", reason, err)
	}
	r.o.Metrics.alarm(r.o.Source, true)
	if raised {
		r.log.ErrorContext(ctx, "ALERT: the primary's audit log does not extend the checkpoint kept; replication stopped until an admin of this vault acknowledges (vault replicate acknowledge)", "reason", reason)
		r.notify(ctx, "replica.alarm", store.ReplicaAlert{Source: r.o.Source, URL: src.URL, Reason: reason})
	}
	return fmt.Errorf("%w: %s", ErrAlarm, reason)
}

func (r *Replicator) notify(ctx context.Context, typ string, a store.ReplicaAlert) {
	if r.o.Notify != nil {
		r.o.Notify(ctx, store.Event{Type: typ, At: r.o.Clock.Now().UTC(), Actor: r.actor, Replica: &a})
	}
}

// primarySnapshots lists every snapshot the primary shows the token,
// oldest first.
func (r *Replicator) primarySnapshots(ctx context.Context) ([]client.Snapshot, error) {
	var all []client.Snapshot
	p := client.Page{Limit: listPage}
	for {
		page, err := r.o.Primary.Snapshots(ctx, client.SnapshotFilter{}, p)
		if err != nil {
			return nil, fmt.Errorf("replica: list the primary's snapshots: %w", err)
		}
		all = append(all, page.Snapshots...)
		if page.Next == "" {
			break
		}
		p.Cursor = page.Next
	}
	slices.Reverse(all) // newest first on the wire
	return all, nil
}

// lag sets the lag metrics from the snapshots still to copy.
func (r *Replicator) lag(todo []client.Snapshot) {
	if r.o.Metrics == nil {
		return
	}
	var oldest time.Time
	var bytes int64
	for _, s := range todo {
		if oldest.IsZero() || s.CommittedAt.Before(oldest) {
			oldest = s.CommittedAt
		}
		bytes += s.TotalBytes
	}
	secs := 0.0
	if !oldest.IsZero() {
		secs = max(0, r.o.Clock.Now().Sub(oldest).Seconds())
	}
	r.o.Metrics.lag(r.o.Source, secs, bytes)
}

// retention is what a copy is retained until: the primary's, or this
// vault's own minimum if that is later.
func (r *Replicator) retention(primary time.Time) time.Time {
	floor := r.o.Clock.Now().Add(r.o.Store.Options().MinRetention + retentionMargin)
	if primary.After(floor) {
		return primary
	}
	return floor
}

// copySnapshot copies ps's manifest tree and every chunk it reaches that
// this vault does not store, then commits the snapshot here.
func (r *Replicator) copySnapshot(ctx context.Context, ps client.Snapshot, rep *Report) (store.Snapshot, error) {
	until := r.retention(ps.RetainUntil)
	f := r.newFetcher(until, rep)
	opts := r.o.Store.Options()
	done := map[chunk.Hash]bool{}
	stack := []chunk.Hash{ps.ManifestRoot}
	var pending []chunk.Hash
	flush := func() error {
		err := f.fetchMissing(ctx, pending)
		pending = pending[:0]
		return err
	}
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if done[h] {
			continue
		}
		done[h] = true
		if len(done) > opts.MaxManifests {
			return store.Snapshot{}, fmt.Errorf("more than %d manifests", opts.MaxManifests)
		}
		if err := f.fetchMissing(ctx, []chunk.Hash{h}); err != nil {
			return store.Snapshot{}, err
		}
		m, err := r.readManifest(ctx, h, opts.MaxManifestSize)
		if err != nil {
			return store.Snapshot{}, err
		}
		for _, c := range m.Chunks {
			if pending = append(pending, c); len(pending) >= missingBatch {
				if err := flush(); err != nil {
					return store.Snapshot{}, err
				}
			}
		}
		for i := len(m.Children) - 1; i >= 0; i-- {
			stack = append(stack, m.Children[i])
		}
	}
	if err := flush(); err != nil {
		return store.Snapshot{}, err
	}
	res, err := r.o.Store.CommitSnapshot(ctx, r.actor, store.NewSnapshot{
		Source: ps.Source, Name: ps.Name, TakenAt: ps.TakenAt, RetainUntil: r.retention(ps.RetainUntil),
		Tags: ps.Tags, ManifestRoot: ps.ManifestRoot,
	})
	if err != nil {
		return store.Snapshot{}, err
	}
	r.log.InfoContext(ctx, "snapshot copied", "snapshot", key(ps.Source, ps.Name), "primary_id", ps.ID, "id", res.Snapshot.ID,
		"retain_until", res.Snapshot.RetainUntil)
	return res.Snapshot, nil
}

// readManifest reads and parses manifest h from this vault's store,
// where it was verified on arrival and is verified again as it is read.
func (r *Replicator) readManifest(ctx context.Context, h chunk.Hash, maxSize int64) (manifest.Manifest, error) {
	rc, c, err := r.o.Store.OpenChunk(ctx, h)
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("read manifest %s: %w", h, err)
	}
	defer rc.Close()
	if c.Size > maxSize {
		return manifest.Manifest{}, fmt.Errorf("manifest %s: %d bytes, more than %d", h, c.Size, maxSize)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("read manifest %s: %w", h, err)
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("manifest %s: %w", h, err)
	}
	return m, nil
}

// fetcher copies chunks from the primary into this vault's store.
type fetcher struct {
	r     *Replicator
	until time.Time
	rep   *Report
	mu    sync.Mutex // guards rep's counters
}

func (r *Replicator) newFetcher(until time.Time, rep *Report) *fetcher {
	return &fetcher{r: r, until: until, rep: rep}
}

// fetchMissing asks this vault's index which of hashes it lacks (or holds
// damaged) and fetches those from the primary, Workers at a time.
func (f *fetcher) fetchMissing(ctx context.Context, hashes []chunk.Hash) error {
	if len(hashes) == 0 {
		return nil
	}
	missing, err := f.r.o.Store.Missing(ctx, hashes)
	if err != nil || len(missing) == 0 {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan chunk.Hash)
	errs := make(chan error, f.r.o.Workers)
	var wg sync.WaitGroup
	for range min(f.r.o.Workers, len(missing)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range work {
				if err := f.fetch(ctx, h); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, h := range missing {
		select {
		case work <- h:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// fetch copies chunk h: the primary's bytes stream through a verifying
// reader into the store's ordinary put path, which hashes them again and
// acknowledges only once they are durable.
func (f *fetcher) fetch(ctx context.Context, h chunk.Hash) error {
	rc, err := f.r.o.Primary.GetChunk(ctx, h)
	if err != nil {
		return fmt.Errorf("fetch chunk %s from the primary: %w", h, err)
	}
	defer rc.Close()
	cr := &countingReader{r: rc, limit: f.r.lim}
	if _, err := f.r.o.Store.PutChunk(ctx, f.r.actor, h, cr, f.until); err != nil {
		return fmt.Errorf("store chunk %s: %w", h, err)
	}
	f.mu.Lock()
	f.rep.Chunks++
	f.rep.Bytes += cr.n
	f.mu.Unlock()
	f.r.o.Metrics.chunk(f.r.o.Source, cr.n)
	return nil
}

type countingReader struct {
	r     io.Reader
	n     int64
	limit *limiter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.limit.wait(int64(n))
	return n, err
}

// mirrorHolds places, as this vault's own holds, the primary's active
// holds not mirrored yet. A hold's snapshots must have been copied; one
// that names a snapshot not here yet waits for a later pass. Releases on
// the primary are not mirrored: this vault's holds are released only by
// its own governed process.
func (r *Replicator) mirrorHolds(ctx context.Context, primaryIDs map[int64]string, byKey map[string]store.Snapshot, rep *Report) error {
	mine, err := r.o.Store.HoldsPlacedBy(ctx, r.actor)
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	mirrored := map[int64]bool{}
	for _, h := range mine {
		if id, ok := mirroredHold(h.Reason, r.o.Source); ok {
			mirrored[id] = true
		}
	}
	p := client.Page{Limit: listPage}
	for {
		page, err := r.o.Primary.Holds(ctx, p)
		if err != nil {
			return fmt.Errorf("replica: list the primary's holds: %w", err)
		}
		for _, ph := range page.Holds {
			if !ph.Active || mirrored[ph.ID] {
				continue
			}
			placed, err := r.mirrorHold(ctx, ph, primaryIDs, byKey)
			if err != nil {
				if ctx.Err() != nil || store.Unavailable(err) {
					return err
				}
				rep.Failed = append(rep.Failed, fmt.Sprintf("hold %d (%s): %v", ph.ID, ph.Name, err))
				continue
			}
			if placed {
				rep.Holds++
			}
		}
		if page.Next == "" {
			return nil
		}
		p.Cursor = page.Next
	}
}

// holdMarker ends the reason of a mirrored hold: it names the primary and
// its hold, so that a hold is mirrored once.
func holdMarker(source string, id int64) string {
	return fmt.Sprintf("[replicated from %s hold %d]", source, id)
}

func mirroredHold(reason, source string) (int64, bool) {
	i := strings.LastIndex(reason, "[replicated from "+source+" hold ")
	if i < 0 || !strings.HasSuffix(reason, "]") {
		return 0, false
	}
	n := reason[i+len("[replicated from "+source+" hold ") : len(reason)-1]
	id, err := strconv.ParseInt(n, 10, 64)
	return id, err == nil
}

func (r *Replicator) mirrorHold(ctx context.Context, ph client.Hold, primaryIDs map[int64]string, byKey map[string]store.Snapshot) (bool, error) {
	d, err := r.o.Primary.Hold(ctx, ph.ID)
	if err != nil {
		return false, err
	}
	nh := store.NewHold{Name: ph.Name, Reason: ph.Reason + "\n\n" + holdMarker(r.o.Source, ph.ID)}
	switch ph.Kind {
	case store.HoldChunks:
		f := r.newFetcher(r.retention(time.Time{}), &Report{})
		for i := 0; i < len(d.Chunks); i += missingBatch {
			if err := f.fetchMissing(ctx, d.Chunks[i:min(i+missingBatch, len(d.Chunks))]); err != nil {
				return false, err
			}
		}
		nh.Chunks = d.Chunks
	case store.HoldSnapshots:
		for _, id := range d.Snapshots {
			ls, ok := byKey[primaryIDs[id]]
			if !ok {
				r.log.InfoContext(ctx, "hold waits for its snapshots to be copied", "hold", ph.ID, "primary_snapshot", id)
				return false, nil
			}
			nh.Snapshots = append(nh.Snapshots, ls.ID)
		}
	case store.HoldSource:
		nh.Source = ph.Source
	default:
		return false, fmt.Errorf("unknown hold kind %q", ph.Kind)
	}
	if _, err := r.o.Store.PlaceHold(ctx, r.actor, nh); err != nil {
		if errors.Is(err, store.ErrNotFound) && ph.Kind == store.HoldSource {
			return false, nil // no snapshot of the source here yet
		}
		return false, err
	}
	r.log.InfoContext(ctx, "hold mirrored", "primary_hold", ph.ID, "name", ph.Name, "kind", ph.Kind)
	return true, nil
}

// checkDisappeared reports the snapshots copied from the primary that it
// no longer lists, and looks up CheckChunks copied chunks on the primary
// (continuing where the last pass stopped) and reports the ones it no
// longer has.
func (r *Replicator) checkDisappeared(ctx context.Context, src store.ReplicaSource, local []store.Snapshot, onPrimary map[string]bool, rep *Report) error {
	for _, s := range local {
		if s.CommittedBy != r.actor || onPrimary[key(s.Source, s.Name)] {
			continue
		}
		if err := r.disappeared(ctx, src, "snapshot", key(s.Source, s.Name), rep); err != nil {
			return err
		}
	}
	budget := r.o.CheckChunks
	wrapped := false
	for budget != 0 {
		n := missingBatch
		if budget > 0 {
			n = min(n, budget)
		}
		hashes, err := r.o.Store.ChunksUploadedBy(ctx, r.actor, r.cursor, n)
		if err != nil {
			return fmt.Errorf("replica: %w", err)
		}
		if len(hashes) == 0 {
			r.cursor = chunk.Hash{}
			if wrapped || budget < 0 {
				return nil
			}
			wrapped = true
			continue
		}
		r.cursor = hashes[len(hashes)-1]
		gone, err := r.o.Primary.MissingChunks(ctx, hashes)
		if err != nil {
			return fmt.Errorf("replica: ask the primary which copied chunks it lacks: %w", err)
		}
		rep.ChunksChecked += len(hashes)
		for _, h := range gone {
			if err := r.disappeared(ctx, src, "chunk", h.String(), rep); err != nil {
				return err
			}
		}
		if budget > 0 {
			budget -= len(hashes)
		}
	}
	return nil
}

func (r *Replicator) disappeared(ctx context.Context, src store.ReplicaSource, kind, item string, rep *Report) error {
	news, err := r.o.Store.RecordDisappeared(ctx, r.o.Source, kind, item)
	if err != nil || !news {
		return err
	}
	rep.Disappeared++
	r.o.Metrics.disappeared(r.o.Source, kind)
	r.log.ErrorContext(ctx, "DISAPPEARED from the primary while this vault still holds it: the primary may be compromised", "kind", kind, "item", item)
	r.notify(ctx, "replica.disappeared", store.ReplicaAlert{Source: r.o.Source, URL: src.URL, Kind: kind, Item: item})
	return nil
}

// Run runs a pass every interval until ctx is done. A failed pass is
// logged (an alarm at Error, once) and retried at the next interval.
func (r *Replicator) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last string
	for {
		_, err := r.Pass(ctx)
		switch {
		case err == nil:
			last = ""
		case ctx.Err() != nil:
			return
		case err.Error() != last:
			last = err.Error()
			r.log.ErrorContext(ctx, "replication pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// limiter bounds the bytes read per second across all fetches.
type limiter struct {
	rate  int64
	mu    sync.Mutex
	start time.Time
	n     int64
}

func newLimiter(bytesPerSecond int64) *limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	return &limiter{rate: bytesPerSecond, start: time.Now()}
}

// wait sleeps until n more bytes fit under the rate since the start.
func (l *limiter) wait(n int64) {
	if l == nil || n == 0 {
		return
	}
	l.mu.Lock()
	l.n += n
	due := l.start.Add(time.Duration(float64(l.n) / float64(l.rate) * float64(time.Second)))
	l.mu.Unlock()
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
}
