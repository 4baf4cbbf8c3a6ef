package data

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// monthlyCSV is one series of n months from 2020-01 with y = 10·t + (month of year)²,
// so that y_t - y_{t-12} = 120 exactly.
func monthlyCSV(n int) string {
	var b strings.Builder
	b.WriteString("Month,y\n")
	for t := range n {
		fmt.Fprintf(&b, "%d-%02d,%d\n", 2020+t/12, t%12+1, 10*t+(t%12)*(t%12))
	}
	return b.String()
}

// TestSeasonalNaiveBaseline: with baseline seasonalNaive the windows without a value a
// period earlier are left out and counted, Y is the scaled residual over the naive
// forecast (here the constant 120, so every residual scales to 0 with std 1), Naive is
// the value a period before the target, and the scaler records the rule.
func TestSeasonalNaiveBaseline(t *testing.T) {
	tbl := mustTable(t, monthlyCSV(40))
	cfg := SequenceConfig{Lookback: 3, Horizon: 1, Target: "y", Features: []string{"y"}, Time: "Month", Task: TaskRegression,
		ValidationFraction: 0.25, Baseline: BaselineSeasonalNaive, Period: 12}
	sd := mustLoad(t, tbl, cfg)
	// Windows end at rows 2..38 (37); the target row end+1 needs end+1-12 >= 0: ends 11..38.
	if sd.SkippedNoNaive != 9 || sd.Train.N+sd.Validation.N != 28 {
		t.Fatalf("skipped %d, windows %d+%d; want 9 and 28", sd.SkippedNoNaive, sd.Train.N, sd.Validation.N)
	}
	if sd.Scaler.TargetMean != 120 || sd.Scaler.TargetStd != 1 || sd.Scaler.Baseline != BaselineSeasonalNaive || sd.Scaler.Period != 12 {
		t.Fatalf("scaler %+v", sd.Scaler)
	}
	for _, ds := range []*Dataset{sd.Train, sd.Validation} {
		if !ds.Residual || len(ds.Naive) != ds.N {
			t.Fatalf("residual %v, %d naive values for %d rows", ds.Residual, len(ds.Naive), ds.N)
		}
		for i := range ds.N {
			if ds.Y[i] != 0 {
				t.Fatalf("row %d: Y %v, want the residual 120 scaled to 0", i, ds.Y[i])
			}
		}
	}
	// The first training window ends at row 11 and predicts row 12; its naive value
	// is row 0's y = 0, the last validation window's row 27's: 270 + 9 = 279.
	if sd.Train.Naive[0] != 0 || sd.Validation.Naive[sd.Validation.N-1] != 279 {
		t.Fatalf("naive %v ... %v, want 0 ... 279", sd.Train.Naive[0], sd.Validation.Naive[sd.Validation.N-1])
	}
	if step, f, ok := sd.Scaler.NaiveStep(); ok || f != 0 || step != 3-1+1-12 {
		t.Fatalf("NaiveStep %d %d %v: the window of 3 does not hold the value 12 months back", step, f, ok)
	}
	long := cfg
	long.Lookback = 12
	if step, _, ok := mustLoad(t, tbl, long).Scaler.NaiveStep(); !ok || step != 0 {
		t.Fatalf("NaiveStep %d %v, want step 0 of a 12-month window", step, ok)
	}
	// Without the baseline every window is kept and Y is the plain target.
	plain := cfg
	plain.Baseline = ""
	pd := mustLoad(t, tbl, plain)
	if pd.SkippedNoNaive != 0 || pd.Train.N+pd.Validation.N != 37 || pd.Train.Residual || !math.IsNaN(pd.Train.Naive[0]) {
		t.Fatalf("plain: skipped %d, %d windows, residual %v, first naive %v", pd.SkippedNoNaive, pd.Train.N+pd.Validation.N, pd.Train.Residual, pd.Train.Naive[0])
	}
}

// TestCalendarFeatures: calendar [month, week] adds sin and cos of each to every step,
// after the features; a time column that is not a date is an error naming the field.
func TestCalendarFeatures(t *testing.T) {
	tbl := mustTable(t, monthlyCSV(30))
	cfg := SequenceConfig{Lookback: 2, Horizon: 1, Target: "y", Features: []string{"y"}, Time: "Month", Task: TaskRegression,
		Calendar: []string{CalendarMonth, CalendarWeek}}
	sd := mustLoad(t, tbl, cfg)
	if sd.Train.Dim != 2*5 || sd.Scaler.StepWidth() != 5 {
		t.Fatalf("dim %d, step width %d; want 10 and 5", sd.Train.Dim, sd.Scaler.StepWidth())
	}
	// Window 0 reads rows 0 (2020-01-01, ISO week 1) and 1 (2020-02-01, ISO week 5).
	x := sd.Train.X[:10]
	want := []float64{math.Sin(0), math.Cos(0), math.Sin(0), math.Cos(0),
		math.Sin(2 * math.Pi / 12), math.Cos(2 * math.Pi / 12), math.Sin(2 * math.Pi * 4 / 53), math.Cos(2 * math.Pi * 4 / 53)}
	got := []float32{x[1], x[2], x[3], x[4], x[6], x[7], x[8], x[9]}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-6 {
			t.Fatalf("calendar values %v, want %v", got, want)
		}
	}
	bad := mustTable(t, "Month,y\n1,1\n2,2\n3,3\n4,4\n")
	_, err := LoadSequences(bad, cfg, "bad.csv")
	if err == nil || !strings.Contains(err.Error(), "sequence_csv.calendar needs dates") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err = %v", err)
	}
	cfg.Calendar = []string{"day"}
	if _, err := LoadSequences(tbl, cfg, "x.csv"); err == nil || !strings.Contains(err.Error(), "sequence_csv.calendar[0]") {
		t.Fatalf("err = %v", err)
	}
}
