package api

import (
	"net/http"

	"github.com/wormvault/wormvault/internal/store"
)

// Starting is the vault's HTTP handler while `vault serve` starts, before
// its store is open: the listener is bound first, so that a port already
// in use fails the start at once and probes get an answer. /healthz
// answers 200 (the process is alive), /readyz 503 "starting", and every
// other request 503 "starting" with a Retry-After, from the one error
// mapping.
func Starting() http.Handler {
	errStarting := store.ErrStarting
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			writeJSON(w, http.StatusOK, map[string]string{"status": "starting"})
			return
		}
		status, code := errorStatus(errStarting)
		if v := retryAfter(status); v != "" {
			w.Header().Set("Retry-After", v)
		}
		detail := errorDetail{Code: code, Message: publicMessage(status, code, errStarting)}
		if r.URL.Path == "/readyz" {
			writeJSON(w, status, struct {
				Status string      `json:"status"`
				Error  errorDetail `json:"error"`
			}{"starting", detail})
			return
		}
		writeJSON(w, status, errorBody{Error: detail})
	})
}
