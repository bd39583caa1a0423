// Package store is the vault's domain: chunk content (through the Blobs
// interface) and its PostgreSQL index, retention, and the audit log.
//
// Store owns the invariants of ../shared/DESIGN.md that concern stored data:
//
//   - a chunk is acknowledged only once its content is durable and its index
//     row committed (PutChunk writes the blob, then commits the row);
//   - retention only grows: Go takes the maximum, and a database trigger
//     rejects any UPDATE that moves retain_until earlier or changes a chunk's
//     identity, and any DELETE or TRUNCATE of the chunks table;
//   - content is verified: OpenChunk checks the hash before the first byte is
//     served and again while streaming;
//   - administrative changes are written to the hash-linked audit log in the
//     same transaction as the change;
//   - a snapshot is immutable once committed and its retention only grows;
//     every chunk it references (manifests included) is stored and retained
//     at least as long as the snapshot, checked by Go and again by a
//     database trigger (snapshots.go, walk.go);
//   - legal holds are never changed or deleted outside the approval path,
//     and the database refuses it too (holds.go);
//   - the auditor's retention queries read indexes and trigger-maintained
//     counters, never the whole chunks table (retention.go);
//   - the index can be rebuilt from the data directory alone, the journal
//     and the content, without changing the content (reindex*.go).
//   - the store's database login is a runtime role that owns nothing
//     (migrations/009_least_privilege.sql): the triggers take the time from
//     the database's clock and the executing request from a registration
//     only wv_begin_execution makes (setExecutor), never from anything a
//     session can set.
package store
