// Package nodetest starts Cohort nodes inside a test: the embedded dev cluster (a
// single-voter coordinator, parameter servers and workers on loopback, storage in
// t.TempDir()) assembled by package node exactly as `cohort dev` assembles it.
package nodetest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// Options tune a dev cluster.
type Options struct {
	// Workers and PS are the numbers of worker and parameter-server agents (0: none).
	Workers, PS int
	// S3, when set, puts all storage in that bucket (and lets workers read s3:// data).
	S3 *storage.S3Config
	// Observer, when set, receives every task report a worker sends.
	Observer func(*cohortv1.TaskReport)
	// Logger receives the cluster's logs (default: Logger()).
	Logger *slog.Logger
	// DataRoots are the workers' data roots (nil: the repository and the temporary
	// directory, where tests keep their data).
	DataRoots []string
	// CADir, when set, holds a CA (ca.crt, ca.key) the cluster uses instead of making
	// its own: the clusters of one test process can share a CA, and one client
	// certificate then reaches them all.
	CADir string
	// Mutate, when set, changes the Config last.
	Mutate func(*node.Config)
}

// TestDataRoots are the data roots of test clusters: the repository (its jobs/ data)
// and the temporary directory (t.TempDir()).
func TestDataRoots() []string {
	_, self, _, _ := runtime.Caller(0)
	return []string{filepath.Join(filepath.Dir(self), "..", ".."), os.TempDir()}
}

// Cluster is a running dev cluster.
type Cluster struct {
	// Node is the node running every role.
	Node *node.Node
	// GRPCAddr is the coordinator's gRPC API; HTTPAddr serves /metrics, /healthz,
	// /readyz and the dashboard.
	GRPCAddr, HTTPAddr string
	// Store is the cluster's storage.
	Store storage.Blob
	// TLSDir holds the cluster CA and the operator's client credentials (ca.crt,
	// admin.crt, admin.key; ca.key too): what the CLI takes as --tls-dir.
	TLSDir string
}

// DialOptions are the dial options of a client of the cluster: its admin client
// certificate (mutual TLS).
func (c *Cluster) DialOptions(t testing.TB) []grpc.DialOption {
	t.Helper()
	creds, err := node.ClientTLSCredentials(c.TLSDir)
	if err != nil {
		t.Fatalf("dev cluster client credentials: %v", err)
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(creds)}
}

// Dial opens a client connection to the cluster's coordinator with DialOptions and
// extra; it is closed when the test ends.
func (c *Cluster) Dial(t testing.TB, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(c.GRPCAddr, append(c.DialOptions(t), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// AgentTLSDir issues node agent nodeID a certificate from the cluster's CA and returns
// the TLS directory holding it (ca.crt, node.crt, node.key), for an agent started apart
// from the cluster (--tls-dir).
func (c *Cluster) AgentTLSDir(t testing.TB, nodeID string) string {
	t.Helper()
	return IssueTLSDir(t, c.TLSDir, pki.Identity{Name: nodeID, Role: pki.RoleAgent, ACLRole: "agent"})
}

// IssueTLSDir has the CA in caDir issue id a certificate (loopback host names) and
// returns a new temporary TLS directory holding it.
func IssueTLSDir(t testing.TB, caDir string, id pki.Identity) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	if _, err := node.IssueFiles(caDir, dir, id, []string{"127.0.0.1", "localhost"}, 0); err != nil {
		t.Fatalf("issue a certificate for %s: %v", id, err)
	}
	return dir
}

// Logger returns the logger tests use: discarded unless -v and COHORT_TEST_LOGS are set.
func Logger() *slog.Logger {
	if testing.Verbose() && os.Getenv("COHORT_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Dev starts node.DevConfig(o.Workers, o.PS, t.TempDir()) on free loopback ports, with
// its coordinator state in a temporary directory and its own CA (every connection is
// mutual TLS; see Cluster.DialOptions), and returns it once every agent has
// registered; ctx bounds the start. It is shut down when the test ends.
func Dev(t testing.TB, ctx context.Context, o Options) *Cluster {
	t.Helper()
	dir := t.TempDir()
	cfg := node.DevConfig(o.Workers, o.PS, dir)
	cfg.Coordinator.DataDir, cfg.Coordinator.Ephemeral = dir, true
	cfg.Coordinator.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Storage.S3 = o.S3
	cfg.Logger = o.Logger
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	roots := o.DataRoots
	if roots == nil {
		roots = TestDataRoots()
	}
	for i := range cfg.Workers {
		cfg.Workers[i].Observer = o.Observer
		cfg.Workers[i].DataRoots = roots
	}
	if o.CADir != "" {
		CopyCA(t, o.CADir, cfg.TLS.Dir)
	}
	if o.Mutate != nil {
		o.Mutate(&cfg)
	}
	n, err := node.New(cfg)
	if err == nil {
		err = n.Start(ctx)
	}
	if err != nil {
		t.Fatalf("start dev cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Logf("dev cluster shutdown: %v", err)
		}
	})
	if err := n.WaitReady(ctx); err != nil {
		t.Fatalf("dev cluster not ready: %v", err)
	}
	return &Cluster{Node: n, GRPCAddr: n.GRPCAddr(), HTTPAddr: n.HTTPAddr(), Store: n.Store(), TLSDir: n.ClientTLSDir()}
}

// CopyCA copies the CA in caDir (ca.crt, ca.key) to tlsDir, where a coordinator then
// uses it (TLSConfig.Dir, or its DATA_DIR/tls) to issue its own certificate.
func CopyCA(t testing.TB, caDir, tlsDir string) {
	t.Helper()
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{pki.CACertFile: 0o644, pki.CAKeyFile: 0o600} {
		raw, err := os.ReadFile(filepath.Join(caDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tlsDir, name), raw, mode); err != nil {
			t.Fatal(err)
		}
	}
}
