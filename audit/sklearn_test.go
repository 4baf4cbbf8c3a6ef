package audit

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/internal/testenv"
)

// sklearnScript computes the reference figures of the rows in the CSV file argv[1].
const sklearnScript = `
import json, sys
import numpy as np
from sklearn.metrics import roc_auc_score, confusion_matrix
from sklearn.calibration import calibration_curve
d = np.loadtxt(sys.argv[1], delimiter=",")
y, p = d[:, 0].astype(int), d[:, 1]
prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
print(json.dumps({
    "auc": float(roc_auc_score(y, p)),
    "prob_true": [float(v) for v in prob_true],
    "prob_pred": [float(v) for v in prob_pred],
    "confusion": confusion_matrix(y, (p >= 0.5).astype(int), labels=[0, 1]).tolist(),
}))
`

// TestAgainstSklearn compares Evaluate's AUC, calibration and confusion matrix with
// sklearn's roc_auc_score, calibration_curve and confusion_matrix on random scores with
// many ties. It skips (with the reason) when no python imports sklearn, unless
// COHORT_REQUIRE_SKLEARN=1, when it fails.
//
// calibration_curve drops empty bins, so only Evaluate's non-empty bins are compared;
// and it puts a score equal to an inner edge in the bin below ((lower, upper]) where
// Evaluate's bins are [lower, upper), so the scores avoid the edges (they are
// (k+0.5)/40, never a multiple of 0.1).
func TestAgainstSklearn(t *testing.T) {
	py, info := testenv.Python(t, "sklearn", "python3-sklearn", "COHORT_REQUIRE_SKLEARN")
	t.Logf("python %s, sklearn %s", py, info)
	for _, c := range []struct {
		name string
		n    int
		seed uint64
	}{{"300 rows", 300, 11}, {"500 rows", 500, 12}, {"40 rows", 40, 13}} {
		t.Run(c.name, func(t *testing.T) {
			scores, labels := randomBinary(c.n, c.seed)
			var csv strings.Builder
			for i := range scores {
				fmt.Fprintf(&csv, "%g,%.17g\n", labels[i], scores[i])
			}
			file := filepath.Join(t.TempDir(), "rows.csv")
			if err := os.WriteFile(file, []byte(csv.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(py, "-c", sklearnScript, file).Output()
			if err != nil {
				t.Fatalf("python: %v", err)
			}
			var want struct {
				AUC       float64   `json:"auc"`
				ProbTrue  []float64 `json:"prob_true"`
				ProbPred  []float64 `json:"prob_pred"`
				Confusion [][]int   `json:"confusion"`
			}
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatalf("python output %q: %v", out, err)
			}
			cfg := DefaultConfig()
			cfg.Resamples = 0
			rep, err := Evaluate(cfg, Input{Scores: scores, Labels: labels})
			if err != nil {
				t.Fatal(err)
			}
			if got := rep.Metrics["val_auc"].Value; math.Abs(got-want.AUC) > 1e-12 {
				t.Errorf("AUC %.17g, sklearn %.17g", got, want.AUC)
			}
			var gotTrue, gotPred []float64
			for _, b := range rep.Calibration.Bins {
				if b.Count > 0 {
					gotTrue = append(gotTrue, *b.FractionPositive)
					gotPred = append(gotPred, *b.MeanPredicted)
				}
			}
			near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12 }
			if !slices.EqualFunc(gotTrue, want.ProbTrue, near) || !slices.EqualFunc(gotPred, want.ProbPred, near) {
				t.Errorf("calibration: fraction_positive %v mean_predicted %v,\nsklearn prob_true %v prob_pred %v",
					gotTrue, gotPred, want.ProbTrue, want.ProbPred)
			}
			if !slices.EqualFunc(rep.Confusion.Matrix, want.Confusion, slices.Equal) {
				t.Errorf("confusion %v, sklearn %v", rep.Confusion.Matrix, want.Confusion)
			}
		})
	}
}
