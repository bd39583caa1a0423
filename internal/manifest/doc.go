// Package manifest defines the vault's snapshot manifest: a small JSON
// object, stored as an ordinary chunk, that lists chunk hashes and child
// manifests, so that a very large backup is a tree of manifests. The format
// is documented in docs/manifest.md.
//
// The vault parses manifests strictly (one spelling of each hash, no unknown
// or repeated fields, nothing after the object), so that the vault and every
// agent that restores from a manifest agree on exactly which chunks it names.
// It imports only the chunk package, so agents can build manifests without
// the server's code.
package manifest
