package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// AppendAuditForTest appends an entry as a compromised server could: the
// tamper tests forge log entries with it.
func (s *Store) AppendAuditForTest(ctx context.Context, at time.Time, actor, action string, details any) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.appendAudit(ctx, tx, at, actor, action, details) })
}

// SetBeforeDeleteBatchForTest makes f run before each batch of chunk
// deletions, so that a test can race the executor deterministically.
func (s *Store) SetBeforeDeleteBatchForTest(f func(deletion int64)) { s.beforeDeleteBatch = f }
