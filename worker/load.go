package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/cohort-dev/cohort/audit"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/model"
)

// datasets is the data of one job, preprocessed, with what the model and the export
// need to know about it.
type datasets struct {
	train, val, test *data.Dataset
	// preprocessing is the fitted transform saved with the model (JSON-serializable):
	// *data.Preprocessor (csv), imageInfo (idx) or *data.SequenceScaler (sequence_csv).
	preprocessing any
	// inputs is the number of features per row; outputs the model's output count.
	inputs, outputs int
	// labelMean and labelStd unscale regression targets (std 0: not scaled).
	labelMean, labelStd float64
	image               data.ImageShape
	// baselines are reference metrics reported next to the model's (for example the
	// seasonal-naive forecast's validation RMSE).
	baselines map[string]float64
	// classes are a classifier's label values (tabular), index = class id.
	classes []string
	// classWeights are spec.training.classWeights resolved per class id (nil: none).
	classWeights []float64
	// columns are the raw input columns of a tabular model and the feature indices each
	// owns (permutation importance shuffles them together).
	columns []audit.FeatureGroup
	// sensitive holds spec.audit's columns for the evaluated rows (the test set, else
	// the validation split), binned as spec.audit.bins says; nil without spec.audit.
	sensitive map[string][]string
}

// unscale maps a standardized regression value to target units.
func (ds *datasets) unscale(z float64) float64 {
	std := ds.labelStd
	if std == 0 {
		std = 1
	}
	return z*std + ds.labelMean
}

// imageInfo is the preprocessing record of an image model.
type imageInfo struct {
	Channels int     `json:"channels"`
	Height   int     `json:"height"`
	Width    int     `json:"width"`
	Scale    float64 `json:"scale"`
	Classes  int     `json:"classes"`
	Layout   string  `json:"layout"`
}

// dataSource opens data URIs: file:// from the local file system, confined to the data
// roots, s3:// through the S3 endpoint and credentials the worker was given.
type dataSource struct {
	ctx context.Context
	s3  *storage.S3Config
	// roots are the directories file:// URIs may name (nil: DefaultDataRoots).
	roots []string
}

// DefaultDataRoots returns the data roots of a worker configured with none: the
// process's working directory, so that the examples' relative URIs
// (file://jobs/data/attrition-sample.csv, run from the repository) keep working and
// nothing else on the machine is readable.
func DefaultDataRoots() []string {
	wd, err := os.Getwd()
	if err != nil {
		return nil // no roots: every file:// URI is refused
	}
	return []string{wd}
}

// open opens a data URI of the spec. field names the spec path for errors.
func (d dataSource) open(field, uri string) (io.ReadCloser, error) {
	scheme, _, _, err := jobs.ParseURI(uri)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if scheme == jobs.SchemeFile {
		roots := d.roots
		if len(roots) == 0 {
			roots = DefaultDataRoots()
		}
		// ParseURI accepts the scheme in any case; the file system reader wants it
		// in lower case.
		rc, _, err := storage.OpenFileURIWithin(jobs.SchemeFile+"://"+uri[len("file://"):], roots)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, markOpenError(err))
		}
		return rc, nil
	}
	if d.s3 == nil {
		return nil, &transientOpenError{err: fmt.Errorf("%s: %s: this worker has no S3 endpoint configured (--s3-endpoint)", field, uri)}
	}
	rc, err := storage.OpenURI(d.ctx, uri, *d.s3)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, markOpenError(err))
	}
	return rc, nil
}

// readTable reads a CSV data URI.
func (d dataSource) readTable(field, uri string) (*data.Table, error) {
	rc, err := d.open(field, uri)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	t, err := data.ReadCSV(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", field, uri, err)
	}
	return t, nil
}

// loadData reads and preprocesses a spec's data in its format.
func (d dataSource) loadData(s *jobs.Spec) (*datasets, error) {
	var ds *datasets
	var err error
	switch s.Data.Format {
	case jobs.FormatCSV:
		ds, err = d.loadTabular(s)
	case jobs.FormatIDX:
		ds, err = d.loadImages(s)
	case jobs.FormatSequenceCSV:
		ds, err = d.loadSequences(s)
	default:
		return nil, fmt.Errorf("spec.data.format: %q is not supported", s.Data.Format)
	}
	if err != nil {
		return nil, err
	}
	if ds.classWeights, err = resolveClassWeights(s, ds); err != nil {
		return nil, err
	}
	return ds, nil
}

// loadTabular reads and preprocesses CSV data: the validation split (by fraction, or a
// separate file), the optional test set, and the preprocessing fitted on the training
// rows only. With spec.audit it also keeps the sensitive columns of the evaluated rows
// (test set, else validation) and, unless audit.useAsFeatures, leaves them out of the
// model's inputs.
func (d dataSource) loadTabular(s *jobs.Spec) (*datasets, error) {
	cfg := data.TabularConfig{Label: s.Data.Label, Positive: s.Data.Positive, Task: s.Task, Exclude: s.Data.Exclude}
	ds := &datasets{}
	var pre *data.Preprocessor
	v := s.Data.Validation
	tbl, err := d.readTable("spec.data.train", s.Data.Train)
	if err != nil {
		return nil, err
	}
	if a := s.Audit; a != nil && !a.UseAsFeatures {
		// A sensitive column the table lacks is reported below, after the label's checks.
		cfg.Exclude = slices.Clone(cfg.Exclude)
		for _, c := range a.Sensitive {
			if !slices.Contains(cfg.Exclude, c) && tbl.ColumnIndex(c) >= 0 {
				cfg.Exclude = append(cfg.Exclude, c)
			}
		}
	}
	evalTbl, evalRows := tbl, []int(nil)
	if v.URI == "" {
		ds.train, ds.val, pre, evalRows, err = data.SplitTable(tbl, cfg, v.Fraction, v.Seed, v.Stratify)
		if err != nil {
			return nil, fmt.Errorf("spec.data.train: %w", err)
		}
	} else {
		if pre, err = data.FitPreprocessor(tbl, allRows(len(tbl.Rows)), cfg); err != nil {
			return nil, fmt.Errorf("spec.data.train: %w", err)
		}
		if ds.train, err = transform(pre, tbl); err != nil {
			return nil, fmt.Errorf("spec.data.train: %w", err)
		}
		if ds.val, evalTbl, err = d.loadTabularWith(pre, "spec.data.validation.uri", v.URI); err != nil {
			return nil, err
		}
		evalRows = allRows(len(evalTbl.Rows))
	}
	if s.Data.Test != "" {
		if ds.test, evalTbl, err = d.loadTabularWith(pre, "spec.data.test", s.Data.Test); err != nil {
			return nil, err
		}
		evalRows = allRows(len(evalTbl.Rows))
	}
	// The sensitive columns of the whole training table (its columns must exist and be
	// auditable), then those of the evaluated rows.
	var trainSensitive map[string][]string
	if s.Audit != nil {
		if trainSensitive, err = sensitiveValues(s.Audit, tbl, allRows(len(tbl.Rows)), "spec.data.train"); err != nil {
			return nil, err
		}
	}
	ds.preprocessing, ds.inputs, ds.outputs = pre, pre.Dim, 1
	if s.Task == jobs.TaskMulticlass {
		ds.outputs = len(pre.Classes)
	}
	ds.labelMean, ds.labelStd = pre.LabelMean, pre.LabelStd
	ds.classes = pre.Classes
	off := 0
	for _, c := range pre.Columns {
		n := 1
		if c.Kind == data.KindCategorical {
			n = len(c.Categories)
		}
		g := audit.FeatureGroup{Name: c.Name, Index: make([]int, n)}
		for i := range n {
			g.Index[i] = off + i
		}
		ds.columns = append(ds.columns, g)
		off += n
	}
	switch {
	case s.Audit == nil:
	case evalTbl == tbl: // the validation split of the training table
		ds.sensitive = make(map[string][]string, len(trainSensitive))
		for c, vals := range trainSensitive {
			ds.sensitive[c] = make([]string, len(evalRows))
			for k, r := range evalRows {
				ds.sensitive[c][k] = vals[r]
			}
		}
	default:
		field := "spec.data.validation.uri"
		if s.Data.Test != "" {
			field = "spec.data.test"
		}
		if ds.sensitive, err = sensitiveValues(s.Audit, evalTbl, evalRows, field); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// sensitiveValues returns the raw value of each sensitive column for the given rows of
// tbl, binned where spec.audit.bins says, and refuses a column with too many distinct
// values to audit by.
func sensitiveValues(a *jobs.Audit, tbl *data.Table, rows []int, field string) (map[string][]string, error) {
	out := make(map[string][]string, len(a.Sensitive))
	for i, c := range a.Sensitive {
		ci := tbl.ColumnIndex(c)
		if ci < 0 {
			return nil, fmt.Errorf("spec.audit.sensitive[%d]: column %q not found in %s%s", i, c, field, jobs.DidYouMean(c, tbl.Columns))
		}
		vals := make([]string, len(rows))
		for k, r := range rows {
			vals[k] = strings.TrimSpace(tbl.Rows[r][ci])
		}
		if edges, ok := a.Bins[c]; ok {
			binned, err := audit.Bin(vals, edges)
			if err != nil {
				return nil, fmt.Errorf("spec.audit.bins.%s: %s: %w", c, field, err)
			}
			vals = binned
		} else if err := audit.CheckSensitive(c, vals); err != nil {
			return nil, fmt.Errorf("spec.audit.sensitive[%d]: %s: %w", i, field, err)
		}
		out[c] = vals
	}
	return out, nil
}

// loadTabularWith reads a CSV and applies an already fitted preprocessing; it returns
// the table too.
func (d dataSource) loadTabularWith(p *data.Preprocessor, field, uri string) (*data.Dataset, *data.Table, error) {
	tbl, err := d.readTable(field, uri)
	if err != nil {
		return nil, nil, err
	}
	ds, err := transform(p, tbl)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", field, err)
	}
	return ds, tbl, nil
}

func transform(p *data.Preprocessor, tbl *data.Table) (*data.Dataset, error) {
	rows := allRows(len(tbl.Rows))
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

func allRows(n int) []int {
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
	}
	return rows
}

// loadIDXPair reads an IDX images file and its labels file (named by the MNIST
// convention: "images" -> "labels", "idx3" -> "idx1" in the file name).
func (d dataSource) loadIDXPair(field, uri string) (*data.Dataset, data.ImageShape, error) {
	labelsURI, err := data.LabelsPath(uri)
	if err != nil {
		return nil, data.ImageShape{}, fmt.Errorf("%s: %w", field, err)
	}
	img, err := d.open(field, uri)
	if err != nil {
		return nil, data.ImageShape{}, err
	}
	defer img.Close()
	lab, err := d.open(field+" (labels)", labelsURI)
	if err != nil {
		return nil, data.ImageShape{}, err
	}
	defer lab.Close()
	ds, shape, err := data.LoadIDX(img, lab, path.Base(uri), path.Base(labelsURI))
	if err != nil {
		return nil, data.ImageShape{}, fmt.Errorf("%s: %w", field, err)
	}
	return ds, shape, nil
}

// loadImages reads IDX images and labels, splitting validation off by fraction
// (stratified by class, seeded) unless a validation file is given.
func (d dataSource) loadImages(s *jobs.Spec) (*datasets, error) {
	all, shape, err := d.loadIDXPair("spec.data.train", s.Data.Train)
	if err != nil {
		return nil, err
	}
	ds := &datasets{image: shape, inputs: all.Dim}
	v := s.Data.Validation
	if v.URI == "" {
		labels := make([]string, all.N)
		for i, y := range all.Y {
			labels[i] = strconv.Itoa(int(y))
		}
		sp := data.SplitIndices(labels, v.Fraction, v.Seed, v.Stratify)
		ds.train, ds.val = subset(all, sp.Train), subset(all, sp.Validation)
	} else {
		ds.train = all
		if ds.val, _, err = d.loadIDXPair("spec.data.validation.uri", v.URI); err != nil {
			return nil, err
		}
	}
	if s.Data.Test != "" {
		if ds.test, _, err = d.loadIDXPair("spec.data.test", s.Data.Test); err != nil {
			return nil, err
		}
	}
	classes := data.NumClasses(all.Y)
	for _, other := range []*data.Dataset{ds.val, ds.test} {
		if other == nil {
			continue
		}
		if other.Dim != all.Dim {
			return nil, fmt.Errorf("spec.data: images of %d values per row in one file and %d in another", all.Dim, other.Dim)
		}
		classes = max(classes, data.NumClasses(other.Y))
	}
	switch s.Task {
	case jobs.TaskMulticlass:
		ds.outputs = classes
	case jobs.TaskBinary:
		if classes > 2 {
			return nil, fmt.Errorf("spec.task: binary_classification needs labels 0 and 1; the labels go up to %d", classes-1)
		}
		ds.outputs = 1
	default:
		ds.outputs = 1
	}
	ds.preprocessing = imageInfo{Channels: shape.Channels, Height: shape.Height, Width: shape.Width,
		Scale: 1.0 / 255, Classes: classes, Layout: "NCHW"}
	return ds, nil
}

// subset copies the given rows of ds.
func subset(ds *data.Dataset, rows []int) *data.Dataset {
	out := &data.Dataset{X: make([]float32, len(rows)*ds.Dim), Y: make([]float32, len(rows)), N: len(rows), Dim: ds.Dim}
	for i, r := range rows {
		copy(out.X[i*ds.Dim:(i+1)*ds.Dim], ds.X[r*ds.Dim:(r+1)*ds.Dim])
		out.Y[i] = ds.Y[r]
	}
	return out
}

// loadSequences turns time-ordered rows into windows, split by time so validation never
// leaks into training, with scaling fitted on the training windows only.
func (d dataSource) loadSequences(s *jobs.Spec) (*datasets, error) {
	sc := s.Data.SequenceCSV
	tbl, err := d.readTable("spec.data.train", s.Data.Train)
	if err != nil {
		return nil, err
	}
	cfg := data.SequenceConfig{
		Lookback: sc.Lookback, Horizon: sc.Horizon, Target: sc.Target, Features: sc.Features,
		Group: sc.Group, Time: sc.Time, Task: s.Task, ValidationFraction: s.Data.Validation.Fraction,
		Period: sc.Period, Baseline: sc.Baseline, Calendar: sc.Calendar,
	}
	seq, err := data.LoadSequences(tbl, cfg, s.Data.Train)
	if err != nil {
		return nil, fmt.Errorf("spec.data.train: %w", err)
	}
	ds := &datasets{train: seq.Train, val: seq.Validation, preprocessing: seq.Scaler, outputs: 1,
		labelMean: seq.Scaler.TargetMean, labelStd: seq.Scaler.TargetStd}
	// The seasonal-naive forecast's metrics are computed with the model's, on the same
	// rows (chief.seasonalNaiveMetrics).
	if seq.SkippedNoNaive > 0 {
		slog.Info("sequence windows without a seasonal-naive value left out (sequence_csv.baseline: seasonalNaive)",
			"windows", seq.SkippedNoNaive, "period", seq.Scaler.Period)
	}
	windows := func(field, uri string) (*data.Dataset, error) {
		t, err := d.readTable(field, uri)
		if err != nil {
			return nil, err
		}
		d, err := seq.Scaler.Windows(t, uri)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		return d, nil
	}
	if u := s.Data.Validation.URI; u != "" {
		if ds.val, err = windows("spec.data.validation.uri", u); err != nil {
			return nil, err
		}
	}
	if s.Data.Test != "" {
		if ds.test, err = windows("spec.data.test", s.Data.Test); err != nil {
			return nil, err
		}
	}
	if ds.train == nil || ds.train.N == 0 {
		return nil, fmt.Errorf("spec.data.train: no training windows")
	}
	if ds.val == nil || ds.val.N == 0 {
		return nil, fmt.Errorf("spec.data.validation: no validation windows (the validation period is too short for lookback %d and horizon %d)", sc.Lookback, sc.Horizon)
	}
	ds.inputs = ds.train.Dim
	return ds, nil
}

// buildModel builds the spec's model for the data's shape: the architecture
// modeldef.FromSpec describes (architectureOf), with the spec's training settings.
func buildModel(s *jobs.Spec, ds *datasets, rank int) (model.Model, error) {
	a, err := architectureOf(s, ds)
	if err != nil {
		return nil, err
	}
	m, err := model.New(a, modelOptions(s, rank))
	if err != nil {
		return nil, fmt.Errorf("spec.model.%s: %w", a.Kind, err)
	}
	return m, nil
}

// modelOptions are the training settings rank's model is built with.
func modelOptions(s *jobs.Spec, rank int) model.Options {
	return model.Options{
		BatchSize: s.Training.BatchSize, Dropout: specDropout(s),
		Seed: s.Training.Seed + int64(rank), // dropout masks differ per rank
	}
}

// specDropout is the dropout rate of the spec's model kind.
func specDropout(s *jobs.Spec) float64 {
	switch m := &s.Model; {
	case m.MLP != nil:
		return m.MLP.Dropout
	case m.CNN != nil:
		return m.CNN.Dropout
	case m.LSTM != nil:
		return m.LSTM.Dropout
	}
	return 0
}

// Preflight loads and checks a job's data exactly as its workers will (columns, label,
// classes, preprocessing, model shape) without training, with file:// data confined to
// DefaultDataRoots. `cohort dev --run` uses it to refuse bad local data before anything
// is submitted or written.
func Preflight(ctx context.Context, spec *jobs.TrainingJob, s3 *storage.S3Config) error {
	return PreflightWithRoots(ctx, spec, s3, nil)
}

// PreflightWithRoots is Preflight with file:// data confined to roots (nil:
// DefaultDataRoots), as TrainerConfig.DataRoots confines a worker's.
func PreflightWithRoots(ctx context.Context, spec *jobs.TrainingJob, s3 *storage.S3Config, roots []string) error {
	ds, err := dataSource{ctx: ctx, s3: s3, roots: roots}.loadData(&spec.Spec)
	if err != nil {
		return err
	}
	_, err = buildModel(&spec.Spec, ds, 0)
	return err
}
