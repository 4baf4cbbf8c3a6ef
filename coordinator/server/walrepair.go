package server

// The repair of raft-wal's tail truncation, run at open after the integrity check.
//
// raft-wal v0.4.0 truncates the tail (raft's DeleteRange of a suffix, when a follower
// drops entries a deposed leader left uncommitted) by marking the tail segment sealed
// in its meta database, with MaxIndex set to the new last index, and starting a new
// tail. It writes no index block into the truncated segment: IndexStart stays 0. The
// running process keeps reading that segment through its writer's in-memory index, so
// nothing shows until a restart opens the segment as a sealed reader, which finds no
// index ("sealed segment has no index block") and fails every read; raft.NewRaft
// panics on the first one. No newer raft-wal exists, so the coordinator repairs the
// segment before raft-wal opens it, the way raft-wal itself seals a segment: one more
// batch after the last committed one, an index frame listing the offset of every
// committed entry frame, and a commit frame with the batch's CRC-32C; then it records
// the index frame's payload offset as the segment's IndexStart in the meta database.
//
// The segment's committed entries past MaxIndex (those the truncation dropped) stay
// in the file and in the index, as in a segment raft-wal sealed by size: reads stop at
// MaxIndex. A crash during the repair is safe: the file is written and fsynced before
// the meta database is committed, a torn seal batch is uncommitted bytes the next
// repair overwrites, and a seal batch that made it while the meta commit did not is
// found and reused.

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// repairWALSeals gives every sealed segment of st that has no index block (IndexStart
// 0) one, and commits the new IndexStart values to meta. Run it after checkWALFiles
// passed on st. It returns the number of segments repaired.
func repairWALSeals(dataDir, walDir string, meta *metadb.BoltMetaDB, st *types.PersistentState, logger *slog.Logger) (int, error) {
	repaired := 0
	for i, si := range st.Segments {
		if si.SealTime.IsZero() || si.IndexStart != 0 {
			continue
		}
		path := filepath.Join(walDir, segment.FileName(si))
		indexStart, entries, err := sealWALSegment(path, si)
		if err != nil {
			return repaired, fmt.Errorf("server: repair raft log segment %s in data dir %s: %w", path, dataDir, err)
		}
		st.Segments[i].IndexStart = indexStart
		repaired++
		logger.Warn("raft log: sealed segment without an index block (left by a raft-wal tail truncation) "+
			"re-sealed with one", "data_dir", dataDir, "file", path, "index_start", indexStart,
			"entry_frames", entries, "max_index", si.MaxIndex)
	}
	if repaired == 0 {
		return 0, nil
	}
	if err := meta.CommitState(*st); err != nil {
		return repaired, fmt.Errorf("server: record repaired raft log segments in %s: %w",
			filepath.Join(walDir, metadb.FileName), err)
	}
	return repaired, nil
}

// sealWALSegment appends an index batch to the segment file at path (see the top of
// this file) unless its last committed batch already is one that indexes every
// committed entry, and returns the offset of the index payload (the segment's
// IndexStart) and the number of entries it lists.
func sealWALSegment(path string, si types.SegmentInfo) (uint64, int, error) {
	buf, err := readFileInto(nil, path)
	if err != nil {
		return 0, 0, err
	}
	if len(buf) < walFileHeaderLen {
		return 0, 0, fmt.Errorf("the file is %d bytes, shorter than a segment header", len(buf))
	}
	c := walkWALChain(buf)
	if want := si.MaxIndex - si.BaseIndex + 1; uint64(c.entries) < want {
		return 0, 0, fmt.Errorf("it holds %d committed entries, fewer than the %d up to index %d", c.entries, want, si.MaxIndex)
	}
	if c.sealedLast && c.indexLen == c.entries {
		// An earlier repair wrote the seal; its meta commit did not happen.
		return uint64(c.indexAt + walFrameHeaderLen), c.entries, nil
	}
	offsets := make([]uint32, 0, c.entries)
	for off := walFileHeaderLen; off < c.end; {
		f, _, why := walFrameAt(buf, off)
		if why != "" {
			return 0, 0, fmt.Errorf("offset %d: %s", off, why) // walkWALChain verified this run
		}
		if f.typ == walFrameEntry {
			offsets = append(offsets, uint32(off))
		}
		off += f.size
	}
	if len(offsets) != c.entries {
		return 0, 0, fmt.Errorf("found %d entry frames in the committed batches, want %d", len(offsets), c.entries)
	}

	// The index frame (header, offsets, padding to 8 bytes), then the commit frame
	// holding the CRC-32C of the index frame (the batch's bytes since the last commit).
	payload := 4 * len(offsets)
	indexSize := walFrameHeaderLen + (payload+walFrameHeaderLen-1)&^(walFrameHeaderLen-1)
	batch := make([]byte, indexSize+walFrameHeaderLen)
	batch[0] = walFrameIndex
	binary.LittleEndian.PutUint32(batch[4:8], uint32(payload))
	for i, o := range offsets {
		binary.LittleEndian.PutUint32(batch[walFrameHeaderLen+4*i:], o)
	}
	commit := batch[indexSize:]
	commit[0] = walFrameCommit
	binary.LittleEndian.PutUint32(commit[4:8], crc32.Checksum(batch[:indexSize], walCRCTable))
	if uint64(c.end)+uint64(len(batch)) >= walMaxSegmentSize {
		return 0, 0, fmt.Errorf("no room for an index block after offset %d", c.end)
	}

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if _, err := f.WriteAt(batch, int64(c.end)); err != nil {
		return 0, 0, fmt.Errorf("write index block: %w", err)
	}
	// Uncommitted bytes after the new seal (a torn write, checked harmless by
	// checkWALFiles) go, so that the file ends with its seal as raft-wal writes it.
	if end := c.end + len(batch); end < len(buf) && firstNonZero(buf, end) >= 0 {
		if err := f.Truncate(int64(end)); err != nil {
			return 0, 0, fmt.Errorf("drop bytes after the index block: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return 0, 0, fmt.Errorf("sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, 0, err
	}
	return uint64(c.end + walFrameHeaderLen), len(offsets), nil
}
