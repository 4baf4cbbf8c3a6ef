package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
)

// testPKI is the one CA of every cluster this test process starts (dev clusters with
// nodetest.Options.CADir, coordinator processes with withTestCA), and a client
// certificate from it. TestMain points COHORT_TLS_DIR at the client's directory, so the
// CLI, in process or not, reaches every test cluster as an operator's would.
var testPKI struct {
	root, caDir, clientDir string
}

// setupTestPKI makes the test CA and the client credentials and sets COHORT_TLS_DIR; the
// returned function removes them.
func setupTestPKI() (func(), error) {
	root, err := os.MkdirTemp("", "cohort-test-pki-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { _ = os.RemoveAll(root) }
	testPKI.root, testPKI.caDir, testPKI.clientDir = root, filepath.Join(root, "ca"), filepath.Join(root, "client")
	ca, err := pki.NewCA("cohort test CA", time.Now())
	if err == nil {
		err = ca.Save(testPKI.caDir)
	}
	if err == nil {
		_, err = node.IssueFiles(testPKI.caDir, testPKI.clientDir, node.AdminIdentity, nil, 0)
	}
	if err == nil {
		err = os.Setenv("COHORT_TLS_DIR", testPKI.clientDir)
	}
	if err != nil {
		cleanup()
		return nil, err
	}
	return cleanup, nil
}

// testCADir is the test CA's directory (nodetest.Options.CADir).
func testCADir(t testing.TB) string {
	t.Helper()
	if testPKI.caDir == "" {
		t.Fatal("the test CA is made by TestMain")
	}
	return testPKI.caDir
}

// withTestCA puts the test CA into a coordinator's default TLS directory, DATA_DIR/tls:
// it then issues its own certificate from it.
func withTestCA(t testing.TB, dataDir string) {
	t.Helper()
	nodetest.CopyCA(t, testCADir(t), filepath.Join(dataDir, "tls"))
}

// agentTLSDir is a TLS directory for node agent nodeID (--tls-dir), from the test CA.
func agentTLSDir(t testing.TB, nodeID string) string {
	t.Helper()
	return nodetest.IssueTLSDir(t, testCADir(t), pki.Identity{Name: nodeID, Role: pki.RoleAgent, ACLRole: "agent"})
}

// testCreds are the CLI's credentials for test clusters (the client of COHORT_TLS_DIR).
func testCreds(t testing.TB) credentials.TransportCredentials {
	t.Helper()
	creds, err := node.ClientTLSCredentials(testPKI.clientDir)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// testCA loads the test CA (clustertest.Options.CA).
func testCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.LoadCA(testCADir(t))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// shardDialOptions are the dial options of worker nodeID to parameter-server shards: an
// agent certificate from the test CA, accepting only node agents.
func shardDialOptions(t testing.TB, nodeID string) []grpc.DialOption {
	t.Helper()
	dir := agentTLSDir(t, nodeID)
	pool, err := pki.LoadCAPool(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.LoadKeyPair(filepath.Join(dir, pki.NodeCertFile), filepath.Join(dir, pki.NodeKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.NewReloader(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(pki.RoleClientTLSConfig(pool, certs, pki.RoleAgent)))}
}
