package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/internal/hrdata"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/serve"
	"github.com/cohort-dev/cohort/storage"
)

// finiteMetrics fails on a metric that is not finite and checks that the result line
// marshals (NaN does not).
func finiteMetrics(t *testing.T, job *cohortv1.Job) map[string]float64 {
	t.Helper()
	m := job.GetMetrics()
	for k, v := range m {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("metric %s = %v", k, v)
		}
	}
	if _, err := json.Marshal(resultOf(job)); err != nil {
		t.Fatalf("result line: %v", err)
	}
	return m
}

// forecastSpec is the hiring-forecast example on the series at csv with the
// replacements applied (pairs of old, new).
func forecastSpec(t *testing.T, csv string, replacements ...string) []byte {
	t.Helper()
	raw, err := os.ReadFile(repoPath(t, "jobs/examples/hiring-forecast-lstm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(raw), "file://jobs/data/hiring-seasonal.csv", "file://"+csv, 1)
	for i := 0; i+1 < len(replacements); i += 2 {
		if !strings.Contains(s, replacements[i]) {
			t.Fatalf("example spec has no %q", replacements[i])
		}
		s = strings.Replace(s, replacements[i], replacements[i+1], 1)
	}
	return []byte(s)
}

// TestDevForecastBeatsSeasonalNaive generates a monthly series with a strong yearly
// season and a trend (seeded), trains the hiring-forecast example on it (the residual
// over seasonal naive, with the month as a calendar feature) on the embedded cluster,
// and requires the LSTM's validation RMSE to beat the seasonal-naive forecast's:
// val_skill_seasonal_naive > 0, equal to 1 - val_rmse / val_rmse_seasonal_naive (every
// window has a naive value under the baseline, so both cover the same rows). It also
// reports MAE, MAPE (no zero targets here: 0 rows excluded) and R² and the naive MAE,
// and the same on a test series of the same process (another seed), where it must
// beat seasonal naive too.
func TestDevForecastBeatsSeasonalNaive(t *testing.T) {
	t.Parallel() // independent: its own cluster, free ports, temporary directories
	dir := t.TempDir()
	series := func(name string, seed int64) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := hrdata.GenerateSeasonal(f, hrdata.SeasonalConfig{Months: 144, Seed: seed}); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	csv, test := series("series.csv", 11), series("test.csv", 12)
	job, _ := runJob(t, forecastSpec(t, csv, "validation: {fraction: 0.2}", "validation: {fraction: 0.2}\n    test: file://"+test), 1, 1)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	m := finiteMetrics(t, job)
	for _, split := range []string{"val_", "test_"} {
		for _, k := range []string{"rmse", "mae", "mape", "r2", "mape_excluded_rows", "rmse_seasonal_naive", "mae_seasonal_naive", "skill_seasonal_naive"} {
			if _, ok := m[split+k]; !ok {
				t.Fatalf("metric %s missing: %v", split+k, m)
			}
		}
	}
	if !(m["test_skill_seasonal_naive"] > 0) {
		t.Errorf("test_skill_seasonal_naive %v: the model does not beat seasonal naive on another series of the same process", m["test_skill_seasonal_naive"])
	}
	skill := m["val_skill_seasonal_naive"]
	if want := 1 - m["val_rmse"]/m["val_rmse_seasonal_naive"]; math.Abs(skill-want) > 1e-9 {
		t.Errorf("skill %v, want 1 - rmse/naive rmse = %v", skill, want)
	}
	if !(skill > 0) || m["val_rmse"] >= m["val_rmse_seasonal_naive"] {
		t.Errorf("val_rmse %.3f does not beat the seasonal-naive forecast's %.3f (skill %.3f)", m["val_rmse"], m["val_rmse_seasonal_naive"], skill)
	}
	if m["val_mape_excluded_rows"] != 0 || !(m["val_r2"] > 0.5) {
		t.Errorf("mape excluded %v rows, r2 %v", m["val_mape_excluded_rows"], m["val_r2"])
	}
	t.Logf("val_rmse %.3f, seasonal naive %.3f, skill %.3f, val_mae %.3f (naive %.3f), val_r2 %.3f; test skill %.3f",
		m["val_rmse"], m["val_rmse_seasonal_naive"], skill, m["val_mae"], m["val_mae_seasonal_naive"], m["val_r2"], m["test_skill_seasonal_naive"])
	servedForecastRMSE(t, job, csv, m["val_rmse"])
}

// servedForecastRMSE serves the job's export (cohort serve's model: raw Headcount
// windows and their Month dates in, the forecast in target units out, the
// seasonal-naive value added back) on the validation windows it rebuilds from the CSV
// (the windows whose predicted month is among the last 20% of months, as the
// example's validation fraction says) and requires their RMSE to equal the val_rmse
// the workers reported, up to float32 rounding.
func servedForecastRMSE(t *testing.T, job *cohortv1.Job, csvPath string, valRMSE float64) {
	t.Helper()
	var prefix string
	for _, u := range job.GetExports() {
		if strings.HasSuffix(u, "/"+export.SafetensorsFile) {
			prefix = strings.TrimSuffix(u, export.SafetensorsFile)
		}
	}
	m, err := serve.Load(context.Background(), prefix, storage.S3Config{})
	if err != nil {
		t.Fatalf("serve.Load(%s): %v", prefix, err)
	}
	f, err := os.Open(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	rows = rows[1:] // Month,Headcount, one row per month in order
	const lookback = 12
	nt := len(rows)
	cut := nt - int(math.Round(0.2*float64(nt)))
	var months []string
	var counts, want []float64
	n := 0
	for p := cut; p < nt; p++ {
		for step := p - lookback; step < p; step++ {
			months = append(months, rows[step][0])
			v, err := strconv.ParseFloat(rows[step][1], 64)
			if err != nil {
				t.Fatal(err)
			}
			counts = append(counts, v)
		}
		y, err := strconv.ParseFloat(rows[p][1], 64)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, y)
		n++
	}
	if names := m.Metadata().Inputs; len(names) != 2 || names[0].Name != "Headcount" || names[1].Name != "Month" || names[1].Datatype != serve.TypeBytes {
		t.Fatalf("served inputs %+v, want Headcount and the Month dates", names)
	}
	outs, _, err := m.Infer([]serve.Tensor{
		{Name: "Headcount", Shape: []int{n, lookback}, Datatype: serve.TypeFP64, Numbers: counts},
		{Name: "Month", Shape: []int{n, lookback}, Datatype: serve.TypeBytes, Strings: months},
	}, nil, n)
	if err != nil {
		t.Fatalf("infer: %v", err)
	}
	pred := outs[0].Data.([]float64)
	var ss float64
	for i, y := range want {
		ss += (pred[i] - y) * (pred[i] - y)
	}
	rmse := math.Sqrt(ss / float64(n))
	if math.Abs(rmse-valRMSE) > 1e-4*valRMSE {
		t.Fatalf("served forecasts' RMSE on the %d validation windows is %.6f, the workers reported val_rmse %.6f", n, rmse, valRMSE)
	}
	// A missing value where the naive forecast comes from is refused, naming it.
	counts[0] = math.NaN()
	strs := make([]string, len(counts))
	for i, v := range counts {
		strs[i] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	strs[0] = ""
	if _, _, err := m.Infer([]serve.Tensor{
		{Name: "Headcount", Shape: []int{n, lookback}, Datatype: serve.TypeBytes, Strings: strs},
		{Name: "Month", Shape: []int{n, lookback}, Datatype: serve.TypeBytes, Strings: months},
	}, nil, n); err == nil || !strings.Contains(err.Error(), "seasonal-naive") {
		t.Fatalf("a missing naive value: %v", err)
	}
}

// TestDevUnivariateShapes trains a univariate LSTM (features: [Headcount], which could
// not build before), one hidden unit, a batch size whose last batch per epoch holds one
// row, on two workers, with no baseline: it succeeds with finite metrics, and the
// seasonal-naive metrics cover the windows that have a value a year earlier.
func TestDevUnivariateShapes(t *testing.T) {
	t.Parallel() // independent: its own cluster, free ports, temporary directories
	// 144 months, lookback 12, horizon 1: 132 windows, the last 29 months validation,
	// 103 training windows = 2 workers × 3 batches of 17 rows + 1 + 1.
	job, _ := runJob(t, forecastSpec(t, repoPath(t, "jobs/data/hiring-seasonal.csv"),
		"      baseline: seasonalNaive       # predict y - y[t-period]\n", "",
		"      calendar: [month]             # sin/cos of the month, added to every step\n", "",
		"lstm: {hidden: [16]}", "lstm: {hidden: [1]}", "epochs: 60", "epochs: 3", "batchSize: 16", "batchSize: 17",
		"workers: {count: 1", "workers: {count: 2"), 2, 1)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	m := finiteMetrics(t, job)
	for _, k := range []string{"val_rmse", "val_r2", "val_rmse_seasonal_naive", "val_skill_seasonal_naive"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("metric %s missing: %v", k, m)
		}
	}
}

// TestDevThresholdAndClassWeights trains the attrition example for 3 epochs with
// classWeights: balanced and export.threshold {optimize: f1}: the fitted threshold is
// in the metrics, the export's metadata and the report's confusion matrix (the audit
// uses it), and the precision, recall and F1 reported at it agree with that confusion
// matrix (the report evaluates the same validation split).
func TestDevThresholdAndClassWeights(t *testing.T) {
	t.Parallel() // independent: its own cluster, free ports, temporary directories
	spec := exampleSpec(t, "epochs: 30", "epochs: 3",
		"    seed: 42\n  resources:", "    seed: 42\n    classWeights: balanced\n  resources:",
		"    threshold: 0.5                  # P(Yes) at which an employee is flagged\n", "",
		"export: {formats: [onnx, safetensors]}", "export: {formats: [onnx, safetensors], threshold: {optimize: f1}}")
	job, c := runJob(t, spec, 2, 2)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	m := finiteMetrics(t, job)
	th, ok := m["threshold"]
	if !ok || !(th > 0 && th < 1) {
		t.Fatalf("threshold %v in %v", th, m)
	}
	var safetensors string
	for _, u := range job.GetExports() {
		if strings.HasSuffix(u, export.SafetensorsFile) {
			safetensors = u
		}
	}
	_, meta := readExport(t, c, safetensors)
	if got, err := strconv.ParseFloat(meta[export.MetaThreshold], 64); err != nil || got != th || meta["cohort.threshold_objective"] != "f1" {
		t.Fatalf("export metadata threshold %q (%s), metrics %v", meta[export.MetaThreshold], meta["cohort.threshold_objective"], th)
	}
	// `cohort export` of the job's exported checkpoint keeps the threshold.
	dir := filepath.Join(t.TempDir(), "out")
	if _, err := runCLI(t, "--address", c.GRPCAddr, "export", job.GetId(), "--format", "safetensors", "--out", dir); err != nil {
		t.Fatalf("export: %v", err)
	}
	rf, err := os.Open(filepath.Join(dir, export.SafetensorsFile))
	if err != nil {
		t.Fatal(err)
	}
	_, meta2, err := export.ReadSafetensors(rf)
	rf.Close()
	if err != nil || meta2[export.MetaThreshold] != meta[export.MetaThreshold] {
		t.Fatalf("re-export metadata threshold %q (%v), want %q", meta2[export.MetaThreshold], err, meta[export.MetaThreshold])
	}
	rep := readReport(t, c, job)
	if rep.Confusion == nil || rep.Confusion.Threshold == nil || *rep.Confusion.Threshold != th {
		t.Fatalf("report confusion %+v, want threshold %v", rep.Confusion, th)
	}
	cm := rep.Confusion.Matrix // [true][predicted], classes No, Yes
	tp, fp, fn := float64(cm[1][1]), float64(cm[0][1]), float64(cm[1][0])
	for k, want := range map[string]float64{"val_precision": tp / (tp + fp), "val_recall": tp / (tp + fn), "val_f1": 2 * tp / (2*tp + fp + fn)} {
		if math.Abs(m[k]-want) > 1e-12 {
			t.Errorf("%s = %v, the report's confusion matrix %v gives %v", k, m[k], cm, want)
		}
	}
}

// TestDevOneClassValidation: a validation file holding one class leaves val_auc (and
// recall, F1) out of the metrics, says why in the final report, and never writes NaN;
// the job (whose checkpoints are scored by val_auc, the default) still succeeds and
// exports.
func TestDevOneClassValidation(t *testing.T) {
	t.Parallel() // independent: its own cluster, free ports, temporary directories
	raw, err := os.ReadFile(repoPath(t, "jobs/data/attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	col := -1
	for i, name := range strings.Split(lines[0], ",") {
		if name == "Attrition" {
			col = i
		}
	}
	var train, val []string
	for i, l := range lines[1:] {
		if i%5 == 0 && strings.Split(l, ",")[col] == "No" {
			val = append(val, l)
		} else {
			train = append(train, l)
		}
	}
	dir := t.TempDir()
	write := func(name string, rows []string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(lines[0]+"\n"+strings.Join(rows, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	spec := exampleSpec(t, "epochs: 30", "epochs: 2",
		"file://"+repoPath(t, "jobs/data/attrition-sample.csv"), "file://"+write("train.csv", train),
		"validation: {fraction: 0.2, seed: 42, stratify: true}", "validation: {uri: file://"+write("val.csv", val)+"}")
	job, _ := runJob(t, spec, 1, 1)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	m := finiteMetrics(t, job)
	if _, ok := m["val_auc"]; ok {
		t.Fatalf("val_auc %v reported on a one-class validation split", m["val_auc"])
	}
	if _, ok := m["val_accuracy"]; !ok {
		t.Fatalf("val_accuracy missing: %v", m)
	}
	if len(job.GetExports()) == 0 {
		t.Fatal("no exports")
	}
}
