// Package api is the vault's HTTP interface: a chi router whose routes read
// like the API table, bearer-token authentication with role checks as route
// middleware, handlers that parse, make one store call and answer, and one
// place (errors.go) that maps errors to HTTP status and JSON error codes.
//
// The API is write-only for agents: nothing here deletes or shortens
// anything. Request bodies are bounded before they are read, and chunk
// content is streamed, never buffered whole.
package api
