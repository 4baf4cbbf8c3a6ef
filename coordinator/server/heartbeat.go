package server

import (
	"sync"
	"time"
)

// heartbeats holds the leader's per-node TTL timers, on the server's Clock. It is active only while this
// voter runs the leader machinery; outside of that every call is a no-op.
type heartbeats struct {
	clock  Clock
	ttl    time.Duration
	expire func(nodeID string)

	mu     sync.Mutex
	active bool
	timers map[string]*heartbeatTimer
}

type heartbeatTimer struct {
	t    Timer
	last time.Time // when the TTL was last restarted (the node's last heartbeat)
}

func newHeartbeats(clock Clock, ttl time.Duration, expire func(nodeID string)) *heartbeats {
	return &heartbeats{clock: clock, ttl: ttl, expire: expire, timers: map[string]*heartbeatTimer{}}
}

// start activates the timers and gives every listed node a fresh, full TTL.
func (h *heartbeats) start(nodeIDs []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active = true
	for _, id := range nodeIDs {
		h.resetLocked(id)
	}
}

// stop cancels every timer and deactivates.
func (h *heartbeats) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active = false
	for id, ht := range h.timers {
		ht.t.Stop()
		delete(h.timers, id)
	}
}

// reset restarts a node's TTL; it reports false when the timers are not active.
func (h *heartbeats) reset(nodeID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.active {
		return false
	}
	h.resetLocked(nodeID)
	return true
}

func (h *heartbeats) resetLocked(nodeID string) {
	if old, ok := h.timers[nodeID]; ok {
		old.t.Stop()
	}
	ht := &heartbeatTimer{last: h.clock.Now()}
	h.timers[nodeID] = ht
	ht.t = h.clock.AfterFunc(h.ttl, func() { h.fire(nodeID, ht) })
}

// suspect shortens a node's TTL after a sign that it died (a parameter server lost its
// worker's session): the node expires grace after its last heartbeat, at once when
// that is past, unless a heartbeat comes first (which restores the full TTL: a slow
// but live node keeps heartbeating). It reports when the node expires, and false when
// the node has no timer (not READY, or the timers are not active).
func (h *heartbeats) suspect(nodeID string, grace time.Duration) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old, ok := h.timers[nodeID]
	if !h.active || !ok {
		return time.Time{}, false
	}
	at := old.last.Add(grace)
	if remaining := at.Sub(h.clock.Now()); old.t.Stop() {
		ht := &heartbeatTimer{last: old.last}
		h.timers[nodeID] = ht
		ht.t = h.clock.AfterFunc(max(remaining, 0), func() { h.fire(nodeID, ht) })
	}
	return at, true
}

// clear drops a node's timer (it is down or gone).
func (h *heartbeats) clear(nodeID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.timers[nodeID]; ok {
		old.t.Stop()
		delete(h.timers, nodeID)
	}
}

// fire runs when a timer expires; a timer that was replaced or stopped meanwhile is
// ignored.
func (h *heartbeats) fire(nodeID string, ht *heartbeatTimer) {
	h.mu.Lock()
	if !h.active || h.timers[nodeID] != ht {
		h.mu.Unlock()
		return
	}
	delete(h.timers, nodeID)
	h.mu.Unlock()
	h.expire(nodeID)
}
