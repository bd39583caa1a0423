// Package notify tells humans about deletions in flight: every request,
// approval, schedule, cancel, expiry and execution is POSTed as JSON to a
// webhook, so that a deletion cannot run its delay unnoticed. Damage found
// and repaired (chunk.damaged, chunk.repaired) and finished scrub passes
// (scrub.pass) go the same way.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/wormvault/wormvault/internal/store"
)

// Webhook delivers events to one URL, in order, from a bounded queue,
// retrying each a few times. Delivery never blocks or fails the action
// that caused the event: the audit log is the record, the webhook the
// alarm bell.
type Webhook struct {
	url    string
	client *http.Client
	log    *slog.Logger
	queue  chan store.Event
	// Retries and Backoff bound the attempts for one event.
	retries int
	backoff time.Duration
}

// NewWebhook returns a webhook for url; start delivery with Run.
func NewWebhook(url string, client *http.Client, log *slog.Logger) *Webhook {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &Webhook{url: url, client: client, log: log.With("component", "webhook"),
		queue: make(chan store.Event, 1024), retries: 3, backoff: time.Second}
}

// Notify queues e. If the queue is full the event is dropped and logged
// at Error: it is still in the audit log.
func (w *Webhook) Notify(ctx context.Context, e store.Event) {
	select {
	case w.queue <- e:
	default:
		w.log.ErrorContext(ctx, "webhook queue full; event dropped (it is in the audit log)", "type", e.Type, "deletion_id", e.Deletion.ID)
	}
}

// Run delivers queued events until ctx is done.
func (w *Webhook) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-w.queue:
			w.deliver(ctx, e)
		}
	}
}

func (w *Webhook) deliver(ctx context.Context, e store.Event) {
	body, err := json.Marshal(e)
	if err != nil {
		w.log.ErrorContext(ctx, "webhook: encode event", "err", err)
		return
	}
	for attempt := 1; ; attempt++ {
		err := w.post(ctx, body)
		if err == nil {
			return
		}
		if attempt > w.retries || ctx.Err() != nil {
			w.log.ErrorContext(ctx, "webhook delivery failed", "type", e.Type, "deletion_id", e.Deletion.ID, "err", err)
			return
		}
		t := time.NewTimer(w.backoff << (attempt - 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (w *Webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "wormvault-webhook/1")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
