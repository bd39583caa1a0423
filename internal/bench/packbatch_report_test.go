package bench

import (
	"strings"
	"testing"
	"time"
)

// packReport is sampleReport with the pack-append baselines and a batch
// cell, in round numbers.
func packReport() *Report {
	sec := time.Second
	r := sampleReport()
	r.Pack = []PackResult{
		{Size: 4 * KiB, Agents: 8, InFlight: 1, Records: 2500, Bytes: 2500 * 4 * KiB, Groups: 750, Elapsed: sec, Runs: []float64{2000, 3000}},
		// Measured for the baselines only: no per-file figure beside it.
		{Size: 256 * KiB, Agents: 8, InFlight: 1, Records: 1000, Bytes: 1000 * 256 * KiB, Groups: 250, Elapsed: sec},
		{Size: MiB, Agents: 8, InFlight: 1, Records: 400, Bytes: 400 * MiB, Groups: 100, Elapsed: sec},
		// Batched alike, for the batch cell.
		{Size: 4 * KiB, Agents: 8, InFlight: 256, Records: 51200, Bytes: 51200 * 4 * KiB, Groups: 12800, Elapsed: sec,
			Latency: Latency{N: 200, P50: 20 * time.Millisecond, P99: 40 * time.Millisecond}},
	}
	r.Batch = []BatchCellResult{{
		Size: 4 * KiB, Agents: 8, Frames: 256, Requests: 100, Chunks: 25600, Bytes: 25600 * 4 * KiB, Elapsed: sec,
		Latency: Latency{N: 100, P50: 10 * time.Millisecond, P99: 20 * time.Millisecond},
		Server:  &ProcUsage{PeakRSS: 60 * MiB, HWM: 64 * MiB, CPU: sec},
	}}
	return r
}

func TestMarkdownPackAndBatch(t *testing.T) {
	t.Parallel()
	md := Markdown(packReport())
	for _, want := range []string{
		// PUT cells: 375 chunks/s of 2,500 records/s at 4KiB; files above
		// the pack threshold get no pack ratio.
		"| 4KiB | 8 | 0% | 375 | 1.5 | 38% | n/a | 375 | 75% of PG | 15% | 0.000 |",
		"| 1MiB | 8 | 0% | 170 | 178 | 85% | 8.9% | 170 | 85% of disk | – |",
		// Dedup cells are compared too (hits write nothing).
		"| 4KiB | 8 | 90% | 1000 | 4.1 | 100% | n/a | 1,000 | 200% of PG | 40% |",
		// Batch cell: 25,600 chunks/s is 26× the 1,000 files/s, 1024% of
		// one-at-a-time pack-append, 50% of the batched one, 68× PUT.
		"### Vault ingest, batch endpoint (POST /v1/chunks/batch, fresh chunks)",
		"| 4KiB | 8 | 0% | 256 | 100 | 105 | 25,600 | 26× | 1024% | 50% | 68× | 10.0 | 20.0 | 60.0 MiB | 64.0 MiB | 9.54 | 0.00 |",
		// Baselines side by side: per-file, then pack-append, then the ratio.
		"| size | agents | per-file MB/s | files/s | files/s of each run | p50 ms | p99 ms | pack-append MB/s | records/s | records/s of each run | records per fsync | p50 ms | p99 ms | pack-append vs per-file |",
		"| 4KiB | 8 | 4.1 | 1,000 | n/a | 0.000 | 0.000 | 10.2 | 2,500 | 2,000 / 3,000 | 3.3 | 0.000 | 0.000 | 2.5× |",
		"| 256KiB | 8 | n/a | n/a | n/a | n/a | n/a | 262 | 1,000 | n/a | 4.0 | 0.000 | 0.000 | n/a |",
		"| 1MiB | 8 | 210 | 200 | n/a | 0.000 | 0.000 | 419 | 400 | n/a | 4.0 | 0.000 | 0.000 | 2.0× |",
		// The batched pack-append baseline has a table of its own.
		"| 4KiB | 8 | 256 | 210 | 51,200 | n/a | 4.0 | 20.0 | 40.0 | 51× |",
		// Issue 4's targets.
		"### Targets (issue 4: small chunks in packs)",
		"| 4KiB, 8 agents: chunks/s ≥ 5× durable raw disk (one file per chunk) | 0.38× (375 chunks/s vs 1,000 files/s) | **missed: needs 13×** |",
		"| 4KiB, 8 agents: ≥ 10,000 chunks/s | 375 chunks/s (15% of pack-append) | **missed: needs 27×** |",
		"| 4KiB, 8 agents, batch endpoint: ≥ 30,000 chunks/s | 25,600 chunks/s, 256 per request (50% of pack-append batched alike) | **missed: needs 1.2×** |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q; got:\n%s", want, md)
		}
	}
	// Rows of the baselines table go by size: 256KiB, measured for the
	// baselines only, sits between 4KiB and 1MiB.
	i4, i256, i1 := strings.Index(md, "| 4KiB | 8 | 4.1 |"), strings.Index(md, "| 256KiB | 8 |"), strings.Index(md, "| 1MiB | 8 | 210 |")
	if i4 < 0 || !(i4 < i256 && i256 < i1) {
		t.Errorf("baseline rows out of size order: 4KiB at %d, 256KiB at %d, 1MiB at %d", i4, i256, i1)
	}
	// The batched baseline is not mistaken for the one-at-a-time one.
	if strings.Contains(md, "| 4KiB | 8 | 4.1 | 1,000 | n/a | 0.000 | 0.000 | 210 |") {
		t.Error("the batched pack-append figures landed in the one-at-a-time columns")
	}
}

func TestMarkdownWithoutPackOrBatch(t *testing.T) {
	t.Parallel()
	md := Markdown(sampleReport())
	for _, unwanted := range []string{"batch endpoint", "batched alike |", "Pack-append, batched alike:", "of pack-append)"} {
		if strings.Contains(md, unwanted) {
			t.Errorf("a report without batch cells or pack baselines shows %q", unwanted)
		}
	}
	// The per-file baseline still renders, its pack-append columns n/a.
	if !strings.Contains(md, "| 4KiB | 8 | 4.1 | 1,000 | n/a | 0.000 | 0.000 | n/a | n/a | n/a | n/a | n/a | n/a | n/a |") {
		t.Errorf("per-file baseline row without pack-append figures missing:\n%s", md)
	}
}

func TestPackTargetsSkipUnmeasured(t *testing.T) {
	t.Parallel()
	r := packReport()
	r.Disk, r.Pack = nil, nil
	got := r.PackTargets()
	if len(got) != 2 {
		t.Fatalf("PackTargets without baselines = %+v, want the two absolute targets", got)
	}
	if got[0].Measured != "375 chunks/s" || got[1].Measured != "25,600 chunks/s, 256 per request" {
		t.Errorf("measured without baselines: %q, %q", got[0].Measured, got[1].Measured)
	}
	r.Cells, r.Batch = nil, nil
	if got := r.PackTargets(); len(got) != 0 {
		t.Errorf("PackTargets without cells = %+v, want none", got)
	}
}

func TestPackResultMerge(t *testing.T) {
	t.Parallel()
	a := PackResult{Size: KiB, Agents: 2, InFlight: 1, Records: 100, Bytes: 100 * KiB, Groups: 50, Elapsed: time.Second, Runs: []float64{100}, samples: ms(1, 2)}
	b := PackResult{Size: KiB, Agents: 2, InFlight: 1, Records: 300, Bytes: 300 * KiB, Groups: 100, Elapsed: time.Second, Runs: []float64{300}, samples: ms(3)}
	m := a.Merge(b)
	if m.RecordsPerSec() != 200 || m.BytesPerSec() != 200*1024 || m.RecordsPerGroup() != 400.0/150 || rates(m.Runs) != "100 / 300" {
		t.Errorf("Merge = %+v", m)
	}
	if m.Latency.N != 3 || m.Latency.Max != 3*time.Millisecond || m.InFlight != 1 {
		t.Errorf("merged latency = %+v, in flight %d", m.Latency, m.InFlight)
	}
	if len(a.Runs) != 1 || len(a.samples) != 2 {
		t.Error("Merge changed its receiver")
	}
	if (PackResult{}).RecordsPerGroup() != 0 {
		t.Error("RecordsPerGroup of nothing must be 0")
	}
}

func TestBatchCellRates(t *testing.T) {
	t.Parallel()
	c := BatchCellResult{Chunks: 1000, Bytes: 1000 * 4 * KiB, Elapsed: 2 * time.Second}
	if c.ChunksPerSec() != 500 || c.BytesPerSec() != 500*4096 {
		t.Errorf("rates = %v chunks/s, %v B/s", c.ChunksPerSec(), c.BytesPerSec())
	}
}
