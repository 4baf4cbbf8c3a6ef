package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Log store kinds for Config.RaftLogStore.
const (
	// LogStoreWAL is hashicorp/raft-wal: segment files with one fsync per append batch.
	// The default: it appends 2.1x (single entries) to 2.5x (batches of 64) faster than
	// bolt on this hardware (BenchmarkLogStoreAppend; figures in BENCHMARKS.md) and its
	// files do not grow with deleted history the way a B+tree free list does.
	LogStoreWAL = "wal"
	// LogStoreBoltDB is raft-boltdb/v2, kept for data directories created with it.
	LogStoreBoltDB = "boltdb"
)

// raftStore is the durable Raft log and stable store of one voter.
type raftStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// openRaftStore opens the voter's log and stable store under dataDir. kind "" picks
// whatever the directory already holds (a raft.db from an older release stays on bolt)
// and raft-wal for a new directory. It checks the store's integrity first (logcheck.go)
// and returns an error wrapping ErrRaftLogCorrupt rather than a store that lost
// committed entries; logger (nil: slog.Default()) gets the warning about a torn write
// it lets through.
func openRaftStore(dataDir, kind string, logger *slog.Logger) (raftStore, string, error) {
	if logger == nil {
		logger = slog.Default()
	}
	boltPath := filepath.Join(dataDir, "raft.db")
	walDir := filepath.Join(dataDir, "raft-wal")
	if kind == "" {
		kind = LogStoreWAL
		if _, err := os.Stat(boltPath); err == nil {
			if _, err := os.Stat(walDir); errors.Is(err, os.ErrNotExist) {
				kind = LogStoreBoltDB
			}
		}
	}
	switch kind {
	case LogStoreWAL:
		if err := os.MkdirAll(walDir, 0o700); err != nil {
			return nil, kind, fmt.Errorf("server: create %s: %w", walDir, err)
		}
		w, err := openWALStore(dataDir, walDir, logger)
		if err != nil {
			return nil, kind, err
		}
		return w, kind, nil
	case LogStoreBoltDB:
		if err := checkBoltFile(dataDir, boltPath); err != nil {
			return nil, kind, err
		}
		b, err := raftboltdb.New(raftboltdb.Options{Path: boltPath})
		if err != nil {
			return nil, kind, fmt.Errorf("server: open %s: %w", boltPath, err)
		}
		if err := checkLogNotLost(dataDir, boltPath, b); err != nil {
			_ = b.Close()
			return nil, kind, err
		}
		return b, kind, nil
	default:
		return nil, kind, fmt.Errorf("server: config: RaftLogStore %q: want %q or %q", kind, LogStoreWAL, LogStoreBoltDB)
	}
}

// walStore is a raft-wal log that also closes its meta database.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

// Close closes the log, then the meta database.
func (w *walStore) Close() error {
	return errors.Join(w.WAL.Close(), w.meta.Close())
}
