package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// runHealth is `vault health`: the container healthcheck. It asks a running
// vault's /readyz (no token needed) and succeeds only on 200, printing the
// answer either way, so `docker inspect` shows why a vault is unhealthy.
func runHealth(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("health", stderr)
	def := getenv("VAULT_URL")
	if def == "" {
		def = "http://127.0.0.1:8420"
		if l := getenv("VAULT_LISTEN"); l != "" {
			def = "http://" + strings.Replace(l, "0.0.0.0:", "127.0.0.1:", 1)
		}
	}
	url := fs.String("url", def, "the vault's base URL (VAULT_URL; default from VAULT_LISTEN, else http://127.0.0.1:8420)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(*url, "/")+"/readyz", nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s/readyz answered %s", strings.TrimRight(*url, "/"), resp.Status)
	}
	return nil
}
