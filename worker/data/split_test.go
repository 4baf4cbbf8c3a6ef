package data

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkPartition fails unless a and b are sorted and together hold 0..n-1 once each.
func checkPartition(t *testing.T, n int, parts ...[]int) {
	t.Helper()
	seen := make([]bool, n)
	for _, p := range parts {
		if !slices.IsSorted(p) {
			t.Fatalf("part %v is not sorted", p)
		}
		for _, i := range p {
			if i < 0 || i >= n || seen[i] {
				t.Fatalf("index %d out of range or repeated", i)
			}
			seen[i] = true
		}
	}
	if slices.Contains(seen, false) {
		t.Fatalf("parts do not cover 0..%d", n-1)
	}
}

func labelsOf(counts map[string]int, seed uint64) []string {
	var l []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range counts {
			if !yield(k) {
				return
			}
		}
	}) {
		for range counts[k] {
			l = append(l, k)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	rng.Shuffle(len(l), func(i, j int) { l[i], l[j] = l[j], l[i] })
	return l
}

func TestSplitIndices(t *testing.T) {
	tests := []struct {
		name     string
		counts   map[string]int
		fraction float64
		stratify bool
		wantVal  map[string]int // per label, when stratified
		wantN    int            // total validation rows
	}{
		{"plain 20%", map[string]int{"No": 80, "Yes": 20}, 0.2, false, nil, 20},
		{"stratified 20%", map[string]int{"No": 83, "Yes": 17}, 0.2, true, map[string]int{"No": 17, "Yes": 3}, 20},
		{"stratified rare class gets one", map[string]int{"a": 50, "b": 2, "c": 1}, 0.1, true, map[string]int{"a": 5, "b": 1, "c": 0}, 6},
		{"stratified keeps one training row", map[string]int{"a": 3, "b": 2}, 0.9, true, map[string]int{"a": 2, "b": 1}, 3},
		{"fraction 0", map[string]int{"a": 5, "b": 5}, 0, true, map[string]int{"a": 0, "b": 0}, 0},
		{"fraction NaN", map[string]int{"a": 5}, math.NaN(), false, nil, 0},
		{"fraction 1 plain", map[string]int{"a": 5}, 1, false, nil, 5},
		{"empty", map[string]int{}, 0.2, true, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := labelsOf(tt.counts, 3)
			s := SplitIndices(labels, tt.fraction, 42, tt.stratify)
			checkPartition(t, len(labels), s.Train, s.Validation)
			if len(s.Validation) != tt.wantN {
				t.Errorf("%d validation rows, want %d", len(s.Validation), tt.wantN)
			}
			if tt.wantVal != nil {
				got := map[string]int{}
				for _, i := range s.Validation {
					got[labels[i]]++
				}
				for k, want := range tt.wantVal {
					if got[k] != want {
						t.Errorf("label %q: %d validation rows, want %d", k, got[k], want)
					}
				}
			}
			again := SplitIndices(labels, tt.fraction, 42, tt.stratify)
			if !slices.Equal(s.Train, again.Train) || !slices.Equal(s.Validation, again.Validation) {
				t.Error("same seed, different split")
			}
		})
	}
	t.Run("seed changes the split", func(t *testing.T) {
		labels := labelsOf(map[string]int{"a": 50, "b": 50}, 1)
		for _, strat := range []bool{false, true} {
			a, b := SplitIndices(labels, 0.3, 1, strat), SplitIndices(labels, 0.3, 2, strat)
			if slices.Equal(a.Validation, b.Validation) {
				t.Errorf("stratify=%v: seeds 1 and 2 give the same split", strat)
			}
		}
	})
}

func TestShardIndices(t *testing.T) {
	for _, tc := range []struct{ n, world int }{{0, 1}, {1, 3}, {10, 1}, {10, 3}, {100, 7}, {5, 8}} {
		t.Run(fmt.Sprintf("n=%d,world=%d", tc.n, tc.world), func(t *testing.T) {
			var parts [][]int
			minLen, maxLen := math.MaxInt, 0
			for rank := range tc.world {
				p := ShardIndices(tc.n, rank, tc.world, 3, 42)
				if !slices.Equal(p, ShardIndices(tc.n, rank, tc.world, 3, 42)) {
					t.Fatal("not deterministic")
				}
				minLen, maxLen = min(minLen, len(p)), max(maxLen, len(p))
				parts = append(parts, slices.Sorted(slices.Values(p)))
			}
			if maxLen-minLen > 1 {
				t.Fatalf("part sizes range from %d to %d", minLen, maxLen)
			}
			checkPartition(t, tc.n, parts...)
		})
	}
	t.Run("epoch and seed reshuffle", func(t *testing.T) {
		a := ShardIndices(100, 0, 2, 0, 42)
		if slices.Equal(a, ShardIndices(100, 0, 2, 1, 42)) || slices.Equal(a, ShardIndices(100, 0, 2, 0, 43)) {
			t.Fatal("epoch or seed does not change the shard")
		}
		if slices.IsSorted(a) {
			t.Fatal("shard is not shuffled")
		}
	})
	t.Run("invalid", func(t *testing.T) {
		for _, c := range [][3]int{{-1, 0, 1}, {10, 1, 1}, {10, -1, 2}, {10, 0, 0}} {
			if got := ShardIndices(c[0], c[1], c[2], 0, 1); got != nil {
				t.Errorf("ShardIndices(n=%d, rank=%d, world=%d) = %v, want nil", c[0], c[1], c[2], got)
			}
		}
	})
}
