// Package restic serves restic's REST backend protocol (v1 and v2) on the
// vault, so that `restic -r rest:https://user:TOKEN@vault/restic/REPO/`
// backs up into it. The API mounts the handler under /restic.
//
// Every restic file is a vault chunk plus a name mapping kept by the store
// (store.PutResticFile and friends): uploads are durable before they are
// acknowledged, under the vault's retention, and verified twice (SHA-256
// against restic's name, BLAKE3 against the vault's address). What the
// vault adds to restic's own rest-server --append-only:
//
//   - Nothing is deleted through this protocol except lock files, which
//     restic needs to remove to work at all (and the lock's chunk stays).
//     Any other DELETE is refused with 403 and changes nothing; real
//     deletion needs an approved deletion request (quorum and delay).
//   - Roles decide who reads what: an agent token may write and read the
//     metadata restic backup needs (config, keys, locks, index, snapshots),
//     never the data packs; restore and check need a reader token, which
//     may write nothing but lock files.
//   - A repository is kept whole: storing a restic snapshot retains every
//     file of the repository at least the repository's retention from
//     then, because the vault cannot read (encrypted) which packs a
//     snapshot needs.
//
// Failed requests are answered through the API's one error mapping
// (Options.WriteError); restic only looks at the status code, people
// using curl get the JSON error.
package restic
