package node_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/gossip"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// waitFor polls cond (every 20 ms) until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGossipKeyringFromTheCluster: a TLS cluster encrypts gossip with a keyring the
// leader makes and every member fetches over mutual TLS; installing, using and removing
// a key reaches a joined agent while it stays in the pool; a member without the key
// (plaintext) cannot join; admins see only fingerprints.
func TestGossipKeyringFromTheCluster(t *testing.T) {
	t.Cleanup(node.SetGossipKeyringPoll(50 * time.Millisecond)) // after the nodes stop (cleanups run last first)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := node.DefaultConfig()
	co := node.DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator = &co
	cfg.Gossip = node.GossipConfig{BindAddr: "127.0.0.1:0"}
	c1 := start(t, cfg)
	creds, err := node.ClientTLSCredentials(c1.ClientTLSDir())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := node.DialCoordinators([]string{c1.GRPCAddr()}, creds)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := cohortv1.NewGossipServiceClient(conn)
	first := c1.Gossip().Keys()
	if len(first) != 1 || len(first[0]) != api.GossipKeyBytes {
		t.Fatalf("coordinator keyring %d keys, want one %d-byte key", len(first), api.GossipKeyBytes)
	}

	// An agent that joins with a token gets the same keyring and joins the pool.
	tok := createToken(t, conn, &cohortv1.CreateTokenRequest{Role: "agent"})
	pcfg := node.DefaultConfig()
	ps := node.DefaultParameterServerConfig()
	ps.NodeID, ps.Join, ps.DataAddr = "ps1", []string{c1.GRPCAddr()}, "127.0.0.1:0"
	pcfg.ParameterServers = []node.ParameterServerConfig{ps}
	pcfg.Storage = node.StorageConfig{Dir: t.TempDir()}
	pcfg.TLS = &node.TLSConfig{Dir: filepath.Join(t.TempDir(), "tls"), JoinToken: tok.String()}
	pcfg.Gossip = node.GossipConfig{BindAddr: "127.0.0.1:0", Seeds: []string{c1.Gossip().LocalAddr()}}
	agent := start(t, pcfg)
	if !keysEqual(agent.Gossip().Keys(), first) {
		t.Fatal("the agent's keyring differs from the coordinator's")
	}
	waitFor(t, 20*time.Second, "both members in the pool", func() bool { return len(c1.Gossip().Members()) == 2 })

	// A member without the key is not let in.
	plain, err := gossip.New(gossip.Config{Name: "intruder", BindAddr: "127.0.0.1:0", Logger: nodetest.Logger(), LAN: false})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown()
	if err := plain.Join([]string{c1.Gossip().LocalAddr()}); err == nil {
		t.Error("a member without the gossip key joined")
	}

	// Rotate: install, use, remove; the agent follows and stays in the pool.
	inst, err := admin.InstallKey(ctx, &cohortv1.InstallGossipKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the agent to install the new key", func() bool { return len(agent.Gossip().Keys()) == 2 })
	if _, err := admin.UseKey(ctx, &cohortv1.UseGossipKeyRequest{Fingerprint: inst.Fingerprint}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RemoveKey(ctx, &cohortv1.RemoveGossipKeyRequest{Fingerprint: api.GossipKeyFingerprint(first[0])}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the agent to drop the old key", func() bool {
		k := agent.Gossip().Keys()
		return len(k) == 1 && api.GossipKeyFingerprint(k[0]) == inst.Fingerprint
	})
	// The coordinator follows the keyring on its own poll, not the agent's.
	waitFor(t, 20*time.Second, "the coordinator to drop the old key", func() bool {
		k := c1.Gossip().Keys()
		return len(k) == 1 && !bytes.Equal(k[0], first[0])
	})
	waitFor(t, 20*time.Second, "both members alive after the rotation", func() bool { return len(c1.Gossip().Members()) == 2 && len(agent.Gossip().Members()) == 2 })
	list, err := admin.ListKeys(ctx, &cohortv1.ListGossipKeysRequest{})
	if err != nil || len(list.Keys) != 1 || !list.Keys[0].Primary || list.Keys[0].Fingerprint != inst.Fingerprint {
		t.Fatalf("keyring list %v %v", list, err)
	}
	// The primary cannot be removed; an unknown fingerprint is named.
	if _, err := admin.RemoveKey(ctx, &cohortv1.RemoveGossipKeyRequest{Fingerprint: inst.Fingerprint}); err == nil {
		t.Error("removed the primary key")
	}
	// The Raft state holds the keyring sealed: not one key in the clear.
	k, _ := c1.Server().State().GossipKeyring(nil)
	if k == nil || bytes.Contains(k.Sealed, agent.Gossip().Keys()[0]) {
		t.Error("the stored keyring holds the key in the clear")
	}
}

func keysEqual(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
