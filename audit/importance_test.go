package audit

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// table returns n rows of dim standard normal columns.
func table(n, dim int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 3))
	x := make([]float32, n*dim)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// logistic is the fixed binary model P(1) = sigmoid(2 x0 - 1.5 x3) of 6-column rows.
func logistic(x []float32, n int, out []float32) error {
	for i := range n {
		row := x[i*6 : (i+1)*6]
		out[i] = float32(sigmoid(2*float64(row[0]) - 1.5*float64(row[3])))
	}
	return nil
}

func singles(names ...string) []FeatureGroup {
	g := make([]FeatureGroup, len(names))
	for i, name := range names {
		g[i] = FeatureGroup{Name: name, Index: []int{i}}
	}
	return g
}

func TestPermutationImportance(t *testing.T) {
	const n = 2000
	r := rand.New(rand.NewPCG(9, 9))
	x6 := table(n, 6, 1)
	binLabels := make([]float64, n)
	regLabels := make([]float64, n)
	for i := range n {
		x0, x3 := float64(x6[i*6]), float64(x6[i*6+3])
		if r.Float64() < sigmoid(2*x0-1.5*x3) {
			binLabels[i] = 1
		}
		regLabels[i] = 3*x0 - 2*x3 + 0.5*r.NormFloat64()
	}
	// A table of a numeric column (0), a 3-level one-hot categorical (1..3) and two
	// noise columns (4, 5). The model checks that each row's one-hot block stays valid,
	// which holds only if the block is permuted jointly.
	xc := table(n, 6, 2)
	catLabels := make([]float64, n)
	for i := range n {
		level := r.IntN(3)
		for j := 1; j <= 3; j++ {
			xc[i*6+j] = 0
		}
		xc[i*6+1+level] = 1
		z := float64(xc[i*6]) + 1.5*float64(xc[i*6+1]) - 1.5*float64(xc[i*6+3])
		if r.Float64() < sigmoid(z) {
			catLabels[i] = 1
		}
	}
	oneHot := func(x []float32, n int, out []float32) error {
		for i := range n {
			row := x[i*6 : (i+1)*6]
			if row[1]+row[2]+row[3] != 1 {
				return errors.New("one-hot block broken")
			}
			out[i] = float32(sigmoid(float64(row[0]) + 1.5*float64(row[1]) - 1.5*float64(row[3])))
		}
		return nil
	}
	linear := func(x []float32, n int, out []float32) error {
		for i := range n {
			out[i] = 3*x[i*6] - 2*x[i*6+3]
		}
		return nil
	}
	// Multiclass: class = argmax of (2 x0, x3, 0), so x0 weighs more than x3.
	mcLabels := make([]float64, n)
	for i := range n {
		mcLabels[i] = float64(argmax([]float64{2 * float64(x6[i*6]), float64(x6[i*6+3]), 0}))
	}
	argmaxModel := func(x []float32, n int, out []float32) error {
		for i := range n {
			out[i*3], out[i*3+1], out[i*3+2] = 2*x[i*6], x[i*6+3], 0
		}
		return nil
	}
	six := singles("x0", "x1", "x2", "x3", "x4", "x5")
	for _, c := range []struct {
		name       string
		p          Predictor
		x          []float32
		outputs    int
		labels     []float64
		task       string
		groups     []FeatureGroup
		metric     string
		top, noise []string
	}{
		{"binary", logistic, x6, 1, binLabels, TaskBinary, six, "auc", []string{"x0", "x3"}, []string{"x1", "x2", "x4", "x5"}},
		{"one-hot block", oneHot, xc, 1, catLabels, TaskBinary,
			[]FeatureGroup{{"num", []int{0}}, {"cat", []int{1, 2, 3}}, {"noise a", []int{4}}, {"noise b", []int{5}}},
			"auc", []string{"cat", "num"}, []string{"noise a", "noise b"}},
		{"regression", linear, x6, 1, regLabels, TaskRegression, six, "rmse", []string{"x0", "x3"}, []string{"x1", "x2", "x4", "x5"}},
		{"multiclass", argmaxModel, x6, 3, mcLabels, TaskMulticlass, six, "accuracy", []string{"x0", "x3"}, []string{"x1", "x2", "x4", "x5"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig := slices.Clone(c.x)
			metric, imp, err := PermutationImportance(c.p, c.x, n, 6, c.outputs, c.labels, c.task, c.groups, 5, 1)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %+v", metric, imp)
			if metric != c.metric {
				t.Errorf("metric %q, want %q", metric, c.metric)
			}
			if !slices.Equal(c.x, orig) {
				t.Errorf("x modified")
			}
			for i, name := range c.top {
				if imp[i].Feature != name || imp[i].Mean <= 0.02 {
					t.Errorf("rank %d: %+v, want %s with a clear positive mean", i+1, imp[i], name)
				}
			}
			for _, im := range imp[len(c.top):] {
				// The model ignores these columns, so its predictions, and the score, do
				// not change: exactly 0 (well under the 0.01 asked of noise).
				if !slices.Contains(c.noise, im.Feature) || im.Mean != 0 || im.Std != 0 {
					t.Errorf("noise %+v, want mean and std exactly 0", im)
				}
			}
			// Ties (the zeros) are by name.
			if !slices.IsSortedFunc(imp[len(c.top):], func(a, b Importance) int { return strings.Compare(a.Feature, b.Feature) }) {
				t.Errorf("ties not by name: %+v", imp)
			}
			_, again, _ := PermutationImportance(c.p, c.x, n, 6, c.outputs, c.labels, c.task, c.groups, 5, 1)
			if !slices.Equal(again, imp) {
				t.Errorf("not deterministic: %+v then %+v", imp, again)
			}
			_, other, _ := PermutationImportance(c.p, c.x, n, 6, c.outputs, c.labels, c.task, c.groups, 5, 2)
			if slices.Equal(other, imp) {
				t.Errorf("seeds 1 and 2 give the same importance %+v", imp)
			}
		})
	}
}

func TestPermutationImportanceErrors(t *testing.T) {
	x := table(4, 6, 1)
	labels := []float64{0, 1, 0, 1}
	fail := func([]float32, int, []float32) error { return errors.New("boom") }
	nan := func(_ []float32, n int, out []float32) error { out[n-1] = float32(math.NaN()); return nil }
	for _, c := range []struct {
		name   string
		p      Predictor
		n, dim int
		out    int
		labels []float64
		task   string
		groups []FeatureGroup
		reps   int
		want   string
	}{
		{"x length", logistic, 4, 5, 1, labels, TaskBinary, singles("a"), 1, "24 inputs for 4 rows of width 5"},
		{"labels length", logistic, 4, 6, 1, labels[:3], TaskBinary, singles("a"), 1, "3 labels for 4 rows"},
		{"no repeats", logistic, 4, 6, 1, labels, TaskBinary, singles("a"), 0, "repeats 0"},
		{"unknown task", logistic, 4, 6, 1, labels, "ranking", singles("a"), 1, `unknown task "ranking"`},
		{"binary label 2", logistic, 4, 6, 1, []float64{0, 1, 2, 1}, TaskBinary, singles("a"), 1, "binary label 2 at row 2"},
		{"one class", logistic, 4, 6, 1, []float64{1, 1, 1, 1}, TaskBinary, singles("a"), 1, "both classes"},
		{"column out of range", logistic, 4, 6, 1, labels, TaskBinary, []FeatureGroup{{"a", []int{6}}}, 1, "column 6 out of [0, 6)"},
		{"repeated name", logistic, 4, 6, 1, labels, TaskBinary, []FeatureGroup{{"a", []int{0}}, {"a", []int{1}}}, 1, `"a" empty or repeated`},
		{"empty group", logistic, 4, 6, 1, labels, TaskBinary, []FeatureGroup{{"a", nil}}, 1, `"a" has no columns`},
		{"predictor error", fail, 4, 6, 1, labels, TaskBinary, singles("a"), 1, "predict: boom"},
		{"NaN output", nan, 4, 6, 1, labels, TaskBinary, singles("a"), 1, "predictor output NaN at row 3"},
		{"regression outputs", logistic, 4, 6, 2, labels, TaskRegression, singles("a"), 1, "2 outputs per row (want 1)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := PermutationImportance(c.p, x, c.n, c.dim, c.out, c.labels, c.task, c.groups, c.reps, 1)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}
