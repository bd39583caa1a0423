// Package bench measures how fast agents can push chunks into a vault and
// how close that is to what the machine allows.
//
// It drives a running vault over real HTTP (Target, RunCell, RunBatchCell for
// the batch endpoint, RunMissing) and, in the same run and on the same
// machine, measures the physical limits that bound it: durable raw-disk
// writes with the vault's own steps, a file per chunk (DiskBaseline), durable
// appends of records to pack files with the vault's own pack code, a group
// per fdatasync (PackBaseline), BLAKE3 hashing (HashBaseline) and PostgreSQL
// single-row commits (PGBaseline). Run does a whole matrix; Markdown renders a Report with every
// vault figure next to the baseline it is bound by, and Splice puts the
// rendering between markers in an existing document so that hand-written
// notes survive regeneration.
//
// Nothing here weakens what it measures: the baselines do every durability
// step the vault does (write, fsync, rename, directory fsync; commit per
// row), so a ratio near 100% means the vault adds little, not that a step was
// skipped.
package bench
