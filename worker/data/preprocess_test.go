package data

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func mustTable(t testing.TB, csv string) *Table {
	t.Helper()
	tbl, err := ReadCSV(strings.NewReader(csv))
	if err != nil {
		t.Fatalf("ReadCSV: %v", err)
	}
	return tbl
}

func allRows(t *Table) []int {
	rows := make([]int, len(t.Rows))
	for i := range rows {
		rows[i] = i
	}
	return rows
}

// hr is a small attrition table: Age numeric (with a missing value), Dept categorical,
// EmployeeID ID-like, Const constant, Empty all missing, Flag constant categorical.
const hr = `EmployeeID,Age,Dept,Const,Empty,Flag,Attrition
e1,30,Sales,1,,Y,No
e2,40,R&D,1,NA,Y,Yes
e3,,Sales,1,?,Y,No
e4,50,HR,1,null,Y,Yes
e5,30,R&D,1,N/A,Y,No
`

func TestFitPreprocessorColumns(t *testing.T) {
	tbl := mustTable(t, hr)
	p, err := FitPreprocessor(tbl, allRows(tbl), TabularConfig{Label: "Attrition", Task: TaskBinary})
	if err != nil {
		t.Fatal(err)
	}
	ages := []float64{30, 40, 50, 30}
	mean := 37.5
	var ss float64
	for _, a := range ages {
		ss += (a - mean) * (a - mean)
	}
	std := math.Sqrt(ss / 4)
	want := []ColumnTransform{
		{Name: "Age", Kind: KindNumeric, Mean: mean, Std: std},
		{Name: "Dept", Kind: KindCategorical, Categories: []string{"HR", "R&D", "Sales"}},
	}
	if len(p.Columns) != len(want) {
		t.Fatalf("columns = %+v, want %+v", p.Columns, want)
	}
	for i := range want {
		g, w := p.Columns[i], want[i]
		if g.Name != w.Name || g.Kind != w.Kind || math.Abs(g.Mean-w.Mean) > 1e-12 || math.Abs(g.Std-w.Std) > 1e-12 || !slices.Equal(g.Categories, w.Categories) {
			t.Errorf("columns[%d] = %+v, want %+v", i, g, w)
		}
	}
	if p.Dim != 4 || p.Positive != "Yes" || !slices.Equal(p.Classes, []string{"No", "Yes"}) {
		t.Errorf("dim %d positive %q classes %q; want 4, Yes, [No Yes]", p.Dim, p.Positive, p.Classes)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	x, err := p.Transform(tbl, allRows(tbl))
	if err != nil {
		t.Fatal(err)
	}
	z := func(a float64) float32 { return float32((a - mean) / std) }
	wantX := []float32{
		z(30), 0, 0, 1,
		z(40), 0, 1, 0,
		0, 0, 0, 1, // missing age -> the mean
		z(50), 1, 0, 0,
		z(30), 0, 1, 0,
	}
	if !slices.Equal(x, wantX) {
		t.Errorf("Transform = %v, want %v", x, wantX)
	}
	y, err := p.Labels(tbl, allRows(tbl))
	if err != nil || !slices.Equal(y, []float32{0, 1, 0, 1, 0}) {
		t.Errorf("Labels = %v, %v", y, err)
	}
}

func TestFitOnTrainingRowsOnly(t *testing.T) {
	tbl := mustTable(t, "x,c,y\n1,a,0\n3,b,1\n100,z,0\n5,a,1\n")
	p, err := FitPreprocessor(tbl, []int{0, 1, 3}, TabularConfig{Label: "y", Task: TaskBinary})
	if err != nil {
		t.Fatal(err)
	}
	if p.Columns[0].Mean != 3 || !slices.Equal(p.Columns[1].Categories, []string{"a", "b"}) {
		t.Fatalf("fitted %+v, want mean 3 and categories [a b] from rows 0, 1, 3", p.Columns)
	}
	// Row 2's category "z" was not seen in training: all zeros, not an error.
	x, err := p.Transform(tbl, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	if x[1] != 0 || x[2] != 0 {
		t.Fatalf("unseen category encoded as %v", x[1:])
	}
}

func TestFitPreprocessorDrops(t *testing.T) {
	var many strings.Builder
	many.WriteString("big,cat,y\n")
	for i := range MaxCategories + 2 {
		fmt.Fprintf(&many, "v%d,%s,%d\n", i, []string{"a", "b"}[i%2], i%2)
	}
	// "big" has MaxCategories+2 distinct values; make a few repeat so it is not ID-like.
	csv := many.String() + "v0,a,0\n"
	tbl := mustTable(t, csv)
	p, err := FitPreprocessor(tbl, allRows(tbl), TabularConfig{Label: "y", Task: TaskBinary})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Columns) != 1 || p.Columns[0].Name != "cat" {
		t.Fatalf("columns %+v, want only cat (big has more than %d values)", p.Columns, MaxCategories)
	}
}

func TestFitPreprocessorErrors(t *testing.T) {
	tests := []struct {
		name string
		csv  string
		cfg  TabularConfig
		want string
	}{
		{"label missing", hr, TabularConfig{Label: "Attritionx", Task: TaskBinary},
			`data.label: column "Attritionx" not found in the CSV (did you mean "Attrition"?) (columns: EmployeeID, Age, Dept, Const, Empty, Flag, Attrition)`},
		{"no label", hr, TabularConfig{Task: TaskBinary}, "data.label: no label column given"},
		{"bad task", hr, TabularConfig{Label: "Attrition", Task: "ranking"}, `data.task: "ranking"`},
		{"exclude unknown", hr, TabularConfig{Label: "Attrition", Task: TaskBinary, Exclude: []string{"Nope"}}, `data.exclude: column "Nope" not found`},
		{"exclude label", hr, TabularConfig{Label: "Attrition", Task: TaskBinary, Exclude: []string{"Attrition"}}, `data.exclude: "Attrition" is the label column`},
		{"positive not a value", hr, TabularConfig{Label: "Attrition", Task: TaskBinary, Positive: "yes"}, `data.positive: "yes" is not a value of column "Attrition" (values: "No", "Yes")`},
		{"positive for regression", "x,y\n1,2\n2,3\n", TabularConfig{Label: "y", Task: TaskRegression, Positive: "1"}, "data.positive: only a binary_classification task"},
		{"binary with 3 values", "x,y\n1,a\n2,b\n3,c\n", TabularConfig{Label: "y", Task: TaskBinary}, `needs exactly 2 distinct values in column "y", found 3: "a", "b", "c"`},
		{"binary with 7 values", "x,y\n1,a\n2,b\n3,c\n4,d\n5,e\n6,f\n7,g\n", TabularConfig{Label: "y", Task: TaskBinary}, `found 7: "a", "b", "c", "d", "e", ... (2 more)`},
		{"binary with 1 value", "x,y\n1,a\n2,a\n", TabularConfig{Label: "y", Task: TaskBinary}, `found 1: "a"`},
		{"missing label", "x,y\n1,a\n2,NA\n3,b\n", TabularConfig{Label: "y", Task: TaskBinary}, `data.label: column "y" has a missing value ("NA") on line 3`},
		{"multiclass with 1 value", "x,y\n1,a\n2,a\n", TabularConfig{Label: "y", Task: TaskMulticlass}, "needs 2 to 1000 distinct values"},
		{"regression not numeric", "x,y\n1,2\n2,abc\n", TabularConfig{Label: "y", Task: TaskRegression}, `column "y" has "abc" on line 3`},
		{"no features", "id,y\na,0\nb,1\n", TabularConfig{Label: "y", Task: TaskBinary}, "no usable feature columns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl := mustTable(t, tt.csv)
			_, err := FitPreprocessor(tbl, allRows(tbl), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	t.Run("row out of range", func(t *testing.T) {
		tbl := mustTable(t, hr)
		if _, err := FitPreprocessor(tbl, []int{0, 9}, TabularConfig{Label: "Attrition", Task: TaskBinary}); err == nil || !strings.Contains(err.Error(), "row index 9") {
			t.Fatalf("error = %v", err)
		}
	})
}

func TestLabels(t *testing.T) {
	tests := []struct {
		name string
		csv  string
		cfg  TabularConfig
		want []float32
		pos  string
	}{
		{"binary default positive", "x,y\n1,No\n2,Yes\n3,No\n", TabularConfig{Label: "y", Task: TaskBinary}, []float32{0, 1, 0}, "Yes"},
		{"binary numeric labels", "x,y\n1,0\n2,1\n3,1\n", TabularConfig{Label: "y", Task: TaskBinary}, []float32{0, 1, 1}, "1"},
		{"binary explicit positive", "x,y\n1,No\n2,Yes\n3,No\n", TabularConfig{Label: "y", Task: TaskBinary, Positive: "No"}, []float32{1, 0, 1}, "No"},
		{"multiclass", "x,y\n1,b\n2,c\n3,a\n4,b\n", TabularConfig{Label: "y", Task: TaskMulticlass}, []float32{1, 2, 0, 1}, ""},
		{"regression", "x,y\n1,1\n2,3\n3,5\n4,7\n", TabularConfig{Label: "y", Task: TaskRegression}, []float32{-1.3416408, -0.4472136, 0.4472136, 1.3416408}, ""},
		{"regression constant", "x,y\n1,4\n2,4\n", TabularConfig{Label: "y", Task: TaskRegression}, []float32{0, 0}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl := mustTable(t, tt.csv)
			p, err := FitPreprocessor(tbl, allRows(tbl), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			y, err := p.Labels(tbl, allRows(tbl))
			if err != nil {
				t.Fatal(err)
			}
			for i := range y {
				if math.Abs(float64(y[i]-tt.want[i])) > 1e-6 {
					t.Fatalf("Labels = %v, want %v", y, tt.want)
				}
			}
			if p.Positive != tt.pos {
				t.Errorf("Positive = %q, want %q", p.Positive, tt.pos)
			}
		})
	}
	t.Run("unseen class", func(t *testing.T) {
		tbl := mustTable(t, "x,y\n1,a\n2,b\n3,c\n")
		for _, task := range []string{TaskBinary, TaskMulticlass} {
			p, err := FitPreprocessor(tbl, []int{0, 1}, TabularConfig{Label: "y", Task: task})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Labels(tbl, []int{2}); err == nil || !strings.Contains(err.Error(), `value "c" on line 4 is not one of the training classes "a", "b"`) {
				t.Errorf("%s: error = %v", task, err)
			}
		}
	})
}

func TestTransformRow(t *testing.T) {
	tbl := mustTable(t, hr)
	p, err := FitPreprocessor(tbl, allRows(tbl), TabularConfig{Label: "Attrition", Task: TaskBinary, Exclude: []string{"Const"}})
	if err != nil {
		t.Fatal(err)
	}
	// Serving uses a Preprocessor decoded from JSON.
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var served Preprocessor
	if err := json.Unmarshal(b, &served); err != nil {
		t.Fatal(err)
	}
	if err := served.Validate(); err != nil {
		t.Fatal(err)
	}
	want, err := p.Transform(tbl, allRows(tbl))
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float32, served.Dim)
	for r := range tbl.Rows {
		get := func(c string) (string, bool) {
			i := tbl.ColumnIndex(c)
			if i < 0 {
				return "", false
			}
			return tbl.Rows[r][i], true
		}
		if err := served.TransformRow(get, dst); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(dst, want[r*p.Dim:(r+1)*p.Dim]) {
			t.Fatalf("row %d: TransformRow %v, Transform %v", r, dst, want[r*p.Dim:(r+1)*p.Dim])
		}
	}
	tests := []struct {
		name string
		row  map[string]string
		dst  []float32
		want string
		out  []float32
	}{
		{"missing column", map[string]string{"Age": "30"}, make([]float32, 4), `column "Dept" is missing from the row`, nil},
		{"not a number", map[string]string{"Age": "old", "Dept": "HR"}, make([]float32, 4), `column "Age" is numeric, but the value "old" is not a finite number`, nil},
		{"infinite", map[string]string{"Age": "1e400", "Dept": "HR"}, make([]float32, 4), `"1e400" is not a finite number`, nil},
		{"short buffer", map[string]string{"Age": "30", "Dept": "HR"}, make([]float32, 3), "feature buffer has 3 values, the preprocessing makes 4", nil},
		{"unseen and missing", map[string]string{"Age": " NaN ", "Dept": "Legal"}, []float32{9, 9, 9, 9}, "", []float32{0, 0, 0, 0}},
		{"categories are case-sensitive", map[string]string{"Age": "37.5", "Dept": "sales"}, []float32{9, 9, 9, 9}, "", []float32{0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := served.TransformRow(func(c string) (string, bool) { v, ok := tt.row[c]; return v, ok }, tt.dst)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.want)
				}
				return
			}
			if err != nil || !slices.Equal(tt.dst, tt.out) {
				t.Fatalf("TransformRow = %v, %v; want %v", tt.dst, err, tt.out)
			}
		})
	}
}

func TestTransformErrors(t *testing.T) {
	tbl := mustTable(t, "x,y\n1,a\n2,b\n")
	p, err := FitPreprocessor(tbl, allRows(tbl), TabularConfig{Label: "y", Task: TaskBinary})
	if err != nil {
		t.Fatal(err)
	}
	other := mustTable(t, "z,y\n1,a\n")
	if _, err := p.Transform(other, []int{0}); err == nil || !strings.Contains(err.Error(), `feature column "x" not found in the CSV (columns: z, y)`) {
		t.Errorf("error = %v", err)
	}
	bad := mustTable(t, "x,y\n1,a\nfoo,b\n")
	if _, err := p.Transform(bad, allRows(bad)); err == nil || !strings.Contains(err.Error(), `line 3: data: column "x" is numeric, but the value "foo"`) {
		t.Errorf("error = %v", err)
	}
	for _, broken := range []Preprocessor{
		{Columns: []ColumnTransform{{Name: "x", Kind: KindNumeric, Std: 0}}, Dim: 1},
		{Columns: []ColumnTransform{{Name: "x", Kind: "text"}}, Dim: 1},
		{Columns: []ColumnTransform{{Name: "x", Kind: KindCategorical, Categories: []string{"b", "a"}}}, Dim: 2},
		{Columns: []ColumnTransform{{Name: "x", Kind: KindNumeric, Std: 1}}, Dim: 3},
	} {
		if err := broken.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", broken)
		}
		// Never a panic, even on an inconsistent preprocessor.
		_ = broken.TransformRow(func(string) (string, bool) { return "1", true }, make([]float32, broken.Dim))
	}
}

// FuzzTransformRow decodes a preprocessing (as serving does from the exported JSON)
// and applies it to a row: errors are fine, panics and non-finite features are not.
func FuzzTransformRow(f *testing.F) {
	f.Add(`{"label":"y","task":"binary_classification","columns":[{"name":"a","kind":"numeric","mean":1,"std":2},{"name":"b","kind":"categorical","categories":["x","y"]}],"dim":3}`, "3.5", "y")
	f.Add(`{"columns":[{"name":"a","kind":"numeric","std":1e-300}],"dim":1}`, "1e300", "")
	f.Add(`{"columns":[{"name":"b","kind":"categorical","categories":["y","x"]}],"dim":1}`, "", "x")
	f.Add(`{"columns":[],"dim":-1}`, "", "")
	f.Fuzz(func(t *testing.T, js, a, b string) {
		var p Preprocessor
		if err := json.Unmarshal([]byte(js), &p); err != nil || p.Dim < 0 || p.Dim > 1<<16 {
			return
		}
		dst := make([]float32, p.Dim)
		err := p.TransformRow(func(c string) (string, bool) {
			switch c {
			case "a":
				return a, true
			case "b":
				return b, true
			}
			return "", false
		}, dst)
		if err != nil {
			return
		}
		for _, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("non-finite feature %v", v)
			}
		}
	})
}
