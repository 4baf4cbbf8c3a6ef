package metrics

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/internal/testenv"
)

// sklearnScript computes, for the rows "label,score" of argv[1] and the regression
// rows "target,pred" of argv[2], the thresholds each objective picks from sklearn's own
// curves and the figures at them, and the regression metrics.
const sklearnScript = `
import json, sys
import numpy as np
from sklearn.metrics import (precision_recall_curve, roc_curve, f1_score, precision_score,
    recall_score, mean_absolute_error, mean_squared_error, r2_score, mean_absolute_percentage_error)
d = np.loadtxt(sys.argv[1], delimiter=",")
y, p = d[:, 0].astype(int), d[:, 1]
prec, rec, thr = precision_recall_curve(y, p)
prec, rec = prec[:-1], rec[:-1]   # the last point has no threshold
f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0)
def pick(values, thresholds):
    best = values.max()
    # ties (equal up to rounding) go to the highest threshold, as FitThreshold does
    return float(thresholds[np.isclose(values, best, rtol=1e-12, atol=0)].max()), float(best)
out = {}
out["f1"] = pick(f1, thr)
fpr, tpr, rthr = roc_curve(y, p, drop_intermediate=False)
finite = np.isfinite(rthr)
out["youden"] = pick((tpr - fpr)[finite], rthr[finite])
ok = rec >= 0.8
out["precisionAtRecall"] = pick(prec[ok], thr[ok])
at = {}
for k, (t, _) in out.items():
    pred = (p >= t).astype(int)
    at[k] = [precision_score(y, pred), recall_score(y, pred), f1_score(y, pred)]
r = np.loadtxt(sys.argv[2], delimiter=",")
yt, yp = r[:, 0], r[:, 1]
nz = yt != 0
print(json.dumps({"fit": out, "at": at,
    "mae": mean_absolute_error(yt, yp), "rmse": float(np.sqrt(mean_squared_error(yt, yp))),
    "r2": r2_score(yt, yp), "mape": 100 * mean_absolute_percentage_error(yt[nz], yp[nz]),
    "excluded": int((~nz).sum())}))
`

// TestAgainstSklearn checks FitThreshold (every objective), the precision, recall and F1
// at the fitted threshold, and MAE, RMSE, R² and MAPE (rows with a zero target left out)
// against sklearn on random scores with ties and random regression rows with zeros.
func TestAgainstSklearn(t *testing.T) {
	py, info := testenv.Python(t, "sklearn", "python3-sklearn", "COHORT_REQUIRE_SKLEARN")
	t.Logf("python %s, sklearn %s", py, info)
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			n := 200 + int(seed)*97
			probs, labels := make([]float32, n), make([]float32, n)
			var cls strings.Builder
			for i := range n {
				if rng.Float64() < 0.3 {
					labels[i] = 1
				}
				// Scores on a grid of 50 values (ties), higher for positives.
				s := 0.35*float64(labels[i]) + 0.65*rng.Float64()
				probs[i] = float32(math.Round(s*50) / 50)
				fmt.Fprintf(&cls, "%g,%.9g\n", labels[i], probs[i])
			}
			pred, target := make([]float32, n), make([]float32, n)
			var reg strings.Builder
			for i := range n {
				target[i] = float32(math.Round(rng.NormFloat64() * 3)) // some zeros
				pred[i] = target[i] + float32(rng.NormFloat64())
				fmt.Fprintf(&reg, "%.9g,%.9g\n", target[i], pred[i])
			}
			dir := t.TempDir()
			cf, rf := filepath.Join(dir, "cls.csv"), filepath.Join(dir, "reg.csv")
			if err := os.WriteFile(cf, []byte(cls.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(rf, []byte(reg.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(py, "-c", sklearnScript, cf, rf).Output()
			if err != nil {
				t.Fatalf("python: %v", err)
			}
			var want struct {
				Fit      map[string][2]float64 `json:"fit"`
				At       map[string][3]float64 `json:"at"`
				MAE      float64               `json:"mae"`
				RMSE     float64               `json:"rmse"`
				R2       float64               `json:"r2"`
				MAPE     float64               `json:"mape"`
				Excluded int                   `json:"excluded"`
			}
			if err := json.Unmarshal(out, &want); err != nil {
				t.Fatalf("python output %q: %v", out, err)
			}
			for _, obj := range []string{ObjectiveF1, ObjectiveYouden, ObjectivePrecisionAtRecall} {
				thr, v, err := FitThreshold(probs, labels, obj, 0.8)
				if err != nil {
					t.Fatalf("%s: %v", obj, err)
				}
				w := want.Fit[obj]
				if math.Abs(thr-w[0]) > 1e-6 || math.Abs(v-w[1]) > 1e-9 {
					t.Errorf("%s: threshold %v value %v, sklearn %v %v", obj, thr, v, w[0], w[1])
				}
				c := ConfusionAt(probs, labels, thr)
				got := [3]float64{c.Precision(), c.Recall(), c.F1()}
				for k := range got {
					if math.Abs(got[k]-want.At[obj][k]) > 1e-9 {
						t.Errorf("%s: precision/recall/F1 %v, sklearn %v", obj, got, want.At[obj])
						break
					}
				}
			}
			mape, excluded := MAPEExcluded(pred, target)
			for _, c := range []struct {
				name      string
				got, want float64
			}{{"mae", MAE(pred, target), want.MAE}, {"rmse", RMSE(pred, target), want.RMSE},
				{"r2", R2(pred, target), want.R2}, {"mape", mape, want.MAPE}, {"excluded", float64(excluded), float64(want.Excluded)}} {
				if math.Abs(c.got-c.want) > 1e-6*math.Max(1, math.Abs(c.want)) {
					t.Errorf("%s = %v, sklearn %v", c.name, c.got, c.want)
				}
			}
			if want.Excluded == 0 {
				t.Fatal("the regression rows have no zero target; the exclusion is untested")
			}
		})
	}
}

// TestFitThresholdOneClass: a single class has no threshold to fit.
func TestFitThresholdOneClass(t *testing.T) {
	_, _, err := FitThreshold([]float32{0.2, 0.9}, []float32{1, 1}, ObjectiveF1, 0)
	if err == nil || !strings.Contains(err.Error(), "one class") {
		t.Fatalf("err = %v, want one class", err)
	}
	if v := R2([]float32{1, 2}, []float32{3, 3}); !math.IsNaN(v) {
		t.Fatalf("R2 of a constant target = %v, want NaN", v)
	}
}
