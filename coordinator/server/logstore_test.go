package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestRestartKeepsStateOnEachLogStore: a voter restarted on the same data directory
// comes back with every acknowledged job, on both log stores, and an empty
// RaftLogStore reopens whichever store the directory already holds.
func TestRestartKeepsStateOnEachLogStore(t *testing.T) {
	for _, tc := range []struct {
		kind, file string
	}{
		{server.LogStoreWAL, "raft-wal"},
		{server.LogStoreBoltDB, "raft.db"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			dir := t.TempDir()
			s := startServer(t, dir, func(c *server.Config) { c.RaftLogStore = tc.kind })
			// Keep the listener of the first voter off the second: a fresh address each time.
			c := serveGRPC(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var ids []string
			for i := range 20 {
				resp, err := c.jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{
					SpecYaml: []byte("name: restart-" + string(rune('a'+i))), IdempotencyKey: "k-" + string(rune('a'+i)),
				})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, resp.Job.Id)
			}
			if err := s.Shutdown(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, tc.file)); err != nil {
				t.Fatalf("%s store left no %s: %v", tc.kind, tc.file, err)
			}

			// Reopen with the kind left empty: the directory decides.
			s2 := startServer(t, dir, nil)
			// A consistent read waits until this voter has applied everything committed
			// before it (the replay of the reopened log).
			if err := s2.ConsistentRead(ctx); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				job, err := s2.State().JobByID(nil, id)
				if err != nil || job == nil {
					t.Fatalf("job %s lost across restart on %s: %v", id, tc.kind, err)
				}
			}
			all, err := s2.State().Jobs(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != len(ids) {
				t.Fatalf("after restart %d jobs, want %d", len(all), len(ids))
			}
		})
	}
}

func TestUnknownLogStoreRefused(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.NodeID = "c1"
	cfg.DataDir = t.TempDir()
	cfg.Bootstrap = true
	cfg.Logger = testLogger()
	cfg.RaftLogStore = "leveldb"
	s, err := server.New(cfg)
	if err == nil {
		_ = s.Shutdown()
		t.Fatal("New accepted RaftLogStore leveldb")
	}
	if want := `RaftLogStore "leveldb"`; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s", err, want)
	}
}
