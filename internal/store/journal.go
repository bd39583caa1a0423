package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/journal"
	"github.com/wormvault/wormvault/internal/store/pack"
)

// JournalReport tells what CheckJournal found and did.
type JournalReport struct {
	JournalEntries  int64 // entries in the journal
	DatabaseEntries int64 // entries in the database's log before the check
	Imported        int64 // entries copied into a new journal from a vault that had none
	RolledForward   int64 // chunk commits journaled but not committed (a crash), now indexed
}

// CheckJournal compares the database's audit log with the data
// directory's journal before the vault serves (invariant 8):
//
//   - the same entries: nothing to do;
//   - the journal is new and the database has entries (a vault from before
//     the journal existed): the database's entries, which the rollback
//     guard has already checked against the signed checkpoint, are copied
//     into the journal once;
//   - the journal has entries after the database's last one, all chunk
//     commits: a crash came between the journal's fsync and the group's
//     commit. The content is durable, so the rows and entries are written
//     as the journal has them (what a write-ahead log does);
//   - anything else — entries the journal never held, entries that
//     differ, or other changes missing from the database — is
//     ErrIntegrity: the index must be rebuilt with `vault reindex`, and
//     nothing is served from an index that disagrees with the journal.
func (s *Store) CheckJournal(ctx context.Context, fresh bool) (JournalReport, error) {
	var rep JournalReport
	j := s.opts.Journal
	if j == nil {
		return rep, errors.New("store: check journal: the store has no journal")
	}
	dbSize, err := s.AuditTreeSize(ctx)
	if err != nil {
		return rep, err
	}
	rep.DatabaseEntries, rep.JournalEntries = dbSize, j.Head()
	if fresh && j.Head() == 0 && dbSize > 0 {
		n, err := s.importJournal(ctx, j, dbSize)
		rep.Imported, rep.JournalEntries = n, j.Head()
		return rep, err
	}
	if dbSize > j.Head() {
		return rep, s.integrityAlarm(ctx, fmt.Errorf("the database's audit log has %d entries, the journal %d: "+
			"entries %d to %d were never written by this vault", dbSize, j.Head(), j.Head()+1, dbSize))
	}
	if dbSize > 0 {
		dbRoot, err := s.AuditTreeHash(ctx, dbSize)
		if err != nil {
			return rep, fmt.Errorf("store: check journal: %w: %w", ErrAuditTree, err)
		}
		jRoot, err := j.TreeHash(dbSize)
		if err != nil {
			return rep, err
		}
		if dbRoot != jRoot {
			return rep, s.integrityAlarm(ctx, fmt.Errorf("the database's first %d audit entries differ from the journal's: "+
				"it is another vault's database, or its log was rewritten", dbSize))
		}
		last, err := j.Entry(dbSize)
		if err != nil {
			return rep, err
		}
		if err := j.Confirm(dbSize, last); err != nil {
			return rep, s.integrityAlarm(ctx, err)
		}
	}
	if dbSize == j.Head() {
		return rep, nil
	}
	n, err := s.rollForward(ctx, j, dbSize)
	rep.RolledForward = n
	return rep, err
}

// integrityAlarm logs and counts an integrity failure and returns it as
// ErrIntegrity.
func (s *Store) integrityAlarm(ctx context.Context, err error) error {
	s.metrics.integrityAlarms.Inc()
	s.log.ErrorContext(ctx, "ALERT: the index disagrees with the data directory's journal; "+
		"no deletion executes and nothing is served until it is rebuilt with `vault reindex`", "err", err)
	return fmt.Errorf("%w: %w", ErrIntegrity, err)
}

// importJournal copies the database's first n entries into an empty
// journal.
func (s *Store) importJournal(ctx context.Context, j *journal.Journal, n int64) (int64, error) {
	s.log.WarnContext(ctx, "starting the data directory's journal from the database's audit log (a vault from before the journal)",
		"entries", n)
	var done int64
	var prev []byte
	for done < n {
		leaves, err := s.AuditLeaves(ctx, done, n)
		if err != nil {
			return done, err
		}
		recs := make([]journal.Record, len(leaves))
		for i, l := range leaves {
			if l.Index != done+int64(i) {
				return done, fmt.Errorf("%w: entry %d is missing", ErrAuditTree, done+int64(i)+1)
			}
			recs[i] = journal.Record{Seq: l.Index + 1, Payload: []byte(l.Payload)}
		}
		if err := j.Append(done, prev, recs); err != nil {
			return done, err
		}
		done += int64(len(recs))
		prev = recs[len(recs)-1].Payload
	}
	return done, nil
}

// rollForward writes the journal's entries after the database's last one
// (from) into the database, if they are all chunk commits; see
// CheckJournal.
func (s *Store) rollForward(ctx context.Context, j *journal.Journal, from int64) (int64, error) {
	var payloads [][]byte
	var commits []audit.ChunkCommit
	err := j.Scan(from+1, func(seq int64, p []byte) error {
		e, err := audit.ParseEntry(seq-1, p)
		if err != nil {
			return err
		}
		if e.Action != audit.ActionChunkCommit {
			return fmt.Errorf("the database is older than the data directory (restored from a backup, or entries were cut): "+
				"its audit log ends at entry %d, the journal at %d, and entry %d (%s) is not a chunk commit that start-up may replay",
				from, j.Head(), seq, e.Action)
		}
		var c audit.ChunkCommit
		if err := json.Unmarshal(e.Details, &c); err != nil {
			return fmt.Errorf("entry %d: %w", seq, err)
		}
		payloads = append(payloads, append([]byte(nil), p...))
		commits = append(commits, c)
		return nil
	})
	if err != nil {
		return 0, s.integrityAlarm(ctx, err)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		head, err := lockAuditHead(ctx, tx)
		if err != nil {
			return err
		}
		if head.seq != from {
			return fmt.Errorf("%w: the log grew during the journal check", ErrConflict)
		}
		var seqs []int64
		var hashes [][]byte
		for _, c := range commits {
			h, err := chunk.ParseHash(c.Hash)
			if err != nil {
				return err
			}
			if err := s.hasJournaledContent(ctx, h, c); err != nil {
				// Acknowledged content is durable before its commit is
				// journaled: if it is gone, that is data loss, reported;
				// the row is still written, as the journal has it.
				s.log.ErrorContext(ctx, "DATA LOSS: journaled chunk has no content", "hash", c.Hash, "err", err)
			}
			var pid, off *int64
			if c.PackID != 0 {
				pid, off = &c.PackID, &c.PackOffset
			}
			var seq int64
			err = tx.QueryRow(ctx, `INSERT INTO chunks (hash, size, stored_at, retain_until, uploaded_by, pack_id, pack_offset)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (hash) DO UPDATE SET retain_until = greatest(chunks.retain_until, excluded.retain_until)
				RETURNING seq`, h[:], c.Size, c.StoredAt, c.RetainUntil, c.UploadedBy, pid, off).Scan(&seq)
			if err != nil {
				return err
			}
			seqs, hashes = append(seqs, seq), append(hashes, h[:])
		}
		if err := writeEntries(ctx, tx, head, payloads); err != nil {
			return err
		}
		leaves := make([]int64, len(seqs))
		for i := range leaves {
			leaves[i] = from + int64(i)
		}
		_, err = tx.Exec(ctx, `INSERT INTO audit_chunks (chunk_seq, hash, leaf)
			SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[]) ON CONFLICT DO NOTHING`, seqs, hashes, leaves)
		return err
	})
	if err != nil {
		return 0, dbErr("roll the journal forward", err)
	}
	s.log.WarnContext(ctx, "indexed chunk commits that were journaled but not committed before a crash",
		"entries", len(payloads))
	return int64(len(payloads)), nil
}

// hasJournaledContent checks that a journaled chunk's content is where
// its entry says.
func (s *Store) hasJournaledContent(ctx context.Context, h chunk.Hash, c audit.ChunkCommit) error {
	if c.PackID == 0 {
		_, err := s.blobs.Stat(ctx, h)
		return err
	}
	if s.packs == nil {
		return errors.New("packs are not configured")
	}
	_, err := s.packs.Read(pack.Location{Pack: c.PackID, Offset: c.PackOffset}, h, c.Size)
	return err
}

// ConfirmJournal tells the journal that the database's log holds the
// entries up to its current last one (the checkpoint signer calls it every
// tick): from then on, an append over a database whose log is shorter is
// refused as a truncation. A database that is not the journal's is an
// integrity alarm.
func (s *Store) ConfirmJournal(ctx context.Context) error {
	j := s.opts.Journal
	if j == nil {
		return nil
	}
	var seq int64
	var payload string
	err := s.pool.QueryRow(ctx, "SELECT seq, payload FROM audit_log ORDER BY seq DESC LIMIT 1").Scan(&seq, &payload)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return dbErr("confirm journal", err)
	}
	var p []byte
	if seq > 0 {
		p = []byte(payload)
	}
	if err := j.Confirm(seq, p); err != nil {
		return s.integrityAlarm(ctx, err)
	}
	return nil
}

// CheckIndex compares the chunks the index holds with those the journal
// says are stored: their number, and the sum of their hashes' first eight
// bytes (a set digest no rows can match by accident). `vault serve` runs it
// at start, after CheckJournal: an index whose rows were deleted, or
// forged, by someone holding a database credential refuses to serve until
// `vault reindex` rebuilds it from the journal. It costs one pass over the
// journal and one over the chunk table.
func (s *Store) CheckIndex(ctx context.Context) error {
	j := s.opts.Journal
	if j == nil {
		return errors.New("store: check index: the store has no journal")
	}
	r := audit.NewReplay()
	if err := j.Scan(1, func(seq int64, p []byte) error {
		r.ApplyPayload(seq, p)
		return nil
	}); err != nil {
		return err
	}
	live, _ := r.LiveChunks()
	want := new(big.Int)
	for _, h := range live {
		want.Add(want, new(big.Int).SetUint64(binary.BigEndian.Uint64(h[:8])))
	}
	var n int64
	var sum pgtype.Numeric
	err := s.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(('x' || encode(substr(hash, 1, 8), 'hex'))::bit(64)::bigint::numeric
		+ CASE WHEN get_byte(hash, 0) >= 128 THEN 18446744073709551616 ELSE 0 END), 0) FROM chunks`).Scan(&n, &sum)
	if err != nil {
		return dbErr("check index", err)
	}
	got := new(big.Int).Set(sum.Int)
	ten := big.NewInt(10)
	for e := sum.Exp; e > 0; e-- {
		got.Mul(got, ten)
	}
	for e := sum.Exp; e < 0; e++ {
		got.Quo(got, ten)
	}
	if n != int64(len(live)) || got.Cmp(want) != 0 {
		return s.integrityAlarm(ctx, fmt.Errorf("the index has %d chunks, the journal %d (or other ones): "+
			"rows were removed or added outside the vault", n, len(live)))
	}
	return nil
}
