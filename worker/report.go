package worker

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cohort-dev/cohort/audit"
	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/jobs"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
)

// evalSplit returns the split the report evaluates: the test set when the job has one,
// else the validation split, with its name and metric prefix.
func (c *chief) evalSplit() (*data.Dataset, string, string) {
	if c.ds.test != nil {
		return c.ds.test, audit.SplitTest, audit.PrefixTest
	}
	return c.ds.val, audit.SplitValidation, audit.PrefixValidation
}

// classNames returns a classifier's label values (the preprocessing's, or "0".."K-1"
// for images), or nil for regression.
func (c *chief) classNames() []string {
	switch c.t.spec.Spec.Task {
	case jobs.TaskRegression:
		return nil
	case jobs.TaskBinary:
		if len(c.ds.classes) == 2 {
			return c.ds.classes
		}
		return []string{"0", "1"}
	}
	if len(c.ds.classes) == c.m.OutputSize() {
		return c.ds.classes
	}
	names := make([]string, c.m.OutputSize())
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	return names
}

// predictor is the model under the final parameters as audit.Predictor; regression
// outputs are in target units.
func (c *chief) predictor() audit.Predictor {
	regression := c.t.spec.Spec.Task == jobs.TaskRegression
	return func(x []float32, n int, out []float32) error {
		if err := c.m.Predict(c.params, x, n, out); err != nil {
			return err
		}
		if regression {
			for i := range out[:n] {
				out[i] = float32(c.ds.unscale(float64(out[i])))
			}
		}
		return nil
	}
}

// auditConfig is the evaluation setting of the spec.
func auditConfig(s *jobs.Spec, split, prefix string, threshold float64) audit.Config {
	cfg := audit.DefaultConfig()
	cfg.Task, cfg.Split, cfg.Prefix = s.Task, split, prefix
	cfg.Resamples, cfg.Seed = jobs.DefaultBootstrapResamples, jobs.DefaultSeed
	if a := s.Audit; a != nil {
		cfg.Sensitive = a.Sensitive
		cfg.Intersectional = a.Intersectional
		cfg.MinGroupFraction = a.MinGroupFraction
		cfg.Threshold = a.Threshold
		cfg.Resamples, cfg.Seed = a.Bootstrap.Resamples, a.Bootstrap.Seed
		if g := a.Gate; g != nil {
			cfg.Gate = audit.GateConfig{MinImpactRatio: g.MinImpactRatio, MinAUC: g.MinAUC, MinAccuracy: g.MinAccuracy, MaxRMSE: g.MaxRMSE}
		}
	}
	if s.Export.Threshold != nil && s.Task == jobs.TaskBinary && threshold > 0 && threshold < 1 {
		// spec.export.threshold (fixed, or fitted on the validation split) is the
		// model's decision threshold: the audit's confusion matrix and selection rates
		// use it, as serving's label does.
		cfg.Threshold = threshold
	}
	return cfg
}

// buildReport evaluates the exported model (the best checkpoint's parameters, in
// c.params) on the test set (else the validation split):
// metrics with bootstrap confidence intervals, calibration, confusion matrix, the
// fairness audit and gate of spec.audit, permutation importance (tabular and sequence
// models) and integrated-gradients attributions (CNN).
func (c *chief) buildReport() (*audit.Report, error) {
	s := &c.t.spec.Spec
	ds, split, prefix := c.evalSplit()
	k := c.m.OutputSize()
	out := make([]float32, ds.N*k)
	if err := c.predictor()(ds.X, ds.N, out); err != nil {
		return nil, fmt.Errorf("worker: report: predict the %s split: %w", split, err)
	}
	in := audit.Input{Scores: make([]float64, len(out)), Labels: make([]float64, ds.N), Classes: c.classNames(), Groups: c.ds.sensitive}
	for i, v := range out {
		in.Scores[i] = float64(v)
	}
	for i, v := range ds.Y[:ds.N] {
		in.Labels[i] = float64(v)
		if s.Task == jobs.TaskRegression {
			in.Labels[i] = c.ds.unscale(in.Labels[i])
		}
	}
	r, err := audit.Evaluate(auditConfig(s, split, prefix, c.threshold), in)
	if err != nil {
		return nil, fmt.Errorf("worker: report: %w", err)
	}
	r.JobID, r.Name = c.t.job.GetId(), c.t.job.GetName()
	r.Model = audit.ModelInfo{Kind: modelKind(s), Step: c.total, Checkpoint: c.checkpoint}
	if e := c.exported; e != nil {
		r.Model.Step, r.Model.Checkpoint = e.GetStep(), e.GetCheckpoint()
	}
	r.Training = &audit.TrainingInfo{Data: s.Data.Train, Rows: c.ds.train.N, Date: time.Now().UTC().Format(time.DateOnly)}
	for _, col := range c.ds.columns {
		r.Training.Features = append(r.Training.Features, col.Name)
	}
	if sc := s.Data.SequenceCSV; sc != nil {
		if scaler, ok := c.ds.preprocessing.(*data.SequenceScaler); ok {
			r.Training.Features = slices.Clone(scaler.Features)
		}
	}

	oneClass := false
	if s.Task == jobs.TaskBinary {
		pos := 0
		for _, l := range in.Labels {
			if l == 1 {
				pos++
			}
		}
		oneClass = pos == 0 || pos == len(in.Labels)
	}
	if p := s.Explain.Permutation; p.Repeats > 0 && s.Model.CNN == nil && oneClass {
		// Importance measures the fall of AUC, which one class does not define.
		c.markUndefined("permutation_importance", fmt.Sprintf("the %s split holds one class only", split))
	} else if p.Repeats > 0 && s.Model.CNN == nil {
		groups, lags := c.ds.columns, []audit.FeatureGroup(nil)
		if s.Model.LSTM != nil {
			groups, lags = c.sequenceGroups()
		}
		r.ImportanceMetric, r.Importance, err = audit.PermutationImportance(c.predictor(), ds.X, ds.N, ds.Dim, k, in.Labels, s.Task, groups, p.Repeats, p.Seed)
		if err != nil {
			return nil, fmt.Errorf("worker: report: permutation importance: %w", err)
		}
		if len(lags) > 0 {
			if _, r.ImportanceByLag, err = audit.PermutationImportance(c.predictor(), ds.X, ds.N, ds.Dim, k, in.Labels, s.Task, lags, p.Repeats, p.Seed); err != nil {
				return nil, fmt.Errorf("worker: report: permutation importance by lag: %w", err)
			}
		}
		r.Explain = &audit.Explain{Permutation: &audit.PermutationInfo{Repeats: p.Repeats, Seed: p.Seed}}
	}
	if ig := s.Explain.IntegratedGradients; s.Model.CNN != nil && ig.SamplesPerClass > 0 {
		if r.Attribution, err = c.attributions(ds, ig); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// modelKind names the spec's model kind as the report does.
func modelKind(s *jobs.Spec) string {
	switch {
	case s.Model.CNN != nil:
		return export.KindCNN
	case s.Model.LSTM != nil:
		return export.KindLSTM
	}
	return export.KindMLP
}

// sequenceGroups returns an LSTM's importance groups: one per input feature (its value
// at every step of the window) and one per lag (every feature at one step; "lag 1" is
// the most recent step). Windows are time-major: step t's features are
// x[t*F : (t+1)*F].
func (c *chief) sequenceGroups() (features, lags []audit.FeatureGroup) {
	sc := c.t.spec.Spec.Data.SequenceCSV
	steps := sc.Lookback
	f := c.ds.inputs / steps
	names := make([]string, f)
	if scaler, ok := c.ds.preprocessing.(*data.SequenceScaler); ok && len(scaler.Features) == f {
		copy(names, scaler.Features)
	}
	for i := range names {
		if names[i] == "" {
			names[i] = "feature " + strconv.Itoa(i)
		}
	}
	for j := range f {
		g := audit.FeatureGroup{Name: names[j]}
		for t := range steps {
			g.Index = append(g.Index, t*f+j)
		}
		features = append(features, g)
	}
	for t := steps - 1; t >= 0; t-- {
		g := audit.FeatureGroup{Name: "lag " + strconv.Itoa(steps-t)}
		for j := range f {
			g.Index = append(g.Index, t*f+j)
		}
		lags = append(lags, g)
	}
	return features, lags
}

// attributions returns a CNN's mean absolute integrated-gradients attribution image per
// class, over the first SamplesPerClass evaluated images of each true class, explaining
// the probability of that class against the all-zero image.
func (c *chief) attributions(ds *data.Dataset, cfg jobs.IntegratedGradients) (*audit.Attribution, error) {
	card, err := c.modelCard()
	if err != nil {
		return nil, err
	}
	b, err := card.bundle(c.params)
	if err != nil {
		return nil, fmt.Errorf("worker: report: %w", err)
	}
	arch := card.Architecture
	w, err := arch.CheckWeights(b.Tensors)
	if err != nil {
		return nil, fmt.Errorf("worker: report: %w", err)
	}
	classes := c.classNames()
	att := &audit.Attribution{Method: "integrated_gradients", Baseline: "all-zero image", Steps: cfg.Steps,
		Channels: arch.Channels, Height: arch.Height, Width: arch.Width}
	// The first SamplesPerClass rows of each true class, explained in parallel on the
	// worker's threads; each class's sum is taken in row order, so the result does not
	// depend on the thread count.
	var rows []int
	counts := make([]int, len(classes))
	for row := 0; row < ds.N; row++ {
		if class := int(ds.Y[row]); class >= 0 && class < len(classes) && counts[class] < cfg.SamplesPerClass {
			rows = append(rows, row)
			counts[class]++
		}
	}
	attrs := make([][]float64, len(rows))
	errs := make([]error, len(rows))
	var wg sync.WaitGroup
	next := make(chan int)
	for range max(1, WorkerThreads(&c.t.spec.Spec)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x, base := make([]float64, ds.Dim), make([]float64, ds.Dim)
			for k := range next {
				row := rows[k]
				for i, v := range ds.X[row*ds.Dim : (row+1)*ds.Dim] {
					x[i] = float64(v)
				}
				output := int(ds.Y[row])
				if arch.Task == export.TaskBinary {
					output = 0 // the positive-class probability
				}
				a, err := arch.IntegratedGradientsWithin(w, x, base, output, cfg.Steps, cfg.Steps)
				attrs[k], errs[k] = a.Attr, err
			}
		}()
	}
	for k := range rows {
		next <- k
	}
	close(next)
	wg.Wait()
	sums := make([][]float64, len(classes))
	for k, row := range rows {
		if errs[k] != nil {
			return nil, fmt.Errorf("worker: report: integrated gradients of row %d: %w", row, errs[k])
		}
		class := int(ds.Y[row])
		if sums[class] == nil {
			sums[class] = make([]float64, ds.Dim)
		}
		for i, v := range attrs[k] {
			sums[class][i] += math.Abs(v)
		}
	}
	for class, name := range classes {
		if counts[class] == 0 {
			continue
		}
		for i := range sums[class] {
			sums[class][i] /= float64(counts[class])
		}
		att.Classes = append(att.Classes, audit.ClassAttribution{Class: class, Label: name, Images: counts[class], MeanAbs: sums[class]})
	}
	return att, nil
}

// gateResult is the report's gate as the job record holds it (nil: no gate asked for).
func gateResult(s *jobs.Spec, r *audit.Report) *cohortv1.GateResult {
	if s.Audit == nil || s.Audit.Gate == nil || r.Audit == nil || r.Audit.Gate == nil {
		return nil
	}
	return &cohortv1.GateResult{Passed: r.Audit.Gate.Passed, Reasons: append([]string(nil), r.Audit.Gate.Reasons...)}
}

// reportFiles renders report.json and the model card.
func (c *chief) reportFiles(r *audit.Report) (report, card []byte, err error) {
	var buf bytes.Buffer
	if err := audit.EncodeReport(&buf, r); err != nil {
		return nil, nil, fmt.Errorf("worker: encode %s: %w", storage.ReportFile, err)
	}
	report = buf.Bytes()
	return report, []byte(audit.ModelCard(r, audit.CardInfo{})), nil
}

// writeReport stores report.json and model_card.md under storage.AuditPrefix and returns the
// report's URI.
func (c *chief) writeReport(ctx context.Context, report, card []byte) (string, error) {
	prefix := storage.AuditPrefix(c.t.job.GetId())
	for name, b := range map[string][]byte{storage.ReportFile: report, storage.ModelCardFile: card} {
		if err := c.t.cfg.Store.Put(ctx, prefix+name, bytes.NewReader(b), int64(len(b))); err != nil {
			return "", fmt.Errorf("worker: write %s: %w", prefix+name, err)
		}
	}
	return c.t.cfg.Store.URI(storage.ReportKey(c.t.job.GetId())), nil
}
