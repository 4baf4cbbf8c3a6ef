package pki

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoleClientTLSConfig(t *testing.T) {
	f := newTLSFixture(t) // the server is coordinator "coord-1", named coord.test and 127.0.0.1
	agent := f.reloader(t, f.ca, Identity{Name: "node-1", Role: RoleAgent}, time.Now(), time.Hour)
	t.Run("role, any host name", func(t *testing.T) {
		cfg := RoleClientTLSConfig(f.ca.Pool(), agent, RoleCoordinator)
		cfg.ServerName = "elsewhere.test" // not in the certificate: not checked
		res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, true), cfg)
		if res.clientErr != nil || res.serverErr != nil {
			t.Fatalf("client: %v; server: %v", res.clientErr, res.serverErr)
		}
	})
	t.Run("wrong role", func(t *testing.T) {
		res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, true), RoleClientTLSConfig(f.ca.Pool(), agent, RoleAgent))
		if !errors.Is(res.clientErr, ErrRoleNotAllowed) {
			t.Fatalf("client accepted a coordinator as an agent: %v", res.clientErr)
		}
	})
	t.Run("other CA", func(t *testing.T) {
		res := handshake(t, ServerTLSConfig(f.ca.Pool(), f.server, true), RoleClientTLSConfig(f.other.Pool(), agent, RoleCoordinator))
		if res.clientErr == nil || !strings.Contains(res.clientErr.Error(), "unknown authority") {
			t.Fatalf("client accepted a server of another CA: %v", res.clientErr)
		}
	})
	t.Run("client certificate as server", func(t *testing.T) {
		// A client certificate lacks ServerAuth: it cannot serve, whatever its role.
		client := f.reloader(t, f.ca, Identity{Name: "alice", Role: RoleClient, ACLRole: "admin"}, time.Now(), time.Hour)
		res := handshake(t, ServerTLSConfig(f.ca.Pool(), client, false), RoleClientTLSConfig(f.ca.Pool(), nil, RoleClient))
		if res.clientErr == nil {
			t.Fatal("client accepted a server presenting a client certificate")
		}
	})
}

func TestIssueForAndKeyPairFiles(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	certPEM, keyPEM, err := ca.IssueFor(Identity{Name: "c1", Role: RoleCoordinator},
		[]string{"10.0.0.1", "c1.internal", "10.0.0.1", "", "bad name!", "::1"}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := firstCert(t, certPEM)
	if len(leaf.IPAddresses) != 2 || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "c1.internal" {
		t.Errorf("SANs %v %v", leaf.IPAddresses, leaf.DNSNames)
	}
	if _, _, err := ca.IssueFor(Identity{Name: "alice", Role: RoleClient, ACLRole: "admin"}, []string{"127.0.0.1"}, time.Hour, t0); err != nil {
		t.Errorf("a client's hosts are dropped, not refused: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "tls")
	if err := SaveKeyPair(dir, "node", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, NodeKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	c, k, err := LoadKeyPair(filepath.Join(dir, NodeCertFile), filepath.Join(dir, NodeKeyFile))
	if err != nil || string(c) != string(certPEM) || string(k) != string(keyPEM) {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, NodeKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadKeyPair(filepath.Join(dir, NodeCertFile), filepath.Join(dir, NodeKeyFile)); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadKeyPair of a readable key: %v", err)
	}
	if err := SaveCACert(dir, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCAPool(filepath.Join(dir, CACertFile)); err != nil {
		t.Error(err)
	}
	if _, err := LoadCAPool(filepath.Join(dir, NodeCertFile)); err == nil {
		t.Error("LoadCAPool accepted a leaf certificate")
	}
}
