package restic

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/wormvault/wormvault/internal/auth"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// The media types of restic's REST protocol. A listing request whose Accept
// header names ContentTypeV2 gets names and sizes; any other gets names
// only (v1), and restic then asks for each size with a HEAD.
const (
	ContentTypeV1 = "application/vnd.x.restic.rest.v1"
	ContentTypeV2 = "application/vnd.x.restic.rest.v2"
)

// The package's sentinel errors, mapped to statuses by the API's one error
// mapping.
var (
	// ErrMethodNotAllowed: the path exists, not with this method.
	ErrMethodNotAllowed = errors.New("restic: method not allowed on this path")
	// ErrRangeNotSatisfiable: a Range header that selects no byte of the
	// file, or that cannot be parsed.
	ErrRangeNotSatisfiable = errors.New("restic: range not satisfiable")
)

// DefaultListPage is how many names one database query returns while a
// listing streams.
const DefaultListPage = 5000

// Options configures the handler.
type Options struct {
	Store    *store.Store
	Verifier *auth.Verifier
	Log      *slog.Logger
	// WriteError answers a failed request; the API passes its one error
	// mapping, so that statuses and error bodies are the vault's.
	WriteError func(w http.ResponseWriter, r *http.Request, err error)
	// ListPage is how many names a listing reads per query; zero means
	// DefaultListPage.
	ListPage int
	// Limit, if set, wraps every authenticated request: the API's cap on
	// a token's concurrent requests.
	Limit func(http.Handler) http.Handler
}

type handler struct {
	store      *store.Store
	verifier   *auth.Verifier
	log        *slog.Logger
	writeError func(w http.ResponseWriter, r *http.Request, err error)
	maxChunk   int64
	listPage   int
}

// NewHandler returns the restic REST protocol for every repository: paths
// are /{repo}/, /{repo}/config, /{repo}/{type}/ and /{repo}/{type}/{name}
// relative to where it is mounted. The routes read like the role table in
// docs/restic.md.
func NewHandler(o Options) http.Handler {
	h := &handler{
		store:      o.Store,
		verifier:   o.Verifier,
		log:        o.Log.With("component", "restic"),
		writeError: o.WriteError,
		maxChunk:   o.Store.Options().MaxChunkSize,
		listPage:   o.ListPage,
	}
	if h.listPage <= 0 {
		h.listPage = DefaultListPage
	}
	const (
		agent   = auth.RoleAgent
		reader  = auth.RoleReader
		auditor = auth.RoleAuditor
		admin   = auth.RoleAdmin
	)
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, fmt.Errorf("restic: no such path (a repository is /restic/NAME/): %w", store.ErrNotFound))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, ErrMethodNotAllowed)
	})
	r.Use(h.authenticate)
	if o.Limit != nil {
		r.Use(o.Limit)
	}
	r.Route("/{repo}", func(r chi.Router) {
		// Every request, read or write, stays within the token's scope: a
		// stolen agent token of one machine can neither poison another's
		// repository nor create (squat) one outside its scope.
		r.Use(h.requireScope)
		r.With(h.require(agent)).Post("/", h.createRepo)

		r.With(h.require(agent, reader, auditor, admin)).Head("/config", h.head(store.ResticConfig))
		r.With(h.require(agent, reader)).Get("/config", h.get(store.ResticConfig))
		r.With(h.require(agent)).Post("/config", h.post(store.ResticConfig))
		r.With(h.require(agent, reader)).Delete("/config", h.delete(store.ResticConfig))

		// Agents read what restic backup needs (config, keys, locks, index,
		// snapshots), never data packs; readers also write and remove lock
		// files, which every restic command creates. Only locks are ever
		// deleted: the store refuses every other DELETE.
		for _, t := range []string{store.ResticData, store.ResticKeys, store.ResticLocks, store.ResticSnapshots, store.ResticIndex} {
			readers := []auth.Role{agent, reader}
			writers := []auth.Role{agent}
			switch t {
			case store.ResticData:
				readers = []auth.Role{reader}
			case store.ResticLocks:
				writers = []auth.Role{agent, reader}
			}
			r.With(h.require(agent, reader, auditor, admin)).Get("/"+t+"/", h.list(t))
			r.With(h.require(agent, reader, auditor, admin)).Head("/"+t+"/{name}", h.head(t))
			r.With(h.require(readers...)).Get("/"+t+"/{name}", h.get(t))
			r.With(h.require(writers...)).Post("/"+t+"/{name}", h.post(t))
			r.With(h.require(agent, reader)).Delete("/"+t+"/{name}", h.delete(t))
		}
	})
	return r
}

// authenticate takes the vault token from the basic-auth password (restic's
// rest:https://user:TOKEN@host/... form; the user name is ignored) or from a
// bearer header.
func (h *handler) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := h.principal(r)
		if err != nil {
			if errors.Is(err, auth.ErrUnauthenticated) {
				w.Header().Set("WWW-Authenticate", `Basic realm="wormvault", charset="UTF-8"`)
			}
			h.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), p)))
	})
}

func (h *handler) principal(r *http.Request) (auth.Principal, error) {
	values := r.Header.Values("Authorization")
	switch {
	case len(values) == 0:
		return auth.Principal{}, fmt.Errorf("%w: missing credentials: use rest:https://user:TOKEN@host/restic/REPO/ or a bearer token", auth.ErrUnauthenticated)
	case len(values) > 1:
		return auth.Principal{}, fmt.Errorf("%w: repeated authorization header", auth.ErrUnauthenticated)
	case len(values[0]) > auth.MaxAuthorizationLen:
		return auth.Principal{}, fmt.Errorf("%w: authorization header too long", auth.ErrUnauthenticated)
	}
	if _, token, ok := r.BasicAuth(); ok {
		return h.verifier.Verify(r.Context(), token)
	}
	return h.verifier.FromRequest(r)
}

// require admits only principals holding one of roles.
func (h *handler) require(roles ...auth.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, _ := auth.FromContext(r.Context()) // set by authenticate
			if err := auth.Require(p, roles...); err != nil {
				h.writeError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// requireScope admits only principals whose scope covers the repository.
// Auditors and admins have no scope (they may list and stat any).
func (h *handler) requireScope(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := auth.FromContext(r.Context()) // set by authenticate
		if err := auth.RequireRestic(p, repoParam(r)); err != nil {
			h.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func subject(r *http.Request) string {
	p, _ := auth.FromContext(r.Context())
	return p.Subject
}

func repoParam(r *http.Request) string { return chi.URLParam(r, "repo") }

func nameParam(r *http.Request, typ string) string {
	if typ == store.ResticConfig {
		return store.ResticConfig
	}
	return chi.URLParam(r, "name")
}

// createRepo is restic init's POST /{repo}/?create=true. It is idempotent.
func (h *handler) createRepo(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("create") != "true" {
		h.writeError(w, r, &store.InvalidError{Field: "create", Reason: "POST on a repository creates it and needs ?create=true"})
		return
	}
	p, _ := auth.FromContext(r.Context())
	// Recorded with the repository: the scope it belongs to.
	scope, err := json.Marshal(p.Scope)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if _, err := h.store.CreateResticRepositoryFor(r.Context(), p.Subject, repoParam(r), scope); err != nil {
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *handler) head(typ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, err := h.store.StatResticFile(r.Context(), repoParam(r), typ, nameParam(r, typ))
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(f.Size, 10))
		w.Header().Set("Accept-Ranges", "bytes")
		w.WriteHeader(http.StatusOK)
	}
}

// get serves a file, or the one byte range restic asks for (restic sends
// Range on every read and accepts 200 or 206).
func (h *handler) get(typ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rc, f, err := h.store.OpenResticFile(r.Context(), repoParam(r), typ, nameParam(r, typ))
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		defer rc.Close()
		start, length, partial, err := parseRange(r.Header.Get("Range"), f.Size)
		if err != nil {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", f.Size))
			h.writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
		status := http.StatusOK
		if partial {
			status = http.StatusPartialContent
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, f.Size))
		}
		w.WriteHeader(status)
		// The content was verified whole before the first byte; skipping
		// the prefix reads through the verifying reader like the rest.
		_, err = io.CopyN(io.Discard, rc, start)
		if err == nil {
			_, err = io.CopyN(w, rc, length)
		}
		if err != nil {
			if errors.Is(err, chunk.ErrHashMismatch) {
				h.log.ErrorContext(r.Context(), "restic file changed on disk while being served; response cut short",
					"repository", f.Repo, "type", f.Type, "name", f.Name, "hash", f.Chunk.String())
			}
			// The status is gone: cutting the connection is the only way
			// left to tell the client the body is not good.
			panic(http.ErrAbortHandler)
		}
	}
}

// post stores a file. Success is exactly 200, as restic requires; so is an
// upload of a name already stored (its content hashes to its name, so it
// is the same), which makes restic's retries safe.
func (h *handler) post(typ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit := h.maxChunk
		if typ == store.ResticLocks {
			limit = min(limit, store.MaxResticLockSize)
		}
		// Refuse a declared oversize body before reading it; the
		// MaxBytesReader stops one that lies about its length.
		if r.ContentLength > limit {
			h.writeError(w, r, &http.MaxBytesError{Limit: limit})
			return
		}
		body := clientBody{http.MaxBytesReader(w, r.Body, limit)}
		if _, _, err := h.store.PutResticFile(r.Context(), subject(r), repoParam(r), typ, nameParam(r, typ), body); err != nil {
			h.writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

// delete removes a lock; the store refuses every other type.
func (h *handler) delete(typ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h.store.DeleteResticFile(r.Context(), repoParam(r), typ, nameParam(r, typ)); err != nil {
			h.writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

type listItem struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// list answers GET /{repo}/{type}/: a JSON array of names (v1), or of
// names and sizes (v2) when the client accepts ContentTypeV2. It streams,
// a page of names at a time.
func (h *handler) list(typ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, repo := r.Context(), repoParam(r)
		files, err := h.store.ListResticFiles(ctx, repo, typ, "", h.listPage)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		v2 := acceptsV2(r.Header.Values("Accept"))
		w.Header().Set("Content-Type", ContentTypeV1)
		if v2 {
			w.Header().Set("Content-Type", ContentTypeV2)
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "[")
		first := true
		for {
			for _, f := range files {
				var b []byte
				if v2 {
					b, _ = json.Marshal(listItem{Name: f.Name, Size: f.Size})
				} else {
					b, _ = json.Marshal(f.Name)
				}
				if !first {
					io.WriteString(w, ",")
				}
				first = false
				if _, err := w.Write(b); err != nil {
					return // the client went away
				}
			}
			if len(files) < h.listPage {
				break
			}
			if files, err = h.store.ListResticFiles(ctx, repo, typ, files[len(files)-1].Name, h.listPage); err != nil {
				h.log.ErrorContext(ctx, "restic listing failed mid-stream; response cut short", "repository", repo, "type", typ, "err", err)
				panic(http.ErrAbortHandler)
			}
		}
		io.WriteString(w, "]\n")
	}
}

// acceptsV2 reports whether an Accept header lists restic's v2 media type.
func acceptsV2(accept []string) bool {
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mt), ContentTypeV2) {
				return true
			}
		}
	}
	return false
}

// parseRange reads a Range header for a file of size bytes. partial is
// false when the whole file is to be sent: no header, a unit other than
// bytes, several ranges (which restic never asks for; a server may answer
// them whole), or an empty file. A single byte range that cannot be parsed
// or selects nothing is ErrRangeNotSatisfiable.
func parseRange(header string, size int64) (start, length int64, partial bool, err error) {
	spec, ok := strings.CutPrefix(header, "bytes=")
	if header == "" || !ok || strings.Contains(spec, ",") || size == 0 {
		return 0, size, false, nil
	}
	bad := fmt.Errorf("%w: %q for a file of %d bytes", ErrRangeNotSatisfiable, header, size)
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, false, bad
	}
	if first == "" { // suffix: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false, bad
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	start, err = strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false, bad
	}
	end := size - 1
	if last != "" {
		e, err := strconv.ParseInt(last, 10, 64)
		if err != nil || e < start {
			return 0, 0, false, bad
		}
		end = min(e, size-1)
	}
	return start, end - start + 1, true, nil
}

// clientBody marks errors reading an upload as the client's (400): a
// connection closed mid-body is bad input, not a server failure. An
// oversize body keeps its own error (413).
type clientBody struct{ io.ReadCloser }

func (b clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		var tooBig *http.MaxBytesError
		if !errors.As(err, &tooBig) {
			err = &store.InvalidError{Field: "request body", Reason: err.Error()}
		}
	}
	return n, err
}
