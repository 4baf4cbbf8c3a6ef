package serve

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/worker/data"
)

// TestTabularFillMatchesTransformRow checks the column-at-a-time featurizer against
// the row-by-row path (data.Preprocessor.TransformRow) on 600 rows of the attrition
// sample, with padded, missing and unseen categories: the features must be equal.
func TestTabularFillMatchesTransformRow(t *testing.T) {
	f, tbl, pre := tabularFixture(t, "Attrition", data.TaskBinary)
	m := f.srv.cfg.Model
	const n = 600
	var tensors []Tensor
	for _, c := range pre.Columns {
		ci := tbl.ColumnIndex(c.Name)
		tn := Tensor{Name: c.Name, Shape: []int{n}}
		for r := range n {
			v := tbl.Rows[r][ci]
			if c.Kind == data.KindCategorical {
				switch r % 50 {
				case 7:
					v = " " + v + " "
				case 8:
					v = "NA"
				case 9:
					v = "never-seen"
				}
				tn.Datatype = TypeBytes
				tn.Strings = append(tn.Strings, v)
				continue
			}
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			tn.Datatype = TypeFP64
			tn.Numbers = append(tn.Numbers, x)
		}
		tensors = append(tensors, tn)
	}
	byName := map[string]*Tensor{}
	for i := range tensors {
		byName[tensors[i].Name] = &tensors[i]
	}
	fast := make([]float32, n*pre.Dim)
	if !m.feat.(batchFeaturizer).fill(byName, n, fast) {
		t.Fatal("fill refused good rows")
	}
	for r := range n {
		slow := make([]float32, pre.Dim)
		if err := m.feat.row(byName, r, slow); err != nil {
			t.Fatal(err)
		}
		for i, v := range slow {
			if fast[r*pre.Dim+i] != v {
				t.Fatalf("row %d feature %d: fill %v, TransformRow %v", r, i, fast[r*pre.Dim+i], v)
			}
		}
	}
	// A value that does not standardize within float32 goes to the row path, whose
	// error names the row and the column.
	for i := range tensors {
		if tensors[i].Numbers != nil {
			tensors[i].Numbers[3] = 1e300
			_, _, err := m.Features(tensors, n)
			var bad *BadInputError
			if !errors.As(err, &bad) || !strings.Contains(err.Error(), "row 3") || !strings.Contains(err.Error(), tensors[i].Name) {
				t.Fatalf("huge value: %v", err)
			}
			break
		}
	}
}

// featuresRowByRow is Features on the row-by-row path only.
func featuresRowByRow(t *testing.T, m *Model, tensors []Tensor, n int) []float32 {
	t.Helper()
	byName := map[string]*Tensor{}
	for i := range tensors {
		byName[tensors[i].Name] = &tensors[i]
	}
	x := make([]float32, n*m.arch.Inputs)
	for r := range n {
		if err := m.feat.row(byName, r, x[r*m.arch.Inputs:(r+1)*m.arch.Inputs]); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// checkFillMatchesRows checks that Features (the batch fill) gives the row-by-row
// path's features, bit for bit.
func checkFillMatchesRows(t *testing.T, m *Model, tensors []Tensor, n int) {
	t.Helper()
	byName := map[string]*Tensor{}
	for i := range tensors {
		byName[tensors[i].Name] = &tensors[i]
	}
	fast := make([]float32, n*m.arch.Inputs)
	if !m.feat.(batchFeaturizer).fill(byName, n, fast) {
		t.Fatal("fill refused good rows")
	}
	slow := featuresRowByRow(t, m, tensors, n)
	for i := range slow {
		if math.Float32bits(fast[i]) != math.Float32bits(slow[i]) {
			t.Fatalf("row %d feature %d: fill %v, row %v", i/m.arch.Inputs, i%m.arch.Inputs, fast[i], slow[i])
		}
	}
	got, _, err := m.Features(tensors, n)
	if err != nil || !slices.Equal(got, fast) {
		t.Fatalf("Features: %v", err)
	}
}

// TestSequenceFillMatchesRow checks the sequence featurizer's batch path against row
// on random windows, then that a value out of range after scaling still gets row's
// error naming the input, row and step.
func TestSequenceFillMatchesRow(t *testing.T) {
	f, _, sc := lstmFixture(t)
	m := f.srv.cfg.Model
	const n = 300
	rng := rand.New(rand.NewPCG(3, 4))
	var tensors []Tensor
	for j, name := range sc.Features {
		tn := Tensor{Name: name, Shape: []int{n, sc.Lookback}, Datatype: TypeFP64}
		for range n * sc.Lookback {
			tn.Numbers = append(tn.Numbers, sc.Mean[j]+sc.Std[j]*rng.NormFloat64()*3)
		}
		tensors = append(tensors, tn)
	}
	checkFillMatchesRows(t, m, tensors, n)
	tensors[1].Numbers[5*sc.Lookback+2] = 1e300 * sc.Std[1]
	_, _, err := m.Features(tensors, n)
	var bad *BadInputError
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "row 5 step 2") || !strings.Contains(err.Error(), sc.Features[1]) {
		t.Fatalf("huge value: %v", err)
	}
}

// TestImageFillMatchesRow checks the image featurizer's batch path against row on
// random pixels, then that a pixel out of range gets row's error naming the row.
func TestImageFillMatchesRow(t *testing.T) {
	f := cnnFixture(t)
	m := f.srv.cfg.Model
	const n = 50
	rng := rand.New(rand.NewPCG(5, 6))
	tn := Tensor{Name: ImageInput, Shape: []int{n, m.arch.Channels, m.arch.Height, m.arch.Width}, Datatype: TypeUINT8}
	for range n * m.arch.Inputs {
		tn.Numbers = append(tn.Numbers, float64(rng.IntN(256)))
	}
	checkFillMatchesRows(t, m, []Tensor{tn}, n)
	tn.Numbers[7*m.arch.Inputs+3] = 256
	_, _, err := m.Features([]Tensor{tn}, n)
	var bad *BadInputError
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "row 7 value 3") {
		t.Fatalf("pixel 256: %v", err)
	}
}
