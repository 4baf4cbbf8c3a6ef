package audit

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// fixture is a 12-row binary split with two sensitive columns. Figures by hand (threshold
// 0.5, minGroupFraction 0.1, so a 1-row group, 8.3%, is excluded):
//
//	row score label Gender Band  selected  above median
//	 0  0.90   1     F      A      yes       yes
//	 1  0.80   1     F      A      yes       yes
//	 2  0.60   0     F      B      yes (FP)  yes
//	 3  0.30   1     F      B      no  (FN)  no
//	 4  0.20   0     F      B      no        no
//	 5  0.70   1     M      A      yes       yes
//	 6  0.55   0     M      A      yes (FP)  yes
//	 7  0.65   1     M      B      yes       yes
//	 8  0.40   0     M      B      no        no
//	 9  0.52   1     M      A      yes       no
//	10  0.10   0     X      A      no        no
//	11  0.45   1     N/A    B      no  (FN)  no
//
// Sorted scores 0.1 0.2 0.3 0.4 0.45 0.52 | 0.55 0.6 0.65 0.7 0.8 0.9: median
// (0.52+0.55)/2 = 0.535.
func fixture() (Config, Input) {
	cfg := DefaultConfig()
	cfg.MinGroupFraction = 0.1
	cfg.Sensitive = []string{"Gender", "Band"}
	cfg.Resamples = 200
	return cfg, Input{
		Scores:  []float64{0.9, 0.8, 0.6, 0.3, 0.2, 0.7, 0.55, 0.65, 0.4, 0.52, 0.1, 0.45},
		Labels:  []float64{1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1},
		Classes: []string{"No", "Yes"},
		Groups: map[string][]string{
			"Gender": {"F", "F", "F", "F", "F", "M", "M", "M", "M", "M", "X", "N/A"},
			"Band":   {"A", "A", "B", "B", "B", "A", "A", "B", "B", "A", "A", "B"},
		},
	}
}

// wantGroup is the expected figures of a binary group; -1 marks an absent figure.
type wantGroup struct {
	attr, cat               string
	missing, excluded       bool
	count, positives        int
	base, sel, ir, tpr, fpr float64
	score, scoreIR          float64
	reason                  string
}

func checkFloat(t *testing.T, what string, got *float64, want float64) {
	t.Helper()
	switch {
	case want < 0 && got != nil:
		t.Errorf("%s = %v, want absent", what, *got)
	case want >= 0 && got == nil:
		t.Errorf("%s absent, want %v", what, want)
	case want >= 0 && math.Abs(*got-want) > 1e-12:
		t.Errorf("%s = %v, want %v", what, *got, want)
	}
}

func findGroup(t *testing.T, groups []Group, attr, cat string, missing bool) Group {
	t.Helper()
	for _, g := range groups {
		if g.Attribute == attr && g.Category == cat && g.Missing == missing {
			return g
		}
	}
	t.Fatalf("no group %s=%q (missing %v)", attr, cat, missing)
	return Group{}
}

func TestEvaluateFixture(t *testing.T) {
	cfg, in := fixture()
	cfg.Intersectional = true
	cfg.Gate = GateConfig{MinImpactRatio: ptr(0.8), MinAUC: ptr(0.85), MinAccuracy: ptr(0.7)}
	rep, err := Evaluate(cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	const n = 12.0
	// Gender: F has 3 positives of 5 (rows 0,1,3), selects rows 0,1,2 (3/5): TP 0,1 of
	// 3 positives, FP 2 of 2 negatives (2,4); above the median rows 0,1,2. M: positives
	// 5,7,9; selects 5,6,7,9 (4/5), TP 3/3, FP 6 of negatives 6,8; above rows 5,6,7.
	// Highest eligible selection rate 0.8 (M): F 0.6/0.8 = 0.75. Score rates 0.6 both.
	// X (row 10, negative, not selected): 1/12 = 8.3% < 10%. Row 11 (N/A) is missing.
	// Band: A rows 0,1,5,6,9,10 select 5/6; B rows 2,3,4,7,8,11 select 2/6 (2,7): B's
	// ratio (1/3)/(5/6) = 0.4. Above median: A 0,1,5,6 (4/6); B 2,7 (2/6): 0.5.
	// Gender,Band: F,A rows 0,1 select 2/2; F,B rows 2,3,4 select 1/3; M,A rows 5,6,9
	// select 3/3; M,B rows 7,8 select 1/2; X,A row 10 excluded; row 11 missing.
	for _, w := range []wantGroup{
		{attr: "Gender", cat: "F", count: 5, positives: 3, base: 0.6, sel: 0.6, ir: 0.75, tpr: 2.0 / 3, fpr: 0.5, score: 0.6, scoreIR: 1},
		{attr: "Gender", cat: "M", count: 5, positives: 3, base: 0.6, sel: 0.8, ir: 1, tpr: 1, fpr: 0.5, score: 0.6, scoreIR: 1},
		{attr: "Gender", cat: "X", excluded: true, count: 1, positives: 0, base: 0, sel: 0, ir: -1, tpr: -1, fpr: 0, score: 0, scoreIR: -1,
			reason: "8.3% of rows < minGroupFraction 10%"},
		{attr: "Gender", missing: true, excluded: true, count: 1, positives: 1, base: 1, sel: 0, ir: -1, tpr: 0, fpr: -1, score: 0, scoreIR: -1,
			reason: ReasonMissing},
		{attr: "Band", cat: "A", count: 6, positives: 4, base: 4.0 / 6, sel: 5.0 / 6, ir: 1, tpr: 1, fpr: 0.5, score: 4.0 / 6, scoreIR: 1},
		{attr: "Band", cat: "B", count: 6, positives: 3, base: 0.5, sel: 2.0 / 6, ir: 0.4, tpr: 1.0 / 3, fpr: 1.0 / 3, score: 2.0 / 6, scoreIR: 0.5},
		{attr: "Gender,Band", cat: "F,A", count: 2, positives: 2, base: 1, sel: 1, ir: 1, tpr: 1, fpr: -1, score: 1, scoreIR: 1},
		{attr: "Gender,Band", cat: "F,B", count: 3, positives: 1, base: 1.0 / 3, sel: 1.0 / 3, ir: 1.0 / 3, tpr: 0, fpr: 0.5, score: 1.0 / 3, scoreIR: 1.0 / 3},
		{attr: "Gender,Band", cat: "M,A", count: 3, positives: 2, base: 2.0 / 3, sel: 1, ir: 1, tpr: 1, fpr: 1, score: 2.0 / 3, scoreIR: 2.0 / 3},
		{attr: "Gender,Band", cat: "M,B", count: 2, positives: 1, base: 0.5, sel: 0.5, ir: 0.5, tpr: 1, fpr: 0, score: 0.5, scoreIR: 0.5},
		{attr: "Gender,Band", cat: "X,A", excluded: true, count: 1, positives: 0, base: 0, sel: 0, ir: -1, tpr: -1, fpr: 0, score: 0, scoreIR: -1,
			reason: "8.3% of rows < minGroupFraction 10%"},
		{attr: "Gender,Band", missing: true, excluded: true, count: 1, positives: 1, base: 1, sel: 0, ir: -1, tpr: 0, fpr: -1, score: 0, scoreIR: -1,
			reason: ReasonMissing},
	} {
		t.Run(w.attr+"="+w.cat, func(t *testing.T) {
			g := findGroup(t, rep.Audit.Groups, w.attr, w.cat, w.missing)
			if g.Count != w.count || g.Excluded != w.excluded || g.Reason != w.reason {
				t.Errorf("count %d excluded %v reason %q, want %d %v %q", g.Count, g.Excluded, g.Reason, w.count, w.excluded, w.reason)
			}
			if g.Fraction != float64(w.count)/n {
				t.Errorf("fraction %v, want %v", g.Fraction, float64(w.count)/n)
			}
			if g.Positives == nil || *g.Positives != w.positives {
				t.Errorf("positives %v, want %d", g.Positives, w.positives)
			}
			checkFloat(t, "base_rate", g.BaseRate, w.base)
			checkFloat(t, "selection_rate", g.SelectionRate, w.sel)
			checkFloat(t, "impact_ratio", g.ImpactRatio, w.ir)
			checkFloat(t, "tpr", g.TPR, w.tpr)
			checkFloat(t, "fpr", g.FPR, w.fpr)
			checkFloat(t, "score_rate", g.ScoreRate, w.score)
			checkFloat(t, "score_impact_ratio", g.ScoreImpactRatio, w.scoreIR)
			checkFloat(t, "mean_label", g.MeanLabel, -1)
			checkFloat(t, "accuracy", g.Accuracy, -1)
		})
	}
	t.Run("order", func(t *testing.T) {
		var got []string
		for _, g := range rep.Audit.Groups {
			got = append(got, g.Attribute+"="+g.Category)
		}
		want := []string{"Gender=F", "Gender=M", "Gender=X", "Gender=", "Band=A", "Band=B",
			"Gender,Band=F,A", "Gender,Band=F,B", "Gender,Band=M,A", "Gender,Band=M,B", "Gender,Band=X,A", "Gender,Band="}
		if !slices.Equal(got, want) {
			t.Errorf("groups %q, want %q", got, want)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		// AUC: positives 0.9 0.8 0.7 0.65 beat all 5 negatives (20 pairs), 0.52 and 0.45
		// beat 0.4 0.2 0.1 (6), 0.3 beats 0.2 0.1 (2): 28/35 = 0.8. Accuracy: rows 2, 3,
		// 6, 11 wrong: 8/12.
		if m := rep.Metrics["val_auc"]; math.Abs(m.Value-0.8) > 1e-15 {
			t.Errorf("val_auc %v, want 0.8", m.Value)
		}
		if m := rep.Metrics["val_accuracy"]; m.Value != 8.0/12 {
			t.Errorf("val_accuracy %v, want 8/12", m.Value)
		}
		var loss float64
		for i, p := range in.Scores {
			if in.Labels[i] == 1 {
				loss -= math.Log(p)
			} else {
				loss -= math.Log(1 - p)
			}
		}
		if m := rep.Metrics["val_loss"]; math.Abs(m.Value-loss/12) > 1e-12 {
			t.Errorf("val_loss %v, want %v", m.Value, loss/12)
		}
		if len(rep.Metrics) != 3 {
			t.Errorf("metrics %v, want val_auc, val_accuracy, val_loss", rep.Metrics)
		}
	})
	t.Run("confusion", func(t *testing.T) {
		// True 0 (rows 2,4,6,8,10): predicted 1 for 2 and 6. True 1: predicted 0 for 3, 11.
		want := [][]int{{3, 2}, {2, 5}}
		c := rep.Confusion
		if !slices.EqualFunc(c.Matrix, want, slices.Equal) || *c.Threshold != 0.5 || !slices.Equal(c.Labels, []string{"No", "Yes"}) {
			t.Errorf("confusion %+v, want %v", c, want)
		}
	})
	t.Run("gate", func(t *testing.T) {
		want := []string{
			"impact ratio 0.75 for Gender=F < 0.8",
			"impact ratio 0.4 for Band=B < 0.8",
			"impact ratio 0.33 for Gender,Band=F,B < 0.8",
			"impact ratio 0.5 for Gender,Band=M,B < 0.8",
			"val_auc 0.8 < 0.85",
			"val_accuracy 0.67 < 0.7",
		}
		g := rep.Audit.Gate
		if g == nil || g.Passed || !slices.Equal(g.Reasons, want) {
			t.Errorf("gate %+v,\nwant reasons %q", g, want)
		}
		if len(rep.Audit.Notes) != 0 {
			t.Errorf("notes %q, want none", rep.Audit.Notes)
		}
	})
	t.Run("gate passes", func(t *testing.T) {
		cfg, in := fixture()
		cfg.Gate = GateConfig{MinImpactRatio: ptr(0.4), MinAUC: ptr(0.8)}
		rep, err := Evaluate(cfg, in)
		if err != nil {
			t.Fatal(err)
		}
		if g := rep.Audit.Gate; !g.Passed || g.Reasons != nil {
			t.Errorf("gate %+v, want passed", g)
		}
	})
}

func TestEvaluateCalibrationEdges(t *testing.T) {
	// Bins are [lower, upper), the last closed: 0.1 is in bin 1, 0.3 in bin 3, 1 in bin 9.
	cfg := DefaultConfig()
	in := Input{Scores: []float64{0, 0.1, 0.3, 0.7, 0.5, 1, 0.95}, Labels: []float64{0, 0, 1, 1, 0, 1, 1}}
	rep, err := Evaluate(cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, 10)
	for i, b := range rep.Calibration.Bins {
		counts[i] = b.Count
		if b.Lower != float64(i)/10 || b.Upper != float64(i+1)/10 {
			t.Errorf("bin %d [%v, %v)", i, b.Lower, b.Upper)
		}
		if (b.Count == 0) != (b.MeanPredicted == nil) || (b.Count == 0) != (b.FractionPositive == nil) {
			t.Errorf("bin %d: count %d with mean %v fraction %v", i, b.Count, b.MeanPredicted, b.FractionPositive)
		}
	}
	if want := []int{1, 1, 0, 1, 0, 1, 0, 1, 0, 2}; !slices.Equal(counts, want) {
		t.Errorf("bin counts %v, want %v", counts, want)
	}
	// ECE: bins 0 (0 vs 0), 1 (0.1 vs 0), 3 (0.3 vs 1), 5 (0.5 vs 0), 7 (0.7 vs 1),
	// 9 (0.975 vs 1): (0.1 + 0.7 + 0.5 + 0.3 + 2*0.025)/7.
	if want := (0.1 + 0.7 + 0.5 + 0.3 + 0.05) / 7; math.Abs(rep.Calibration.ECE-want) > 1e-12 {
		t.Errorf("ECE %v, want %v", rep.Calibration.ECE, want)
	}
	// 0.5 >= threshold 0.5 is predicted positive: true 0 (0, 0.1, 0.5) → [2 1]; true 1
	// (0.3, 0.7, 1, 0.95) → [1 3].
	if want := [][]int{{2, 1}, {1, 3}}; !slices.EqualFunc(rep.Confusion.Matrix, want, slices.Equal) {
		t.Errorf("confusion %v, want %v", rep.Confusion.Matrix, want)
	}
}

func TestEvaluateRegressionAndMulticlass(t *testing.T) {
	t.Run("regression", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Task = TaskRegression
		cfg.Split, cfg.Prefix = SplitTest, PrefixTest
		cfg.Sensitive = []string{"G"}
		cfg.MinGroupFraction = 0
		cfg.Gate = GateConfig{MaxRMSE: ptr(1.0), MinImpactRatio: ptr(0.8)}
		// Errors 1, -1, 2, 0: RMSE sqrt(6/4) = 1.2247, MAE 1. The median of the
		// predictions 11 12 14 20 is 13: above are 14 (a) and 20 (b), a 1/2, b 1/2.
		in := Input{
			Scores: []float64{11, 12, 14, 20},
			Labels: []float64{10, 13, 12, 20},
			Groups: map[string][]string{"G": {"a", "b", "a", "b"}},
		}
		rep, err := Evaluate(cfg, in)
		if err != nil {
			t.Fatal(err)
		}
		if m := rep.Metrics["test_rmse"]; math.Abs(m.Value-math.Sqrt(1.5)) > 1e-12 {
			t.Errorf("test_rmse %v", m.Value)
		}
		if m := rep.Metrics["test_mae"]; m.Value != 1 {
			t.Errorf("test_mae %v", m.Value)
		}
		a := findGroup(t, rep.Audit.Groups, "G", "a", false)
		checkFloat(t, "mean_label", a.MeanLabel, 11)
		checkFloat(t, "mean_prediction", a.MeanPrediction, 12.5)
		checkFloat(t, "score_rate", a.ScoreRate, 0.5)
		checkFloat(t, "score_impact_ratio", a.ScoreImpactRatio, 1)
		checkFloat(t, "selection_rate", a.SelectionRate, -1)
		checkFloat(t, "impact_ratio", a.ImpactRatio, -1)
		if a.Positives != nil || rep.Calibration != nil || rep.Confusion != nil || rep.Classes != nil || rep.Audit.Threshold != nil {
			t.Errorf("binary parts in a regression report: %+v", rep)
		}
		if g := rep.Audit.Gate; g.Passed || !slices.Equal(g.Reasons, []string{"test_rmse 1.22 > 1"}) {
			t.Errorf("gate %+v", g)
		}
	})
	t.Run("regression scoring impact ratio", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Task = TaskRegression
		cfg.Sensitive = []string{"G"}
		cfg.Gate = GateConfig{MinImpactRatio: ptr(0.8)}
		// Median 2.5: above are 3 (a) and 4 (a) and 5 (b): a 2/2, b 1/3 → b 0.33.
		in := Input{
			Scores: []float64{3, 4, 1, 2, 5, 0},
			Labels: []float64{3, 4, 1, 2, 5, 0},
			Groups: map[string][]string{"G": {"a", "a", "b", "b", "b", "c"}},
		}
		rep, err := Evaluate(cfg, in)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"scoring impact ratio 0.33 for G=b < 0.8", "scoring impact ratio 0 for G=c < 0.8"}
		if g := rep.Audit.Gate; !slices.Equal(g.Reasons, want) {
			t.Errorf("reasons %q, want %q", g.Reasons, want)
		}
	})
	t.Run("multiclass", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Task = TaskMulticlass
		cfg.Sensitive = []string{"G"}
		cfg.MinGroupFraction = 0
		cfg.Gate = GateConfig{MinImpactRatio: ptr(0.8), MinAccuracy: ptr(0.5), MinAUC: ptr(0.5)}
		// Rows predict 0, 1, 1 (a tie between 1 and 2 goes to the first), 0; labels
		// 0 1 2 2: accuracy 1/2, group a right twice, b never.
		in := Input{
			Scores:  []float64{0.8, 0.1, 0.1, 0.2, 0.7, 0.1, 0.2, 0.4, 0.4, 0.5, 0.3, 0.2},
			Labels:  []float64{0, 1, 2, 2},
			Classes: []string{"lo", "mid", "hi"},
			Groups:  map[string][]string{"G": {"a", "a", "b", "b"}},
		}
		rep, err := Evaluate(cfg, in)
		if err != nil {
			t.Fatal(err)
		}
		if m := rep.Metrics["val_accuracy"]; m.Value != 0.5 {
			t.Errorf("val_accuracy %v", m.Value)
		}
		want := -(math.Log(0.8) + math.Log(0.7) + math.Log(0.4) + math.Log(0.2)) / 4
		if m := rep.Metrics["val_loss"]; math.Abs(m.Value-want) > 1e-12 {
			t.Errorf("val_loss %v, want %v", m.Value, want)
		}
		if wantM := [][]int{{1, 0, 0}, {0, 1, 0}, {1, 1, 0}}; !slices.EqualFunc(rep.Confusion.Matrix, wantM, slices.Equal) || rep.Confusion.Threshold != nil {
			t.Errorf("confusion %+v, want %v", rep.Confusion, wantM)
		}
		checkFloat(t, "a accuracy", findGroup(t, rep.Audit.Groups, "G", "a", false).Accuracy, 1)
		checkFloat(t, "b accuracy", findGroup(t, rep.Audit.Groups, "G", "b", false).Accuracy, 0)
		wantR := []string{"impact ratio: not available for multiclass_classification", "val_auc: not available for multiclass_classification"}
		if g := rep.Audit.Gate; g.Passed || !slices.Equal(g.Reasons, wantR) {
			t.Errorf("reasons %q, want %q", g.Reasons, wantR)
		}
	})
}

func TestEvaluateErrors(t *testing.T) {
	base := func() (Config, Input) {
		cfg := DefaultConfig()
		cfg.Sensitive = []string{"G"}
		return cfg, Input{Scores: []float64{0.2, 0.8}, Labels: []float64{0, 1}, Groups: map[string][]string{"G": {"a", "b"}}}
	}
	for _, c := range []struct {
		name string
		edit func(*Config, *Input)
		want string
	}{
		{"length mismatch", func(_ *Config, in *Input) { in.Scores = in.Scores[:1] }, "1 scores for 2 labels"},
		{"no rows", func(_ *Config, in *Input) { in.Scores, in.Labels = nil, nil }, "no rows"},
		{"NaN score", func(_ *Config, in *Input) { in.Scores[1] = math.NaN() }, "score at row 1 is NaN"},
		{"infinite label", func(_ *Config, in *Input) { in.Labels[0] = math.Inf(1) }, "label at row 0 is +Inf"},
		{"probability above 1", func(_ *Config, in *Input) { in.Scores[0] = 1.5 }, "probability 1.5 at row 0 is outside [0, 1]"},
		{"unknown task", func(cfg *Config, _ *Input) { cfg.Task = "ranking" }, `unknown task "ranking"`},
		{"binary label 2", func(_ *Config, in *Input) { in.Labels[1] = 2 }, "binary label 2 at row 1 (want 0 or 1)"},
		{"three binary classes", func(_ *Config, in *Input) { in.Classes = []string{"a", "b", "c"} }, "with 3 classes"},
		{"multiclass scores", func(cfg *Config, in *Input) {
			cfg.Task = TaskMulticlass
			in.Classes = []string{"a", "b", "c"}
		}, "2 scores for 2 labels of 3 classes (want 6)"},
		{"multiclass index", func(cfg *Config, in *Input) {
			cfg.Task = TaskMulticlass
			in.Classes = []string{"a", "b"}
			in.Scores = []float64{0.5, 0.5, 0.5, 0.5}
			in.Labels[1] = 1.5
		}, "class index 1.5 at row 1"},
		{"missing column", func(_ *Config, in *Input) { delete(in.Groups, "G") }, `sensitive column "G" not in the input`},
		{"short column", func(_ *Config, in *Input) { in.Groups["G"] = []string{"a"} }, `sensitive column "G" has 1 values for 2 rows`},
		{"unknown split", func(cfg *Config, _ *Input) { cfg.Split = "train" }, `unknown split "train"`},
		{"prefix mismatch", func(cfg *Config, _ *Input) { cfg.Prefix = PrefixTest }, `prefix "test_" does not match split "validation"`},
		{"threshold", func(cfg *Config, _ *Input) { cfg.Threshold = 1 }, "threshold 1 not in (0, 1)"},
		{"duplicate column", func(cfg *Config, _ *Input) { cfg.Sensitive = []string{"G", "G"} }, `"G" listed twice`},
		{"NaN gate", func(cfg *Config, _ *Input) { cfg.Gate.MinAUC = ptr(math.NaN()) }, "gate min AUC is NaN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, in := base()
			c.edit(&cfg, &in)
			rep, err := Evaluate(cfg, in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Evaluate = %v, %v; want error containing %q", rep, err, c.want)
			}
		})
	}
}

func TestEvaluateUndefinedRatios(t *testing.T) {
	t.Run("groups too small everywhere", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Sensitive = []string{"G"}
		cfg.MinGroupFraction = 0.45
		cfg.Gate = GateConfig{MinImpactRatio: ptr(0.8)}
		// Three groups of 4 rows: 33% each, all under 45%.
		in := Input{
			Scores: []float64{0.9, 0.1, 0.6, 0.4, 0.9, 0.1, 0.6, 0.4, 0.9, 0.1, 0.6, 0.4},
			Labels: []float64{1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0},
			Groups: map[string][]string{"G": {"a", "a", "a", "a", "b", "b", "b", "b", "c", "c", "c", "c"}},
		}
		rep, err := Evaluate(cfg, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range rep.Audit.Groups {
			if !g.Excluded || g.ImpactRatio != nil || g.ScoreImpactRatio != nil || g.Reason != "33.3% of rows < minGroupFraction 45%" {
				t.Errorf("group %+v, want excluded without ratios", g)
			}
		}
		wantNote := "G: not enough data (no group reaches minGroupFraction 0.45): no impact ratios"
		if !slices.Contains(rep.Audit.Notes, wantNote) {
			t.Errorf("notes %q, want %q", rep.Audit.Notes, wantNote)
		}
		want := []string{"impact ratio for G: not enough data (no group reaches minGroupFraction 0.45)"}
		if g := rep.Audit.Gate; g.Passed || !slices.Equal(g.Reasons, want) {
			t.Errorf("gate %+v, want %q", g, want)
		}
	})
	t.Run("all-zero selection rates", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Sensitive = []string{"G"}
		cfg.Threshold = 0.95
		cfg.Gate = GateConfig{MinImpactRatio: ptr(0.8)}
		in := Input{
			Scores: []float64{0.9, 0.1, 0.6, 0.4},
			Labels: []float64{1, 0, 1, 0},
			Groups: map[string][]string{"G": {"a", "a", "b", "b"}},
		}
		rep, err := Evaluate(cfg, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range rep.Audit.Groups {
			if g.ImpactRatio != nil || g.SelectionRate == nil || *g.SelectionRate != 0 {
				t.Errorf("group %+v, want selection rate 0 and no impact ratio", g)
			}
			if g.ScoreImpactRatio == nil { // median 0.5: a has 0.9 above, b has 0.6
				t.Errorf("group %+v, want a scoring impact ratio", g)
			}
		}
		wantNote := "G: every selection rate is 0 (no score >= threshold 0.95): impact ratios undefined, omitted"
		if !slices.Contains(rep.Audit.Notes, wantNote) {
			t.Errorf("notes %q, want %q", rep.Audit.Notes, wantNote)
		}
		want := []string{"impact ratio for G: undefined (every selection rate is 0)"}
		if g := rep.Audit.Gate; g.Passed || !slices.Equal(g.Reasons, want) {
			t.Errorf("gate %+v, want %q", g, want)
		}
	})
	t.Run("one class", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Gate = GateConfig{MinAUC: ptr(0.7)}
		rep, err := Evaluate(cfg, Input{Scores: []float64{0.2, 0.7, 0.4}, Labels: []float64{0, 0, 0}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := rep.Metrics["val_auc"]; ok {
			t.Errorf("val_auc present for one class: %v", rep.Metrics)
		}
		if !slices.Contains(rep.Audit.Notes, "val_auc omitted: the validation split has only one class") {
			t.Errorf("notes %q", rep.Audit.Notes)
		}
		want := []string{"val_auc: not available (the validation split has only one class)"}
		if g := rep.Audit.Gate; g.Passed || !slices.Equal(g.Reasons, want) {
			t.Errorf("gate %+v, want %q", g, want)
		}
	})
	t.Run("no sensitive columns", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Gate = GateConfig{MinImpactRatio: ptr(0.8)}
		rep, err := Evaluate(cfg, Input{Scores: []float64{0.2, 0.7}, Labels: []float64{0, 1}})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"impact ratio: no sensitive columns to audit"}
		if g := rep.Audit.Gate; g.Passed || !slices.Equal(g.Reasons, want) {
			t.Errorf("gate %+v, want %q", g, want)
		}
	})
}

// randomBinary returns n scores with ties (a 40-value grid, never on a tenth) and labels
// drawn with P(1) = score.
func randomBinary(n int, seed uint64) ([]float64, []float64) {
	r := rand.New(rand.NewPCG(seed, 7))
	scores := make([]float64, n)
	labels := make([]float64, n)
	for i := range scores {
		scores[i] = (float64(r.IntN(40)) + 0.5) / 40
		if r.Float64() < scores[i] {
			labels[i] = 1
		}
	}
	return scores, labels
}

func TestBootstrap(t *testing.T) {
	scores, labels := randomBinary(300, 1)
	cfg := DefaultConfig()
	in := Input{Scores: scores, Labels: labels}
	rep, err := Evaluate(cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("contains the point estimate", func(t *testing.T) {
		for name, m := range rep.Metrics {
			if !(m.CI95[0] <= m.Value && m.Value <= m.CI95[1] && m.CI95[0] < m.CI95[1]) {
				t.Errorf("%s = %v outside its ci95 %v", name, m.Value, m.CI95)
			}
		}
	})
	t.Run("deterministic for a seed", func(t *testing.T) {
		again, _ := Evaluate(cfg, in)
		for name, m := range rep.Metrics {
			if again.Metrics[name] != m {
				t.Errorf("%s: %v then %v", name, m, again.Metrics[name])
			}
		}
		cfg2 := cfg
		cfg2.Seed = 2
		other, _ := Evaluate(cfg2, in)
		if other.Metrics["val_auc"].CI95 == rep.Metrics["val_auc"].CI95 {
			t.Errorf("seeds 1 and 2 give the same ci95 %v", rep.Metrics["val_auc"].CI95)
		}
	})
	t.Run("no resamples", func(t *testing.T) {
		cfg0 := cfg
		cfg0.Resamples = 0
		r0, _ := Evaluate(cfg0, in)
		for name, m := range r0.Metrics {
			if m.CI95 != [2]float64{m.Value, m.Value} {
				t.Errorf("%s: %v", name, m)
			}
		}
		if r0.Bootstrap != nil {
			t.Errorf("bootstrap %+v without resamples", r0.Bootstrap)
		}
	})
	t.Run("accuracy matches the normal approximation", func(t *testing.T) {
		// For n = 5000 the bootstrap distribution of an accuracy p is close to normal
		// with sd s = sqrt(p(1-p)/n), so its 2.5% and 97.5% percentiles are p ∓ 1.96 s
		// up to Monte Carlo error: with B = 1000 resamples, a 2.5% quantile's standard
		// error is sqrt(0.025*0.975/B)/φ(1.96) s ≈ 0.085 s. We allow 0.35 s (4 such
		// errors); the discreteness of accuracy (1/n = 0.035 s) is far below.
		const n = 5000
		scores, labels := randomBinary(n, 2)
		rep, err := Evaluate(cfg, Input{Scores: scores, Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		m := rep.Metrics["val_accuracy"]
		s := math.Sqrt(m.Value * (1 - m.Value) / n)
		for i, want := range []float64{m.Value - 1.96*s, m.Value + 1.96*s} {
			if d := math.Abs(m.CI95[i] - want); d > 0.35*s {
				t.Errorf("ci95[%d] = %v, normal approximation %v: off by %.2f sd", i, m.CI95[i], want, d/s)
			}
		}
	})
}

func TestWeightedAUC(t *testing.T) {
	// Weights 2 on a row count it twice: compare with the AUC of the expanded rows.
	scores := []float64{0.3, 0.3, 0.5, 0.1, 0.5, 0.9}
	pos := []bool{true, false, true, false, false, true}
	w := []int32{2, 1, 0, 3, 1, 2}
	var r rankedBinary
	r.rank(scores, func(i int) bool { return pos[i] })
	ws := make([]int32, len(w))
	for j, i := range r.order {
		ws[j] = w[i]
	}
	var es []float64
	var ep []bool
	for i := range scores {
		for range w[i] {
			es = append(es, scores[i])
			ep = append(ep, pos[i])
		}
	}
	var e rankedBinary
	e.rank(es, func(i int) bool { return ep[i] })
	got, _ := r.auc(ws)
	want, _ := e.auc(nil)
	// Expanded: positives 0.3 0.3 0.9 0.9; negatives 0.3 0.1 0.1 0.1 0.5: 0.3s beat 3
	// and tie 1 (3.5 each), 0.9s beat 5: 17/20.
	if got != want || want != 17.0/20 {
		t.Errorf("weighted AUC %v, expanded %v, want 0.85", got, want)
	}
}

// TestImpactRatioIntervals: every impact ratio gets a bootstrap interval that contains
// it, is deterministic per seed, is narrow for a large sample and wide for a small one,
// and covers 1 where the groups' true rates are equal.
func TestImpactRatioIntervals(t *testing.T) {
	build := func(n int) Input {
		in := Input{Scores: make([]float64, n), Labels: make([]float64, n), Groups: map[string][]string{"G": make([]string, n)}}
		for i := range n {
			in.Groups["G"][i] = []string{"a", "b"}[i%2]
			// Both groups: 30% selected (score 0.9), the rest 0.1; labels alternate.
			if (i/2)%10 < 3 {
				in.Scores[i] = 0.9
			} else {
				in.Scores[i] = 0.1 + float64(i%7)/100
			}
			in.Labels[i] = float64((i / 3) % 2)
		}
		return in
	}
	cfg := DefaultConfig()
	cfg.Sensitive = []string{"G"}
	width := func(n int) float64 {
		r, err := Evaluate(cfg, build(n))
		if err != nil {
			t.Fatal(err)
		}
		again, _ := Evaluate(cfg, build(n))
		var w float64
		for i, g := range r.Audit.Groups {
			ci := g.ImpactRatioCI95
			if g.ImpactRatio == nil || ci == nil || ci[0] > *g.ImpactRatio || ci[1] < *g.ImpactRatio {
				t.Fatalf("n=%d %s: ratio %v, ci %v", n, g.Category, g.ImpactRatio, ci)
			}
			if g.ScoreImpactRatioCI95 == nil || *again.Audit.Groups[i].ImpactRatioCI95 != *ci {
				t.Fatalf("n=%d %s: score ci %v, not deterministic", n, g.Category, g.ScoreImpactRatioCI95)
			}
			if ci[0] > 1 || ci[1] < 0.999 {
				t.Errorf("n=%d %s: equal true rates, but ci %v excludes 1", n, g.Category, ci)
			}
			w = max(w, ci[1]-ci[0])
		}
		return w
	}
	small, large := width(200), width(20000)
	if !(large < small/4) || large > 0.1 {
		t.Errorf("interval widths: %.3f at 200 rows, %.3f at 20000", small, large)
	}
	cfg.Resamples = 0
	r, err := Evaluate(cfg, build(200))
	if err != nil || r.Audit.Groups[0].ImpactRatioCI95 != nil {
		t.Errorf("no bootstrap: ci %v (%v)", r.Audit.Groups[0].ImpactRatioCI95, err)
	}
}
