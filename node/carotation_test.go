package node_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestCARotationAcrossVoterAndAgents: two voters (the second joined with a coordinator
// token) and a parameter-server agent that joined with an agent token and renews over
// the network, with a gossip pool. After RotateCA the second voter opens the new CA's
// key (sealed with the old one) and switches to it; the agent notices the
// coordinators' new CA, renews onto it and adopts the two-CA bundle; the gossip keyring
// still opens everywhere and the pool holds. A join token minted before the rotation
// still enrolls during the overlap; a token minted after it pins the new CA. After
// the overlap the leader ends the rotation by itself (FinishRotation refuses before it
// without force), and a token pinning the old CA is refused before its secret is sent.
// Then the agent stops trusting the old CA at once, without renewing, and both voters
// delete the old CA's key, after which the gossip keyring still opens and changes.
func TestCARotationAcrossVoterAndAgents(t *testing.T) {
	// Restored after the nodes stop (cleanups run last-registered first).
	t.Cleanup(node.SetGossipKeyringPoll(50 * time.Millisecond))
	t.Cleanup(node.SetCAWatchPoll(50 * time.Millisecond))
	t.Cleanup(api.SetCARotationOverlap(api.CARotationOverlap()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator = &co
	cfg.Gossip = node.GossipConfig{BindAddr: "127.0.0.1:0"}
	c1 := start(t, cfg)
	oldCA, err := pki.LoadCA(c1.ClientTLSDir())
	if err != nil {
		t.Fatal(err)
	}
	creds, err := node.ClientTLSCredentials(c1.ClientTLSDir())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := node.DialCoordinators([]string{c1.GRPCAddr()}, creds)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	coordTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "coordinator"})
	cfg2 := node.DefaultConfig()
	co2 := node.DefaultCoordinatorConfig()
	co2.NodeID, co2.DataDir, co2.Join = "c2", t.TempDir(), []string{c1.GRPCAddr()}
	co2.RaftAddr, co2.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg2.Coordinator = &co2
	cfg2.TLS = &node.TLSConfig{JoinToken: coordTok.String()}
	c2 := start(t, cfg2)
	addrs := []string{c1.GRPCAddr(), c2.GRPCAddr()}

	psTok := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "agent"})
	pcfg := node.DefaultConfig()
	ps := node.DefaultParameterServerConfig()
	ps.NodeID, ps.Join, ps.DataAddr = "ps1", addrs, "127.0.0.1:0"
	pcfg.ParameterServers = []node.ParameterServerConfig{ps}
	pcfg.Storage = node.StorageConfig{Dir: t.TempDir()}
	agentDir := filepath.Join(t.TempDir(), "tls")
	pcfg.TLS = &node.TLSConfig{Dir: agentDir, JoinToken: psTok.String()}
	pcfg.Gossip = node.GossipConfig{BindAddr: "127.0.0.1:0", Seeds: []string{c1.Gossip().LocalAddr()}}
	agent := start(t, pcfg)
	if err := agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "both members in the gossip pool", func() bool { return len(c1.Gossip().Members()) == 2 })
	before := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "client", AclRole: "read"})

	tlsc := cohortv1.NewTLSServiceClient(admin)
	st, err := tlsc.RotateCA(ctx, &cohortv1.RotateCARequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Cas) != 2 || st.Cas[1].Hash != oldCA.Hash() || st.OldCertificatesUntilUnixNano == 0 {
		t.Fatalf("RotateCA: %v", st)
	}
	newHash := st.Cas[0].Hash

	// The joined voter opens the new CA's key and signs with it.
	waitFor(t, 20*time.Second, "c2 to switch to the new CA", func() bool {
		ca, err := pki.LoadCA(filepath.Join(co2.DataDir, "tls"))
		return err == nil && ca.Hash() == newHash
	})
	// The agent renews onto the new CA and keeps both CAs.
	var newSKID []byte
	waitFor(t, 20*time.Second, "the agent to renew onto the new CA", func() bool {
		ca, err := pki.LoadCA(c1.ClientTLSDir())
		if err != nil || ca.Hash() != newHash {
			return false
		}
		newSKID = ca.Certificate().SubjectKeyId
		certPEM, keyPEM, err := pki.LoadKeyPair(filepath.Join(agentDir, pki.NodeCertFile), filepath.Join(agentDir, pki.NodeKeyFile))
		if err != nil {
			return false
		}
		r, err := pki.NewReloader(certPEM, keyPEM, nil)
		return err == nil && bytes.Equal(r.Leaf().AuthorityKeyId, newSKID)
	})
	trust, err := pki.LoadTrust(filepath.Join(agentDir, pki.CACertFile))
	if err != nil || len(trust.Hashes()) != 2 || trust.Hashes()[0] != newHash {
		t.Fatalf("the agent's ca.crt after renewing: %v %v, want [new old]", trust.Hashes(), err)
	}
	// The keyring was resealed with the new CA and still reaches everyone.
	if _, err := cohortv1.NewGossipServiceClient(admin).InstallKey(ctx, &cohortv1.InstallGossipKeyRequest{}); err != nil {
		t.Fatalf("install a gossip key after the rotation: %v", err)
	}
	waitFor(t, 20*time.Second, "the agent to follow the keyring after the rotation", func() bool { return len(agent.Gossip().Keys()) == 2 })
	waitFor(t, 20*time.Second, "both members alive", func() bool { return len(c1.Gossip().Members()) == 2 })

	// Tokens: one minted before the rotation enrolls during the overlap; a new one
	// pins the new CA.
	reader, err := node.EnrollWithToken(ctx, addrs, before, "old-token-client", nil)
	if err != nil {
		t.Fatalf("a token minted before the rotation, during the overlap: %v", err)
	}
	// Only admins rotate: a read client's certificate is refused.
	if _, err := cohortv1.NewTLSServiceClient(connAs(t, c1.GRPCAddr(), oldCA, reader)).RotateCA(ctx, &cohortv1.RotateCARequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("RotateCA with a read client certificate: %v, want PermissionDenied", err)
	}
	after := createToken(t, admin, &cohortv1.CreateTokenRequest{Role: "client", AclRole: "read"})
	if after.CAHash != newHash {
		t.Errorf("a token minted after the rotation pins %s, want the new CA %s", after.CAHash, newHash)
	}
	if _, err := node.EnrollWithToken(ctx, addrs, after, "new-token-client", nil); err != nil {
		t.Errorf("a token minted after the rotation: %v", err)
	}

	if _, err := tlsc.FinishRotation(ctx, &cohortv1.FinishCARotationRequest{}); err == nil {
		t.Error("FinishRotation without --force right after the rotation: want a refusal (old certificates may be valid)")
	}
	// The voters keep the old CA's key while the rotation runs.
	for _, dir := range []string{co.DataDir, co2.DataDir} {
		if _, err := pki.LoadCA(filepath.Join(dir, "tls", "previous-ca")); err != nil {
			t.Fatalf("%s: the old CA's key during the rotation: %v", dir, err)
		}
	}
	// Once the overlap has passed, the leader ends the rotation by itself.
	api.SetCARotationOverlap(0)
	waitFor(t, 20*time.Second, "the leader to end the rotation", func() bool {
		rec, err := c1.Server().State().ClusterCA(nil)
		return err == nil && rec != nil && bytes.Equal(rec.TrustBundlePem, rec.ActiveCertPem)
	})
	// The agent drops the old CA at once (its certificate renews only in hours, which
	// is when it used to take the new bundle): its ca.crt lists the new CA alone.
	waitFor(t, 20*time.Second, "the agent to stop trusting the old CA", func() bool {
		trust, err := pki.LoadTrust(filepath.Join(agentDir, pki.CACertFile))
		return err == nil && len(trust.Hashes()) == 1 && trust.Hashes()[0] == newHash
	})
	// Both voters delete the old CA's key: nothing sealed needs it any more (the
	// gossip keyring opens with the new CA).
	for _, dir := range []string{co.DataDir, co2.DataDir} {
		waitFor(t, 20*time.Second, dir+": the old CA's key to be deleted", func() bool {
			_, err := os.Stat(filepath.Join(dir, "tls", "previous-ca"))
			return errors.Is(err, fs.ErrNotExist)
		})
	}
	// The admin connection holds the old CA's certificate: dial again with the
	// reissued one.
	creds, err = node.ClientTLSCredentials(c1.ClientTLSDir())
	if err != nil {
		t.Fatal(err)
	}
	admin2, err := node.DialCoordinators(addrs, creds)
	if err != nil {
		t.Fatal(err)
	}
	defer admin2.Close()
	fin, err := cohortv1.NewTLSServiceClient(admin2).Status(ctx, &cohortv1.TLSStatusRequest{})
	if err != nil || len(fin.Cas) != 1 || fin.Cas[0].Hash != newHash || fin.OldCertificatesUntilUnixNano != 0 {
		t.Fatalf("status after the rotation ended: %v %v", fin, err)
	}
	another := createToken(t, admin2, &cohortv1.CreateTokenRequest{Role: "client", AclRole: "read"})
	another.CAHash = oldCA.Hash() // as a token minted before the rotation pins it
	waitFor(t, 20*time.Second, "an old-CA token to be refused after --finish", func() bool {
		_, err := node.EnrollWithToken(ctx, addrs, another, "late", nil)
		return errors.Is(err, pki.ErrCAHashMismatch)
	})
	// The agent still works: it renewed, and registers over mutual TLS with the new CA.
	if err := agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// Without the old CA's key the gossip keyring still opens and changes everywhere.
	if _, err := cohortv1.NewGossipServiceClient(admin2).InstallKey(ctx, &cohortv1.InstallGossipKeyRequest{}); err != nil {
		t.Fatalf("install a gossip key after the old CA's key was deleted: %v", err)
	}
	waitFor(t, 20*time.Second, "the agent to follow the keyring without the old CA", func() bool { return len(agent.Gossip().Keys()) == 3 })
}
