package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const (
	rulesFile     = "../../deploy/prometheus/wormvault.rules.yml"
	rulesTestFile = "../../deploy/prometheus/wormvault.rules.test.yml"
	unitFile      = "../../deploy/systemd/wormvault.service"
)

var (
	metricNameRE = regexp.MustCompile(`\bwormvault_[a-z0-9_]+`)
	alertRE      = regexp.MustCompile(`(?m)^      - alert: (\S+)$`)
	exprRE       = regexp.MustCompile(`(?m)^        expr: \S`)
	metricDefRE  = regexp.MustCompile(`"(wormvault_[a-z0-9_]+)"`)
)

// TestAlertRules checks deploy/prometheus/wormvault.rules.yml with
// promtool (check rules, and its unit tests) when promtool is installed;
// without it, a minimal structural check of the YAML. In both cases every
// wormvault_ metric a rule names must be one the vault exports: a renamed
// metric must not leave an alert that can never fire.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	for _, name := range metricNameRE.FindAllString(string(raw), -1) {
		if !exported[name] {
			t.Errorf("%s names %s, which the vault does not export", rulesFile, name)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Logf("promtool is not installed (apt-get install prometheus): checking the YAML's structure only")
		alerts := alertRE.FindAllStringSubmatch(string(raw), -1)
		if !strings.HasPrefix(strings.TrimSpace(stripComments(string(raw))), "groups:") || len(alerts) == 0 {
			t.Fatalf("%s: no groups: with alerts", rulesFile)
		}
		if n := len(exprRE.FindAllString(string(raw), -1)); n != len(alerts) {
			t.Errorf("%s: %d alerts but %d exprs", rulesFile, len(alerts), n)
		}
		if strings.Contains(string(raw), "\t") {
			t.Errorf("%s contains a tab: YAML indents with spaces", rulesFile)
		}
		return
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// exportedMetrics lists the wormvault_ metric names in the non-test Go
// sources, with the suffixes Prometheus adds to histograms.
func exportedMetrics(t testing.TB) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".devdb" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricDefRE.FindAllStringSubmatch(string(src), -1) {
			names[m[1]] = true
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[m[1]+suffix] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !names["wormvault_deletions"] || !names["wormvault_data_free_bytes"] {
		t.Fatalf("found no metric definitions in the sources: %v", names)
	}
	return names
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// TestSystemdUnit checks that deploy/systemd/wormvault.service keeps the
// hardening docs/operations.md describes, a file limit above --max-conns,
// and the database URL out of the unit; with systemd-analyze installed it
// is verified too (ExecStart pointed at a binary that exists, since the
// vault is not installed here).
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(raw)
	for _, want := range []string{
		"User=wormvault", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/wormvault",
		"PrivateTmp=yes", "ProtectHome=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
		"RestrictAddressFamilies=", "EnvironmentFile=/etc/wormvault/wormvault.env", "Restart=on-failure",
		"ExecStart=/usr/local/bin/vault serve",
	} {
		if !strings.Contains(unit, "\n"+want) {
			t.Errorf("%s lacks %q", unitFile, want)
		}
	}
	if strings.Contains(unit, "postgres://") && strings.Contains(unit, "\nEnvironment=VAULT_DATABASE_URL") {
		t.Errorf("%s puts the database URL in the unit: it belongs in the EnvironmentFile", unitFile)
	}
	m := regexp.MustCompile(`\nLimitNOFILE=(\d+)\n`).FindStringSubmatch(unit)
	if m == nil {
		t.Fatalf("%s sets no LimitNOFILE", unitFile)
	}
	if n, _ := strconv.Atoi(m[1]); n < 8192+256 {
		t.Errorf("LimitNOFILE=%d, want at least --max-conns (8192) + 256", n)
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze is not installed: checked the unit's text only")
		return
	}
	dir := t.TempDir()
	tmp := filepath.Join(dir, "wormvault.service")
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(unit, "/usr/local/bin/vault", "/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", tmp).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
