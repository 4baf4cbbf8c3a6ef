package audit

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestIsMissing(t *testing.T) {
	for _, v := range []string{"", " ", "NA", "na", "N/A", "n/a", "NaN", "nan", "NULL", "null", "?", " ? "} {
		if !IsMissing(v) {
			t.Errorf("IsMissing(%q) = false", v)
		}
	}
	for _, v := range []string{"0", "None", "F", "N", "A", "-"} {
		if IsMissing(v) {
			t.Errorf("IsMissing(%q) = true", v)
		}
	}
}

func TestCheckSensitive(t *testing.T) {
	numbers := func(lo, hi int) []string {
		var v []string
		for i := lo; i <= hi; i++ {
			v = append(v, strconv.Itoa(i))
		}
		return v
	}
	words := func(k int) []string {
		var v []string
		for i := range k {
			v = append(v, fmt.Sprintf("role-%02d", i))
		}
		return v
	}
	for _, c := range []struct {
		name   string
		values []string
		want   string // "" for no error
	}{
		{"two categories", []string{"F", "M", "F", "", "NA"}, ""},
		{"50 values", numbers(1, 50), ""},
		{"50 values and missing ones", append(numbers(1, 50), "", "NA", "?", "null"), ""},
		// 20..80: quartiles 35, 50, 65.
		{"61 ages", numbers(20, 80), `column "Age" has 61 distinct values (more than 50); group it with spec.audit.bins.Age: [35, 50, 65]`},
		{"51 words", words(51), `column "Age" has 51 distinct values (more than 50); map it to at most 50 categories before the audit, or, if it is numeric, group it with spec.audit.bins.Age: [edges]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckSensitive("Age", c.values)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("error %v", err)
			case c.want != "" && (err == nil || err.Error() != c.want):
				t.Errorf("error %v,\nwant %s", err, c.want)
			}
		})
	}
}

func TestBin(t *testing.T) {
	for _, c := range []struct {
		name   string
		values []string
		edges  []float64
		want   []string
		err    string
	}{
		{"three edges", []string{"29", "30", "39.9", "40", "49.99", "50", "71", " 35 ", "-3"}, []float64{30, 40, 50},
			[]string{"<30", "[30,40)", "[30,40)", "[40,50)", "[40,50)", ">=50", ">=50", "[30,40)", "<30"}, ""},
		{"missing stays missing", []string{"", "NA", "n/a", "31"}, []float64{30, 40, 50}, []string{"", "NA", "n/a", "[30,40)"}, ""},
		{"one fractional edge", []string{"1", "1.5", "2e3"}, []float64{1.5}, []string{"<1.5", ">=1.5", ">=1.5"}, ""},
		{"not a number", []string{"31", "thirty"}, []float64{30}, nil, `value "thirty" at row 1 is not a number`},
		{"no edges", []string{"1"}, nil, nil, "no edges"},
		{"equal edges", []string{"1"}, []float64{30, 30}, nil, "strictly increasing: 30 follows 30"},
		{"decreasing edges", []string{"1"}, []float64{40, 30}, nil, "strictly increasing: 30 follows 40"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Bin(c.values, c.edges)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("Bin = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestBinnedGroupsOrder(t *testing.T) {
	// Bin labels sort by their lower bound, not byte order ("<30" < "[30,40)" < ">=50").
	ages, err := Bin([]string{"55", "25", "35", "45", "NA", "33"}, []float64{30, 40, 50})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Sensitive = []string{"Age"}
	rep, err := Evaluate(cfg, Input{
		Scores: []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6},
		Labels: []float64{0, 1, 0, 1, 0, 1},
		Groups: map[string][]string{"Age": ages},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range rep.Audit.Groups {
		got = append(got, g.Category)
	}
	if want := []string{"<30", "[30,40)", "[40,50)", ">=50", ""}; !slices.Equal(got, want) {
		t.Errorf("categories %q, want %q", got, want)
	}
}
