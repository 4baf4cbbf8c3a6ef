package server

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// The coordinator's log store decision (issue #3): raft-boltdb/v2 against raft-wal on
// the same disk, for the two shapes raft writes. Raft's leader hands the store one
// StoreLogs call per dispatch, holding every apply that queued up meanwhile (BatchApplyCh),
// so "batch 1" is an idle cluster and "batch 64" a loaded one. Each call is durable
// (fsync) in both stores. BENCHMARKS.md records the figures and the choice.

type benchLogStore interface {
	raft.LogStore
	Close() error
}

func openBenchStore(tb testing.TB, kind string) benchLogStore {
	s, _, err := openRaftStore(tb.TempDir(), kind, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkLogStoreAppend measures durable appends of 512-byte entries (a typical
// submit command) in batches of 1 and 64. Reported: entries/s.
func BenchmarkLogStoreAppend(b *testing.B) {
	payload := make([]byte, 512)
	for i := range payload {
		payload[i] = byte(i)
	}
	for _, name := range []string{LogStoreBoltDB, LogStoreWAL} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/batch=%d", name, batch), func(b *testing.B) {
				store := openBenchStore(b, name)
				defer store.Close()
				logs := make([]*raft.Log, batch)
				for i := range logs {
					logs[i] = &raft.Log{Type: raft.LogCommand, Term: 1, Data: payload}
				}
				next := uint64(1)
				b.SetBytes(int64(batch * len(payload)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for _, l := range logs {
						l.Index = next
						next++
					}
					if err := store.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}

// BenchmarkLogStoreRead measures GetLog of recent entries, what a follower catching up
// and the leader's replication do.
func BenchmarkLogStoreRead(b *testing.B) {
	payload := make([]byte, 512)
	const n = 4096
	for _, name := range []string{LogStoreBoltDB, LogStoreWAL} {
		b.Run(name, func(b *testing.B) {
			store := openBenchStore(b, name)
			defer store.Close()
			logs := make([]*raft.Log, 0, 256)
			for i := 1; i <= n; i++ {
				logs = append(logs, &raft.Log{Index: uint64(i), Type: raft.LogCommand, Term: 1, Data: payload})
				if len(logs) == cap(logs) {
					if err := store.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
					logs = logs[:0]
				}
			}
			var out raft.Log
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := store.GetLog(uint64(i%n)+1, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLogStoresAgree is the correctness half of the comparison: both stores return
// exactly what was written, across a batch boundary and after a head truncation
// (what a snapshot compaction does). Entries below FirstIndex are not checked: raft
// never reads them, and raft-wal keeps serving them until it drops the whole segment.
func TestLogStoresAgree(t *testing.T) {
	for _, name := range []string{LogStoreBoltDB, LogStoreWAL} {
		t.Run(name, func(t *testing.T) {
			s := openBenchStore(t, name)
			defer s.Close()
			var logs []*raft.Log
			for i := 1; i <= 100; i++ {
				logs = append(logs, &raft.Log{Index: uint64(i), Term: 1, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("cmd-%d", i))})
			}
			if err := s.StoreLogs(logs[:37]); err != nil {
				t.Fatal(err)
			}
			if err := s.StoreLogs(logs[37:]); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteRange(1, 20); err != nil {
				t.Fatal(err)
			}
			first, _ := s.FirstIndex()
			last, _ := s.LastIndex()
			if first != 21 || last != 100 {
				t.Fatalf("first, last = %d, %d; want 21, 100", first, last)
			}
			var got raft.Log
			for i := uint64(21); i <= 100; i++ {
				if err := s.GetLog(i, &got); err != nil {
					t.Fatalf("GetLog(%d): %v", i, err)
				}
				if want := fmt.Sprintf("cmd-%d", i); string(got.Data) != want {
					t.Fatalf("GetLog(%d) = %q, want %q", i, got.Data, want)
				}
			}
		})
	}
}
