package hrdata

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// table is a parsed CSV: column name -> index, and the data rows.
type table struct {
	col  map[string]int
	rows [][]string
}

func (tb *table) get(r int, name string) string { return tb.rows[r][tb.col[name]] }

func (tb *table) num(t *testing.T, r int, name string) float64 {
	t.Helper()
	v, err := strconv.Atoi(tb.get(r, name))
	if err != nil {
		t.Fatalf("row %d column %s: %v", r+1, name, err)
	}
	return float64(v)
}

func generate(t *testing.T, rows int, seed int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := GenerateAttrition(&buf, AttritionConfig{Rows: rows, Seed: seed}); err != nil {
		t.Fatalf("GenerateAttrition: %v", err)
	}
	return buf.Bytes()
}

func parse(t *testing.T, data []byte) *table {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatalf("generated CSV does not parse: %v", err)
	}
	if !slices.Equal(recs[0], AttritionColumns) {
		t.Fatalf("header = %v, want %v", recs[0], AttritionColumns)
	}
	tb := &table{col: map[string]int{}, rows: recs[1:]}
	for i, c := range recs[0] {
		tb.col[c] = i
	}
	return tb
}

func TestAttritionColumnsExact(t *testing.T) {
	want := "Age,BusinessTravel,Department,DistanceFromHome,Education,EducationField," +
		"EnvironmentSatisfaction,Gender,JobInvolvement,JobLevel,JobRole,JobSatisfaction," +
		"MaritalStatus,MonthlyIncome,NumCompaniesWorked,OverTime,PercentSalaryHike," +
		"PerformanceRating,RelationshipSatisfaction,StockOptionLevel,TotalWorkingYears," +
		"TrainingTimesLastYear,WorkLifeBalance,YearsAtCompany,YearsInCurrentRole," +
		"YearsSinceLastPromotion,YearsWithCurrManager,Attrition\n"
	got := generate(t, 0, 1)
	if string(got) != want {
		t.Fatalf("header line = %q, want %q", got, want)
	}
}

func TestGenerateAttritionConfig(t *testing.T) {
	tests := []struct {
		name     string
		cfg      AttritionConfig
		wantRows int
		wantErr  string
	}{
		{"zero rows", AttritionConfig{Rows: 0, Seed: 1}, 0, ""},
		{"one row", AttritionConfig{Rows: 1, Seed: 1}, 1, ""},
		{"default", DefaultAttritionConfig(), 1470, ""},
		{"negative seed", AttritionConfig{Rows: 10, Seed: -5}, 10, ""},
		{"negative rows", AttritionConfig{Rows: -1}, 0, "Rows -1"},
		{"too many rows", AttritionConfig{Rows: MaxAttritionRows + 1}, 0, "Rows 10000001"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := GenerateAttrition(&buf, tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(parse(t, buf.Bytes()).rows); got != tc.wantRows {
				t.Fatalf("%d rows, want %d", got, tc.wantRows)
			}
		})
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestGenerateAttritionWriterError(t *testing.T) {
	boom := errors.New("pipe closed")
	if err := GenerateAttrition(failWriter{boom}, AttritionConfig{Rows: 100, Seed: 1}); !errors.Is(err, boom) {
		t.Fatalf("error = %v, want wrapping %v", err, boom)
	}
}

func TestGenerateAttritionDeterministic(t *testing.T) {
	a := generate(t, 2000, 7)
	b := generate(t, 2000, 7)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed gave different output")
	}
	if bytes.Equal(a, generate(t, 2000, 8)) {
		t.Fatal("different seeds gave identical output")
	}
	// A longer table with the same seed extends the shorter one.
	long := generate(t, 2500, 7)
	if !bytes.HasPrefix(long, a) {
		t.Fatal("2500 rows with seed 7 do not start with the 2000 rows of seed 7")
	}
}

// TestAttritionSampleFile keeps jobs/data/attrition-sample.csv equal to what the
// generator produces for 3000 rows and seed 42.
func TestAttritionSampleFile(t *testing.T) {
	path := filepath.Join("..", "..", "jobs", "data", "attrition-sample.csv")
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read sample: %v", err)
	}
	if got := generate(t, 3000, 42); !bytes.Equal(got, want) {
		t.Fatalf("%s differs from GenerateAttrition(Rows: 3000, Seed: 42); regenerate it", path)
	}
}

var rolesByDepartment = map[string][]string{
	"Sales":                  {"Sales Executive", "Sales Representative", "Manager"},
	"Research & Development": {"Research Scientist", "Laboratory Technician", "Manufacturing Director", "Healthcare Representative", "Research Director", "Manager"},
	"Human Resources":        {"Human Resources", "Manager"},
}

func TestAttritionConsistency(t *testing.T) {
	tb := parse(t, generate(t, 5000, 3))
	ranges := map[string][2]float64{
		"Age": {18, 60}, "DistanceFromHome": {1, 29}, "Education": {1, 5},
		"EnvironmentSatisfaction": {1, 4}, "JobInvolvement": {1, 4}, "JobLevel": {1, 5},
		"JobSatisfaction": {1, 4}, "MonthlyIncome": {1009, 19999}, "NumCompaniesWorked": {0, 9},
		"PercentSalaryHike": {11, 25}, "PerformanceRating": {3, 4}, "RelationshipSatisfaction": {1, 4},
		"StockOptionLevel": {0, 3}, "TotalWorkingYears": {0, 42}, "TrainingTimesLastYear": {0, 6},
		"WorkLifeBalance": {1, 4}, "YearsAtCompany": {0, 42}, "YearsInCurrentRole": {0, 42},
		"YearsSinceLastPromotion": {0, 42}, "YearsWithCurrManager": {0, 42},
	}
	categories := map[string][]string{
		"BusinessTravel": {"Non-Travel", "Travel_Rarely", "Travel_Frequently"},
		"Department":     {"Sales", "Research & Development", "Human Resources"},
		"EducationField": {"Life Sciences", "Medical", "Marketing", "Technical Degree", "Other", "Human Resources"},
		"Gender":         {"Male", "Female"},
		"MaritalStatus":  {"Single", "Married", "Divorced"},
		"OverTime":       {"Yes", "No"},
		"Attrition":      {"Yes", "No"},
	}
	seen := map[string]map[string]bool{}
	for r := range tb.rows {
		for name, rg := range ranges {
			if v := tb.num(t, r, name); v < rg[0] || v > rg[1] {
				t.Fatalf("row %d: %s = %v outside [%v, %v]", r+1, name, v, rg[0], rg[1])
			}
		}
		for name, vals := range categories {
			v := tb.get(r, name)
			if !slices.Contains(vals, v) {
				t.Fatalf("row %d: %s = %q not one of %v", r+1, name, v, vals)
			}
			if seen[name] == nil {
				seen[name] = map[string]bool{}
			}
			seen[name][v] = true
		}
		age, twy, yac := tb.num(t, r, "Age"), tb.num(t, r, "TotalWorkingYears"), tb.num(t, r, "YearsAtCompany")
		checks := []struct {
			ok   bool
			what string
		}{
			{twy <= age-18, "TotalWorkingYears <= Age-18"},
			{yac <= twy, "YearsAtCompany <= TotalWorkingYears"},
			{tb.num(t, r, "YearsInCurrentRole") <= yac, "YearsInCurrentRole <= YearsAtCompany"},
			{tb.num(t, r, "YearsSinceLastPromotion") <= yac, "YearsSinceLastPromotion <= YearsAtCompany"},
			{tb.num(t, r, "YearsWithCurrManager") <= yac, "YearsWithCurrManager <= YearsAtCompany"},
			{slices.Contains(rolesByDepartment[tb.get(r, "Department")], tb.get(r, "JobRole")), "JobRole belongs to Department"},
			{(tb.num(t, r, "PerformanceRating") == 4) == (tb.num(t, r, "PercentSalaryHike") >= 20), "PerformanceRating 4 iff PercentSalaryHike >= 20"},
			{tb.get(r, "MaritalStatus") != "Single" || tb.num(t, r, "StockOptionLevel") == 0, "Single has StockOptionLevel 0"},
		}
		for _, c := range checks {
			if !c.ok {
				t.Fatalf("row %d violates %s: %v", r+1, c.what, tb.rows[r])
			}
		}
	}
	for name, vals := range categories {
		if len(seen[name]) != len(vals) {
			t.Errorf("%s: only %v appeared in 5000 rows", name, seen[name])
		}
	}

	// Correlations a real HR table has.
	corr := func(a, b string) float64 {
		var xs, ys []float64
		for r := range tb.rows {
			xs = append(xs, tb.num(t, r, a))
			ys = append(ys, tb.num(t, r, b))
		}
		return pearson(xs, ys)
	}
	corrTests := []struct {
		a, b string
		min  float64
	}{
		{"JobLevel", "MonthlyIncome", 0.85},
		{"TotalWorkingYears", "JobLevel", 0.6},
		{"Age", "TotalWorkingYears", 0.6},
		{"YearsAtCompany", "YearsWithCurrManager", 0.6},
	}
	for _, ct := range corrTests {
		t.Run(ct.a+"~"+ct.b, func(t *testing.T) {
			if c := corr(ct.a, ct.b); c < ct.min {
				t.Fatalf("corr(%s, %s) = %.3f, want >= %.2f", ct.a, ct.b, c, ct.min)
			}
		})
	}
}

func pearson(x, y []float64) float64 {
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= float64(len(x))
	my /= float64(len(y))
	var sxy, sxx, syy float64
	for i := range x {
		sxy += (x[i] - mx) * (y[i] - my)
		sxx += (x[i] - mx) * (x[i] - mx)
		syy += (y[i] - my) * (y[i] - my)
	}
	return sxy / math.Sqrt(sxx*syy)
}

func TestAttritionRate(t *testing.T) {
	for _, seed := range []int64{1, 2, 42} {
		t.Run(strconv.FormatInt(seed, 10), func(t *testing.T) {
			tb := parse(t, generate(t, 5000, seed))
			yes := 0
			for r := range tb.rows {
				if tb.get(r, "Attrition") == "Yes" {
					yes++
				}
			}
			if rate := float64(yes) / 5000; rate < 0.14 || rate > 0.18 {
				t.Fatalf("attrition rate %.3f, want 0.14..0.18", rate)
			}
		})
	}
}

// auc is the probability that a random positive scores above a random negative
// (ties count half).
func auc(scores []float64, labels []bool) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	var rankSum, pos float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		avgRank := float64(i+j+1) / 2 // ranks i+1..j
		for k := i; k < j; k++ {
			if labels[idx[k]] {
				rankSum += avgRank
				pos++
			}
		}
		i = j
	}
	neg := float64(len(scores)) - pos
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

func TestAUCHelper(t *testing.T) {
	tests := []struct {
		scores []float64
		labels []bool
		want   float64
	}{
		{[]float64{1, 2, 3, 4}, []bool{false, false, true, true}, 1},
		{[]float64{4, 3, 2, 1}, []bool{false, false, true, true}, 0},
		{[]float64{1, 1, 1, 1}, []bool{false, true, false, true}, 0.5},
		{[]float64{1, 2, 3, 4}, []bool{false, true, false, true}, 0.75},
	}
	for _, tc := range tests {
		if got := auc(tc.scores, tc.labels); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("auc(%v, %v) = %v, want %v", tc.scores, tc.labels, got, tc.want)
		}
	}
}

func TestAttritionTrueLogitAUC(t *testing.T) {
	g := newGenerator(11)
	scores := make([]float64, 5000)
	labels := make([]bool, 5000)
	for i := range scores {
		e, logit := g.next()
		scores[i], labels[i] = logit, e.Attrition
	}
	got := auc(scores, labels)
	t.Logf("Bayes-optimal score AUC %.3f", got)
	if got < 0.82 {
		t.Fatalf("Bayes-optimal score AUC = %.3f, want >= 0.82", got)
	}
}

// featurize turns a table into a design matrix: numeric columns standardised with the
// given means/sds (computed when nil), categorical columns one-hot.
func featurize(t *testing.T, tb *table, mean, sd []float64) (x [][]float64, y []bool, outMean, outSD []float64) {
	t.Helper()
	numeric := []string{"Age", "DistanceFromHome", "Education", "EnvironmentSatisfaction", "JobInvolvement",
		"JobLevel", "JobSatisfaction", "MonthlyIncome", "NumCompaniesWorked", "PercentSalaryHike",
		"PerformanceRating", "RelationshipSatisfaction", "StockOptionLevel", "TotalWorkingYears",
		"TrainingTimesLastYear", "WorkLifeBalance", "YearsAtCompany", "YearsInCurrentRole",
		"YearsSinceLastPromotion", "YearsWithCurrManager"}
	categorical := map[string][]string{
		"BusinessTravel": {"Travel_Rarely", "Travel_Frequently"},
		"Department":     {"Sales", "Human Resources"},
		"EducationField": {"Medical", "Marketing", "Technical Degree", "Other", "Human Resources"},
		"Gender":         {"Female"},
		"JobRole": {"Sales Executive", "Sales Representative", "Manager", "Research Scientist", "Laboratory Technician",
			"Manufacturing Director", "Healthcare Representative", "Research Director"},
		"MaritalStatus": {"Single", "Divorced"},
		"OverTime":      {"Yes"},
	}
	catNames := make([]string, 0, len(categorical))
	for k := range categorical {
		catNames = append(catNames, k)
	}
	sort.Strings(catNames)
	raw := make([][]float64, len(tb.rows))
	for r := range tb.rows {
		for _, c := range numeric {
			raw[r] = append(raw[r], tb.num(t, r, c))
		}
		y = append(y, tb.get(r, "Attrition") == "Yes")
	}
	if mean == nil {
		mean = make([]float64, len(numeric))
		sd = make([]float64, len(numeric))
		for j := range numeric {
			for r := range raw {
				mean[j] += raw[r][j]
			}
			mean[j] /= float64(len(raw))
			for r := range raw {
				sd[j] += (raw[r][j] - mean[j]) * (raw[r][j] - mean[j])
			}
			sd[j] = math.Sqrt(sd[j]/float64(len(raw))) + 1e-9
		}
	}
	for r := range tb.rows {
		row := []float64{1} // bias
		for j := range numeric {
			row = append(row, (raw[r][j]-mean[j])/sd[j])
		}
		for _, c := range catNames {
			v := tb.get(r, c)
			for _, level := range categorical[c] {
				if v == level {
					row = append(row, 1)
				} else {
					row = append(row, 0)
				}
			}
		}
		x = append(x, row)
	}
	return x, y, mean, sd
}

// trainLogistic fits weights by full-batch gradient descent on the mean log-loss.
func trainLogistic(x [][]float64, y []bool, iters int, lr float64) []float64 {
	w := make([]float64, len(x[0]))
	grad := make([]float64, len(w))
	for it := 0; it < iters; it++ {
		clear(grad)
		for i, row := range x {
			var z float64
			for j, v := range row {
				z += w[j] * v
			}
			d := sigmoid(z)
			if y[i] {
				d--
			}
			for j, v := range row {
				grad[j] += d * v
			}
		}
		for j := range w {
			w[j] -= lr * grad[j] / float64(len(x))
		}
	}
	return w
}

func score(w []float64, x [][]float64) []float64 {
	s := make([]float64, len(x))
	for i, row := range x {
		for j, v := range row {
			s[i] += w[j] * v
		}
	}
	return s
}

func TestAttritionLearnableByLogisticRegression(t *testing.T) {
	train := parse(t, generate(t, 4000, 101))
	valid := parse(t, generate(t, 2000, 202))
	xTrain, yTrain, mean, sd := featurize(t, train, nil, nil)
	xValid, yValid, _, _ := featurize(t, valid, mean, sd)
	w := trainLogistic(xTrain, yTrain, 400, 1.0)
	got := auc(score(w, xValid), yValid)
	t.Logf("logistic regression validation AUC %.3f", got)
	if got < 0.80 {
		t.Fatalf("logistic regression validation AUC = %.3f, want >= 0.80", got)
	}
	// Control: the same model on shuffled labels learns nothing that generalises.
	shuffled := slices.Clone(yTrain)
	for i := range shuffled {
		j := (i*7919 + 13) % len(shuffled)
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	}
	wNoise := trainLogistic(xTrain, shuffled, 400, 1.0)
	noiseAUC := auc(score(wNoise, xValid), yValid)
	t.Logf("shuffled-label control AUC %.3f", noiseAUC)
	if got := noiseAUC; got > 0.65 {
		t.Fatalf("model trained on shuffled labels reaches AUC %.3f: the test would pass on noise", got)
	}
}

func TestAttritionFewFeatureModel(t *testing.T) {
	// OverTime, Single, StockOptionLevel 0 and JobLevel with hand-set signs.
	tb := parse(t, generate(t, 5000, 303))
	scores := make([]float64, len(tb.rows))
	labels := make([]bool, len(tb.rows))
	for r := range tb.rows {
		var s float64
		if tb.get(r, "OverTime") == "Yes" {
			s += 1.5
		}
		if tb.get(r, "MaritalStatus") == "Single" {
			s += 0.9
		}
		if tb.num(t, r, "StockOptionLevel") == 0 {
			s += 0.7
		}
		s -= 0.5 * (tb.num(t, r, "JobLevel") - 1)
		s += 0.5 * (4 - tb.num(t, r, "JobSatisfaction"))
		s += 0.5 * (4 - tb.num(t, r, "EnvironmentSatisfaction"))
		scores[r], labels[r] = s, tb.get(r, "Attrition") == "Yes"
	}
	got := auc(scores, labels)
	t.Logf("few-feature score AUC %.3f", got)
	if got < 0.75 {
		t.Fatalf("few-feature score AUC = %.3f, want >= 0.75", got)
	}
}

// TestAttritionDisparity checks that Disparity moves women into overtime (and so into
// attrition) by about the documented amount, leaves men alone, and leaves the table
// byte-identical at 0.
func TestAttritionDisparity(t *testing.T) {
	var plain bytes.Buffer
	if err := GenerateAttrition(&plain, AttritionConfig{Rows: 4000, Seed: 3, Disparity: 0}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain.Bytes(), generate(t, 4000, 3)) {
		t.Fatal("Disparity 0 changed the table")
	}
	rates := func(d float64) (overF, overM, leaveF, leaveM float64) {
		var buf bytes.Buffer
		if err := GenerateAttrition(&buf, AttritionConfig{Rows: 20000, Seed: 3, Disparity: d}); err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(&buf).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		col := map[string]int{}
		for i, c := range recs[0] {
			col[c] = i
		}
		var nF, nM float64
		for _, r := range recs[1:] {
			f := r[col["Gender"]] == "Female"
			ot, yes := r[col["OverTime"]] == "Yes", r[col["Attrition"]] == "Yes"
			if f {
				nF++
				overF += b2f(ot)
				leaveF += b2f(yes)
			} else {
				nM++
				overM += b2f(ot)
				leaveM += b2f(yes)
			}
		}
		return overF / nF, overM / nM, leaveF / nF, leaveM / nM
	}
	of0, om0, lf0, lm0 := rates(0)
	of, om, lf, lm := rates(0.6)
	// Overtime: 0.28 for everyone at 0; women 0.28 + 0.72*0.6 = 0.712 at 0.6.
	if math.Abs(of0-0.28) > 0.02 || math.Abs(om0-0.28) > 0.02 || math.Abs(of-0.712) > 0.02 || om != om0 {
		t.Errorf("overtime: women %.3f -> %.3f, men %.3f -> %.3f", of0, of, om0, om)
	}
	if lm != lm0 || lf < 1.3*lf0 || math.Abs(lf0-lm0) > 0.03 {
		t.Errorf("attrition: women %.3f -> %.3f, men %.3f -> %.3f", lf0, lf, lm0, lm)
	}
	for _, d := range []float64{-0.1, 1.5, math.NaN()} {
		if err := GenerateAttrition(io.Discard, AttritionConfig{Rows: 1, Disparity: d}); err == nil {
			t.Errorf("Disparity %v accepted", d)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
