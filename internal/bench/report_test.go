package bench

import (
	"strings"
	"testing"
	"time"
)

// sampleReport is a report with round numbers, so that every ratio in it
// can be worked out by hand.
func sampleReport() *Report {
	sec := time.Second
	return &Report{
		Machine: Machine{CPU: "Test CPU", Cores: 2, MemTotal: 4 * GiB, Kernel: "Linux 6.1", GoVersion: "go1.26",
			PostgreSQL: "PostgreSQL 15.1", VaultVersion: "abc", WorkDir: "/tmp/x", WorkDirFS: "ext4 on /dev/vda, mounted at /"},
		Settings: Settings{Target: "test server", Duration: 3 * sec, MaxBytes: 512 * MiB, PackThreshold: 256 * KiB},
		Started:  time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC),
		Elapsed:  100 * sec,
		Hash:     []HashResult{{Size: MiB, Workers: 2, OneCore: 1e9, AllCores: 2e9}},
		Disk: []DiskResult{
			{Size: 4 * KiB, Agents: 8, Files: 1000, Bytes: 1000 * 4 * KiB, Elapsed: sec},
			{Size: MiB, Agents: 8, Files: 200, Bytes: 200 * MiB, Elapsed: sec},
		},
		PG: []PGResult{{Agents: 8, Commits: 500, Elapsed: sec}},
		Cells: []CellResult{
			{Size: 4 * KiB, Agents: 8, New: 375, Bytes: 375 * 4 * KiB, Elapsed: sec,
				Server: &ProcUsage{PeakRSS: 30 * MiB, HWM: 40 * MiB, CPU: sec}},
			{Size: 4 * KiB, Agents: 8, Dedup: 0.9, New: 100, Hits: 900, Bytes: 1000 * 4 * KiB, Elapsed: sec,
				HitLatency: Latency{N: 900, Mean: 2 * time.Millisecond, P50: time.Millisecond}},
			{Size: MiB, Agents: 8, New: 170, Bytes: 170 * MiB, Elapsed: sec},
			{Size: 8 * MiB, Agents: 8, New: 10, Bytes: 80 * MiB, Elapsed: sec,
				Server: &ProcUsage{PeakRSS: 300 * MiB, HWM: 310 * MiB, CPU: sec}},
		},
		Missing: &MissingResult{Hashes: 10_000, Stored: 5000, Requests: 5, Total: 500 * time.Millisecond},
		Notes:   []string{"a note"},
	}
}

func TestTargets(t *testing.T) {
	t.Parallel()
	got := sampleReport().Targets()
	want := []TargetResult{
		{Name: "1MiB, 8 agents: ingest ≥ 80% of durable raw disk", Measured: "85% (178 of 210 MB/s)", Met: true, Status: "met"},
		{Name: "4KiB, 8 agents: chunks/s ≥ 100% of min(raw-disk files/s, PG commits/s)", Measured: "75% (375 of 500/s, PG)", Status: "missed: needs 1.3×"},
		{Name: "4KiB, 8 agents: dedup hits ≥ 10× new-write chunks/s", Measured: "11× (4,000 vs 375 chunks/s)", Met: true, Status: "met"},
		{Name: "missing: 10,000 hashes in one request at ≥ 200,000 hashes/s", Measured: "100,000 hashes/s", Status: "missed: needs 2.0×"},
		{Name: "8MiB, 8 agents: server RSS < 256 MiB", Measured: "300.0 MiB peak (sampled)", Status: "missed by 44.0 MiB"},
	}
	if len(got) != len(want) {
		t.Fatalf("Targets() = %d results, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("target %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestTargetsSkipUnmeasured(t *testing.T) {
	t.Parallel()
	r := sampleReport()
	r.Disk, r.PG, r.Missing = nil, nil, nil
	for _, tr := range r.Targets() {
		if strings.Contains(tr.Name, "raw disk") || strings.Contains(tr.Name, "min(") || strings.HasPrefix(tr.Name, "missing") {
			t.Errorf("target %q reported without its baseline", tr.Name)
		}
	}
}

func TestMarkdown(t *testing.T) {
	t.Parallel()
	md := Markdown(sampleReport())
	for _, want := range []string{
		"## Run of 2026-01-02 03:04 UTC",
		"| CPU | Test CPU, 2 cores |",
		"| memory | 4.0 GiB |",
		"| PostgreSQL | PostgreSQL 15.1 |",
		"| work dir | ext4 on /dev/vda, mounted at / (/tmp/x) |",
		"stops after 3s or 512MiB, whichever comes first; whole run 1m40s",
		// size, agents, dedup, PUTs, MB/s, of disk, of BLAKE3, chunks/s, of item bound, p50, p99, RSS, HWM, CPU s/GB, bench CPU
		// (no pack-append baseline here: n/a; above the pack threshold: –)
		"| 4KiB | 8 | 0% | 375 | 1.5 | 38% | n/a | 375 | 75% of PG | n/a | 0.000 | 0.000 | 30.0 MiB | 40.0 MiB | 651.04 | 0.00 |",
		"| 1MiB | 8 | 0% | 170 | 178 | 85% | 8.9% | 170 | 85% of disk | – |",
		"| 8MiB | 8 | 0% | 10 | 83.9 | n/a | n/a | 10.0 | 2.0% of PG | – |",
		// dedup table: hit rate 8 / 2 ms = 4,000/s against the 0% cell's 375/s
		"| 4KiB | 8 | 90% | 900 | 1.00 | 0.000 | 0.000 | 4,000 | 375 | 11× |",
		"| 10,000 | 5,000 | 5 | 0.000 | 0.000 | 100,000 | 50% |",
		"| 4KiB | 8 | 4.1 | 1,000 |",
		"| 8 | 500 |",
		"| size | 1 core MB/s | 2 cores MB/s |",
		"| 1MiB | 1,000 | 2,000 |",
		"| 4KiB, 8 agents: chunks/s ≥ 100% of min(raw-disk files/s, PG commits/s) | 75% (375 of 500/s, PG) | **missed: needs 1.3×** |",
		"### How to read this",
		"- a note",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q; got:\n%s", want, md)
		}
	}
	if strings.Contains(md, BeginMarker) || strings.Contains(md, EndMarker) {
		t.Error("Markdown must not contain the markers itself; Splice adds them")
	}
}

func TestMarkdownWithoutBaselines(t *testing.T) {
	t.Parallel()
	r := sampleReport()
	r.Disk, r.PG, r.Hash = nil, nil, nil
	r.Cells[0].Server = nil
	md := Markdown(r)
	if !strings.Contains(md, "| 4KiB | 8 | 0% | 375 | 1.5 | n/a | n/a | 375 | n/a | n/a | 0.000 | 0.000 | n/a | n/a | n/a |") {
		t.Errorf("a cell without baselines or server figures must say n/a:\n%s", md)
	}
	if strings.Contains(md, "Durable raw disk") || strings.Contains(md, "| agents | commits/s |") {
		t.Error("tables of baselines that were not measured must be left out")
	}
}

func TestHitAndNewRates(t *testing.T) {
	t.Parallel()
	c := CellResult{Agents: 4, HitLatency: Latency{N: 10, Mean: 4 * time.Millisecond}, NewLatency: Latency{N: 2, Mean: 40 * time.Millisecond}}
	if got := c.HitRate(); got != 1000 {
		t.Errorf("HitRate = %v, want 4 agents / 4 ms = 1000", got)
	}
	if got := c.NewRate(); got != 100 {
		t.Errorf("NewRate = %v, want 100", got)
	}
	if got := (CellResult{Agents: 4}).HitRate(); got != 0 {
		t.Errorf("HitRate without hits = %v, want 0", got)
	}
}

func TestMergePoolsRuns(t *testing.T) {
	t.Parallel()
	a := DiskResult{Size: KiB, Agents: 2, Files: 100, Bytes: 100 * KiB, Elapsed: time.Second, Runs: []float64{100}, samples: ms(1, 2, 3)}
	b := DiskResult{Size: KiB, Agents: 2, Files: 300, Bytes: 300 * KiB, Elapsed: time.Second, Runs: []float64{300}, samples: ms(4, 5)}
	m := a.Merge(b)
	if m.Files != 400 || m.Elapsed != 2*time.Second || m.FilesPerSec() != 200 || len(m.Runs) != 2 || m.Runs[1] != 300 {
		t.Errorf("Merge = %+v, want 400 files in 2 s, runs [100 300]", m)
	}
	if m.Latency.N != 5 || m.Latency.Max != 5*time.Millisecond || m.Latency.P50 != 3*time.Millisecond {
		t.Errorf("merged latency = %+v, want 5 samples, p50 3 ms, max 5 ms", m.Latency)
	}
	if len(a.Runs) != 1 || len(a.samples) != 3 {
		t.Error("Merge changed its receiver")
	}
	p := PGResult{Agents: 1, Commits: 10, Elapsed: time.Second, Runs: []float64{10}, samples: ms(1)}.
		Merge(PGResult{Agents: 1, Commits: 30, Elapsed: time.Second, Runs: []float64{30}, samples: ms(3)})
	if p.CommitsPerSec() != 20 || rates(p.Runs) != "10.0 / 30.0" {
		t.Errorf("PG merge = %+v (runs %s)", p, rates(p.Runs))
	}
}
