// Package audit is what an auditor needs to check a vault's audit log
// without trusting the vault: the C2SP tlog-checkpoint body the vault
// signs, the canonical entry encoding, the RFC 6962 tree recomputed from
// entries (golang.org/x/mod/sumdb/tlog hashing), and the replay of the
// vault's policy over the entries: signed quorums, delays, retention that
// only grows, and chunks that leave only through an executed deletion.
//
// It imports neither the store nor the API: the verifier reads a Source,
// which the CLI implements over HTTP and tests implement over a store.
package audit
