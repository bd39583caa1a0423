package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/wormvault/wormvault/internal/journal"
)

// AuditEntry is one entry of the audit log: a leaf of its Merkle tree
// (leaf index Seq-1, record bytes Payload) and a link of the older hash
// chain (PrevHash, Hash).
type AuditEntry struct {
	Seq      int64     `json:"seq" db:"seq"`
	At       time.Time `json:"at" db:"at"`
	Actor    string    `json:"actor" db:"actor"`
	Action   string    `json:"action" db:"action"`
	Payload  string    `json:"payload" db:"payload"`
	PrevHash []byte    `json:"prev_hash" db:"prev_hash"`
	Hash     []byte    `json:"hash" db:"hash"`
}

// auditLock serialises appends so the chain has no forks or gaps.
const auditLock = 0x61756474 // "audt"

// ErrAuditChainBroken is returned by VerifyAudit when an entry does not
// link to or hash as it should.
var ErrAuditChainBroken = errors.New("store: audit chain broken")

// auditPayload is the canonical JSON that is hashed: fixed field order from
// the struct, details with sorted keys (encoding/json sorts map keys).
type auditPayload struct {
	Seq     int64     `json:"seq"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Details any       `json:"details"`
}

func auditHash(prev []byte, payload string) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write([]byte(payload))
	return h.Sum(nil)
}

// appendAudit writes one audit entry inside tx, the transaction of the
// change it records (invariant 6): the entry, its Merkle tree hashes and the
// change commit together or not at all.
func (s *Store) appendAudit(ctx context.Context, tx pgx.Tx, at time.Time, actor, action string, details any) error {
	_, err := s.appendAuditBatch(ctx, tx, []auditRecord{{at: at, actor: actor, action: action, details: details}})
	return err
}

// auditRecord is an entry to append.
type auditRecord struct {
	at            time.Time
	actor, action string
	details       any
}

// appendAuditBatch appends recs in order inside tx and returns the seq of
// the first. Appends are serialised by an advisory lock, so seqs have no
// gaps; each entry's payload is its Merkle leaf (leaf index seq-1) and the
// tree's stored hashes (tlog.StoredHashes) are written with it. The hash
// chain of 002 is still written alongside.
//
// Before the rows are written, the entries are appended to the data
// directory's journal and fsynced (invariant 8): the lock is held until
// tx ends, so the journal's order is the log's. A transaction that rolls
// back leaves journal entries that the next append replaces.
func (s *Store) appendAuditBatch(ctx context.Context, tx pgx.Tx, recs []auditRecord) (int64, error) {
	head, err := lockAuditHead(ctx, tx)
	if err != nil {
		return 0, err
	}
	var b pgx.Batch
	if err := s.queueAudit(ctx, tx, &b, head, recs); err != nil {
		return 0, err
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return 0, fmt.Errorf("audit: append: %w", err)
	}
	return head.seq + 1, nil
}

// queueAudit journals recs as the entries after head and queues their
// rows in b, which the caller sends in the transaction that holds the
// append lock (taken with head), with statements of its own: an append
// costs the journal's fsync and no round trip of its own.
func (s *Store) queueAudit(ctx context.Context, tx pgx.Tx, b *pgx.Batch, head auditHead, recs []auditRecord) error {
	payloads := make([][]byte, len(recs))
	for i, r := range recs {
		seq := head.seq + 1 + int64(i)
		var err error
		if payloads[i], err = json.Marshal(auditPayload{Seq: seq, At: r.at.UTC(), Actor: r.actor, Action: r.action, Details: r.details}); err != nil {
			return fmt.Errorf("audit: encode: %w", err)
		}
	}
	if err := s.journalAppend(ctx, head.seq, head.payload, payloads); err != nil {
		return err
	}
	var tree []tlog.Hash
	if j := s.opts.Journal; j != nil {
		// The journal's tree is the database's (CheckJournal compared
		// their roots at start, and every append compares the last
		// entry): its stored hashes need no reading back.
		var err error
		if tree, err = j.StoredHashes(head.seq+1, head.seq+int64(len(payloads))); err != nil {
			return err
		}
	}
	return queueEntries(ctx, tx, b, head, payloads, tree)
}

// auditHead is the log's last entry, read under the append lock.
type auditHead struct {
	seq     int64
	hash    []byte // of the 002 hash chain
	payload string
}

// lockAuditHead takes the append lock for tx and reads the last entry.
func lockAuditHead(ctx context.Context, tx pgx.Tx) (auditHead, error) {
	var h auditHead
	var b pgx.Batch
	queueLockHead(&b, &h)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return auditHead{}, fmt.Errorf("audit: lock and read the last entry: %w", err)
	}
	return h, nil
}

// queueLockHead queues in b taking the append lock and then reading the
// last entry into h. The read is a statement of its own, so under READ
// COMMITTED it sees every append committed before the lock was granted.
func queueLockHead(b *pgx.Batch, h *auditHead) {
	h.hash = make([]byte, sha256.Size)
	b.Queue("SELECT pg_advisory_xact_lock($1)", auditLock)
	b.Queue("SELECT seq, hash, payload FROM audit_log ORDER BY seq DESC LIMIT 1").QueryRow(func(row pgx.Row) error {
		if err := row.Scan(&h.seq, &h.hash, &h.payload); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return nil
	})
}

// writeEntries inserts payloads as the entries after head, with their
// Merkle tree hashes and hash-chain links. The caller holds the lock.
func writeEntries(ctx context.Context, tx pgx.Tx, head auditHead, payloads [][]byte) error {
	var b pgx.Batch
	if err := queueEntries(ctx, tx, &b, head, payloads, nil); err != nil {
		return err
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("audit: append: %w", err)
	}
	return nil
}

// queueEntries queues in b the inserts of writeEntries. known is the
// entries' stored tree hashes already computed (from the journal), or nil
// to compute them from the database's tree, read through tx.
func queueEntries(ctx context.Context, tx pgx.Tx, b *pgx.Batch, head auditHead, payloads [][]byte, known []tlog.Hash) error {
	var hr *txHashReader
	if known == nil {
		hr = newTxHashReader(ctx, tx)
		if err := ensureTreeHashes(ctx, tx, hr, head.seq); err != nil {
			return err
		}
	}
	n := len(payloads)
	seqs, ats := make([]int64, n), make([]time.Time, n)
	actors, actions, texts := make([]string, n), make([]string, n), make([]string, n)
	prevs, hashes := make([][]byte, n), make([][]byte, n)
	var idxs []int64
	var tree [][]byte
	prev := head.hash
	for i, b := range payloads {
		seq := head.seq + 1 + int64(i)
		var p auditPayload
		if err := json.Unmarshal(b, &p); err != nil || p.Seq != seq {
			return fmt.Errorf("%w: entry %d does not decode as entry %d", ErrAuditTree, p.Seq, seq)
		}
		base := tlog.StoredHashIndex(0, seq-1)
		var stored []tlog.Hash
		if known != nil {
			first := tlog.StoredHashIndex(0, head.seq)
			stored = known[base-first : tlog.StoredHashCount(seq)-first]
		} else {
			var err error
			if stored, err = tlog.StoredHashes(seq-1, b, hr); err != nil {
				return fmt.Errorf("audit: tree hashes of entry %d: %w", seq, err)
			}
		}
		for j, h := range stored {
			if hr != nil {
				hr.overlay[base+int64(j)] = h
			}
			idxs = append(idxs, base+int64(j))
			tree = append(tree, h[:])
		}
		seqs[i], ats[i], actors[i], actions[i], texts[i] = seq, p.At, p.Actor, p.Action, string(b)
		prevs[i], hashes[i] = prev, auditHash(prev, texts[i])
		prev = hashes[i]
	}
	b.Queue(`INSERT INTO audit_log (seq, at, actor, action, payload, prev_hash, hash)
		SELECT * FROM unnest(@seq::bigint[], @at::timestamptz[], @actor::text[], @action::text[], @payload::text[],
			@prev::bytea[], @hash::bytea[])`, pgx.NamedArgs{
		"seq": seqs, "at": ats, "actor": actors, "action": actions, "payload": texts, "prev": prevs, "hash": hashes,
	})
	b.Queue(`INSERT INTO audit_hashes (idx, hash) SELECT * FROM unnest($1::bigint[], $2::bytea[])`, idxs, tree)
	return nil
}

// journalAppend writes entries to the journal, if the store has one. A
// divergence between the database's log and the journal is an alarm: the
// append fails, so no change is made that the journal does not hold.
func (s *Store) journalAppend(ctx context.Context, dbHead int64, headPayload string, payloads [][]byte) error {
	j := s.opts.Journal
	if j == nil {
		return nil
	}
	recs := make([]journal.Record, len(payloads))
	for i, p := range payloads {
		recs[i] = journal.Record{Seq: dbHead + 1 + int64(i), Payload: p}
	}
	var head []byte
	if dbHead > 0 {
		head = []byte(headPayload)
	}
	if err := j.Append(dbHead, head, recs); err != nil {
		if errors.Is(err, journal.ErrDiverged) {
			s.metrics.journalDiverged.Inc()
			s.log.ErrorContext(ctx, "ALERT: the database's audit log diverges from the data directory's journal; "+
				"nothing more is recorded until an operator runs `vault reindex`", "err", err)
			return fmt.Errorf("%w: %w", ErrIntegrity, err)
		}
		return fmt.Errorf("audit: journal: %w", err)
	}
	return nil
}

// AuditEntries returns up to limit entries with seq > after, in order.
func (s *Store) AuditEntries(ctx context.Context, after int64, limit int) ([]AuditEntry, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	rows, _ := s.pool.Query(ctx, `SELECT seq, at, actor, action, payload, prev_hash, hash
		FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	entries, err := pgx.CollectRows(rows, pgx.RowToStructByName[AuditEntry])
	if err != nil {
		return nil, dbErr("audit entries", err)
	}
	return entries, nil
}

// VerifyAuditChain checks that entries link and hash correctly, starting
// from prev (32 zero bytes for the first entry). It returns the last hash.
func VerifyAuditChain(prev []byte, entries []AuditEntry) ([]byte, error) {
	for _, e := range entries {
		if !bytes.Equal(e.PrevHash, prev) {
			return nil, fmt.Errorf("%w: entry %d does not link to its predecessor", ErrAuditChainBroken, e.Seq)
		}
		if !bytes.Equal(auditHash(prev, e.Payload), e.Hash) {
			return nil, fmt.Errorf("%w: entry %d does not match its hash", ErrAuditChainBroken, e.Seq)
		}
		var p auditPayload
		if err := json.Unmarshal([]byte(e.Payload), &p); err != nil || p.Seq != e.Seq || p.Actor != e.Actor || p.Action != e.Action {
			return nil, fmt.Errorf("%w: entry %d payload disagrees with its columns", ErrAuditChainBroken, e.Seq)
		}
		prev = e.Hash
	}
	return prev, nil
}

// VerifyAudit re-walks the whole audit log and returns the number of
// entries checked.
func (s *Store) VerifyAudit(ctx context.Context) (int64, error) {
	prev := make([]byte, sha256.Size)
	var after, n int64
	for {
		entries, err := s.AuditEntries(ctx, after, 1000)
		if err != nil {
			return n, err
		}
		if len(entries) == 0 {
			return n, nil
		}
		for i, e := range entries {
			if e.Seq != after+int64(i)+1 {
				return n, fmt.Errorf("%w: gap before entry %d", ErrAuditChainBroken, e.Seq)
			}
		}
		if prev, err = VerifyAuditChain(prev, entries); err != nil {
			return n, err
		}
		n += int64(len(entries))
		after = entries[len(entries)-1].Seq
	}
}
