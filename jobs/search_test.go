package jobs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func exampleSearch(t testing.TB) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("examples", "search", "attrition-search.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := ResolveSearchTemplateFile(raw, filepath.Join("examples", "search"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestExpandSearchExample(t *testing.T) {
	plan, err := ExpandSearch(exampleSearch(t))
	if err != nil {
		t.Fatal(err)
	}
	if plan.Name != "attrition-search" || plan.Namespace != "default" || plan.Metric != "val_auc" || !plan.Maximize ||
		plan.Algorithm != AlgorithmASHA || plan.MinEpochs != 3 || plan.MaxEpochs != 30 || plan.ReductionFactor != 3 ||
		plan.ParallelTrials != 2 || plan.Seed != 7 || len(plan.Trials) != 24 {
		t.Fatalf("plan = %+v", plan)
	}
	hidden := map[string]bool{}
	for i, tr := range plan.Trials {
		j, err := Parse(tr.Spec)
		if err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		if j.Spec.Training.Epochs != 30 {
			t.Fatalf("trial %d epochs = %d, want maxEpochs 30", i, j.Spec.Training.Epochs)
		}
		lr := j.Spec.Training.Optimizer.LearningRate
		if lr < 0.0001 || lr > 0.01 {
			t.Fatalf("trial %d learning rate %v outside the range", i, lr)
		}
		if bs := j.Spec.Training.BatchSize; bs != 32 && bs != 64 {
			t.Fatalf("trial %d batch size %d", i, bs)
		}
		if got := tr.Parameters["model.mlp.hidden"]; got != strings.ReplaceAll(got, " ", "") {
			t.Fatalf("parameter JSON %q", got)
		}
		hidden[tr.Parameters["model.mlp.hidden"]] = true
		if j.Metadata.Name != "attrition-search-t"+strconv.Itoa(i) {
			t.Fatalf("trial %d name %q", i, j.Metadata.Name)
		}
	}
	if len(hidden) != 3 {
		t.Fatalf("24 trials drew %d of the 3 hidden-layer choices: %v", len(hidden), hidden)
	}
}

// TestExpandSearchReproducible: the same seed draws the same trials; another seed does not.
func TestExpandSearchReproducible(t *testing.T) {
	spec := exampleSearch(t)
	a, err := ExpandSearch(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ExpandSearch(spec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two expansions of one spec differ")
	}
	c, err := ExpandSearch([]byte(strings.Replace(string(spec), "seed: 7", "seed: 8", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(a.Trials[0].Parameters, c.Trials[0].Parameters) {
		t.Fatal("seed 8 drew the same first trial as seed 7")
	}
}

const gridSearch = `apiVersion: cohort.dev/v1
kind: Search
metadata: {name: g}
spec:
  template:
    task: binary_classification
    model: {mlp: {hidden: [8]}}
    data: {format: csv, train: file://x.csv, label: y, positive: "1"}
    training: {epochs: 2}
  parameters:
    training.batchSize: {choice: [16, 32]}
    training.epochs: {int: [4, 6]}
  objective: {metric: val_loss}
  algorithm: {grid: {}}
`

func TestExpandSearchGrid(t *testing.T) {
	plan, err := ExpandSearch([]byte(gridSearch))
	if err != nil {
		t.Fatal(err)
	}
	if plan.Maximize {
		t.Fatal("val_loss defaults to mode min")
	}
	var got []string
	for _, tr := range plan.Trials {
		got = append(got, tr.Parameters["training.epochs"]+"/"+tr.Parameters["training.batchSize"])
	}
	want := []string{"4/16", "5/16", "6/16", "4/32", "5/32", "6/32"} // the last path (training.epochs) varies fastest
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("grid = %v, want %v", got, want)
	}
	// A value the TrainingJob schema refuses is reported under the parameter.
	_, err = ExpandSearch([]byte(strings.Replace(gridSearch, "training.epochs: {int: [4, 6]}", "model.mlp.hidden: {int: [4, 6]}", 1)))
	if err == nil || !strings.Contains(err.Error(), "spec.parameters.model.mlp.hidden: trial 0") {
		t.Fatalf("err = %v, want one naming spec.parameters.model.mlp.hidden and the trial", err)
	}
}

func TestExpandSearchErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, edit, path, msg string
	}{
		{"unknown field", "maxTrials: 24", "spec.maxTrails", "did you mean"},
		{"bad range", "{logUniform: [0.0001, 0.01]}", "spec.parameters.training.optimizer.learningRate.logUniform", "lo must be above 0"},
		{"bad mode", "mode: max", "spec.objective.mode", "must be max or min"},
		{"not val metric", "metric: val_auc", "spec.objective.metric", "validation metric"},
		{"bad path", "training.batchSize:", "spec.parameters.training.batchSise", "unknown field"},
		{"rf", "reductionFactor: 3", "spec.algorithm.asha.reductionFactor", "must be 2..100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := string(exampleSearch(t))
			var edited string
			switch tc.name {
			case "unknown field":
				edited = strings.Replace(spec, "maxTrials: 24", "maxTrails: 24", 1)
			case "bad range":
				edited = strings.Replace(spec, "[0.0001, 0.01]", "[0, 0.01]", 1)
			case "bad mode":
				edited = strings.Replace(spec, "mode: max", "mode: up", 1)
			case "not val metric":
				edited = strings.Replace(spec, "metric: val_auc", "metric: auc", 1)
			case "bad path":
				edited = strings.Replace(spec, "training.batchSize:", "training.batchSise:", 1)
			case "rf":
				edited = strings.Replace(spec, "reductionFactor: 3", "reductionFactor: 1", 1)
			}
			if edited == spec {
				t.Fatalf("edit %q not applied", tc.edit)
			}
			_, err := ExpandSearch([]byte(edited))
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SpecError", err)
			}
			for _, fe := range se.Errors {
				if fe.Path == tc.path && strings.Contains(fe.Error(), tc.msg) {
					return
				}
			}
			t.Fatalf("no error at %s containing %q in:\n%v", tc.path, tc.msg, err)
		})
	}
}

// FuzzExpandSearch checks that ExpandSearch never panics and fails only with a
// non-empty *SpecError, and that every trial of an accepted spec parses. More seeds
// live in testdata/fuzz/FuzzExpandSearch.
func FuzzExpandSearch(f *testing.F) {
	f.Add(exampleSearch(f))
	f.Add([]byte(gridSearch))
	f.Add([]byte("kind: Search\nspec: {parameters: {a: {choice: []}}, algorithm: {asha: {}, grid: {}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The ACL's namespace lookup and dev's kind check read the same input.
		if _, _, err := SearchMetadata(data); err != nil {
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("SearchMetadata error %T %v is not a *SpecError", err, err)
			}
		}
		_ = IsSearchSpec(data)
		if !bytes.Contains(data, []byte("templateFile")) {
			if out, err := ResolveSearchTemplateFile(data, t.TempDir()); err != nil || !bytes.Equal(out, data) {
				t.Fatalf("a spec without templateFile was changed: %v", err)
			}
		}
		plan, err := ExpandSearch(data)
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) || len(se.Errors) == 0 {
				t.Fatalf("error %T %v is not a non-empty *SpecError", err, err)
			}
			return
		}
		for _, tr := range plan.Trials {
			if _, err := Parse(tr.Spec); err != nil {
				t.Fatalf("accepted search has a trial that does not parse: %v", err)
			}
		}
	})
}

// TestRandomExampleDrawsTheASHATrials: the benchmark's random search draws the same
// 24 trials as the ASHA example (same seed), each for the template's 30 epochs.
func TestRandomExampleDrawsTheASHATrials(t *testing.T) {
	asha, err := ExpandSearch(exampleSearch(t))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("examples", "search", "attrition-random.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err = ResolveSearchTemplateFile(raw, filepath.Join("examples", "search"))
	if err != nil {
		t.Fatal(err)
	}
	random, err := ExpandSearch(raw)
	if err != nil {
		t.Fatal(err)
	}
	if random.Algorithm != AlgorithmRandom || len(random.Trials) != len(asha.Trials) {
		t.Fatalf("random plan %+v", random)
	}
	for i := range asha.Trials {
		if !reflect.DeepEqual(asha.Trials[i].Parameters, random.Trials[i].Parameters) {
			t.Fatalf("trial %d: %v vs %v", i, asha.Trials[i].Parameters, random.Trials[i].Parameters)
		}
		j, err := Parse(random.Trials[i].Spec)
		if err != nil || j.Spec.Training.Epochs != 30 {
			t.Fatalf("random trial %d: %v", i, err)
		}
	}
}
