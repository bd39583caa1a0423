package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wormvault/wormvault/internal/api"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// Config is one benchmark run: the matrix of cells, their bounds, and what
// to measure.
type Config struct {
	Sizes  []int64
	Agents []int
	Dedup  []float64
	// BatchSizes are the chunk sizes of the batch-endpoint cells (fresh
	// chunks only, at every number of agents); empty: none.
	BatchSizes  []int64
	BatchFrames int // chunks per batch request; zero: 256
	// BaselineSizes are sizes measured by the raw-disk and pack-append
	// baselines only, without vault cells (e.g. 256KiB, to show where one
	// file per chunk stops costing more than packing).
	BaselineSizes []int64
	Duration      time.Duration // time cap of each cell and baseline
	MaxBytes      int64         // byte cap of each cell and disk baseline
	// HashDuration is how long each BLAKE3 measurement runs; zero: a
	// quarter of Duration, between 200 ms and 1 s.
	HashDuration time.Duration
	// WorkDir is a directory on the disk under test; the raw-disk baseline
	// writes there (and removes what it wrote).
	WorkDir string
	Target  Target
	// DatabaseURL is a database for the PostgreSQL baseline's scratch
	// table, on the vault's database server; empty skips that baseline.
	DatabaseURL    string
	MissingHashes  int // hashes per missing request; zero: 10,000
	MissingRepeats int // zero: 5
	Profile        *Profile
	Progress       io.Writer // progress lines; nil: none
}

// Profile asks for a CPU profile of the server while it runs one cell. The
// cell is run once more for it, after the matrix, so that profiling does not
// disturb the reported figures.
type Profile struct {
	URL     string   // base URL of the server's pprof listener
	Cell    CellSpec // Size, Agents and Dedup; the bounds are set by Run
	Seconds int      // zero: 5
	Path    string   // where to write the profile
}

func (c *Config) setDefaults() {
	if c.HashDuration == 0 {
		c.HashDuration = min(time.Second, max(200*time.Millisecond, c.Duration/4))
	}
	if c.MissingHashes == 0 {
		c.MissingHashes = 10_000
	}
	if c.MissingRepeats == 0 {
		c.MissingRepeats = 5
	}
	if c.BatchFrames == 0 {
		c.BatchFrames = 256
	}
	if c.Profile != nil && c.Profile.Seconds == 0 {
		c.Profile.Seconds = 5
	}
}

// Validate refuses a configuration that cannot run.
func (c *Config) Validate() error {
	switch {
	case len(c.Sizes) == 0 || len(c.Agents) == 0 || len(c.Dedup) == 0:
		return errors.New("bench: sizes, agents and dedup fractions must not be empty")
	case c.Duration <= 0:
		return errors.New("bench: the time cap must be positive")
	case c.MaxBytes <= 0:
		return errors.New("bench: the byte cap must be positive")
	case c.Target.URL == "":
		return errors.New("bench: no target URL")
	case c.WorkDir == "":
		return errors.New("bench: no work directory")
	}
	for _, s := range slices.Concat(c.Sizes, c.BatchSizes, c.BaselineSizes) {
		if s < 64 {
			return fmt.Errorf("bench: chunk size %d is below 64 bytes", s)
		}
	}
	for _, s := range c.BatchSizes {
		if s > api.MaxBatchChunk {
			return fmt.Errorf("bench: batch chunk size %s is over the batch endpoint's limit of %s", FormatSize(s), FormatSize(api.MaxBatchChunk))
		}
	}
	if c.BatchFrames < 0 {
		return errors.New("bench: the number of chunks per batch must be positive")
	}
	return nil
}

// allSizes is every size measured, in ascending order: the vault cells',
// the batch cells' and the baseline-only ones.
func (c *Config) allSizes() []int64 {
	all := slices.Concat(c.Sizes, c.BatchSizes, c.BaselineSizes)
	slices.Sort(all)
	return slices.Compact(all)
}

// ParseCell parses SIZE/AGENTS/DEDUP, e.g. "1MiB/8/0" or "4KiB/8/90%".
func ParseCell(s string) (CellSpec, error) {
	f := strings.Split(s, "/")
	if len(f) != 3 {
		return CellSpec{}, fmt.Errorf("cell %q: want SIZE/AGENTS/DEDUP, e.g. 1MiB/8/0", s)
	}
	size, err := ParseSize(f[0])
	if err != nil {
		return CellSpec{}, fmt.Errorf("cell %q: %w", s, err)
	}
	agents, err := ParseCounts(f[1])
	if err != nil {
		return CellSpec{}, fmt.Errorf("cell %q: %w", s, err)
	}
	dedup, err := ParseFractions(f[2])
	if err != nil {
		return CellSpec{}, fmt.Errorf("cell %q: %w", s, err)
	}
	return CellSpec{Size: size, Agents: agents[0], Dedup: dedup[0]}, nil
}

type progress struct {
	w     io.Writer
	step  int
	total int
}

func (p *progress) printf(format string, args ...any) {
	p.step++
	if p.w != nil {
		fmt.Fprintf(p.w, "bench [%2d/%d] %s\n", p.step, p.total, fmt.Sprintf(format, args...))
	}
}

func (p *progress) note(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, "bench: %s\n", fmt.Sprintf(format, args...))
	}
}

// Run measures the baselines and then, size by size and concurrency by
// concurrency, the raw-disk and pack-append baselines followed by the vault
// cells they bound and by the baselines again, so that each ratio compares
// figures taken close together in time. Then come the batch cells, each
// between two runs of the pack-append baseline batched alike, the missing
// phase and, if asked, the profile.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Report{
		Machine:  ReadMachine(cfg.WorkDir),
		Started:  time.Now(),
		Settings: Settings{Duration: cfg.Duration, MaxBytes: cfg.MaxBytes, PackThreshold: store.DefaultPackThreshold},
	}
	if strings.HasPrefix(r.Machine.WorkDirFS, "tmpfs") {
		r.Notes = append(r.Notes, "The work directory is on tmpfs, where fsync costs nothing: these figures say nothing about a disk. Use --work-dir on a real disk.")
	}
	p := &progress{w: cfg.Progress}
	p.total = 2*len(cfg.Sizes) + 1
	for _, size := range cfg.allSizes() {
		steps := 0
		if slices.Contains(cfg.BatchSizes, size) {
			steps += 3 // the cell, and the batched pack-append baseline before and after it
		}
		// Each baseline once, or before and after the PUT cells.
		base := 1
		if slices.Contains(cfg.Sizes, size) {
			steps += len(cfg.Dedup)
			base = 2
		}
		if size <= pack.MaxRecord {
			base *= 2
		}
		p.total += len(cfg.Agents) * (steps + base)
	}
	if cfg.DatabaseURL != "" {
		p.total += 2 * len(cfg.Agents)
		v, err := ServerVersion(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		r.Machine.PostgreSQL = v
	} else {
		r.Notes = append(r.Notes, "No database URL: the PostgreSQL baseline was skipped, and the per-item bound is the raw disk alone.")
	}
	if cfg.Target.PID == 0 {
		r.Notes = append(r.Notes, "The server's process was not known: its RSS and CPU were not measured.")
	}
	if cfg.Profile != nil {
		p.total++
	}

	workers := runtime.NumCPU()
	for _, size := range cfg.Sizes {
		one, err := HashBaseline(ctx, size, 1, cfg.HashDuration)
		if err != nil {
			return nil, err
		}
		p.printf("BLAKE3 %s, 1 core: %s MB/s", FormatSize(size), MBps(one))
		all, err := HashBaseline(ctx, size, workers, cfg.HashDuration)
		if err != nil {
			return nil, err
		}
		p.printf("BLAKE3 %s, %d cores: %s MB/s", FormatSize(size), workers, MBps(all))
		r.Hash = append(r.Hash, HashResult{Size: size, Workers: workers, OneCore: one, AllCores: all})
	}
	if err := pgBaselines(ctx, cfg, r, p); err != nil {
		return nil, err
	}

	client := NewClient(cfg.Target, slices.Max(cfg.Agents))
	defer client.Close()
	var stored []chunk.Hash
	for _, size := range cfg.allSizes() {
		puts := slices.Contains(cfg.Sizes, size)
		for _, agents := range cfg.Agents {
			// Where there are cells, both baselines run before and after
			// them (see below); pack-append for half the time cap each
			// time, to keep the run short.
			packTime := cfg.Duration
			if puts {
				packTime = cfg.Duration / 2
			}
			d, pk, err := diskBaselines(ctx, cfg, size, agents, packTime, p, "")
			if err != nil {
				return nil, err
			}
			if puts {
				for _, dedup := range cfg.Dedup {
					spec := CellSpec{Size: size, Agents: agents, Dedup: dedup, Duration: cfg.Duration, MaxBytes: cfg.MaxBytes}
					c, hashes, err := RunCell(ctx, client, spec)
					if err != nil {
						return nil, err
					}
					p.printf("vault %s × %d agents, %s dedup: %s MB/s (%s of raw disk), %s chunks/s%s, p50 %s ms, p99 %s ms%s",
						FormatSize(size), agents, Fraction(dedup), MBps(c.BytesPerSec()), Percent(c.BytesPerSec(), d.BytesPerSec()),
						Rate(c.ChunksPerSec()), packShare(size, c.ChunksPerSec(), pk), Millis(c.Latency.P50), Millis(c.Latency.P99), rssNote(c.Server))
					r.Cells = append(r.Cells, c)
					if room := cfg.MissingHashes - len(stored); room > 0 {
						stored = append(stored, hashes[:min(room, len(hashes))]...)
					}
				}
			}
			if puts {
				// Once more after the cells: the disk's speed drifts on
				// shared machines, and pooling a run on each side of the
				// cells compares them with the disk as it was meanwhile.
				again, pagain, err := diskBaselines(ctx, cfg, size, agents, packTime, p, ", again")
				if err != nil {
					return nil, err
				}
				d = d.Merge(again)
				if pk != nil {
					*pk = pk.Merge(*pagain)
				}
			}
			r.Disk = append(r.Disk, d)
			if pk != nil {
				r.Pack = append(r.Pack, *pk)
			}
		}
	}
	// The batch cells come after every PUT cell: their request bodies (up
	// to 16 MiB each) raise the server's RSS, which the Go runtime returns
	// to the system only over minutes and would otherwise be charged to
	// the PUT cells after them. They are bracketed by the pack-append
	// baseline batched alike, their ceiling, and compared with the other
	// baselines of their size as measured above.
	for _, size := range cfg.allSizes() {
		if !slices.Contains(cfg.BatchSizes, size) {
			continue
		}
		for _, agents := range cfg.Agents {
			if err := batchCell(ctx, cfg, client, r, size, agents, p); err != nil {
				return nil, err
			}
		}
	}
	if err := pgBaselines(ctx, cfg, r, p); err != nil {
		return nil, err
	}

	m, err := RunMissing(ctx, client, stored, cfg.MissingHashes, cfg.MissingRepeats)
	if err != nil {
		return nil, err
	}
	p.printf("missing, %s hashes (%s stored) × %d: %s hashes/s", Rate(float64(m.Hashes)), Rate(float64(m.Stored)), m.Requests, Rate(m.HashesPerSec()))
	r.Missing = &m

	if cfg.Profile != nil {
		if err := runProfile(ctx, client, cfg, r); err != nil {
			return nil, err
		}
		p.printf("CPU profile of %s saved to %s", cfg.Profile.Cell, cfg.Profile.Path)
		r.Notes = append(r.Notes, fmt.Sprintf("A %d s CPU profile of the server under cell %s (run again after the matrix) is in %s: `go tool pprof -top %s`.",
			cfg.Profile.Seconds, cfg.Profile.Cell, cfg.Profile.Path, cfg.Profile.Path))
	}
	r.Elapsed = time.Since(r.Started)
	return r, nil
}

// pgBaselines measures PostgreSQL commits at every concurrency, pooling
// with the figures already in r: Run calls it before and after the cells.
func pgBaselines(ctx context.Context, cfg Config, r *Report, p *progress) error {
	if cfg.DatabaseURL == "" {
		return nil
	}
	for _, agents := range cfg.Agents {
		flushDisks()
		res, err := PGBaseline(ctx, cfg.DatabaseURL, agents, cfg.Duration)
		if err != nil {
			return err
		}
		p.printf("PostgreSQL single-row commits, %d agents: %s commits/s, p50 %s ms", agents, Rate(res.CommitsPerSec()), Millis(res.Latency.P50))
		if i := slices.IndexFunc(r.PG, func(x PGResult) bool { return x.Agents == agents }); i >= 0 {
			r.PG[i] = r.PG[i].Merge(res)
		} else {
			r.PG = append(r.PG, res)
		}
	}
	return nil
}

// batchCell runs the batch cell of one size and concurrency between two
// runs of the pack-append baseline batched alike, and adds them to r.
func batchCell(ctx context.Context, cfg Config, client *Client, r *Report, size int64, agents int, p *progress) error {
	frames := BatchFrames(size, cfg.BatchFrames)
	before, err := batchedPackBaseline(ctx, cfg, size, agents, frames, p, "")
	if err != nil {
		return err
	}
	spec := BatchSpec{Size: size, Agents: agents, Frames: frames, Duration: cfg.Duration, MaxBytes: cfg.MaxBytes}
	c, err := RunBatchCell(ctx, client, spec)
	if err != nil {
		return err
	}
	vsDisk := "n/a"
	if d, ok := r.disk(size, agents); ok {
		vsDisk = Times(c.ChunksPerSec(), d.FilesPerSec())
	}
	var pk *PackResult
	if x, ok := r.pack(size, agents); ok {
		pk = &x
	}
	p.printf("vault batch %s × %d agents, %d per request: %s MB/s, %s chunks/s (%s raw-disk files/s%s, %s of pack-append batched alike), p50 %s ms per request%s",
		FormatSize(size), agents, c.Frames, MBps(c.BytesPerSec()), Rate(c.ChunksPerSec()), vsDisk,
		packShare(size, c.ChunksPerSec(), pk), Percent(c.ChunksPerSec(), before.RecordsPerSec()), Millis(c.Latency.P50), rssNote(c.Server))
	after, err := batchedPackBaseline(ctx, cfg, size, agents, frames, p, ", again")
	if err != nil {
		return err
	}
	r.Pack = append(r.Pack, before.Merge(after))
	r.Batch = append(r.Batch, c)
	return nil
}

// diskBaselines runs the raw-disk baseline and, for sizes a pack can hold,
// the pack-append baseline (for packTime) at one size and concurrency.
func diskBaselines(ctx context.Context, cfg Config, size int64, agents int, packTime time.Duration, p *progress, again string) (DiskResult, *PackResult, error) {
	d, err := DiskBaseline(ctx, cfg.WorkDir, size, agents, cfg.Duration, cfg.MaxBytes)
	if err != nil {
		return DiskResult{}, nil, err
	}
	p.printf("raw disk %s × %d agents%s: %s MB/s, %s files/s", FormatSize(size), agents, again, MBps(d.BytesPerSec()), Rate(d.FilesPerSec()))
	if size > pack.MaxRecord {
		return d, nil, nil
	}
	pk, err := PackBaseline(ctx, cfg.WorkDir, size, agents, 1, packTime, cfg.MaxBytes)
	if err != nil {
		return DiskResult{}, nil, err
	}
	p.printf("pack-append %s × %d agents%s: %s MB/s, %s records/s (%s per fsync; %s per-file files/s)", FormatSize(size), agents, again,
		MBps(pk.BytesPerSec()), Rate(pk.RecordsPerSec()), Rate(pk.RecordsPerGroup()), Times(pk.RecordsPerSec(), d.FilesPerSec()))
	return d, &pk, nil
}

// batchedPackBaseline runs the pack-append baseline with frames records in
// flight per agent, for half the time cap.
func batchedPackBaseline(ctx context.Context, cfg Config, size int64, agents, frames int, p *progress, again string) (PackResult, error) {
	pk, err := PackBaseline(ctx, cfg.WorkDir, size, agents, frames, cfg.Duration/2, cfg.MaxBytes)
	if err != nil {
		return PackResult{}, err
	}
	p.printf("pack-append %s × %d agents, %d records per hand-over%s: %s MB/s, %s records/s (%s per fsync)", FormatSize(size), agents, frames, again,
		MBps(pk.BytesPerSec()), Rate(pk.RecordsPerSec()), Rate(pk.RecordsPerGroup()))
	return pk, nil
}

// packShare is ", x% of pack-append" for a packed size, when measured.
func packShare(size int64, chunksPerSec float64, pk *PackResult) string {
	if pk == nil || size > store.DefaultPackThreshold {
		return ""
	}
	return ", " + Percent(chunksPerSec, pk.RecordsPerSec()) + " of pack-append"
}

func rssNote(u *ProcUsage) string {
	if u == nil {
		return ""
	}
	return ", server RSS peak " + MiBs(u.PeakRSS)
}

// runProfile runs the profile's cell once more, long enough to cover the
// profile, and saves the server's CPU profile taken meanwhile.
func runProfile(ctx context.Context, client *Client, cfg Config, r *Report) error {
	pr := cfg.Profile
	spec := pr.Cell
	spec.Duration = time.Duration(pr.Seconds)*time.Second + 1500*time.Millisecond
	// The byte cap must not end the cell before the profile does, but it
	// also sizes the chunks prepared beforehand: allow twice what the
	// matrix measured for this cell over the profile's span.
	rate := float64(200 * MiB)
	if c, ok := r.cell(spec.Size, spec.Agents, spec.Dedup); ok && c.BytesPerSec() > 0 {
		rate = c.BytesPerSec()
	}
	spec.MaxBytes = max(64*MiB, int64(2*rate*spec.Duration.Seconds()))

	errc := make(chan error, 1)
	started := func() {
		go func() { errc <- fetchProfile(ctx, pr.URL, pr.Seconds, pr.Path) }()
	}
	if _, _, err := runCell(ctx, client, spec, started); err != nil {
		return fmt.Errorf("bench: profile run: %w", err)
	}
	return <-errc
}

func fetchProfile(ctx context.Context, base string, seconds int, path string) error {
	u := strings.TrimRight(base, "/") + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("bench: profile: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("bench: profile: status %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("bench: profile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: profile: %w", err)
	}
	return nil
}
