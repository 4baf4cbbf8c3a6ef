package worker

import (
	"math"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/worker/data"
)

// TestResolveClassWeights: balanced is n / (k · n_c) (sklearn's
// compute_class_weight("balanced"), checked by hand on the counts); a mapping names label
// values, leaves the others at 1, and a class the data does not have is an error naming
// the field, with a did-you-mean.
func TestResolveClassWeights(t *testing.T) {
	path := attritionCSV(t, 300, 0)
	spec := auditSpec(t, path, "")
	ds, err := load(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	var pos int
	for _, y := range ds.train.Y {
		if y == 1 {
			pos++
		}
	}
	n := ds.train.N
	s := &spec.Spec
	s.Training.ClassWeights = &jobs.ClassWeights{Balanced: true}
	w, err := resolveClassWeights(s, ds)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{float64(n) / (2 * float64(n-pos)), float64(n) / (2 * float64(pos))}
	if len(w) != 2 || math.Abs(w[0]-want[0]) > 1e-12 || math.Abs(w[1]-want[1]) > 1e-12 {
		t.Fatalf("balanced weights %v, want %v (%d rows, %d positive)", w, want, n, pos)
	}
	s.Training.ClassWeights = &jobs.ClassWeights{Weights: map[string]float64{"Yes": 4}}
	if w, err = resolveClassWeights(s, ds); err != nil || w[0] != 1 || w[1] != 4 {
		t.Fatalf("weights %v, %v; want [1 4] (classes %v)", w, err, ds.classes)
	}
	s.Training.ClassWeights = &jobs.ClassWeights{Weights: map[string]float64{"yes": 4}}
	_, err = resolveClassWeights(s, ds)
	if err == nil || !strings.Contains(err.Error(), "spec.training.classWeights.yes") || !strings.Contains(err.Error(), `did you mean "Yes"`) {
		t.Fatalf("err = %v", err)
	}
	// Through loadData, as the preflight of `dev --run` and the job's first step.
	spec.Spec.Training.ClassWeights = &jobs.ClassWeights{Weights: map[string]float64{"Maybe": 2}}
	if _, err := load(t, spec); err == nil || !strings.Contains(err.Error(), "spec.training.classWeights.Maybe") {
		t.Fatalf("loadData err = %v", err)
	}
}

// TestWeightedGradient: the class-weighted gradient of a batch equals the weighted
// mean (1/n)·Σ_r w_{y_r}·∇loss_r of the per-row gradients, and its loss the weighted
// mean loss; with weights of 1 it equals the plain gradient.
func TestWeightedGradient(t *testing.T) {
	path := attritionCSV(t, 200, 0)
	spec := auditSpec(t, path, "")
	ds, err := load(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	c := chiefFor(t, spec, ds, nil)
	batch := spec.Spec.Training.BatchSize
	l := &loopState{t: c.t, m: c.m, ds: ds, params: c.params,
		grad: gradientState{values: make([]float32, c.m.NumParams()), xb: make([]float32, batch*ds.inputs), yb: make([]float32, batch)}}
	rows := make([]int, 40) // more than a batch: pieces per class
	for i := range rows {
		rows[i] = i
	}
	weights := []float64{0.7, 3.5}
	loss, err := l.weightedGradient(1, rows, weights)
	if err != nil {
		t.Fatal(err)
	}
	got := append([]float32(nil), l.grad.values...)
	want := make([]float64, len(got))
	var wantLoss float64
	for _, r := range rows {
		lr, err := l.plainGradient(1, []int{r})
		if err != nil {
			t.Fatal(err)
		}
		w := weights[int(ds.train.Y[r])]
		wantLoss += w * lr / float64(len(rows))
		for i, v := range l.grad.values {
			want[i] += w * float64(v) / float64(len(rows))
		}
	}
	if math.Abs(loss-wantLoss) > 1e-5*math.Max(1, wantLoss) {
		t.Fatalf("loss %v, want %v", loss, wantLoss)
	}
	var maxDiff, norm float64
	for i := range got {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want[i]))
		norm = math.Max(norm, math.Abs(want[i]))
	}
	if maxDiff > 1e-5*math.Max(1, norm) {
		t.Fatalf("gradient differs by %v (largest value %v)", maxDiff, norm)
	}
	// Weights of 1 give the plain gradient.
	if _, err := l.weightedGradient(1, rows, []float64{1, 1}); err != nil {
		t.Fatal(err)
	}
	ones := append([]float32(nil), l.grad.values...)
	if _, err := l.plainGradient(1, rows); err != nil {
		t.Fatal(err)
	}
	for i, v := range l.grad.values {
		if math.Abs(float64(v-ones[i])) > 1e-5 {
			t.Fatalf("unit weights: gradient %d is %v, plain %v", i, ones[i], v)
		}
	}
}

// TestEvaluateUndefinedMetrics: on a split of one class the chief leaves val_auc and
// val_recall out (never NaN) and records why; precision, recall and F1 are
// those of the confusion counts at the decision threshold.
func TestEvaluateUndefinedMetrics(t *testing.T) {
	path := attritionCSV(t, 300, 0)
	spec := auditSpec(t, path, "  export: {formats: [safetensors], threshold: 0.3}\n")
	ds, err := load(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	c := chiefFor(t, spec, ds, nil)
	if c.threshold != 0.3 {
		t.Fatalf("threshold %v, want the spec's 0.3", c.threshold)
	}
	m, err := c.evaluate("val_", ds.val)
	if err != nil {
		t.Fatal(err)
	}
	probs := make([]float32, ds.val.N)
	if err := c.m.Predict(c.params, ds.val.X, ds.val.N, probs); err != nil {
		t.Fatal(err)
	}
	var tp, fp, fn float64
	for i, p := range probs {
		switch pos := p >= 0.3; {
		case pos && ds.val.Y[i] == 1:
			tp++
		case pos:
			fp++
		case ds.val.Y[i] == 1:
			fn++
		}
	}
	if tp == 0 || fp+fn == 0 {
		t.Fatalf("counts %v %v %v do not test the formulas", tp, fp, fn)
	}
	for k, want := range map[string]float64{"val_precision": tp / (tp + fp), "val_recall": tp / (tp + fn), "val_f1": 2 * tp / (2*tp + fp + fn)} {
		if math.Abs(m[k]-want) > 1e-12 {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}

	// Only the negative rows of the split.
	neg := &datasetsSubsetNeg{}
	one := neg.of(ds)
	m, err = c.evaluate("val_", one)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range m {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("%s = %v", k, v)
		}
	}
	for _, k := range []string{"val_auc", "val_recall"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s = %v on one class", k, m[k])
		}
	}
	// With rows predicted positive F1 is defined: 0 (sklearn's f1_score too).
	if f1, ok := m["val_f1"]; ok && f1 != 0 {
		t.Errorf("val_f1 = %v, want 0 or left out", f1)
	}
	if why := c.undefined["val_auc"]; !strings.Contains(why, "one class only (0 positive") {
		t.Fatalf("val_auc reason %q", why)
	}
	if _, ok := m["val_accuracy"]; !ok {
		t.Fatal("val_accuracy missing")
	}
	if got := c.finalUndefined(m); len(got) < 2 || !strings.HasPrefix(got[0], "val_auc undefined: ") {
		t.Fatalf("finalUndefined %q", got)
	}
}

// datasetsSubsetNeg cuts the negative rows out of a validation split.
type datasetsSubsetNeg struct{}

func (datasetsSubsetNeg) of(ds *datasets) *data.Dataset {
	var rows []int
	for i, y := range ds.val.Y {
		if y == 0 {
			rows = append(rows, i)
		}
	}
	return subset(ds.val, rows)
}
