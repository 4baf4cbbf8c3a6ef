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

type heartbeatTimer struct{ t Timer }

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
	ht := &heartbeatTimer{}
	h.timers[nodeID] = ht
	ht.t = h.clock.AfterFunc(h.ttl, func() { h.fire(nodeID, ht) })
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
