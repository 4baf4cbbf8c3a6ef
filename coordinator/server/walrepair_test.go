package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// truncatedWAL writes entries 1..20 at term 1 through raft-wal, then does what a
// follower does when a new leader overrules a deposed one: deletes the suffix 11..20
// (raft-wal's tail truncation seals the segment without an index block) and appends
// 11..15 at term 2.
func truncatedWAL(t *testing.T, dataDir string) {
	t.Helper()
	writeWAL(t, dataDir, 1<<20, 20, 1)
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(filepath.Join(dataDir, "raft-wal"), wal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(11, 20); err != nil {
		t.Fatal(err)
	}
	for i := uint64(11); i <= 15; i++ {
		if err := w.StoreLog(&raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: logEntryData(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := meta.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the regular files of the tree at src to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// newRaftOn runs raft.NewRaft over store (as log and stable store) and reports a
// panic as an error.
func newRaftOn(store interface {
	raft.LogStore
	raft.StableStore
}) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("raft.NewRaft panicked: %v", p)
		}
	}()
	cfg := raft.DefaultConfig()
	cfg.LocalID = "a"
	cfg.Logger = hclog.NewNullLogger()
	_, trans := raft.NewInmemTransport("a")
	return raft.NewRaft(cfg, &raft.MockFSM{}, store, store, raft.NewInmemSnapshotStore(), trans)
}

// TestWALRepairTailTruncation: a raft-wal log with a tail truncation behind it cannot
// be reopened by raft-wal alone (raft.NewRaft panics: "sealed segment has no index
// block"); the coordinator's open re-seals the segment, and every entry reads back.
func TestWALRepairTailTruncation(t *testing.T) {
	dir := t.TempDir()
	truncatedWAL(t, dir)

	// The bug, on a copy: raft-wal alone.
	plain := t.TempDir()
	copyDir(t, dir, plain)
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(filepath.Join(plain, "raft-wal"), wal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := w.GetLog(5, &l); err == nil || !strings.Contains(err.Error(), "sealed segment has no index block") {
		t.Fatalf("raft-wal alone: GetLog(5) = %v, want the missing index block (is the raft-wal bug fixed upstream?)", err)
	}
	if _, err := newRaftOn(w); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("raft-wal alone: raft.NewRaft = %v, want a panic", err)
	}
	_ = w.Close()
	_ = meta.Close()

	// The fix: open through the check and repair.
	logger, logs := logBuffer()
	s, _, err := openRaftStore(dir, "", logger)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "re-sealed") {
		t.Errorf("the repair logged no warning:\n%s", logs)
	}
	wantEntries(t, s, 15)
	if err := s.GetLog(12, &l); err != nil || l.Term != 2 {
		t.Fatalf("GetLog(12) = term %d, %v; want the term-2 entry", l.Term, err)
	}
	r, err := newRaftOn(s.(*walStore))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The repair is recorded: the next open finds nothing to repair and still reads all.
	logger, logs = logBuffer()
	s2, err := openChecked(t, dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	wantEntries(t, s2, 15)
	if logs.Len() > 0 {
		t.Errorf("second open logged:\n%s", logs)
	}
}

// TestWALRepairCrashBeforeMetaCommit: a repair that wrote its index batch but crashed
// before recording it in the meta database is finished by the next open, which reuses
// the batch instead of appending another.
func TestWALRepairCrashBeforeMetaCommit(t *testing.T) {
	dir := t.TempDir()
	truncatedWAL(t, dir)
	segs, paths := walSegments(t, dir)
	if len(segs) != 2 || segs[0].SealTime.IsZero() || segs[0].IndexStart != 0 {
		t.Fatalf("segments %+v, want a sealed one without an index block, then the tail", segs)
	}
	start, n, err := sealWALSegment(paths[0], segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if n != 20 {
		t.Fatalf("index lists %d entries, want the 20 committed ones", n)
	}
	before, err := os.Stat(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	s, err := openChecked(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantEntries(t, s, 15)
	after, err := os.Stat(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() {
		t.Fatalf("segment grew from %d to %d bytes: the repair appended a second index batch", before.Size(), after.Size())
	}
	_ = s.Close()
	segs, _ = walSegments(t, dir)
	if segs[0].IndexStart != start {
		t.Fatalf("meta IndexStart %d, want %d", segs[0].IndexStart, start)
	}
}
