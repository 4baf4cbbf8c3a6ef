package data

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// attritionCSV makes n rows of a synthetic HR table.
func attritionCSV(n int) string {
	rng := rand.New(rand.NewPCG(7, 7))
	var b strings.Builder
	b.WriteString("EmployeeNumber,Age,Department,MonthlyIncome,OverTime,Attrition\n")
	depts := []string{"Sales", "Research & Development", "Human Resources"}
	for i := range n {
		age := 20 + rng.IntN(40)
		income := "NA"
		if rng.IntN(10) > 0 {
			income = fmt.Sprint(2000 + rng.IntN(15000))
		}
		attr := "No"
		if rng.IntN(5) == 0 {
			attr = "Yes"
		}
		fmt.Fprintf(&b, "%d,%d,\"%s\",%s,%s,%s\n", 1000+i, age, depts[rng.IntN(3)], income, []string{"Yes", "No"}[rng.IntN(2)], attr)
	}
	return b.String()
}

func TestLoadTabular(t *testing.T) {
	csv := attritionCSV(200)
	cfg := TabularConfig{Label: "Attrition", Task: TaskBinary, Exclude: []string{"EmployeeNumber"}}
	train, val, p, err := LoadTabular(strings.NewReader(csv), cfg, 0.2, 42, true)
	if err != nil {
		t.Fatal(err)
	}
	if train.N+val.N != 200 || val.N != 40 {
		t.Fatalf("train %d, val %d rows; want 160, 40", train.N, val.N)
	}
	// Age 1 + Department 3 + MonthlyIncome 1 + OverTime 2.
	if p.Dim != 7 || train.Dim != 7 || len(train.X) != train.N*7 || len(val.Y) != val.N {
		t.Fatalf("dim %d, shapes %d/%d", p.Dim, len(train.X), len(val.Y))
	}
	// Standardized with training statistics: training features have mean 0.
	for _, col := range []int{0, 4} {
		var sum float64
		for i := range train.N {
			sum += float64(train.X[i*7+col])
		}
		if math.Abs(sum/float64(train.N)) > 1e-5 {
			t.Errorf("feature %d has training mean %v, want 0", col, sum/float64(train.N))
		}
	}
	var pos float64
	for _, y := range train.Y {
		pos += float64(y)
	}
	var vpos float64
	for _, y := range val.Y {
		vpos += float64(y)
	}
	if r, vr := pos/float64(train.N), vpos/float64(val.N); math.Abs(r-vr) > 0.03 {
		t.Errorf("stratified positive rate: train %v, validation %v", r, vr)
	}
	train2, val2, _, err := LoadTabular(strings.NewReader(csv), cfg, 0.2, 42, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range train.X {
		if train.X[i] != train2.X[i] {
			t.Fatal("LoadTabular is not deterministic")
		}
	}
	if val2.N != val.N {
		t.Fatal("LoadTabular is not deterministic")
	}

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name, csv string
			cfg       TabularConfig
			fraction  float64
			want      string
		}{
			{"empty", "", cfg, 0.2, "empty CSV file"},
			{"header only", "Attrition,Age\n", TabularConfig{Label: "Attrition", Task: TaskBinary}, 0.2, "header but no data rows"},
			{"label missing in a validation row", "x,Attrition\n1,Yes\n2,No\n3,\n4,No\n", TabularConfig{Label: "Attrition", Task: TaskBinary}, 0.5, `missing value ("") on line 4`},
			{"everything validation", "x,Attrition\n1,Yes\n2,No\n", TabularConfig{Label: "Attrition", Task: TaskBinary}, 1, "no training rows after the validation split"},
			{"huge regression target", "x,y\n1,1e300\n2,-1e300\n3,1\n", TabularConfig{Label: "y", Task: TaskRegression}, 0, "outside float32 range"},
			{"label column", "x,y\n1,2\n", TabularConfig{Label: "Attrition", Task: TaskBinary}, 0.2, `column "Attrition" not found in the CSV (columns: x, y)`},
		} {
			if _, _, _, err := LoadTabular(strings.NewReader(tc.csv), tc.cfg, tc.fraction, 1, false); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: error = %v, want it to contain %q", tc.name, err, tc.want)
			}
		}
	})
	t.Run("regression ignores stratify", func(t *testing.T) {
		csv := "x,y\n1,1.5\n2,2.5\n3,3.5\n4,4.5\n5,5.5\n"
		train, val, p, err := LoadTabular(strings.NewReader(csv), TabularConfig{Label: "y", Task: TaskRegression}, 0.4, 1, true)
		if err != nil {
			t.Fatal(err)
		}
		if train.N != 3 || val.N != 2 || p.LabelStd == 0 {
			t.Fatalf("train %d val %d std %v", train.N, val.N, p.LabelStd)
		}
	})
}

func FuzzLoadTabular(f *testing.F) {
	f.Add(attritionCSV(20), "Attrition", "binary_classification", 0.2, true)
	f.Add("x,c,y\n1,a,0\n2,b,1\n3,a,2\n,?,1\n", "y", "multiclass_classification", 0.5, true)
	f.Add("x,y\n1,1e300\n2,-1e300\n3,NaN\n", "y", "regression", 0.0, false)
	f.Add("x,y\n1e-300,1\n1e300,2\ninf,3\n", "y", "regression", 0.3, false)
	f.Add("a,b\nNA,No\nnull,Yes\n", "b", "binary_classification", 0.5, true)
	f.Fuzz(func(t *testing.T, csv, label, task string, fraction float64, stratify bool) {
		train, val, p, err := LoadTabular(strings.NewReader(csv), TabularConfig{Label: label, Task: task}, fraction, 1, stratify)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("fitted preprocessing is invalid: %v", err)
		}
		for _, d := range []*Dataset{train, val} {
			if len(d.X) != d.N*d.Dim || len(d.Y) != d.N || d.Dim != p.Dim {
				t.Fatalf("dataset shapes: N %d Dim %d len(X) %d len(Y) %d", d.N, d.Dim, len(d.X), len(d.Y))
			}
			for _, v := range append(append([]float32(nil), d.X...), d.Y...) {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("non-finite value %v", v)
				}
			}
		}
	})
}

func BenchmarkTransform(b *testing.B) {
	tbl, err := ReadCSV(strings.NewReader(attritionCSV(5000)))
	if err != nil {
		b.Fatal(err)
	}
	rows := allRows(tbl)
	p, err := FitPreprocessor(tbl, rows, TabularConfig{Label: "Attrition", Task: TaskBinary, Exclude: []string{"EmployeeNumber"}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Transform(tbl, rows); err != nil {
			b.Fatal(err)
		}
	}
}
