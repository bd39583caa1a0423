package audit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/chunk"
)

// ErrFailed is returned by Verify when it found anything wrong; the
// report lists what.
var ErrFailed = errors.New("audit: verification failed")

// ErrChunkDamaged: the vault has the chunk indexed but its stored copy is
// damaged (it awaits a re-upload). Source and ContentSource methods wrap
// it; Verify reports it as a finding.
var ErrChunkDamaged = errors.New("audit: the vault holds the chunk damaged")

// ErrChunkAbsent: the vault does not have the chunk.
var ErrChunkAbsent = errors.New("audit: the vault does not have the chunk")

// Source is the vault as the verifier sees it.
type Source interface {
	// Checkpoint returns the latest signed checkpoint note.
	Checkpoint(ctx context.Context) ([]byte, error)
	// Entries returns entries with leaf indexes in [from, to), in order;
	// it may return fewer (a page), never more.
	Entries(ctx context.Context, from, to int64) ([]RawEntry, error)
	// ConsistencyProof proves that the tree of size from is a prefix of
	// the tree of size to.
	ConsistencyProof(ctx context.Context, from, to int64) (tlog.TreeProof, error)
	// ChunkExists reports whether the vault still stores h; an error
	// wrapping ErrChunkDamaged if it holds h damaged.
	ChunkExists(ctx context.Context, h chunk.Hash) (bool, error)
}

// ContentSource downloads chunk content, for the content sample.
type ContentSource interface {
	// VerifyContent downloads h whole and re-hashes it. It returns nil if
	// the bytes hash to h, an error wrapping ErrChunkAbsent if the vault
	// does not have h, and any other error if the vault did not serve
	// bytes that hash to h (ErrChunkDamaged if it says so itself).
	VerifyContent(ctx context.Context, h chunk.Hash) error
}

// Options configure a verification.
type Options struct {
	Verifier note.Verifier // the pinned checkpoint key; its name is the origin
	Kept     *Checkpoint   // the checkpoint verified last time, if any
	// CheckChunks is how many live chunks to look up in the vault: 0
	// none, a negative number all of them, else a random sample.
	CheckChunks int
	// Content downloads and re-hashes SampleContent live chunks chosen at
	// random (negative: all of them): existence is metadata, only content
	// proves the vault still holds the data. Nil: no content sample.
	Content       ContentSource
	SampleContent int
	// Progress, if set, is called after each page of entries.
	Progress func(done, total int64)
}

// Report is what Verify found.
type Report struct {
	Checkpoint    Checkpoint `json:"-"`
	Note          []byte     `json:"-"`
	Size          int64      `json:"size"`
	Root          string     `json:"root"`
	KeptSize      int64      `json:"kept_size"`
	Entries       int64      `json:"entries"`
	LiveChunks    int        `json:"live_chunks"`
	ChunksChecked int        `json:"chunks_checked"`
	// ContentChecked counts the chunks downloaded and re-hashed.
	ContentChecked int       `json:"content_checked"`
	Findings       []Finding `json:"findings"`
}

// Verify fetches the vault's checkpoint, checks its signature and origin,
// checks that it extends the kept checkpoint (a consistency proof, and
// independently the recomputed root at the kept size), downloads every
// entry, recomputes the root from the entries, replays the policy, and
// looks up live chunks. Any failure is a finding and makes the error
// ErrFailed; the report's Checkpoint is the one to keep only then.
func Verify(ctx context.Context, src Source, o Options) (Report, error) {
	var rep Report
	fail := func(seq int64, rule, format string, args ...any) {
		rep.Findings = append(rep.Findings, Finding{Seq: seq, Rule: rule, Message: fmt.Sprintf(format, args...)})
	}
	done := func() (Report, error) {
		if len(rep.Findings) > 0 {
			return rep, fmt.Errorf("%w: %d findings", ErrFailed, len(rep.Findings))
		}
		return rep, nil
	}
	msg, err := src.Checkpoint(ctx)
	if err != nil {
		return rep, fmt.Errorf("audit: fetch checkpoint: %w", err)
	}
	cp, err := OpenCheckpoint(msg, o.Verifier)
	if err != nil {
		fail(0, RuleCheckpoint, "%v", err)
		return done()
	}
	rep.Checkpoint, rep.Note, rep.Size, rep.Root = cp, msg, cp.Size, cp.Root.String()
	if k := o.Kept; k != nil {
		rep.KeptSize = k.Size
		switch {
		case cp.Size < k.Size:
			fail(0, RuleConsistency, "the vault's checkpoint has %d entries, fewer than the %d of the checkpoint kept from the last run: the log was truncated or rolled back", cp.Size, k.Size)
			return done()
		case cp.Size == k.Size && cp.Root != k.Root:
			fail(0, RuleConsistency, "the vault signed a different root (%s) for the same size %d as the kept checkpoint (%s): the log was forked", cp.Root, cp.Size, k.Root)
			return done()
		case cp.Size > k.Size:
			proof, err := src.ConsistencyProof(ctx, k.Size, cp.Size)
			if err != nil {
				// Fail closed: a vault whose log was cut below its own
				// checkpoint cannot prove it, and says so this way.
				return rep, fmt.Errorf("audit: the vault cannot prove that its checkpoint of size %d extends the kept checkpoint of size %d "+
					"(if this persists, entries were removed from its log): fetch consistency proof: %w", cp.Size, k.Size, err)
			}
			if err := tlog.CheckTree(proof, cp.Size, cp.Root, k.Size, k.Root); err != nil {
				fail(0, RuleConsistency, "the checkpoint of size %d does not extend the kept checkpoint of size %d (%v): history before it was rewritten", cp.Size, k.Size, err)
				return done()
			}
		}
	}

	var tree Tree
	replay := NewReplay()
	for tree.Size() < cp.Size {
		from := tree.Size()
		page, err := src.Entries(ctx, from, cp.Size)
		if err != nil {
			return rep, fmt.Errorf("audit: fetch entries from %d: %w", from, err)
		}
		if len(page) == 0 {
			fail(from+1, RuleEntries, "the vault serves no entry at leaf %d of %d: entries were removed", from, cp.Size)
			return done()
		}
		for _, re := range page {
			i := tree.Size()
			if re.Index != i {
				fail(i+1, RuleEntries, "the vault serves leaf %d where leaf %d belongs: an entry was removed or inserted", re.Index, i)
				return done()
			}
			tree.Append(tlog.RecordHash([]byte(re.Payload)))
			if o.Kept != nil && tree.Size() == o.Kept.Size && tree.Root() != o.Kept.Root {
				fail(0, RuleConsistency, "the first %d entries no longer hash to the kept checkpoint's root: history was rewritten", o.Kept.Size)
			}
			e, err := ParseEntry(i, []byte(re.Payload))
			if err != nil {
				fail(i+1, RuleEntries, "%v", err)
				continue
			}
			replay.Apply(e)
		}
		if o.Progress != nil {
			o.Progress(tree.Size(), cp.Size)
		}
	}
	rep.Entries = tree.Size()
	if root := tree.Root(); root != cp.Root {
		fail(0, RuleRoot, "the %d entries hash to %s, not to the signed root %s: an entry was edited, removed or inserted", cp.Size, root, cp.Root)
	}
	rep.Findings = append(rep.Findings, replay.Findings...)

	live, seqs := replay.LiveChunks()
	rep.LiveChunks = len(live)
	idx := make([]int, len(live))
	for i := range idx {
		idx[i] = i
	}
	if o.CheckChunks >= 0 && o.CheckChunks < len(idx) {
		rand.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		idx = idx[:o.CheckChunks]
	}
	for _, i := range idx {
		ok, err := src.ChunkExists(ctx, live[i])
		if errors.Is(err, ErrChunkDamaged) {
			rep.ChunksChecked++
			fail(seqs[i], RuleChunkDamaged, "chunk %s (committed at entry %d) is damaged in the vault and awaits a re-upload", live[i], seqs[i])
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("audit: look up chunk %s: %w", live[i], err)
		}
		rep.ChunksChecked++
		if !ok {
			fail(seqs[i], RuleChunkRemoved, "chunk %s (committed at entry %d) is gone from the vault, and no executed deletion removed it", live[i], seqs[i])
		}
	}
	if o.Content != nil && o.SampleContent != 0 {
		sample := make([]int, len(live))
		for i := range sample {
			sample[i] = i
		}
		rand.Shuffle(len(sample), func(i, j int) { sample[i], sample[j] = sample[j], sample[i] })
		if o.SampleContent > 0 && o.SampleContent < len(sample) {
			sample = sample[:o.SampleContent]
		}
		for _, i := range sample {
			err := o.Content.VerifyContent(ctx, live[i])
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			rep.ContentChecked++
			switch {
			case err == nil:
			case errors.Is(err, ErrChunkAbsent):
				fail(seqs[i], RuleChunkRemoved, "chunk %s (committed at entry %d) is gone from the vault, and no executed deletion removed it", live[i], seqs[i])
			case errors.Is(err, ErrChunkDamaged):
				fail(seqs[i], RuleChunkDamaged, "chunk %s (committed at entry %d) is damaged in the vault and awaits a re-upload", live[i], seqs[i])
			default:
				fail(seqs[i], RuleChunkContent, "chunk %s (committed at entry %d): the vault did not serve bytes that hash to it: %v", live[i], seqs[i], err)
			}
		}
	}
	return done()
}
