package audit

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Predictor runs the model on n rows of x (row-major, the model's input width per row)
// and writes its outputs, the same number per row, to out. It must not keep or modify
// x. Binary: 1 output, P(positive), or 2, P(class 0) and P(class 1). Multiclass: one
// probability (or score) per class. Regression: 1 output, the prediction.
type Predictor func(x []float32, n int, out []float32) error

// FeatureGroup is the block of model input columns that one raw input column owns (a
// numeric column: one index; a one-hot categorical: all its indicator columns).
type FeatureGroup struct {
	// Name is the raw column's name, reported as Importance.Feature.
	Name string
	// Index lists the group's columns of x.
	Index []int
}

// PermutationImportance measures how much the model's score worsens when one raw input
// column is shuffled across rows, breaking its link with the label (Breiman 2001;
// sklearn.inspection.permutation_importance). For each group and repeat, one
// permutation of the row indices is applied jointly to all of the group's columns, the
// model predicts again and the change of the score against the unshuffled baseline is
// recorded: the drop of AUC (binary), the drop of accuracy (multiclass) or the rise of
// RMSE (regression). The labels must be in the units of the predictor's outputs: 0/1
// (binary), class indices (multiclass), or for regression the same units as the
// prediction (a caller whose model predicts standardized targets passes standardized
// labels, or un-standardizes both), so that the RMSE compares like with like.
//
// It returns the metric's name ("auc", "accuracy" or "rmse") and one Importance per
// group: the mean and the population standard deviation (divisor repeats, as sklearn)
// of the change over the repeats, sorted by mean descending, then by name. The result
// is deterministic for a seed: group i is shuffled by its own stream of the seed, so
// it does not depend on the other groups. x is copied once; the predictor never sees
// the caller's x.
func PermutationImportance(p Predictor, x []float32, n, dim, outputs int, labels []float64, task string, groups []FeatureGroup, repeats int, seed int64) (metric string, imp []Importance, err error) {
	switch {
	case n <= 0:
		return "", nil, fmt.Errorf("audit: importance: no rows")
	case dim <= 0 || len(x) != n*dim:
		return "", nil, fmt.Errorf("audit: importance: %d inputs for %d rows of width %d", len(x), n, dim)
	case len(labels) != n:
		return "", nil, fmt.Errorf("audit: importance: %d labels for %d rows", len(labels), n)
	case repeats <= 0:
		return "", nil, fmt.Errorf("audit: importance: repeats %d, want at least 1", repeats)
	case p == nil:
		return "", nil, fmt.Errorf("audit: importance: nil predictor")
	}
	names := make(map[string]bool, len(groups))
	for _, g := range groups {
		if g.Name == "" || names[g.Name] {
			return "", nil, fmt.Errorf("audit: importance: feature group name %q empty or repeated", g.Name)
		}
		names[g.Name] = true
		if len(g.Index) == 0 {
			return "", nil, fmt.Errorf("audit: importance: feature group %q has no columns", g.Name)
		}
		for i, j := range g.Index {
			if j < 0 || j >= dim || slices.Contains(g.Index[:i], j) {
				return "", nil, fmt.Errorf("audit: importance: feature group %q: column %d out of [0, %d) or repeated", g.Name, j, dim)
			}
		}
	}
	sc, err := newScorer(task, outputs, labels)
	if err != nil {
		return "", nil, err
	}
	xp := slices.Clone(x)
	out := make([]float32, n*outputs)
	predictScore := func() (float64, error) {
		clear(out)
		if err := p(xp, n, out); err != nil {
			return 0, fmt.Errorf("audit: importance: predict: %w", err)
		}
		return sc.score(out)
	}
	base, err := predictScore()
	if err != nil {
		return "", nil, err
	}
	perm := make([]int, n)
	changes := make([]float64, repeats)
	imp = make([]Importance, 0, len(groups))
	for gi, g := range groups {
		r := newRNG(seed, uint64(gi)+1)
		for k := range changes {
			r.shuffle(perm)
			for row, src := range perm {
				dst, from := row*dim, src*dim
				for _, j := range g.Index {
					xp[dst+j] = x[from+j]
				}
			}
			s, err := predictScore()
			if err != nil {
				return "", nil, err
			}
			if sc.higherBetter {
				changes[k] = base - s
			} else {
				changes[k] = s - base
			}
		}
		for row := range n {
			for _, j := range g.Index {
				xp[row*dim+j] = x[row*dim+j]
			}
		}
		mean, std := meanStd(changes)
		imp = append(imp, Importance{Feature: g.Name, Mean: mean, Std: std})
	}
	slices.SortFunc(imp, func(a, b Importance) int {
		if c := cmp.Compare(b.Mean, a.Mean); c != 0 {
			return c
		}
		return cmp.Compare(a.Feature, b.Feature)
	})
	return sc.metric, imp, nil
}

// meanStd returns the mean and the population standard deviation of v.
func meanStd(v []float64) (float64, float64) {
	var sum float64
	for _, x := range v {
		sum += x
	}
	mean := sum / float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(v)))
}

// scorer scores predictor outputs against the labels, reusing its buffers.
type scorer struct {
	task         string
	metric       string
	higherBetter bool
	outputs      int
	labels       []float64
	probs        []float64 // binary: P(positive) per row
	ranked       rankedBinary
}

// newScorer checks the labels and outputs of a task.
func newScorer(task string, outputs int, labels []float64) (*scorer, error) {
	s := &scorer{task: task, outputs: outputs, labels: labels}
	switch task {
	case TaskBinary:
		if outputs != 1 && outputs != 2 {
			return nil, fmt.Errorf("audit: importance: %s with %d outputs per row (want 1 or 2)", task, outputs)
		}
		var pos, neg bool
		for i, l := range labels {
			switch l {
			case 0:
				neg = true
			case 1:
				pos = true
			default:
				return nil, fmt.Errorf("audit: importance: binary label %g at row %d (want 0 or 1)", l, i)
			}
		}
		if !pos || !neg {
			return nil, fmt.Errorf("audit: importance: AUC needs both classes among the labels")
		}
		s.metric, s.higherBetter = metricAUC, true
		s.probs = make([]float64, len(labels))
	case TaskMulticlass:
		if outputs < 2 {
			return nil, fmt.Errorf("audit: importance: %s with %d outputs per row (want one per class, at least 2)", task, outputs)
		}
		for i, l := range labels {
			if l != math.Trunc(l) || l < 0 || l >= float64(outputs) {
				return nil, fmt.Errorf("audit: importance: class index %g at row %d (want an integer in [0, %d))", l, i, outputs)
			}
		}
		s.metric, s.higherBetter = metricAccuracy, true
	case TaskRegression:
		if outputs != 1 {
			return nil, fmt.Errorf("audit: importance: %s with %d outputs per row (want 1)", task, outputs)
		}
		for i, l := range labels {
			if !finite(l) {
				return nil, fmt.Errorf("audit: importance: label at row %d is %g", i, l)
			}
		}
		s.metric = metricRMSE
	default:
		return nil, fmt.Errorf("audit: importance: unknown task %q (want %s, %s or %s)", task, TaskBinary, TaskMulticlass, TaskRegression)
	}
	return s, nil
}

// score returns the metric of one prediction of all rows.
func (s *scorer) score(out []float32) (float64, error) {
	for i, v := range out {
		if !finite(float64(v)) {
			return 0, fmt.Errorf("audit: importance: predictor output %g at row %d", v, i/s.outputs)
		}
	}
	switch s.task {
	case TaskBinary:
		for i := range s.probs {
			s.probs[i] = float64(out[i*s.outputs+s.outputs-1])
		}
		s.ranked.rank(s.probs, func(i int) bool { return s.labels[i] == 1 })
		auc, _ := s.ranked.auc(nil) // both classes were checked
		return auc, nil
	case TaskMulticlass:
		correct := 0
		for i, l := range s.labels {
			row := out[i*s.outputs : (i+1)*s.outputs]
			best := 0
			for c, v := range row {
				if v > row[best] {
					best = c
				}
			}
			if best == int(l) {
				correct++
			}
		}
		return float64(correct) / float64(len(s.labels)), nil
	default:
		var ss float64
		for i, l := range s.labels {
			d := float64(out[i]) - l
			ss += d * d
		}
		return math.Sqrt(ss / float64(len(s.labels))), nil
	}
}
