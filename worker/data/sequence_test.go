package data

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// seriesCSV writes groups × months rows (groups interleaved, months in reverse file
// order) with x = 10·group + month, z = month², y = month + 100·group.
func seriesCSV(groups, months int) string {
	var b strings.Builder
	b.WriteString("id,month,x,dept,z,y\n")
	for m := months - 1; m >= 0; m-- {
		for g := range groups {
			fmt.Fprintf(&b, "G%d,2024-%02d,%d,d%d,%d,%d\n", g, m+1, 10*g+m, g, m*m, m+100*g)
		}
	}
	return b.String()
}

func seqConfig() SequenceConfig {
	return SequenceConfig{Lookback: 3, Horizon: 2, Target: "y", Features: []string{"x", "z"}, Group: "id", Time: "month", Task: TaskRegression}
}

func mustLoad(t testing.TB, tbl *Table, cfg SequenceConfig) *SequenceData {
	t.Helper()
	sd, err := LoadSequences(tbl, cfg, "test.csv")
	if err != nil {
		t.Fatalf("LoadSequences: %v", err)
	}
	return sd
}

func TestLoadSequencesWindows(t *testing.T) {
	tbl := mustTable(t, seriesCSV(2, 8))
	sd := mustLoad(t, tbl, seqConfig())
	s := sd.Scaler
	// 8 months, lookback 3, horizon 2: windows end at months 2..5, 4 per group.
	if sd.Train.N != 8 || sd.Train.Dim != 6 || sd.Validation.N != 0 {
		t.Fatalf("train %d×%d, validation %d; want 8×6 and 0", sd.Train.N, sd.Train.Dim, sd.Validation.N)
	}
	if sd.TrainEnd != "2024-08" {
		t.Errorf("TrainEnd %q, want 2024-08", sd.TrainEnd)
	}
	// Group G0 (first in the file) comes first; its first window reads months 0, 1, 2
	// and targets month 4.
	for i := range sd.Train.N {
		g, end := i/4, i%4+2
		for step := range 3 {
			m := end - 2 + step
			wantX := (float64(10*g+m) - s.Mean[0]) / s.Std[0]
			wantZ := (float64(m*m) - s.Mean[1]) / s.Std[1]
			gotX, gotZ := sd.Train.X[i*6+step*2], sd.Train.X[i*6+step*2+1]
			if math.Abs(float64(gotX)-wantX) > 1e-6 || math.Abs(float64(gotZ)-wantZ) > 1e-6 {
				t.Fatalf("window %d step %d: x %v z %v, want %v %v", i, step, gotX, gotZ, wantX, wantZ)
			}
		}
		wantY := float64(end + 2 + 100*g)
		if got := s.Unscale(float64(sd.Train.Y[i])); math.Abs(got-wantY) > 1e-4 {
			t.Fatalf("window %d: target %v, want %v", i, got, wantY)
		}
	}
	// The statistics come from the rows the windows read: months 0..5 of both groups.
	var xs []float64
	for g := range 2 {
		for m := range 6 {
			xs = append(xs, float64(10*g+m))
		}
	}
	if mean, std := meanStd(xs); math.Abs(s.Mean[0]-mean) > 1e-12 || math.Abs(s.Std[0]-std) > 1e-12 {
		t.Errorf("x mean/std %v/%v, want %v/%v", s.Mean[0], s.Std[0], mean, std)
	}
}

func TestLoadSequencesTimeSplit(t *testing.T) {
	tbl := mustTable(t, seriesCSV(3, 20))
	cfg := seqConfig()
	cfg.ValidationFraction = 0.25 // the last 5 of 20 months: 2024-16 .. 2024-20
	sd := mustLoad(t, tbl, cfg)
	if sd.TrainEnd != "2024-15" {
		t.Fatalf("TrainEnd %q, want 2024-15", sd.TrainEnd)
	}
	// Windows end at months 2..17 (target 4..19); targets at months 15..19 (0-based)
	// are validation: 5 per group; 11 per group train.
	if sd.Train.N != 33 || sd.Validation.N != 15 {
		t.Fatalf("train %d, validation %d; want 33 and 15", sd.Train.N, sd.Validation.N)
	}
	s := sd.Scaler
	for i := range sd.Train.N {
		month := math.Mod(math.Round(s.Unscale(float64(sd.Train.Y[i]))), 100)
		if month >= 15 {
			t.Fatalf("training window %d targets month %v, inside the validation period", i, month)
		}
	}
	for i := range sd.Validation.N {
		month := math.Mod(math.Round(s.Unscale(float64(sd.Validation.Y[i]))), 100)
		if month < 15 {
			t.Fatalf("validation window %d targets month %v, before the validation period", i, month)
		}
	}
	// Scaling sees no validation value: changing the validation period's values leaves
	// the statistics alone.
	for _, row := range tbl.Rows {
		if row[1] >= "2024-16" {
			row[2], row[4], row[5] = "1e6", "-1e6", "1e6"
		}
	}
	sd2 := mustLoad(t, tbl, cfg)
	if !slices.Equal(s.Mean, sd2.Scaler.Mean) || !slices.Equal(s.Std, sd2.Scaler.Std) || s.TargetMean != sd2.Scaler.TargetMean || s.TargetStd != sd2.Scaler.TargetStd {
		t.Fatalf("validation values leaked into the scaling: %+v vs %+v", s, sd2.Scaler)
	}
	if !slices.Equal(sd.Train.X, sd2.Train.X) || !slices.Equal(sd.Train.Y, sd2.Train.Y) {
		t.Fatal("validation values leaked into the training windows")
	}
}

func TestLoadSequencesOrdering(t *testing.T) {
	tests := []struct {
		name  string
		times []string // file order; value of y and x is the position in time order
		order []int
	}{
		{"numeric", []string{"10", "2", "1", "9", "3"}, []int{4, 1, 0, 3, 2}},
		{"numeric decimals", []string{"1.5", "-2", "1e1", "0"}, []int{2, 0, 3, 1}},
		{"lexical months", []string{"2024-11", "2023-12", "2024-02"}, []int{2, 0, 1}},
		{"lexical mixed", []string{"b", "a10", "a9"}, []int{2, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			b.WriteString("t,x,y\n")
			for i, tm := range tt.times {
				fmt.Fprintf(&b, "%s,%d,%d\n", tm, tt.order[i], tt.order[i])
			}
			cfg := SequenceConfig{Lookback: 1, Horizon: 1, Target: "y", Features: []string{"x"}, Time: "t", Task: TaskRegression}
			sd := mustLoad(t, mustTable(t, b.String()), cfg)
			for i := range sd.Train.N {
				x := float64(sd.Train.X[i])*sd.Scaler.Std[0] + sd.Scaler.Mean[0]
				y := sd.Scaler.Unscale(float64(sd.Train.Y[i]))
				if math.Abs(x-float64(i)) > 1e-5 || math.Abs(y-float64(i+1)) > 1e-5 {
					t.Fatalf("window %d: x %v → y %v, want %d → %d", i, x, y, i, i+1)
				}
			}
		})
	}
}

func TestLoadSequencesDefaultFeatures(t *testing.T) {
	tbl := mustTable(t, seriesCSV(2, 6))
	cfg := seqConfig()
	cfg.Features = nil
	sd := mustLoad(t, tbl, cfg)
	// dept is text, id and month are group and time; the target's history is a feature.
	if want := []string{"x", "z", "y"}; !slices.Equal(sd.Scaler.Features, want) {
		t.Fatalf("features %v, want %v", sd.Scaler.Features, want)
	}
	if sd.Train.Dim != 9 {
		t.Fatalf("Dim %d, want 9", sd.Train.Dim)
	}
}

func TestLoadSequencesMissingValues(t *testing.T) {
	csv := "month,x,y\n1,1,1\n2,NA,2\n3,3,\n4,5,4\n5,7,5\n"
	cfg := SequenceConfig{Lookback: 2, Horizon: 1, Target: "y", Features: []string{"x"}, Time: "month", Task: TaskRegression}
	sd := mustLoad(t, mustTable(t, csv), cfg)
	// Windows end at rows 1, 2, 3; the one targeting row 2 (missing y) is skipped.
	if sd.Train.N != 2 {
		t.Fatalf("%d windows, want 2", sd.Train.N)
	}
	// The windows read rows 1..3; the mean is over their present x values, 3 and 5, and
	// the missing x (row 1, the first window's first step) is the mean: 0 after scaling.
	if mean := sd.Scaler.Mean[0]; math.Abs(mean-4) > 1e-12 {
		t.Fatalf("x mean %v, want 4 (the present values of rows 1..3)", mean)
	}
	if sd.Train.X[0] != 0 {
		t.Fatalf("missing value became %v, want 0", sd.Train.X[0])
	}
	if y := sd.Scaler.Unscale(float64(sd.Train.Y[1])); math.Abs(y-5) > 1e-6 {
		t.Fatalf("second window's target %v, want 5", y)
	}
}

func TestLoadSequencesClassification(t *testing.T) {
	csv := "month,x,y\n1,1,0\n2,2,1\n3,3,2\n4,4,1\n5,5,0\n"
	cfg := SequenceConfig{Lookback: 2, Horizon: 1, Target: "y", Features: []string{"x"}, Time: "month", Task: TaskMulticlass}
	sd := mustLoad(t, mustTable(t, csv), cfg)
	if !slices.Equal(sd.Train.Y, []float32{2, 1, 0}) || sd.Scaler.TargetMean != 0 || sd.Scaler.TargetStd != 1 {
		t.Fatalf("labels %v (mean %v std %v), want the class indices unscaled", sd.Train.Y, sd.Scaler.TargetMean, sd.Scaler.TargetStd)
	}
	cfg.Task = TaskBinary
	if _, err := LoadSequences(mustTable(t, csv), cfg, "c.csv"); err == nil || !strings.Contains(err.Error(), "line 4, column y") {
		t.Fatalf("binary target 2: error %v, want one naming line 4, column y", err)
	}
}

func TestSeasonalNaive(t *testing.T) {
	// One series, 30 months: y = 10·sin(2π m/12) + m/10, so the seasonal naive error
	// is always 1.2 (the trend over 12 months).
	var b strings.Builder
	b.WriteString("m,x,y\n")
	for m := range 30 {
		fmt.Fprintf(&b, "%d,%d,%.10f\n", m, m%5, 10*math.Sin(2*math.Pi*float64(m)/12)+float64(m)/10)
	}
	cfg := SequenceConfig{Lookback: 4, Horizon: 1, Target: "y", Features: []string{"x"}, Time: "m", Task: TaskRegression, ValidationFraction: 0.2}
	sd := mustLoad(t, mustTable(t, b.String()), cfg)
	if sd.Validation.N != 6 || sd.SeasonalNaiveWindows != 6 {
		t.Fatalf("validation %d windows, seasonal naive over %d; want 6 and 6", sd.Validation.N, sd.SeasonalNaiveWindows)
	}
	if math.Abs(sd.SeasonalNaiveRMSE-1.2) > 1e-6 {
		t.Fatalf("seasonal naive RMSE %v, want 1.2", sd.SeasonalNaiveRMSE)
	}
	// Too short for a season: no baseline.
	cfg.ValidationFraction = 0.5
	short := mustLoad(t, mustTable(t, "m,x,y\n1,1,1\n2,2,2\n3,3,3\n4,4,4\n5,5,5\n6,6,6\n"), SequenceConfig{Lookback: 1, Horizon: 1, Target: "y", Time: "m", Task: TaskRegression, ValidationFraction: 0.5})
	if short.SeasonalNaiveRMSE != 0 || short.SeasonalNaiveWindows != 0 {
		t.Fatalf("short series: seasonal naive %v over %d windows, want none", short.SeasonalNaiveRMSE, short.SeasonalNaiveWindows)
	}
}

func TestSequenceScalerWindows(t *testing.T) {
	tbl := mustTable(t, seriesCSV(3, 12))
	cfg := seqConfig()
	cfg.ValidationFraction = 0.3
	sd := mustLoad(t, tbl, cfg)
	raw, err := json.Marshal(sd.Scaler)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"features"`, `"mean"`, `"std"`, `"target_mean"`, `"lookback"`, `"horizon"`, `"time"`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("scaler JSON %s lacks %s", raw, key)
		}
	}
	var back SequenceScaler
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	all, err := back.Windows(tbl, "same.csv")
	if err != nil {
		t.Fatal(err)
	}
	if all.N != sd.Train.N+sd.Validation.N || all.Dim != sd.Train.Dim {
		t.Fatalf("Windows gave %d×%d, want %d×%d", all.N, all.Dim, sd.Train.N+sd.Validation.N, sd.Train.Dim)
	}
	// Per group the windows come in time order: the training ones, then validation.
	per := all.N / 3
	trainPer := sd.Train.N / 3
	for g := range 3 {
		for k := range per {
			i := g*per + k
			var wantX []float32
			var wantY float32
			if k < trainPer {
				j := g*trainPer + k
				wantX, wantY = sd.Train.X[j*all.Dim:(j+1)*all.Dim], sd.Train.Y[j]
			} else {
				j := g*(per-trainPer) + k - trainPer
				wantX, wantY = sd.Validation.X[j*all.Dim:(j+1)*all.Dim], sd.Validation.Y[j]
			}
			if !slices.Equal(all.X[i*all.Dim:(i+1)*all.Dim], wantX) || all.Y[i] != wantY {
				t.Fatalf("group %d window %d differs from LoadSequences'", g, k)
			}
		}
	}
	// A test table missing a feature column is refused, naming it.
	other := mustTable(t, strings.ReplaceAll(seriesCSV(1, 6), "z", "w"))
	if _, err := back.Windows(other, "test.csv"); err == nil || !strings.Contains(err.Error(), `test.csv: sequence_csv.features[1]: column "z" not found`) {
		t.Fatalf("error %v, want the missing feature named", err)
	}
	// A broken scaler is refused.
	bad := back
	bad.Std = []float64{1, 0}
	if _, err := bad.Windows(tbl, "t.csv"); err == nil || !strings.Contains(err.Error(), "scaler") {
		t.Fatalf("error %v, want a scaler error", err)
	}
}

func TestLoadSequencesErrors(t *testing.T) {
	good := seriesCSV(2, 8)
	tests := []struct {
		name   string
		csv    string
		mutate func(*SequenceConfig)
		want   string
	}{
		{"no lookback", good, func(c *SequenceConfig) { c.Lookback = 0 }, "lookback must be >= 1"},
		{"no horizon", good, func(c *SequenceConfig) { c.Horizon = -1 }, "horizon must be >= 1"},
		{"no target", good, func(c *SequenceConfig) { c.Target = "" }, "target"},
		{"no time", good, func(c *SequenceConfig) { c.Time = "" }, "no time column"},
		{"group is time", good, func(c *SequenceConfig) { c.Group = "month" }, "both"},
		{"bad fraction", good, func(c *SequenceConfig) { c.ValidationFraction = 1 }, "validation fraction"},
		{"bad task", good, func(c *SequenceConfig) { c.Task = "ranking" }, "task"},
		{"duplicate feature", good, func(c *SequenceConfig) { c.Features = []string{"x", "x"} }, "features[1]"},
		{"missing target column", good, func(c *SequenceConfig) { c.Target = "score" }, `test.csv: sequence_csv.target: column "score" not found`},
		{"missing time column", good, func(c *SequenceConfig) { c.Time = "when" }, `sequence_csv.time: column "when" not found`},
		{"missing group column", good, func(c *SequenceConfig) { c.Group = "emp" }, `sequence_csv.group: column "emp" not found`},
		{"missing feature column", good, func(c *SequenceConfig) { c.Features = []string{"x", "Hours"} }, `sequence_csv.features[1]: column "Hours" not found`},
		{"text feature", good, func(c *SequenceConfig) { c.Features = []string{"dept"} }, `test.csv: line 2, column dept: "d0" is not a number`},
		{"not a number", strings.Replace(good, "G1,2024-03,12,", "G1,2024-03,abc,", 1), func(*SequenceConfig) {}, `test.csv: line 13, column x: "abc" is not a number`},
		{"text target", strings.Replace(good, ",d0,49,7\n", ",d0,49,high\n", 1), func(*SequenceConfig) {}, `line 2, column y: "high" is not a number`},
		{"duplicate time", good + "G0,2024-03,1,d0,1,1\n", func(*SequenceConfig) {}, "lines 12 and 18: group G0 has two rows for month 2024-03"},
		{"duplicate numeric time", "t,x,y\n1,1,1\n2,2,2\n1.0,3,3\n", func(c *SequenceConfig) { c.Group = ""; c.Time = "t"; c.Lookback = 1; c.Horizon = 1; c.Features = nil }, "lines 2 and 4: the table has two rows for t 1.0"},
		{"missing time", strings.Replace(good, "G1,2024-08,", "G1,NA,", 1), func(*SequenceConfig) {}, "line 3, column month: missing time value"},
		{"short group", good + "G9,2024-01,1,d,1,1\nG9,2024-02,1,d,1,1\n", func(*SequenceConfig) {}, "group G9 has 2 rows; lookback 3 + horizon 2 needs at least 5"},
		{"short table", good, func(c *SequenceConfig) { c.Group = ""; c.Lookback = 16; c.Horizon = 1; c.Time = "x" }, "the table has 16 rows; lookback 16 + horizon 1 needs at least 17"},
		{"no training windows", good, func(c *SequenceConfig) { c.ValidationFraction = 0.5 }, "no training windows"},
		{"validation takes all", "t,x,y\n1,1,1\n2,2,2\n", func(c *SequenceConfig) {
			c.Group = ""
			c.Time = "t"
			c.Lookback = 1
			c.Horizon = 1
			c.Features = nil
			c.ValidationFraction = 0.9
		}, "no training windows"},
		{"no rows", "id,month,x,dept,z,y\n", func(*SequenceConfig) {}, "no data rows"},
		{"no numeric features", "t,name\n1,a\n2,b\n", func(c *SequenceConfig) {
			c.Group = ""
			c.Time = "t"
			c.Target = "name"
			c.Features = nil
			c.Lookback, c.Horizon = 1, 1
		}, "no numeric feature columns"},
		{"overflow", "t,x,y\n1,1e308,1\n2,-1e308,2\n3,1e308,3\n", func(c *SequenceConfig) {
			c.Group = ""
			c.Time = "t"
			c.Features = []string{"x"}
			c.Lookback, c.Horizon = 2, 1
		}, "column x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := seqConfig()
			tt.mutate(&cfg)
			sd, err := LoadSequences(mustTable(t, tt.csv), cfg, "test.csv")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadSequences = %v, %v; want an error containing %q", sd, err, tt.want)
			}
		})
	}
}

func FuzzLoadSequences(f *testing.F) {
	f.Add(seriesCSV(2, 8), 3, 2, 0.25, true)
	f.Add("t,x,y\n1,1,1\n2,NA,2\n3,3,\n4,1e300,4\n5,-1e300,5\n", 2, 1, 0.4, false)
	f.Add("t,x,y\n2024-01,1,0\n2024-02,2,1\n2024-03,,1\n", 1, 1, 0.0, false)
	f.Add("t,x,y\n2024-01,1,0\n2024-02,2,1\n2024-03,,1\n2024-04,3,2\n2024-05,4,5\n", 1, 2, 0.2, false)
	f.Add("t,x,y\n2024-01,1,0\n2024-02,2,1\n2024-03,,1\n2024-04,3,\n2024-05,4,5\n2024-06,4,5\n", 2, 4, 0.3, false)
	f.Add("g,t,x,y\na,1,1,1\nb,1,2,2\na,2,3,3\nb,2,4,4\na,3,5,5\nb,3,6,6\n", 1, 1, 0.34, true)
	f.Fuzz(func(t *testing.T, csv string, lookback, horizon int, fraction float64, grouped bool) {
		tbl, err := ReadCSV(strings.NewReader(csv))
		if err != nil || len(tbl.Columns) < 2 {
			return
		}
		lookback, horizon = lookback%50, horizon%50
		cfg := SequenceConfig{Lookback: lookback, Horizon: horizon, Target: tbl.Columns[len(tbl.Columns)-1], Time: tbl.Columns[0], Task: TaskRegression, ValidationFraction: fraction}
		if grouped && len(tbl.Columns) > 2 {
			cfg.Group, cfg.Time = tbl.Columns[0], tbl.Columns[1]
		}
		// The seasonal options, chosen from the inputs so that the corpus stays valid:
		// the seasonal-naive baseline of a short period, or calendar features.
		switch (horizon%3 + 3) % 3 {
		case 1:
			cfg.Baseline, cfg.Period = BaselineSeasonalNaive, 1+(lookback%5+5)%5
		case 2:
			cfg.Calendar = []string{CalendarMonth, CalendarWeek}
		}
		sd, err := LoadSequences(tbl, cfg, "fuzz.csv")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.csv") {
				t.Fatalf("error %q does not name the source", err)
			}
			return
		}
		if sd.Train.N == 0 {
			t.Fatal("no training windows without an error")
		}
		for _, d := range []*Dataset{sd.Train, sd.Validation} {
			if len(d.X) != d.N*d.Dim || len(d.Y) != d.N || d.Dim != lookback*sd.Scaler.StepWidth() || len(d.Naive) != d.N {
				t.Fatalf("dataset shapes: N %d Dim %d len(X) %d len(Y) %d", d.N, d.Dim, len(d.X), len(d.Y))
			}
			for _, v := range append(slices.Clone(d.X), d.Y...) {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("non-finite value %v", v)
				}
			}
		}
		if math.IsNaN(sd.SeasonalNaiveRMSE) || sd.SeasonalNaiveRMSE < 0 {
			t.Fatalf("seasonal naive RMSE %v", sd.SeasonalNaiveRMSE)
		}
		all, err := sd.Scaler.Windows(tbl, "fuzz.csv")
		if err != nil {
			t.Fatalf("Windows on the training table: %v", err)
		}
		if all.N != sd.Train.N+sd.Validation.N {
			t.Fatalf("Windows gave %d windows, LoadSequences %d + %d", all.N, sd.Train.N, sd.Validation.N)
		}
	})
}
