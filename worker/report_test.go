package worker

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/audit"
	"github.com/cohort-dev/cohort/internal/hrdata"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
)

// auditSpec is a tabular attrition job over the CSV at path with extra spec lines.
func auditSpec(t *testing.T, path, extra string) *jobs.TrainingJob {
	t.Helper()
	spec, err := jobs.Parse([]byte(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: audited}
spec:
  task: binary_classification
  model: {mlp: {hidden: [8]}}
  data:
    train: file://` + filepath.ToSlash(path) + `
    label: Attrition
    positive: "Yes"
  training: {epochs: 1, batchSize: 16}
` + extra))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// attritionCSV writes a generated attrition table and returns its path.
func attritionCSV(t *testing.T, rows int, disparity float64) string {
	t.Helper()
	var buf bytes.Buffer
	if err := hrdata.GenerateAttrition(&buf, hrdata.AttritionConfig{Rows: rows, Seed: 5, Disparity: disparity}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "attrition.csv")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, spec *jobs.TrainingJob) (*datasets, error) {
	t.Helper()
	return dataSource{ctx: context.Background(), roots: testDataRoots()}.loadData(&spec.Spec)
}

// TestReportTabular builds the report of a tabular model: the sensitive columns are
// audited but are no model inputs, the metrics agree with the loop's own evaluation,
// importance names every raw input column, the gate reaches the job record's form, and
// the files are written where GetJobReport reads them.
func TestReportTabular(t *testing.T) {
	path := attritionCSV(t, 800, 0)
	spec := auditSpec(t, path, `  audit:
    sensitive: [Gender, MaritalStatus, Age]
    intersectional: true
    bins: {Age: [30, 45]}
    bootstrap: {resamples: 200}
    gate: {minAUC: 0.99}
  explain: {permutation: {repeats: 2}}
`)
	ds, err := load(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	var inputs []string
	for _, c := range ds.columns {
		inputs = append(inputs, c.Name)
	}
	for _, s := range []string{"Gender", "MaritalStatus", "Age"} {
		if slices.Contains(inputs, s) {
			t.Errorf("sensitive column %s is a model input: %v", s, inputs)
		}
		if got := len(ds.sensitive[s]); got != ds.val.N {
			t.Errorf("%d %s values for %d validation rows", got, s, ds.val.N)
		}
	}
	if want := map[string]bool{"<30": true, "[30,45)": true, ">=45": true}; !want[ds.sensitive["Age"][0]] {
		t.Errorf("Age not binned: %q", ds.sensitive["Age"][0])
	}
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := chiefFor(t, spec, ds, store)
	r, err := c.buildReport()
	if err != nil {
		t.Fatal(err)
	}
	own, err := c.evaluate("val_", ds.val)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"val_auc", "val_accuracy", "val_loss"} {
		m, ok := r.Metrics[k]
		if !ok || math.Abs(m.Value-own[k]) > 1e-9 || m.CI95[0] > m.Value || m.CI95[1] < m.Value {
			t.Errorf("%s: report %+v, loop's evaluation %v", k, m, own[k])
		}
	}
	if r.Split != audit.SplitValidation || r.Rows != ds.val.N || r.Model.Step != c.total || r.JobID != c.t.job.GetId() {
		t.Errorf("report header: split %s rows %d step %d job %s", r.Split, r.Rows, r.Model.Step, r.JobID)
	}
	attrs := map[string]bool{}
	for _, g := range r.Audit.Groups {
		attrs[g.Attribute] = true
	}
	for _, a := range []string{"Gender", "MaritalStatus", "Age", "Gender,MaritalStatus", "Gender,MaritalStatus,Age"} {
		if !attrs[a] {
			t.Errorf("no groups for %s: %v", a, attrs)
		}
	}
	var got []string
	for _, im := range r.Importance {
		got = append(got, im.Feature)
	}
	slices.Sort(got)
	slices.Sort(inputs)
	if !slices.Equal(got, inputs) || r.ImportanceMetric != "auc" {
		t.Errorf("importance %s over %v, want the inputs %v", r.ImportanceMetric, got, inputs)
	}
	gate := gateResult(&spec.Spec, r)
	if gate == nil || gate.Passed || len(gate.Reasons) != 1 || !strings.HasPrefix(gate.Reasons[0], "val_auc ") {
		t.Errorf("gate %+v: want a failure on val_auc < 0.99", gate)
	}
	if r.Training == nil || r.Training.Rows != ds.train.N || len(r.Training.Features) != len(inputs) {
		t.Errorf("training section %+v", r.Training)
	}

	report, card, err := c.reportFiles(r)
	if err != nil {
		t.Fatal(err)
	}
	uri, err := c.writeReport(context.Background(), report, card)
	if err != nil {
		t.Fatal(err)
	}
	if uri != store.URI(storage.ReportKey(c.t.job.GetId())) {
		t.Errorf("report URI %s", uri)
	}
	rc, err := store.Get(context.Background(), storage.ReportKey(c.t.job.GetId()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	back, err := audit.DecodeReport(rc)
	if err != nil {
		t.Fatalf("stored report does not decode: %v", err)
	}
	if back.Metrics["val_auc"] != r.Metrics["val_auc"] || len(back.Audit.Groups) != len(r.Audit.Groups) {
		t.Error("stored report differs from the built one")
	}
	for _, section := range []string{"## Model details", "## Quantitative analyses", "## Ethical considerations", "| Metric |"} {
		if !strings.Contains(string(card), section) {
			t.Errorf("model card lacks %q", section)
		}
	}

	// useAsFeatures keeps them as inputs.
	spec = auditSpec(t, path, "  audit: {sensitive: [Gender], useAsFeatures: true}\n")
	if ds, err = load(t, spec); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ds.columns, func(g audit.FeatureGroup) bool { return g.Name == "Gender" }) {
		t.Error("useAsFeatures: Gender is not an input")
	}
}

// TestReportSensitiveErrors checks the data-level refusals of spec.audit.
func TestReportSensitiveErrors(t *testing.T) {
	path := attritionCSV(t, 200, 0)
	for _, tc := range []struct{ name, extra, want string }{
		{"unknown column", "  audit: {sensitive: [gender]}\n", `spec.audit.sensitive[0]: column "gender" not found in spec.data.train (did you mean "Gender"?)`},
		{"numeric with many values", "  audit: {sensitive: [Gender, MonthlyIncome]}\n", `spec.audit.sensitive[1]: spec.data.train: column "MonthlyIncome" has`},
		{"bins on a categorical column", "  audit: {sensitive: [Gender], bins: {Gender: [1]}}\n", `spec.audit.bins.Gender: spec.data.train:`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, auditSpec(t, path, tc.extra))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if err := PreflightWithRoots(context.Background(), auditSpec(t, path, tc.extra), nil, testDataRoots()); err == nil {
				t.Error("Preflight accepted it")
			}
		})
	}
	_, err := load(t, auditSpec(t, path, "  audit: {sensitive: [Gender, MonthlyIncome]}\n"))
	if err == nil || !strings.Contains(err.Error(), "spec.audit.bins.MonthlyIncome: [") {
		t.Errorf("no binning suggestion: %v", err)
	}
}

// TestReportSequenceImportance: an LSTM's importance is by input feature and by lag,
// and lag 1 is the most recent step.
func TestReportSequenceImportance(t *testing.T) {
	spec := exampleSpec(t, "performance-lstm.yaml")
	spec.Spec.Explain.Permutation.Repeats = 1
	ds, err := load(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	c := chiefFor(t, spec, ds, nil)
	r, err := c.buildReport()
	if err != nil {
		t.Fatal(err)
	}
	steps := spec.Spec.Data.SequenceCSV.Lookback
	scaler := ds.preprocessing.(*data.SequenceScaler)
	if len(r.Importance) != len(scaler.Features) || len(r.ImportanceByLag) != steps || r.ImportanceMetric != "rmse" {
		t.Fatalf("%d feature and %d lag importances (%s), want %d and %d", len(r.Importance), len(r.ImportanceByLag), r.ImportanceMetric, len(scaler.Features), steps)
	}
	features, lags := c.sequenceGroups()
	f := len(scaler.Features)
	if lags[0].Name != "lag 1" || lags[0].Index[0] != (steps-1)*f || features[0].Index[1] != f {
		t.Errorf("groups: %+v / %+v", lags[0], features[0])
	}
	if r.Metrics["val_rmse"].Value <= 0 {
		t.Errorf("val_rmse %v", r.Metrics["val_rmse"])
	}
}

// TestReportCNNAttribution: a CNN's report has one mean |IG| image per class, and a
// pixel that is zero in every image (equal to the baseline) gets no attribution.
func TestReportCNNAttribution(t *testing.T) {
	spec, err := jobs.Parse([]byte(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: tiny-cnn}
spec:
  task: multiclass_classification
  model: {cnn: {conv: [{filters: 2, kernel: 3, padding: 1}], pool: 2, dense: [4]}}
  data: {format: idx, train: "file:///x-images-idx3-ubyte"}
  training: {batchSize: 8}
  explain: {integratedGradients: {steps: 8, samplesPerClass: 2}}
`))
	if err != nil {
		t.Fatal(err)
	}
	const n, side, classes = 12, 6, 3
	val := &data.Dataset{X: make([]float32, n*side*side), Y: make([]float32, n), N: n, Dim: side * side}
	for i := range n {
		val.Y[i] = float32(i % classes)
		for p := range side * side {
			if p%side != 0 { // column 0 stays 0
				val.X[i*side*side+p] = float32((i*7+p*3)%11) / 10
			}
		}
	}
	ds := &datasets{train: val, val: val, inputs: side * side, outputs: classes,
		image:         data.ImageShape{Channels: 1, Height: side, Width: side},
		preprocessing: imageInfo{Channels: 1, Height: side, Width: side, Scale: 1.0 / 255, Classes: classes, Layout: "NCHW"}}
	c := chiefFor(t, spec, ds, nil)
	r, err := c.buildReport()
	if err != nil {
		t.Fatal(err)
	}
	a := r.Attribution
	if a == nil || len(a.Classes) != classes || a.Steps != 8 || a.Height != side || len(r.Importance) != 0 {
		t.Fatalf("attribution %+v, %d importances", a, len(r.Importance))
	}
	for _, c := range a.Classes {
		if c.Images != 2 || len(c.MeanAbs) != side*side {
			t.Fatalf("class %d: %d images, %d values", c.Class, c.Images, len(c.MeanAbs))
		}
		var total float64
		for p, v := range c.MeanAbs {
			if p%side == 0 && v != 0 {
				t.Errorf("class %d: pixel %d is 0 in every image but has attribution %v", c.Class, p, v)
			}
			total += v
		}
		if !(total > 0) {
			t.Errorf("class %d: no attribution at all", c.Class)
		}
	}
	if r.Confusion == nil || len(r.Confusion.Matrix) != classes {
		t.Errorf("confusion %+v", r.Confusion)
	}
}

// BenchmarkBuildReport times the chief's report on the attrition example's 600
// validation rows: evaluation with 1000 bootstrap resamples, the audit by Gender and
// MaritalStatus with their intersection, and permutation importance of 25 columns with
// repeats 5 (sub-benchmark "full"); "metrics-only" has no audit and no importance.
//
//	go test -run '^$' -bench BenchmarkBuildReport -benchmem ./worker
func BenchmarkBuildReport(b *testing.B) {
	for _, tc := range []struct {
		name string
		edit func(s *jobs.Spec)
	}{
		{"full", func(*jobs.Spec) {}},
		{"metrics-only", func(s *jobs.Spec) { s.Audit, s.Explain.Permutation.Repeats = nil, 0 }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			spec := exampleSpec(b, "attrition-mlp.yaml")
			tc.edit(&spec.Spec)
			ds, err := dataSource{ctx: context.Background(), roots: testDataRoots()}.loadData(&spec.Spec)
			if err != nil {
				b.Fatal(err)
			}
			c := chiefFor(b, spec, ds, nil)
			for b.Loop() {
				if _, err := c.buildReport(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuildReportCNN times the report of the fashion-cnn example's network on
// 10,000 random 28x28 test images (as Fashion-MNIST's test set): evaluation with 1000
// bootstrap resamples and integrated gradients of 8 images per class (32 steps).
//
//	go test -run '^$' -bench BenchmarkBuildReportCNN -benchtime 3x ./worker
func BenchmarkBuildReportCNN(b *testing.B) {
	spec := exampleSpec(b, "fashion-cnn.yaml")
	const n, side, classes = 10000, 28, 10
	test := &data.Dataset{X: make([]float32, n*side*side), Y: make([]float32, n), N: n, Dim: side * side}
	for i := range test.X {
		test.X[i] = float32((i*2654435761)%256) / 255
	}
	for i := range n {
		test.Y[i] = float32(i % classes)
	}
	ds := &datasets{train: test, val: test, test: test, inputs: side * side, outputs: classes,
		image:         data.ImageShape{Channels: 1, Height: side, Width: side},
		preprocessing: imageInfo{Channels: 1, Height: side, Width: side, Scale: 1.0 / 255, Classes: classes, Layout: "NCHW"}}
	c := chiefFor(b, spec, ds, nil)
	for b.Loop() {
		if _, err := c.buildReport(); err != nil {
			b.Fatal(err)
		}
	}
}
