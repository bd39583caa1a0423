package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadServe(t *testing.T) {
	t.Parallel()
	base := map[string]string{"VAULT_DATA_DIR": "/d", "VAULT_DATABASE_URL": "postgres://x"}
	c, err := LoadServe(nil, envOf(base), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != DefaultListen || c.MaxChunkSize != DefaultMaxChunkSize || c.MinRetention != DefaultMinRetention {
		t.Errorf("defaults = %+v", c)
	}
	if c.DBConnectTimeout != DefaultDBConnectTimeout || c.DBStatementTimeout != DefaultDBStatementTimeout ||
		c.DBLockTimeout != DefaultDBLockTimeout || c.CommitTimeout != DefaultCommitTimeout ||
		c.MaxConns != DefaultMaxConns || c.MaxConnsPerClient != DefaultMaxConnsPerClient ||
		c.ReadHeaderTimeout != DefaultReadHeaderTimeout || c.IdleTimeout != DefaultIdleTimeout ||
		c.MinBodyRate != DefaultMinBodyRate || c.BodyRateGrace != DefaultBodyRateGrace || c.BatchMemory != DefaultBatchMemory {
		t.Errorf("limit defaults = %+v", c)
	}
	c, err = LoadServe([]string{"--commit-timeout", "3s", "--max-conns-per-client", "0"},
		envOf(map[string]string{"VAULT_DATA_DIR": "/d", "VAULT_DATABASE_URL": "postgres://x", "VAULT_DB_LOCK_TIMEOUT": "2s", "VAULT_MIN_BODY_RATE": "0"}), io.Discard)
	if err != nil || c.CommitTimeout != 3*time.Second || c.MaxConnsPerClient != 0 || c.DBLockTimeout != 2*time.Second || c.MinBodyRate != 0 {
		t.Errorf("limit flags: %+v, %v", c, err)
	}
	if c.ReserveBytes != 1<<30 || c.ReservePercent != 0 {
		t.Errorf("default free space reserve = %d bytes, %g%%; want 1GiB", c.ReserveBytes, c.ReservePercent)
	}
	c, err = LoadServe([]string{"--max-chunk-size", "8MiB", "--min-retention", "90d"}, envOf(base), io.Discard)
	if err != nil || c.MaxChunkSize != 8<<20 || c.MinRetention != 90*24*time.Hour {
		t.Errorf("flags: %+v, %v", c, err)
	}
	for _, tt := range []struct {
		args    []string
		env     string
		bytes   int64
		percent float64
	}{
		{args: []string{"--free-space-reserve", "2%"}, percent: 2},
		{args: []string{"--free-space-reserve", "0"}},
		{env: "256MiB", bytes: 256 << 20},
		{args: []string{"--free-space-reserve", "0.5%"}, env: "256MiB", percent: 0.5}, // the flag wins
	} {
		env := map[string]string{"VAULT_FREE_SPACE_RESERVE": tt.env}
		for k, v := range base {
			env[k] = v
		}
		c, err := LoadServe(tt.args, envOf(env), io.Discard)
		if err != nil || c.ReserveBytes != tt.bytes || c.ReservePercent != tt.percent {
			t.Errorf("LoadServe(%q, VAULT_FREE_SPACE_RESERVE=%q): reserve %d bytes, %g%%, err %v; want %d, %g%%",
				tt.args, tt.env, c.ReserveBytes, c.ReservePercent, err, tt.bytes, tt.percent)
		}
	}
}

func TestLoadServeRefusesUnsafe(t *testing.T) {
	t.Parallel()
	base := map[string]string{"VAULT_DATA_DIR": "/d", "VAULT_DATABASE_URL": "postgres://x"}
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		unsafe bool
		want   string
	}{
		{name: "no data dir", env: map[string]string{"VAULT_DATABASE_URL": "postgres://x"}, want: "data directory"},
		{name: "no database", env: map[string]string{"VAULT_DATA_DIR": "/d"}, want: "database"},
		{name: "short retention", args: []string{"--min-retention", "1h"}, unsafe: true, want: "--dev"},
		{name: "zero retention even in dev", args: []string{"--min-retention", "0s", "--dev"}, unsafe: true, want: "positive"},
		{name: "zero chunk size", args: []string{"--max-chunk-size", "0"}, unsafe: true, want: "chunk size"},
		{name: "huge chunk size", args: []string{"--max-chunk-size", "2GiB"}, unsafe: true, want: "chunk size"},
		{name: "plaintext on all interfaces", args: []string{"--listen", "0.0.0.0:8420"}, unsafe: true, want: "plain HTTP"},
		{name: "tls cert without key", args: []string{"--tls-cert", "c.pem"}, want: "together"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, want: "log format"},
		{name: "bad log level", args: []string{"--log-level", "verbose"}, want: "debug, info, warn, error"},
		{name: "log level with an offset", args: []string{"--log-level", "info+2"}, want: "log level"},
		{name: "bad log level in env", env: map[string]string{"VAULT_DATA_DIR": "/d", "VAULT_DATABASE_URL": "postgres://x", "VAULT_LOG_LEVEL": "warning"}, want: `"warning"`},
		{name: "bad size", args: []string{"--max-chunk-size", "lots"}, want: "invalid size"},
		{name: "lock timeout above statement timeout", args: []string{"--db-lock-timeout", "2m"}, want: "lock timeout"},
		{name: "no commit deadline", args: []string{"--commit-timeout", "0s"}, want: "commit timeout"},
		{name: "tiny connection cap", args: []string{"--max-conns", "2"}, want: "max conns"},
		{name: "per-client cap above total", args: []string{"--max-conns", "100", "--max-conns-per-client", "200"}, want: "per client"},
		{name: "bad body rate", args: []string{"--min-body-rate", "fast"}, want: "min body rate"},
		{name: "batch memory below one batch", args: []string{"--batch-memory", "1MiB"}, want: "batch memory"},
		{name: "bad duration in env", env: map[string]string{"VAULT_DATA_DIR": "/d", "VAULT_DATABASE_URL": "postgres://x", "VAULT_COMMIT_TIMEOUT": "soon"}, want: "commit-timeout"},
		{name: "bad reserve", args: []string{"--free-space-reserve", "much"}, want: "free space reserve"},
		{name: "negative reserve share", args: []string{"--free-space-reserve", "-1%"}, want: "free space reserve"},
		{name: "reserve share over half", args: []string{"--free-space-reserve", "60%"}, want: "free space reserve"},
		{name: "reserve share not a number", args: []string{"--free-space-reserve", "NaN%"}, want: "free space reserve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			if env == nil {
				env = base
			}
			_, err := LoadServe(tt.args, envOf(env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want mention of %q", err, tt.want)
			}
			if tt.unsafe && !errors.Is(err, ErrUnsafe) {
				t.Errorf("err = %v, want ErrUnsafe", err)
			}
		})
	}
	// What dev mode and explicit opt-ins allow.
	for _, args := range [][]string{
		{"--min-retention", "1h", "--dev"},
		{"--listen", "0.0.0.0:8420", "--allow-plaintext"},
		{"--listen", "[::1]:8420"},
		{"--listen", "localhost:8420"},
	} {
		if _, err := LoadServe(args, envOf(base), io.Discard); err != nil {
			t.Errorf("LoadServe(%q) = %v, want accepted", args, err)
		}
	}
}

func TestWithFiles(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "url")
	os.WriteFile(f, []byte("postgres://secret\n"), 0o600)
	get := WithFiles(envOf(map[string]string{"VAULT_DATABASE_URL_FILE": f, "VAULT_LISTEN": "a"}))
	if got := get("VAULT_DATABASE_URL"); got != "postgres://secret" {
		t.Errorf("from file = %q", got)
	}
	if got := get("VAULT_LISTEN"); got != "a" {
		t.Errorf("plain = %q", got)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	durations := map[string]time.Duration{"30d": 30 * 24 * time.Hour, "1.5d": 36 * time.Hour, "90m": 90 * time.Minute}
	for in, want := range durations {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "-1d", "x", "10"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
	sizes := map[string]int64{"4096": 4096, "64KiB": 64 << 10, "1MiB": 1 << 20, "2GiB": 2 << 30, "10B": 10}
	for in, want := range sizes {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1TiB", "1.5MiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestVaultFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := ReadVault(dir); err == nil {
		t.Fatal("ReadVault of an empty dir succeeded")
	}
	v := Vault{ID: "wv-1", SigningKey: SigningKeyFile}
	if err := WriteVault(dir, v); err != nil {
		t.Fatal(err)
	}
	if err := WriteVault(dir, Vault{ID: "wv-2", SigningKey: "x"}); err == nil {
		t.Fatal("WriteVault overwrote an existing vault")
	}
	got, err := ReadVault(dir)
	if err != nil || got.ID != "wv-1" || got.SigningKeyPath(dir) != filepath.Join(dir, SigningKeyFile) {
		t.Errorf("ReadVault = %+v, %v", got, err)
	}
}
