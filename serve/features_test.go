package serve

import (
	"errors"
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
