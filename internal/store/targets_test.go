package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/wormvault/wormvault/internal/approval"
	"github.com/wormvault/wormvault/internal/audit"
	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/store"
)

// The store writes each kind of targets text exactly as the shared policy
// engine reads it: the executor and the auditor judge what the admins
// signed, not a re-reading of it.
func TestTargetsTextIsTheEngines(t *testing.T) {
	t.Parallel()
	ds := newDeletionStore(t)
	ctx := context.Background()
	b, h := randomChunk(t, 100)
	ds.mustPut(t, b)
	hold, err := ds.PlaceHold(ctx, "admin-a", store.NewHold{Name: "h", Reason: "r", Chunks: []chunk.Hash{h}})
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := approval.GenerateKey()
	for _, tg := range []store.DeletionTargets{
		{Kind: store.DeleteChunks, Chunks: []chunk.Hash{h, chunk.Sum([]byte("other"))}},
		{Kind: store.DeleteSnapshots, Snapshots: []int64{7, 3}},
		{Kind: store.DeleteExpired, Before: epoch.Add(time.Hour + 123*time.Nanosecond)},
		{Kind: store.DeleteExpired, Before: epoch, Source: "db01"},
		{Kind: store.DeleteHoldRelease, Hold: hold.ID},
		{Kind: store.DeleteAdminSet, Change: &store.AdminChange{Op: store.AdminAdd, Name: "admin-e", Key: key}},
		{Kind: store.DeleteAdminSet, Change: &store.AdminChange{Op: store.AdminRotate, Name: "admin-b", Key: key}},
		{Kind: store.DeleteAdminSet, Change: &store.AdminChange{Op: store.AdminRemove, Name: "admin-d"}},
		{Kind: store.DeleteAdminSet, Change: &store.AdminChange{Op: store.AdminPolicy, Policy: store.Policy{ApprovalsRequired: 2,
			Delay: store.Duration(96 * time.Hour), GovernanceApprovals: 3, GovernanceDelay: store.Duration(200 * time.Hour)}}},
	} {
		d, err := ds.RequestDeletion(ctx, "admin-a", tg, "test")
		if err != nil {
			t.Fatalf("RequestDeletion(%+v): %v", tg, err)
		}
		got, err := audit.ParseTargets(d.Targets)
		if err != nil {
			t.Errorf("the engine cannot read %q: %v", d.Targets, err)
			continue
		}
		if text, _ := got.Canonical(); text != d.Targets || got.Kind != d.Kind {
			t.Errorf("the engine reads %q as %q", d.Targets, text)
		}
	}
}
