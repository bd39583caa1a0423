package clock

import (
	"testing"
	"time"
)

func TestFakeOnMove(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := NewFake(t0)
	var seen []time.Time
	f.OnMove(func(now time.Time) { seen = append(seen, now) })
	f.Advance(time.Hour)
	f.Set(t0.Add(-time.Minute))
	want := []time.Time{t0, t0.Add(time.Hour), t0.Add(-time.Minute)}
	if len(seen) != len(want) {
		t.Fatalf("followers saw %v, want %v", seen, want)
	}
	for i := range want {
		if !seen[i].Equal(want[i]) {
			t.Errorf("move %d: %v, want %v", i, seen[i], want[i])
		}
	}
	if !f.Now().Equal(t0.Add(-time.Minute)) {
		t.Errorf("Now = %v", f.Now())
	}
}
