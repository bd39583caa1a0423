package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/restic/chunker"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/client"
	"github.com/wormvault/wormvault/internal/manifest"
)

// Push defaults.
const (
	// DefaultWorkers is the number of parallel uploads.
	DefaultWorkers = 4
	// DefaultSmallChunk: chunks under this size (small files, the tails
	// of larger ones, tree metadata) go through batch uploads, many per
	// request; larger ones are PUT one by one.
	DefaultSmallChunk = 256 << 10
	// DefaultGroupBytes and DefaultGroupChunks bound a group: the chunks
	// read and held in memory while the vault is asked which of them it
	// needs (at most 10,000 hashes per question, the vault's limit).
	DefaultGroupBytes  = 8 << 20
	DefaultGroupChunks = 10_000
	// DefaultMemory bounds the chunk content a push holds at once: read
	// and waiting for the missing check, or being uploaded.
	DefaultMemory = 32 << 20
	// DefaultBatchBytes and DefaultBatchChunks bound one batch upload.
	DefaultBatchBytes  = 4 << 20
	DefaultBatchChunks = 2_000
)

// PushOptions configures a push. Source, Name, TakenAt and RetainUntil are
// required; the rest have defaults.
type PushOptions struct {
	// Source, Name, TakenAt, RetainUntil and Tags describe the snapshot
	// committed at the end.
	Source      string
	Name        string
	TakenAt     time.Time
	RetainUntil time.Time
	Tags        []string

	Workers int
	// Memory bounds the chunk content held at once (at least twice
	// MaxChunkSize).
	Memory      int
	SmallChunk  int
	GroupBytes  int
	GroupChunks int
	BatchBytes  int
	BatchChunks int
	// Retry is applied to every request; transient failures (vault
	// restarting, connection reset, 503) are retried, others stop the push.
	Retry client.Backoff
	// Warn, if set, receives one line per skipped file.
	Warn func(msg string)
	// Progress, if set, is updated as the push runs.
	Progress *Progress

	// openFile opens a file to push; tests replace it to make files
	// unreadable even to root.
	openFile func(name string) (*os.File, error)
}

func (o *PushOptions) defaults() error {
	if o.Source == "" || o.Name == "" || o.TakenAt.IsZero() || o.RetainUntil.IsZero() {
		return errors.New("agent: push needs a source, a snapshot name, a time taken and a retention")
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Memory <= 0 {
		o.Memory = DefaultMemory
	}
	o.Memory = max(o.Memory, 2*MaxChunkSize)
	if o.SmallChunk <= 0 {
		o.SmallChunk = DefaultSmallChunk
	}
	o.SmallChunk = min(o.SmallChunk, client.MaxBatchChunk+1)
	if o.GroupBytes <= 0 {
		o.GroupBytes = DefaultGroupBytes
	}
	o.GroupBytes = min(o.GroupBytes, o.Memory/2)
	if o.GroupChunks <= 0 {
		o.GroupChunks = DefaultGroupChunks
	}
	o.GroupChunks = min(o.GroupChunks, DefaultGroupChunks)
	if o.BatchBytes <= 0 {
		o.BatchBytes = DefaultBatchBytes
	}
	o.BatchBytes = min(o.BatchBytes, client.MaxBatchBytes)
	if o.BatchChunks <= 0 {
		o.BatchChunks = DefaultBatchChunks
	}
	o.BatchChunks = min(o.BatchChunks, client.MaxBatchChunks)
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	if o.Warn == nil {
		o.Warn = func(string) {}
	}
	if o.openFile == nil {
		o.openFile = openNoFollow
	}
	return nil
}

// PushResult is a finished push.
type PushResult struct {
	// Snapshot is the vault's answer to the commit.
	Snapshot client.Committed
	// Root is the manifest root.
	Root chunk.Hash
	Counts
	Duration time.Duration
}

// Push backs up the files, directories and symbolic links at paths and
// commits a snapshot. Each path is stored under its base name (pushing
// /srv/www stores www/...); two paths with the same base name are refused.
// Symbolic links are stored as links, never followed, also when given as
// a path. Special files (devices, sockets, named pipes) and files or
// directories that cannot be read are reported through Warn and skipped;
// the push still succeeds, with Warnings counting them.
//
// Only chunks the vault does not have are uploaded, so running the same
// push again after an interruption sends only what is still missing.
func Push(ctx context.Context, c *client.Client, paths []string, o PushOptions) (PushResult, error) {
	if err := o.defaults(); err != nil {
		return PushResult{}, err
	}
	if len(paths) == 0 {
		return PushResult{}, errors.New("agent: nothing to push")
	}
	type input struct{ path, base string }
	var inputs []input
	bases := map[string]string{}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return PushResult{}, fmt.Errorf("agent: %s: %w", p, err)
		}
		base := filepath.Base(abs)
		if base == string(filepath.Separator) {
			return PushResult{}, fmt.Errorf("agent: %s: push the directories under / rather than / itself", p)
		}
		if other, dup := bases[base]; dup {
			return PushResult{}, fmt.Errorf("agent: %s and %s would both be stored as %q; push them separately", other, p, base)
		}
		bases[base] = p
		if _, err := os.Lstat(p); err != nil {
			return PushResult{}, fmt.Errorf("agent: %w", err)
		}
		inputs = append(inputs, input{p, base})
	}
	p := newPusher(c, o)
	return p.run(ctx, func(ctx context.Context) error {
		for _, in := range inputs {
			if err := p.walk(ctx, in.path, in.base); err != nil {
				return err
			}
		}
		return nil
	})
}

// PushStream backs up everything read from r as one file named name (mode
// 0600, modified at TakenAt) and commits a snapshot: for a database dump
// on standard input. A read error fails the push.
func PushStream(ctx context.Context, c *client.Client, r io.Reader, name string, o PushOptions) (PushResult, error) {
	if err := o.defaults(); err != nil {
		return PushResult{}, err
	}
	if err := CheckPath(name); err != nil || strings.Contains(name, "/") {
		return PushResult{}, fmt.Errorf("agent: stream name %q: want a plain file name, without slashes", name)
	}
	p := newPusher(c, o)
	return p.run(ctx, func(ctx context.Context) error {
		size, hashes, err := p.chunkFile(ctx, r, name)
		if re := (*readError)(nil); errors.As(err, &re) {
			return fmt.Errorf("agent: read %s after %d bytes: %w", name, size, re.err)
		}
		if err != nil {
			return err
		}
		return p.addEntry(ctx, Entry{Path: name, Type: TypeFile, Mode: 0o600, MTime: o.TakenAt, Size: size, Chunks: hashes})
	})
}

// pending is a chunk read and waiting to be checked and perhaps uploaded.
type pending struct {
	hash chunk.Hash
	data []byte
	// what names the chunk in messages: a file's path, "tree metadata".
	what string
}

// task is one upload: a single chunk PUT, or a batch of small ones.
type task struct {
	items []pending
	batch bool
}

// pusher runs one push. The producer (the walk, chunking and hashing, the
// tree and manifest builders) is one goroutine and owns the fields above
// the channels; a checker asks the vault which chunks of each group it
// needs, and Workers goroutines upload those.
//
// Memory is bounded: the content of the chunks read and not yet found in
// the vault or uploaded is at most Memory bytes (a weighted semaphore;
// the producer waits for uploads to finish), plus one chunk buffer of
// MaxChunkSize, plus up to about 100 bytes per distinct chunk for the set
// of chunks already seen (the manifest builder keeps one node per level).
type pusher struct {
	c    *client.Client
	o    PushOptions
	prog *Progress

	seen     map[chunk.Hash]struct{}
	cur      []pending
	curBytes int
	mb       manifestBuilder
	tw       treeWriter
	tree     []chunk.Hash
	ch       *chunker.Chunker
	buf      []byte
	entries  int64
	files    int64
	bytes    int64

	mem    *semaphore.Weighted
	groups chan []pending
	tasks  chan task
}

func newPusher(c *client.Client, o PushOptions) *pusher {
	p := &pusher{c: c, o: o, prog: o.Progress, seen: map[chunk.Hash]struct{}{}, mem: semaphore.NewWeighted(int64(o.Memory))}
	p.mb.emit = func(ctx context.Context, h chunk.Hash, data []byte) error {
		return p.addChunk(ctx, h, data, "manifest", false)
	}
	p.tw.emit = func(ctx context.Context, data []byte) error {
		h := chunk.Sum(data)
		p.tree = append(p.tree, h)
		return p.addChunk(ctx, h, data, "tree metadata", true)
	}
	return p
}

func (p *pusher) run(ctx context.Context, produce func(ctx context.Context) error) (PushResult, error) {
	start := time.Now()
	p.groups = make(chan []pending, 1)
	p.tasks = make(chan task, p.o.Workers)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.check(gctx) })
	for range p.o.Workers {
		g.Go(func() error { return p.upload(gctx) })
	}
	var root chunk.Hash
	g.Go(func() error {
		defer close(p.groups)
		if err := produce(gctx); err != nil {
			return err
		}
		var err error
		root, err = p.finish(gctx)
		return err
	})
	err := g.Wait()
	res := PushResult{Root: root, Counts: p.prog.Counts()}
	if err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("agent: push interrupted (run it again to resume: what was uploaded is not sent again): %w", ctx.Err())
		}
		return res, err
	}

	snap := client.NewSnapshot{Source: p.o.Source, Name: p.o.Name, TakenAt: p.o.TakenAt, RetainUntil: p.o.RetainUntil,
		Tags: p.o.Tags, ManifestRoot: root}
	attempts := 0
	err = p.o.Retry.Do(ctx, func(ctx context.Context) error {
		attempts++
		var err error
		res.Snapshot, err = p.c.CommitSnapshot(ctx, snap)
		return err
	})
	res.Counts, res.Duration = p.prog.Counts(), time.Since(start)
	switch {
	case err == nil:
		return res, nil
	case client.IsCode(err, "conflict") && attempts > 1:
		return res, fmt.Errorf("agent: commit snapshot %q of source %q: an earlier attempt may have committed it before the connection failed (check with 'vault snapshots list --source %s'): %w",
			p.o.Name, p.o.Source, p.o.Source, err)
	case client.IsCode(err, "conflict"):
		return res, fmt.Errorf("agent: commit snapshot: source %q already has a snapshot named %q (names are unique per source): %w", p.o.Source, p.o.Name, err)
	case client.IsCode(err, "missing_chunks"):
		return res, fmt.Errorf("agent: commit snapshot: the vault lacks chunks this push found or stored there (deleted meanwhile?); run the push again: %w", err)
	}
	return res, fmt.Errorf("agent: commit snapshot: %w", err)
}

// addChunk queues a chunk for the missing check unless this push already
// has it; ref adds it to the manifest tree. data may be reused by the
// caller afterwards.
func (p *pusher) addChunk(ctx context.Context, h chunk.Hash, data []byte, what string, ref bool) error {
	if _, dup := p.seen[h]; dup {
		p.prog.RepeatedBytes.Add(int64(len(data)))
		return nil
	}
	p.seen[h] = struct{}{}
	p.prog.Chunks.Add(1)
	if !p.mem.TryAcquire(p.weight(data)) {
		// Hand what this group holds to the checker first: waiting while
		// holding it could wait forever.
		if err := p.flushGroup(ctx); err != nil {
			return err
		}
		if err := p.mem.Acquire(ctx, p.weight(data)); err != nil {
			return err
		}
	}
	p.cur = append(p.cur, pending{hash: h, data: bytes.Clone(data), what: what})
	p.curBytes += len(data)
	if ref {
		if err := p.mb.add(ctx, h); err != nil {
			return err
		}
	}
	if p.curBytes >= p.o.GroupBytes || len(p.cur) >= p.o.GroupChunks {
		return p.flushGroup(ctx)
	}
	return nil
}

// weight is what a chunk counts against Memory: its size, capped so that
// no chunk can wait forever.
func (p *pusher) weight(data []byte) int64 { return int64(min(len(data), p.o.Memory)) }

func (p *pusher) flushGroup(ctx context.Context) error {
	if len(p.cur) == 0 {
		return nil
	}
	select {
	case p.groups <- p.cur:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.cur, p.curBytes = nil, 0
	return nil
}

// finish writes the last tree chunk, the index and the manifest tree, and
// returns the root manifest's hash.
func (p *pusher) finish(ctx context.Context) (chunk.Hash, error) {
	if p.entries == 0 {
		return chunk.Hash{}, errors.New("agent: nothing to back up: every path was skipped")
	}
	if err := p.tw.flush(ctx); err != nil {
		return chunk.Hash{}, err
	}
	ix, err := json.Marshal(Index{Format: IndexFormat, Version: IndexVersion, Tree: p.tree,
		Entries: p.entries, Files: p.files, Bytes: p.bytes})
	if err != nil {
		return chunk.Hash{}, err
	}
	ixHash := chunk.Sum(ix)
	if err := p.addChunk(ctx, ixHash, ix, "tree index", false); err != nil {
		return chunk.Hash{}, err
	}
	top, err := p.mb.finish(ctx)
	if err != nil {
		return chunk.Hash{}, err
	}
	root, err := manifest.Manifest{Chunks: []chunk.Hash{ixHash}, Children: top}.Marshal()
	if err != nil {
		return chunk.Hash{}, err
	}
	rootHash := chunk.Sum(root)
	if err := p.addChunk(ctx, rootHash, root, "root manifest", false); err != nil {
		return chunk.Hash{}, err
	}
	return rootHash, p.flushGroup(ctx)
}

func (p *pusher) addEntry(ctx context.Context, e Entry) error {
	if err := CheckPath(e.Path); err != nil {
		return err
	}
	switch e.Type {
	case TypeDir:
		p.prog.Dirs.Add(1)
	case TypeFile:
		p.prog.Files.Add(1)
		p.files++
		p.bytes += e.Size
	case TypeSymlink:
		p.prog.Symlinks.Add(1)
	}
	p.entries++
	return p.tw.add(ctx, e)
}

func (p *pusher) warnf(format string, args ...any) {
	p.prog.Warnings.Add(1)
	p.o.Warn(fmt.Sprintf(format, args...))
}

// readError is a failure to read the content being pushed, as opposed to
// a failure of the push itself.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// chunkFile cuts r into chunks, hashes and queues them, and returns the
// bytes read and the chunk list. Read failures are *readError.
func (p *pusher) chunkFile(ctx context.Context, r io.Reader, what string) (size int64, hashes []chunk.Hash, err error) {
	if p.ch == nil {
		p.ch = newChunker()
		p.buf = make([]byte, 0, MaxChunkSize)
	}
	p.ch.ResetWithBoundaries(r, Polynomial, MinChunkSize, MaxChunkSize)
	p.ch.SetAverageBits(AverageBits)
	for {
		if err := ctx.Err(); err != nil {
			return size, hashes, err
		}
		c, err := p.ch.Next(p.buf)
		if errors.Is(err, io.EOF) {
			return size, hashes, nil
		}
		if err != nil {
			return size, hashes, &readError{err}
		}
		h := chunk.Sum(c.Data)
		hashes = append(hashes, h)
		size += int64(len(c.Data))
		p.prog.Bytes.Add(int64(len(c.Data)))
		if err := p.addChunk(ctx, h, c.Data, what, true); err != nil {
			return size, hashes, err
		}
	}
}

// walk pushes the tree at root, stored under base.
func (p *pusher) walk(ctx context.Context, root, base string) error {
	return filepath.WalkDir(root, func(name string, d fs.DirEntry, walkErr error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := base
		if name != root {
			r, err := filepath.Rel(root, name)
			if err != nil {
				return err
			}
			rel = base + "/" + filepath.ToSlash(r)
		}
		if walkErr != nil {
			if d == nil {
				return fmt.Errorf("agent: %w", walkErr)
			}
			// The directory itself is recorded already; its listing failed.
			p.warnf("%s: cannot read directory, its contents are skipped: %v", name, walkErr)
			return nil
		}
		switch t := d.Type(); {
		case t.IsDir():
			info, err := d.Info()
			if err != nil {
				p.warnf("%s: skipped: %v", name, err)
				return filepath.SkipDir
			}
			return p.addEntry(ctx, Entry{Path: rel, Type: TypeDir, Mode: unixMode(info.Mode()), MTime: info.ModTime()})
		case t.IsRegular():
			return p.pushFile(ctx, name, rel)
		case t&fs.ModeSymlink != 0:
			info, err := d.Info()
			if err != nil {
				p.warnf("%s: skipped: %v", name, err)
				return nil
			}
			target, err := os.Readlink(name)
			if err != nil {
				p.warnf("%s: cannot read symbolic link, skipped: %v", name, err)
				return nil
			}
			return p.addEntry(ctx, Entry{Path: rel, Type: TypeSymlink, MTime: info.ModTime(), Target: target})
		default:
			p.warnf("%s: %s skipped: only regular files, directories and symbolic links are backed up", name, kind(t))
			return nil
		}
	})
}

func kind(t fs.FileMode) string {
	switch {
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeCharDevice != 0:
		return "character device"
	case t&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// pushFile pushes one regular file. It is opened without following a
// symbolic link and without blocking (a file swapped for a named pipe
// after the walk saw it must not hang the push), and checked to still be
// a regular file.
func (p *pusher) pushFile(ctx context.Context, name, rel string) error {
	f, err := p.o.openFile(name)
	if err != nil {
		p.warnf("%s: cannot open, skipped: %v", name, err)
		return nil
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		p.warnf("%s: skipped: %v", name, err)
		return nil
	}
	if !info.Mode().IsRegular() {
		p.warnf("%s: no longer a regular file, skipped", name)
		return nil
	}
	size, hashes, err := p.chunkFile(ctx, f, rel)
	if re := (*readError)(nil); errors.As(err, &re) {
		p.warnf("%s: read failed after %d bytes, skipped: %v", name, size, re.err)
		return nil
	}
	if err != nil {
		return err
	}
	// Size is what was read: a file that grows or shrinks while it is read
	// is stored as read.
	return p.addEntry(ctx, Entry{Path: rel, Type: TypeFile, Mode: unixMode(info.Mode()), MTime: info.ModTime(), Size: size, Chunks: hashes})
}

func openNoFollow(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

// check asks the vault which chunks of each group it needs and hands
// those to the uploaders: small ones in batches, large ones one by one.
func (p *pusher) check(ctx context.Context) error {
	defer close(p.tasks)
	send := func(t task) error {
		select {
		case p.tasks <- t:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		var items []pending
		var ok bool
		select {
		case items, ok = <-p.groups:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return nil
		}
		hashes := make([]chunk.Hash, len(items))
		for i, it := range items {
			hashes[i] = it.hash
		}
		var missing []chunk.Hash
		err := p.o.Retry.Do(ctx, func(ctx context.Context) error {
			var err error
			missing, err = p.c.MissingChunks(ctx, hashes)
			return err
		})
		if err != nil {
			return fmt.Errorf("agent: ask the vault which of %d chunks it needs (first of %s): %w", len(hashes), items[0].what, err)
		}
		need := make(map[chunk.Hash]bool, len(missing))
		for _, h := range missing {
			need[h] = true
		}
		var batch []pending
		batchBytes := 0
		for _, it := range items {
			if !need[it.hash] {
				p.prog.KnownChunks.Add(1)
				p.prog.KnownBytes.Add(int64(len(it.data)))
				p.mem.Release(p.weight(it.data))
				continue
			}
			if len(it.data) >= p.o.SmallChunk {
				if err := send(task{items: []pending{it}}); err != nil {
					return err
				}
				continue
			}
			size := client.BatchFrameOverhead + len(it.data)
			if len(batch) > 0 && (len(batch) >= p.o.BatchChunks || batchBytes+size > p.o.BatchBytes) {
				if err := send(task{items: batch, batch: true}); err != nil {
					return err
				}
				batch, batchBytes = nil, 0
			}
			batch = append(batch, it)
			batchBytes += size
		}
		if len(batch) > 0 {
			if err := send(task{items: batch, batch: true}); err != nil {
				return err
			}
		}
	}
}

// upload runs uploads until the tasks run out.
func (p *pusher) upload(ctx context.Context) error {
	for {
		var t task
		var ok bool
		select {
		case t, ok = <-p.tasks:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return nil
		}
		var err error
		if t.batch {
			err = p.putBatch(ctx, t.items)
		} else {
			err = p.put(ctx, t.items[0])
		}
		if err != nil {
			return err
		}
	}
}

func (p *pusher) put(ctx context.Context, it pending) error {
	var created bool
	err := p.o.Retry.Do(ctx, func(ctx context.Context) error {
		sc, err := p.c.PutChunk(ctx, it.hash, bytes.NewReader(it.data), time.Time{})
		created = sc.Created
		return err
	})
	if err != nil {
		return fmt.Errorf("agent: upload chunk %s of %s (%d bytes): %w", it.hash, it.what, len(it.data), err)
	}
	p.uploaded(it, created)
	return nil
}

func (p *pusher) putBatch(ctx context.Context, items []pending) error {
	req := make([]client.BatchItem, len(items))
	for i, it := range items {
		req[i] = client.BatchItem{Hash: it.hash, Data: it.data}
	}
	var results []client.BatchResult
	err := p.o.Retry.Do(ctx, func(ctx context.Context) error {
		var err error
		results, err = p.c.PutBatch(ctx, req, time.Time{})
		return err
	})
	if err != nil {
		return fmt.Errorf("agent: upload a batch of %d chunks (first %s of %s): %w", len(items), items[0].hash, items[0].what, err)
	}
	for i, r := range results {
		switch {
		case r.Stored():
			p.uploaded(items[i], r.Status == "created")
		case r.Code == "unavailable":
			// Refused for now (the index database was briefly away): retry
			// this one on its own, with backoff.
			if err := p.put(ctx, items[i]); err != nil {
				return err
			}
		default:
			return fmt.Errorf("agent: the vault refused chunk %s of %s (%d bytes): %s: %s", r.Hash, items[i].what, len(items[i].data), r.Code, r.Message)
		}
	}
	return nil
}

func (p *pusher) uploaded(it pending, created bool) {
	p.mem.Release(p.weight(it.data))
	p.prog.UploadedChunks.Add(1)
	p.prog.UploadedBytes.Add(int64(len(it.data)))
	if created {
		p.prog.NewChunks.Add(1)
		p.prog.NewBytes.Add(int64(len(it.data)))
	}
}

// Size returns the number of regular files under paths and their total
// size, for a progress bar's total. Errors are ignored: the push itself
// reports what it cannot read.
func Size(ctx context.Context, paths []string) (files, bytes int64) {
	for _, root := range paths {
		filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if info, err := d.Info(); err == nil {
				files++
				bytes += info.Size()
			}
			return nil
		})
	}
	return files, bytes
}
