package server

import (
	"slices"
	"sync"
	"time"
)

// Clock is the coordinator's source of time for its own deadlines: the time stamped on
// proposed commands (which the FSM uses, so Apply stays deterministic), heartbeat TTLs
// and the node-down decisions they lead to, and drain deadlines. Raft's timeouts,
// apply timeouts and retry back-offs stay on real time. Config.Clock nil means
// RealClock; tests use a FakeClock and move time with Advance.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer whose channel receives the time once d has passed.
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f in its own goroutine once d has passed; the returned timer's
	// channel is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a single event of a Clock, as time.Timer.
type Timer interface {
	// C returns the channel the time is sent on (nil for AfterFunc timers).
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was still pending.
	Stop() bool
}

// RealClock is the Clock of the time package.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// AfterFunc wraps time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

// FakeClock is a Clock for tests: its time moves only when Advance or Set is called,
// and timers fire then, in deadline order. It is safe for concurrent use.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever a timer is added
}

// NewFakeClock returns a FakeClock at now.
func NewFakeClock(now time.Time) *FakeClock {
	return &FakeClock{now: now, changed: make(chan struct{})}
}

type fakeTimer struct {
	clock *FakeClock
	at    time.Time
	c     chan time.Time // nil for AfterFunc timers
	f     func()
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	i := slices.Index(t.clock.timers, t)
	if i < 0 {
		return false
	}
	t.clock.timers = slices.Delete(t.clock.timers, i, i+1)
	return true
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires once the fake time reaches Now()+d (at once when
// d <= 0).
func (c *FakeClock) NewTimer(d time.Duration) Timer {
	return c.add(d, make(chan time.Time, 1), nil)
}

// AfterFunc calls f in its own goroutine once the fake time reaches Now()+d.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	return c.add(d, nil, f)
}

func (c *FakeClock) add(d time.Duration, ch chan time.Time, f func()) *fakeTimer {
	c.mu.Lock()
	t := &fakeTimer{clock: c, at: c.now.Add(d), c: ch, f: f}
	if d <= 0 {
		now := c.now
		c.mu.Unlock()
		t.fire(now)
		return t
	}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return t
}

func (t *fakeTimer) fire(now time.Time) {
	if t.f != nil {
		go t.f()
		return
	}
	t.c <- now
}

// Advance moves the fake time forward by d and fires every timer due by then, the
// earliest first.
func (c *FakeClock) Advance(d time.Duration) {
	c.Set(c.Now().Add(d))
}

// Set moves the fake time to now (never backwards) and fires every timer due by then,
// the earliest first.
func (c *FakeClock) Set(now time.Time) {
	c.mu.Lock()
	if now.After(c.now) {
		c.now = now
	}
	var due []*fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		due = append(due, t)
		return true
	})
	now = c.now
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.fire(now)
	}
}

// Timers returns how many timers are waiting to fire.
func (c *FakeClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitForTimer returns once a timer waits for a deadline at or before at, or when done
// is closed (it then reports false): a test calls it to know that the code under test
// has armed the timer the test is about to fire.
func (c *FakeClock) WaitForTimer(at time.Time, done <-chan struct{}) bool {
	for {
		c.mu.Lock()
		found := slices.ContainsFunc(c.timers, func(t *fakeTimer) bool { return !t.at.After(at) })
		changed := c.changed
		c.mu.Unlock()
		if found {
			return true
		}
		select {
		case <-changed:
		case <-done:
			return false
		}
	}
}
