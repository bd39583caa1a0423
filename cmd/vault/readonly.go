package main

// Starting without downtime (issue 14): the listener is bound first and
// reads are served as soon as the store is open. The start-up reconcile
// runs in two parts (store/online.go): a short one (temp files of
// interrupted writes, packs a crash or a shutdown left open) after which
// uploads are admitted, and a long one (every chunk file against the
// index, every row against its content) in the background, resuming from
// a cursor in the data directory if a restart interrupted it.
//
// Starting on a full disk: the vault must come up and serve reads
// (restores above all) even when its data directory's filesystem is full.
// Start-up writes that need space (the audit checkpoint kept in the data
// directory, the journal entries of chunks the reconcile adopts) are
// tolerated when they fail for want of it: the vault then serves read-only
// (uploads get 507) and retries until they succeed, without a restart.

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/wormvault/wormvault/internal/store"
)

// readOnlyRetry is how often a start-up reconcile that could not finish
// (for want of space, or because the index failed) is tried again.
const readOnlyRetry = 5 * time.Second

// orphanRetry is how often content whose row failed to commit is offered
// to the index again.
const orphanRetry = 5 * time.Second

// reconcileCursorFile, in the data directory, keeps the position of an
// unfinished background reconcile. It lives beside what the reconcile
// walks rather than in the database: it describes a walk of the data
// directory, it must survive the index being rebuilt or replaced, and a
// database credential must not be able to move it to hide content from
// the reconcile.
const reconcileCursorFile = "reconcile-cursor.json"

// reconcileAtStart runs the short part of the start-up reconcile, which
// admits uploads, then the rest in the background; when that completes it
// calls then (which starts what must not run before it: the deletion
// executor). If a part fails for want of space, the store is made
// read-only (uploads get 507) and the part is retried every retry until it
// completes, without a restart. Any other failure of the short part is
// returned (the vault does not start); one of the background part is
// reported by /readyz and retried, resuming from the cursor.
func reconcileAtStart(ctx context.Context, st *store.Store, retry time.Duration, log *slog.Logger, then func()) error {
	start := time.Now()
	rep, err := st.ReconcileTail(ctx)
	if err != nil && !store.NoSpace(err) {
		return fmt.Errorf("serve: %w", err)
	}
	readOnly := false
	if err != nil {
		readOnly = true
		noSpace(st, err, retry, log)
	} else {
		log.Info("pack tails checked: uploads admitted; reconcile continues in the background",
			"temp_removed", rep.TempRemoved, "packs_scanned", rep.PacksScanned, "packs_sealed", rep.PacksSealed, "duration", time.Since(start))
	}
	go func() {
		last := ""
		wait := func() bool {
			t := time.NewTimer(retry)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return false
			case <-t.C:
				return true
			}
		}
		for err != nil {
			if !wait() {
				return
			}
			if rep, err = st.ReconcileTail(ctx); err != nil && ctx.Err() == nil {
				last = logRetry(st, err, last, retry, log)
			}
		}
		for {
			err := st.ReconcileRest(ctx, &rep)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			if store.NoSpace(err) && !readOnly {
				readOnly = true
				noSpace(st, err, retry, log)
			}
			last = logRetry(st, err, last, retry, log)
			if !wait() {
				return
			}
		}
		logReconcile(rep, time.Since(start), log)
		if readOnly {
			st.SetReadOnly(nil)
			log.Info("start-up reconcile completed: uploads are admitted again")
		}
		then()
	}()
	return nil
}

// noSpace makes the store read-only after a reconcile failed for want of
// space.
func noSpace(st *store.Store, err error, retry time.Duration, log *slog.Logger) {
	log.Error("start-up reconcile could not finish: the data directory's filesystem is full; "+
		"serving reads only (uploads get 507) until it completes; free space to resume",
		"err", err, "retry_every", retry)
	st.SetReadOnly(fmt.Errorf("start-up reconcile could not finish: %w", err))
}

// logRetry records a failed attempt for /readyz and logs it unless it is
// the same failure as last time (or a full disk, said once already).
func logRetry(st *store.Store, err error, last string, retry time.Duration, log *slog.Logger) string {
	st.SetReconcileError(err)
	if !store.NoSpace(err) && err.Error() != last {
		log.Error("start-up reconcile failed; retrying", "err", err, "retry_every", retry)
	}
	return err.Error()
}

// logReconcile logs what the completed reconcile found.
func logReconcile(rep store.ReconcileReport, took time.Duration, log *slog.Logger) {
	log.Info("reconciled disk and index", "temp_removed", rep.TempRemoved, "adopted", rep.Adopted,
		"quarantined", rep.Quarantined, "missing", rep.Missing, "packs_scanned", rep.PacksScanned,
		"packs_sealed", rep.PacksSealed, "torn_tails", rep.TornTails, "corrupt_records", rep.CorruptRecords,
		"duration", took)
	if rep.Missing > 0 {
		log.Error("DATA LOSS: indexed chunks have no content on disk", "count", rep.Missing, "first", rep.MissingList)
	}
}

// runAdoptOrphans offers the index, every interval, the content whose row
// failed to commit while it was down (store.AdoptOrphans), until ctx is
// done: such chunks become readable without a restart once it answers.
func runAdoptOrphans(ctx context.Context, st *store.Store, every time.Duration, log *slog.Logger) {
	log = log.With("component", "reconcile")
	t := time.NewTicker(every)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if st.PendingOrphans() == 0 {
			continue
		}
		rep, err := st.AdoptOrphans(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if err.Error() != last {
				log.Warn("content whose row failed to commit waits for the index", "pending", st.PendingOrphans(), "err", err)
			}
			last = err.Error()
		case err == nil:
			last = ""
			log.Info("adopted content whose row failed to commit", "adopted", rep.Adopted,
				"quarantined", rep.Quarantined, "tombstoned", rep.Tombstoned)
		}
	}
}

// reconcileOnce runs the whole reconcile in the foreground, for commands
// that open the store without serving (vault replicate).
func reconcileOnce(ctx context.Context, st *store.Store, log *slog.Logger) error {
	start := time.Now()
	rep, err := st.Reconcile(ctx)
	if err != nil {
		return err
	}
	logReconcile(rep, time.Since(start), log)
	return nil
}
