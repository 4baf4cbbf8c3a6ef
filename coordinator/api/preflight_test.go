package api

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// preflightSpec is a csv job spec on train with label, excluding exclude.
func preflightSpec(train, label, extra string) []byte {
	return []byte(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: pf}
spec:
  task: binary_classification
  model: {mlp: {hidden: [4]}}
  data:
    train: "` + train + `"
    label: ` + label + `
    positive: "Yes"` + extra + `
  training: {epochs: 1, batchSize: 16}
`)
}

func TestPreflightCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return "file://" + p
	}
	hr := write("hr.csv", "\xEF\xBB\xBFAge, Attrition ,Dept\n41,Yes,Sales\n30,No,R&D\n")
	ragged := write("ragged.csv", "Age,Attrition\n41,Yes\n30\n")
	empty := write("empty.csv", "")
	test := write("test.csv", "Age,Dept\n41,Sales\n")
	pf := &Preflight{DataRoots: []string{dir}}
	for _, tc := range []struct {
		name     string
		pf       *Preflight
		spec     []byte
		problems string // "" when accepted
		warning  string
	}{
		{name: "columns present (BOM, spaces)", pf: pf, spec: preflightSpec(hr, "Attrition", "\n    exclude: [Dept]")},
		{name: "label differs in case", pf: pf, spec: preflightSpec(hr, "attrition", ""),
			problems: `spec.data.label: column "attrition" not in data.train (did you mean "Attrition"?)`},
		{name: "excluded column missing, label missing in the test set", pf: pf,
			spec: preflightSpec(hr, "Attrition", "\n    exclude: [Dpt]\n    test: \""+test+"\""),
			problems: `spec.data.exclude[0]: column "Dpt" not in data.train (did you mean "Dept"?)` + "\n" +
				`spec.data.label: column "Attrition" not in data.test`},
		{name: "missing file, with the closest one", pf: pf, spec: preflightSpec("file://"+dir+"/hr.cvs", "Attrition", ""),
			problems: `spec.data.train: file://` + dir + `/hr.cvs does not exist (did you mean "` + hr + `"?)`},
		{name: "ragged record", pf: pf, spec: preflightSpec(ragged, "Attrition", ""),
			problems: `spec.data.train: ` + ragged + `: line 3 has 1 fields, the header has 2`},
		{name: "empty file", pf: pf, spec: preflightSpec(empty, "Attrition", ""),
			problems: `spec.data.train: ` + empty + `: empty file: a CSV header row is required`},
		{name: "no data roots: a warning", pf: &Preflight{}, spec: preflightSpec(hr, "attrition", ""),
			warning: `spec.data.train: ` + hr + ` not checked: the coordinator reads no file:// data (it may not share the workers' file system); the job's first step checks it`},
		{name: "outside the roots: a warning", pf: &Preflight{DataRoots: []string{t.TempDir()}}, spec: preflightSpec(hr, "attrition", ""),
			warning: `spec.data.train: ` + hr + ` not checked: it is outside the coordinator's data roots; the job's first step checks it`},
		{name: "s3 without S3: a warning", pf: pf, spec: preflightSpec("s3://hr-data/hr.csv", "attrition", ""),
			warning: `spec.data.train: s3://hr-data/hr.csv not checked: the coordinator has no S3 endpoint configured; the job's first step checks it`},
		{name: "no pre-flight", pf: nil, spec: preflightSpec(hr, "nope", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warnings, err := tc.pf.check(context.Background(), tc.spec)
			var pe *PreflightError
			switch {
			case tc.problems == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.problems != "" && (!errors.As(err, &pe) || !errors.Is(err, ErrInvalidArgument) || err.Error() != tc.problems):
				t.Fatalf("error %v\nwant %s", err, tc.problems)
			}
			if got := strings.Join(warnings, "\n"); got != tc.warning {
				t.Fatalf("warnings %q, want %q", got, tc.warning)
			}
		})
	}
}

// TestSampleCSVIsBounded: a record cut off by the sample's limit is not a problem.
func TestSampleCSVIsBounded(t *testing.T) {
	body := "a,b\n" + strings.Repeat("1,2\n", 1000)
	cols, err := sampleCSV(strings.NewReader(body[:len(body)-3]), int64(len(body)-3)) // ends in "1,"... cut
	if err != nil || strings.Join(cols, ",") != "a,b" {
		t.Fatalf("sample cut mid-record: %v %v", cols, err)
	}
}

// FuzzSampleCSV: the pre-flight reads data the user names; no input makes it panic, and
// the columns it returns are non-empty and distinct.
func FuzzSampleCSV(f *testing.F) {
	for _, s := range []string{"a,b\n1,2\n", "\xEF\xBB\xBFa\n1\n", "", "a,a\n", "\"a\nb\",c\n1,2\n", "a,b\n1\n", " ,x\n"} {
		f.Add([]byte(s), int64(len(s)))
	}
	f.Fuzz(func(t *testing.T, data []byte, limit int64) {
		if limit <= 0 || limit > 1<<16 {
			limit = int64(len(data)) + 1
		}
		cols, err := sampleCSV(strings.NewReader(string(data[:min(int64(len(data)), limit)])), limit)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, c := range cols {
			if c == "" || seen[c] {
				t.Fatalf("columns %q from %q", cols, data)
			}
			seen[c] = true
		}
	})
}
