package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
)

// healthFreeAddr returns a loopback address that was free a moment ago (the agent binds it
// itself, so the test cannot pass it a listener).
func healthFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// healthGet returns the status code and body of GET url, or an error when the server
// does not answer.
func healthGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// healthWaitStatus polls url until it answers with want, failing after the deadline.
func healthWaitStatus(t *testing.T, url string, want int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		code, body, err := healthGet(url)
		if err == nil && code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: want %d within %v, last answer %d %q (err %v)", url, want, within, code, body, err)
		}
		<-tick.C
	}
}

// startHealthAgent runs `cohort worker|paramserver` in-process against join, serving
// HTTP on a free loopback port, and returns that port's base URL. With cleanExit the
// agent must end without an error when the test ends (an agent still registering
// reports the failed registration instead).
func startHealthAgent(t *testing.T, join string, ps, cleanExit bool) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nodeID := "health-" + map[bool]string{false: "worker", true: "ps"}[ps]
	f := &nodeAgentFlags{
		nodeID: nodeID, join: join, tls: &node.TLSConfig{Dir: agentTLSDir(t, nodeID)},
		storageDir: t.TempDir(), cpuMillis: 1000, memory: 1 << 30, dataAddr: "127.0.0.1:0",
		httpAddr: healthFreeAddr(t), logLevel: "error",
	}
	done := make(chan error, 1)
	go func() { done <- runNodeAgent(ctx, f, ps) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; cleanExit && err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("node agent: %v", err)
		}
	})
	return "http://" + f.httpAddr
}

// TestNodeAgentHealthEndpoints checks /healthz and /readyz of both node agent roles:
// live but not ready while no coordinator answers, ready once registered.
func TestNodeAgentHealthEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Logger: testLogger(t)})

	for _, ps := range []bool{false, true} {
		name := map[bool]string{false: "worker", true: "paramserver"}[ps]
		t.Run(name+"/no coordinator", func(t *testing.T) {
			// A port nothing listens on: registration keeps failing.
			base := startHealthAgent(t, healthFreeAddr(t), ps, false)
			if body := healthWaitStatus(t, base+"/healthz", http.StatusOK, 30*time.Second); strings.TrimSpace(body) != "ok" {
				t.Errorf("/healthz body %q, want ok", body)
			}
			code, body, err := healthGet(base + "/readyz")
			if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "not registered") {
				t.Errorf("/readyz before registration: %d %q (err %v), want 503 naming registration", code, body, err)
			}
		})
		t.Run(name+"/registered", func(t *testing.T) {
			base := startHealthAgent(t, c.GRPCAddr, ps, true)
			if body := healthWaitStatus(t, base+"/readyz", http.StatusOK, time.Minute); strings.TrimSpace(body) != "ready" {
				t.Errorf("/readyz body %q, want ready", body)
			}
			code, body, err := healthGet(base + "/metrics")
			if err != nil || code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
				t.Errorf("/metrics: %d (err %v), want 200 with go_goroutines", code, err)
			}
		})
	}
}
