package jobs

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// Limits that Validate enforces.
const (
	MaxPriority       = 1000
	MaxLayers         = 32
	MaxLayerWidth     = 65536
	MaxKernel         = 64
	MaxPool           = 16
	MaxSequenceWindow = 10000
	MaxEpochs         = 100000
	MaxBatchSize      = 65536
	MaxLearningRate   = 10
	MaxStaleness      = 10000
	MaxWorkers        = 1024
	MaxGPUsPerWorker  = 64
	MaxShards         = 256
	// MaxShardReplicas bounds spec.resources.parameterServers.replicas: a primary and
	// one backup.
	MaxShardReplicas  = 2
	MaxCheckpointKeep = 1000
	// MaxSensitive bounds spec.audit.sensitive (intersections grow as 2^n).
	MaxSensitive = 6
	// MaxAuditCategories is the most distinct values a sensitive column may have
	// without spec.audit.bins.
	MaxAuditCategories = 50
	// MaxBinEdges bounds each list of spec.audit.bins.
	MaxBinEdges = 100
	// MaxBootstrapResamples bounds spec.audit.bootstrap.resamples.
	MaxBootstrapResamples = 100000
	// MaxPermutationRepeats bounds spec.explain.permutation.repeats.
	MaxPermutationRepeats = 100
	// MaxIntegratedGradientsSteps bounds spec.explain.integratedGradients.steps.
	MaxIntegratedGradientsSteps = 1024
	// MaxSamplesPerClass bounds spec.explain.integratedGradients.samplesPerClass.
	MaxSamplesPerClass = 1000
	// MaxCPUMillis bounds the CPU of one task (1024 cores), so that sums over a job stay far
	// from overflow.
	MaxCPUMillis = 1024 * 1000
	// MaxMemoryBytes bounds the memory of one task (64 TiB).
	MaxMemoryBytes = 64 << 40
	// MaxParams is the most parameters a model may have: 128 Mi (512 MiB of float32
	// weights, and as much again for each optimizer slot), the workers' limit
	// (worker/model.MaxParams). Validate refuses a model that has more whatever its
	// data: it counts what the spec fixes (the hidden, convolution and dense layers,
	// the lookback) and takes the widths only the data tells (inputs, image size and
	// channels, outputs) as small as they can be.
	MaxParams = 1 << 27
	// MaxActivations bounds spec.training.batchSize times the widest layer (for an
	// LSTM, the activations of the unrolled graph): 64 Mi, the workers' limit
	// (worker/model.MaxActivations), checked as MaxParams is.
	MaxActivations = 1 << 26
)

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Validate checks the values of a job whose defaults are applied (as Parse does; call
// SetDefaults first for a job built in Go code). It reports every problem at once as a
// *SpecError, or returns nil. Lines are known only for a job that came from Parse.
func (j *TrainingJob) Validate() error {
	return j.validate().err()
}

// line returns the line of path, or of its closest ancestor that has one (0 if none).
func (j *TrainingJob) line(path string) int {
	for p := path; ; p = parentPath(p) {
		if l, ok := j.lines[p]; ok {
			return l
		}
		if p == "" {
			return 0
		}
	}
}

// validator collects FieldErrors with the job's line numbers.
type validator struct {
	j    *TrainingJob
	errs errorList
}

func (v *validator) add(path, format string, args ...any) {
	v.errs.add(path, v.j.line(path), format, args...)
}

func (v *validator) oneOf(path, value string, allowed []string) bool {
	if slices.Contains(allowed, value) {
		return true
	}
	if value == "" {
		v.add(path, "required; one of %s", strings.Join(allowed, ", "))
	} else {
		v.add(path, "%q is not one of %s", value, strings.Join(allowed, ", "))
	}
	return false
}

func (v *validator) intRange(path string, value, lo, hi int) bool {
	if value < lo || value > hi {
		switch {
		case lo == 1 && value < 1:
			v.add(path, "must be greater than 0, got %d", value)
		case value > hi:
			v.add(path, "must be at most %d, got %d", hi, value)
		default:
			v.add(path, "must be between %d and %d, got %d", lo, hi, value)
		}
		return false
	}
	return true
}

func (v *validator) dnsLabel(path, value string, required bool) {
	switch {
	case value == "":
		if required {
			v.add(path, "required")
		}
	case len(value) > 63:
		v.add(path, "must be at most 63 characters, got %d", len(value))
	case !dnsLabelRE.MatchString(value):
		v.add(path, "%q must consist of lowercase letters, digits and '-', and start and end with a letter or digit", value)
	}
}

func (v *validator) uri(path, value string) {
	if _, _, _, err := ParseURI(value); err != nil {
		v.add(path, "%v", err)
	}
}

func (v *validator) layers(path string, sizes []int, required bool) {
	if len(sizes) == 0 && required {
		v.add(path, "must list at least one layer")
	}
	if len(sizes) > MaxLayers {
		v.add(path, "at most %d layers, got %d", MaxLayers, len(sizes))
	}
	for i, n := range sizes {
		v.intRange(fmt.Sprintf("%s[%d]", path, i), n, 1, MaxLayerWidth)
	}
}

func (v *validator) dropout(path string, p float64) {
	if p < 0 || p >= 1 {
		v.add(path, "must be in [0, 1), got %g", p)
	}
}

func (v *validator) unitInterval(path string, x float64) {
	if x < 0 || x >= 1 {
		v.add(path, "must be in [0, 1), got %g", x)
	}
}

func (v *validator) names(path string, names []string) {
	seen := map[string]int{}
	for i, n := range names {
		p := fmt.Sprintf("%s[%d]", path, i)
		if n == "" {
			v.add(p, "must not be empty")
			continue
		}
		if first, dup := seen[n]; dup {
			v.add(p, "duplicate %q (also item %d)", n, first)
			continue
		}
		seen[n] = i
	}
}

// validate returns every problem of j.
func (j *TrainingJob) validate() errorList {
	v := &validator{j: j}
	if j.APIVersion != APIVersion {
		v.add("apiVersion", "must be %q, got %q", APIVersion, j.APIVersion)
	}
	if j.Kind != Kind {
		v.add("kind", "must be %q, got %q", Kind, j.Kind)
	}
	v.dnsLabel("metadata.name", j.Metadata.Name, true)
	v.dnsLabel("metadata.namespace", j.Metadata.Namespace, true)

	s := &j.Spec
	v.intRange("spec.priority", s.Priority, 0, MaxPriority)
	v.dnsLabel("spec.queue", s.Queue, true)
	v.oneOf("spec.task", s.Task, Tasks)
	model := v.model()
	v.data(model)
	v.training()
	v.modelSize(model)
	v.resources()

	if s.Checkpoint.EverySteps < 0 {
		v.add("spec.checkpoint.everySteps", "must be 0 (final checkpoint only) or more, got %d", s.Checkpoint.EverySteps)
	}
	v.intRange("spec.checkpoint.keep", s.Checkpoint.Keep, 1, MaxCheckpointKeep)
	v.intRange("spec.checkpoint.keepBest", s.Checkpoint.KeepBest, 1, MaxCheckpointKeep)
	v.scored("spec.checkpoint.scoreBy", "metric", s.Checkpoint.ScoreBy.Metric, s.Checkpoint.ScoreBy.Mode)
	v.earlyStopping()
	v.imbalance()
	v.compression()

	if len(s.Export.Formats) == 0 {
		v.add("spec.export.formats", "must list at least one of %s", strings.Join(ExportFormats, ", "))
	}
	v.names("spec.export.formats", s.Export.Formats)
	for i, f := range s.Export.Formats {
		if f != "" && !slices.Contains(ExportFormats, f) {
			v.add(fmt.Sprintf("spec.export.formats[%d]", i), "%q is not one of %s", f, strings.Join(ExportFormats, ", "))
		}
	}
	if pre := s.Export.ONNX.Preprocessing; v.oneOf("spec.export.onnx.preprocessing", pre, ONNXPreprocessings) &&
		pre != DefaultONNXPreprocessing && !slices.Contains(s.Export.Formats, ExportONNX) {
		v.add("spec.export.onnx.preprocessing", "%q applies only to the onnx format, which spec.export.formats does not list", pre)
	}
	v.audit(model)
	v.explain(model)
	return v.errs
}

// audit checks spec.audit; the columns themselves are checked against the data when
// it is read (worker.Preflight and the job's first step).
func (v *validator) audit(model string) {
	a := v.j.Spec.Audit
	if a == nil {
		return
	}
	s := &v.j.Spec
	const p = "spec.audit"
	if model != "" && model != "mlp" {
		v.add(p, "applies only to tabular (csv) jobs with an mlp model, not %s: image and sequence data have no per-row sensitive columns", model)
		return
	}
	switch {
	case len(a.Sensitive) == 0:
		v.add(p+".sensitive", "must list at least one column to audit by")
	case len(a.Sensitive) > MaxSensitive:
		v.add(p+".sensitive", "at most %d columns, got %d", MaxSensitive, len(a.Sensitive))
	}
	v.names(p+".sensitive", a.Sensitive)
	for i, c := range a.Sensitive {
		if c != "" && c == s.Data.Label {
			v.add(fmt.Sprintf("%s.sensitive[%d]", p, i), "%q is the label column: a model cannot be audited by what it predicts", c)
		}
	}
	if a.MinGroupFraction < 0 || a.MinGroupFraction >= 0.5 {
		v.add(p+".minGroupFraction", "must be in [0, 0.5), got %g", a.MinGroupFraction)
	}
	if a.Threshold <= 0 || a.Threshold >= 1 {
		v.add(p+".threshold", "must be between 0 and 1 (exclusive), got %g", a.Threshold)
	} else if a.Threshold != DefaultAuditThreshold && s.Task != TaskBinary && s.Task != "" {
		v.add(p+".threshold", "applies only to task %s, not %s", TaskBinary, s.Task)
	}
	for _, col := range slices.Sorted(maps.Keys(a.Bins)) {
		edges := a.Bins[col]
		bp := p + ".bins." + col
		if !slices.Contains(a.Sensitive, col) {
			v.add(bp, "%q is not one of spec.audit.sensitive (%s)", col, strings.Join(a.Sensitive, ", "))
		}
		switch {
		case len(edges) == 0:
			v.add(bp, "must list at least one edge")
		case len(edges) > MaxBinEdges:
			v.add(bp, "at most %d edges, got %d", MaxBinEdges, len(edges))
		}
		for i := 1; i < len(edges); i++ {
			if edges[i] <= edges[i-1] {
				v.add(fmt.Sprintf("%s[%d]", bp, i), "edges must be strictly increasing: %g follows %g", edges[i], edges[i-1])
				break
			}
		}
	}
	v.intRange(p+".bootstrap.resamples", a.Bootstrap.Resamples, 0, MaxBootstrapResamples)
	if g := a.Gate; g != nil {
		gp := p + ".gate"
		if g.MinImpactRatio == nil && g.MinAUC == nil && g.MinAccuracy == nil && g.MaxRMSE == nil {
			v.add(gp, "sets no figure: give at least one of minImpactRatio, minAUC, minAccuracy, maxRMSE (or remove the gate)")
		}
		if r := g.MinImpactRatio; r != nil {
			if *r <= 0 || *r > 1 {
				v.add(gp+".minImpactRatio", "must be greater than 0 and at most 1, got %g", *r)
			}
			if s.Task == TaskMulticlass {
				v.add(gp+".minImpactRatio", "applies to tasks %s and %s (selection or scoring rates), not %s", TaskBinary, TaskRegression, s.Task)
			}
		}
		if r := g.MinAUC; r != nil {
			if *r < 0 || *r > 1 {
				v.add(gp+".minAUC", "must be in [0, 1], got %g", *r)
			}
			if s.Task != TaskBinary && s.Task != "" {
				v.add(gp+".minAUC", "applies only to task %s, not %s", TaskBinary, s.Task)
			}
		}
		if r := g.MinAccuracy; r != nil {
			if *r < 0 || *r > 1 {
				v.add(gp+".minAccuracy", "must be in [0, 1], got %g", *r)
			}
			if s.Task == TaskRegression {
				v.add(gp+".minAccuracy", "applies only to classification tasks, not %s", s.Task)
			}
		}
		if r := g.MaxRMSE; r != nil {
			if *r <= 0 {
				v.add(gp+".maxRMSE", "must be greater than 0, got %g", *r)
			}
			if s.Task != TaskRegression && s.Task != "" {
				v.add(gp+".maxRMSE", "applies only to task %s, not %s", TaskRegression, s.Task)
			}
		}
	}
}

// explain checks spec.explain.
func (v *validator) explain(model string) {
	e := &v.j.Spec.Explain
	const p = "spec.explain"
	v.intRange(p+".permutation.repeats", e.Permutation.Repeats, 0, MaxPermutationRepeats)
	ig := &e.IntegratedGradients
	if model != "cnn" {
		if model != "" && *ig != (IntegratedGradients{}) {
			v.add(p+".integratedGradients", "applies only to a cnn model, not %s (tabular and sequence models get permutation importance)", model)
		}
		return
	}
	v.intRange(p+".integratedGradients.steps", ig.Steps, 1, MaxIntegratedGradientsSteps)
	v.intRange(p+".integratedGradients.samplesPerClass", ig.SamplesPerClass, 0, MaxSamplesPerClass)
}

// model checks spec.model and returns the kind set ("mlp", "cnn", "lstm"), or "" when not
// exactly one is.
func (v *validator) model() string {
	m := &v.j.Spec.Model
	var set []string
	if m.MLP != nil {
		set = append(set, "mlp")
		p := "spec.model.mlp"
		v.layers(p+".hidden", m.MLP.Hidden, false)
		v.oneOf(p+".activation", m.MLP.Activation, Activations)
		v.dropout(p+".dropout", m.MLP.Dropout)
	}
	if m.CNN != nil {
		set = append(set, "cnn")
		p := "spec.model.cnn"
		c := m.CNN
		if len(c.Conv) == 0 {
			v.add(p+".conv", "must list at least one convolution layer")
		}
		if len(c.Conv) > MaxLayers {
			v.add(p+".conv", "at most %d layers, got %d", MaxLayers, len(c.Conv))
		}
		for i, l := range c.Conv {
			lp := fmt.Sprintf("%s.conv[%d]", p, i)
			v.intRange(lp+".filters", l.Filters, 1, MaxLayerWidth)
			kernelOK := v.intRange(lp+".kernel", l.Kernel, 1, MaxKernel)
			v.intRange(lp+".stride", l.Stride, 1, MaxKernel)
			if l.Padding < 0 {
				v.add(lp+".padding", "must be 0 or more, got %d", l.Padding)
			} else if kernelOK && l.Padding >= l.Kernel {
				v.add(lp+".padding", "must be less than the kernel (%d), got %d", l.Kernel, l.Padding)
			}
		}
		v.intRange(p+".pool", c.Pool, 0, MaxPool)
		v.layers(p+".dense", c.Dense, false)
		v.oneOf(p+".activation", c.Activation, Activations)
		v.dropout(p+".dropout", c.Dropout)
	}
	if m.LSTM != nil {
		set = append(set, "lstm")
		p := "spec.model.lstm"
		v.layers(p+".hidden", m.LSTM.Hidden, true)
		v.layers(p+".dense", m.LSTM.Dense, false)
		v.dropout(p+".dropout", m.LSTM.Dropout)
	}
	switch len(set) {
	case 1:
		return set[0]
	case 0:
		v.add("spec.model", "exactly one of mlp, cnn, lstm must be set, found none")
	default:
		v.add("spec.model", "exactly one of mlp, cnn, lstm must be set, found %s", strings.Join(set, ", "))
	}
	return ""
}

// formatFor maps a model kind to the data format it reads.
var formatFor = map[string]string{"mlp": FormatCSV, "cnn": FormatIDX, "lstm": FormatSequenceCSV}

func (v *validator) data(model string) {
	s := &v.j.Spec
	d := &s.Data
	const p = "spec.data"
	// The checks that depend on the format run only when it is known to be right, so that a
	// wrong format is reported once rather than through every field it affects.
	formatOK := false
	switch {
	case d.Format == "" && model == "":
		// Nothing to infer the format from; the problem with spec.model is reported.
	case !v.oneOf(p+".format", d.Format, Formats):
	case model != "" && formatFor[model] != d.Format:
		v.add(p+".format", "model %s reads format %s, not %s", model, formatFor[model], d.Format)
	default:
		formatOK = true
	}
	if d.Train == "" {
		v.add(p+".train", "required: the training set's file:// or s3:// URI")
	} else {
		v.uri(p+".train", d.Train)
	}
	if d.Test != "" {
		v.uri(p+".test", d.Test)
	}

	val := &d.Validation
	vp := p + ".validation"
	switch {
	case val.URI != "" && val.Fraction != 0:
		v.add(vp, "set either fraction or uri, not both")
	case val.URI != "":
		v.uri(vp+".uri", val.URI)
		if val.Stratify {
			v.add(vp+".stratify", "applies only to a split by fraction, not to a validation uri")
		}
		if val.Seed != 0 {
			v.add(vp+".seed", "applies only to a split by fraction, not to a validation uri")
		}
	default:
		if val.Fraction <= 0 || val.Fraction >= 1 {
			v.add(vp+".fraction", "must be between 0 and 1 (exclusive), got %g", val.Fraction)
		}
		if val.Stratify && s.Task == TaskRegression {
			v.add(vp+".stratify", "applies only to classification tasks")
		}
	}

	switch {
	case !formatOK:
	case d.Format == FormatCSV:
		if d.Label == "" {
			v.add(p+".label", "required for format csv: the label column")
		}
	case d.Format == FormatIDX:
		if d.Label != "" {
			v.add(p+".label", "not used with format idx: the labels are part of the idx data")
		}
	case d.Format == FormatSequenceCSV:
		if d.Label != "" {
			v.add(p+".label", "not used with format sequence_csv: set sequence_csv.target")
		}
	}
	if d.Positive != "" && (s.Task == TaskMulticlass || s.Task == TaskRegression) {
		v.add(p+".positive", "applies only to task %s, not %s", TaskBinary, s.Task)
	}
	if len(d.Exclude) > 0 {
		if formatOK && d.Format != FormatCSV {
			v.add(p+".exclude", "applies only to format csv")
		}
		v.names(p+".exclude", d.Exclude)
		for i, c := range d.Exclude {
			if c != "" && c == d.Label {
				v.add(fmt.Sprintf("%s.exclude[%d]", p, i), "%q is the label column", c)
			}
		}
	}

	sq := d.SequenceCSV
	sp := p + ".sequence_csv"
	switch {
	case !formatOK:
	case sq == nil && d.Format == FormatSequenceCSV:
		v.add(sp, "required for format sequence_csv")
	case sq != nil && d.Format != FormatSequenceCSV:
		v.add(sp, "applies only to format sequence_csv, not %s", d.Format)
	}
	if sq != nil {
		v.intRange(sp+".lookback", sq.Lookback, 1, MaxSequenceWindow)
		v.intRange(sp+".horizon", sq.Horizon, 1, MaxSequenceWindow)
		if sq.Target == "" {
			v.add(sp+".target", "required: the column to predict")
		}
		v.names(sp+".features", sq.Features)
		if sq.Group != "" && sq.Group == sq.Time {
			v.add(sp+".time", "must differ from group (%q)", sq.Group)
		}
		v.intRange(sp+".period", sq.Period, 1, MaxSequenceWindow)
		if sq.Baseline != "" {
			if sq.Baseline != BaselineSeasonalNaive {
				v.add(sp+".baseline", "%q is not %s%s", sq.Baseline, BaselineSeasonalNaive, DidYouMean(sq.Baseline, []string{BaselineSeasonalNaive}))
			} else if s.Task != TaskRegression && s.Task != "" {
				v.add(sp+".baseline", "applies only to task %s, not %s", TaskRegression, s.Task)
			}
		}
		v.names(sp+".calendar", sq.Calendar)
		for i, c := range sq.Calendar {
			if c != "" && !slices.Contains(CalendarFeatures, c) {
				v.add(fmt.Sprintf("%s.calendar[%d]", sp, i), "%q is not one of %s", c, strings.Join(CalendarFeatures, ", "))
			}
		}
		if len(sq.Calendar) > 0 && sq.Time == "" {
			v.add(sp+".calendar", "needs sequence_csv.time, a column of dates")
		}
	}
}

func (v *validator) training() {
	t := &v.j.Spec.Training
	const p = "spec.training"
	v.intRange(p+".epochs", t.Epochs, 1, MaxEpochs)
	v.intRange(p+".batchSize", t.BatchSize, 1, MaxBatchSize)

	o := &t.Optimizer
	op := p + ".optimizer"
	nameOK := v.oneOf(op+".name", o.Name, Optimizers)
	// An unknown optimizer got no default learning rate; only a given one is checked.
	if (nameOK || o.LearningRate != 0) && (o.LearningRate <= 0 || o.LearningRate > MaxLearningRate) {
		v.add(op+".learningRate", "must be greater than 0 and at most %d, got %g", MaxLearningRate, o.LearningRate)
	}
	if o.WeightDecay < 0 {
		v.add(op+".weightDecay", "must be 0 or more, got %g", o.WeightDecay)
	}
	if !nameOK {
		// Which of the fields below apply is unknown.
	} else if o.Name == OptimizerMomentum {
		v.unitInterval(op+".momentum", o.Momentum)
	} else if o.Momentum != 0 {
		v.add(op+".momentum", "applies only to optimizer %s, not %s", OptimizerMomentum, o.Name)
	}
	adamOnly := []struct {
		name string
		val  float64
	}{{"beta1", o.Beta1}, {"beta2", o.Beta2}, {"epsilon", o.Epsilon}}
	if !nameOK {
		// As above.
	} else if o.Name == OptimizerAdam {
		v.unitInterval(op+".beta1", o.Beta1)
		v.unitInterval(op+".beta2", o.Beta2)
		if o.Epsilon <= 0 || o.Epsilon > 1 {
			v.add(op+".epsilon", "must be greater than 0 and at most 1, got %g", o.Epsilon)
		}
	} else {
		for _, f := range adamOnly {
			if f.val != 0 {
				v.add(op+"."+f.name, "applies only to optimizer %s, not %s", OptimizerAdam, o.Name)
			}
		}
	}

	c := &t.Consistency
	cp := p + ".consistency"
	v.oneOf(cp+".mode", c.Mode, ConsistencyModes)
	if c.Mode == ConsistencyBounded {
		v.intRange(cp+".staleness", c.Staleness, 1, MaxStaleness)
	} else if c.Staleness != 0 {
		v.add(cp+".staleness", "applies only to mode bounded; must be 0 with mode %s, got %d", c.Mode, c.Staleness)
	}
}

// scored checks a validation metric and its direction (checkpoint.scoreBy,
// training.earlyStopping): the metric must be one the task reports, and the mode, which
// only confirms it, its direction.
func (v *validator) scored(path, field, metric, mode string) {
	task := v.j.Spec.Task
	allowed := ValidationMetrics(task)
	if allowed == nil {
		return // spec.task is reported
	}
	mp := path + "." + field
	switch {
	case metric == "":
		v.add(mp, "required; one of %s", strings.Join(allowed, ", "))
		return
	case !slices.Contains(allowed, metric):
		why := "is not a validation metric of task " + task
		if strings.HasPrefix(metric, "test_") || strings.HasPrefix(metric, "train_") || metric == "loss" {
			why = "is not a validation metric (only the validation split may choose checkpoints or stop training)"
		}
		v.add(mp, "%q %s; one of %s", metric, why, strings.Join(allowed, ", "))
		return
	}
	want := MetricMode(metric)
	switch {
	case !slices.Contains(Modes, mode):
		v.oneOf(path+".mode", mode, Modes)
	case mode != want:
		better := "higher"
		if want == ModeMin {
			better = "lower"
		}
		v.add(path+".mode", "%q is the wrong direction for %s (%s is better): use %s or leave mode out", mode, metric, better, want)
	}
}

// earlyStopping checks spec.training.earlyStopping.
func (v *validator) earlyStopping() {
	t := &v.j.Spec.Training
	es := t.EarlyStopping
	if es == nil {
		return
	}
	const p = "spec.training.earlyStopping"
	v.scored(p, "monitor", es.Monitor, es.Mode)
	v.intRange(p+".patience", es.Patience, 0, MaxEpochs)
	if es.MinDelta < 0 {
		v.add(p+".minDelta", "must be 0 or more, got %g", es.MinDelta)
	}
	switch {
	case es.StartEpoch < 0:
		v.add(p+".startEpoch", "must be 0 or more, got %d", es.StartEpoch)
	case t.Epochs >= 1 && es.StartEpoch >= t.Epochs:
		v.add(p+".startEpoch", "must be less than spec.training.epochs (%d), got %d: no epoch would be monitored", t.Epochs, es.StartEpoch)
	}
}

func (v *validator) resources() {
	r := &v.j.Spec.Resources
	const wp = "spec.resources.workers"
	w := &r.Workers
	if v.intRange(wp+".count", w.Count, 1, MaxWorkers) {
		if w.Min < 1 || w.Min > w.Count {
			v.add(wp+".min", "must be between 1 and count (%d), got %d", w.Count, w.Min)
		}
		if w.Max < w.Count || w.Max > MaxWorkers {
			v.add(wp+".max", "must be between count (%d) and %d, got %d", w.Count, MaxWorkers, w.Max)
		}
	}
	v.intRange(wp+".gpus", w.GPUs, 0, MaxGPUsPerWorker)
	v.cpu(wp+".cpu", w.CPU)
	v.memory(wp+".memory", w.Memory)
	if w.GPUModel != "" || w.GPUMemory != "" {
		if w.GPUs == 0 {
			v.add(wp+".gpus", "must be at least 1 when gpuModel or gpuMemory is set")
		}
		if len(w.GPUModel) > 128 {
			v.add(wp+".gpuModel", "must be at most 128 bytes, got %d", len(w.GPUModel))
		}
		if w.GPUMemory != "" {
			v.memory(wp+".gpuMemory", w.GPUMemory)
		}
	}
	v.placement()
	v.restartPolicy()

	const pp = "spec.resources.parameterServers"
	ps := &r.ParameterServers
	v.intRange(pp+".shards", ps.Shards, 1, MaxShards)
	v.intRange(pp+".replicas", ps.Replicas, 1, MaxShardReplicas)
	v.cpu(pp+".cpu", ps.CPU)
	v.memory(pp+".memory", ps.Memory)
}

// labelKey and labelValue are the forms of a node-selector pair (Kubernetes-like).
var (
	labelKey   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$`)
	labelValue = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$`)
)

func (v *validator) restartPolicy() {
	if rp := v.j.Spec.RestartPolicy; rp != nil {
		v.intRange("spec.restartPolicy.maxRestarts", rp.MaxRestarts, 0, MaxRestartsLimit)
	}
}

func (v *validator) placement() {
	const pp = "spec.placement.nodeSelector"
	sel := v.j.Spec.Placement.NodeSelector
	if len(sel) > MaxNodeSelectorLabels {
		v.add(pp, "must have at most %d labels, got %d", MaxNodeSelectorLabels, len(sel))
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !labelKey.MatchString(k) {
			v.add(pp, "label key %q must be 1-253 characters of letters, digits, '.', '_', '-', '/', starting and ending with a letter or digit", k)
		}
		if !labelValue.MatchString(sel[k]) {
			v.add(pp+"."+k, "label value %q must be at most 63 characters of letters, digits, '.', '_', '-', starting and ending with a letter or digit", sel[k])
		}
	}
}

func (v *validator) cpu(path, s string) {
	m, err := ParseCPU(s)
	switch {
	case err != nil:
		v.add(path, "%v", err)
	case m <= 0:
		v.add(path, "must be greater than 0, got %q", s)
	case m > MaxCPUMillis:
		v.add(path, "must be at most %d cores, got %q", MaxCPUMillis/1000, s)
	}
}

func (v *validator) memory(path, s string) {
	b, err := ParseMemory(s)
	switch {
	case err != nil:
		v.add(path, "%v", err)
	case b <= 0:
		v.add(path, "must be greater than 0, got %q", s)
	case b > MaxMemoryBytes:
		v.add(path, "must be at most 64Ti, got %q", s)
	}
}
