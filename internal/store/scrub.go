package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/clock"
)

// The scrub (invariant 9) re-reads every stored chunk and re-hashes it
// against its address and its row: the chunk file, or the pack record the
// row locates. A chunk whose content does not verify, or is gone, gets a
// damage record (damage.go), so that agents upload it again. Then it
// walks the chunk files and counts those without a row: content the index
// does not know is reconcile's to adopt, never the scrub's to remove, so
// it is only reported. (Pack records without a row are found by the
// start-up reconcile, which scans every pack not known to be fully
// indexed.)
//
// A pass takes the chunks in seq order up to the newest at its start; its
// position and figures are persisted in scrub_state after every batch, so
// a restart continues the pass where it stopped. A finished pass is an
// audit entry (scrub.pass). Reading is bounded in bytes per second.

// Defaults for ScrubOptions.
const (
	DefaultScrubBatch = 256
)

// ScrubOptions tunes a scrub run.
type ScrubOptions struct {
	// BytesPerSecond bounds the content the scrub reads; 0: no bound.
	BytesPerSecond int64
	// Batch is how many chunks are verified between two saves of the
	// position.
	Batch int
	// Fresh starts a new pass even if one is in progress.
	Fresh bool
	// Sleep waits for d or until ctx is done. Nil: a timer. Tests inject
	// one that advances their fake clock.
	Sleep func(ctx context.Context, d time.Duration) error
	// Progress, if set, is called after every batch with the saved state.
	Progress func(ScrubStatus)
}

// ScrubStatus is the scrub's saved state: the pass in progress, if any,
// the last finished pass, and the damage records.
type ScrubStatus struct {
	InPass        bool       `json:"in_pass"`
	PassStartedAt *time.Time `json:"pass_started_at,omitempty"`
	CursorSeq     int64      `json:"cursor_seq"`
	PassLastSeq   int64      `json:"pass_last_seq"`
	PassChunks    int64      `json:"pass_chunks"`
	PassBytes     int64      `json:"pass_bytes"`
	PassDamaged   int64      `json:"pass_damaged"`

	LastPassStartedAt  *time.Time `json:"last_pass_started_at,omitempty"`
	LastPassFinishedAt *time.Time `json:"last_pass_finished_at,omitempty"`
	LastPassChunks     int64      `json:"last_pass_chunks"`
	LastPassBytes      int64      `json:"last_pass_bytes"`
	LastPassDamaged    int64      `json:"last_pass_damaged"`
	LastPassUnindexed  int64      `json:"last_pass_unindexed"`
	Passes             int64      `json:"passes"`

	Damage DamageCounts `json:"damage"`
}

// ScrubReport tells what one Scrub call did.
type ScrubReport struct {
	Chunks int64 // chunks verified by this call
	Bytes  int64 // their bytes
	// Damaged are the chunks this call found damaged (newly, or still
	// awaiting repair).
	Damaged []chunk.Hash
	// Unindexed counts chunk files without a row (reported, never removed).
	Unindexed int64
	// Finished: the pass ran to its end. False when another scrub started
	// a new pass meanwhile.
	Finished bool
	Status   ScrubStatus
}

type scrubRow struct {
	PassStartedAt      *time.Time `db:"pass_started_at"`
	CursorSeq          int64      `db:"cursor_seq"`
	PassLastSeq        int64      `db:"pass_last_seq"`
	PassChunks         int64      `db:"pass_chunks"`
	PassBytes          int64      `db:"pass_bytes"`
	PassDamaged        int64      `db:"pass_damaged"`
	LastPassStartedAt  *time.Time `db:"last_pass_started_at"`
	LastPassFinishedAt *time.Time `db:"last_pass_finished_at"`
	LastPassChunks     int64      `db:"last_pass_chunks"`
	LastPassBytes      int64      `db:"last_pass_bytes"`
	LastPassDamaged    int64      `db:"last_pass_damaged"`
	LastPassUnindexed  int64      `db:"last_pass_unindexed"`
	Passes             int64      `db:"passes"`
}

func (r scrubRow) status() ScrubStatus {
	utc := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		u := t.UTC()
		return &u
	}
	return ScrubStatus{
		InPass: r.PassStartedAt != nil, PassStartedAt: utc(r.PassStartedAt), CursorSeq: r.CursorSeq, PassLastSeq: r.PassLastSeq,
		PassChunks: r.PassChunks, PassBytes: r.PassBytes, PassDamaged: r.PassDamaged,
		LastPassStartedAt: utc(r.LastPassStartedAt), LastPassFinishedAt: utc(r.LastPassFinishedAt),
		LastPassChunks: r.LastPassChunks, LastPassBytes: r.LastPassBytes, LastPassDamaged: r.LastPassDamaged,
		LastPassUnindexed: r.LastPassUnindexed, Passes: r.Passes,
	}
}

const scrubColumns = `pass_started_at, cursor_seq, pass_last_seq, pass_chunks, pass_bytes, pass_damaged,
last_pass_started_at, last_pass_finished_at, last_pass_chunks, last_pass_bytes, last_pass_damaged,
last_pass_unindexed, passes`

// ScrubStatus returns the scrub's saved state and the damage counts.
func (s *Store) ScrubStatus(ctx context.Context) (ScrubStatus, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+scrubColumns+` FROM scrub_state WHERE id = 1`)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[scrubRow])
	if err != nil {
		return ScrubStatus{}, dbErr("scrub status", err)
	}
	st := r.status()
	if st.Damage, err = s.CountDamage(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// LoadScrubMetrics sets the last full pass's time from the saved state, so
// that the metric survives a restart.
func (s *Store) LoadScrubMetrics(ctx context.Context) error {
	st, err := s.ScrubStatus(ctx)
	if err != nil {
		return err
	}
	if st.LastPassFinishedAt != nil {
		s.metrics.scrubLastFullPass.Set(float64(st.LastPassFinishedAt.Unix()))
	}
	return nil
}

const startPassSQL = `
UPDATE scrub_state SET pass_started_at = @now, cursor_seq = 0,
    pass_last_seq = (SELECT coalesce(max(seq), 0) FROM chunks),
    pass_chunks = 0, pass_bytes = 0, pass_damaged = 0
WHERE id = 1
RETURNING ` + scrubColumns

const scrubBatchSQL = `
SELECT ` + chunkColumns + ` FROM chunks
WHERE seq > @cursor AND seq <= @last
ORDER BY seq LIMIT @limit`

// The position moves only within the pass it belongs to: a pass started
// meanwhile by another scrub (vault scrub beside vault serve) is not
// overwritten.
const saveScrubSQL = `
UPDATE scrub_state SET cursor_seq = @cursor, pass_chunks = pass_chunks + @chunks,
    pass_bytes = pass_bytes + @bytes, pass_damaged = pass_damaged + @damaged
WHERE id = 1 AND pass_started_at = @started AND cursor_seq = @from
RETURNING ` + scrubColumns

const finishPassSQL = `
UPDATE scrub_state SET last_pass_started_at = pass_started_at, last_pass_finished_at = @now,
    last_pass_chunks = pass_chunks, last_pass_bytes = pass_bytes, last_pass_damaged = pass_damaged,
    last_pass_unindexed = @unindexed, passes = passes + 1,
    pass_started_at = NULL, cursor_seq = 0, pass_last_seq = 0, pass_chunks = 0, pass_bytes = 0, pass_damaged = 0
WHERE id = 1 AND pass_started_at = @started
RETURNING ` + scrubColumns

// Scrub runs the scrub pass in progress to its end, or a new one if there
// is none (or o.Fresh). It returns ctx.Err() if ctx is done first: the
// position saved after the last whole batch is where the next call
// continues.
func (s *Store) Scrub(ctx context.Context, o ScrubOptions) (ScrubReport, error) {
	var rep ScrubReport
	if o.Batch <= 0 {
		o.Batch = DefaultScrubBatch
	}
	lim := newLimiter(o.BytesPerSecond, s.clk, o.Sleep)

	rows, _ := s.pool.Query(ctx, `SELECT `+scrubColumns+` FROM scrub_state WHERE id = 1`)
	st, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[scrubRow])
	if err != nil {
		return rep, dbErr("scrub: load state", err)
	}
	if o.Fresh || st.PassStartedAt == nil {
		rows, _ := s.pool.Query(ctx, startPassSQL, pgx.NamedArgs{"now": s.clk.Now()})
		if st, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[scrubRow]); err != nil {
			return rep, dbErr("scrub: start pass", err)
		}
		s.log.InfoContext(ctx, "scrub pass started", "chunks_up_to_seq", st.PassLastSeq)
	} else {
		s.log.InfoContext(ctx, "scrub pass continues", "cursor_seq", st.CursorSeq, "chunks_up_to_seq", st.PassLastSeq)
	}
	started := *st.PassStartedAt

	for {
		rows, _ := s.pool.Query(ctx, scrubBatchSQL, pgx.NamedArgs{"cursor": st.CursorSeq, "last": st.PassLastSeq, "limit": o.Batch})
		batch, err := pgx.CollectRows(rows, pgx.RowToStructByName[chunkRow])
		if err != nil {
			return rep, dbErr("scrub: list chunks", err)
		}
		if len(batch) == 0 {
			break
		}
		var bytes, damaged int64
		for _, r := range batch {
			c := r.chunk()
			if err := lim.wait(ctx, c.Size); err != nil {
				return rep, err
			}
			bad, err := s.scrubChunk(ctx, c)
			if err != nil {
				return rep, err
			}
			bytes += c.Size
			s.metrics.scrubBytes.Add(float64(c.Size))
			s.metrics.scrubChunks.Inc()
			if bad {
				damaged++
				rep.Damaged = append(rep.Damaged, c.Hash)
			}
		}
		rep.Chunks += int64(len(batch))
		rep.Bytes += bytes
		rows, _ = s.pool.Query(ctx, saveScrubSQL, pgx.NamedArgs{
			"cursor": batch[len(batch)-1].Seq, "chunks": len(batch), "bytes": bytes, "damaged": damaged,
			"started": started, "from": st.CursorSeq,
		})
		st, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[scrubRow])
		if errors.Is(err, pgx.ErrNoRows) {
			s.log.WarnContext(ctx, "scrub: another scrub moved the pass on; this one stops")
			rep.Status, err = s.ScrubStatus(ctx)
			return rep, err
		}
		if err != nil {
			return rep, dbErr("scrub: save position", err)
		}
		if o.Progress != nil {
			o.Progress(st.status())
		}
	}

	unindexed, err := s.scrubUnindexed(ctx)
	if err != nil {
		return rep, err
	}
	rep.Unindexed = unindexed
	now := s.clk.Now()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, finishPassSQL, pgx.NamedArgs{"now": now, "unindexed": unindexed, "started": started})
		done, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[scrubRow])
		if err != nil {
			return err
		}
		st = done
		return s.appendAudit(ctx, tx, now, "scrub", audit.ActionScrubPass, audit.ScrubPass{
			StartedAt: started.UTC(), FinishedAt: now.UTC(), Chunks: done.LastPassChunks, Bytes: done.LastPassBytes,
			Damaged: done.LastPassDamaged, Unindexed: unindexed,
		})
	})
	if errors.Is(err, pgx.ErrNoRows) {
		s.log.WarnContext(ctx, "scrub: another scrub finished or restarted the pass")
		rep.Status, err = s.ScrubStatus(ctx)
		return rep, err
	}
	if err != nil {
		return rep, dbErr("scrub: finish pass", err)
	}
	rep.Finished = true
	s.metrics.scrubLastFullPass.Set(float64(now.Unix()))
	if rep.Status, err = s.ScrubStatus(ctx); err != nil {
		return rep, err
	}
	lvl := "scrub pass finished"
	args := []any{"chunks", st.LastPassChunks, "bytes", st.LastPassBytes, "damaged", st.LastPassDamaged,
		"unindexed", unindexed, "awaiting_repair", rep.Status.Damage.Open, "duration", now.Sub(started)}
	if st.LastPassDamaged > 0 {
		s.log.ErrorContext(ctx, lvl+": DAMAGE FOUND", args...)
	} else {
		s.log.InfoContext(ctx, lvl, args...)
	}
	if s.opts.Notify != nil {
		status := rep.Status
		s.opts.Notify(ctx, Event{Type: "scrub.pass", At: now.UTC(), Actor: "scrub", Scrub: &status})
	}
	return rep, nil
}

// scrubChunk verifies one chunk and records its damage; it reports
// whether the chunk is damaged. A read error other than the context's is
// damage too: a disk that cannot return the bytes does not hold them.
func (s *Store) scrubChunk(ctx context.Context, c Chunk) (bool, error) {
	problem, err := s.checkStored(ctx, c)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		problem = "read error: " + err.Error()
	}
	if problem == "" {
		return false, nil
	}
	if _, err := s.recordDamage(ctx, c, DetectedByScrub, problem); err != nil {
		return true, err
	}
	return true, nil
}

// scrubUnindexed counts the chunk files without a row, and logs them.
func (s *Store) scrubUnindexed(ctx context.Context) (int64, error) {
	var n int64
	var batch []chunk.Hash
	flush := func() error {
		present, err := s.present(ctx, s.pool, batch)
		if err != nil {
			return err
		}
		for _, h := range batch {
			if _, ok := present[h]; !ok {
				n++
				s.log.WarnContext(ctx, "scrub: chunk file without a row (left for reconcile, never removed)", "hash", h.String())
			}
		}
		batch = batch[:0]
		return nil
	}
	err := s.blobs.Walk(ctx, func(h chunk.Hash, _ int64) error {
		batch = append(batch, h)
		if len(batch) == reconcileBatch {
			return flush()
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	if err != nil {
		return n, fmt.Errorf("store: scrub: walk files: %w", err)
	}
	return n, nil
}

// limiter is a token bucket over bytes on the injected clock: a read of
// n bytes may run ahead of the rate by at most a second's worth, after
// which the scrub sleeps off its debt.
type limiter struct {
	rate   float64 // bytes per second
	tokens float64
	last   time.Time
	clk    clock.Clock
	sleep  func(ctx context.Context, d time.Duration) error
}

func newLimiter(bytesPerSecond int64, clk clock.Clock, sleep func(context.Context, time.Duration) error) *limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	if sleep == nil {
		sleep = sleepCtx
	}
	return &limiter{rate: float64(bytesPerSecond), tokens: float64(bytesPerSecond), last: clk.Now(), clk: clk, sleep: sleep}
}

// wait takes n bytes from the bucket, sleeping first if it is in debt.
func (l *limiter) wait(ctx context.Context, n int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l == nil {
		return nil
	}
	now := l.clk.Now()
	l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return nil
	}
	return l.sleep(ctx, time.Duration(-l.tokens/l.rate*float64(time.Second)))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
