package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/store"
)

// policyJSON is a retention policy as a client sends it: to PUT
// /v1/policies/{name} (the name comes from the path), or as the policy of
// a governed request (kind policy, name required). An empty pattern
// detaches the policy (governed requests only).
type policyJSON struct {
	Name          string `json:"name,omitempty"`
	Pattern       string `json:"pattern"`
	DailyDays     int    `json:"daily_days"`
	WeeklyWeeks   int    `json:"weekly_weeks"`
	MonthlyMonths int    `json:"monthly_months"`
	YearlyYears   int    `json:"yearly_years"`
	MinimumDays   int    `json:"minimum_days"`
}

func (p policyJSON) policy(name string) store.RetentionPolicy {
	return store.RetentionPolicy{Name: name, Pattern: p.Pattern, DailyDays: p.DailyDays, WeeklyWeeks: p.WeeklyWeeks,
		MonthlyMonths: p.MonthlyMonths, YearlyYears: p.YearlyYears, MinimumDays: p.MinimumDays}
}

type policyListJSON struct {
	Policies []store.RetentionPolicy `json:"policies"`
}

type policyVersionsJSON struct {
	store.RetentionPolicy
	// Versions lists every version, newest (the current one) first.
	Versions []store.RetentionPolicy `json:"versions"`
}

type setPolicyJSON struct {
	store.RetentionPolicy
	Changed bool `json:"changed"`
}

func (h *handler) listPolicies(w http.ResponseWriter, r *http.Request) {
	list, err := h.store.Policies(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, policyListJSON{Policies: list})
}

func (h *handler) getPolicy(w http.ResponseWriter, r *http.Request) {
	versions, err := h.store.PolicyVersions(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, policyVersionsJSON{RetentionPolicy: versions[0], Versions: versions})
}

// setPolicy creates a policy or lengthens it, at once. A change that could
// shorten retention is refused (409 governed): it needs a governed request
// (POST /v1/deletions, kind policy).
func (h *handler) setPolicy(w http.ResponseWriter, r *http.Request) {
	var req policyJSON
	if err := readJSON(w, r, snapshotBodyLimit, &req); err != nil {
		h.writeError(w, r, err)
		return
	}
	name := chi.URLParam(r, "name")
	if req.Name != "" && req.Name != name {
		h.writeError(w, r, &store.InvalidError{Field: "name", Reason: "differs from the name in the path"})
		return
	}
	p, changed, err := h.store.SetPolicy(r.Context(), principal(r).Subject, req.policy(name))
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if changed && p.Version == 1 {
		status = http.StatusCreated
	}
	writeJSON(w, status, setPolicyJSON{RetentionPolicy: p, Changed: changed})
}
