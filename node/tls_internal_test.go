package node

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/api"
)

// TestEveryCoordinatorRPCHasARoleRule enumerates every method the coordinator's gRPC
// server registers: each must have a certificate role rule (api.CertRoles), or every
// caller would be refused. A new RPC without a rule fails here.
func TestEveryCoordinatorRPCHasARoleRule(t *testing.T) {
	cfg := DefaultConfig()
	co := DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator, cfg.Logger = &co, slog.New(slog.DiscardHandler)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	methods := 0
	for svc, info := range n.gs.GetServiceInfo() {
		for _, m := range info.Methods {
			methods++
			full := "/" + svc + "/" + m.Name
			if roles, ok := api.CertRoles(full); !ok || len(roles) == 0 {
				t.Errorf("RPC %s has no certificate role rule: add it to certRoleRules in coordinator/api/roles.go "+
					"(userCallers for people and tools, agentCallers for node agents); until then every caller is refused", full)
			}
		}
	}
	if methods < 25 {
		t.Fatalf("the coordinator serves %d methods; want JobService, AgentService and ClusterService", methods)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInsecureWarnsEveryInterval: an Insecure node that serves off loopback says so at
// start and then every insecureWarnInterval.
func TestInsecureWarnsEveryInterval(t *testing.T) {
	old := insecureWarnInterval
	insecureWarnInterval = 50 * time.Millisecond
	defer func() { insecureWarnInterval = old }()
	var logs syncBuffer
	cfg := DefaultConfig()
	co := DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "0.0.0.0:0"
	cfg.Coordinator, cfg.TLS = &co, &TLSConfig{Insecure: true}
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if n.ClientTLSDir() != "" {
		t.Errorf("an Insecure coordinator made TLS material in %s", n.ClientTLSDir())
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), "TLS is off") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d warnings in 10s:\n%s", strings.Count(logs.String(), "TLS is off"), logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// TestLocalCertificatesAreRenewed: a CA-holding node renews every certificate it issues
// itself, its coordinator's (issued by New) and its agents' (issued during Start).
func TestLocalCertificatesAreRenewed(t *testing.T) {
	dir := t.TempDir()
	cfg := DevConfig(2, 1, dir)
	cfg.Coordinator.DataDir, cfg.Coordinator.Ephemeral = dir, true
	cfg.Coordinator.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", ""
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	n.tls.mu.Lock()
	defer n.tls.mu.Unlock()
	if n.tls.renewing != 4 || len(n.tls.pending) != 0 {
		t.Errorf("%d renewals running, %d pending; want 4 (the coordinator, 3 agents), 0", n.tls.renewing, len(n.tls.pending))
	}
}
