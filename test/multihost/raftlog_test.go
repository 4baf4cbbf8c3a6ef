package multihost

import (
	"bytes"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// checkLogsAgree stops the coordinators and compares their Raft logs (raft-wal, in
// <data-dir>/raft-wal) over the indexes they all hold: same term, type and data at
// every index, and terms that never decrease. Run once the cluster has been whole for
// a while, so followers have replaced any entries an old leader left uncommitted. It
// returns the number of entries compared.
func (c *cluster) checkLogsAgree() (int, error) {
	for _, co := range c.coords {
		co.proc.Stop(10 * time.Second)
	}
	type log struct {
		id          string
		entries     map[uint64]raft.Log
		first, last uint64
	}
	var logs []log
	var from, to uint64 = 0, ^uint64(0)
	for _, co := range c.coords {
		entries, first, last, err := readRaftWAL(filepath.Join(co.dataDir, "raft-wal"))
		if err != nil {
			return 0, fmt.Errorf("the Raft log of %s: %w", co.id, err)
		}
		logs = append(logs, log{co.id, entries, first, last})
		from, to = max(from, first), min(to, last)
	}
	if from == 0 || from > to {
		return 0, fmt.Errorf("the Raft logs share no index (%d..%d)", from, to)
	}
	var prevTerm uint64
	for i := from; i <= to; i++ {
		ref, ok := logs[0].entries[i]
		if !ok {
			return 0, fmt.Errorf("index %d missing from the log of %s", i, logs[0].id)
		}
		for _, l := range logs[1:] {
			e, ok := l.entries[i]
			if !ok {
				return 0, fmt.Errorf("index %d missing from the log of %s", i, l.id)
			}
			if e.Term != ref.Term || e.Type != ref.Type || !bytes.Equal(e.Data, ref.Data) {
				return 0, fmt.Errorf("index %d: %s holds term %d type %v (%d bytes), %s term %d type %v (%d bytes)",
					i, logs[0].id, ref.Term, ref.Type, len(ref.Data), l.id, e.Term, e.Type, len(e.Data))
			}
		}
		if ref.Term < prevTerm {
			return 0, fmt.Errorf("index %d: term %d after term %d", i, ref.Term, prevTerm)
		}
		prevTerm = ref.Term
	}
	return int(to - from + 1), nil
}

// readRaftWAL reads a stopped voter's raft-wal log from its segment files, as its
// meta database describes them, without raft-wal's reader: raft-wal v0.4.0 cannot
// read a segment that a tail truncation sealed (it writes no index block for it;
// hashicorp/raft-wal#31), which is what an old leader's log holds after its
// uncommitted suffix was replaced.
func readRaftWAL(dir string) (entries map[uint64]raft.Log, first, last uint64, err error) {
	var meta metadb.BoltMetaDB
	st, err := meta.Load(dir)
	if err != nil {
		return nil, 0, 0, err
	}
	defer meta.Close()
	if len(st.Segments) == 0 {
		return nil, 0, 0, fmt.Errorf("%s: no segments", dir)
	}
	filer := segment.NewFiler(dir, fs.New())
	var codec wal.BinaryCodec
	entries = map[uint64]raft.Log{}
	first = st.Segments[0].MinIndex
	for i, seg := range st.Segments {
		hi := seg.MaxIndex // set when sealed (a tail truncation lowers it)
		if seg.SealTime.IsZero() {
			hi = ^uint64(0)
		}
		last = max(last, seg.BaseIndex-1)
		err := filer.DumpSegment(seg.BaseIndex, seg.ID, 0, 0, func(_ types.SegmentInfo, e types.LogEntry) (bool, error) {
			if e.Index < seg.MinIndex || e.Index > hi {
				return true, nil
			}
			var l raft.Log
			if err := codec.Decode(e.Data, &l); err != nil {
				return false, fmt.Errorf("segment %d, index %d: %w", i, e.Index, err)
			}
			if l.Index != e.Index {
				return false, fmt.Errorf("segment %d: entry %d holds index %d", i, e.Index, l.Index)
			}
			entries[e.Index] = l
			last = max(last, e.Index)
			return true, nil
		})
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%s: %w", dir, err)
		}
	}
	for i := first; i <= last; i++ {
		if _, ok := entries[i]; !ok {
			return nil, 0, 0, fmt.Errorf("%s: index %d of %d..%d missing", dir, i, first, last)
		}
	}
	return entries, first, last, nil
}
