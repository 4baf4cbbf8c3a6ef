package worker

import (
	"context"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/model"
)

// BenchData is what `cohort bench compute` needs to time a job's model without a
// cluster: the model a rank-0 worker builds and the preprocessed training rows it
// trains on.
type BenchData struct {
	// Model is the job's model, built exactly as a worker of rank 0 builds it.
	Model model.Model
	// X holds N rows of Dim preprocessed features, row-major; Y the N labels.
	X, Y []float32
	// N is the number of training rows, Dim the number of features per row.
	N, Dim int
	// FLOPsPerRow is the floating-point work of one training step per row in the
	// model's matrix products (modeldef.Architecture.TrainFLOPs); 0 when unknown.
	FLOPsPerRow float64
}

// LoadBench reads and preprocesses a job's training data the way its workers do (same
// loaders, same preprocessing) and builds its model. s3 may be nil when the data is
// local.
//
// It runs as the user who runs `cohort bench`, on their files: file:// data is not
// confined to data roots (a node agent's training tasks are; see TrainerConfig).
func LoadBench(ctx context.Context, spec *jobs.TrainingJob, s3 *storage.S3Config) (*BenchData, error) {
	return LoadBenchOn(ctx, spec, s3, CPU())
}

// WorkerThreads is how many goroutines a worker of the job splits each step over: its
// CPU request (spec.resources.workers.cpu) rounded up to whole cores, at least 1.
func WorkerThreads(s *jobs.Spec) int {
	millis, err := jobs.ParseCPU(s.Resources.Workers.CPU)
	if err != nil || millis <= 0 {
		return 1
	}
	return int((millis + 999) / 1000)
}
