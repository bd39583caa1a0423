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
//     same transaction as the change.
package store
