package server_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestCorruptWALRefusesToStart: a single voter commits entries and stops; garbage
// written into the middle of its WAL (where raft-wal alone would keep the entries before
// it and silently drop the committed ones after it) makes the next start fail with
// ErrRaftLogCorrupt, naming the segment file, instead of a coordinator without data.
func TestCorruptWALRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, func(c *server.Config) { c.RaftLogStore = server.LogStoreWAL })
	c := serveGRPC(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 30 {
		if _, err := c.jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{
			SpecYaml: []byte("name: corrupt-" + string(rune('a'+i))), IdempotencyKey: "k-" + string(rune('a'+i)),
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Shutdown(); err != nil {
		t.Fatal(err)
	}

	segs, err := filepath.Glob(filepath.Join(dir, "raft-wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no WAL segment in %s: %v", dir, err)
	}
	tail := segs[len(segs)-1] // names sort by base index
	buf, err := os.ReadFile(tail)
	if err != nil {
		t.Fatal(err)
	}
	end := len(bytes.TrimRight(buf, "\x00"))
	mid := end / 2 &^ 7
	f, err := os.OpenFile(tail, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5, 0x5a, 0xc3, 0x3c}, 16), int64(mid)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := server.DefaultConfig()
	cfg.NodeID = "c1"
	cfg.DataDir = dir
	cfg.RaftBindAddr = "127.0.0.1:0"
	cfg.Bootstrap = true
	cfg.Logger = testLogger()
	cfg.Registry = prometheus.NewRegistry()
	s2, err := server.New(cfg)
	if err == nil {
		_ = s2.Shutdown()
		t.Fatal("a coordinator started on a WAL with garbage in the middle of its committed entries")
	}
	if !errors.Is(err, server.ErrRaftLogCorrupt) {
		t.Fatalf("New: %v, want an error wrapping ErrRaftLogCorrupt", err)
	}
	if !strings.Contains(err.Error(), tail) {
		t.Fatalf("error does not name %s: %v", tail, err)
	}
	t.Logf("refused: %v", err)
}
