package audit

import (
	"cmp"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
)

// rng is the package's deterministic random source: PCG (whose output is specified)
// with Lemire's bounded integers, so that a seed gives the same resamples and shuffles
// on every platform and Go release.
type rng struct{ src *rand.PCG }

// newRNG returns the source of one seed and stream.
func newRNG(seed int64, stream uint64) *rng {
	return &rng{rand.NewPCG(uint64(seed), stream^0x9e3779b97f4a7c15)}
}

// intn returns a uniform integer in [0, n); n > 0.
func (r *rng) intn(n int) int {
	un := uint64(n)
	hi, lo := bits.Mul64(r.src.Uint64(), un)
	if lo < un {
		thresh := -un % un
		for lo < thresh {
			hi, lo = bits.Mul64(r.src.Uint64(), un)
		}
	}
	return int(hi)
}

// shuffle fills perm with a uniform permutation of 0..len(perm)-1 (Fisher–Yates).
func (r *rng) shuffle(perm []int) {
	for i := range perm {
		perm[i] = i
	}
	for i := len(perm) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		perm[i], perm[j] = perm[j], perm[i]
	}
}

// rowStat computes one metric of the rows weighted by w (w[i] copies of row i; nil: one
// of each). It reports false where the metric is undefined for those weights.
type rowStat func(w []int32) (float64, bool)

// interval is the bootstrap result of one rowStat.
type interval struct {
	ci        [2]float64
	undefined int // resamples where the stat was undefined, left out of ci
}

// bootstrapCI resamples n rows with replacement resamples times (each resample calls the
// stats in order, with the same weights) and returns the 95%
// percentile interval of each stat (linear interpolation between order statistics, as
// numpy's default percentile), over the resamples where the stat is defined. point is
// each stat's value on all rows; it is the interval's both ends when no resample is
// defined (or resamples is 0).
func bootstrapCI(n, resamples int, seed int64, point []float64, stats []rowStat) []interval {
	out := make([]interval, len(stats))
	vals := make([][]float64, len(stats))
	for i := range vals {
		vals[i] = make([]float64, 0, resamples)
	}
	w := make([]int32, n)
	r := newRNG(seed, 0)
	for range resamples {
		clear(w)
		for range n {
			w[r.intn(n)]++
		}
		for i, s := range stats {
			if v, ok := s(w); ok {
				vals[i] = append(vals[i], v)
			} else {
				out[i].undefined++
			}
		}
	}
	for i, v := range vals {
		if len(v) == 0 {
			out[i].ci = [2]float64{point[i], point[i]}
			continue
		}
		slices.Sort(v)
		out[i].ci = [2]float64{percentile(v, 0.025), percentile(v, 0.975)}
	}
	return out
}

// percentile returns the q-quantile of sorted values, interpolating linearly between
// the order statistics at q*(len-1).
func percentile(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	i := int(pos)
	if i >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	frac := pos - float64(i)
	return sorted[i] + frac*(sorted[i+1]-sorted[i])
}

// weightedMean returns the weighted mean of x over n rows (the weights of a resample
// sum to n).
func weightedMean(x []float64, w []int32) float64 {
	var s float64
	if w == nil {
		for _, v := range x {
			s += v
		}
	} else {
		for i, v := range x {
			if w[i] != 0 {
				s += float64(w[i]) * v
			}
		}
	}
	return s / float64(len(x))
}

// rankedBinary holds binary scores sorted ascending with their labels and tie blocks,
// so that the AUC of any weighting of the rows takes one pass without sorting again.
type rankedBinary struct {
	order  []int     // order[j]: the row at sorted position j
	score  []float64 // score[j] = scores[order[j]], ascending
	pos    []bool    // pos[j]: the row at position j is positive
	blocks []int     // starts of the runs of equal scores, then len(score)
}

// rank fills r from scores and labels (true = positive), reusing r's buffers. Equal
// scores keep row order.
func (r *rankedBinary) rank(scores []float64, positive func(i int) bool) {
	n := len(scores)
	r.order = slices.Grow(r.order[:0], n)[:n]
	for i := range r.order {
		r.order[i] = i
	}
	slices.SortFunc(r.order, func(a, b int) int {
		if c := cmp.Compare(scores[a], scores[b]); c != 0 {
			return c
		}
		return a - b
	})
	r.score = slices.Grow(r.score[:0], n)[:n]
	r.pos = slices.Grow(r.pos[:0], n)[:n]
	r.blocks = r.blocks[:0]
	for j, i := range r.order {
		r.score[j] = scores[i]
		r.pos[j] = positive(i)
		if j == 0 || r.score[j] != r.score[j-1] {
			r.blocks = append(r.blocks, j)
		}
	}
	r.blocks = append(r.blocks, n)
}

// auc returns the area under the ROC curve of the positions weighted by w (nil: one
// each): the Mann–Whitney statistic with ties counted one half, which is the trapezoid
// area of sklearn's roc_auc_score. It is computed in exact integer arithmetic and one
// division. It reports false when one class has no weight.
func (r *rankedBinary) auc(w []int32) (float64, bool) {
	var negBelow, twiceNum, p, q int64 // q: negatives
	for b := 0; b+1 < len(r.blocks); b++ {
		var bp, bn int64
		for j := r.blocks[b]; j < r.blocks[b+1]; j++ {
			c := int64(1)
			if w != nil {
				c = int64(w[j])
			}
			if r.pos[j] {
				bp += c
			} else {
				bn += c
			}
		}
		twiceNum += bp * (2*negBelow + bn)
		negBelow += bn
		p += bp
		q += bn
	}
	if p == 0 || q == 0 {
		return 0, false
	}
	return float64(twiceNum) / (2 * float64(p) * float64(q)), true
}

// finite reports whether v is neither NaN nor infinite.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
