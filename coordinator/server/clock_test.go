package server_test

import (
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/server"
)

// TestFakeClock: timers fire only when the fake time reaches them, in deadline order; a
// stopped timer never fires; WaitForTimer sees a timer armed by another goroutine.
func TestFakeClock(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	c := server.NewFakeClock(start)
	late := c.NewTimer(2 * time.Second)
	early := c.NewTimer(time.Second)
	stopped := c.NewTimer(time.Second)
	fired := make(chan time.Time, 1)
	c.AfterFunc(1500*time.Millisecond, func() { fired <- c.Now() })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop of a pending timer must report true once")
	}
	if n := c.Timers(); n != 3 {
		t.Fatalf("%d timers waiting, want 3", n)
	}

	c.Advance(999 * time.Millisecond)
	select {
	case <-early.C():
		t.Fatal("timer fired before its deadline")
	default:
	}
	c.Advance(time.Millisecond)
	if got := <-early.C(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("timer fired at %v", got)
	}
	c.Advance(time.Second)
	if got := <-fired; !got.Equal(start.Add(2 * time.Second)) {
		t.Fatalf("AfterFunc ran at %v", got)
	}
	if got := <-late.C(); !got.Equal(start.Add(2 * time.Second)) {
		t.Fatalf("late timer fired at %v", got)
	}
	select {
	case <-stopped.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	if now := c.Now(); !now.Equal(start.Add(2 * time.Second)) {
		t.Fatalf("Now = %v", now)
	}
	if at := c.NewTimer(0); len(at.C()) != 1 {
		t.Fatal("a timer of 0 must fire at once")
	}

	armed := make(chan server.Timer)
	go func() { armed <- c.NewTimer(time.Minute) }()
	done := make(chan struct{})
	time.AfterFunc(10*time.Second, func() { close(done) })
	if !c.WaitForTimer(c.Now().Add(time.Minute), done) {
		t.Fatal("WaitForTimer did not see the armed timer")
	}
	<-armed
}
