package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogDurationsAsText: a duration reads "1.5s" in JSON logs too, not
// 1500000000 nanoseconds, at the top level and inside a group.
func TestLogDurationsAsText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := newLogger(&buf, "json", "info")
	log.Info("done", "took", 1500*time.Millisecond, "count", 3, slog.Group("db", "wait", 2*time.Minute))
	var got struct {
		Took  any `json:"took"`
		Count any `json:"count"`
		DB    struct {
			Wait any `json:"wait"`
		} `json:"db"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	if got.Took != "1.5s" || got.DB.Wait != "2m0s" || got.Count != float64(3) {
		t.Errorf("json log %s: took %v, db.wait %v, count %v; want \"1.5s\", \"2m0s\", 3", buf.String(), got.Took, got.DB.Wait, got.Count)
	}

	buf.Reset()
	newLogger(&buf, "text", "info").Info("done", "took", 1500*time.Millisecond)
	if !strings.Contains(buf.String(), "took=1.5s") {
		t.Errorf("text log %q: want took=1.5s", buf.String())
	}
}

func TestLoggerLevel(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := newLogger(&buf, "text", "WARN")
	log.Info("quiet")
	log.Warn("loud")
	if strings.Contains(buf.String(), "quiet") || !strings.Contains(buf.String(), "loud") {
		t.Errorf("level WARN logged %q; want the warning only", buf.String())
	}
}

// TestServeRefusesBadLogLevel: a typo in --log-level stops serve before it
// touches anything, naming the levels it takes.
func TestServeRefusesBadLogLevel(t *testing.T) {
	t.Parallel()
	dir := mustInitVault(t)
	r := runCLI(t, map[string]string{"VAULT_DATA_DIR": dir, "VAULT_DATABASE_URL": "postgres://127.0.0.1:1/none"}, nil, "serve", "--log-level", "verbose")
	if r.err == nil || !strings.Contains(r.err.Error(), "debug, info, warn, error") {
		t.Fatalf("serve --log-level verbose: %v; want a refusal naming the levels", r.err)
	}
}
