package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/chunk"
)

// The client is tested against a stub; the real server is exercised by the
// CLI tests in cmd/vault.

func TestNew(t *testing.T) {
	for _, tt := range []struct {
		url, token string
		ok         bool
	}{
		{"http://127.0.0.1:8420", "t", true},
		{"https://vault.example/prefix/", "t", true},
		{"127.0.0.1:8420", "t", false},
		{"ftp://vault", "t", false},
		{"http://", "t", false},
		{"http://vault?x=1", "t", false},
		{"http://vault", "", false},
	} {
		if _, err := New(tt.url, tt.token, nil); (err == nil) != tt.ok {
			t.Errorf("New(%q, %q) error = %v, want ok %v", tt.url, tt.token, err, tt.ok)
		}
	}
}

func stub(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL+"/prefix", "tok", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRequests(t *testing.T) {
	var got *http.Request
	c := stub(t, func(w http.ResponseWriter, r *http.Request) {
		got = r
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"snapshots":[{"id":7,"source":"db01","tags":["a"]}],"next":"c2"}`)
	})
	from := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	page, err := c.Snapshots(context.Background(), SnapshotFilter{Source: "db01", Tags: []string{"a", "b"}, TakenFrom: from},
		Page{Limit: 10, Cursor: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Snapshots) != 1 || page.Snapshots[0].ID != 7 || page.Next != "c2" {
		t.Errorf("page = %+v", page)
	}
	q := got.URL.Query()
	if got.URL.Path != "/prefix/v1/snapshots" || got.Header.Get("Authorization") != "Bearer tok" ||
		q.Get("source") != "db01" || !slices.Equal(q["tag"], []string{"a", "b"}) || q.Get("limit") != "10" ||
		q.Get("cursor") != "c1" || q.Get("taken_from") != "2026-01-02T02:04:05Z" {
		t.Errorf("request = %s %s %v", got.Method, got.URL, got.Header)
	}
}

func TestErrors(t *testing.T) {
	h := chunk.Sum([]byte("x"))
	tests := []struct {
		name    string
		status  int
		body    string
		code    string
		missing []chunk.Hash
	}{
		{"vault error", 403, `{"error":{"code":"forbidden","message":"no"}}`, "forbidden", nil},
		{"missing chunks", 422, `{"error":{"code":"missing_chunks","message":"m","missing":["` + h.String() + `"],"missing_total":5}}`, "missing_chunks", []chunk.Hash{h}},
		{"proxy page", 502, `<html>bad gateway</html>`, "", nil},
		{"empty", 500, ``, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := stub(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := c.RetentionSummary(context.Background())
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != tt.status || e.Code != tt.code || !slices.Equal(e.Missing, tt.missing) {
				t.Fatalf("err = %#v, want status %d code %q", err, tt.status, tt.code)
			}
			if e.Message == "" || !strings.Contains(err.Error(), "vault:") {
				t.Errorf("error text %q", err)
			}
			if tt.code != "" && !IsCode(err, tt.code) {
				t.Errorf("IsCode(%v, %q) = false", err, tt.code)
			}
		})
	}
}

func TestGetChunkVerifies(t *testing.T) {
	good := []byte("the content")
	h := chunk.Sum(good)
	for _, tt := range []struct {
		name    string
		serve   []byte
		wantErr error
	}{
		{"intact", good, nil},
		{"altered", []byte("the kontent"), chunk.ErrHashMismatch},
		{"truncated", good[:5], chunk.ErrHashMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := stub(t, func(w http.ResponseWriter, r *http.Request) { w.Write(tt.serve) })
			rc, err := c.GetChunk(context.Background(), h)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			_, err = io.ReadAll(rc)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("read err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
