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
}

// Logger returns the logger tests use: discarded unless -v and COHORT_TEST_LOGS are set.
func Logger() *slog.Logger {
	if testing.Verbose() && os.Getenv("COHORT_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Dev starts node.DevConfig(o.Workers, o.PS, t.TempDir()) on free loopback ports, with
// its coordinator state in a temporary directory, and returns it once every agent has
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
	return &Cluster{Node: n, GRPCAddr: n.GRPCAddr(), HTTPAddr: n.HTTPAddr(), Store: n.Store()}
}
