// Package client is a small Go client for the vault's HTTP API (v1, see
// docs/api.md). The auditor commands use it now; the backup agent (vault
// push and restore) will too.
//
// Every method takes a context, sends the bearer token given to New, and
// returns either the decoded answer or an error. A refusal by the vault is
// an *Error carrying the HTTP status and the API's error code, so callers
// can act on the code (IsCode) rather than on message text. Content read
// with GetChunk is verified against its hash while it streams.
package client
