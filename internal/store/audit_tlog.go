package store

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/chunk"
)

// The audit log's Merkle tree (RFC 6962, golang.org/x/mod/sumdb/tlog):
// leaf i is audit_log.payload of seq i+1; audit_hashes holds the stored
// hashes by tlog.StoredHashIndex.

// ErrAuditTree: the stored tree is missing hashes or entries, or does not
// match a checkpoint the vault signed.
var ErrAuditTree = errors.New("store: audit tree inconsistent")

// MaxAuditPage bounds entries and lookups per request.
const MaxAuditPage = 1000

// hashQuerier is what a hash reader needs: a pool or a transaction.
type hashQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

const readHashesSQL = `SELECT idx, hash FROM audit_hashes WHERE idx = ANY($1)`

// readHashes returns the stored hashes at indexes, in their order; any
// missing is an error (tlog.HashReader's contract).
func readHashes(ctx context.Context, q hashQuerier, indexes []int64, overlay map[int64]tlog.Hash) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var need []int64
	for _, i := range indexes {
		if _, ok := overlay[i]; !ok {
			need = append(need, i)
		}
	}
	found := map[int64]tlog.Hash{}
	if len(need) > 0 {
		rows, _ := q.Query(ctx, readHashesSQL, need)
		var idx int64
		var b []byte
		_, err := pgx.ForEachRow(rows, []any{&idx, &b}, func() error {
			if len(b) != tlog.HashSize {
				return fmt.Errorf("%w: hash %d has %d bytes", ErrAuditTree, idx, len(b))
			}
			found[idx] = tlog.Hash(b)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("audit: read tree hashes: %w", err)
		}
	}
	for k, i := range indexes {
		h, ok := overlay[i]
		if !ok {
			if h, ok = found[i]; !ok {
				return nil, fmt.Errorf("%w: stored hash %d is missing", ErrAuditTree, i)
			}
		}
		out[k] = h
	}
	return out, nil
}

// txHashReader reads stored hashes in a transaction, with the hashes
// written earlier in it (not yet inserted) in overlay.
type txHashReader struct {
	ctx     context.Context
	tx      pgx.Tx
	overlay map[int64]tlog.Hash
}

func newTxHashReader(ctx context.Context, tx pgx.Tx) *txHashReader {
	return &txHashReader{ctx: ctx, tx: tx, overlay: map[int64]tlog.Hash{}}
}

func (r *txHashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	hs, err := readHashes(r.ctx, r.tx, indexes, r.overlay)
	if err != nil {
		return nil, err
	}
	// Stored hashes never change: keep what was read, so that a batch of
	// appends reads the tree's left edge once.
	for i, x := range indexes {
		r.overlay[x] = hs[i]
	}
	return hs, nil
}

// ensureTreeHashes computes the stored hashes of entries that have none:
// entries written before migration 008. It runs under the append lock;
// after the first append it finds nothing to do with one index lookup.
func ensureTreeHashes(ctx context.Context, tx pgx.Tx, hr *txHashReader, entries int64) error {
	var stored int64
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(idx) + 1, 0) FROM audit_hashes").Scan(&stored); err != nil {
		return fmt.Errorf("audit: count tree hashes: %w", err)
	}
	if stored == tlog.StoredHashCount(entries) {
		return nil
	}
	if stored > tlog.StoredHashCount(entries) {
		// More tree than leaves: entries were removed from the end.
		return fmt.Errorf("%w: %d stored hashes, more than the %d entries' %d: entries were removed",
			ErrAuditTree, stored, entries, tlog.StoredHashCount(entries))
	}
	// The leaves whose hashes are stored.
	done := int64(sort.Search(int(entries)+1, func(n int) bool { return tlog.StoredHashCount(int64(n)) >= stored }))
	if tlog.StoredHashCount(done) != stored {
		return fmt.Errorf("%w: %d stored hashes fit no tree size", ErrAuditTree, stored)
	}
	for done < entries {
		rows, _ := tx.Query(ctx, "SELECT seq, payload FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT 1000", done)
		type row struct {
			Seq     int64  `db:"seq"`
			Payload string `db:"payload"`
		}
		page, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
		if err != nil {
			return fmt.Errorf("audit: backfill: %w", err)
		}
		var idxs []int64
		var hashes [][]byte
		for _, r := range page {
			if r.Seq != done+1 {
				return fmt.Errorf("%w: entry %d is missing", ErrAuditTree, done+1)
			}
			stored, err := tlog.StoredHashes(done, []byte(r.Payload), hr)
			if err != nil {
				return err
			}
			base := tlog.StoredHashIndex(0, done)
			for j, h := range stored {
				hr.overlay[base+int64(j)] = h
				idxs = append(idxs, base+int64(j))
				hashes = append(hashes, h[:])
			}
			done++
		}
		if _, err := tx.Exec(ctx, `INSERT INTO audit_hashes (idx, hash) SELECT * FROM unnest($1::bigint[], $2::bytea[])`,
			idxs, hashes); err != nil {
			return fmt.Errorf("audit: backfill: %w", err)
		}
	}
	return nil
}

// EnsureAuditTree computes the tree hashes of entries written before the
// Merkle log existed. `vault serve` calls it at start.
func (s *Store) EnsureAuditTree(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", auditLock); err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(seq), 0) FROM audit_log").Scan(&n); err != nil {
			return err
		}
		return ensureTreeHashes(ctx, tx, newTxHashReader(ctx, tx), n)
	})
	return dbErr("ensure audit tree", err)
}

func (s *Store) hashReader(ctx context.Context) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		return readHashes(ctx, s.pool, indexes, nil)
	})
}

// AuditTreeSize returns the number of entries (leaves) in the log.
func (s *Store) AuditTreeSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(seq), 0) FROM audit_log").Scan(&n); err != nil {
		return 0, dbErr("audit tree size", err)
	}
	return n, nil
}

// AuditTreeHash returns the root hash of the first n entries; a stored
// hash that is missing is ErrAuditTree.
func (s *Store) AuditTreeHash(ctx context.Context, n int64) (tlog.Hash, error) {
	h, err := tlog.TreeHash(n, s.hashReader(ctx))
	if err != nil {
		return tlog.Hash{}, dbErr("audit tree hash", err)
	}
	return h, nil
}

func (s *Store) checkSize(ctx context.Context, field string, size int64) error {
	n, err := s.AuditTreeSize(ctx)
	if err != nil {
		return err
	}
	if size < 1 || size > n {
		return invalid(field, "must be a tree size from 1 to %d", n)
	}
	return nil
}

// AuditInclusionProof proves that leaf index is in the tree of size.
func (s *Store) AuditInclusionProof(ctx context.Context, index, size int64) (tlog.RecordProof, error) {
	if err := s.checkSize(ctx, "size", size); err != nil {
		return nil, err
	}
	if index < 0 || index >= size {
		return nil, invalid("index", "must be a leaf index below size %d", size)
	}
	p, err := tlog.ProveRecord(size, index, s.hashReader(ctx))
	if err != nil {
		return nil, dbErr("inclusion proof", err)
	}
	return p, nil
}

// AuditConsistencyProof proves that the tree of size from is a prefix of
// the tree of size to.
func (s *Store) AuditConsistencyProof(ctx context.Context, from, to int64) (tlog.TreeProof, error) {
	if err := s.checkSize(ctx, "to", to); err != nil {
		return nil, err
	}
	if from < 1 || from > to {
		return nil, invalid("from", "must be a tree size from 1 to %d", to)
	}
	p, err := tlog.ProveTree(to, from, s.hashReader(ctx))
	if err != nil {
		return nil, dbErr("consistency proof", err)
	}
	return p, nil
}

// AuditLeaf is an entry by leaf index with its exact payload.
type AuditLeaf struct {
	Index   int64  `json:"index"`
	Payload string `json:"payload"`
}

// AuditLeaves returns up to MaxAuditPage entries with leaf indexes in
// [from, to), in order. A missing row shows as a gap the caller detects.
func (s *Store) AuditLeaves(ctx context.Context, from, to int64) ([]AuditLeaf, error) {
	if from < 0 {
		return nil, invalid("from", "must be a non-negative leaf index")
	}
	if to <= from {
		return nil, invalid("to", "must be greater than from")
	}
	to = min(to, from+MaxAuditPage)
	rows, _ := s.pool.Query(ctx, `SELECT seq - 1 AS "index", payload FROM audit_log
		WHERE seq > $1 AND seq <= $2 ORDER BY seq`, from, to)
	leaves, err := pgx.CollectRows(rows, pgx.RowToStructByName[AuditLeaf])
	if err != nil {
		return nil, dbErr("audit leaves", err)
	}
	return leaves, nil
}

// AuditChunkLeaf returns the leaf index of the latest chunk.commit entry
// of h.
func (s *Store) AuditChunkLeaf(ctx context.Context, h chunk.Hash) (int64, error) {
	var leaf int64
	err := s.pool.QueryRow(ctx, "SELECT leaf FROM audit_chunks WHERE hash = $1 ORDER BY leaf DESC LIMIT 1", h[:]).Scan(&leaf)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("chunk %s is not in the audit log (yet): %w", h, ErrNotFound)
	}
	if err != nil {
		return 0, dbErr("audit chunk leaf", err)
	}
	return leaf, nil
}
