// Package approval is the admins' side of multi-party approval: the
// canonical statements that every destructive action is signed over, the
// admins' public keys, and signature verification.
//
// A statement is small canonical text that names its type, the vault, the
// request, the digest of the frozen targets, the policy, the admin-set
// version and the signer, so that a signature for one request, vault,
// policy or action cannot be replayed on another. The server builds the
// statement itself and verifies the signature over exactly those bytes; it
// never accepts statement text from a client.
//
// Two signature formats are accepted, both Ed25519 only:
//   - raw: an Ed25519 signature over the statement bytes, made with a key
//     from `vault admin keygen`;
//   - sshsig: OpenSSH's SSHSIG envelope (`ssh-keygen -Y sign -n
//     wormvault-approval@v1`), verified with github.com/hiddeco/sshsig after
//     this package has checked the namespace, the key type (ssh-ed25519
//     only) and that the embedded key is the enrolled one.
package approval
