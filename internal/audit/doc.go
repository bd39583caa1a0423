// Package audit is what an auditor needs to check a vault's audit log
// without trusting the vault: the C2SP tlog-checkpoint body the vault
// signs, the canonical entry encoding, the RFC 6962 tree recomputed from
// entries (golang.org/x/mod/sumdb/tlog hashing), and the replay of the
// vault's policy over the entries: signed quorums, delays, retention that
// only grows, and chunks that leave only through an executed deletion.
//
// The replay is also the vault's own policy engine (engine.go): the
// deletion executor replays the data directory's journal, pinned to the
// genesis admin set in admins.json, and asks it whether a deletion may
// execute now, what it targets, and whether each object is deletable, so
// that the server and the auditor apply the same rules and the database
// alone can never cause content to be destroyed (invariant 8). The
// deletion targets' canonical text and the admin-set rules (targets.go)
// are shared with the store.
//
// It imports neither the store nor the API: the verifier reads a Source,
// which the CLI implements over HTTP and tests implement over a store.
package audit
