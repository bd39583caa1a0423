package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/wormvault/wormvault/internal/chunk"
	"github.com/wormvault/wormvault/internal/manifest"
	"github.com/wormvault/wormvault/internal/store"
)

func TestPlaceHold(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	data := ts.mustChunks(t, 4)
	root := ts.mustManifest(t, manifest.Manifest{Chunks: data[:2]})
	snap := ts.mustCommit(t, newSnap("db01", "s1", epoch.AddDate(1, 0, 0), root)).Snapshot

	h1, err := ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "case 42", Reason: "litigation\nhold everything", Chunks: []chunk.Hash{data[3], data[2], data[3]}})
	if err != nil {
		t.Fatal(err)
	}
	if h1.Kind != store.HoldChunks || h1.TargetCount != 2 || h1.PlacedBy != "admin-1" || !h1.PlacedAt.Equal(epoch) ||
		h1.ReleasedAt != nil || !slices.Equal(h1.Chunks, sortedHashes(data[2], data[3])) {
		t.Errorf("chunk hold = %+v", h1)
	}
	h2, err := ts.PlaceHold(ctx, "admin-2", store.NewHold{Name: "audit", Reason: "regulator", Snapshots: []int64{snap.ID}})
	if err != nil || h2.Kind != store.HoldSnapshots || !slices.Equal(h2.Snapshots, []int64{snap.ID}) {
		t.Fatalf("snapshot hold = %+v, %v", h2, err)
	}
	h3, err := ts.PlaceHold(ctx, "admin-1", store.NewHold{Name: "db01", Reason: "all of db01", Source: "db01"})
	if err != nil || h3.Kind != store.HoldSource || h3.Source != "db01" {
		t.Fatalf("source hold = %+v, %v", h3, err)
	}

	got, err := ts.GetHold(ctx, h1.ID)
	if err != nil || got.Reason != "litigation\nhold everything" || !slices.Equal(got.Chunks, h1.Chunks) {
		t.Errorf("GetHold = %+v, %v; want %+v", got, err, h1)
	}
	if _, err := ts.GetHold(ctx, 99); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetHold(99) err = %v, want ErrNotFound", err)
	}
	s, _ := ts.GetSnapshot(ctx, snap.ID)
	if !s.Held {
		t.Errorf("held snapshot reported not held")
	}

	// Listed in order, by pages.
	var ids []int64
	cursor := ""
	for {
		p, err := ts.ListHolds(ctx, 2, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range p.Holds {
			ids = append(ids, h.ID)
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if !slices.Equal(ids, []int64{h1.ID, h2.ID, h3.ID}) {
		t.Errorf("ListHolds ids = %v", ids)
	}
	first, _ := ts.ListHolds(ctx, 1, "")
	for _, bad := range []string{flipChar(first.Next, 5), first.Next[1:], "x"} {
		if _, err := ts.ListHolds(ctx, 2, bad); !isInvalid(err) {
			t.Errorf("ListHolds(cursor %q) err = %v, want InvalidError", bad, err)
		}
	}

	// Every placement is audited, by its admin.
	entries, _ := ts.AuditEntries(ctx, 0, 1000)
	var placed []string
	for _, e := range entries {
		if e.Action == "hold.place" {
			placed = append(placed, e.Actor)
		}
	}
	if !slices.Equal(placed, []string{"admin-1", "admin-2", "admin-1"}) {
		t.Errorf("hold.place audit actors = %v", placed)
	}

	// Release is a deletion request: the hold stays in force until an
	// approved request executes (see deletions_test.go).
	d, err := ts.RequestDeletion(ctx, "admin-1", store.DeletionTargets{Kind: store.DeleteHoldRelease, Hold: h1.ID}, "case closed")
	if err != nil || d.Kind != store.DeleteHoldRelease || d.State != store.StateRequested {
		t.Errorf("hold release request = %+v, %v; want a requested hold_release", d, err)
	}
	if got, err := ts.GetHold(ctx, h1.ID); err != nil || got.ReleasedAt != nil {
		t.Errorf("hold after release request = %+v, %v; want still in force", got, err)
	}
	if _, err := ts.RequestDeletion(ctx, "admin-1", store.DeletionTargets{Kind: store.DeleteHoldRelease, Hold: 99}, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("release of unknown hold 99: err = %v, want ErrNotFound", err)
	}
}

func TestPlaceHoldRefused(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t)
	ctx := context.Background()
	data := ts.mustChunks(t, 2)
	root := ts.mustManifest(t, manifest.Manifest{Chunks: data})
	ts.mustCommit(t, newSnap("db01", "s1", epoch.AddDate(1, 0, 0), root))
	_, absent := randomChunk(t, 10)
	many := make([]chunk.Hash, 51)
	for i := range many {
		many[i] = chunk.Sum([]byte{byte(i)})
	}
	tests := []struct {
		name        string
		hold        store.NewHold
		wantErr     error
		wantInvalid string
		wantMissing []chunk.Hash
	}{
		{name: "unknown chunk", hold: store.NewHold{Name: "n", Reason: "r", Chunks: []chunk.Hash{data[0], absent}}, wantMissing: []chunk.Hash{absent}},
		{name: "unknown snapshot", hold: store.NewHold{Name: "n", Reason: "r", Snapshots: []int64{1, 7}}, wantErr: store.ErrNotFound},
		{name: "unknown source", hold: store.NewHold{Name: "n", Reason: "r", Source: "db99"}, wantErr: store.ErrNotFound},
		{name: "no target", hold: store.NewHold{Name: "n", Reason: "r"}, wantInvalid: "target"},
		{name: "two kinds of target", hold: store.NewHold{Name: "n", Reason: "r", Chunks: data[:1], Source: "db01"}, wantInvalid: "target"},
		{name: "no name", hold: store.NewHold{Name: " ", Reason: "r", Source: "db01"}, wantInvalid: "name"},
		{name: "no reason", hold: store.NewHold{Name: "n", Source: "db01"}, wantInvalid: "reason"},
		{name: "control character", hold: store.NewHold{Name: "n\x1b[2J", Reason: "r", Source: "db01"}, wantInvalid: "name"},
		{name: "reason too long", hold: store.NewHold{Name: "n", Reason: strings.Repeat("x", 2001), Source: "db01"}, wantInvalid: "reason"},
		{name: "bad source", hold: store.NewHold{Name: "n", Reason: "r", Source: "db 01"}, wantInvalid: "source"},
		{name: "too many chunks", hold: store.NewHold{Name: "n", Reason: "r", Chunks: many}, wantInvalid: "chunks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.vaultState(t)
			_, err := ts.PlaceHold(ctx, "admin-1", tt.hold)
			var inv *store.InvalidError
			var missing *store.MissingChunksError
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			case tt.wantInvalid != "":
				if !errors.As(err, &inv) || inv.Field != tt.wantInvalid {
					t.Fatalf("err = %v, want InvalidError on %s", err, tt.wantInvalid)
				}
			default:
				if !errors.As(err, &missing) || !slices.Equal(missing.Hashes, tt.wantMissing) {
					t.Fatalf("err = %v, want missing %v", err, tt.wantMissing)
				}
			}
			if after := ts.vaultState(t); after != before {
				t.Errorf("state changed:\n before %s\n after  %s", before, after)
			}
		})
	}
}
