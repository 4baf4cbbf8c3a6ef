package jobs

import (
	"strings"
	"testing"
)

// imbalanceSpec is baseSpec with text inserted after the training block's line 14
// (epochs) and export text after line 25 (formats).
func imbalanceSpec(t *testing.T, training, export string) string {
	var edits []edit
	if training != "" {
		edits = append(edits, edit{Line: 14, Text: training, Insert: true})
	}
	if export != "" {
		edits = append(edits, edit{Line: 25, Text: export, Insert: true})
	}
	return editSpec(t, edits...)
}

func TestParseClassWeightsAndThreshold(t *testing.T) {
	j := mustParse(t, imbalanceSpec(t, "    classWeights: balanced", "    threshold: 0.3"))
	if cw := j.Spec.Training.ClassWeights; cw == nil || !cw.Balanced || len(cw.Weights) != 0 {
		t.Fatalf("classWeights = %+v, want balanced", cw)
	}
	if th := j.Spec.Export.Threshold; th == nil || th.Value == nil || *th.Value != 0.3 || th.Optimize != nil {
		t.Fatalf("threshold = %+v, want 0.3", th)
	}
	assertRoundTrip(t, j)

	j = mustParse(t, imbalanceSpec(t, "    classWeights: {\"Yes\": 5, No: 1}", "    threshold: {optimize: f1}"))
	if cw := j.Spec.Training.ClassWeights; cw.Balanced || cw.Weights["Yes"] != 5 || cw.Weights["No"] != 1 {
		t.Fatalf("classWeights = %+v", cw)
	}
	if o := j.Spec.Export.Threshold.Optimize; o == nil || o.Objective != ThresholdF1 {
		t.Fatalf("optimize = %+v, want f1", o)
	}
	assertRoundTrip(t, j)

	j = mustParse(t, imbalanceSpec(t, "", "    threshold: {optimize: {precisionAtRecall: 0.8}}"))
	if o := j.Spec.Export.Threshold.Optimize; o.Objective != ThresholdPrecisionAtRecall || o.PrecisionAtRecall != 0.8 {
		t.Fatalf("optimize = %+v, want precisionAtRecall 0.8", o)
	}
	if got := j.Spec.Export.Threshold.String(); got != "precisionAtRecall 0.8" {
		t.Fatalf("String() = %q", got)
	}
	assertRoundTrip(t, j)
	j = mustParse(t, imbalanceSpec(t, "", "    threshold: {optimize: youden}"))
	assertRoundTrip(t, j)
}

func TestParseClassWeightsAndThresholdErrors(t *testing.T) {
	tests := []struct {
		name             string
		training, export string
		task             string
		path             string
		line             int
		msg              string
	}{
		{"unknown word", "    classWeights: balance", "", "", "spec.training.classWeights", 15, `"balance" is not "balanced"`},
		{"list", "    classWeights: [1, 2]", "", "", "spec.training.classWeights", 15, "expected balanced or a mapping"},
		{"zero weight", "    classWeights: {Yes: 0}", "", "", "spec.training.classWeights.Yes", 15, "greater than 0"},
		{"text weight", "    classWeights: {Yes: lots}", "", "", "spec.training.classWeights.Yes", 15, "expected a number"},
		{"three classes binary", "    classWeights: {a: 1, b: 2, c: 3}", "", "", "spec.training.classWeights", 15, "two classes"},
		{"regression", "    classWeights: balanced", "", "regression", "spec.training.classWeights", 15, "classification"},
		{"threshold 1", "", "    threshold: 1", "", "spec.export.threshold", 26, "between 0 and 1"},
		{"threshold text", "", "    threshold: high", "", "spec.export.threshold", 26, "expected a number or a mapping"},
		{"objective", "", "    threshold: {optimize: auc}", "", "spec.export.threshold.optimize", 26, `"auc" is not one of`},
		{"recall 0", "", "    threshold: {optimize: {precisionAtRecall: 0}}", "", "spec.export.threshold.optimize", 26, "not one of"},
		{"recall 2", "", "    threshold: {optimize: {precisionAtRecall: 2}}", "", "spec.export.threshold.optimize.precisionAtRecall", 26, "at most 1"},
		{"both", "", "    threshold: {value: 0.4, optimize: f1}", "", "spec.export.threshold", 26, "not both"},
		{"unknown field", "", "    threshold: {optimize: f1, optimise: f1}", "", "spec.export.threshold.optimise", 26, `did you mean "optimize"`},
		{"multiclass", "", "    threshold: 0.4", "multiclass_classification", "spec.export.threshold", 26, "applies only to task binary_classification"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := imbalanceSpec(t, tt.training, tt.export)
			if tt.task != "" {
				spec = strings.Replace(spec, "task: binary_classification", "task: "+tt.task, 1)
			}
			assertOneProblem(t, spec, tt.path, tt.line, tt.msg)
		})
	}
}

func TestParseSequenceBaseline(t *testing.T) {
	seq := func(extra string) string {
		s := strings.Replace(baseSpec, "task: binary_classification", "task: regression", 1)
		s = strings.Replace(s, "    mlp:\n      hidden: [16, 8]", "    lstm:\n      hidden: [8]", 1)
		s = strings.Replace(s, "    label: Attrition", "    format: sequence_csv\n    sequence_csv:\n      lookback: 12\n      horizon: 1\n      target: y\n      features: [y]\n      time: Month\n"+extra, 1)
		return s
	}
	j := mustParse(t, seq("      baseline: seasonalNaive\n      period: 4\n      calendar: [month, week]"))
	sq := j.Spec.Data.SequenceCSV
	if sq.Baseline != BaselineSeasonalNaive || sq.Period != 4 || len(sq.Calendar) != 2 {
		t.Fatalf("sequence_csv = %+v", sq)
	}
	if j := mustParse(t, seq("")); j.Spec.Data.SequenceCSV.Period != DefaultSeasonPeriod {
		t.Fatalf("period default %d, want %d", j.Spec.Data.SequenceCSV.Period, DefaultSeasonPeriod)
	}
	for _, c := range []struct{ extra, path, msg string }{
		{"      baseline: seasonalnaive", "spec.data.sequence_csv.baseline", `did you mean "seasonalNaive"`},
		{"      period: 0", "spec.data.sequence_csv.period", "must be"},
		{"      calendar: [day]", "spec.data.sequence_csv.calendar[0]", "not one of month, week"},
	} {
		_, err := Parse([]byte(seq(c.extra)))
		errs := specErrors(t, err)
		if len(errs) != 1 || errs[0].Path != c.path || !strings.Contains(errs[0].Message, c.msg) {
			t.Errorf("%s: got %v, want %s: ...%s...", c.extra, err, c.path, c.msg)
		}
	}
	// The embedded ONNX graph cannot apply the baseline.
	_, err := Parse([]byte(strings.Replace(seq("      baseline: seasonalNaive"), "formats: [safetensors]", "formats: [onnx]", 1)))
	if errs := specErrors(t, err); len(errs) != 1 || errs[0].Path != "spec.export.onnx.preprocessing" {
		t.Fatalf("got %v, want spec.export.onnx.preprocessing", err)
	}
	// A classification task has no seasonal-naive residual.
	_, err = Parse([]byte(strings.Replace(seq("      baseline: seasonalNaive"), "task: regression", "task: binary_classification", 1)))
	if errs := specErrors(t, err); len(errs) != 1 || errs[0].Path != "spec.data.sequence_csv.baseline" {
		t.Fatalf("got %v, want spec.data.sequence_csv.baseline", err)
	}
}
