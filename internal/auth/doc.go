// Package auth authenticates and authorises callers of the vault API with
// Ed25519-signed JWTs (alg EdDSA) that carry one of five roles, and, for
// agents and readers, a scope: the sources and restic repositories they
// reach (Scope).
//
// An Issuer signs access tokens for one vault; a Verifier accepts only tokens
// that this vault's key signed for this vault. The invariants it guards:
//
//   - The algorithm is pinned to EdDSA twice (parser allow-list and a type
//     check in the key function), so alg=none and HS256 signed with the public
//     key (algorithm confusion) are rejected.
//   - The header must carry typ "vault-access+jwt" (RFC 8725 explicit typing)
//     and the kid of our key. jku, x5u and embedded jwk headers are never
//     read, so a token cannot choose its own verification key and no
//     outbound fetch ever happens.
//   - iss, aud, sub, jti, role and exp are required; iat and nbf may not lie
//     in the future beyond a 30 s leeway. Base64 must be canonical.
//   - Any parse or validation error is a rejection; every rejection wraps
//     ErrUnauthenticated. Only a failing revocation lookup is reported as
//     itself, so that the API can answer 503 instead of 401.
//   - Revocation is consulted only after the signature and claims are valid,
//     so forged tokens never reach the database; so is the distrust of a
//     signing key (rotate-key --compromised), which refuses every token the
//     key signed.
//   - An agent or reader token without a scope claim (issued before scopes)
//     is refused, never taken as all sources.
//   - Raw tokens are bounded (4 KiB) before any parsing and are never logged
//     or echoed in errors.
//
// A role in a JWT gates low-risk operations only: the JWT key is a single
// credential, so no claim in a token may ever be enough to delete data.
//
// Key files hold a PKCS#8 "PRIVATE KEY" PEM block, are created with mode 0600
// and are refused, like ssh does, when group or others may access them.
package auth
