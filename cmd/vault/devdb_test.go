package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevDBRemembersPort runs scripts/devdb.sh's port resolution in a
// scratch work tree: the port a .devdb was made with is used again when
// VAULT_PG_PORT is unset, and a different VAULT_PG_PORT is refused rather
// than handing out URLs that name a port nothing listens on.
func TestDevDBRemembersPort(t *testing.T) {
	t.Parallel()
	bash := mustLookPath(t, "bash")
	script, err := os.ReadFile("../../scripts/devdb.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		files   map[string]string // under .devdb
		pgPort  string
		want    string // the port printed
		wantErr string
	}{
		{name: "fresh, default", want: "55432"},
		{name: "fresh, VAULT_PG_PORT", pgPort: "56001", want: "56001"},
		{name: "remembered", files: map[string]string{"port": "56002\n"}, want: "56002"},
		{name: "remembered, same VAULT_PG_PORT", files: map[string]string{"port": "56002\n"}, pgPort: "56002", want: "56002"},
		{name: "remembered, other VAULT_PG_PORT", files: map[string]string{"port": "56002\n"}, pgPort: "56003",
			wantErr: "this .devdb uses port 56002, but VAULT_PG_PORT=56003"},
		{name: "older .devdb without a port file", files: map[string]string{"env": "VAULT_DATABASE_URL=postgres://vault_app:pw@127.0.0.1:56004/vault\n"}, want: "56004"},
		{name: "not a number", pgPort: "5x", wantErr: "not a port number"},
		{name: "privileged port", pgPort: "80", wantErr: "not a port number"},
		{name: "damaged port file", files: map[string]string{"port": "soon\n"}, wantErr: "not a port number"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			top := t.TempDir()
			if err := os.MkdirAll(filepath.Join(top, "scripts"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(top, "scripts", "devdb.sh"), script, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(top, ".devdb"), 0o700); err != nil {
				t.Fatal(err)
			}
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(top, ".devdb", name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(bash, filepath.Join(top, "scripts", "devdb.sh"), "port")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			if tt.pgPort != "" {
				cmd.Env = append(cmd.Env, "VAULT_PG_PORT="+tt.pgPort)
			}
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(stderr.String(), tt.wantErr) {
					t.Fatalf("devdb.sh port: err %v, stdout %q, stderr %q; want a refusal saying %q", err, stdout.String(), stderr.String(), tt.wantErr)
				}
				return
			}
			if err != nil || strings.TrimSpace(stdout.String()) != tt.want {
				t.Fatalf("devdb.sh port: err %v, stdout %q, stderr %q; want %s", err, stdout.String(), stderr.String(), tt.want)
			}
		})
	}
}
