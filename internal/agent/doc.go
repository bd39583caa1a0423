// Package agent is the backup agent's engine, behind `vault push` and
// `vault restore`: it walks a tree, cuts file content into chunks by
// content (restic/chunker, about 1 MiB on average), hashes them with
// BLAKE3, asks the vault which it lacks, uploads only those with parallel
// workers, writes the tree's metadata and the manifest tree as chunks of
// their own, and commits a snapshot; and it reads a snapshot back, every
// chunk verified against its hash before a byte of it is written.
//
// What it guards:
//
//   - A restore never writes outside its target directory: tree paths are
//     checked (relative, clean, no ".."; parents are directories of the
//     tree) before anything is written, and files are created through an
//     os.Root that refuses to resolve outside the target.
//   - A restore never leaves a wrong file: each file is written under a
//     temporary name and renamed into place only once all its chunks were
//     verified; a failed file is absent and named in the error.
//   - A push is resumable: content addressing plus the missing check mean
//     a rerun uploads only what the vault still lacks.
//   - Memory is bounded: files are streamed, and a push holds at most 32
//     MiB of chunk content (by default) at a time.
//
// The metadata format is described in docs/agent.md and in tree.go.
package agent
