// Package disk is the store.Blobs implementation on a local filesystem.
//
// # Layout
//
//	<dir>/FORMAT                        "wormvault-disk 1\n"
//	<dir>/blake3/ab/cd/<64 hex>          blobs, mode 0440, ab cd = first two hash bytes
//	<dir>/blake3/ab/cd/.tmp-*            writes in progress (or interrupted)
//	<dir>/quarantine/<64 hex>.<nanos>    corrupt blobs kept for inspection
//
// The fan-out keeps directories small (65536 leaves) so that lookups,
// directory syncs and Walk stay cheap at millions of blobs. The data
// directory may hold other files (the vault keeps its configuration and keys
// there); this package touches only the names above. Open refuses a
// directory whose FORMAT marker it does not recognise, and one with a blake3
// directory but no marker, rather than guess at a layout it did not write.
//
// # Durable writes
//
// Put guards invariant 4 of DESIGN.md: a blob is reported written only once
// it is durable, and a crash at any moment leaves either the whole, verified
// blob under its name or nothing there. Each step exists for a reason:
//
//  1. Create blake3/ab/cd and, the first time this process uses it, fsync
//     its parents: a new directory entry is not durable until its parent is
//     synced, and a lost directory loses every blob in it.
//  2. Create a temp file (".tmp-*") in that same directory: the final rename
//     is then atomic and touches one directory, and Walk ignores the name.
//  3. Copy the body through the BLAKE3 hasher with one pooled 1 MiB buffer:
//     memory per upload is bounded, and the content is verified as it is
//     written, never trusted from the client's claim.
//  4. Compare the hash with the address; on mismatch remove the temp file
//     and return chunk.ErrHashMismatch. Nothing wrong is ever named by a
//     hash.
//  5. Chmod 0440, then fsync the file: data and mode reach the disk before
//     the name does, so a crash cannot leave a final name on a torn or
//     empty file. Close, which can also report write errors.
//  6. Check the context: a request cancelled by now is not published.
//  7. Rename the temp file to its final name: the blob appears whole or not
//     at all. Renaming over an existing blob is harmless, since both are
//     verified copies of the same content.
//  8. Fsync the directory: until then a crash can undo the rename even
//     though the caller, told the blob is durable, has committed its index
//     row. If this fails the rename is undone, unless the blob existed
//     before (an earlier caller may rely on it).
//
// Any failure removes the temp file and returns the step's error wrapped
// with %w, so callers can still recognise a client's read error
// (*http.MaxBytesError), chunk.ErrHashMismatch or ENOSPC. A temp file that
// cannot be removed, or that a crash leaves behind, is removed by CleanTemp
// at startup.
//
// After a failed fsync the kernel may have dropped the dirty pages while
// clearing the error, so a retry on the same file could wrongly succeed
// (the "fsyncgate" problem): Put never retries, it discards the temp file
// and the caller starts over.
//
// Publishing and quarantining take a per-hash lock, so concurrent Puts of
// one blob all succeed and leave one file. The locks are in memory: one
// process per data directory.
//
// All changes go through VFS so tests can fail any single step and check
// that nothing is left visible.
package disk
