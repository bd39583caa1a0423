package store

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
)

// ReconcileReport tells what Reconcile found and did.
type ReconcileReport struct {
	TempRemoved int          // leftovers of interrupted writes removed
	Adopted     int          // content without a row, verified and indexed
	Quarantined int          // content without a row that failed verification
	Missing     int          // rows without content: data loss
	MissingList []chunk.Hash // the first few missing, for the log
}

const reconcileBatch = 1000

// Reconcile brings disk and index into agreement after a crash. It must run
// before the store accepts uploads. A chunk whose content reached disk but
// whose row did not commit (the crash window between the two) is verified
// and indexed under the uploader "reconcile" with the minimum retention: it
// is whole, so keeping it is safe. Content that fails verification is
// quarantined, never indexed. Rows without content are data loss: they are
// logged at Error and counted, never silently dropped.
func (s *Store) Reconcile(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	n, err := s.blobs.CleanTemp(ctx)
	if err != nil {
		return rep, fmt.Errorf("store: reconcile: clean temp files: %w", err)
	}
	rep.TempRemoved = n

	var batch []chunk.Hash
	flush := func() error {
		err := s.adopt(ctx, batch, &rep)
		batch = batch[:0]
		return err
	}
	err = s.blobs.Walk(ctx, func(h chunk.Hash, _ int64) error {
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
		return rep, fmt.Errorf("store: reconcile: %w", err)
	}

	if err := s.findMissing(ctx, &rep); err != nil {
		return rep, fmt.Errorf("store: reconcile: %w", err)
	}
	s.metrics.MissingAtReconcile.Set(float64(rep.Missing))
	return rep, nil
}

// adopt indexes the blobs in batch that have no row.
func (s *Store) adopt(ctx context.Context, batch []chunk.Hash, rep *ReconcileReport) error {
	present, err := s.present(ctx, s.pool, batch)
	if err != nil {
		return err
	}
	for _, h := range batch {
		if _, ok := present[h]; ok {
			continue
		}
		size, err := s.verifyBlob(ctx, h)
		if errors.Is(err, chunk.ErrHashMismatch) {
			s.log.WarnContext(ctx, "reconcile: quarantining corrupt unindexed content", "hash", h.String())
			if err := s.blobs.Quarantine(ctx, h); err != nil {
				return err
			}
			rep.Quarantined++
			continue
		}
		if err != nil {
			return err
		}
		now := s.clk.Now()
		_, err = s.pool.Exec(ctx, insertChunkSQL, pgx.NamedArgs{
			"hash": h[:], "size": size, "now": now, "until": now.Add(s.opts.MinRetention), "by": "reconcile",
		})
		if err != nil {
			return dbErr("adopt chunk", err)
		}
		s.log.InfoContext(ctx, "reconcile: indexed content that had no row", "hash", h.String(), "size", size)
		rep.Adopted++
	}
	return nil
}

func (s *Store) verifyBlob(ctx context.Context, h chunk.Hash) (int64, error) {
	f, size, err := s.blobs.Open(ctx, h)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	if _, err := io.CopyBuffer(io.Discard, chunk.NewVerifyingReader(f, h), *buf); err != nil {
		return 0, err
	}
	return size, nil
}

// findMissing walks the index in hash order and checks each row has content.
func (s *Store) findMissing(ctx context.Context, rep *ReconcileReport) error {
	after := []byte{}
	for {
		rows, _ := s.pool.Query(ctx, "SELECT hash FROM chunks WHERE hash > $1 ORDER BY hash LIMIT $2", after, reconcileBatch)
		keys, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return dbErr("list chunks", err)
		}
		for _, k := range keys {
			if err := ctx.Err(); err != nil {
				return err
			}
			h, _ := chunk.FromBytes(k)
			_, err := s.blobs.Stat(ctx, h)
			if errors.Is(err, ErrNotFound) {
				s.log.ErrorContext(ctx, "data loss: indexed chunk has no content", "hash", h.String())
				rep.Missing++
				if len(rep.MissingList) < 100 {
					rep.MissingList = append(rep.MissingList, h)
				}
				continue
			}
			if err != nil {
				return err
			}
		}
		if len(keys) < reconcileBatch {
			return nil
		}
		after = keys[len(keys)-1]
	}
}
