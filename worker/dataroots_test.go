package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/model"
)

// testDataRoots are the data roots of the package's tests: the temporary directory
// (t.TempDir's data files) and the repository (the examples' data under jobs/).
func testDataRoots() []string {
	repo, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	return []string{os.TempDir(), repo}
}

// dataSpec is a tabular attrition job whose data URIs are the given ones (empty
// validation and test: none).
func dataSpec(t *testing.T, train, validation, test string) *jobs.TrainingJob {
	t.Helper()
	v := "{fraction: 0.2}"
	if validation != "" {
		v = "{uri: " + strconv.Quote(validation) + "}"
	}
	extra := ""
	if test != "" {
		extra = "\n    test: " + strconv.Quote(test)
	}
	spec, err := jobs.Parse([]byte(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: roots}
spec:
  task: binary_classification
  model: {mlp: {hidden: [4]}}
  data:
    train: ` + strconv.Quote(train) + `
    validation: ` + v + extra + `
    label: Attrition
    positive: "Yes"
  training: {epochs: 1, batchSize: 16}
`))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// TestDataRootsConfineFileURIs is the regression test of security issue #16: a job's
// file:// data read anything the worker could (file:///proc/self/environ put the
// worker's environment, S3 secrets included, into the job's status message).
func TestDataRootsConfineFileURIs(t *testing.T) {
	root := t.TempDir()
	sample, err := os.ReadFile(filepath.Join("..", "jobs", "data", "attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(root, "train.csv")
	if err := os.WriteFile(good, sample, 0o644); err != nil {
		t.Fatal(err)
	}
	goodURI := "file://" + filepath.ToSlash(good)
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "passwd.csv")); err != nil {
		t.Fatal(err)
	}
	roots := []string{root}
	for _, tc := range []struct {
		name, train, validation, test string
		field, uri                    string
	}{
		{name: "environ", train: "file:///proc/self/environ", field: "spec.data.train"},
		{name: "passwd", train: "file:///etc/passwd", field: "spec.data.train"},
		{name: "relative escape", train: "file://../../../../../etc/passwd", field: "spec.data.train"},
		{name: "dot-dot from inside the root", train: goodURI + "/../../../../etc/passwd", field: "spec.data.train"},
		{name: "symlink out of the root", train: "file://" + filepath.ToSlash(filepath.Join(root, "passwd.csv")), field: "spec.data.train"},
		{name: "validation", train: goodURI, validation: "file:///proc/self/environ", field: "spec.data.validation.uri"},
		{name: "test", train: goodURI, test: "file:///etc/passwd", field: "spec.data.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.train
			if tc.validation != "" {
				bad = tc.validation
			} else if tc.test != "" {
				bad = tc.test
			}
			_, err := dataSource{ctx: context.Background(), roots: roots}.loadData(&dataSpec(t, tc.train, tc.validation, tc.test).Spec)
			want := fmt.Sprintf("%s: %s is outside the data roots [%s]", tc.field, bad, root)
			if err == nil || err.Error() != want {
				t.Fatalf("error %v, want %q", err, want)
			}
			if !errors.Is(err, storage.ErrOutsideRoots) {
				t.Fatalf("error %v does not wrap storage.ErrOutsideRoots", err)
			}
		})
	}
	if _, err := (dataSource{ctx: context.Background(), roots: roots}).loadData(&dataSpec(t, goodURI, "", goodURI).Spec); err != nil {
		t.Fatalf("data inside the roots: %v", err)
	}
}

// TestDefaultDataRootsIsWorkingDirectory checks the default: the examples' relative
// URIs (file://jobs/data/..., run from the repository) work, nothing outside does.
func TestDefaultDataRootsIsWorkingDirectory(t *testing.T) {
	sample, err := os.ReadFile(filepath.Join("..", "jobs", "data", "attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.MkdirAll(filepath.Join("jobs", "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("jobs", "data", "attrition-sample.csv"), sample, 0o644); err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got := DefaultDataRoots(); len(got) != 1 || got[0] != wd {
		t.Fatalf("DefaultDataRoots() = %q, want [%s]", got, wd)
	}
	spec := dataSpec(t, "file://jobs/data/attrition-sample.csv", "", "")
	if err := Preflight(context.Background(), spec, nil); err != nil {
		t.Fatalf("the example's relative URI: %v", err)
	}
	err = Preflight(context.Background(), dataSpec(t, "file:///proc/self/environ", "", ""), nil)
	if want := "spec.data.train: file:///proc/self/environ is outside the data roots [" + wd + "]"; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}

// TestTrainerConfigDataRoots checks that a Trainer reads its data through
// TrainerConfig.DataRoots: the status message of a refused job names the roots and
// quotes nothing of the file.
func TestTrainerConfigDataRoots(t *testing.T) {
	root := t.TempDir()
	spec := `apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: roots}
spec:
  task: binary_classification
  model: {mlp: {hidden: [4]}}
  data: {train: "file:///proc/self/environ", label: Attrition, positive: "Yes"}
  training: {epochs: 1, batchSize: 16}
`
	a := &cohortv1.Assignment{
		Job:            &cohortv1.Job{Id: "j", SpecYaml: []byte(spec), WorkerCount: 1, ShardCount: 1},
		ShardAddresses: []string{"127.0.0.1:1"},
		Allocation:     &cohortv1.Allocation{Id: "j-w0", JobId: "j", Kind: cohortv1.TaskKind_TASK_KIND_WORKER, Generation: 1},
	}
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(TrainerConfig{Assignment: a, Store: store, DataRoots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Run(context.Background())
	if want := "spec.data.train: file:///proc/self/environ is outside the data roots [" + root + "]"; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}

// TestDataErrorsQuoteOnlyAnExcerpt checks that a data file's content reaches an error
// message only as a short excerpt: a hostile or mistaken file inside the roots (here a
// header line holding a secret) cannot be read back through the job's status.
func TestDataErrorsQuoteOnlyAnExcerpt(t *testing.T) {
	root := t.TempDir()
	const secret = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI"
	long := strings.Repeat("x", 64) + secret
	files := map[string]string{
		"header.csv":   long + ",b\n1,2\n",
		"dup.csv":      long + "," + long + "\n1,2\n",
		"label.csv":    "Attrition,b\n" + long + ",1\nYes,2\nNo,3\n",
		"category.csv": "Attrition,b\nYes,1\nNo,2\n",
		"value.csv":    "Attrition,b\nYes,1\n" + long + ",3\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	uri := func(name string) string { return "file://" + filepath.ToSlash(filepath.Join(root, name)) }
	for _, tc := range []struct{ name, train, test string }{
		{"column name", uri("header.csv"), ""},
		{"duplicate column name", uri("dup.csv"), ""},
		{"label value", uri("label.csv"), ""},
		{"unseen test class", uri("category.csv"), uri("value.csv")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dataSource{ctx: context.Background(), roots: []string{root}}.loadData(&dataSpec(t, tc.train, "", tc.test).Spec)
			if err == nil {
				t.Fatal("loaded")
			}
			if strings.Contains(err.Error(), "wJalr") || len(err.Error()) > 1024 {
				t.Fatalf("error quotes more than an excerpt: %v", err)
			}
		})
	}
}

// TestValidationAndModelLimitsAgree keeps jobs.MaxParams and jobs.MaxActivations, which
// Validate enforces at submission, equal to the limits the worker's models enforce.
func TestValidationAndModelLimitsAgree(t *testing.T) {
	if jobs.MaxParams != model.MaxParams || jobs.MaxActivations != model.MaxActivations {
		t.Fatalf("jobs.MaxParams %d, MaxActivations %d; model.MaxParams %d, MaxActivations %d",
			jobs.MaxParams, jobs.MaxActivations, model.MaxParams, model.MaxActivations)
	}
}
