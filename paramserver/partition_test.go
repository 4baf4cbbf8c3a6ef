package paramserver

import (
	"math/rand/v2"
	"testing"
)

func checkPartition(t *testing.T, total uint64, shards int) {
	t.Helper()
	rs := Partition(total, shards)
	if len(rs) != shards {
		t.Fatalf("Partition(%d,%d): %d ranges", total, shards, len(rs))
	}
	var next, lo, hi uint64 = 0, ^uint64(0), 0
	for i, r := range rs {
		if r.Offset != next {
			t.Fatalf("Partition(%d,%d)[%d] starts at %d, want %d (contiguous)", total, shards, i, r.Offset, next)
		}
		next = r.End()
		lo, hi = min(lo, r.Length), max(hi, r.Length)
	}
	if next != total {
		t.Fatalf("Partition(%d,%d) covers [0,%d), want [0,%d)", total, shards, next, total)
	}
	if hi-lo > 1 {
		t.Fatalf("Partition(%d,%d) lengths differ by %d", total, shards, hi-lo)
	}
	if again := Partition(total, shards); len(again) != len(rs) || again[0] != rs[0] || again[len(rs)-1] != rs[len(rs)-1] {
		t.Fatalf("Partition(%d,%d) is not stable", total, shards)
	}
}

func TestPartition(t *testing.T) {
	tests := []struct {
		total  uint64
		shards int
	}{
		{0, 1}, {0, 3}, {1, 1}, {1, 4}, {2, 3}, {10, 3}, {10, 10}, {11, 2},
		{1 << 20, 7}, {^uint64(0), 3}, {1<<40 + 5, 64},
	}
	for _, tc := range tests {
		checkPartition(t, tc.total, tc.shards)
	}
	if got := Partition(10, 3); got[0] != (Range{0, 4}) || got[1] != (Range{4, 3}) || got[2] != (Range{7, 3}) {
		t.Errorf("Partition(10,3) = %v, want longer ranges first", got)
	}
	for _, shards := range []int{0, -1} {
		if got := Partition(5, shards); got != nil {
			t.Errorf("Partition(5,%d) = %v, want nil", shards, got)
		}
	}
}

func TestPartitionRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		checkPartition(t, rng.Uint64N(1<<32), 1+rng.IntN(100))
	}
}
