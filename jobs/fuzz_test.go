package jobs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse checks that Parse never panics, that every failure is a *SpecError with
// messages, and that every accepted spec survives a YAML round trip and yields a JobTemplate.
// More seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("examples", "*.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(baseSpec))
	f.Add([]byte(""))
	f.Add([]byte("apiVersion: cohort.dev/v1\nkind: TrainingJob\n  bad: indent\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("spec: {training: {epochs: abc, epochs: 3}}\n"))
	f.Add([]byte("apiVersion: cohort.dev/v1\n---\nkind: TrainingJob\n"))
	f.Add([]byte("spec: {training: {classWeights: {Yes: 5, No: [1]}}, export: {threshold: {optimize: {precisionAtRecall: .nan}}}}\n"))
	f.Add([]byte("spec: {training: {classWeights: balanced}, export: {threshold: 0.3}}\n"))
	f.Add([]byte("spec: {data: {sequence_csv: {baseline: seasonalNaive, period: -1, calendar: [month, month]}}}\n"))
	f.Add([]byte("metadata: {name: [1, {a: b}]}\nspec: {model: {mlp: ~, cnn: {conv: [{filters: .inf}]}}}\n"))
	f.Add([]byte("spec: {training: {compression: {topK: .nan, errorFeedback: [1], fp16: yes}}}\n"))
	f.Add([]byte(editSpecText(baseSpec, 16, "    compression: {topK: 0.01, errorFeedback: true}")))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := Parse(data)
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) || len(se.Errors) == 0 {
				t.Fatalf("error %T %v is not a non-empty *SpecError", err, err)
			}
			for _, fe := range se.Errors {
				if fe.Message == "" || fe.Line < 0 {
					t.Fatalf("bad FieldError %+v", fe)
				}
			}
			if j != nil {
				t.Fatal("Parse returned a job and an error")
			}
			return
		}
		if _, err := j.JobTemplate(); err != nil {
			t.Fatalf("accepted job has no template: %v", err)
		}
		out, err := yaml.Marshal(j)
		if err != nil {
			t.Fatalf("yaml.Marshal: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, out)
		}
		a, b := *j, *again
		a.lines, b.lines = nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip changed the job\n%+v\n%+v", a, b)
		}
	})
}
