package notify

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/store"
)

func TestWebhookDeliversInOrderWithRetry(t *testing.T) {
	t.Parallel()
	got := make(chan store.Event, 10)
	fails := 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
			t.Errorf("request %s with %q", r.Method, r.Header.Get("Content-Type"))
		}
		if fails > 0 {
			fails--
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var e store.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Errorf("body: %v", err)
		}
		got <- e
	}))
	defer srv.Close()

	w := NewWebhook(srv.URL, srv.Client(), slog.New(slog.DiscardHandler))
	w.backoff = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	w.Notify(ctx, store.Event{Type: "deletion.requested", Deletion: store.Deletion{ID: 7}})
	w.Notify(ctx, store.Event{Type: "deletion.scheduled", Deletion: store.Deletion{ID: 7}})
	for _, want := range []string{"deletion.requested", "deletion.scheduled"} {
		select {
		case e := <-got:
			if e.Type != want || e.Deletion.ID != 7 {
				t.Errorf("got %s for %d, want %s for 7", e.Type, e.Deletion.ID, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s event delivered", want)
		}
	}
}

func TestWebhookQueueFullDrops(t *testing.T) {
	t.Parallel()
	w := NewWebhook("http://127.0.0.1:1", nil, slog.New(slog.DiscardHandler))
	w.queue = make(chan store.Event, 1)
	w.Notify(context.Background(), store.Event{Type: "a"})
	w.Notify(context.Background(), store.Event{Type: "b"}) // must not block
	if len(w.queue) != 1 || (<-w.queue).Type != "a" {
		t.Error("queue should hold the first event only")
	}
}
