package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/auth"
)

// TestReplicationAcknowledge: only an admin clears a replica's alarm,
// with a reason; bad input and wrong roles change nothing.
func TestReplicationAcknowledge(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ctx := context.Background()
	if _, err := ts.store.EnsureReplicaSource(ctx, "site-a", "https://primary.example", "wormvault/x+00000000+AAAA"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.RaiseReplicaAlarm(ctx, "site-a", "rolled back"); err != nil {
		t.Fatal(err)
	}
	admin := ts.token(t, auth.RoleAdmin)
	path := "/v1/replication/site-a/acknowledge"
	alarm := func() string {
		src, err := ts.store.GetReplicaSource(ctx, "site-a")
		if err != nil {
			t.Fatal(err)
		}
		return src.Alarm
	}
	for _, role := range []auth.Role{auth.RoleAuditor, auth.RoleAgent, auth.RoleReader, auth.RoleReplicator} {
		wantError(t, ts.postJSON(t, path, ts.token(t, role), map[string]string{"reason": "ok"}), http.StatusForbidden, "forbidden")
	}
	wantError(t, ts.postJSON(t, path, admin, map[string]string{"reason": " "}), http.StatusBadRequest, "invalid")
	wantError(t, ts.do(t, http.MethodPost, path, admin, []byte("{"), http.Header{"Content-Type": {"application/json"}}), http.StatusBadRequest, "invalid")
	wantError(t, ts.postJSON(t, "/v1/replication/nope/acknowledge", admin, map[string]string{"reason": "ok"}), http.StatusNotFound, "not_found")
	if alarm() != "rolled back" {
		t.Fatal("a refused acknowledgement cleared the alarm")
	}

	// An auditor sees the alarm.
	resp := ts.do(t, http.MethodGet, "/v1/replication", ts.token(t, auth.RoleAuditor), nil, nil)
	resp.mustStatus(t, http.StatusOK)
	var list struct {
		Sources []struct {
			Name  string `json:"name"`
			Alarm string `json:"alarm"`
		} `json:"sources"`
	}
	if err := json.Unmarshal(resp.body, &list); err != nil || len(list.Sources) != 1 || list.Sources[0].Alarm != "rolled back" {
		t.Fatalf("GET /v1/replication = %s (%v)", resp.body, err)
	}

	ts.postJSON(t, path, admin, map[string]string{"reason": "checked with the primary's operators"}).mustStatus(t, http.StatusOK)
	if alarm() != "" {
		t.Fatal("the alarm is still in force after the acknowledgement")
	}
	wantError(t, ts.postJSON(t, path, admin, map[string]string{"reason": "again"}), http.StatusConflict, "conflict")
	entries, err := ts.store.AuditEntries(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	last := entries[len(entries)-1]
	if last.Action != "replica.acknowledge" || last.Actor != "test-admin" || !strings.Contains(last.Payload, "checked with the primary") {
		t.Errorf("last audit entry %+v, want the admin's replica.acknowledge", last)
	}
}
