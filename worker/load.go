package worker

import (
	"fmt"
	"io"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/model"
)

// openData opens a data URI of the spec. field names the spec path for errors.
func openData(field, uri string) (io.ReadCloser, error) {
	scheme, _, _, err := jobs.ParseURI(uri)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	switch scheme {
	case "file":
		rc, _, err := storage.OpenFileURI(uri)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return rc, nil
	default:
		return nil, fmt.Errorf("%s: %s:// data is not supported by this worker yet", field, scheme)
	}
}

// loadTabular reads and preprocesses the CSV data of a spec: the validation split (by
// fraction, or a separate file), the optional test set, and the preprocessing fitted on
// the training rows only.
func loadTabular(s *jobs.Spec) (*datasets, error) {
	if s.Data.Format != "csv" {
		return nil, fmt.Errorf("spec.data.format: %q is not supported by this worker yet", s.Data.Format)
	}
	cfg := data.TabularConfig{Label: s.Data.Label, Positive: s.Data.Positive, Task: s.Task, Exclude: s.Data.Exclude}
	rc, err := openData("spec.data.train", s.Data.Train)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	ds := &datasets{}
	v := s.Data.Validation
	if v.URI == "" {
		ds.train, ds.val, ds.pre, err = data.LoadTabular(rc, cfg, v.Fraction, v.Seed, v.Stratify)
		if err != nil {
			return nil, fmt.Errorf("spec.data.train: %w", err)
		}
	} else {
		tbl, err := data.ReadCSV(rc)
		if err != nil {
			return nil, fmt.Errorf("spec.data.train: %w", err)
		}
		all := make([]int, len(tbl.Rows))
		for i := range all {
			all[i] = i
		}
		if ds.pre, err = data.FitPreprocessor(tbl, all, cfg); err != nil {
			return nil, fmt.Errorf("spec.data.train: %w", err)
		}
		if ds.train, err = transform(ds.pre, tbl); err != nil {
			return nil, fmt.Errorf("spec.data.train: %w", err)
		}
		if ds.val, err = loadWith(ds.pre, "spec.data.validation.uri", v.URI); err != nil {
			return nil, err
		}
	}
	if s.Data.Test != "" {
		if ds.test, err = loadWith(ds.pre, "spec.data.test", s.Data.Test); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// loadWith reads a CSV and applies an already fitted preprocessing.
func loadWith(p *data.Preprocessor, field, uri string) (*data.Dataset, error) {
	rc, err := openData(field, uri)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	tbl, err := data.ReadCSV(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	ds, err := transform(p, tbl)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return ds, nil
}

func transform(p *data.Preprocessor, tbl *data.Table) (*data.Dataset, error) {
	rows := make([]int, len(tbl.Rows))
	for i := range rows {
		rows[i] = i
	}
	x, err := p.Transform(tbl, rows)
	if err != nil {
		return nil, err
	}
	y, err := p.Labels(tbl, rows)
	if err != nil {
		return nil, err
	}
	return &data.Dataset{X: x, Y: y, N: len(rows), Dim: p.Dim}, nil
}

// buildModel builds the spec's model for the preprocessed input width.
func buildModel(s *jobs.Spec, pre *data.Preprocessor, rank int) (model.Model, error) {
	if s.Model.MLP == nil {
		return nil, fmt.Errorf("spec.model: only mlp models are supported by this worker yet")
	}
	outputs := 1
	if s.Task == jobs.TaskMulticlass {
		outputs = len(pre.Classes)
	}
	m, err := model.NewMLP(model.MLPConfig{
		Inputs:     pre.Dim,
		Hidden:     s.Model.MLP.Hidden,
		Activation: s.Model.MLP.Activation,
		Outputs:    outputs,
		Task:       s.Task,
		BatchSize:  s.Training.BatchSize,
		Dropout:    s.Model.MLP.Dropout,
		Seed:       s.Training.Seed + int64(rank),
	})
	if err != nil {
		return nil, fmt.Errorf("spec.model.mlp: %w", err)
	}
	return m, nil
}

// Preflight loads and checks a job's data exactly as its workers will (columns, label,
// classes, preprocessing) without training. `cohort dev --run` uses it to refuse bad
// local data before anything is submitted or written.
func Preflight(spec *jobs.TrainingJob) error {
	ds, err := loadTabular(&spec.Spec)
	if err != nil {
		return err
	}
	_, err = buildModel(&spec.Spec, ds.pre, 0)
	return err
}
