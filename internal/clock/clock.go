// Package clock provides the time source that every time-dependent part of
// the vault takes in its constructor, so that tests can move time instead of
// sleeping.
package clock

import (
	"sync"
	"time"
)

// Clock tells the current time.
type Clock interface {
	Now() time.Time
}

// Real is the system clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Fake is a manually advanced clock for tests. It is safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	onMoved []func(time.Time)
}

// NewFake returns a Fake set to t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake's current time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the fake's time forward by d.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.moved()
}

// Set moves the fake to t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.moved()
}

// OnMove calls fn with the fake's time now and after every Advance or Set,
// before they return: a test keeps another clock in step with the fake,
// such as a test database's (pgtest.FollowClock). fn runs with the fake
// locked, so that followers see the moves in order; it must not call the
// fake.
func (f *Fake) OnMove(fn func(time.Time)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onMoved = append(f.onMoved, fn)
	fn(f.now)
}

// moved tells the followers the new time, then unlocks f.
func (f *Fake) moved() {
	defer f.mu.Unlock()
	for _, fn := range f.onMoved {
		fn(f.now)
	}
}
