package node_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
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
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// bootstrapCoordinator starts a bootstrapping coordinator on loopback and returns it
// with an admin connection (the credentials it wrote) and its CA.
func bootstrapCoordinator(t *testing.T) (*node.Node, *grpc.ClientConn, *pki.CA, string) {
	t.Helper()
	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator = &co
	n := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(co.DataDir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := node.ClientTLSCredentials(n.ClientTLSDir())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return n, conn, ca, co.DataDir
}

func createToken(t *testing.T, conn *grpc.ClientConn, req *cohortv1.CreateTokenRequest) pki.Token {
	t.Helper()
	resp, err := cohortv1.NewTokenServiceClient(conn).CreateToken(context.Background(), req)
	if err != nil {
		t.Fatalf("create token %v: %v", req, err)
	}
	tok, err := pki.ParseToken(resp.Token)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// connAs dials addr presenting the enrolled certificate.
func connAs(t *testing.T, addr string, ca *pki.CA, e *pki.Enrolled) *grpc.ClientConn {
	t.Helper()
	r, err := pki.NewReloader(e.CertPEM, e.KeyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.RoleClientTLSConfig(ca.Pool(), r, pki.RoleCoordinator))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestJoinTokens: a bootstrapping coordinator writes the first admin token (0600) and
// records it in Raft; tokens minted by an admin enroll a client, an agent and a
// coordinator (which alone receives the CA's key) with certificates naming them and the
// token's role; revoked, expired and unknown tokens and wrong secrets are refused;
// records never hold or show a secret; only admins manage tokens; renewal over the
// network keeps the identity.
func TestJoinTokens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c1, admin, ca, dataDir := bootstrapCoordinator(t)
	addrs := []string{c1.GRPCAddr()}

	// The bootstrap token: 0600, pinning this CA, recorded in Raft, usable to log in.
	path := filepath.Join(dataDir, node.BootstrapTokenFile)
	if c1.BootstrapTokenPath() != path {
		t.Errorf("bootstrap token at %q, want %q", c1.BootstrapTokenPath(), path)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want mode 0600", path, st, err)
	}
	raw, _ := os.ReadFile(path)
	boot, err := pki.ParseToken(string(raw))
	if err != nil || boot.CAHash != ca.Hash() {
		t.Fatalf("bootstrap token %v (%v) does not pin the CA %s", boot.Redacted(), err, ca.Hash())
	}
	var e *pki.Enrolled
	for deadline := time.Now().Add(20 * time.Second); ; {
		e, err = node.EnrollWithToken(ctx, addrs, boot, "alice", nil)
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "not known") {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling until the leader has applied the record
	}
	if err != nil {
		t.Fatalf("login with the bootstrap token: %v", err)
	}
	if e.Identity.Role != pki.RoleClient || e.Identity.ACLRole != "admin" || e.Identity.Name != "alice" || e.CA != nil {
		t.Errorf("bootstrap login: %v (CA key sent: %v), want client/alice (admin) without the CA key", e.Identity, e.CA != nil)
	}
	leaf, _ := tls.X509KeyPair(e.CertPEM, e.KeyPEM)
	if life := time.Until(leaf.Leaf.NotAfter); life > pki.DefaultCertTTL || life < pki.DefaultCertTTL-time.Hour {
		t.Errorf("certificate life %v, want about %v", life, pki.DefaultCertTTL)
	}

	// Records keep only the hash; the list shows neither.
	list, err := cohortv1.NewTokenServiceClient(admin).ListTokens(ctx, &cohortv1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list.Tokens {
		if r.SecretSha256 != "" {
			t.Errorf("token list shows the secret hash of %s", r.Id)
		}
	}
	rec, err := c1.Server().State().TokenByID(nil, boot.ID)
	if err != nil || rec == nil || rec.SecretSha256 != pki.HashSecret(boot.Secret) {
		t.Fatalf("raft record of the bootstrap token: %v %v", rec, err)
	}

	// An agent token: an agent certificate, no CA key; it may not manage tokens.
	agentTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "agent"})
	ae, err := node.EnrollWithToken(ctx, addrs, agentTok, "w7", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if ae.Identity.Role != pki.RoleAgent || ae.Identity.Name != "w7" || ae.CA != nil {
		t.Errorf("agent enrollment: %v (CA key %v)", ae.Identity, ae.CA != nil)
	}
	agentConn := connAs(t, c1.GRPCAddr(), ca, ae)
	if _, err := cohortv1.NewTokenServiceClient(agentConn).CreateToken(ctx, &cohortv1.CreateTokenRequest{Role: "coordinator"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("CreateToken with an agent certificate: %v, want PermissionDenied", err)
	}

	// Renewal over the network keeps the identity and extends the life.
	ar, err := pki.NewReloader(ae.CertPEM, ae.KeyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := node.RenewOverNetwork(ctx, addrs, ca.Pool(), ar, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := pki.IdentityOf(renewed.Leaf); err != nil || id.String() != ae.Identity.String() || renewed.Leaf.NotAfter.Before(ar.Leaf().NotAfter) || renewed.Leaf.SerialNumber.Cmp(ar.Leaf().SerialNumber) == 0 {
		t.Errorf("renewed %v (%v), not after %v; want a new certificate for %v, not shorter-lived", id, err, renewed.Leaf.NotAfter, ae.Identity)
	}

	// A read client may not manage tokens, a token that would hand out the CA key.
	readTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "client", AclRole: "read", Namespaces: []string{"team-a"}})
	re, err := node.EnrollWithToken(ctx, addrs, readTok, "bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	if re.Identity.ACLRole != "read" || len(re.Identity.Namespaces) != 1 || re.Identity.Namespaces[0] != "team-a" {
		t.Errorf("read client identity %v", re.Identity)
	}
	if _, err := cohortv1.NewTokenServiceClient(connAs(t, c1.GRPCAddr(), ca, re)).CreateToken(ctx, &cohortv1.CreateTokenRequest{Role: "coordinator"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("CreateToken with a read certificate: %v, want PermissionDenied", err)
	}

	// bob's certificate names the token it was enrolled with; until it is revoked, it
	// reads the cluster's jobs and renews.
	bobConn := connAs(t, c1.GRPCAddr(), ca, re)
	if re.Identity.Token != readTok.ID {
		t.Errorf("bob's identity %+v does not name its token %s", re.Identity, readTok.ID)
	}
	if _, err := cohortv1.NewJobServiceClient(bobConn).ListJobs(ctx, &cohortv1.ListJobsRequest{}); err != nil {
		t.Fatalf("list jobs as bob: %v", err)
	}
	br, err := pki.NewReloader(re.CertPEM, re.KeyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := node.RenewOverNetwork(ctx, addrs, ca.Pool(), br, nil); err != nil {
		t.Fatalf("renew bob's certificate: %v", err)
	}

	// Revoked, wrong secret, unknown id: refused, naming why.
	if _, err := cohortv1.NewTokenServiceClient(admin).RevokeToken(ctx, &cohortv1.RevokeTokenRequest{Id: readTok.ID}); err != nil {
		t.Fatal(err)
	}
	// Revoking the token cuts off the certificates enrolled with it: calls and renewals
	// are refused on every coordinator that has applied the revocation (c1 here, the
	// one that committed it).
	if _, err := cohortv1.NewJobServiceClient(bobConn).ListJobs(ctx, &cohortv1.ListJobsRequest{}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("list jobs as bob after the revocation: %v, want Unauthenticated saying revoked", err)
	}
	if _, _, err := node.RenewOverNetwork(ctx, addrs, ca.Pool(), br, nil); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("renew bob's certificate after the revocation: %v, want a refusal saying revoked", err)
	}
	wrong := agentTok
	wrong.Secret = strings.Repeat("a", pki.TokenSecretLen)
	unknown := agentTok
	unknown.ID = "zzzzzz"
	for _, tc := range []struct {
		name string
		tok  pki.Token
		want string
	}{
		{"revoked", readTok, "revoked"},
		{"wrong secret", wrong, "does not match"},
		{"unknown", unknown, "not known"},
	} {
		_, err := node.EnrollWithToken(ctx, addrs, tc.tok, "mallory", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Unauthenticated") {
			t.Errorf("%s token: %v, want Unauthenticated saying %q", tc.name, err, tc.want)
		}
	}

	// An expired token.
	shortTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "client", TtlSeconds: 1})
	time.Sleep(1100 * time.Millisecond) // wait out the token's 1 s life: expiry itself is under test
	if _, err := node.EnrollWithToken(ctx, addrs, shortTok, "carol", nil); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v, want a refusal saying expired", err)
	}

	// A coordinator token: the new voter receives the CA's key and joins.
	coordTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "coordinator"})
	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Join = "c2", t.TempDir(), addrs
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator = &co
	cfg.TLS = &node.TLSConfig{JoinToken: coordTok.String()}
	c2 := start(t, cfg)
	got, err := pki.LoadCA(filepath.Join(co.DataDir, "tls"))
	if err != nil || got.Hash() != ca.Hash() {
		t.Fatalf("the joined coordinator's CA: %v (%v), want the cluster's %s", got, err, ca.Hash())
	}
	peers, err := cohortv1.NewClusterServiceClient(admin).ListPeers(ctx, &cohortv1.ListPeersRequest{})
	if err != nil || len(peers.Peers) != 2 {
		t.Fatalf("peers after the join: %v %v, want 2", peers, err)
	}
	// A node agent joins with an agent token: it enrolls into its TLS directory, then
	// registers over mutual TLS; a restart does not use the token again.
	psTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "agent", NodeName: "ps7"})
	pcfg := node.DefaultConfig()
	ps := node.DefaultParameterServerConfig()
	ps.NodeID, ps.Join, ps.DataAddr = "ps7", addrs, "127.0.0.1:0"
	pcfg.ParameterServers = []node.ParameterServerConfig{ps}
	pcfg.Storage = node.StorageConfig{Dir: t.TempDir()}
	tlsDir := filepath.Join(t.TempDir(), "tls")
	pcfg.TLS = &node.TLSConfig{Dir: tlsDir, JoinToken: psTok.String()}
	pn := start(t, pcfg)
	if err := pn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ca.crt": 0o644, "node.crt": 0o644, "node.key": 0o600} {
		if st, err := os.Stat(filepath.Join(tlsDir, name)); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %o", name, st, err, mode)
		}
	}
	if _, err := os.Stat(filepath.Join(tlsDir, "ca.key")); err == nil {
		t.Error("a node agent received the CA's key")
	}
	if _, err := node.EnrollWithToken(ctx, addrs, psTok, "ps8", nil); err == nil || !strings.Contains(err.Error(), "bound to another node name") {
		t.Errorf("a token bound to ps7 enrolled ps8: %v", err)
	}

	// The new voter enrolls too (it holds the CA; Enroll goes to the leader's state).
	if _, err := node.EnrollWithToken(ctx, []string{c2.GRPCAddr()}, createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "agent"}), "w8", nil); err != nil {
		t.Errorf("enroll through the joined coordinator: %v", err)
	}
}

// TestJoinTokenWrongCAHashSendsNothing: a server whose CA does not hash to the token's
// pin is refused inside the handshake, so not one byte of application data (the
// secret) reaches it, and the error names both hashes.
func TestJoinTokenWrongCAHashSendsNothing(t *testing.T) {
	real, err := pki.NewCA("real", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := pki.NewCA("impostor", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := impostor.IssueFor(pki.Identity{Name: "c1", Role: pki.RoleCoordinator}, []string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	received := make(chan int, 8)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				n, _ := io.Copy(io.Discard, c)
				received <- int(n)
			}(c)
		}
	}()
	tok, err := pki.GenerateToken(real.Hash())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = node.EnrollWithToken(ctx, []string{lis.Addr().String()}, tok, "w1", nil)
	if !errors.Is(err, pki.ErrCAHashMismatch) || !strings.Contains(err.Error(), real.Hash()) || !strings.Contains(err.Error(), impostor.Hash()) {
		t.Fatalf("enroll with an impostor: %v, want a CA hash mismatch naming both hashes", err)
	}
	if strings.Contains(err.Error(), tok.Secret) {
		t.Error("the error shows the secret")
	}
	select {
	case n := <-received:
		if n != 0 {
			t.Errorf("the impostor received %d bytes of application data", n)
		}
	case <-ctx.Done():
		t.Fatal("the impostor's connection was not closed")
	}
}

// TestDeploymentTokenFiles: a bootstrapping coordinator with JoinTokenDir writes a
// coordinator and an agent token (0600) and records them; an agent given only the
// agent token's file enrolls and registers, a voter given the coordinator token's file
// joins.
func TestDeploymentTokenFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tokDir := filepath.Join(t.TempDir(), "tokens")
	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator = &co
	cfg.TLS = &node.TLSConfig{JoinTokenDir: tokDir}
	c1 := start(t, cfg)
	for _, f := range []string{"coordinator.token", "agent.token"} {
		if st, err := os.Stat(filepath.Join(tokDir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", f, st, err)
		}
	}

	pcfg := node.DefaultConfig()
	ps := node.DefaultParameterServerConfig()
	ps.NodeID, ps.Join, ps.DataAddr = "ps1", []string{c1.GRPCAddr()}, "127.0.0.1:0"
	pcfg.ParameterServers = []node.ParameterServerConfig{ps}
	pcfg.Storage = node.StorageConfig{Dir: t.TempDir()}
	pcfg.TLS = &node.TLSConfig{Dir: filepath.Join(t.TempDir(), "tls"), JoinTokenFile: filepath.Join(tokDir, "agent.token")}
	agent := start(t, pcfg)
	if err := agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// A restart keeps its certificate and needs neither the token nor its file.
	if err := agent.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	agentTok, err := os.ReadFile(filepath.Join(tokDir, "agent.token"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(tokDir, "agent.token")); err != nil {
		t.Fatal(err)
	}
	restart := time.Now()
	if err := start(t, pcfg).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(restart); d > 30*time.Second {
		t.Errorf("the restart took %v: it waited for the token file", d)
	}
	if err := os.WriteFile(filepath.Join(tokDir, "agent.token"), agentTok, 0o600); err != nil {
		t.Fatal(err)
	}

	ccfg := node.DefaultConfig()
	co2 := node.DefaultCoordinatorConfig()
	co2.NodeID, co2.DataDir, co2.Join = "c2", t.TempDir(), []string{c1.GRPCAddr()}
	co2.RaftAddr, co2.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	ccfg.Coordinator = &co2
	ccfg.TLS = &node.TLSConfig{JoinTokenFile: filepath.Join(tokDir, "coordinator.token")}
	start(t, ccfg)
	if _, err := os.Stat(filepath.Join(co2.DataDir, "tls", "ca.key")); err != nil {
		t.Errorf("the voter joined with the coordinator token file holds no CA key: %v", err)
	}
}

// TestAgentRenewsOverTheNetwork: a node agent whose certificate is due for renewal (past
// two thirds of its life) gets a new one from the coordinators over mutual TLS while it
// runs, without a restart, and keeps it in its TLS directory.
func TestAgentRenewsOverTheNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c1, _, ca, _ := bootstrapCoordinator(t)
	dir := filepath.Join(t.TempDir(), "tls")
	// Valid for a minute more (and five minutes back, for clock skew): already due.
	certPEM, keyPEM, err := ca.IssueFor(pki.Identity{Name: "ps1", Role: pki.RoleAgent, ACLRole: "agent"}, []string{"127.0.0.1"}, time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveCACert(dir, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveKeyPair(dir, "node", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	pcfg := node.DefaultConfig()
	ps := node.DefaultParameterServerConfig()
	ps.NodeID, ps.Join, ps.DataAddr = "ps1", []string{c1.GRPCAddr()}, "127.0.0.1:0"
	pcfg.ParameterServers = []node.ParameterServerConfig{ps}
	pcfg.Storage = node.StorageConfig{Dir: t.TempDir()}
	pcfg.TLS = &node.TLSConfig{Dir: dir}
	if err := start(t, pcfg).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var leaf *tls.Certificate
	waitFor(t, 30*time.Second, "the renewed certificate on disk", func() bool {
		c, k, err := pki.LoadKeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
		if err != nil {
			return false
		}
		pair, err := tls.X509KeyPair(c, k)
		if err != nil || time.Until(pair.Leaf.NotAfter) < time.Hour {
			return false
		}
		leaf = &pair
		return true
	})
	if id, err := pki.IdentityOf(leaf.Leaf); err != nil || id.Name != "ps1" || id.Role != pki.RoleAgent {
		t.Errorf("renewed certificate names %v (%v), want agent/ps1", id, err)
	}
}
