package gossip

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

func start(t *testing.T, name string, seeds []string, key []byte, onEvent func(EventKind, Member)) *Gossip {
	t.Helper()
	cfg := Config{
		Name: name, BindAddr: "127.0.0.1:0", Seeds: seeds, SecretKey: key, OnEvent: onEvent,
		Meta:   Meta{Roles: []string{"worker"}, GRPCAddr: "127.0.0.1:9", NodeID: name},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

func names(g *Gossip) []string {
	var out []string
	for _, m := range g.Members() {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	// A join's alive broadcast is retransmitted only a few times, so a member can miss
	// it and learn of the newcomer at its next push-pull (every 15 s in memberlist's
	// loopback timing): the deadline leaves room for one.
	for deadline := time.Now().Add(40 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func TestMembersJoinWithMetadataAndLeave(t *testing.T) {
	key := []byte("0123456789abcdef")
	var mu sync.Mutex
	var leaves []string
	seed := start(t, "coord-1", nil, key, func(k EventKind, m Member) {
		if k == EventLeave {
			mu.Lock()
			leaves = append(leaves, m.Name)
			mu.Unlock()
		}
	})
	a := start(t, "worker-a", []string{seed.LocalAddr()}, key, nil)
	b := start(t, "worker-b", []string{seed.LocalAddr()}, key, nil)
	want := []string{"coord-1", "worker-a", "worker-b"}
	for _, g := range []*Gossip{seed, a, b} {
		waitFor(t, "full membership", func() bool { return slices.Equal(names(g), want) })
	}
	for _, m := range a.Members() {
		if m.Meta.NodeID != m.Name || m.Meta.GRPCAddr != "127.0.0.1:9" || !slices.Equal(m.Meta.Roles, []string{"worker"}) {
			t.Errorf("member %s metadata = %+v", m.Name, m.Meta)
		}
	}
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the leave event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(leaves, "worker-b")
	})
}

func TestBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no name":  {BindAddr: "127.0.0.1:0"},
		"bad key":  {Name: "x", BindAddr: "127.0.0.1:0", SecretKey: []byte("short")},
		"bad addr": {Name: "x", BindAddr: "nope"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestWrongKeyCannotJoin(t *testing.T) {
	seed := start(t, "coord-1", nil, []byte("0123456789abcdef"), nil)
	other := start(t, "intruder", []string{seed.LocalAddr()}, []byte("fedcba9876543210"), nil)
	if got := names(other); !slices.Equal(got, []string{"intruder"}) {
		t.Fatalf("member with the wrong key sees %v", got)
	}
	if got := names(seed); !slices.Equal(got, []string{"coord-1"}) {
		t.Fatalf("seed sees %v", got)
	}
}

// Every member of a pool stopping at once must not hang: memberlist's Leave without a
// timeout waits for ever for a broadcast that no peer is left to take (seen in CI as a
// 20-minute hang of this package).
func TestWholePoolShutsDownAtOnce(t *testing.T) {
	key := []byte("0123456789abcdef")
	for round := range 3 {
		seed := start(t, fmt.Sprintf("coord-%d", round), nil, key, nil)
		pool := []*Gossip{seed}
		for _, n := range []string{"worker-a", "worker-b", "worker-c"} {
			pool = append(pool, start(t, fmt.Sprintf("%s-%d", n, round), []string{seed.LocalAddr()}, key, nil))
		}
		for _, g := range pool {
			waitFor(t, "full membership", func() bool { return len(g.Members()) == len(pool) })
		}
		done := make(chan error, len(pool))
		for _, g := range pool {
			go func() { done <- g.Shutdown() }()
		}
		deadline := time.After(4 * leaveTimeout)
		for range pool {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-deadline:
				t.Fatalf("round %d: Shutdown of a pool whose members all leave at once did not return", round)
			}
		}
	}
}
