package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestComposeFileIsValidAndLeastPrivileged validates docker-compose.yml
// the way Docker would (docker-compose config, which needs no daemon) and
// checks what the security model promises of it: the vault serves as the
// runtime login, never as the superuser or the schema owner; the owner's URL
// goes only to the one-shot migrate service; the vault has a healthcheck;
// no secret reaches an image's build context.
func TestComposeFileIsValidAndLeastPrivileged(t *testing.T) {
	t.Parallel()
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		if os.Getenv("VAULT_SKIP_COMPOSE") == "1" {
			t.Skip("VAULT_SKIP_COMPOSE=1 and docker-compose is not installed")
		}
		t.Fatalf("validating docker-compose.yml needs docker-compose (apt-get install docker-compose; `make test` installs it as root): %v", err)
	}
	cmd := exec.Command(compose, "-f", "docker-compose.yml", "config")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	cfg := string(out)
	vault := composeService(t, cfg, "vault")
	migrate := composeService(t, cfg, "migrate")
	for _, want := range []string{"VAULT_DATABASE_URL_FILE: /run/secrets/db_url", "- health", ":/keys:ro"} {
		if !strings.Contains(vault, want) {
			t.Errorf("service vault lacks %q:\n%s", want, vault)
		}
	}
	for _, bad := range []string{"db_owner_url", "OWNER", "POSTGRES_", "db_superuser_password"} {
		if strings.Contains(vault, bad) {
			t.Errorf("service vault is given %q: the server must hold only the runtime login", bad)
		}
	}
	if !strings.Contains(migrate, "VAULT_OWNER_DATABASE_URL_FILE: /run/secrets/db_owner_url") {
		t.Errorf("service migrate does not migrate as the owner:\n%s", migrate)
	}

	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"postgres://vault_app:", "postgres://vault_owner:"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("docker-compose.yml's secret instructions lack %q", want)
		}
	}
	roles, err := os.ReadFile("../../docker/initdb/10-wormvault-roles.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"CREATE ROLE vault_owner LOGIN NOSUPERUSER NOCREATEROLE",
		"CREATE ROLE wormvault_runtime NOLOGIN",
		"CREATE ROLE vault_app LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB",
		"IN ROLE wormvault_runtime",
	} {
		if !strings.Contains(string(roles), want) {
			t.Errorf("docker/initdb/10-wormvault-roles.sh lacks %q", want)
		}
	}
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatalf(".dockerignore: %v (COPY . . would send the dev cluster and keys to the build)", err)
	}
	lines := strings.Fields(string(ignore))
	for _, want := range []string{".devdb", ".git", "secrets", "keys", "*.key", "*.token"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// composeService returns the block of service name in docker-compose
// config's normalised output.
func composeService(t *testing.T, cfg, name string) string {
	t.Helper()
	lines := strings.Split(cfg, "\n")
	start := -1
	for i, l := range lines {
		if l == "  "+name+":" {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatalf("docker-compose config has no service %q:\n%s", name, cfg)
	}
	end := start + 1
	for end < len(lines) && (strings.HasPrefix(lines[end], "    ") || lines[end] == "") {
		end++
	}
	return strings.Join(lines[start:end], "\n")
}

// TestEntrypointEnrolsMountedAdmins runs the container's entrypoint as the
// image does on a new volume: the admins' mounted public keys are enrolled,
// and without any it refuses to create a vault that could never gain admins.
func TestEntrypointEnrolsMountedAdmins(t *testing.T) {
	t.Parallel()
	bin := mustBuildPlainVault(t)
	binDir := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(binDir, "vault")); err != nil {
		t.Fatal(err)
	}
	entrypoint, err := filepath.Abs("../../docker/entrypoint.sh")
	if err != nil {
		t.Fatal(err)
	}
	run := func(dataDir, keys string, extraEnv ...string) (string, error) {
		cmd := exec.Command("sh", entrypoint, "hash", "-")
		cmd.Stdin = strings.NewReader("hello")
		cmd.Env = append([]string{"PATH=" + binDir + ":/usr/bin:/bin", "VAULT_DATA_DIR=" + dataDir,
			"VAULT_ADMIN_KEYS=" + keys}, extraEnv...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// No keys: refused, nothing created.
	empty, noKeys := filepath.Join(t.TempDir(), "data"), t.TempDir()
	out, err := run(empty, noKeys)
	if err == nil || !strings.Contains(out, "no admin public keys") {
		t.Errorf("first start without admin keys: err %v, output %q; want a refusal naming the keys", err, out)
	}
	if _, err := os.Stat(filepath.Join(empty, "vault.json")); !os.IsNotExist(err) {
		t.Errorf("a refused first start left a vault behind: %v", err)
	}

	// Three mounted keys: enrolled, then the command runs.
	keys := t.TempDir()
	for _, a := range []string{"alice", "bob", "carol"} {
		if out, err := exec.Command(bin, "admin", "keygen", "--out", filepath.Join(keys, a+".key")).CombinedOutput(); err != nil {
			t.Fatalf("keygen: %v\n%s", err, out)
		}
		if err := os.Rename(filepath.Join(keys, a+".key.pub"), filepath.Join(keys, a+".pub")); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(keys, a+".key")) // only public keys are mounted
	}
	data := filepath.Join(t.TempDir(), "data")
	out, err = run(data, keys)
	if err != nil {
		t.Fatalf("first start with three admin keys: %v\n%s", err, out)
	}
	if !strings.Contains(out, "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f") {
		t.Errorf("the command after init did not run (want the BLAKE3 of \"hello\"): %q", out)
	}
	b, err := os.ReadFile(filepath.Join(data, adminsFile))
	if err != nil {
		t.Fatalf("no admin set written: %v", err)
	}
	var set struct {
		Admins []struct{ Name string } `json:"admins"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range set.Admins {
		names = append(names, a.Name)
	}
	if strings.Join(names, ",") != "alice,bob,carol" {
		t.Errorf("enrolled admins %v, want alice, bob, carol", names)
	}
	// A second start finds the vault and does not init again.
	if out, err := run(data, noKeys); err != nil {
		t.Errorf("second start: %v\n%s", err, out)
	}
}
