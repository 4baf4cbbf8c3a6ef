package node_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func issueReloader(t *testing.T, ca *pki.CA, id pki.Identity) *pki.Reloader {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueFor(id, []string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r, err := pki.NewReloader(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// probe opens a TLS connection to addr presenting certs (none when nil), and reports whether the server accepted it: nil when the handshake succeeded
// and the server did not close the connection with an alert within a moment (TLS 1.3
// servers refuse a client certificate after the client's handshake is done).
func probe(t *testing.T, addr string, certs *pki.Reloader) error {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	if certs != nil {
		cfg.GetClientCertificate = certs.GetClientCertificate
	}
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if err := c.Handshake(); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		return nil
	}
	return err
}

// TestMutualTLSRefusals: every port of a dev cluster (the coordinator's gRPC API, its
// Raft port, a parameter server's data port) refuses a client without a certificate and
// one with a certificate from another CA, and admits only the roles it serves. The gRPC
// API completes a handshake without a client certificate, for join-token enrollment
// only: every other RPC refuses such a caller (Unauthenticated).
func TestMutualTLSRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{Workers: 1, PS: 1})
	ca, err := pki.LoadCA(c.TLSDir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("another CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	coordinator := issueReloader(t, ca, pki.Identity{Name: "c9", Role: pki.RoleCoordinator})
	agent := issueReloader(t, ca, pki.Identity{Name: "w9", Role: pki.RoleAgent})
	client := issueReloader(t, ca, pki.Identity{Name: "alice", Role: pki.RoleClient, ACLRole: "admin"})
	foreign := issueReloader(t, other, pki.Identity{Name: "c9", Role: pki.RoleCoordinator})

	ports := []struct {
		name    string
		addr    string
		admits  []*pki.Reloader
		refuses []*pki.Reloader
		// enrolls: the handshake admits a client without a certificate (to enroll)
		enrolls bool
	}{
		{"grpc", c.GRPCAddr, []*pki.Reloader{coordinator, agent, client}, nil, true},
		{"raft", c.Node.RaftAddr(), []*pki.Reloader{coordinator}, []*pki.Reloader{agent, client}, false},
		{"paramserver", c.Node.DataAddrs()[0], []*pki.Reloader{agent}, []*pki.Reloader{coordinator, client}, false},
	}
	for _, p := range ports {
		t.Run(p.name, func(t *testing.T) {
			if err := probe(t, p.addr, nil); (err == nil) != p.enrolls {
				t.Errorf("a client without a certificate: handshake error %v, want one: %v", err, !p.enrolls)
			}
			if err := probe(t, p.addr, foreign); err == nil {
				t.Error("a certificate from another CA was admitted")
			}
			for _, r := range p.admits {
				if err := probe(t, p.addr, r); err != nil {
					t.Errorf("%s was refused: %v", r.Leaf().Subject.CommonName, err)
				}
			}
			for _, r := range p.refuses {
				if err := probe(t, p.addr, r); err == nil {
					t.Errorf("%s (role %s) was admitted", r.Leaf().Subject.CommonName, r.Leaf().Subject.OrganizationalUnit)
				}
			}
		})
	}

	// On the API, the role decides which RPCs a certificate may call.
	dialAs := func(r *pki.Reloader) *grpc.ClientConn {
		creds := credentials.NewTLS(pki.RoleClientTLSConfig(ca.Pool(), r, pki.RoleCoordinator))
		conn, err := grpc.NewClient(c.GRPCAddr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	agentConn, clientConn, anonConn := dialAs(agent), dialAs(client), dialAs(nil)
	if _, err := cohortv1.NewJobServiceClient(anonConn).ListJobs(ctx, &cohortv1.ListJobsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListJobs without a certificate: %v, want Unauthenticated", err)
	}
	if _, err := cohortv1.NewEnrollServiceClient(anonConn).Renew(ctx, &cohortv1.RenewRequest{Csr: []byte{1}}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Renew without a certificate: %v, want Unauthenticated", err)
	}
	if _, err := cohortv1.NewJobServiceClient(agentConn).SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "x"}}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "role agent") {
		t.Errorf("SetQuota with an agent certificate: %v, want PermissionDenied naming the role", err)
	}
	if _, err := cohortv1.NewClusterServiceClient(agentConn).ListPeers(ctx, &cohortv1.ListPeersRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListPeers with an agent certificate: %v, want PermissionDenied", err)
	}
	if _, err := cohortv1.NewAgentServiceClient(clientConn).Heartbeat(ctx, &cohortv1.HeartbeatRequest{NodeId: "dev-worker-0"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Heartbeat with a client certificate: %v, want PermissionDenied", err)
	}
	if _, err := cohortv1.NewJobServiceClient(clientConn).ListNodes(ctx, &cohortv1.ListNodesRequest{}); err != nil {
		t.Errorf("ListNodes with a client certificate: %v", err)
	}
	stream, err := cohortv1.NewAgentServiceClient(clientConn).WatchAssignments(ctx, &cohortv1.WatchAssignmentsRequest{NodeId: "dev-worker-0"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("WatchAssignments (a stream) with a client certificate: %v, want PermissionDenied", err)
	}

	// A plaintext client gets a clear error at once, not a hang.
	start := time.Now()
	conn, err := node.DialCoordinators([]string{c.GRPCAddr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = cohortv1.NewJobServiceClient(conn).ListJobs(ctx, &cohortv1.ListJobsRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "requires TLS") {
		t.Errorf("a plaintext call: %v, want Unavailable saying the server requires TLS", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the plaintext call took %v", d)
	}
	for _, addr := range []string{c.Node.RaftAddr(), c.Node.DataAddrs()[0]} {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = raw.SetDeadline(time.Now().Add(15 * time.Second))
		_, _ = raw.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
		_, err = raw.Read(make([]byte, 64))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: a plaintext client hangs", addr)
		}
		raw.Close()
	}
}

// TestCoordinatorCreatesCA: a bootstrapping coordinator creates the CA in
// <data-dir>/tls (key 0600), its own certificate (role coordinator, naming its hosts)
// and the operator's admin credentials, which the next start keeps; a restart loads
// the same CA.
func TestCoordinatorCreatesCA(t *testing.T) {
	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator = &co
	n := start(t, cfg)
	dir := filepath.Join(co.DataDir, "tls")
	if n.ClientTLSDir() != dir {
		t.Fatalf("client credentials in %q, want %q", n.ClientTLSDir(), dir)
	}
	for name, mode := range map[string]os.FileMode{"ca.key": 0o600, "node.key": 0o600, "admin.key": 0o600, "ca.crt": 0o644, "node.crt": 0o644, "admin.crt": 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want mode %o", name, st, err, mode)
		}
	}
	certPEM, keyPEM, err := pki.LoadKeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := pki.NewReloader(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityOf(r.Leaf())
	if err != nil || id.Role != pki.RoleCoordinator || id.Name != "c1" {
		t.Errorf("node.crt names %v (%v), want coordinator c1", id, err)
	}
	if err := r.Leaf().VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := r.Leaf().VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	admin, _ := os.ReadFile(filepath.Join(dir, "admin.crt"))
	caHash := func() string {
		raw, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		h, err := pki.CAHashOf(raw)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	before := caHash()
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	start(t, cfg)
	if caHash() != before {
		t.Error("a restart made a new CA")
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "admin.crt")); string(again) != string(admin) {
		t.Error("a restart replaced valid admin credentials")
	}
}

// TestPlaintextOnlyOnLoopback: a node without TLS material refuses a non-loopback
// listener or coordinator at New, naming the field, unless Insecure.
func TestPlaintextOnlyOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		mutate      func(*node.Config)
	}{
		{"coordinator gRPC", "Coordinator.GRPCAddr", func(c *node.Config) {
			co := node.DefaultCoordinatorConfig()
			co.NodeID, co.DataDir, co.GRPCAddr, co.RaftAddr = "c1", t.TempDir(), "0.0.0.0:0", "127.0.0.1:0"
			c.Coordinator = &co // no bootstrap, no material: no TLS
		}},
		{"coordinator Raft", "Coordinator.RaftAddr", func(c *node.Config) {
			co := node.DefaultCoordinatorConfig()
			co.NodeID, co.DataDir, co.GRPCAddr, co.RaftAddr = "c1", t.TempDir(), "127.0.0.1:0", "10.1.2.3:7000"
			c.Coordinator = &co
		}},
		{"parameter server", "ParameterServers.DataAddr", func(c *node.Config) {
			p := node.DefaultParameterServerConfig()
			p.NodeID, p.Join, p.DataAddr = "ps1", []string{"127.0.0.1:7070"}, ":7080"
			c.ParameterServers, c.Storage.Dir = []node.ParameterServerConfig{p}, t.TempDir()
		}},
		{"agent's coordinator", "AgentConfig.Join", func(c *node.Config) {
			w := node.DefaultWorkerConfig()
			w.NodeID, w.Join = "w1", []string{"127.0.0.1:7070", "coordinator.example:7070"}
			c.Workers, c.Storage.Dir = []node.WorkerConfig{w}, t.TempDir()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.Logger = nodetest.Logger()
			tc.mutate(&cfg)
			_, err := node.New(cfg)
			var ce *node.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, node.ErrPlaintext) || !strings.Contains(err.Error(), "--insecure") {
				t.Fatalf("New: %v, want a ConfigError on %s wrapping ErrPlaintext", err, tc.field)
			}
			cfg.TLS = &node.TLSConfig{Insecure: true}
			if _, err := node.New(cfg); err != nil {
				t.Errorf("New with Insecure: %v", err)
			}
		})
	}
	// An agent given a TLS directory without material is a configuration error.
	cfg := node.DefaultConfig()
	w := node.DefaultWorkerConfig()
	w.NodeID, w.Join = "w1", []string{"127.0.0.1:7070"}
	cfg.Workers, cfg.Storage.Dir, cfg.TLS = []node.WorkerConfig{w}, t.TempDir(), &node.TLSConfig{Dir: t.TempDir()}
	var ce *node.ConfigError
	if _, err := node.New(cfg); !errors.As(err, &ce) || ce.Field != "TLS.Dir" {
		t.Errorf("an empty --tls-dir: %v, want a ConfigError on TLS.Dir", err)
	}
	// An agent refuses a coordinator's certificate as its own.
	cfg.TLS.Dir = nodetest.IssueTLSDir(t, caDir(t), pki.Identity{Name: "w1", Role: pki.RoleCoordinator})
	if _, err := node.New(cfg); !errors.As(err, &ce) || !strings.Contains(err.Error(), "needs a certificate of role agent") {
		t.Errorf("an agent with a coordinator certificate: %v", err)
	}
}

// caDir is a new CA's directory.
func caDir(t *testing.T) string {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}
