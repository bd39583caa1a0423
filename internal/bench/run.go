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

	"github.com/wormvault/wormvault/internal/chunk"
)

// Config is one benchmark run: the matrix of cells, their bounds, and what
// to measure.
type Config struct {
	Sizes    []int64
	Agents   []int
	Dedup    []float64
	Duration time.Duration // time cap of each cell and baseline
	MaxBytes int64         // byte cap of each cell and disk baseline
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
	for _, s := range c.Sizes {
		if s < 64 {
			return fmt.Errorf("bench: chunk size %d is below 64 bytes", s)
		}
	}
	return nil
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
// concurrency, the raw-disk baseline followed by the vault cells it bounds,
// so that each ratio compares figures taken close together in time. Then it
// runs the missing phase and, if asked, the profile.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Report{
		Machine:  ReadMachine(cfg.WorkDir),
		Started:  time.Now(),
		Settings: Settings{Duration: cfg.Duration, MaxBytes: cfg.MaxBytes},
	}
	if strings.HasPrefix(r.Machine.WorkDirFS, "tmpfs") {
		r.Notes = append(r.Notes, "The work directory is on tmpfs, where fsync costs nothing: these figures say nothing about a disk. Use --work-dir on a real disk.")
	}
	p := &progress{w: cfg.Progress}
	p.total = 2*len(cfg.Sizes) + len(cfg.Sizes)*len(cfg.Agents)*(2+len(cfg.Dedup)) + 1
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
	for _, size := range cfg.Sizes {
		for _, agents := range cfg.Agents {
			d, err := DiskBaseline(ctx, cfg.WorkDir, size, agents, cfg.Duration, cfg.MaxBytes)
			if err != nil {
				return nil, err
			}
			p.printf("raw disk %s × %d agents: %s MB/s, %s files/s", FormatSize(size), agents, MBps(d.BytesPerSec()), Rate(d.FilesPerSec()))
			for _, dedup := range cfg.Dedup {
				spec := CellSpec{Size: size, Agents: agents, Dedup: dedup, Duration: cfg.Duration, MaxBytes: cfg.MaxBytes}
				c, hashes, err := RunCell(ctx, client, spec)
				if err != nil {
					return nil, err
				}
				p.printf("vault %s × %d agents, %s dedup: %s MB/s (%s of raw disk), %s chunks/s, p50 %s ms, p99 %s ms%s",
					FormatSize(size), agents, Fraction(dedup), MBps(c.BytesPerSec()), Percent(c.BytesPerSec(), d.BytesPerSec()),
					Rate(c.ChunksPerSec()), Millis(c.Latency.P50), Millis(c.Latency.P99), rssNote(c.Server))
				r.Cells = append(r.Cells, c)
				if room := cfg.MissingHashes - len(stored); room > 0 {
					stored = append(stored, hashes[:min(room, len(hashes))]...)
				}
			}
			// Once more after the cells: the disk's speed drifts on shared
			// machines, and pooling a run on each side of the cells
			// compares them with the disk as it was meanwhile.
			again, err := DiskBaseline(ctx, cfg.WorkDir, size, agents, cfg.Duration, cfg.MaxBytes)
			if err != nil {
				return nil, err
			}
			d = d.Merge(again)
			p.printf("raw disk %s × %d agents, again: %s files/s; pooled %s MB/s, %s files/s", FormatSize(size), agents,
				Rate(again.FilesPerSec()), MBps(d.BytesPerSec()), Rate(d.FilesPerSec()))
			r.Disk = append(r.Disk, d)
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
