package bench

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Report is everything one run measured.
type Report struct {
	Machine  Machine
	Settings Settings
	Started  time.Time
	Elapsed  time.Duration
	Hash     []HashResult
	Disk     []DiskResult
	Pack     []PackResult
	PG       []PGResult
	Cells    []CellResult
	Batch    []BatchCellResult
	Missing  *MissingResult // nil if the phase did not run
	Notes    []string       // warnings and remarks about this run
}

// Settings records how the run was bounded and what it targeted.
type Settings struct {
	Target   string        // what was measured, e.g. "vault serve started by vault bench"
	Duration time.Duration // time cap of each cell and baseline
	MaxBytes int64         // byte cap of each cell and disk baseline
	// PackThreshold is the largest chunk the vault packs (its default):
	// cells up to it are compared with the pack-append baseline.
	PackThreshold int64
}

// Machine holds the facts that make the figures comparable.
type Machine struct {
	CPU          string
	Cores        int
	MemTotal     int64 // bytes
	Kernel       string
	GoVersion    string
	PostgreSQL   string
	VaultVersion string
	WorkDir      string
	WorkDirFS    string // e.g. "ext4 on /dev/vda, mounted at /"
}

// HashResult is BLAKE3 throughput over buffers of one size.
type HashResult struct {
	Size     int64
	Workers  int     // goroutines of the all-cores figure
	OneCore  float64 // bytes/s
	AllCores float64 // bytes/s
}

// DiskResult is the durable raw-disk baseline at one size and concurrency,
// possibly pooled over several runs (see Merge).
type DiskResult struct {
	Size    int64
	Agents  int
	Files   int64
	Bytes   int64
	Elapsed time.Duration
	Latency Latency   // per file, from create to directory fsync
	Runs    []float64 // files/s of each run pooled here

	samples []time.Duration
}

// Merge pools two runs of the same baseline: counts and time add up, and
// the latencies are summarised over both.
func (d DiskResult) Merge(o DiskResult) DiskResult {
	m := d
	m.Files, m.Bytes, m.Elapsed = d.Files+o.Files, d.Bytes+o.Bytes, d.Elapsed+o.Elapsed
	m.Runs = append(slices.Clone(d.Runs), o.Runs...)
	m.samples = append(slices.Clone(d.samples), o.samples...)
	m.Latency = Summarize(slices.Clone(m.samples))
	return m
}

// FilesPerSec is durable files written per second.
func (d DiskResult) FilesPerSec() float64 { return perSec(float64(d.Files), d.Elapsed) }

// BytesPerSec is durable bytes written per second.
func (d DiskResult) BytesPerSec() float64 { return perSec(float64(d.Bytes), d.Elapsed) }

// PackResult is the pack-append baseline at one size and concurrency:
// records appended to one pack file by one appender, a group of records per
// write and fdatasync, possibly pooled over several runs (see Merge).
type PackResult struct {
	Size     int64
	Agents   int
	InFlight int // records each agent hands over at once: 1 like PUT, more like a batch
	Records  int64
	Bytes    int64
	Groups   int64 // Appends: one write and one fdatasync each
	Elapsed  time.Duration
	Latency  Latency   // per record, from hand-over to durable
	Runs     []float64 // records/s of each run pooled here

	samples []time.Duration
}

// Merge pools two runs of the same baseline.
func (p PackResult) Merge(o PackResult) PackResult {
	m := p
	m.Records, m.Bytes, m.Groups, m.Elapsed = p.Records+o.Records, p.Bytes+o.Bytes, p.Groups+o.Groups, p.Elapsed+o.Elapsed
	m.Runs = append(slices.Clone(p.Runs), o.Runs...)
	m.samples = append(slices.Clone(p.samples), o.samples...)
	m.Latency = Summarize(slices.Clone(m.samples))
	return m
}

// RecordsPerSec is durable records appended per second.
func (p PackResult) RecordsPerSec() float64 { return perSec(float64(p.Records), p.Elapsed) }

// BytesPerSec is durable record bytes appended per second (headers not
// counted).
func (p PackResult) BytesPerSec() float64 { return perSec(float64(p.Bytes), p.Elapsed) }

// RecordsPerGroup is the mean number of records made durable by one
// fdatasync.
func (p PackResult) RecordsPerGroup() float64 {
	if p.Groups <= 0 {
		return 0
	}
	return float64(p.Records) / float64(p.Groups)
}

// PGResult is the PostgreSQL single-row commit baseline at one concurrency.
type PGResult struct {
	Agents  int
	Commits int64
	Elapsed time.Duration
	Latency Latency
	Runs    []float64 // commits/s of each run pooled here

	samples []time.Duration
}

// Merge pools two runs of the same baseline.
func (p PGResult) Merge(o PGResult) PGResult {
	m := p
	m.Commits, m.Elapsed = p.Commits+o.Commits, p.Elapsed+o.Elapsed
	m.Runs = append(slices.Clone(p.Runs), o.Runs...)
	m.samples = append(slices.Clone(p.samples), o.samples...)
	m.Latency = Summarize(slices.Clone(m.samples))
	return m
}

// CommitsPerSec is committed single-row transactions per second.
func (p PGResult) CommitsPerSec() float64 { return perSec(float64(p.Commits), p.Elapsed) }

// ProcUsage is what a process used during a measurement.
type ProcUsage struct {
	PeakRSS int64         // highest VmRSS sampled during the measurement, bytes
	HWM     int64         // VmHWM at the end: the process's lifetime peak, bytes
	CPU     time.Duration // user+system CPU time spent during the measurement
}

// CellResult is one cell of the vault matrix: Agents concurrent agents
// pushing chunks of Size, a fraction Dedup of them already stored.
type CellResult struct {
	Size    int64
	Agents  int
	Dedup   float64
	New     int64 // PUTs of new chunks (201)
	Hits    int64 // PUTs of stored chunks (200)
	Bytes   int64 // bytes of all PUTs
	Elapsed time.Duration

	Latency    Latency // all PUTs
	NewLatency Latency
	HitLatency Latency

	Server    *ProcUsage    // nil when the server was not measured
	ClientCPU time.Duration // CPU time of the bench process itself
}

// BytesPerSec is the ingest rate over all PUTs.
func (c CellResult) BytesPerSec() float64 { return perSec(float64(c.Bytes), c.Elapsed) }

// ChunksPerSec is acknowledged PUTs per second.
func (c CellResult) ChunksPerSec() float64 { return perSec(float64(c.New+c.Hits), c.Elapsed) }

// HitRate estimates the chunks/s the vault would sustain if every PUT were a
// dedup hit: agents work in a closed loop, so by Little's law the rate of a
// class is the concurrency divided by its mean latency.
func (c CellResult) HitRate() float64 {
	if c.HitLatency.N == 0 || c.HitLatency.Mean <= 0 {
		return 0
	}
	return float64(c.Agents) / c.HitLatency.Mean.Seconds()
}

// NewRate is HitRate for the new writes of the cell.
func (c CellResult) NewRate() float64 {
	if c.NewLatency.N == 0 || c.NewLatency.Mean <= 0 {
		return 0
	}
	return float64(c.Agents) / c.NewLatency.Mean.Seconds()
}

// BatchCellResult is one batch-endpoint cell: Agents concurrent agents
// POSTing batches of Frames fresh chunks of Size to /v1/chunks/batch.
type BatchCellResult struct {
	Size     int64
	Agents   int
	Frames   int   // chunks per request
	Requests int64 // batches answered, every chunk created
	Chunks   int64
	Bytes    int64 // chunk bytes (frame headers not counted)
	Elapsed  time.Duration
	Latency  Latency // per request

	Server    *ProcUsage // nil when the server was not measured
	ClientCPU time.Duration
}

// ChunksPerSec is chunks acknowledged per second.
func (b BatchCellResult) ChunksPerSec() float64 { return perSec(float64(b.Chunks), b.Elapsed) }

// BytesPerSec is chunk bytes acknowledged per second.
func (b BatchCellResult) BytesPerSec() float64 { return perSec(float64(b.Bytes), b.Elapsed) }

// MissingResult is the missing-query phase.
type MissingResult struct {
	Hashes   int // per request
	Stored   int // of them, how many were stored
	Requests int
	Total    time.Duration // sum of request latencies
	Latency  Latency
}

// HashesPerSec is hashes answered per second of request time.
func (m MissingResult) HashesPerSec() float64 {
	return perSec(float64(m.Hashes*m.Requests), m.Total)
}

func perSec(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

func (r *Report) disk(size int64, agents int) (DiskResult, bool) {
	i := slices.IndexFunc(r.Disk, func(d DiskResult) bool { return d.Size == size && d.Agents == agents })
	if i < 0 {
		return DiskResult{}, false
	}
	return r.Disk[i], true
}

// pack is the pack-append baseline at one size and concurrency with one
// record in flight per agent.
func (r *Report) pack(size int64, agents int) (PackResult, bool) {
	i := slices.IndexFunc(r.Pack, func(p PackResult) bool { return p.Size == size && p.Agents == agents && p.InFlight <= 1 })
	if i < 0 {
		return PackResult{}, false
	}
	return r.Pack[i], true
}

// packBatched is the pack-append baseline with inFlight records per agent.
func (r *Report) packBatched(size int64, agents, inFlight int) (PackResult, bool) {
	i := slices.IndexFunc(r.Pack, func(p PackResult) bool {
		return p.Size == size && p.Agents == agents && p.InFlight == inFlight
	})
	if i < 0 {
		return PackResult{}, false
	}
	return r.Pack[i], true
}

func (r *Report) batch(size int64, agents int) (BatchCellResult, bool) {
	i := slices.IndexFunc(r.Batch, func(b BatchCellResult) bool { return b.Size == size && b.Agents == agents })
	if i < 0 {
		return BatchCellResult{}, false
	}
	return r.Batch[i], true
}

// packRatio is a small cell's chunks/s as a percentage of the pack-append
// records/s at its size and concurrency; "–" for sizes the vault does not
// pack, "n/a" if the baseline was not measured.
func (r *Report) packRatio(size int64, agents int, chunksPerSec float64) string {
	if size > r.Settings.PackThreshold {
		return "–"
	}
	if p, ok := r.pack(size, agents); ok {
		return Percent(chunksPerSec, p.RecordsPerSec())
	}
	return "n/a"
}

func (r *Report) pg(agents int) (PGResult, bool) {
	i := slices.IndexFunc(r.PG, func(p PGResult) bool { return p.Agents == agents })
	if i < 0 {
		return PGResult{}, false
	}
	return r.PG[i], true
}

func (r *Report) hash(size int64) (HashResult, bool) {
	i := slices.IndexFunc(r.Hash, func(h HashResult) bool { return h.Size == size })
	if i < 0 {
		return HashResult{}, false
	}
	return r.Hash[i], true
}

func (r *Report) cell(size int64, agents int, dedup float64) (CellResult, bool) {
	i := slices.IndexFunc(r.Cells, func(c CellResult) bool {
		return c.Size == size && c.Agents == agents && c.Dedup == dedup
	})
	if i < 0 {
		return CellResult{}, false
	}
	return r.Cells[i], true
}

// itemBound is the per-item limit a cell is bound by: the lower of durable
// raw-disk files/s at its size and concurrency and PostgreSQL commits/s at
// its concurrency. name says which one it is.
func (r *Report) itemBound(size int64, agents int) (rate float64, name string) {
	d, dok := r.disk(size, agents)
	p, pok := r.pg(agents)
	switch {
	case dok && pok && p.CommitsPerSec() < d.FilesPerSec():
		return p.CommitsPerSec(), "PG"
	case dok:
		return d.FilesPerSec(), "disk"
	case pok:
		return p.CommitsPerSec(), "PG"
	}
	return 0, ""
}

// newWriteRate is the new-write chunks/s a cell's hits are compared with:
// the 0% dedup cell of the same size and concurrency, else the cell's own
// new writes (Little's law).
func (r *Report) newWriteRate(c CellResult) float64 {
	if z, ok := r.cell(c.Size, c.Agents, 0); ok {
		return z.ChunksPerSec()
	}
	return c.NewRate()
}

// TargetResult is one of issue 3's targets, checked against a report.
type TargetResult struct {
	Name     string
	Measured string
	Met      bool
	Status   string // "met", or by how much it is missed
}

func target(name string, value, goal float64, measured string) TargetResult {
	t := TargetResult{Name: name, Measured: measured, Met: value >= goal}
	switch {
	case t.Met:
		t.Status = "met"
	case value > 0:
		t.Status = fmt.Sprintf("missed: needs %s", Times(goal, value))
	default:
		t.Status = "missed"
	}
	return t
}

// targetAgents is the concurrency the targets are read at: 8 agents as in
// the issue, else the highest measured.
func (r *Report) targetAgents() int {
	best := 0
	for _, c := range r.Cells {
		if c.Agents == 8 {
			return 8
		}
		best = max(best, c.Agents)
	}
	for _, b := range r.Batch {
		if b.Agents == 8 {
			return 8
		}
		best = max(best, b.Agents)
	}
	return best
}

// PackTargets checks the report against issue 4's targets for small
// chunks (packs, group commit, the batch endpoint). Targets whose cells
// were not measured are left out.
func (r *Report) PackTargets() []TargetResult {
	var out []TargetResult
	n := r.targetAgents()
	const size = 4 * KiB
	if c, ok := r.cell(size, n, 0); ok {
		if d, ok := r.disk(size, n); ok && d.FilesPerSec() > 0 {
			out = append(out, target(
				fmt.Sprintf("4KiB, %d agents: chunks/s ≥ 5× durable raw disk (one file per chunk)", n),
				c.ChunksPerSec()/d.FilesPerSec(), 5,
				fmt.Sprintf("%s (%s chunks/s vs %s files/s)", Times(c.ChunksPerSec(), d.FilesPerSec()), Rate(c.ChunksPerSec()), Rate(d.FilesPerSec()))))
		}
		out = append(out, target(fmt.Sprintf("4KiB, %d agents: ≥ 10,000 chunks/s", n),
			c.ChunksPerSec(), 10_000, Rate(c.ChunksPerSec())+" chunks/s"+r.packNote(size, n, c.ChunksPerSec())))
	}
	if b, ok := r.batch(size, n); ok {
		note := ""
		if p, ok := r.packBatched(size, n, b.Frames); ok && p.RecordsPerSec() > 0 {
			note = " (" + Percent(b.ChunksPerSec(), p.RecordsPerSec()) + " of pack-append batched alike)"
		}
		out = append(out, target(fmt.Sprintf("4KiB, %d agents, batch endpoint: ≥ 30,000 chunks/s", n),
			b.ChunksPerSec(), 30_000, fmt.Sprintf("%s chunks/s, %d per request%s", Rate(b.ChunksPerSec()), b.Frames, note)))
	}
	return out
}

// packNote is " (x% of pack-append)" when that baseline was measured.
func (r *Report) packNote(size int64, agents int, chunksPerSec float64) string {
	if p, ok := r.pack(size, agents); ok && p.RecordsPerSec() > 0 {
		return " (" + Percent(chunksPerSec, p.RecordsPerSec()) + " of pack-append)"
	}
	return ""
}

// Targets checks the report against the ratio targets of issue 3. Targets
// whose cells were not measured are left out.
func (r *Report) Targets() []TargetResult {
	var out []TargetResult
	n := r.targetAgents()
	for _, size := range []int64{MiB, 8 * MiB} {
		c, ok := r.cell(size, n, 0)
		d, dok := r.disk(size, n)
		if !ok || !dok {
			continue
		}
		v := c.BytesPerSec() / d.BytesPerSec()
		out = append(out, target(
			fmt.Sprintf("%s, %d agents: ingest ≥ 80%% of durable raw disk", FormatSize(size), n),
			v, 0.8, fmt.Sprintf("%s (%s of %s MB/s)", Percent(c.BytesPerSec(), d.BytesPerSec()), MBps(c.BytesPerSec()), MBps(d.BytesPerSec()))))
	}
	if c, ok := r.cell(4*KiB, n, 0); ok {
		if bound, name := r.itemBound(4*KiB, n); bound > 0 {
			out = append(out, target(
				fmt.Sprintf("4KiB, %d agents: chunks/s ≥ 100%% of min(raw-disk files/s, PG commits/s)", n),
				c.ChunksPerSec()/bound, 1, fmt.Sprintf("%s (%s of %s/s, %s)", Percent(c.ChunksPerSec(), bound), Rate(c.ChunksPerSec()), Rate(bound), name)))
		}
	}
	for _, c := range r.Cells {
		if c.Agents != n || c.Hits == 0 || c.Dedup != r.maxDedup(c.Size, n) {
			continue
		}
		hit, nw := c.HitRate(), r.newWriteRate(c)
		if nw <= 0 {
			continue
		}
		out = append(out, target(
			fmt.Sprintf("%s, %d agents: dedup hits ≥ 10× new-write chunks/s", FormatSize(c.Size), n),
			hit/nw, 10, fmt.Sprintf("%s (%s vs %s chunks/s)", Times(hit, nw), Rate(hit), Rate(nw))))
	}
	if m := r.Missing; m != nil && m.Requests > 0 {
		out = append(out, target(
			fmt.Sprintf("missing: %s hashes in one request at ≥ 200,000 hashes/s", Rate(float64(m.Hashes))),
			m.HashesPerSec()/200_000, 1, Rate(m.HashesPerSec())+" hashes/s"))
	}
	var peak int64
	found := false
	for _, c := range r.Cells {
		if c.Size == 8*MiB && c.Agents == n && c.Server != nil {
			peak, found = max(peak, c.Server.PeakRSS), true
		}
	}
	if found {
		t := TargetResult{Name: fmt.Sprintf("8MiB, %d agents: server RSS < 256 MiB", n),
			Measured: MiBs(peak) + " peak (sampled)", Met: peak < 256*MiB, Status: "met"}
		if !t.Met {
			t.Status = fmt.Sprintf("missed by %s", MiBs(peak-256*MiB))
		}
		out = append(out, t)
	}
	return out
}

func (r *Report) maxDedup(size int64, agents int) float64 {
	best := 0.0
	for _, c := range r.Cells {
		if c.Size == size && c.Agents == agents {
			best = max(best, c.Dedup)
		}
	}
	return best
}

// Markdown renders the generated part of the benchmarks document: machine
// facts, targets, the vault tables with their ratios, the baselines and how
// to read them.
func Markdown(r *Report) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "## Run of %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("| machine | |\n|---|---|\n")
	cpu := m.CPU
	if cpu == "" {
		cpu = "unknown CPU"
	}
	row(&b, "CPU", fmt.Sprintf("%s, %d cores", cpu, m.Cores))
	row(&b, "memory", fmt.Sprintf("%.1f GiB", float64(m.MemTotal)/float64(GiB)))
	row(&b, "kernel", orNA(m.Kernel))
	row(&b, "Go", orNA(m.GoVersion))
	row(&b, "PostgreSQL", orNA(m.PostgreSQL))
	row(&b, "vault", orNA(m.VaultVersion))
	row(&b, "work dir", fmt.Sprintf("%s (%s)", orNA(m.WorkDirFS), orNA(m.WorkDir)))
	row(&b, "target", orNA(r.Settings.Target))
	row(&b, "budget", fmt.Sprintf("each cell and baseline stops after %s or %s, whichever comes first; whole run %s",
		r.Settings.Duration, FormatSize(r.Settings.MaxBytes), r.Elapsed.Round(time.Second)))

	targetTable(&b, "Targets (issue 3)", r.Targets())
	targetTable(&b, "Targets (issue 4: small chunks in packs)", r.PackTargets())

	if len(r.Cells) > 0 {
		b.WriteString("\n### Vault ingest (PUT over HTTP on loopback)\n\n")
		b.WriteString("| size | agents | dedup | PUTs | MB/s | of raw disk | of BLAKE3 all cores | chunks/s | of per-item bound | of pack-append | p50 ms | p99 ms | server RSS peak | server VmHWM | server CPU s/GB | bench CPU s/GB |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, c := range r.Cells {
			diskRatio, hashRatio, itemRatio := "n/a", "n/a", "n/a"
			if d, ok := r.disk(c.Size, c.Agents); ok {
				diskRatio = Percent(c.BytesPerSec(), d.BytesPerSec())
			}
			if h, ok := r.hash(c.Size); ok {
				hashRatio = Percent(c.BytesPerSec(), h.AllCores)
			}
			if bound, name := r.itemBound(c.Size, c.Agents); bound > 0 {
				itemRatio = Percent(c.ChunksPerSec(), bound) + " of " + name
			}
			rss, hwm, cpu := "n/a", "n/a", "n/a"
			if s := c.Server; s != nil {
				rss, hwm, cpu = MiBs(s.PeakRSS), MiBs(s.HWM), cpuPerGB(s.CPU, c.Bytes)
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				FormatSize(c.Size), c.Agents, Fraction(c.Dedup), c.New+c.Hits, MBps(c.BytesPerSec()), diskRatio, hashRatio,
				Rate(c.ChunksPerSec()), itemRatio, r.packRatio(c.Size, c.Agents, c.ChunksPerSec()),
				Millis(c.Latency.P50), Millis(c.Latency.P99), rss, hwm, cpu, cpuPerGB(c.ClientCPU, c.Bytes))
		}
		hits := false
		for _, c := range r.Cells {
			hits = hits || c.Hits > 0
		}
		if hits {
			b.WriteString("\n### Dedup hits (PUT of a chunk already stored)\n\n")
			b.WriteString("| size | agents | dedup | hit PUTs | hit p50 ms | hit p99 ms | new p50 ms | hit chunks/s (agents ÷ mean latency) | new-write chunks/s (0% dedup cell) | hits vs new |\n")
			b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
			for _, c := range r.Cells {
				if c.Hits == 0 {
					continue
				}
				nw := r.newWriteRate(c)
				fmt.Fprintf(&b, "| %s | %d | %s | %d | %s | %s | %s | %s | %s | %s |\n",
					FormatSize(c.Size), c.Agents, Fraction(c.Dedup), c.Hits, Millis(c.HitLatency.P50), Millis(c.HitLatency.P99),
					Millis(c.NewLatency.P50), Rate(c.HitRate()), Rate(nw), Times(c.HitRate(), nw))
			}
		}
	}

	if len(r.Batch) > 0 {
		b.WriteString("\n### Vault ingest, batch endpoint (POST /v1/chunks/batch, fresh chunks)\n\n")
		b.WriteString("| size | agents | dedup | chunks per request | requests | MB/s | chunks/s | vs raw disk files/s | of pack-append | of pack-append batched alike | vs PUT chunks/s | p50 ms per request | p99 ms per request | server RSS peak | server VmHWM | server CPU s/GB | bench CPU s/GB |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, c := range r.Batch {
			diskRatio, putRatio, batchedRatio := "n/a", "n/a", "n/a"
			if d, ok := r.disk(c.Size, c.Agents); ok {
				diskRatio = Times(c.ChunksPerSec(), d.FilesPerSec())
			}
			if p, ok := r.packBatched(c.Size, c.Agents, c.Frames); ok {
				batchedRatio = Percent(c.ChunksPerSec(), p.RecordsPerSec())
			}
			if p, ok := r.cell(c.Size, c.Agents, 0); ok {
				putRatio = Times(c.ChunksPerSec(), p.ChunksPerSec())
			}
			rss, hwm, cpu := "n/a", "n/a", "n/a"
			if s := c.Server; s != nil {
				rss, hwm, cpu = MiBs(s.PeakRSS), MiBs(s.HWM), cpuPerGB(s.CPU, c.Bytes)
			}
			fmt.Fprintf(&b, "| %s | %d | 0%% | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				FormatSize(c.Size), c.Agents, c.Frames, c.Requests, MBps(c.BytesPerSec()), Rate(c.ChunksPerSec()),
				diskRatio, r.packRatio(c.Size, c.Agents, c.ChunksPerSec()), batchedRatio, putRatio,
				Millis(c.Latency.P50), Millis(c.Latency.P99), rss, hwm, cpu, cpuPerGB(c.ClientCPU, c.Bytes))
		}
	}

	if mr := r.Missing; mr != nil {
		b.WriteString("\n### missing (POST /v1/chunks/missing)\n\n")
		b.WriteString("| hashes per request | of them stored | requests | p50 ms | p99 ms | hashes/s | of 200,000/s target |\n|--:|--:|--:|--:|--:|--:|--:|\n")
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s |\n", Rate(float64(mr.Hashes)), Rate(float64(mr.Stored)), mr.Requests,
			Millis(mr.Latency.P50), Millis(mr.Latency.P99), Rate(mr.HashesPerSec()), Percent(mr.HashesPerSec(), 200_000))
	}

	b.WriteString("\n### Baselines (same run, same machine)\n")
	if len(r.Disk) > 0 || len(r.Pack) > 0 {
		diskTable(&b, r)
	}
	if len(r.PG) > 0 {
		b.WriteString("\nPostgreSQL: one single-row INSERT per transaction (chunk-row shape: 32-byte hash primary key, size, two timestamptz, text), server's default durability, one connection per agent. Run before and after all vault cells, and pooled.\n\n")
		b.WriteString("| agents | commits/s | commits/s of each run | p50 ms | p99 ms |\n|--:|--:|--:|--:|--:|\n")
		for _, p := range r.PG {
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s |\n", p.Agents, Rate(p.CommitsPerSec()), rates(p.Runs), Millis(p.Latency.P50), Millis(p.Latency.P99))
		}
	}
	if len(r.Hash) > 0 {
		workers := r.Hash[0].Workers
		fmt.Fprintf(&b, "\nBLAKE3 (github.com/zeebo/blake3) over one buffer of the chunk size, in memory.\n\n| size | 1 core MB/s | %d cores MB/s |\n|---|--:|--:|\n", workers)
		for _, h := range r.Hash {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", FormatSize(h.Size), MBps(h.OneCore), MBps(h.AllCores))
		}
	}
	b.WriteString(howToRead)
	if len(r.Notes) > 0 {
		b.WriteString("\nNotes from this run:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

const howToRead = `
### How to read this

Absolute numbers mean little on a shared machine; the ratios do. Each vault
cell is measured in the same run as the baselines that bound it, and the
raw-disk baseline is run right before and right after the cells it bounds
(both runs are listed; the ratios use the pooled figure), because the disk's
speed drifts.

- "Of raw disk" is the vault's MB/s over the durable raw-disk MB/s at the same
  chunk size and number of agents: the vault cannot beat writing the same
  bytes with the same fsyncs. In dedup cells most PUTs write nothing, so more
  than 100% is expected there.
- "Of per-item bound" is the vault's chunks/s over the lower of raw-disk
  files/s (same size and agents) and PostgreSQL commits/s (same agents): the
  limit for small chunks when each one costs a file and a commit. Group commit
  is how a vault gets past 100% there.
- "Of pack-append" is the vault's chunks/s over the pack-append baseline's
  records/s at the same size and agents, for chunks up to the vault's pack
  threshold (default 256 KiB; larger chunks are files, shown as –): what the
  vault makes of the disk when each small chunk costs a share of one write and
  one fdatasync rather than a file. It is the ceiling of group commit on this
  disk, before HTTP, hashing and PostgreSQL. Dedup hits write nothing, so
  dedup cells may exceed it.
- Batch cells POST fresh chunks in batches (one request carries the given
  number of chunks, as many as fit the endpoint's 16 MiB body limit); their
  latencies are per request, and "vs raw disk files/s" and "vs PUT chunks/s"
  compare their chunks/s with the per-file baseline and with the PUT cell of
  the same size and agents at 0% dedup. The plain pack-append baseline has one
  record in flight per agent, as PUT does, so batches can beat it; "of
  pack-append batched alike" compares them with the baseline whose agents
  hand over a whole batch of records at a time, their actual ceiling. Batch
  cells run after all PUT cells, because their large request bodies raise the
  server's RSS for minutes afterwards.
- "Records per fsync" in the pack-append baseline is the mean group size: with
  one agent it is 1 (every record waits for its own fdatasync); with N agents
  handing over one record at a time it is about N/2, because the agents
  answered by one group come back while the next is being written and join
  the one after.
- "Of BLAKE3" shows how much of the hashing budget (all cores) is used.
- Dedup hits are compared with new writes of the same size: the hit rate is
  estimated as agents ÷ mean hit latency (the agents work in a closed loop);
  new writes are the chunks/s of the 0% dedup cell.
- MB/s are decimal (10^6 bytes/s) and count every PUT's body, hits included;
  CPU s/GB is CPU seconds per 10^9 bytes PUT. The bench client runs on the
  same cores as the server and PostgreSQL, so its CPU is shown too (chunks are
  generated and hashed before each cell's clock starts).
- Server RSS peak is the highest VmRSS sampled every 100 ms during the cell;
  VmHWM is the server's lifetime peak up to the end of that cell.
- Latencies are per request, end to end, including the 201/200 answer.
`

// rates lists the rates of a baseline's runs: "3,100 / 3,350".
func rates(runs []float64) string {
	if len(runs) == 0 {
		return "n/a"
	}
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = Rate(r)
	}
	return strings.Join(out, " / ")
}

// targetTable renders a table of targets under title, if there are any.
func targetTable(b *strings.Builder, title string, ts []TargetResult) {
	if len(ts) == 0 {
		return
	}
	fmt.Fprintf(b, "\n### %s\n\n| target | measured | status |\n|---|---|---|\n", title)
	for _, t := range ts {
		status := t.Status
		if !t.Met {
			status = "**" + status + "**"
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", t.Name, t.Measured, status)
	}
}

// diskTable renders the two durable-write baselines side by side: a file
// per chunk, and records appended to a pack.
func diskTable(b *strings.Builder, r *Report) {
	b.WriteString("\nDurable raw disk, per file: one file per chunk, with the vault's steps (create temp, write, fsync, close, rename, directory fsync) into a 256-way fan-out made beforehand. ")
	b.WriteString("Pack-append: the same chunks as records appended by one appender to one pack file with the vault's own pack code (internal/store/pack), one write and one fdatasync per group of whatever records are waiting (at most 1,024 or 8 MiB, like the vault's committer), packs sealed at 64 MiB. ")
	b.WriteString("Neither involves HTTP, hashing or PostgreSQL. Where PUT cells of the same size and agents ran, each baseline was run just before and just after them and pooled (pack-append for half the time cap each time); other sizes were run once.\n\n")
	b.WriteString("| size | agents | per-file MB/s | files/s | files/s of each run | p50 ms | p99 ms | pack-append MB/s | records/s | records/s of each run | records per fsync | p50 ms | p99 ms | pack-append vs per-file |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	type key struct {
		size   int64
		agents int
	}
	var keys []key
	for _, d := range r.Disk {
		keys = append(keys, key{d.Size, d.Agents})
	}
	for _, p := range r.Pack {
		if p.InFlight <= 1 && !slices.Contains(keys, key{p.Size, p.Agents}) {
			keys = append(keys, key{p.Size, p.Agents})
		}
	}
	// By size, then in the order measured.
	slices.SortStableFunc(keys, func(a, b key) int { return cmp.Compare(a.size, b.size) })
	na := "n/a | n/a | n/a | n/a | n/a"
	for _, k := range keys {
		diskCols, packCols, vs := na, na+" | n/a", "n/a"
		d, dok := r.disk(k.size, k.agents)
		if dok {
			diskCols = fmt.Sprintf("%s | %s | %s | %s | %s", MBps(d.BytesPerSec()), Rate(d.FilesPerSec()), rates(d.Runs),
				Millis(d.Latency.P50), Millis(d.Latency.P99))
		}
		if p, ok := r.pack(k.size, k.agents); ok {
			packCols = fmt.Sprintf("%s | %s | %s | %s | %s | %s", MBps(p.BytesPerSec()), Rate(p.RecordsPerSec()), rates(p.Runs),
				Rate(p.RecordsPerGroup()), Millis(p.Latency.P50), Millis(p.Latency.P99))
			if dok {
				vs = Times(p.RecordsPerSec(), d.FilesPerSec())
			}
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s |\n", FormatSize(k.size), k.agents, diskCols, packCols, vs)
	}

	var batched []PackResult
	for _, p := range r.Pack {
		if p.InFlight > 1 {
			batched = append(batched, p)
		}
	}
	if len(batched) == 0 {
		return
	}
	b.WriteString("\nPack-append, batched alike: the same, but each agent hands over as many records at once as a batch request of the batch cells carries, and waits for all of them, as a batch request does. Run just before and just after the batch cell of the same size and agents (half the time cap each), and pooled.\n\n")
	b.WriteString("| size | agents | records per hand-over | MB/s | records/s | records/s of each run | records per fsync | p50 ms per hand-over | p99 ms per hand-over | vs per-file files/s |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range batched {
		vs := "n/a"
		if d, ok := r.disk(p.Size, p.Agents); ok {
			vs = Times(p.RecordsPerSec(), d.FilesPerSec())
		}
		fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", FormatSize(p.Size), p.Agents, p.InFlight,
			MBps(p.BytesPerSec()), Rate(p.RecordsPerSec()), rates(p.Runs), Rate(p.RecordsPerGroup()),
			Millis(p.Latency.P50), Millis(p.Latency.P99), vs)
	}
}

func row(b *strings.Builder, k, v string) { fmt.Fprintf(b, "| %s | %s |\n", k, v) }

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

func cpuPerGB(cpu time.Duration, bytes int64) string {
	if bytes <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", cpu.Seconds()/(float64(bytes)/1e9))
}
