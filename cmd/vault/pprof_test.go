package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// With pprof on, /debug/pprof/cmdline would print the process's arguments,
// the database URL with its password among them. The profiles are served;
// the command line never is, under any spelling of its path.
func TestPprofNeverServesCommandLine(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(pprofMux())
	t.Cleanup(srv.Close)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	secret := strings.Join(os.Args, "\x00")
	for _, path := range []string{"/debug/pprof/cmdline", "/debug/pprof/cmdline/", "/debug/pprof/cmdline?debug=1", "/debug/pprof//cmdline", "/debug/pprof/./cmdline"} {
		code, body := get(path)
		if code == http.StatusOK || strings.Contains(body, os.Args[0]) || (secret != "" && strings.Contains(body, secret)) {
			t.Errorf("GET %s: %d %q, want the command line refused", path, code, body)
		}
	}
	if code, _ := get("/debug/pprof/heap?debug=1"); code != http.StatusOK {
		t.Errorf("GET /debug/pprof/heap: %d, want 200 (profiles still served)", code)
	}
	if code, body := get("/debug/pprof/"); code != http.StatusOK || strings.Contains(body, os.Args[0]) {
		t.Errorf("GET /debug/pprof/: %d, and the index must not show the command line", code)
	}
}
