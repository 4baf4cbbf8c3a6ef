package data

import (
	"math"
	"math/rand/v2"
	"slices"
)

// PCG stream constants, so that splits and shards draw independent sequences from
// the same seed.
const (
	splitStream = 0x73706c6974 // "split"
	shardStream = 0x7368617264 // "shard"
)

// Split holds row indices of the training and validation parts, each sorted.
type Split struct {
	// Train holds the training rows' indices, ascending.
	Train []int
	// Validation holds the validation rows' indices, ascending.
	Validation []int
}

// SplitIndices splits rows 0..len(labels)-1 into training and validation rows,
// deterministically for a seed. About fraction of the rows go to validation (none when
// fraction <= 0 or NaN). With stratify, every label value keeps its ratio: a value with
// c rows gives round(fraction·c) of them to validation, at least one when c >= 2 and at
// most c-1; a value with a single row stays in training unless fraction >= 0.5.
func SplitIndices(labels []string, fraction float64, seed int64, stratify bool) Split {
	n := len(labels)
	s := Split{Train: []int{}, Validation: []int{}}
	if !(fraction > 0) {
		s.Train = make([]int, n)
		for i := range s.Train {
			s.Train[i] = i
		}
		return s
	}
	fraction = math.Min(fraction, 1)
	rng := rand.New(rand.NewPCG(uint64(seed), splitStream))
	if !stratify {
		perm := rng.Perm(n)
		k := int(math.Round(fraction * float64(n)))
		s.Validation = append(s.Validation, perm[:k]...)
		s.Train = append(s.Train, perm[k:]...)
	} else {
		groups := map[string][]int{}
		for i, l := range labels {
			groups[l] = append(groups[l], i)
		}
		keys := make([]string, 0, len(groups))
		for k := range groups {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, key := range keys {
			rows := groups[key]
			c := len(rows)
			k := int(math.Round(fraction * float64(c)))
			if c >= 2 {
				k = min(max(k, 1), c-1)
			}
			rng.Shuffle(c, func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
			s.Validation = append(s.Validation, rows[:k]...)
			s.Train = append(s.Train, rows[k:]...)
		}
	}
	slices.Sort(s.Train)
	slices.Sort(s.Validation)
	return s
}

// ShardIndices returns the rows that worker rank of world reads in an epoch: a
// permutation of 0..n-1 shuffled by PCG(seed, epoch), cut into world contiguous parts
// whose sizes differ by at most one; part rank is returned. Over all ranks the parts
// partition 0..n-1 exactly. Invalid arguments (n < 0, world < 1, rank outside
// [0, world)) give nil.
func ShardIndices(n, rank, world int, epoch int, seed int64) []int {
	if n < 0 || world < 1 || rank < 0 || rank >= world {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(epoch)^shardStream))
	perm := rng.Perm(n)
	lo := int(int64(rank) * int64(n) / int64(world))
	hi := int(int64(rank+1) * int64(n) / int64(world))
	return perm[lo:hi:hi]
}
