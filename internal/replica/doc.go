// Package replica makes this vault a second location of another: it pulls
// from a primary vault with a replicator token (which can read, never
// write) and copies snapshots, every chunk they reach, their retention and
// the primary's legal holds into its own store, through the store's
// ordinary paths (content verified against its BLAKE3 address on arrival,
// fsynced, indexed, logged).
//
// The invariants it guards (docs/replication.md):
//
//   - Pull, never push: the primary holds no credential of the replica.
//   - Deletes never propagate: nothing the primary deletes, expires,
//     cancels or changes in its admin set reaches the replica; the
//     replica's copies go only through its own deletion process. Retention
//     on the replica is never shorter than on the primary, and holds are
//     placed as the replica's own holds, released only by the replica's
//     own governed process.
//   - The replica audits the primary: each pass verifies the primary's
//     signed checkpoint against the last one the replica kept (a
//     consistency proof). A rollback or fork raises an alarm and stops
//     replication until an admin of the replica acknowledges. What the
//     replica holds and the primary no longer has is reported (metric,
//     ERROR log, webhook).
//   - A pass is resumable: chunks are durable as they arrive, a snapshot
//     is committed only once all it reaches is stored, and the next pass
//     asks the replica's own index what is still missing.
package replica
