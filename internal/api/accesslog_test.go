package api

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// logLines returns the server log's lines whose message is msg.
func logLines(log, msg string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, " msg="+msg+" ") || strings.Contains(line, ` msg="`+msg+`" `) {
			out = append(out, line)
		}
	}
	return out
}

var requestIDRE = regexp.MustCompile(`\brequest_id=(\S+)`)

// TestAccessLogNamesSubjectAndRole: the access-log line of an
// authenticated request names who made it (docs/operations.md, "Logs").
// The principal is set by the authentication middleware, inside the access
// log's handler: the line must still carry it.
func TestAccessLogNamesSubjectAndRole(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	body, h := randomChunk(t, 1000)
	ts.put(t, h, body, http.StatusCreated)
	lines := logLines(ts.logs.String(), "request")
	var put string
	for _, l := range lines {
		if strings.Contains(l, "method=PUT") {
			put = l
		}
	}
	if put == "" {
		t.Fatalf("no access-log line for the PUT in:\n%s", strings.Join(lines, "\n"))
	}
	for _, want := range []string{"route=/v1/chunks/{hash}", "status=201", "subject=test-agent", "role=agent"} {
		if !strings.Contains(put, " "+want) {
			t.Errorf("access-log line %q lacks %s", put, want)
		}
	}
	if m := requestIDRE.FindStringSubmatch(put); m == nil || m[1] == `""` {
		t.Errorf("access-log line %q has no request_id", put)
	}
}

// TestErrorLogCarriesRequestID: the line writeError logs for a refused
// request carries the request id of its access-log line, so that the two
// can be matched in a busy log.
func TestErrorLogCarriesRequestID(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	_, h := randomChunk(t, 10)
	resp := ts.do(t, http.MethodHead, chunkPath(h), "not-a-token", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("HEAD with a bad token: %d, want 401", resp.StatusCode)
	}
	log := ts.logs.String()
	refused, access := logLines(log, "authentication refused"), logLines(log, "request")
	if len(refused) != 1 || len(access) != 1 {
		t.Fatalf("want one authentication refused line and one access-log line, got:\n%s", log)
	}
	a, r := requestIDRE.FindStringSubmatch(access[0]), requestIDRE.FindStringSubmatch(refused[0])
	if a == nil || r == nil || a[1] != r[1] {
		t.Errorf("request ids: access log %v, error line %v; want the same id on both", a, r)
	}
	if strings.Contains(access[0], "subject=") {
		t.Errorf("a refused token's request names a subject: %q", access[0])
	}
}
