package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/wormvault/wormvault/internal/chunk"
)

// restic repositories on the vault: each restic file is a vault chunk
// (BLAKE3-addressed, durable, under retention) plus a row of restic_files
// mapping (repository, type, restic name) to it. The rows are insert-only
// except that a lock's row may be removed; the database refuses anything
// else (migrations/007_restic.sql).

// The restic file types, as restic's REST protocol names them.
const (
	ResticConfig    = "config"
	ResticData      = "data"
	ResticKeys      = "keys"
	ResticLocks     = "locks"
	ResticSnapshots = "snapshots"
	ResticIndex     = "index"
)

// MaxResticLockSize bounds a lock file. restic's are a few hundred bytes;
// readers may write locks too, so they get a small limit of their own.
const MaxResticLockSize = 64 << 10

// ErrNotDeletable: a restic client asked to delete a file other than a
// lock. Nothing leaves the vault that way; deletion goes through an approved
// deletion request.
var ErrNotDeletable = errors.New("store: restic files other than locks cannot be deleted here: " +
	"the vault is append-only; deletion needs an approved deletion request (POST /v1/deletions)")

// SQLSTATEs raised by migrations/007_restic.sql.
const (
	sqlstateResticNotDeletable = "WV010"
	sqlstateResticNoChunk      = "WV011"
)

var resticRepoName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// CheckResticRepository validates a repository name: 1 to 128 letters,
// digits, '.', '_' and '-', starting with a letter or digit.
func CheckResticRepository(name string) error {
	if !resticRepoName.MatchString(name) {
		return invalid("repository", "%q: 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// CheckResticFile validates a restic file type and name: the config file is
// named "config"; every other file is named by the SHA-256 of its content,
// in 64 lowercase hex digits.
func CheckResticFile(typ, name string) error {
	switch typ {
	case ResticConfig:
		if name != ResticConfig {
			return invalid("name", "the config file is named config")
		}
		return nil
	case ResticData, ResticKeys, ResticLocks, ResticSnapshots, ResticIndex:
	default:
		return invalid("type", "%q is not a restic file type (config, data, keys, locks, snapshots, index)", typ)
	}
	if len(name) != 2*sha256.Size {
		return invalid("name", "a restic file name is 64 lowercase hex digits")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return invalid("name", "a restic file name is 64 lowercase hex digits")
		}
	}
	return nil
}

// resticDBErr is dbErr plus the meanings of 007's SQLSTATEs.
func resticDBErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNotDeletable) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlstateResticNotDeletable:
			return fmt.Errorf("store: %s: %w", op, ErrNotDeletable)
		case sqlstateResticNoChunk:
			// Only a deletion executing between the chunk's upload and its
			// mapping can cause it: the client should upload again.
			return fmt.Errorf("store: %s: %w: %s; upload it again", op, ErrConflict, pgErr.Message)
		}
	}
	return dbErr(op, err)
}

// ResticRepository is a restic repository on the vault.
type ResticRepository struct {
	Name      string    `db:"name"`
	CreatedAt time.Time `db:"created_at"`
	CreatedBy string    `db:"created_by"`
	// MinRetention is the repository's own minimum retention; the vault's
	// applies when it is shorter.
	MinRetention Duration `db:"min_retention"`
	// CreatedScope is the scope of the token that created the repository
	// (JSON, as auth.Scope), or nil if it predates scopes or an admin
	// created it.
	CreatedScope json.RawMessage `db:"created_scope"`
}

// ResticRepositoryStats is a repository with what it holds.
type ResticRepositoryStats struct {
	ResticRepository
	// Files and Bytes count the repository's files, locks excepted.
	Files int64 `db:"files"`
	Bytes int64 `db:"bytes"`
	// LastSnapshotAt is when its latest snapshot file was stored, if any.
	LastSnapshotAt *time.Time `db:"last_snapshot_at"`
}

// resticRetention is how long a new file of r is kept at least.
func (s *Store) resticRetention(r ResticRepository) time.Duration {
	return max(s.opts.MinRetention, time.Duration(r.MinRetention))
}

// EffectiveRetention is how long a new file of r is kept at least: the
// longer of the vault's minimum retention and the repository's.
func (s *Store) EffectiveRetention(r ResticRepository) time.Duration { return s.resticRetention(r) }

const resticRepoColumns = "name, created_at, created_by, min_retention, created_scope"

// CreateResticRepository creates the repository name (restic's init), with
// its audit entry. created is false if it already existed: creating is
// idempotent, as restic's protocol wants.
func (s *Store) CreateResticRepository(ctx context.Context, actor, name string) (created bool, err error) {
	return s.CreateResticRepositoryFor(ctx, actor, name, nil)
}

// CreateResticRepositoryFor is CreateResticRepository recording scope, the
// creating token's scope as JSON (auth.Scope), with the repository and in
// its audit entry. Whether the caller's scope covers the repository is
// the caller's check (the API's); this records what created it.
func (s *Store) CreateResticRepositoryFor(ctx context.Context, actor, name string, scope json.RawMessage) (created bool, err error) {
	if err := CheckResticRepository(name); err != nil {
		return false, err
	}
	var scopeArg any
	details := map[string]any{"repository": name}
	if len(scope) > 0 {
		var v any
		if err := json.Unmarshal(scope, &v); err != nil {
			return false, invalid("scope", "not JSON: %s", err.Error())
		}
		scopeArg, details["scope"] = string(scope), v
	}
	now := s.clk.Now()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO restic_repositories (name, created_at, created_by, created_scope)
			VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (name) DO NOTHING`, name, now, actor, scopeArg)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		created = true
		return s.appendAudit(ctx, tx, now, actor, "restic.repository.create", details)
	})
	return created, resticDBErr(fmt.Sprintf("create restic repository %s", name), err)
}

// ResticRepository returns a repository, or ErrNotFound.
func (s *Store) ResticRepository(ctx context.Context, name string) (ResticRepository, error) {
	if err := CheckResticRepository(name); err != nil {
		return ResticRepository{}, err
	}
	rows, _ := s.pool.Query(ctx, `SELECT `+resticRepoColumns+` FROM restic_repositories WHERE name = $1`, name)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[ResticRepository])
	if err != nil {
		return ResticRepository{}, resticDBErr(fmt.Sprintf("restic repository %s", name), err)
	}
	return r, nil
}

const resticRepositoriesSQL = `
SELECT r.name, r.created_at, r.created_by, r.min_retention, r.created_scope,
    count(f.name) AS files, coalesce(sum(f.size), 0)::bigint AS bytes,
    max(f.created_at) FILTER (WHERE f.type = 'snapshots') AS last_snapshot_at
FROM restic_repositories r
LEFT JOIN restic_files f ON f.repo = r.name AND f.type <> 'locks'
GROUP BY r.name
ORDER BY r.name`

// ResticRepositories lists every repository with its file count and bytes.
func (s *Store) ResticRepositories(ctx context.Context) ([]ResticRepositoryStats, error) {
	rows, _ := s.pool.Query(ctx, resticRepositoriesSQL)
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[ResticRepositoryStats])
	if err != nil {
		return nil, resticDBErr("list restic repositories", err)
	}
	return list, nil
}

// SetResticRetention raises a repository's minimum retention to d,
// creating the repository if it does not exist yet (so that an admin can
// set it before the first restic init). Like every retention it only
// grows: a shorter d is refused with ErrRetentionShortened. The files the
// repository already holds are retained accordingly at once (see
// extendRestic). The change and its audit entry commit together.
func (s *Store) SetResticRetention(ctx context.Context, actor, name string, d time.Duration) (ResticRepository, int64, error) {
	if err := CheckResticRepository(name); err != nil {
		return ResticRepository{}, 0, err
	}
	switch {
	case d <= 0:
		return ResticRepository{}, 0, invalid("min_retention", "must be positive")
	case d > s.opts.MaxRetention:
		return ResticRepository{}, 0, invalid("min_retention", "more than %s", s.opts.MaxRetention)
	}
	now := s.clk.Now()
	var repo ResticRepository
	var extended int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO restic_repositories (name, created_at, created_by)
			VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`, name, now, actor)
		if err != nil {
			return err
		}
		created := tag.RowsAffected() == 1
		// FOR NO KEY UPDATE serialises retention changes of one repository
		// without blocking uploads, whose rows only take KEY SHARE.
		rows, _ := tx.Query(ctx, `SELECT `+resticRepoColumns+` FROM restic_repositories WHERE name = $1 FOR NO KEY UPDATE`, name)
		if repo, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[ResticRepository]); err != nil {
			return err
		}
		prev := time.Duration(repo.MinRetention)
		switch {
		case d < prev:
			return fmt.Errorf("store: restic repository %s is retained at least %s; it can only be extended: %w",
				name, prev, ErrRetentionShortened)
		case d == prev:
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE restic_repositories SET min_retention = $2 WHERE name = $1`, name, d); err != nil {
			return err
		}
		repo.MinRetention = Duration(d)
		var latest pgtype.Timestamptz
		if err := tx.QueryRow(ctx, `SELECT max(created_at) FROM restic_files
			WHERE repo = $1 AND type = 'snapshots'`, name).Scan(&latest); err != nil {
			return err
		}
		var anchor *time.Time
		if latest.Valid {
			a := resticAnchor(latest.Time)
			anchor = &a
		}
		if extended, err = s.extendRestic(ctx, tx, name, anchor, s.resticRetention(repo), now); err != nil {
			return err
		}
		// retention is what the files were retained by (the vault's
		// minimum may be longer than the repository's): vault reindex
		// replays the extension with it.
		return s.appendAudit(ctx, tx, now, actor, "restic.repository.retention", map[string]any{
			"repository": name, "created": created, "min_retention": d.String(), "previous": prev.String(),
			"extended_chunks": extended, "retention": s.resticRetention(repo).String(),
		})
	})
	if err != nil {
		return ResticRepository{}, 0, resticDBErr(fmt.Sprintf("set retention of restic repository %s", name), err)
	}
	return repo, extended, nil
}

// resticAnchor rounds a time up to the next UTC midnight. Restic files are
// retained from the end of the day they were stored, and a snapshot keeps
// its repository from the end of its day: so every backup after the first
// of a day finds the repository already retained and updates no rows.
// Rounding only ever adds retention.
func resticAnchor(t time.Time) time.Time {
	return t.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
}

// resticUntil is the retention of a restic file stored at now.
func (s *Store) resticUntil(now time.Time, ret time.Duration) time.Time {
	until := resticAnchor(now).Add(ret)
	if limit := now.Add(s.opts.MaxRetention); until.After(limit) {
		return limit
	}
	return until
}

// extendRestic retains every file of a repository (locks excepted) until
// max(the end of its day, anchor) + ret, capped at the vault's maximum
// retention, and reports how many chunks it extended. restic snapshots
// reference packs of any age, and the vault cannot read which (the content
// is encrypted), so a repository is kept whole: every file lives at least
// as long as the latest snapshot that may need it. The repository row is
// locked first, so that two extensions of one repository never update the
// same chunks in different orders.
func (s *Store) extendRestic(ctx context.Context, tx pgx.Tx, repo string, anchor *time.Time, ret time.Duration, now time.Time) (int64, error) {
	if _, err := tx.Exec(ctx, `SELECT FROM restic_repositories WHERE name = $1 FOR NO KEY UPDATE`, repo); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `
		UPDATE chunks c SET retain_until = t.until
		FROM (
			SELECT chunk, LEAST(max(GREATEST(date_trunc('day', created_at, 'UTC') + interval '1 day', @anchor)) + @ret, @cap) AS until
			FROM restic_files WHERE repo = @repo AND type <> 'locks'
			GROUP BY chunk
		) t
		WHERE c.hash = t.chunk AND c.retain_until < t.until`,
		pgx.NamedArgs{"repo": repo, "anchor": anchor, "ret": ret, "cap": now.Add(s.opts.MaxRetention)})
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// ResticFile is a restic file: its name mapping and its chunk's retention.
type ResticFile struct {
	Repo        string
	Type        string
	Name        string
	Chunk       chunk.Hash
	Size        int64
	Seq         int64
	CreatedAt   time.Time
	CreatedBy   string
	RetainUntil time.Time
}

type resticFileRow struct {
	Repo        string    `db:"repo"`
	Type        string    `db:"type"`
	Name        string    `db:"name"`
	Chunk       []byte    `db:"chunk"`
	Size        int64     `db:"size"`
	Seq         int64     `db:"seq"`
	CreatedAt   time.Time `db:"created_at"`
	CreatedBy   string    `db:"created_by"`
	RetainUntil time.Time `db:"retain_until"`
}

func (r resticFileRow) file() ResticFile {
	h, _ := chunk.FromBytes(r.Chunk) // the CHECK constraint guarantees 32 bytes
	return ResticFile{Repo: r.Repo, Type: r.Type, Name: r.Name, Chunk: h, Size: r.Size, Seq: r.Seq,
		CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy, RetainUntil: r.RetainUntil}
}

// Files whose chunk was deleted (through an approved deletion request)
// keep their row as a record but are no longer visible: the join drops them.
const resticFileColumns = `f.repo, f.type, f.name, f.chunk, f.size, f.seq, f.created_at, f.created_by, c.retain_until`

const statResticFileSQL = `SELECT ` + resticFileColumns + `
FROM restic_files f JOIN chunks c ON c.hash = f.chunk
WHERE f.repo = $1 AND f.type = $2 AND f.name = $3`

// StatResticFile returns a file's mapping, or ErrNotFound.
func (s *Store) StatResticFile(ctx context.Context, repo, typ, name string) (ResticFile, error) {
	if err := CheckResticFile(typ, name); err != nil {
		return ResticFile{}, err
	}
	rows, _ := s.pool.Query(ctx, statResticFileSQL, repo, typ, name)
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[resticFileRow])
	if err != nil {
		return ResticFile{}, resticDBErr(fmt.Sprintf("stat restic %s file %s of %s", typ, name, repo), err)
	}
	return row.file(), nil
}

// OpenResticFile returns a file's content, verified against its chunk's
// BLAKE3 address as OpenChunk does, and its mapping.
func (s *Store) OpenResticFile(ctx context.Context, repo, typ, name string) (io.ReadCloser, ResticFile, error) {
	f, err := s.StatResticFile(ctx, repo, typ, name)
	if err != nil {
		return nil, ResticFile{}, err
	}
	rc, _, err := s.OpenChunk(ctx, f.Chunk)
	if err != nil {
		return nil, ResticFile{}, fmt.Errorf("store: open restic %s file %s of %s: %w", typ, name, repo, err)
	}
	return rc, f, nil
}

const listResticFilesSQL = `SELECT ` + resticFileColumns + `
FROM restic_files f JOIN chunks c ON c.hash = f.chunk
WHERE f.repo = @repo AND f.type = @type AND f.name > @after
ORDER BY f.name LIMIT @n`

// ListResticFiles returns up to limit files of a type, in name order, after
// the name after ("" for the first page). It returns ErrNotFound if the
// repository does not exist.
func (s *Store) ListResticFiles(ctx context.Context, repo, typ, after string, limit int) ([]ResticFile, error) {
	if err := CheckResticRepository(repo); err != nil {
		return nil, err
	}
	name := after
	if name == "" {
		name = strings.Repeat("0", 2*sha256.Size) // checks the type; config is not listed
	}
	if err := CheckResticFile(typ, name); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 10_000 {
		limit = 10_000
	}
	op := fmt.Sprintf("list restic %s files of %s", typ, repo)
	if after == "" {
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM restic_repositories WHERE name = $1)`, repo).Scan(&exists); err != nil {
			return nil, resticDBErr(op, err)
		}
		if !exists {
			return nil, fmt.Errorf("store: %s: no such repository (restic init creates it): %w", op, ErrNotFound)
		}
	}
	rows, _ := s.pool.Query(ctx, listResticFilesSQL, pgx.NamedArgs{"repo": repo, "type": typ, "after": after, "n": limit})
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[resticFileRow])
	if err != nil {
		return nil, resticDBErr(op, err)
	}
	out := make([]ResticFile, len(list))
	for i, r := range list {
		out[i] = r.file()
	}
	return out, nil
}

// DeleteResticFile removes a lock's mapping (restic removes its locks at
// the end of every command). The lock's chunk stays stored under its
// retention. Removing an absent lock is not an error. Any other type is
// refused with ErrNotDeletable, and the database refuses it too.
func (s *Store) DeleteResticFile(ctx context.Context, repo, typ, name string) error {
	if err := CheckResticFile(typ, name); err != nil {
		return err
	}
	op := fmt.Sprintf("delete restic %s file %s of %s", typ, name, repo)
	if typ != ResticLocks {
		return fmt.Errorf("store: %s: %w", op, ErrNotDeletable)
	}
	_, err := s.pool.Exec(ctx, `DELETE FROM restic_files WHERE repo = $1 AND type = $2 AND name = $3`, repo, typ, name)
	return resticDBErr(op, err)
}

const insertResticFileSQL = `
INSERT INTO restic_files (repo, type, name, chunk, size, created_at, created_by)
VALUES (@repo, @type, @name, @chunk, @size, @now, @by)
ON CONFLICT (repo, type, name) DO NOTHING
RETURNING seq`

// PutResticFile stores body as a restic file and reports whether the name
// is new. It returns only once the content is a durable chunk and the
// mapping row is committed; on any error no mapping is visible.
//
//   - Every file but config must be named by the SHA-256 of its content, as
//     restic names them; a mismatch is refused with chunk.ErrHashMismatch
//     before anything is stored.
//   - A name already stored is answered as success: its content is the
//     same (its name is its hash), so restic's retry of an upload whose
//     answer was lost succeeds. config is written once: the same bytes
//     again succeed, different bytes are refused with ErrConflict.
//   - The chunk is retained at least the repository's retention from the
//     end of the day (UTC). Storing a snapshot file retains the whole
//     repository as long (extendRestic).
//
// The repository must exist (ErrNotFound otherwise). Lock files are at most
// MaxResticLockSize bytes, others at most the maximum chunk size.
func (s *Store) PutResticFile(ctx context.Context, actor, repo, typ, name string, body io.Reader) (ResticFile, bool, error) {
	if err := CheckResticFile(typ, name); err != nil {
		return ResticFile{}, false, err
	}
	r, err := s.ResticRepository(ctx, repo)
	if err != nil {
		return ResticFile{}, false, err
	}
	op := fmt.Sprintf("put restic %s file %s of %s", typ, name, repo)
	// Before the body is spooled; PutChunk checks again.
	if err := s.admitContent(ctx); err != nil {
		return ResticFile{}, false, fmt.Errorf("store: %s: %w", op, err)
	}
	limit := s.opts.MaxChunkSize
	if typ == ResticLocks {
		limit = min(limit, MaxResticLockSize)
	}
	sp, err := s.spool(body, limit)
	if err != nil {
		return ResticFile{}, false, fmt.Errorf("store: %s: %w", op, err)
	}
	defer sp.close()
	if typ != ResticConfig && hex.EncodeToString(sp.sha[:]) != name {
		return ResticFile{}, false, fmt.Errorf("store: %s: the SHA-256 of the content is %x, not its name: %w", op, sp.sha, chunk.ErrHashMismatch)
	}
	if typ == ResticConfig {
		// Checked before storing anything; the insert below checks again.
		prev, err := s.StatResticFile(ctx, repo, typ, name)
		switch {
		case err == nil && prev.Chunk != sp.hash:
			return ResticFile{}, false, fmt.Errorf("store: %s: the repository's config is written once and differs: %w", op, ErrConflict)
		case err != nil && !errors.Is(err, ErrNotFound):
			return ResticFile{}, false, err
		}
	}

	now := s.clk.Now()
	ret := s.resticRetention(r)
	content, err := sp.reader()
	if err != nil {
		return ResticFile{}, false, fmt.Errorf("store: %s: %w", op, err)
	}
	res, err := s.PutChunkSized(ctx, actor, sp.hash, content, sp.size, s.resticUntil(now, ret))
	if err != nil {
		return ResticFile{}, false, fmt.Errorf("store: %s: %w", op, err)
	}

	f := ResticFile{Repo: repo, Type: typ, Name: name, Chunk: sp.hash, Size: sp.size,
		CreatedAt: now, CreatedBy: actor, RetainUntil: res.Chunk.RetainUntil}
	created := false
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, insertResticFileSQL, pgx.NamedArgs{
			"repo": repo, "type": typ, "name": name, "chunk": sp.hash[:], "size": sp.size, "now": now, "by": actor,
		})
		seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if len(seqs) == 0 {
			// Stored before (a retry, or a concurrent upload of the same file).
			rows, _ := tx.Query(ctx, statResticFileSQL, repo, typ, name)
			prev, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[resticFileRow])
			if err != nil {
				return err
			}
			if f = prev.file(); f.Chunk != sp.hash {
				return fmt.Errorf("store: the repository's config is written once and differs: %w", ErrConflict)
			}
			return nil
		}
		f.Seq, created = seqs[0], true
		var recs []auditRecord
		if typ != ResticLocks {
			// The mapping is journaled with the row, so that vault reindex
			// can rebuild the repository from the data directory. Locks are
			// transient (restic removes them after every command) and are
			// not: their chunks are, as every chunk is.
			recs = append(recs, auditRecord{at: now, actor: actor, action: "restic.file", details: map[string]any{
				"repository": repo, "type": typ, "name": name, "chunk": sp.hash.String(), "size": sp.size, "seq": f.Seq,
			}})
		}
		if typ == ResticSnapshots {
			anchor, until := resticAnchor(now), s.resticUntil(now, ret)
			n, err := s.extendRestic(ctx, tx, repo, &anchor, ret, now)
			if err != nil {
				return err
			}
			if n > 0 {
				if until.After(f.RetainUntil) {
					f.RetainUntil = until
				}
				recs = append(recs, auditRecord{at: now, actor: actor, action: "restic.retain", details: map[string]any{
					"repository": repo, "snapshot": name, "retain_until": until.UTC(), "chunks": n,
				}})
			}
		}
		if len(recs) == 0 {
			return nil
		}
		_, err = s.appendAuditBatch(ctx, tx, recs)
		return err
	})
	if err != nil {
		return ResticFile{}, false, resticDBErr(op, err)
	}
	return f, created, nil
}

// spooled is an upload read once, hashed both ways (SHA-256 for restic's
// name, BLAKE3 for the vault's address), and kept for PutChunk to read:
// in memory up to the pack threshold, else in an unlinked temporary file
// (TMPDIR) that disappears with its descriptor, even on a crash.
type spooled struct {
	data []byte
	file *os.File
	size int64
	hash chunk.Hash
	sha  [sha256.Size]byte
}

func (s *Store) spool(body io.Reader, limit int64) (_ *spooled, err error) {
	body = &limitReader{r: body, max: limit}
	bh, sh := chunk.NewHasher(), sha256.New()
	small := min(s.opts.PackThreshold, limit)
	buf := make([]byte, small+1)
	n, err := io.ReadFull(body, buf)
	sp := &spooled{}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		sp.data, sp.size = buf[:n], int64(n)
		bh.Write(sp.data)
		sh.Write(sp.data)
	case err != nil:
		return nil, fmt.Errorf("read body: %w", err)
	default:
		f, err := os.CreateTemp("", "wormvault-restic-*")
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		defer func() {
			if err != nil {
				f.Close()
			}
		}()
		if err := os.Remove(f.Name()); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		w := io.MultiWriter(f, bh, sh)
		if _, err := w.Write(buf); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		cb := copyBufs.Get().(*[]byte)
		m, err := io.CopyBuffer(w, resticBody{body}, *cb)
		copyBufs.Put(cb)
		if err != nil {
			return nil, fmt.Errorf("read body: %w", err)
		}
		sp.file, sp.size = f, int64(len(buf))+m
	}
	sp.hash = chunk.SumOf(bh)
	sh.Sum(sp.sha[:0])
	return sp, nil
}

// resticBody hides a reader's other methods, so that io.CopyBuffer uses the
// buffer it is given.
type resticBody struct{ io.Reader }

func (sp *spooled) reader() (io.Reader, error) {
	if sp.file == nil {
		return bytes.NewReader(sp.data), nil
	}
	return io.NewSectionReader(sp.file, 0, sp.size), nil
}

func (sp *spooled) close() {
	if sp.file != nil {
		sp.file.Close()
	}
}
