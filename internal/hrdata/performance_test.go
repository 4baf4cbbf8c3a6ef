package hrdata

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/worker/data"
)

func generatePerformance(t testing.TB, cfg PerformanceConfig) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := GeneratePerformance(&buf, cfg); err != nil {
		t.Fatalf("GeneratePerformance(%+v): %v", cfg, err)
	}
	return buf.Bytes()
}

func TestPerformanceColumnsExact(t *testing.T) {
	want := "EmployeeID,Month,HoursWorked,OvertimeHours,ProjectsActive,TrainingHours,AbsenceDays,PeerFeedback,PerformanceScore"
	out := generatePerformance(t, PerformanceConfig{Employees: 1, Months: 1})
	if first, _, _ := strings.Cut(string(out), "\n"); first != want {
		t.Fatalf("header %q, want %q", first, want)
	}
}

func TestGeneratePerformanceConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  PerformanceConfig
		rows int    // data rows; -1 means an error
		want string // error substring
	}{
		{"defaults", PerformanceConfig{Seed: 1}, 200 * 48, ""},
		{"small", PerformanceConfig{Employees: 3, Months: 5}, 15, ""},
		{"negative employees", PerformanceConfig{Employees: -1}, -1, "Employees"},
		{"negative months", PerformanceConfig{Months: -2}, -1, "Months"},
		{"too many months", PerformanceConfig{Months: MaxPerformanceMonths + 1}, -1, "Months"},
		{"too many rows", PerformanceConfig{Employees: MaxPerformanceRows, Months: 2}, -1, "rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := GeneratePerformance(&buf, tt.cfg)
			if tt.rows < 0 {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error = %v, want one mentioning %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.Count(buf.Bytes(), []byte("\n")) - 1; got != tt.rows {
				t.Fatalf("%d data rows, want %d", got, tt.rows)
			}
		})
	}
}

func TestGeneratePerformanceWriterError(t *testing.T) {
	err := GeneratePerformance(failWriter{fmt.Errorf("disk full")}, PerformanceConfig{Employees: 2, Months: 3})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("error = %v, want the writer's", err)
	}
}

func TestGeneratePerformanceDeterministic(t *testing.T) {
	a := generatePerformance(t, PerformanceConfig{Employees: 30, Months: 24, Seed: 7})
	if !bytes.Equal(a, generatePerformance(t, PerformanceConfig{Employees: 30, Months: 24, Seed: 7})) {
		t.Fatal("same configuration gave different output")
	}
	if bytes.Equal(a, generatePerformance(t, PerformanceConfig{Employees: 30, Months: 24, Seed: 8})) {
		t.Fatal("different seeds gave identical output")
	}
	// More employees extend the table; more months extend each history.
	if !bytes.HasPrefix(generatePerformance(t, PerformanceConfig{Employees: 40, Months: 24, Seed: 7}), a) {
		t.Fatal("40 employees do not start with the 30 of the same seed")
	}
	long := parsePerformance(t, generatePerformance(t, PerformanceConfig{Employees: 30, Months: 36, Seed: 7}))
	short := parsePerformance(t, a)
	for i, row := range short {
		if want := long[(i/24)*36+i%24]; !slices.Equal(row, want) {
			t.Fatalf("row %d: %v with 24 months, %v with 36", i, row, want)
		}
	}
}

// TestPerformanceSampleFile keeps jobs/data/performance-sample.csv equal to what the
// generator produces with DefaultPerformanceConfig.
func TestPerformanceSampleFile(t *testing.T) {
	path := filepath.Join("..", "..", "jobs", "data", "performance-sample.csv")
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read sample: %v", err)
	}
	if got := generatePerformance(t, DefaultPerformanceConfig()); !bytes.Equal(got, want) {
		t.Fatalf("%s differs from GeneratePerformance(DefaultPerformanceConfig()); regenerate it", path)
	}
}

// parsePerformance returns the data rows, checking the header.
func parsePerformance(t *testing.T, out []byte) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("generated CSV does not parse: %v", err)
	}
	if !slices.Equal(recs[0], PerformanceColumns) {
		t.Fatalf("header %v, want %v", recs[0], PerformanceColumns)
	}
	return recs[1:]
}

func TestPerformanceValueRanges(t *testing.T) {
	const employees, months = 120, 48
	rows := parsePerformance(t, generatePerformance(t, PerformanceConfig{Employees: employees, Months: months, Seed: 3}))
	if len(rows) != employees*months {
		t.Fatalf("%d rows, want %d", len(rows), employees*months)
	}
	idRE := regexp.MustCompile(`^E\d{4}$`)
	ranges := []struct {
		col      int
		lo, hi   float64
		integral bool
	}{
		{2, 40, 260, false}, // HoursWorked
		{3, 0, 80, false},   // OvertimeHours
		{4, 1, 8, true},     // ProjectsActive
		{5, 0, 24, true},    // TrainingHours
		{6, 0, 15, true},    // AbsenceDays
		{7, 1, 5, true},     // PeerFeedback
		{8, 1, 5, false},    // PerformanceScore
	}
	sums := make([]float64, len(PerformanceColumns))
	feedback := map[string]bool{}
	for i, r := range rows {
		if want := fmt.Sprintf("E%04d", i/months+1); r[0] != want || !idRE.MatchString(r[0]) {
			t.Fatalf("row %d: EmployeeID %q, want %q", i, r[0], want)
		}
		if want := fmt.Sprintf("%04d-%02d", 2021+(i%months)/12, i%12+1); r[1] != want {
			t.Fatalf("row %d: Month %q, want %q", i, r[1], want)
		}
		for _, rg := range ranges {
			v, err := strconv.ParseFloat(r[rg.col], 64)
			if err != nil || v < rg.lo || v > rg.hi || (rg.integral && v != math.Trunc(v)) || math.Abs(math.Round(v*100)-v*100) > 1e-6 {
				t.Fatalf("row %d %s = %q, want a value in [%v, %v] (integral %v, <= 2 decimals)", i, PerformanceColumns[rg.col], r[rg.col], rg.lo, rg.hi, rg.integral)
			}
			sums[rg.col] += v
		}
		feedback[r[7]] = true
	}
	n := float64(len(rows))
	means := []struct {
		col    int
		lo, hi float64
	}{{2, 145, 175}, {3, 5, 16}, {5, 1, 6}, {6, 0.4, 1.5}, {8, 2.6, 3.4}}
	for _, m := range means {
		if v := sums[m.col] / n; v < m.lo || v > m.hi {
			t.Errorf("mean %s = %.3f, want in [%v, %v]", PerformanceColumns[m.col], v, m.lo, m.hi)
		}
	}
	if len(feedback) != 5 {
		t.Errorf("PeerFeedback takes %d distinct values, want all of 1..5", len(feedback))
	}
}

// TestPerformanceSeasonality checks the documented December dips in hours and Q4
// overtime peak.
func TestPerformanceSeasonality(t *testing.T) {
	rows := parsePerformance(t, generatePerformance(t, PerformanceConfig{Employees: 150, Months: 48, Seed: 5}))
	var hours, overtime [13]float64
	for _, r := range rows {
		c, _ := strconv.Atoi(r[1][5:])
		h, _ := strconv.ParseFloat(r[2], 64)
		o, _ := strconv.ParseFloat(r[3], 64)
		hours[c] += h
		overtime[c] += o
	}
	if hours[12] >= hours[6]-6*float64(len(rows))/12 {
		t.Errorf("December hours %.1f not clearly below June %.1f", hours[12], hours[6])
	}
	if overtime[11] <= overtime[5]+2*float64(len(rows))/12 {
		t.Errorf("November overtime %.1f not clearly above May %.1f", overtime[11], overtime[5])
	}
}

// TestPerformanceLearnableByLinearModel cuts the generated table into 12-month windows
// predicting the score 3 months ahead (through the sequence loader) and checks that a
// ridge regression on the flat window beats the seasonal-naive forecast on the
// validation period.
func TestPerformanceLearnableByLinearModel(t *testing.T) {
	out := generatePerformance(t, DefaultPerformanceConfig())
	tbl, err := data.ReadCSV(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	sd, err := data.LoadSequences(tbl, data.SequenceConfig{
		Lookback: 12, Horizon: 3, Target: "PerformanceScore", Group: "EmployeeID", Time: "Month",
		Task: data.TaskRegression, ValidationFraction: 0.25,
	}, "performance.csv")
	if err != nil {
		t.Fatal(err)
	}
	if sd.Train.Dim != 12*7 || sd.Validation.N == 0 || sd.SeasonalNaiveWindows != sd.Validation.N {
		t.Fatalf("train %d×%d, validation %d, seasonal naive over %d", sd.Train.N, sd.Train.Dim, sd.Validation.N, sd.SeasonalNaiveWindows)
	}
	w := ridge(sd.Train, 1)
	var mse, meanMSE float64
	for i := range sd.Validation.N {
		x := sd.Validation.X[i*sd.Train.Dim : (i+1)*sd.Train.Dim]
		pred := sd.Scaler.Unscale(dot(w, x))
		truth := sd.Scaler.Unscale(float64(sd.Validation.Y[i]))
		mse += (pred - truth) * (pred - truth)
		meanMSE += (sd.Scaler.TargetMean - truth) * (sd.Scaler.TargetMean - truth)
	}
	rmse := math.Sqrt(mse / float64(sd.Validation.N))
	meanRMSE := math.Sqrt(meanMSE / float64(sd.Validation.N))
	t.Logf("validation RMSE: linear %.4f, seasonal naive %.4f, training mean %.4f (train until %s)", rmse, sd.SeasonalNaiveRMSE, meanRMSE, sd.TrainEnd)
	if rmse > 0.8*sd.SeasonalNaiveRMSE {
		t.Fatalf("linear RMSE %.4f, want below 80%% of the seasonal naive %.4f", rmse, sd.SeasonalNaiveRMSE)
	}
	if rmse > 0.6*meanRMSE {
		t.Fatalf("linear RMSE %.4f, want below 60%% of predicting the mean (%.4f)", rmse, meanRMSE)
	}
}

// ridge fits y ≈ w·[x, 1] by the normal equations with an L2 penalty lambda (not on
// the intercept), solved by Gaussian elimination.
func ridge(d *data.Dataset, lambda float64) []float64 {
	k := d.Dim + 1
	a := make([][]float64, k)
	for i := range a {
		a[i] = make([]float64, k+1)
	}
	row := make([]float64, k)
	for n := range d.N {
		for j := range d.Dim {
			row[j] = float64(d.X[n*d.Dim+j])
		}
		row[d.Dim] = 1
		y := float64(d.Y[n])
		for i := range k {
			for j := range k {
				a[i][j] += row[i] * row[j]
			}
			a[i][k] += row[i] * y
		}
	}
	for i := range d.Dim {
		a[i][i] += lambda
	}
	for c := range k {
		p := c
		for r := c + 1; r < k; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		a[c], a[p] = a[p], a[c]
		for r := range k {
			if r == c || a[c][c] == 0 {
				continue
			}
			f := a[r][c] / a[c][c]
			for j := c; j <= k; j++ {
				a[r][j] -= f * a[c][j]
			}
		}
	}
	w := make([]float64, k)
	for i := range k {
		if a[i][i] != 0 {
			w[i] = a[i][k] / a[i][i]
		}
	}
	return w
}

// dot is w·[x, 1].
func dot(w []float64, x []float32) float64 {
	s := w[len(x)]
	for j, v := range x {
		s += w[j] * float64(v)
	}
	return s
}
