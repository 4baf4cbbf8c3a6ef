package pki

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/internal/testenv"
)

// fakeClock is a Clock that moves only when told. Every After call is announced on
// waits, so a test knows when RenewLoop has gone to sleep and until when.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []fakeTimer
	waits   chan time.Time
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, waits: make(chan time.Time, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	at := c.now.Add(d)
	if d <= 0 {
		ch <- c.now
	} else {
		c.pending = append(c.pending, fakeTimer{at, ch})
	}
	c.mu.Unlock()
	c.waits <- at
	return ch
}

// Set moves the clock to now and fires the timers that are due.
func (c *fakeClock) Set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
	kept := c.pending[:0]
	for _, p := range c.pending {
		if p.at.After(now) {
			kept = append(kept, p)
			continue
		}
		p.ch <- now
	}
	c.pending = kept
}

// nextWait returns the deadline of the next After call.
func (c *fakeClock) nextWait(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-c.waits:
		return at
	case <-time.After(10 * time.Second):
		t.Fatal("RenewLoop did not wait")
		return time.Time{}
	}
}

// renewScript is a RenewFunc driven step by step by a test: each call announces the
// clock's time on calls and returns what the test sends on results.
type renewScript struct {
	calls   chan time.Time
	results chan renewResult
}

type renewResult struct {
	certPEM, keyPEM []byte
	err             error
}

func newRenewScript() *renewScript {
	return &renewScript{calls: make(chan time.Time), results: make(chan renewResult)}
}

func (s *renewScript) renew(clock Clock) RenewFunc {
	return func(ctx context.Context) ([]byte, []byte, error) {
		s.calls <- clock.Now()
		r := <-s.results
		return r.certPEM, r.keyPEM, r.err
	}
}

func (s *renewScript) nextCall(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-s.calls:
		return at
	case <-time.After(10 * time.Second):
		t.Fatal("RenewLoop did not call renew")
		return time.Time{}
	}
}

func TestRenewAt(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	leaf := issueLeaf(t, ca, SignRequest{Identity: Identity{Name: "n", Role: RoleAgent}, TTL: 9*time.Hour - clockSkew}, t0)
	// Valid from t0-5m to t0+8h55m: nine hours, so renewal is due six hours in.
	if got, want := RenewAt(leaf), t0.Add(-clockSkew).Add(6*time.Hour); !got.Equal(want) {
		t.Errorf("RenewAt = %v, want %v", got, want)
	}
}

func TestRenewLoop(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0.Add(-time.Hour))
	id := Identity{Name: "node-1", Role: RoleAgent}
	const ttl = 9*time.Hour - clockSkew // nine hours with the backdating
	certPEM, keyPEM := issue(t, ca, SignRequest{Identity: id, TTL: ttl}, t0)
	var logs testenv.Buffer
	r, err := NewReloader(certPEM, keyPEM, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := r.Leaf()
	dueFirst := first.NotBefore.Add(6 * time.Hour)

	clk := newFakeClock(t0)
	script := newRenewScript()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.RenewLoop(ctx, script.renew(clk), clk)
	}()

	// It sleeps until two thirds of the certificate's life.
	if at := clk.nextWait(t); !at.Equal(dueFirst) {
		t.Fatalf("RenewLoop sleeps until %v, want %v", at, dueFirst)
	}
	clk.Set(dueFirst.Add(-time.Second))
	select {
	case at := <-script.calls:
		t.Fatalf("renewed at %v, before it was due", at)
	default:
	}

	// Due: renew is called. Two failures back off 1s then 2s.
	clk.Set(dueFirst)
	if at := script.nextCall(t); !at.Equal(dueFirst) {
		t.Fatalf("renew called at %v, want %v", at, dueFirst)
	}
	script.results <- renewResult{err: errors.New("coordinator unreachable")}
	if at := clk.nextWait(t); !at.Equal(dueFirst.Add(RenewBackoffMin)) {
		t.Fatalf("first retry at %v, want %v", at, dueFirst.Add(RenewBackoffMin))
	}
	clk.Set(dueFirst.Add(RenewBackoffMin))
	script.nextCall(t)
	// A certificate no newer than the current one counts as a failure too.
	script.results <- renewResult{certPEM: certPEM, keyPEM: keyPEM}
	retry := dueFirst.Add(RenewBackoffMin + 2*RenewBackoffMin)
	if at := clk.nextWait(t); !at.Equal(retry) {
		t.Fatalf("second retry at %v, want %v", at, retry)
	}
	if r.Leaf() != first {
		t.Fatal("a failed renewal replaced the certificate")
	}

	// Success: the new certificate is installed, and the next renewal is due at two
	// thirds of its life.
	clk.Set(retry)
	at := script.nextCall(t)
	newPEM, newKey := issue(t, ca, SignRequest{Identity: id, TTL: ttl}, at)
	script.results <- renewResult{certPEM: newPEM, keyPEM: newKey}
	next := clk.nextWait(t)
	renewed := r.Leaf()
	if renewed.SerialNumber.Cmp(firstCert(t, newPEM).SerialNumber) != 0 {
		t.Fatal("the renewed certificate is not in use")
	}
	if want := renewed.NotBefore.Add(6 * time.Hour); !next.Equal(want) || !next.Equal(RenewAt(renewed)) {
		t.Errorf("next renewal at %v, want %v", next, want)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RenewLoop did not stop when its context was cancelled")
	}
	out := logs.String()
	for _, want := range []string{"certificate renewal failed", "coordinator unreachable", "expires no later", "certificate renewed"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
}

func TestRenewLoopOverdue(t *testing.T) {
	// A certificate already past its renewal time is renewed at once, without a wait.
	ca := newTestCA(t, "cohort-ca", t0.Add(-time.Hour))
	id := Identity{Name: "node-1", Role: RoleAgent}
	certPEM, keyPEM := issue(t, ca, SignRequest{Identity: id, TTL: time.Hour}, t0)
	r := newReloader(t, certPEM, keyPEM)
	clk := newFakeClock(t0.Add(50 * time.Minute))
	script := newRenewScript()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.RenewLoop(ctx, script.renew(clk), clk)
	}()
	at := script.nextCall(t)
	select {
	case w := <-clk.waits:
		t.Fatalf("RenewLoop waited until %v before an overdue renewal", w)
	default:
	}
	newPEM, newKey := issue(t, ca, SignRequest{Identity: id, TTL: time.Hour}, at)
	script.results <- renewResult{certPEM: newPEM, keyPEM: newKey}
	clk.nextWait(t)
	cancel()
	<-done
}

func TestRenewLoopBackoffCap(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0.Add(-time.Hour))
	certPEM, keyPEM := issue(t, ca, SignRequest{Identity: Identity{Name: "n", Role: RoleAgent}, TTL: time.Hour}, t0)
	r := newReloader(t, certPEM, keyPEM)
	clk := newFakeClock(t0.Add(2 * time.Hour)) // expired: failures log at error level
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.RenewLoop(ctx, func(context.Context) ([]byte, []byte, error) { return nil, nil, errors.New("down") }, clk)
	}()
	var waits []time.Duration
	for range 12 {
		at := clk.nextWait(t)
		waits = append(waits, at.Sub(clk.Now()))
		clk.Set(at)
	}
	cancel()
	<-done
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300}
	for i := range want {
		if waits[i] != want[i]*time.Second {
			t.Fatalf("backoffs %v, want %v seconds", waits, want)
		}
	}
}
