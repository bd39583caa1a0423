package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
)

// setQuota sets subject's quota through the API as an admin; a negative
// limit is sent as null (no limit).
func (ts *testServer) setQuota(t testing.TB, subject string, daily, total int64) response {
	t.Helper()
	limit := func(v int64) any {
		if v < 0 {
			return nil
		}
		return v
	}
	return ts.doJSON(t, http.MethodPut, "/v1/quotas", ts.token(t, auth.RoleAdmin),
		map[string]any{"subject": subject, "daily_bytes": limit(daily), "total_bytes": limit(total), "reason": "test"})
}

func (ts *testServer) doJSON(t testing.TB, method, path, token string, v any) response {
	t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	return ts.do(t, method, path, token, b, http.Header{"Content-Type": {"application/json"}})
}

// agentToken is an agent token of subject, scoped to every source.
func (ts *testServer) agentToken(t testing.TB, subject string) string {
	t.Helper()
	tok, _ := ts.scopedToken(t, auth.RoleAgent, subject, auth.AllSources())
	return tok
}

func (ts *testServer) putAs(t testing.TB, token string, data []byte) response {
	t.Helper()
	return ts.do(t, http.MethodPut, chunkPath(chunk.Sum(data)), token, data, nil)
}

// scrapeMetric returns the line of /metrics that starts with prefix, or "".
func (ts *testServer) scrapeMetric(t testing.TB, prefix string) string {
	t.Helper()
	resp := ts.do(t, http.MethodGet, "/metrics", ts.token(t, auth.RoleMetrics), nil, nil)
	for _, l := range strings.Split(string(resp.body), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestQuotaDailyBytesGives429OtherSourcesUnaffected: a subject past its
// daily quota is refused with 429 before its body is stored, with a
// Retry-After to the next UTC day and a message naming the quota; another
// subject uploads on; the quota starts again on the next UTC day.
func TestQuotaDailyBytesGives429OtherSourcesUnaffected(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	if resp := ts.setQuota(t, "host-a", 1000, -1); resp.StatusCode != http.StatusOK {
		t.Fatalf("set quota: %d %s", resp.StatusCode, resp.body)
	}
	a, b := ts.agentToken(t, "host-a"), ts.agentToken(t, "host-b")
	first, _ := randomChunk(t, 600)
	if resp := ts.putAs(t, a, first); resp.StatusCode != http.StatusCreated {
		t.Fatalf("first upload within the quota: %d %s", resp.StatusCode, resp.body)
	}
	before := ts.state(t)
	second, _ := randomChunk(t, 600)
	resp := ts.putAs(t, a, second)
	msg := wantError(t, resp, http.StatusTooManyRequests, "quota_daily_exceeded")
	if !strings.Contains(msg, `"host-a"`) || !strings.Contains(msg, "1000 bytes") {
		t.Errorf("message %q does not name the subject and its quota", msg)
	}
	// t0 is 05:06:07 UTC: the next UTC day is 18h53m53s away.
	if got, want := resp.Header.Get("Retry-After"), fmt.Sprint(int((18*time.Hour + 53*time.Minute + 53*time.Second).Seconds())); got != want {
		t.Errorf("Retry-After %q, want %q (seconds to the next UTC day)", got, want)
	}
	ts.assertUnchanged(t, before)

	// Another subject is not affected.
	other, _ := randomChunk(t, 600)
	if resp := ts.putAs(t, b, other); resp.StatusCode != http.StatusCreated {
		t.Fatalf("other subject: %d %s", resp.StatusCode, resp.body)
	}
	// A batch of host-a: the whole batch is refused when nothing in it fits.
	wantError(t, ts.do(t, http.MethodPost, "/v1/chunks/batch", a, AppendFrame(nil, second),
		http.Header{"Content-Type": {BatchContentType}}), http.StatusTooManyRequests, "quota_daily_exceeded")

	if line := ts.scrapeMetric(t, `wormvault_quota_refusals_total{kind="daily",scope="host-a"}`); !strings.HasSuffix(line, " 2") {
		t.Errorf("refusal metric: %q, want 2", line)
	}
	if line := ts.scrapeMetric(t, `wormvault_quota_refusals_total{kind="daily",scope="host-b"}`); line != "" {
		t.Errorf("refusal metric of the other subject: %q, want none", line)
	}

	// The next UTC day, the quota starts again.
	ts.clk.Advance(19 * time.Hour)
	a = ts.agentToken(t, "host-a") // the first one expired meanwhile
	if resp := ts.putAs(t, a, second); resp.StatusCode != http.StatusCreated {
		t.Fatalf("next day: %d %s", resp.StatusCode, resp.body)
	}
}

// TestQuotaTotalBytesGives507: a subject at its total quota is refused
// with 507 and a message naming the quota (not the generic "internal
// error" of other 5xx); deleting nothing, raising the quota lets it on.
func TestQuotaTotalBytesGives507(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ts.setQuota(t, "host-a", -1, 1000)
	a := ts.agentToken(t, "host-a")
	first, _ := randomChunk(t, 900)
	if resp := ts.putAs(t, a, first); resp.StatusCode != http.StatusCreated {
		t.Fatalf("first upload: %d %s", resp.StatusCode, resp.body)
	}
	second, _ := randomChunk(t, 200)
	resp := ts.putAs(t, a, second)
	msg := wantError(t, resp, http.StatusInsufficientStorage, "quota_total_exceeded")
	if !strings.Contains(msg, "total storage quota") || !strings.Contains(msg, `"host-a"`) {
		t.Errorf("message %q does not name the total quota", msg)
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		t.Errorf("Retry-After %q on a total quota: only an admin helps", v)
	}
	// A body without a declared length is admitted until the quota is used
	// up, then refused before it is read.
	if resp := ts.do(t, http.MethodPut, chunkPath(chunk.Sum(second)), a, strings.NewReader(string(second)), nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("undeclared length below the quota: %d %s", resp.StatusCode, resp.body)
	}
	third, _ := randomChunk(t, 10)
	wantError(t, ts.do(t, http.MethodPut, chunkPath(chunk.Sum(third)), a, strings.NewReader(string(third)), nil),
		http.StatusInsufficientStorage, "quota_total_exceeded")
	if line := ts.scrapeMetric(t, `wormvault_quota_refusals_total{kind="total",scope="host-a"}`); !strings.HasSuffix(line, " 2") {
		t.Errorf("refusal metric: %q, want 2", line)
	}
	var list struct {
		Quotas []struct {
			Subject   string `json:"subject"`
			UsedTotal int64  `json:"used_total"`
			UsedToday int64  `json:"used_today"`
			Quota     *struct {
				TotalBytes *int64 `json:"total_bytes"`
				DailyBytes *int64 `json:"daily_bytes"`
			} `json:"quota"`
		} `json:"quotas"`
	}
	decodeJSON(t, ts.do(t, http.MethodGet, "/v1/quotas?subject=host-a", ts.token(t, auth.RoleAuditor), nil, nil), &list)
	if len(list.Quotas) != 1 || list.Quotas[0].UsedTotal != 1100 || list.Quotas[0].UsedToday != 1100 ||
		list.Quotas[0].Quota == nil || *list.Quotas[0].Quota.TotalBytes != 1000 || list.Quotas[0].Quota.DailyBytes != nil {
		t.Errorf("quota of host-a: %+v, want 1100 used of a total of 1000 (overshoot by the undeclared body), no daily", list)
	}

	if resp := ts.setQuota(t, "host-a", -1, 2000); resp.StatusCode != http.StatusOK {
		t.Fatalf("raise: %d %s", resp.StatusCode, resp.body)
	}
	if resp := ts.putAs(t, a, third); resp.StatusCode != http.StatusCreated {
		t.Fatalf("after raising the quota: %d %s", resp.StatusCode, resp.body)
	}
	if n := ts.countAudit(t, "quota.set"); n != 2 {
		t.Errorf("quota.set audit entries: %d, want 2", n)
	}
}

func (ts *testServer) countAudit(t testing.TB, action string) int {
	t.Helper()
	var n int
	if err := ts.pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_log WHERE action = $1", action).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDedupHitsCostNoQuota: uploading content already stored (by anyone)
// counts nothing against the uploader's quota, and is admitted even once
// the quota is used up; in a batch, stored chunks pass while new ones
// beyond the quota are refused one by one.
func TestDedupHitsCostNoQuota(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ts.setQuota(t, "host-a", 1000, 1000)
	a, b := ts.agentToken(t, "host-a"), ts.agentToken(t, "host-b")
	mine, _ := randomChunk(t, 1000)
	theirs, _ := randomChunk(t, 800)
	if resp := ts.putAs(t, a, mine); resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload to the quota: %d %s", resp.StatusCode, resp.body)
	}
	if resp := ts.putAs(t, b, theirs); resp.StatusCode != http.StatusCreated {
		t.Fatalf("other subject: %d %s", resp.StatusCode, resp.body)
	}
	// host-a is at its quota: its own chunk and host-b's are dedup hits.
	for name, data := range map[string][]byte{"own chunk": mine, "other subject's chunk": theirs} {
		if resp := ts.putAs(t, a, data); resp.StatusCode != http.StatusOK {
			t.Errorf("dedup hit (%s) at the quota: %d %s, want 200", name, resp.StatusCode, resp.body)
		}
	}
	fresh, _ := randomChunk(t, 1)
	body := AppendFrame(AppendFrame(AppendFrame(nil, mine), fresh), theirs)
	resp := ts.do(t, http.MethodPost, "/v1/chunks/batch", a, body, http.Header{"Content-Type": {BatchContentType}})
	var out struct {
		Results []batchResultJSON `json:"results"`
	}
	decodeJSON(t, resp, &out)
	if resp.StatusCode != http.StatusOK || len(out.Results) != 3 ||
		out.Results[0].Status != "exists" || out.Results[1].Status != "refused" || out.Results[1].Code != "quota_total_exceeded" ||
		out.Results[2].Status != "exists" {
		t.Errorf("batch at the quota: %d %s, want exists, refused (quota_total_exceeded), exists", resp.StatusCode, resp.body)
	}
	var used int64
	if err := ts.pool.QueryRow(context.Background(), "SELECT bytes FROM quota_totals WHERE subject = 'host-a'").Scan(&used); err != nil || used != 1000 {
		t.Errorf("host-a's usage: %d, %v; want 1000 (dedup hits count nothing)", used, err)
	}
}

// TestQuotaBadInput: a negative, absurd or malformed quota, a bad
// subject, or a caller that is not an admin is refused with a clear error
// and nothing changes.
func TestQuotaBadInput(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	ts.setQuota(t, "host-a", 5000, -1)
	before := ts.state(t)
	settings := ts.countRows(t, "quota_settings")
	admin := ts.token(t, auth.RoleAdmin)
	tests := []struct {
		name   string
		token  string
		body   string
		status int
		code   string
	}{
		{"negative daily", admin, `{"subject":"host-a","daily_bytes":-1}`, http.StatusBadRequest, "invalid"},
		{"negative total", admin, `{"subject":"host-a","total_bytes":-5}`, http.StatusBadRequest, "invalid"},
		{"absurd", admin, `{"subject":"host-a","total_bytes":2000000000000000000}`, http.StatusBadRequest, "invalid"},
		{"beyond int64", admin, `{"subject":"host-a","total_bytes":99999999999999999999}`, http.StatusBadRequest, "invalid"},
		{"fraction", admin, `{"subject":"host-a","daily_bytes":1.5}`, http.StatusBadRequest, "invalid"},
		{"a string", admin, `{"subject":"host-a","daily_bytes":"10GiB"}`, http.StatusBadRequest, "invalid"},
		{"unknown field", admin, `{"subject":"host-a","monthly_bytes":1}`, http.StatusBadRequest, "invalid"},
		{"no subject", admin, `{"daily_bytes":1}`, http.StatusBadRequest, "invalid"},
		{"control character", admin, `{"subject":"host\u0007a","daily_bytes":1}`, http.StatusBadRequest, "invalid"},
		{"long subject", admin, `{"subject":"` + strings.Repeat("x", 129) + `","daily_bytes":1}`, http.StatusBadRequest, "invalid"},
		{"not JSON", admin, `daily=1`, http.StatusBadRequest, "invalid"},
		{"agent", ts.token(t, auth.RoleAgent), `{"subject":"host-a","daily_bytes":1}`, http.StatusForbidden, "forbidden"},
		{"auditor", ts.token(t, auth.RoleAuditor), `{"subject":"host-a","daily_bytes":1}`, http.StatusForbidden, "forbidden"},
		{"reader", ts.token(t, auth.RoleReader), `{"subject":"host-a","daily_bytes":1}`, http.StatusForbidden, "forbidden"},
		{"no token", "", `{"subject":"host-a","daily_bytes":1}`, http.StatusUnauthorized, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, ts.doJSON(t, http.MethodPut, "/v1/quotas", tt.token, tt.body), tt.status, tt.code)
		})
	}
	wantError(t, ts.do(t, http.MethodGet, "/v1/quotas", ts.token(t, auth.RoleAgent), nil, nil), http.StatusForbidden, "forbidden")
	wantError(t, ts.do(t, http.MethodGet, "/v1/quotas?subject=", admin, nil, nil), http.StatusBadRequest, "invalid")
	ts.assertUnchanged(t, before)
	if n := ts.countRows(t, "quota_settings"); n != settings {
		t.Errorf("quota settings: %d rows, want %d", n, settings)
	}
}

// TestPerTokenRequestCap: a token at its cap on concurrent requests gets
// 429 (with Retry-After) at once, without its body being read; another
// token of the same subject has its own slots, and the token gets its slot
// back once a request finished.
func TestPerTokenRequestCap(t *testing.T) {
	t.Parallel()
	acquired := make(chan string, 16)
	ts := newLimitedServer(t, Options{MaxRequestsPerToken: 2, tokenAcquired: func(jti string) { acquired <- jti }})
	tok := ts.agentToken(t, "host-a")
	// Two uploads whose bodies stall hold the token's two slots.
	type held struct {
		pw     *io.PipeWriter
		rest   []byte
		status chan int
	}
	var hold []held
	for range 2 {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		data, h := randomChunk(t, 100)
		st := make(chan int, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodPut, ts.URL+chunkPath(h), pr)
			req.ContentLength = int64(len(data))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := ts.Client().Do(req)
			if err != nil {
				st <- -1
				return
			}
			resp.Body.Close()
			st <- resp.StatusCode
		}()
		<-acquired
		hold = append(hold, held{pw, data, st})
	}
	chunks := ts.countRows(t, "chunks")
	resp := ts.putAs(t, tok, []byte("third"))
	wantError(t, resp, http.StatusTooManyRequests, "too_many_requests")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if n := ts.countRows(t, "chunks"); n != chunks {
		t.Errorf("chunks: %d after the refusal, want %d", n, chunks)
	}
	// Another token (same subject) has its own slots.
	if resp := ts.putAs(t, ts.agentToken(t, "host-a"), []byte("other token")); resp.StatusCode != http.StatusCreated {
		t.Fatalf("other token: %d %s", resp.StatusCode, resp.body)
	}
	<-acquired
	// One held upload finishes: its slot is free again.
	hold[0].pw.Write(hold[0].rest)
	hold[0].pw.Close()
	if st := <-hold[0].status; st != http.StatusCreated {
		t.Fatalf("held upload: %d, want 201", st)
	}
	if resp := ts.putAs(t, tok, []byte("after a slot freed")); resp.StatusCode != http.StatusCreated {
		t.Fatalf("after a slot freed: %d %s", resp.StatusCode, resp.body)
	}
	<-acquired
	hold[1].pw.Write(hold[1].rest)
	hold[1].pw.Close()
	if st := <-hold[1].status; st != http.StatusCreated {
		t.Fatalf("second held upload: %d, want 201", st)
	}
}
