package main

// Starting on a full disk (issue 14): the vault must come up and serve
// reads (restores above all) even when its data directory's filesystem is
// full, rather than refuse to start. Start-up writes that need space (the
// audit checkpoint kept in the data directory, the journal entries of
// chunks the reconcile adopts) are tolerated when they fail for want of
// it: the vault then serves read-only (uploads get 507) and retries until
// they succeed, without a restart.

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/wormvault/wormvault/internal/store"
)

// readOnlyRetry is how often a start-up reconcile that could not finish
// for want of space is tried again.
const readOnlyRetry = 5 * time.Second

// reconcileAtStart runs the start-up reconcile, then calls then (which
// starts what must not run before it: the deletion executor). If the
// reconcile fails for want of space, the store is made read-only, the
// listener may open at once, and the reconcile is retried in the
// background every retry until it completes; only then are uploads
// admitted and then called. Any other failure is returned: the vault
// does not start.
func reconcileAtStart(ctx context.Context, st *store.Store, retry time.Duration, log *slog.Logger, then func()) error {
	err := reconcileOnce(ctx, st, log)
	if err == nil {
		then()
		return nil
	}
	if !store.NoSpace(err) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Error("start-up reconcile could not finish: the data directory's filesystem is full; "+
		"serving reads only (uploads get 507) until it completes; free space to resume",
		"err", err, "retry_every", retry)
	st.SetReadOnly(fmt.Errorf("start-up reconcile could not finish: %w", err))
	go func() {
		t := time.NewTicker(retry)
		defer t.Stop()
		last := err.Error()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := reconcileOnce(ctx, st, log)
			switch {
			case err == nil:
				st.SetReadOnly(nil)
				log.Info("start-up reconcile completed: uploads are admitted again")
				then()
				return
			case ctx.Err() != nil:
				return
			case store.NoSpace(err):
				// Still full: said once already.
			case err.Error() != last:
				log.Error("start-up reconcile failed; retrying", "err", err, "retry_every", retry)
			}
			last = err.Error()
		}
	}()
	return nil
}

// reconcileOnce compares disk and index once and logs what it found.
func reconcileOnce(ctx context.Context, st *store.Store, log *slog.Logger) error {
	start := time.Now()
	rep, err := st.Reconcile(ctx)
	if err != nil {
		return err
	}
	log.Info("reconciled disk and index", "temp_removed", rep.TempRemoved, "adopted", rep.Adopted,
		"quarantined", rep.Quarantined, "missing", rep.Missing, "packs_scanned", rep.PacksScanned,
		"torn_tails", rep.TornTails, "corrupt_records", rep.CorruptRecords, "duration", time.Since(start))
	if rep.Missing > 0 {
		log.Error("DATA LOSS: indexed chunks have no content on disk", "count", rep.Missing, "first", rep.MissingList)
	}
	return nil
}
