package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/wormvault/wormvault/internal/agent"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/config"
)

const pushUsage = `usage: vault push [flags] PATH...
       vault push --stdin --name FILE [flags]

Backs up files, directories and symbolic links (each PATH under its base
name), or standard input as one file, and commits a snapshot. Only chunks
the vault lacks are uploaded: running the same push again after an
interruption sends only what is still missing. Special files and files that
cannot be read are reported on stderr and skipped; the push still succeeds.

Needs an agent token: --token-file, or VAULT_TOKEN (or VAULT_TOKEN_FILE).
The vault is --url or VAULT_URL.
`

// vaultName is the vault's spelling of sources, snapshot names and tags
// (store.namePattern), checked here too so that a bad name is refused
// before anything is uploaded rather than at the commit.
var vaultName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}$`)

// defaultRetention keeps a snapshot just over the vault's default minimum
// retention (30 days), which every snapshot must reach.
const defaultRetention = "31d"

// agentFlags are the connection flags of push and restore.
type agentFlags struct {
	url       string
	tokenFile string
	workers   int
	progress  time.Duration
}

func addAgentFlags(fs *flag.FlagSet, getenv func(string) string, role string) *agentFlags {
	f := &agentFlags{}
	fs.StringVar(&f.url, "url", getenv("VAULT_URL"), "vault URL, e.g. https://vault.example:8443 (VAULT_URL)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the "+role+" token (default: VAULT_TOKEN, or the file named by VAULT_TOKEN_FILE)")
	fs.IntVar(&f.workers, "workers", agent.DefaultWorkers, "parallel transfers")
	fs.DurationVar(&f.progress, "progress-interval", 10*time.Second, "when stderr is not a terminal, print a progress line this often (0: never)")
	return f
}

// client returns an API client. The token comes from a file or the
// environment, never from a flag other users could read in the process
// list.
func (f *agentFlags) client(getenv func(string) string, role string) (*client.Client, error) {
	if f.url == "" {
		return nil, errors.New("the vault URL is required: set VAULT_URL or --url")
	}
	if f.workers < 1 || f.workers > 64 {
		return nil, errors.New("--workers must be between 1 and 64")
	}
	tok := strings.TrimSpace(getenv("VAULT_TOKEN"))
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return nil, fmt.Errorf("a token is required: --token-file, or VAULT_TOKEN (or VAULT_TOKEN_FILE), holding a %s token from 'vault token issue --role %s'", role, role)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * f.workers
	tr.ResponseHeaderTimeout = 5 * time.Minute
	return client.New(f.url, tok, &http.Client{Transport: tr})
}

// agentErr explains the refusals a push or restore stops on.
func agentErr(cmd, role string, err error) error {
	switch {
	case client.IsCode(err, "unauthenticated"):
		return fmt.Errorf("%s: %w (is the token a valid, unexpired %s token for this vault?)", cmd, err, role)
	case client.IsCode(err, "forbidden"):
		article := "a"
		if strings.HasPrefix(role, "a") {
			article = "an"
		}
		return fmt.Errorf("%s: %w (this needs %s %s token)", cmd, err, article, role)
	case client.IsCode(err, "too_large"):
		return fmt.Errorf("%s: %w (the vault's --max-chunk-size is below the agent's largest chunk, %s)", cmd, err, humanBytes(agent.MaxChunkSize))
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

func runPush(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("push", stderr)
	af := addAgentFlags(fs, getenv, "agent")
	source := fs.String("source", "", "what is backed up, a host or job name (default: this host's name)")
	snapName := fs.String("snapshot-name", "", "snapshot name, unique within the source (default: the UTC time, e.g. 2026-11-25T02:00:00.000Z)")
	retainUntil := fs.String("retain-until", "", "keep the snapshot until this date (YYYY-MM-DD or RFC 3339)")
	retain := fs.String("retain", "", "keep the snapshot this long from now, e.g. 90d or 2160h (default "+defaultRetention+")")
	var tags []string
	fs.Func("tag", "tag the snapshot, e.g. kind=daily (repeatable)", func(v string) error {
		tags = append(tags, v)
		return nil
	})
	useStdin := fs.Bool("stdin", false, "back up standard input as one file, named by --name")
	name := fs.String("name", "", "with --stdin: the file's name in the snapshot")
	jsonOut := fs.Bool("json", false, "print the summary as JSON")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *useStdin && len(paths) > 0:
		return errors.New("push: --stdin takes no PATH")
	case *useStdin && *name == "":
		return errors.New("push: --stdin needs --name FILE, the file's name in the snapshot")
	case !*useStdin && *name != "":
		return errors.New("push: --name is for --stdin")
	case !*useStdin && len(paths) == 0:
		fs.Usage()
		return errors.New("push: nothing to push: give PATHs, or --stdin --name FILE")
	case *retain != "" && *retainUntil != "":
		return errors.New("push: give --retain or --retain-until, not both")
	}

	now := time.Now().UTC()
	o := agent.PushOptions{TakenAt: now, Source: *source, Name: *snapName, Tags: tags, Workers: af.workers}
	if o.Source == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("push: no --source given and no host name: %w", err)
		}
		o.Source = host
	}
	if o.Name == "" {
		o.Name = now.Format("2006-01-02T15:04:05.000Z")
	}
	for _, v := range append([]string{o.Source, o.Name}, tags...) {
		if !vaultName.MatchString(v) {
			return fmt.Errorf("push: %q: sources, snapshot names and tags are 1 to 128 letters, digits and . _ : @ + = / -, starting with a letter or digit", v)
		}
	}
	if *retainUntil != "" {
		if o.RetainUntil, err = parseDate("retain-until", *retainUntil); err != nil {
			return fmt.Errorf("push: %w", err)
		}
	} else {
		text := *retain
		if text == "" {
			text = defaultRetention
		}
		d, err := config.ParseDuration(text)
		if err != nil || d <= 0 {
			return fmt.Errorf("push: --retain %q: want a duration such as 90d or 2160h", text)
		}
		o.RetainUntil = now.Add(d)
	}
	if !o.RetainUntil.After(now) {
		return fmt.Errorf("push: --retain-until %s is not in the future", o.RetainUntil.Format(time.RFC3339))
	}
	c, err := af.client(getenv, "agent")
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}

	o.Progress = &agent.Progress{}
	var total int64 = -1
	if !*useStdin && isTerminal(stderr) {
		_, total = agent.Size(ctx, paths)
	}
	rep := startReporter(stderr, "push", o.Progress, total, af.progress)
	o.Warn = func(msg string) { rep.println("vault push: warning: " + msg) }
	o.Retry.OnRetry = func(err error, attempt int, wait time.Duration) {
		rep.println(fmt.Sprintf("vault push: retrying in %s (attempt %d): %v", wait.Round(time.Millisecond), attempt, err))
	}
	var res agent.PushResult
	if *useStdin {
		res, err = agent.PushStream(ctx, c, stdin, *name, o)
	} else {
		res, err = agent.Push(ctx, c, paths, o)
	}
	rep.finish()
	if err != nil {
		return agentErr("push", "agent", err)
	}
	return printPushSummary(stdout, res, *jsonOut)
}

// mbPerSec is decimal megabytes per second.
func mbPerSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}

// pushSummary is the JSON summary of a push.
type pushSummary struct {
	Snapshot       client.Committed `json:"snapshot"`
	Files          int64            `json:"files"`
	Dirs           int64            `json:"dirs"`
	Symlinks       int64            `json:"symlinks"`
	Bytes          int64            `json:"bytes"`
	Chunks         int64            `json:"chunks"`
	KnownChunks    int64            `json:"known_chunks"`
	KnownBytes     int64            `json:"known_bytes"`
	RepeatedBytes  int64            `json:"repeated_bytes"`
	UploadedChunks int64            `json:"uploaded_chunks"`
	UploadedBytes  int64            `json:"uploaded_bytes"`
	NewChunks      int64            `json:"new_chunks"`
	NewBytes       int64            `json:"new_bytes"`
	Dedup          float64          `json:"dedup"`
	Warnings       int64            `json:"warnings"`
	Seconds        float64          `json:"seconds"`
	MBPerSec       float64          `json:"mb_per_s"`
	// PeakRSS is the process's peak resident memory (Linux; 0 elsewhere).
	PeakRSS int64 `json:"peak_rss_bytes"`
}

// peakRSS returns the process's peak resident set size (VmHWM), or 0 where
// /proc does not tell.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

func printPushSummary(w io.Writer, res agent.PushResult, asJSON bool) error {
	c := res.Counts
	if asJSON {
		return writeJSONValue(w, pushSummary{
			Snapshot: res.Snapshot, Files: c.Files, Dirs: c.Dirs, Symlinks: c.Symlinks, Bytes: c.Bytes,
			Chunks: c.Chunks, KnownChunks: c.KnownChunks, KnownBytes: c.KnownBytes, RepeatedBytes: c.RepeatedBytes,
			UploadedChunks: c.UploadedChunks, UploadedBytes: c.UploadedBytes, NewChunks: c.NewChunks, NewBytes: c.NewBytes,
			Dedup: c.DedupShare(), Warnings: c.Warnings, Seconds: res.Duration.Seconds(), MBPerSec: mbPerSec(c.Bytes, res.Duration),
			PeakRSS: peakRSS(),
		})
	}
	s := res.Snapshot
	tw := newTable(w)
	fmt.Fprintf(tw, "snapshot:\t%d (source %s, name %s), retained until %s\n", s.ID, s.Source, s.Name, fmtTime(s.RetainUntil))
	fmt.Fprintf(tw, "files:\t%d, %s, %s; %s (%s)\n", c.Files, plural(c.Dirs, "directory"), plural(c.Symlinks, "symbolic link"), humanBytes(c.Bytes), plural(c.Bytes, "byte"))
	fmt.Fprintf(tw, "uploaded:\t%s in %s, %s new to the vault; %.1f%% deduplicated\n",
		humanBytes(c.UploadedBytes), plural(c.UploadedChunks, "chunk"), humanBytes(c.NewBytes), 100*c.DedupShare())
	fmt.Fprintf(tw, "chunks:\t%d distinct, %d already in the vault\n", c.Chunks, c.KnownChunks)
	fmt.Fprintf(tw, "time:\t%s, %.1f MB/s\n", res.Duration.Round(time.Millisecond), mbPerSec(c.Bytes, res.Duration))
	if rss := peakRSS(); rss > 0 {
		fmt.Fprintf(tw, "memory:\t%s peak\n", humanBytes(rss))
	}
	if c.Warnings > 0 {
		fmt.Fprintf(tw, "warnings:\t%d (skipped, listed above)\n", c.Warnings)
	}
	return tw.Flush()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// reporter shows progress on stderr: a progress bar on a terminal, else a
// plain line every interval.
type reporter struct {
	mu    sync.Mutex
	w     io.Writer
	bar   *progressbar.ProgressBar
	verb  string
	prog  *agent.Progress
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

// startReporter starts reporting; total is the bar's length in bytes
// (negative: unknown).
func startReporter(w io.Writer, verb string, prog *agent.Progress, total int64, interval time.Duration) *reporter {
	r := &reporter{w: w, verb: verb, prog: prog, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if isTerminal(w) {
		r.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true), progressbar.OptionSetWidth(25), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetDescription(verb), progressbar.OptionClearOnFinish(), progressbar.OptionSetPredictTime(total > 0),
			progressbar.OptionShowDescriptionAtLineEnd())
		interval = 200 * time.Millisecond
	}
	if interval <= 0 {
		close(r.done)
		return r
	}
	go func() {
		defer close(r.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
				r.update()
			}
		}
	}()
	return r
}

// line describes the progress; the bar shows bytes and speed itself.
func (r *reporter) line() string {
	c := r.prog.Counts()
	speed := ""
	if r.bar == nil {
		speed = fmt.Sprintf(", %.1f MB/s", mbPerSec(c.Bytes, time.Since(r.start)))
	}
	if r.verb == "restore" {
		return fmt.Sprintf("%s, %s written%s", plural(c.Files, "file"), humanBytes(c.Bytes), speed)
	}
	return fmt.Sprintf("%s, %s read, %s uploaded (%s new), %.1f%% deduplicated%s",
		plural(c.Files, "file"), humanBytes(c.Bytes), humanBytes(c.UploadedBytes), humanBytes(c.NewBytes), 100*c.DedupShare(), speed)
}

func (r *reporter) update() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bar == nil {
		fmt.Fprintf(r.w, "vault %s: %s\n", r.verb, r.line())
		return
	}
	r.bar.Describe(r.line())
	r.bar.Set64(r.prog.Bytes.Load())
}

// println prints a message without garbling the bar.
func (r *reporter) println(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bar != nil {
		r.bar.Clear()
	}
	fmt.Fprintln(r.w, msg)
}

// finish stops reporting and removes the bar.
func (r *reporter) finish() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
	if r.bar != nil {
		r.mu.Lock()
		r.bar.Finish()
		r.mu.Unlock()
	}
}
