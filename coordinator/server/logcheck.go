package server

// The integrity check of the Raft log store, run before the store is handed to Raft.
//
// raft-wal (v0.4.0) trusts its files: on open it reads the tail segment up to the first
// frame it cannot decode and treats everything after it as a torn write, so garbage in
// the middle of the tail silently drops every committed entry behind it; it never checks
// a sealed segment's checksums; and it deletes segment files its meta database does not
// list. A voter that starts on such a log leads (or votes) without committed entries,
// which Raft cannot repair. So the coordinator scans the files itself and refuses to
// start, naming the file, the offset and what is wrong, when a rule below fails.
//
// A segment file is a 32-byte header and then 8-byte aligned frames (entry, index,
// commit). Each append is one batch: its frames, then a commit frame holding the
// CRC-32C of every byte since the previous commit frame (the first batch's covers the
// header too). The check walks the batches from the header and verifies each CRC; the
// verified run ends at the first batch that does not verify (or at unwritten space).
//
//   - Anything after the verified run that is not zero is the torn write of a crash
//     (allowed, logged at WARN with its offset) only if no complete, CRC-verified batch
//     starts anywhere after it. A verified batch there was written, fsynced and
//     acknowledged after the damaged one, so the damage is corruption of committed data:
//     refused. A torn write never holds one: raft-wal writes a batch only once the one
//     before it is fsynced, and a remnant of a torn batch cannot match a CRC taken from
//     the batch's start.
//   - A sealed segment must verify up to its seal (the index frame the meta database
//     points at, listing every entry) and hold the entries up to the MaxIndex the meta
//     database records; a segment sealed by a tail truncation must hold those entries.
//     Bytes after the seal are judged like a torn tail (a write torn across the seal
//     point can leave some; the segment lists no entry there).
//   - Every segment the meta database lists must exist and be at least a header long,
//     except a missing or short tail that is the whole log of a voter still at term 0
//     (raft-wal creates the file after recording it, so a crash can lose it, and such a
//     voter never stored an entry). The segments must be contiguous; a tail whose
//     MinIndex lies past BaseIndex (a head truncation) must still hold that entry; a
//     segment file whose ID the meta database never allocated means the meta database
//     was lost or replaced.
//   - The bbolt files (raft-boltdb's raft.db, raft-wal's wal-meta.db) must pass bbolt's
//     consistency check.
//   - A stable store at CurrentTerm > 0 with an empty log and no snapshot lost its log:
//     such a voter would never lead (its configuration was in the log).
//
// A damaged last batch of the tail is indistinguishable from a torn write and is
// dropped with a warning: that one batch is all a crash may take.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
)

// ErrRaftLogCorrupt is wrapped by the error New returns when the voter's Raft log
// store is damaged in a way that would lose committed entries: the coordinator refuses
// to start instead. The error's text names the file, the offset and the fix.
var ErrRaftLogCorrupt = errors.New("raft log corrupt")

// keyCurrentTerm is hashicorp/raft's stable-store key of the current term.
var keyCurrentTerm = []byte("CurrentTerm")

// raft-wal v0.4.0's segment format (segment/format.go; unexported there).
const (
	walFileHeaderLen  = 32
	walMagic          = 0x58eb6b0d
	walFrameHeaderLen = 8
	walFrameEntry     = 1
	walFrameIndex     = 2
	walFrameCommit    = 3
	walMaxEntrySize   = 64 << 20
	// walMaxSegmentSize: raft-wal's frame offsets are uint32.
	walMaxSegmentSize = 1 << 32
)

var walCRCTable = crc32.MakeTable(crc32.Castagnoli)

// logCorruptError is one integrity failure of the Raft log store.
type logCorruptError struct {
	dataDir string
	file    string
	offset  int64  // byte offset in file; -1 when the problem is not at one place
	index   uint64 // first Raft index affected; 0 when not known
	problem string
	cause   error
}

func (e *logCorruptError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server: the raft log in data dir %s is corrupt: %s", e.dataDir, e.file)
	if e.offset >= 0 {
		fmt.Fprintf(&b, " at offset %d", e.offset)
	}
	if e.index > 0 {
		fmt.Fprintf(&b, " (raft index %d)", e.index)
	}
	fmt.Fprintf(&b, ": %s", e.problem)
	if e.cause != nil {
		fmt.Fprintf(&b, ": %v", e.cause)
	}
	fmt.Fprintf(&b, ". Refusing to start rather than run without committed entries. To recover, "+
		"move %s aside (keep it for diagnosis) and either re-join this coordinator as a new voter "+
		"(`cohort operator raft remove-peer ID` against a healthy voter, then start this one on an "+
		"empty data dir and `cohort operator raft add-voter ID RAFT_ADDR`) or, for a single-voter "+
		"cluster, start it on an empty data dir and restore the latest snapshot with "+
		"`cohort operator snapshot restore FILE`", e.dataDir)
	return b.String()
}

func (e *logCorruptError) Unwrap() []error {
	if e.cause != nil {
		return []error{ErrRaftLogCorrupt, e.cause}
	}
	return []error{ErrRaftLogCorrupt}
}

// openWALStore checks the raft-wal files under walDir, then opens them.
func openWALStore(dataDir, walDir string, logger *slog.Logger) (*walStore, error) {
	metaPath := filepath.Join(walDir, metadb.FileName)
	if err := checkBoltFile(dataDir, metaPath); err != nil {
		return nil, err
	}
	// raft-wal v0.4.0's Close leaves its bolt meta database open (and its file lock
	// held), so a voter restarted in the same process would block forever; own the
	// meta store and close it after the WAL.
	meta := &metadb.BoltMetaDB{}
	st, err := meta.Load(walDir)
	if err != nil {
		_ = meta.Close()
		if errors.Is(err, wal.ErrCorrupt) {
			return nil, &logCorruptError{dataDir: dataDir, file: metaPath, offset: -1,
				problem: "its segment list does not decode", cause: err}
		}
		return nil, fmt.Errorf("server: open raft-wal meta database %s: %w", metaPath, err)
	}
	term := uint64(1) // unreadable: assume the voter has been in a term
	if raw, err := meta.GetStable(keyCurrentTerm); err == nil && len(raw) == 0 {
		term = 0
	} else if err == nil && len(raw) == 8 {
		term = binary.LittleEndian.Uint64(raw) // raft-wal's SetUint64 encoding
	}
	if err := checkWALFiles(dataDir, walDir, st, term, logger); err != nil {
		_ = meta.Close()
		return nil, err
	}
	if _, err := repairWALSeals(dataDir, walDir, meta, &st, logger); err != nil {
		_ = meta.Close()
		return nil, err
	}
	w, err := wal.Open(walDir, wal.WithMetaStore(meta))
	if err != nil {
		_ = meta.Close()
		if errors.Is(err, wal.ErrCorrupt) {
			return nil, &logCorruptError{dataDir: dataDir, file: walDir, offset: -1,
				problem: "raft-wal refused to open it", cause: err}
		}
		return nil, fmt.Errorf("server: open raft-wal in %s: %w", walDir, err)
	}
	s := &walStore{WAL: w, meta: meta}
	if err := checkLogNotLost(dataDir, walDir, s); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// checkLogNotLost refuses a stable store that has been in a term while its log is
// empty and no snapshot exists: the log was lost (a bootstrapped or joined voter
// stores its first entry, or later a snapshot, before it forgets any entry).
func checkLogNotLost(dataDir, file string, s raftStore) error {
	term, err := s.GetUint64(keyCurrentTerm)
	if err != nil && err.Error() == "not found" { // raft-boltdb's unset key, as raft reads it
		term, err = 0, nil
	}
	if err != nil {
		return fmt.Errorf("server: read raft current term from %s: %w", file, err)
	}
	if term == 0 {
		return nil
	}
	last, err := s.LastIndex()
	if err != nil {
		return fmt.Errorf("server: read raft last index from %s: %w", file, err)
	}
	if last > 0 {
		return nil
	}
	// The same store setupRaft opens next (it creates the snapshots folder too).
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 1, hclog.NewNullLogger())
	if err != nil {
		return fmt.Errorf("server: snapshot store: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("server: list snapshots: %w", err)
	}
	if len(metas) > 0 {
		return nil
	}
	return &logCorruptError{dataDir: dataDir, file: file, offset: -1, problem: fmt.Sprintf(
		"the stable store is at raft term %d, yet the log is empty and there is no snapshot: "+
			"the log was lost, and this voter would never lead (a coordinator stopped while "+
			"joining, before its first entry arrived, looks the same; re-joining fixes both)", term)}
}

// checkWALFiles checks raft-wal's segment files under walDir against st, the meta
// database's segment list, before raft-wal opens them. term is the stable store's
// CurrentTerm.
func checkWALFiles(dataDir, walDir string, st types.PersistentState, term uint64, logger *slog.Logger) error {
	start := time.Now()
	metaPath := filepath.Join(walDir, metadb.FileName)
	corrupt := func(file string, offset int64, index uint64, format string, args ...any) error {
		return &logCorruptError{dataDir: dataDir, file: file, offset: offset, index: index,
			problem: fmt.Sprintf(format, args...)}
	}

	segs := st.Segments
	for i, si := range segs {
		sealed := !si.SealTime.IsZero()
		if !sealed && i != len(segs)-1 {
			return corrupt(metaPath, -1, si.BaseIndex,
				"segment %d is unsealed but is not the last of its %d segments", si.ID, len(segs))
		}
		if sealed && si.MaxIndex < si.BaseIndex {
			return corrupt(metaPath, -1, si.BaseIndex,
				"sealed segment %d ends at index %d, before its base index %d", si.ID, si.MaxIndex, si.BaseIndex)
		}
		if i > 0 && si.BaseIndex != segs[i-1].MaxIndex+1 {
			return corrupt(metaPath, -1, segs[i-1].MaxIndex+1,
				"segment %d starts at index %d, but the segment before it ends at %d", si.ID, si.BaseIndex, segs[i-1].MaxIndex)
		}
	}

	dir, err := os.ReadDir(walDir)
	if err != nil {
		return fmt.Errorf("server: check raft log: %w", err)
	}
	for _, e := range dir {
		var base, id uint64
		if n, err := fmt.Sscanf(e.Name(), "%020d-%016x.wal", &base, &id); err != nil || n != 2 {
			continue // raft-wal refuses misnamed .wal files itself
		}
		if id >= st.NextSegmentID {
			return corrupt(filepath.Join(walDir, e.Name()), -1, base,
				"the meta database %s never allocated this segment's ID (its next ID is %d): it was lost "+
					"or replaced, and raft-wal would delete this file with its entries", metaPath, st.NextSegmentID)
		}
	}

	var buf []byte
	entries := 0
	for _, si := range segs {
		tail := si.SealTime.IsZero()
		path := filepath.Join(walDir, segment.FileName(si))
		fi, err := os.Stat(path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("server: check raft log: %w", err)
		}
		if err != nil || fi.Size() < walFileHeaderLen {
			what := "the segment file is missing"
			if err == nil {
				what = fmt.Sprintf("the segment file is %d bytes, shorter than its %d-byte header", fi.Size(), walFileHeaderLen)
			}
			if tail && len(segs) == 1 && term == 0 {
				// Nothing can have been committed by a voter that never saw a term.
				logger.Warn("raft log: empty tail segment of a new voter is recreated",
					"data_dir", dataDir, "file", path, "problem", what)
				continue
			}
			off := int64(-1)
			if err == nil {
				off = 0
			}
			return corrupt(path, off, si.BaseIndex, "%s (the meta database lists it)", what)
		}
		if fi.Size() >= walMaxSegmentSize {
			return corrupt(path, -1, si.BaseIndex, "the file is %d bytes, larger than a segment can be", fi.Size())
		}
		buf, err = readFileInto(buf, path)
		if err != nil {
			return fmt.Errorf("server: check raft log: %w", err)
		}
		r, bad := checkWALSegment(buf, si)
		if bad != nil {
			bad.dataDir, bad.file = dataDir, path
			return bad
		}
		if r.strayAt >= 0 {
			logger.Warn("raft log: uncommitted bytes after the last committed batch of a segment, "+
				"from a torn write; they are ignored", "data_dir", dataDir, "file", path, "offset", r.strayAt,
				"damage_offset", r.strayDamage, "last_committed_index", si.BaseIndex+uint64(r.entries)-1,
				"tail", tail, "detail", r.strayWhy)
		}
		entries += r.entries
	}
	logger.Debug("raft log integrity checked", "data_dir", dataDir, "segments", len(segs),
		"entry_frames", entries, "took", time.Since(start))
	return nil
}

// walSegmentResult is what checkWALSegment found in a segment that passed.
type walSegmentResult struct {
	entries int // entry frames in CRC-verified batches
	// strayAt is where the verified batches end when uncommitted bytes follow them (-1:
	// none follow); strayDamage is the offset of the first bad frame or batch, strayWhy
	// what is there.
	strayAt, strayDamage int64
	strayWhy             string
}

// checkWALSegment checks one segment file's contents (buf) against its meta database
// record. Its error leaves dataDir and file to the caller.
func checkWALSegment(buf []byte, si types.SegmentInfo) (walSegmentResult, *logCorruptError) {
	res := walSegmentResult{strayAt: -1}
	corrupt := func(offset int, index uint64, format string, args ...any) (walSegmentResult, *logCorruptError) {
		return res, &logCorruptError{offset: int64(offset), index: index, problem: fmt.Sprintf(format, args...)}
	}
	tail := si.SealTime.IsZero()
	c := walkWALChain(buf)
	res.entries = c.entries
	lost := si.BaseIndex + uint64(c.entries) // first index not in a verified batch

	// A tail that never committed may hold any header; any other must hold its own.
	if c.end > 0 || !tail {
		if why := walHeaderProblem(buf[:walFileHeaderLen], si); why != "" {
			return corrupt(0, si.BaseIndex, "%s", why)
		}
	}
	if !tail {
		if si.IndexStart > 0 {
			if !c.sealedLast || uint64(c.indexAt+walFrameHeaderLen) != si.IndexStart {
				if c.why != "" {
					return corrupt(c.stopAt, lost, "sealed segment: %s", c.why)
				}
				return corrupt(int(si.IndexStart), lost, "sealed segment: its last committed batch does not end "+
					"with the index frame the meta database points at (offset %d)", si.IndexStart)
			}
			if c.indexLen != c.entries {
				return corrupt(c.indexAt, si.BaseIndex, "sealed segment: its index frame lists %d entries, "+
					"but it holds %d", c.indexLen, c.entries)
			}
		}
		if want := si.MaxIndex - si.BaseIndex + 1; uint64(c.entries) < want {
			if c.why != "" {
				return corrupt(c.stopAt, lost, "sealed segment holding entries up to index %d: %s", si.MaxIndex, c.why)
			}
			return corrupt(c.end, lost, "sealed segment: it holds entries up to index %d, but the meta "+
				"database records entries up to %d", lost-1, si.MaxIndex)
		}
	} else if si.MinIndex > si.BaseIndex && lost <= si.MinIndex {
		off, held := c.end, "it holds no committed entry"
		if c.entries > 0 {
			held = fmt.Sprintf("its committed entries end at index %d", lost-1)
		}
		if c.why != "" {
			off, held = c.stopAt, held+": "+c.why
		}
		return corrupt(off, si.MinIndex, "the meta database says the log starts at index %d in this segment, "+
			"but %s", si.MinIndex, held)
	}

	stray := firstNonZero(buf, c.end)
	if stray < 0 {
		return res, nil
	}
	damage, damageAt := c.why, c.stopAt
	if damage == "" {
		damage, damageAt = fmt.Sprintf("unwritten space at offset %d is followed by data at offset %d", c.end, stray), c.end
	}
	b, gaveUp := findWALBatch(buf, max(c.end, walFileHeaderLen))
	switch {
	case b.end > 0:
		idx := ""
		if i, ok := walEntryIndex(buf, b.firstEntry); ok {
			idx = fmt.Sprintf(" from raft index %d", i)
		}
		if !tail {
			return corrupt(damageAt, 0, "%s; yet a complete, CRC-verified batch (entries: %d%s) follows at "+
				"offset %d, after the segment's seal, where it can have written none", damage, b.entries, idx, b.start)
		}
		return corrupt(damageAt, lost, "%s; yet a complete, CRC-verified batch (entries: %d%s) follows at offset %d, "+
			"so this is damage inside committed data, not a torn write (raft-wal would silently drop every "+
			"entry from index %d on)", damage, b.entries, idx, b.start, lost)
	case gaveUp:
		return corrupt(damageAt, lost, "%s; the search for committed batches after it gave up, so it cannot be "+
			"told from damage inside committed data", damage)
	}
	res.strayAt, res.strayDamage, res.strayWhy = int64(c.end), int64(damageAt), damage
	return res, nil
}

// walHeaderProblem says what is wrong with a segment file header, or "".
func walHeaderProblem(h []byte, si types.SegmentInfo) string {
	if binary.LittleEndian.Uint32(h[0:4]) != walMagic || h[4]|h[5]|h[6]|h[7] != 0 {
		return fmt.Sprintf("not a raft-wal segment header (% x)", h[:8])
	}
	base, id, codec := binary.LittleEndian.Uint64(h[8:16]), binary.LittleEndian.Uint64(h[16:24]), binary.LittleEndian.Uint64(h[24:32])
	if base != si.BaseIndex || id != si.ID || codec != si.Codec {
		return fmt.Sprintf("the segment header (base index %d, ID %d, codec %d) does not match the meta "+
			"database (base index %d, ID %d, codec %d)", base, id, codec, si.BaseIndex, si.ID, si.Codec)
	}
	return ""
}

// walFrame is one decoded frame header.
type walFrame struct {
	typ  byte
	val  uint32 // payload length, or a commit frame's CRC
	size int    // header, payload and padding
}

// walFrameAt decodes the frame header at off. zero reports eight zero bytes (unwritten
// space); why says what is wrong with a header raft-wal does not write.
func walFrameAt(buf []byte, off int) (f walFrame, zero bool, why string) {
	if off+walFrameHeaderLen > len(buf) {
		return f, false, fmt.Sprintf("the file ends %d bytes into a frame header", len(buf)-off)
	}
	h := buf[off : off+walFrameHeaderLen]
	if binary.LittleEndian.Uint64(h) == 0 {
		return f, true, ""
	}
	f.typ, f.val = h[0], binary.LittleEndian.Uint32(h[4:8])
	if h[1]|h[2]|h[3] != 0 || f.typ < walFrameEntry || f.typ > walFrameCommit {
		return f, false, fmt.Sprintf("invalid frame header % x", h)
	}
	if f.typ == walFrameCommit {
		f.size = walFrameHeaderLen
		return f, false, ""
	}
	switch {
	case f.val == 0:
		return f, false, "empty frame"
	case f.typ == walFrameIndex && f.val%4 != 0:
		return f, false, fmt.Sprintf("index frame of %d bytes, not a whole number of offsets", f.val)
	case f.val > walMaxEntrySize:
		return f, false, fmt.Sprintf("frame of %d bytes, over raft-wal's %d-byte limit", f.val, walMaxEntrySize)
	}
	f.size = walFrameHeaderLen + (int(f.val)+walFrameHeaderLen-1)&^(walFrameHeaderLen-1)
	if off+f.size > len(buf) {
		return f, false, fmt.Sprintf("frame of %d bytes runs past the end of the file", f.val)
	}
	return f, false, ""
}

// walChain is the run of CRC-verified batches at the start of a segment file.
type walChain struct {
	end        int  // offset just past the last verified commit frame; 0 when none verified
	entries    int  // entry frames in verified batches
	indexAt    int  // header offset of the last verified index frame; -1 when none
	indexLen   int  // entries that index frame lists
	sealedLast bool // the last verified batch holds that index frame
	// stopAt and why say where the run ends and what is there; why is "" when the run
	// ends at unwritten space or the end of the file.
	stopAt int
	why    string
}

func walkWALChain(buf []byte) walChain {
	c := walChain{indexAt: -1}
	start, off := 0, walFileHeaderLen // start: where the current batch's CRC begins
	n, indexAt, indexLen := 0, -1, 0
	for {
		first := max(start, walFileHeaderLen)
		if off == len(buf) {
			if off > first {
				c.stopAt, c.why = start, fmt.Sprintf("the batch at offset %d has no commit frame before the end of the file", start)
			}
			return c
		}
		f, zero, why := walFrameAt(buf, off)
		if zero {
			if off > first {
				c.stopAt, c.why = start, fmt.Sprintf("the batch at offset %d has no commit frame (unwritten space at offset %d)", start, off)
			}
			return c
		}
		if why != "" {
			c.stopAt, c.why = off, why
			return c
		}
		switch f.typ {
		case walFrameEntry:
			n++
		case walFrameIndex:
			indexAt, indexLen = off, int(f.val/4)
		case walFrameCommit:
			if got := crc32.Checksum(buf[start:off], walCRCTable); got != f.val {
				c.stopAt, c.why = start, fmt.Sprintf("the batch at offsets %d-%d fails its CRC-32C "+
					"(its commit frame says %08x, its bytes give %08x)", start, off+walFrameHeaderLen, f.val, got)
				return c
			}
			c.end, c.entries = off+walFrameHeaderLen, c.entries+n
			c.sealedLast = indexAt >= 0
			if indexAt >= 0 {
				c.indexAt, c.indexLen = indexAt, indexLen
			}
			start, n, indexAt = c.end, 0, -1
		}
		off += f.size
	}
}

// walBatch is a CRC-verified batch found by findWALBatch.
type walBatch struct {
	start, end int // end is 0 when none was found
	entries    int
	firstEntry int // header offset of its first entry frame
}

// walBatchAt returns the CRC-verified batch of at least one entry that starts at off,
// if there is one; work is the bytes it checksummed.
func walBatchAt(buf []byte, off int) (b walBatch, work int) {
	b = walBatch{start: off, firstEntry: -1}
	for p := off; ; {
		f, zero, why := walFrameAt(buf, p)
		if zero || why != "" {
			return walBatch{}, 0
		}
		switch f.typ {
		case walFrameEntry:
			if b.firstEntry < 0 {
				b.firstEntry = p
			}
			b.entries++
		case walFrameCommit:
			if b.entries == 0 || crc32.Checksum(buf[off:p], walCRCTable) != f.val {
				return walBatch{}, p - off
			}
			b.end = p + walFrameHeaderLen
			return b, p - off
		}
		p += f.size
	}
}

// findWALBatch looks for a CRC-verified batch starting at any frame boundary at or
// after from. It gives up (gaveUp) after checksumming about 32 times the file (plus
// 1 GiB): a bound only crafted data reaches.
func findWALBatch(buf []byte, from int) (b walBatch, gaveUp bool) {
	budget := 1<<30 + 32*len(buf)
	for o := from; o+walFrameHeaderLen <= len(buf); o += walFrameHeaderLen {
		nz := firstNonZero(buf, o)
		if nz < 0 {
			break
		}
		o = nz &^ (walFrameHeaderLen - 1)
		if t := buf[o]; t < walFrameEntry || t > walFrameCommit {
			continue
		}
		b, work := walBatchAt(buf, o)
		if b.end > 0 {
			return b, false
		}
		if budget -= work; budget < 0 {
			return walBatch{}, true
		}
	}
	return walBatch{}, false
}

// walEntryIndex decodes the Raft index at the start of the entry frame at off
// (raft-wal's binary codec begins with it as a uvarint).
func walEntryIndex(buf []byte, off int) (uint64, bool) {
	if off < 0 {
		return 0, false
	}
	n := int(binary.LittleEndian.Uint32(buf[off+4 : off+8]))
	i, k := binary.Uvarint(buf[off+walFrameHeaderLen : off+walFrameHeaderLen+n])
	return i, k > 0
}

var zeroPage [4096]byte

// firstNonZero returns the offset of the first non-zero byte of buf at or after from,
// or -1.
func firstNonZero(buf []byte, from int) int {
	for i := from; i < len(buf); i += len(zeroPage) {
		chunk := buf[i:min(i+len(zeroPage), len(buf))]
		if bytes.Equal(chunk, zeroPage[:len(chunk)]) {
			continue
		}
		for j, c := range chunk {
			if c != 0 {
				return i + j
			}
		}
	}
	return -1
}

// readFileInto reads the file at path into buf's storage, growing it when needed.
func readFileInto(buf []byte, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return buf, err
	}
	if int64(cap(buf)) < fi.Size() {
		buf = make([]byte, fi.Size())
	}
	buf = buf[:fi.Size()]
	if _, err := io.ReadFull(f, buf); err != nil {
		return buf, fmt.Errorf("read %s: %w", path, err)
	}
	return buf, nil
}

// checkBoltFile runs bbolt's consistency check (Tx.Check) on the database at path
// before a store opens it; a missing file is a new store. It first reads every key and
// value itself, with faults turned into panics it recovers, because bbolt follows page
// pointers unchecked and Check runs in a goroutine of its own, where a bad pointer
// would crash the process instead of failing the check.
func checkBoltFile(dataDir, path string) (err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("server: check %s: %w", path, err)
	}
	corrupt := func(problem string, cause error) error {
		return &logCorruptError{dataDir: dataDir, file: path, offset: -1, problem: problem, cause: cause}
	}
	if fi.Size() == 0 {
		return corrupt("the bolt database is empty (0 bytes)", nil)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corrupt(fmt.Sprintf("reading the bolt database failed: %v", r), nil)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	switch {
	case errors.Is(err, bbolt.ErrTimeout):
		return fmt.Errorf("server: open %s: %w (is another coordinator using data dir %s?)", path, err, dataDir)
	case errors.Is(err, bbolt.ErrInvalid), errors.Is(err, bbolt.ErrChecksum), errors.Is(err, bbolt.ErrVersionMismatch):
		return corrupt("the bolt database does not open", err)
	case err != nil:
		return fmt.Errorf("server: open %s: %w", path, err)
	}
	defer db.Close()
	var problems []string
	err = db.View(func(tx *bbolt.Tx) error {
		var sum byte
		_ = tx.ForEach(func(_ []byte, b *bbolt.Bucket) error {
			sum ^= walkBoltBucket(b)
			return nil
		})
		runtime.KeepAlive(sum)
		for e := range tx.Check() {
			problems = append(problems, e.Error())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("server: check %s: %w", path, err)
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return corrupt("bbolt's consistency check failed: "+strings.Join(problems, "; "), nil)
	}
	return nil
}

// walkBoltBucket reads the first and last byte of every key and value under b and
// returns their XOR (so that the reads happen).
func walkBoltBucket(b *bbolt.Bucket) byte {
	var sum byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		sum ^= k[0] ^ k[len(k)-1]
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				sum ^= walkBoltBucket(nb)
			}
			continue
		}
		if len(v) > 0 {
			sum ^= v[0] ^ v[len(v)-1]
		}
	}
	return sum
}
