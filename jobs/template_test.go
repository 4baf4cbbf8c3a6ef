package jobs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"google.golang.org/protobuf/proto"
)

func TestJobTemplate(t *testing.T) {
	tests := []struct {
		file string
		want *cohortv1.Job
	}{
		{"attrition-mlp.yaml", &cohortv1.Job{
			Namespace: "default", Name: "attrition-mlp", Priority: 50, Queue: "default",
			WorkerCount: 2, ShardCount: 2,
			WorkerResources: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 1 << 30},
			ShardResources:  &cohortv1.Resources{CpuMillis: 500, MemoryBytes: 512 << 20},
			MaxRestarts:     DefaultMaxRestarts,
			MinWorkers:      1, MaxWorkers: 4,
		}},
		{"document-cnn.yaml", &cohortv1.Job{
			Namespace: "default", Name: "hr-forms-cnn", Priority: 0, Queue: "default",
			WorkerCount: 2, ShardCount: 4,
			WorkerResources: &cohortv1.Resources{CpuMillis: 4000, MemoryBytes: 8 << 30, Gpus: 1},
			ShardResources:  &cohortv1.Resources{CpuMillis: 500, MemoryBytes: 512 << 20},
			MaxRestarts:     DefaultMaxRestarts,
			MinWorkers:      2, MaxWorkers: 8,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("examples", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			j := mustParse(t, string(data))
			got, err := j.JobTemplate()
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tt.want) {
				t.Fatalf("JobTemplate() = %v\nwant %v", got, tt.want)
			}
		})
	}
}

// TestGoBuiltJob covers a job built in Go code: SetDefaults fills the zero values, Validate
// reports problems without lines, and JobTemplate refuses an invalid job.
func TestGoBuiltJob(t *testing.T) {
	j := &TrainingJob{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: "built"},
		Spec: Spec{
			Task:  TaskMulticlass,
			Model: Model{MLP: &MLP{Hidden: []int{8}}},
			Data:  Data{Train: "s3://bkt/train.csv", Label: "class"},
		},
	}
	if err := j.Validate(); err == nil {
		t.Fatal("Validate before SetDefaults succeeded; want errors for the unset fields")
	}
	j.SetDefaults()
	if err := j.Validate(); err != nil {
		t.Fatalf("Validate after SetDefaults: %v", err)
	}
	if v := j.Spec.Data.Validation; v != (Validation{Fraction: 0.2, Seed: 42, Stratify: true}) {
		t.Fatalf("validation = %+v", v)
	}
	before := *j
	j.SetDefaults()
	if j.Spec.Training != before.Spec.Training || j.Spec.Resources != before.Spec.Resources {
		t.Fatal("SetDefaults is not idempotent")
	}
	if _, err := j.JobTemplate(); err != nil {
		t.Fatalf("JobTemplate: %v", err)
	}

	j.Spec.Training.Epochs = -1
	j.Spec.Resources.Workers.Memory = "lots"
	_, err := j.JobTemplate()
	var se *SpecError
	if !errors.As(err, &se) || len(se.Errors) != 2 {
		t.Fatalf("JobTemplate of an invalid job: %v; want a SpecError with 2 problems", err)
	}
	for _, fe := range se.Errors {
		if fe.Line != 0 {
			t.Errorf("%s: a Go-built job has no lines", fe.Error())
		}
	}
	if se.Errors[0].Path != "spec.training.epochs" || se.Errors[1].Path != "spec.resources.workers.memory" {
		t.Fatalf("paths = %q, %q", se.Errors[0].Path, se.Errors[1].Path)
	}
}
