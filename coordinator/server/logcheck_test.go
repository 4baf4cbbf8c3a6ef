package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	"go.etcd.io/bbolt"
)

// The integrity check of the Raft log store (logcheck.go), on real raft-wal and
// raft-boltdb files: written through the stores' APIs, then damaged on disk.

// logEntryData is the payload of the test entry at index i.
func logEntryData(i uint64) []byte {
	return []byte(fmt.Sprintf("entry-%d-%s", i, strings.Repeat("x", 200)))
}

// writeWAL writes entries 1..n through raft-wal under dataDir/raft-wal, batch entries
// per append, in segments of segSize bytes, at raft term 1.
func writeWAL(t *testing.T, dataDir string, segSize, n, batch int) {
	t.Helper()
	walDir := filepath.Join(dataDir, "raft-wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		t.Fatal(err)
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithMetaStore(meta), wal.WithSegmentSize(segSize))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetUint64(keyCurrentTerm, 1); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i += batch {
		var logs []*raft.Log
		for j := i; j < i+batch && j <= n; j++ {
			logs = append(logs, &raft.Log{Index: uint64(j), Term: 1, Type: raft.LogCommand, Data: logEntryData(uint64(j))})
		}
		if err := w.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(w.Close(), meta.Close()); err != nil {
		t.Fatal(err)
	}
}

// walSegments returns the meta database's segment list and each segment's path.
func walSegments(t *testing.T, dataDir string) ([]types.SegmentInfo, []string) {
	t.Helper()
	walDir := filepath.Join(dataDir, "raft-wal")
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	st, err := meta.Load(walDir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, si := range st.Segments {
		paths = append(paths, filepath.Join(walDir, segment.FileName(si)))
	}
	return st.Segments, paths
}

// walBatches returns the [start, end) offsets of the committed batches of the segment
// at path (the first starts at 0: its CRC covers the file header).
func walBatches(t *testing.T, path string) [][2]int {
	t.Helper()
	buf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]int
	start := 0
	for off := walFileHeaderLen; ; {
		f, zero, why := walFrameAt(buf, off)
		if zero || why != "" {
			return out
		}
		if f.typ == walFrameCommit {
			out = append(out, [2]int{start, off + walFrameHeaderLen})
			start = off + walFrameHeaderLen
		}
		off += f.size
	}
}

// walEntryFrames returns the header offsets of the entry frames in buf[from:to].
func walEntryFrames(t *testing.T, path string, from, to int) []int {
	t.Helper()
	buf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for off := max(from, walFileHeaderLen); off < to; {
		f, zero, why := walFrameAt(buf, off)
		if zero || why != "" {
			t.Fatalf("%s: no frame at offset %d: %s", path, off, why)
		}
		if f.typ == walFrameEntry {
			out = append(out, off)
		}
		off += f.size
	}
	return out
}

// overwrite writes b at off in the file at path.
func overwrite(t *testing.T, path string, off int, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// garbage is 64 bytes no raft-wal frame starts with.
var garbage = bytes.Repeat([]byte{0xa5, 0x5a, 0xc3, 0x3c}, 16)

// logBuffer returns a logger that records WARN and above into the returned buffer.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelWarn})), &b
}

// openChecked opens dataDir's store through openRaftStore; a nil logger discards.
func openChecked(t *testing.T, dataDir string, logger *slog.Logger) (raftStore, error) {
	t.Helper()
	if logger == nil {
		logger = discard()
	}
	s, _, err := openRaftStore(dataDir, "", logger)
	if err == nil {
		t.Cleanup(func() { _ = s.Close() })
	}
	return s, err
}

// wantEntries checks that s holds exactly entries 1..last, each as written.
func wantEntries(t *testing.T, s raftStore, last uint64) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first != 1 || got != last {
		t.Fatalf("log holds %d..%d, want 1..%d", first, got, last)
	}
	var l raft.Log
	for i := uint64(1); i <= last; i++ {
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if !bytes.Equal(l.Data, logEntryData(i)) {
			t.Fatalf("GetLog(%d) = %q, want %q", i, l.Data, logEntryData(i))
		}
	}
}

// wantCorrupt checks that err is a refusal naming file (and offset, when >= 0).
func wantCorrupt(t *testing.T, err error, file string, offset int64) *logCorruptError {
	t.Helper()
	if !errors.Is(err, ErrRaftLogCorrupt) {
		t.Fatalf("got %v, want an error wrapping ErrRaftLogCorrupt", err)
	}
	var ce *logCorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("%v is not a *logCorruptError", err)
	}
	msg := err.Error()
	t.Logf("refused: %s", msg)
	for _, want := range []string{file, "cohort operator snapshot restore", "add-voter"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not name %q: %s", want, msg)
		}
	}
	if ce.file != file {
		t.Errorf("error names file %s, want %s", ce.file, file)
	}
	if offset >= 0 {
		if ce.offset != offset || !strings.Contains(msg, fmt.Sprintf("at offset %d", offset)) {
			t.Errorf("error names offset %d, want %d: %s", ce.offset, offset, msg)
		}
	}
	return ce
}

// TestWALCheckCleanSegmentsOpen: a clean log across many segments passes the check
// without a warning, and every entry reads back.
func TestWALCheckCleanSegmentsOpen(t *testing.T) {
	dir := t.TempDir()
	writeWAL(t, dir, 8<<10, 500, 7)
	segs, _ := walSegments(t, dir)
	if len(segs) < 5 {
		t.Fatalf("%d segments, want several (segment size too large for the test?)", len(segs))
	}
	logger, logs := logBuffer()
	s, err := openChecked(t, dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	wantEntries(t, s, 500)
	if logs.Len() > 0 {
		t.Fatalf("clean log logged warnings:\n%s", logs)
	}
}

// TestWALCheckRefusesDamageInsideCommittedData: garbage in the middle of a segment
// (on a frame header, or inside an entry), with committed batches after it, is refused
// with the file and the offset, in the tail and in a sealed segment, where raft-wal
// alone would open the log and drop (or serve damaged) entries.
func TestWALCheckRefusesDamageInsideCommittedData(t *testing.T) {
	for _, seg := range []string{"tail", "sealed"} {
		for _, where := range []string{"frame header", "entry payload"} {
			t.Run(seg+"/"+where, func(t *testing.T) {
				dir := t.TempDir()
				if seg == "tail" {
					writeWAL(t, dir, 1<<20, 100, 5)
				} else {
					writeWAL(t, dir, 8<<10, 200, 5)
				}
				segs, paths := walSegments(t, dir)
				path := paths[len(paths)-1]
				if seg == "sealed" {
					if len(segs) < 3 || segs[0].SealTime.IsZero() {
						t.Fatalf("want a sealed first segment, got %+v", segs)
					}
					path = paths[0]
				}
				batches := walBatches(t, path)
				if len(batches) < 6 {
					t.Fatalf("%s holds %d batches, want more", path, len(batches))
				}
				mid := batches[len(batches)/2]
				frame := walEntryFrames(t, path, mid[0], mid[1])[1] // second entry of a middle batch
				off, wantOff := frame, int64(frame)
				if where == "entry payload" {
					off, wantOff = frame+walFrameHeaderLen+16, int64(mid[0]) // the batch fails its CRC
				}
				overwrite(t, path, off, garbage)

				if seg == "tail" && where == "frame header" {
					// The finding: raft-wal opens this log and silently drops the entries behind the damage.
					meta := &metadb.BoltMetaDB{}
					w, err := wal.Open(filepath.Dir(path), wal.WithMetaStore(meta))
					if err != nil {
						t.Fatalf("raft-wal alone: %v", err)
					}
					last, _ := w.LastIndex()
					_ = errors.Join(w.Close(), meta.Close())
					if last >= 100 {
						t.Fatalf("raft-wal alone kept all entries (%d); the damage missed", last)
					}
				}

				_, err := openChecked(t, dir, nil)
				ce := wantCorrupt(t, err, path, wantOff)
				if !strings.Contains(ce.problem, "CRC-verified batch") && seg == "tail" {
					t.Errorf("problem does not say a committed batch follows: %s", ce.problem)
				}
				if ce.index == 0 {
					t.Errorf("error names no raft index: %v", err)
				}
			})
		}
	}
}

// TestWALCheckAllowsTornTail: a final batch torn by a crash (no commit frame, a CRC
// that fails, or a file that ends inside it) opens with a warning naming its offset,
// and every earlier entry is there.
func TestWALCheckAllowsTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tear func(t *testing.T, path string, last [2]int)
	}{
		{"commit frame missing", func(t *testing.T, path string, last [2]int) {
			overwrite(t, path, last[1]-walFrameHeaderLen, make([]byte, walFrameHeaderLen))
		}},
		{"garbage in the last batch", func(t *testing.T, path string, last [2]int) {
			overwrite(t, path, last[0]+walFrameHeaderLen+8, garbage)
		}},
		{"last frame header garbled, zeros after it", func(t *testing.T, path string, last [2]int) {
			frames := walEntryFrames(t, path, last[0], last[1])
			f := frames[len(frames)-1]
			overwrite(t, path, f, make([]byte, last[1]-f))
			overwrite(t, path, f, garbage[:walFrameHeaderLen])
		}},
		{"file ends inside the batch", func(t *testing.T, path string, last [2]int) {
			if err := os.Truncate(path, int64(last[0]+walFrameHeaderLen+20)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeWAL(t, dir, 1<<20, 100, 5) // the last batch holds 96..100
			_, paths := walSegments(t, dir)
			path := paths[len(paths)-1]
			batches := walBatches(t, path)
			last := batches[len(batches)-1]
			tc.tear(t, path, last)

			logger, logs := logBuffer()
			s, err := openChecked(t, dir, logger)
			if err != nil {
				t.Fatal(err)
			}
			wantEntries(t, s, 95)
			t.Logf("logged: %s", logs)
			for _, want := range []string{"level=WARN", "torn write", path, fmt.Sprintf(" offset=%d", last[0])} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("warning does not name %q:\n%s", want, logs)
				}
			}
		})
	}
}

// TestWALCheckRefusesMissingData: segment files that are gone, emptied or cut inside
// their header, a lost meta database, and a tail emptied after a head truncation are
// refused; a new voter's missing tail is not.
func TestWALCheckRefusesMissingData(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string, paths []string) string // returns the file to name
	}{
		{"tail truncated to 0", func(t *testing.T, _ string, paths []string) string {
			p := paths[len(paths)-1]
			if err := os.Truncate(p, 0); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"sealed truncated to 0", func(t *testing.T, _ string, paths []string) string {
			if err := os.Truncate(paths[0], 0); err != nil {
				t.Fatal(err)
			}
			return paths[0]
		}},
		{"tail shorter than its header", func(t *testing.T, _ string, paths []string) string {
			p := paths[len(paths)-1]
			if err := os.Truncate(p, 10); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"sealed missing", func(t *testing.T, _ string, paths []string) string {
			if err := os.Remove(paths[1]); err != nil {
				t.Fatal(err)
			}
			return paths[1]
		}},
		{"meta database lost", func(t *testing.T, dir string, paths []string) string {
			if err := os.Remove(filepath.Join(dir, "raft-wal", metadb.FileName)); err != nil {
				t.Fatal(err)
			}
			return paths[0]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeWAL(t, dir, 8<<10, 200, 5)
			_, paths := walSegments(t, dir)
			if len(paths) < 3 {
				t.Fatalf("%d segments, want several", len(paths))
			}
			file := tc.damage(t, dir, paths)
			_, err := openChecked(t, dir, nil)
			wantCorrupt(t, err, file, -1)
		})
	}

	t.Run("tail zeroed after a head truncation", func(t *testing.T) {
		dir := t.TempDir()
		writeWAL(t, dir, 1<<20, 100, 5)
		s, err := openChecked(t, dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteRange(1, 50); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		_, paths := walSegments(t, dir)
		path := paths[len(paths)-1]
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		overwrite(t, path, 0, make([]byte, fi.Size()))
		_, err = openChecked(t, dir, nil)
		ce := wantCorrupt(t, err, path, -1)
		if !strings.Contains(ce.problem, "starts at index 51") {
			t.Errorf("problem does not name the first index: %s", ce.problem)
		}
	})

	t.Run("new voter's tail missing", func(t *testing.T) {
		dir := t.TempDir()
		s, err := openChecked(t, dir, nil) // a new voter: a tail segment, term 0
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		_, paths := walSegments(t, dir)
		if err := os.Remove(paths[0]); err != nil {
			t.Fatal(err)
		}
		s, err = openChecked(t, dir, nil)
		if err != nil {
			t.Fatalf("a voter at term 0 with no tail file was refused: %v", err)
		}
		if last, _ := s.LastIndex(); last != 0 {
			t.Fatalf("last index %d, want an empty log", last)
		}
	})
}

// TestCheckRefusesLostLog: a stable store at term > 0 with an empty log and no
// snapshot is refused on both stores; with a snapshot, or at term 0, it opens.
func TestCheckRefusesLostLog(t *testing.T) {
	for _, kind := range []string{LogStoreWAL, LogStoreBoltDB} {
		for _, tc := range []struct {
			name     string
			term     uint64
			snapshot bool
			refused  bool
		}{
			{"term 3, no snapshot", 3, false, true},
			{"term 3, snapshot", 3, true, false},
			{"term 0", 0, false, false},
		} {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				s, _, err := openRaftStore(dir, kind, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SetUint64(keyCurrentTerm, tc.term); err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if tc.snapshot {
					snaps, err := raft.NewFileSnapshotStore(dir, 1, io.Discard)
					if err != nil {
						t.Fatal(err)
					}
					sink, err := snaps.Create(1, 40, 3, raft.Configuration{}, 1, nil)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := sink.Write([]byte("state")); err != nil {
						t.Fatal(err)
					}
					if err := sink.Close(); err != nil {
						t.Fatal(err)
					}
				}
				s, _, err = openRaftStore(dir, kind, nil)
				if !tc.refused {
					if err != nil {
						t.Fatal(err)
					}
					_ = s.Close()
					return
				}
				file := filepath.Join(dir, "raft-wal")
				if kind == LogStoreBoltDB {
					file = filepath.Join(dir, "raft.db")
				}
				ce := wantCorrupt(t, err, file, -1)
				if !strings.Contains(ce.problem, "term 3") {
					t.Errorf("problem does not name the term: %s", ce.problem)
				}
			})
		}
	}
}

// TestBoltStoreCheckRefusesDamagedPage: a raft-boltdb store with a page overwritten fails
// bbolt's consistency check at open, with an error instead of a crash.
func TestBoltStoreCheckRefusesDamagedPage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "raft.db")
	b, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 300; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: logEntryData(i)})
	}
	if err := b.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := b.SetUint64(keyCurrentTerm, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean file passes.
	if err := checkBoltFile(dir, path); err != nil {
		t.Fatalf("clean bolt file: %v", err)
	}
	// Overwrite a leaf page that holds log entries (a free page holds nothing).
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var leaves []int
	err = db.View(func(tx *bbolt.Tx) error {
		for id := 2; ; id++ {
			p, err := tx.Page(id)
			if p == nil || err != nil {
				return err
			}
			if p.Type == "leaf" {
				leaves = append(leaves, id)
			}
		}
	})
	pageSize := db.Info().PageSize
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	if len(leaves) < 3 {
		t.Fatalf("%d leaf pages, want more", len(leaves))
	}
	overwrite(t, path, leaves[len(leaves)/2]*pageSize, bytes.Repeat(garbage, pageSize/len(garbage)))
	_, _, err = openRaftStore(dir, LogStoreBoltDB, nil)
	wantCorrupt(t, err, path, -1)
}

// TestWALCheckBytesAfterSeal: stray bytes after a sealed segment's seal (what a write
// torn across the seal point leaves) open with a warning, with every entry there; a
// complete committed batch there (a copy of the segment's first) is refused.
func TestWALCheckBytesAfterSeal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refused bool
	}{{"garbage", false}, {"a committed batch", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeWAL(t, dir, 8<<10, 200, 5)
			_, paths := walSegments(t, dir)
			path := paths[0]
			batches := walBatches(t, path)
			seal := batches[len(batches)-1][1]
			stray := garbage
			if tc.refused {
				buf, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				stray = buf[batches[1][0]:batches[1][1]] // its CRC covers only itself
			}
			overwrite(t, path, seal+walFrameHeaderLen, stray)

			logger, logs := logBuffer()
			s, err := openChecked(t, dir, logger)
			if tc.refused {
				wantCorrupt(t, err, path, int64(seal))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantEntries(t, s, 200)
			if want := fmt.Sprintf("damage_offset=%d", seal); !strings.Contains(logs.String(), want) {
				t.Errorf("warning does not name %q:\n%s", want, logs)
			}
		})
	}
}
