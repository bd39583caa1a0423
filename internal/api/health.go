package api

import "net/http"

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz reports whether the vault can take uploads: its index answers,
// and its audit log was not found rolled back under a checkpoint it
// signed (500 "integrity" until an operator restarts it: retrying cannot
// help).
func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	if err := h.store.AuditIntegrity(); err != nil {
		h.writeError(w, r, err)
		return
	}
	if err := h.store.Ping(r.Context()); err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
