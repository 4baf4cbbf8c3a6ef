package server

import (
	"testing"
	"time"
)

// TestHeartbeatSuspect: a node reported suspect expires SuspectGrace after its last
// heartbeat (at once when that is past), unless it heartbeats first, which restores
// its full TTL; a node without a timer is not suspected.
func TestHeartbeatSuspect(t *testing.T) {
	const ttl, grace = 15 * time.Second, 2500 * time.Millisecond
	clock := NewFakeClock(time.Unix(1_700_000_000, 0))
	expired := make(chan string, 4)
	h := newHeartbeats(clock, ttl, func(id string) { expired <- id })
	h.start([]string{"dead", "slow", "silent"})
	wantExpired := func(id string) {
		t.Helper()
		select {
		case got := <-expired:
			if got != id {
				t.Fatalf("expired %s, want %s", got, id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not expire", id)
		}
	}
	wantNone := func() {
		t.Helper()
		select {
		case got := <-expired:
			t.Fatalf("%s expired", got)
		default:
		}
	}

	clock.Advance(time.Second)
	if _, ok := h.suspect("dead", grace); !ok {
		t.Fatal("dead: not suspected")
	}
	if _, ok := h.suspect("slow", grace); !ok {
		t.Fatal("slow: not suspected")
	}
	h.reset("slow") // a slow but live node heartbeats
	clock.Advance(grace - time.Second - time.Millisecond)
	wantNone()
	clock.Advance(time.Millisecond)
	wantExpired("dead")
	clock.Advance(5 * time.Second)
	wantNone() // slow keeps its full TTL

	// Suspected long after its last heartbeat: at once.
	if _, ok := h.suspect("silent", grace); !ok {
		t.Fatal("silent: not suspected")
	}
	wantExpired("silent")
	if _, ok := h.suspect("dead", grace); ok {
		t.Fatal("a node without a timer (already down) was suspected")
	}
	clock.Advance(ttl)
	wantExpired("slow")
}
