package server_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/server"
)

// TestClusterIDSurvivesRestartAndSnapshot: the first leader records a cluster ID; a
// voter restarted on its data directory (its snapshots and log replayed)
// has the same one, and restoring a snapshot of the cluster keeps it.
func TestClusterIDSurvivesRestartAndSnapshot(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, func(c *server.Config) { c.SnapshotThreshold, c.SnapshotInterval = 1, 50*time.Millisecond })
	waitFor(t, "a cluster ID", func() bool { return s.State().ClusterID() != "" }, 10*time.Second)
	id := s.State().ClusterID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var snap bytes.Buffer
	if err := s.SnapshotSave(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}

	s2 := startServer(t, dir, nil)
	if err := s2.ConsistentRead(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s2.State().ClusterID(); got != id {
		t.Fatalf("cluster ID %q after restart, want %s", got, id)
	}
	if _, err := s2.SnapshotRestore(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	if got := s2.State().ClusterID(); got != id {
		t.Fatalf("cluster ID %q after restoring a snapshot, want %s", got, id)
	}
}
