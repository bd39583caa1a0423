package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/wormvault/wormvault/internal/chunk"
)

// chunkInSourcesSQL finds one retained reference to a chunk from a
// snapshot of a matching source: one probe of snapshot_chunks_hash_idx,
// stopping at the first match.
const chunkInSourcesSQL = `
SELECT EXISTS (
    SELECT FROM snapshot_chunks sc JOIN snapshots s ON s.id = sc.snapshot_id
    WHERE sc.hash = @hash AND s.deleted_at IS NULL AND s.source ~ ANY(@sources::text[]))`

// ChunkInSources reports whether a snapshot (not deleted) of a source
// matching one of sourceRegexps (auth.Scope.SourceRegexps) references the
// chunk h, directly or as a manifest: what a reader scoped to those
// sources may read. Every referenced chunk is recorded at commit, so this
// is exactly the chunks reachable from the sources' snapshots.
func (s *Store) ChunkInSources(ctx context.Context, h chunk.Hash, sourceRegexps []string) (bool, error) {
	if len(sourceRegexps) == 0 {
		return false, nil
	}
	var ok bool
	err := s.pool.QueryRow(ctx, chunkInSourcesSQL, pgx.NamedArgs{"hash": h[:], "sources": sourceRegexps}).Scan(&ok)
	if err != nil {
		return false, dbErr(fmt.Sprintf("find chunk %s in scope", h), err)
	}
	return ok, nil
}
