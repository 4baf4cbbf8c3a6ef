package jobs

import "strconv"

// Default values applied to fields a spec leaves out.
const (
	DefaultNamespace          = "default"
	DefaultQueue              = "default"
	DefaultValidationFraction = 0.2
	DefaultSeed               = 42
	DefaultEpochs             = 10
	DefaultBatchSize          = 32
	DefaultOptimizer          = OptimizerAdam
	DefaultConsistency        = ConsistencySync
	DefaultActivation         = ActivationReLU
	DefaultWorkerCPU          = "1"
	DefaultWorkerMemory       = "1Gi"
	DefaultShardCPU           = "500m"
	DefaultShardMemory        = "512Mi"
	DefaultCheckpointKeep     = 3
	// DefaultKeepBest is spec.checkpoint.keepBest.
	DefaultKeepBest = 1
	// DefaultPatience is spec.training.earlyStopping.patience.
	DefaultPatience     = 5
	DefaultExportFormat = ExportSafetensors
	// DefaultONNXPreprocessing is spec.export.onnx.preprocessing.
	DefaultONNXPreprocessing = ONNXPreprocessingEmbedded
	// DefaultMinGroupFraction is spec.audit.minGroupFraction (the 2% of NYC Local Law 144).
	DefaultMinGroupFraction = 0.02
	// DefaultAuditThreshold is spec.audit.threshold.
	DefaultAuditThreshold = 0.5
	// DefaultBootstrapResamples is spec.audit.bootstrap.resamples.
	DefaultBootstrapResamples = 1000
	// DefaultPermutationRepeats is spec.explain.permutation.repeats.
	DefaultPermutationRepeats = 5
	// DefaultPermutationSeed is spec.explain.permutation.seed.
	DefaultPermutationSeed = 1
	// DefaultIntegratedGradientsSteps is spec.explain.integratedGradients.steps.
	DefaultIntegratedGradientsSteps = 32
	// DefaultSamplesPerClass is spec.explain.integratedGradients.samplesPerClass.
	DefaultSamplesPerClass = 8
)

// SetDefaults fills in the defaults of a job built in Go code, where a zero value means
// "not set" (so a zero seed becomes 42 and, for a classification task split by fraction, a
// false stratify becomes true). Parse applies the same defaults but only to fields the
// document leaves out, so a spec can set a zero value explicitly. SetDefaults is idempotent.
func (j *TrainingJob) SetDefaults() {
	j.applyDefaults(func(path string) bool {
		_, ok := j.lines[path]
		return ok
	})
}

// applyDefaults sets every default whose field is both zero and not set explicitly, as
// reported by has (which takes a field path).
func (j *TrainingJob) applyDefaults(has func(path string) bool) {
	unset := func(path string, zero bool) bool { return zero && !has(path) }
	setStr := func(path string, p *string, def string) {
		if unset(path, *p == "") {
			*p = def
		}
	}
	setInt := func(path string, p *int, def int) {
		if unset(path, *p == 0) {
			*p = def
		}
	}
	setFloat := func(path string, p *float64, def float64) {
		if unset(path, *p == 0) {
			*p = def
		}
	}

	setStr("metadata.namespace", &j.Metadata.Namespace, DefaultNamespace)
	s := &j.Spec
	setStr("spec.queue", &s.Queue, DefaultQueue)

	if m := s.Model.MLP; m != nil {
		setStr("spec.model.mlp.activation", &m.Activation, DefaultActivation)
	}
	if c := s.Model.CNN; c != nil {
		setStr("spec.model.cnn.activation", &c.Activation, DefaultActivation)
		for i := range c.Conv {
			setInt("spec.model.cnn.conv["+strconv.Itoa(i)+"].stride", &c.Conv[i].Stride, 1)
		}
	}

	d := &s.Data
	if unset("spec.data.format", d.Format == "") {
		switch {
		case s.Model.MLP != nil && s.Model.CNN == nil && s.Model.LSTM == nil:
			d.Format = FormatCSV
		case s.Model.CNN != nil && s.Model.MLP == nil && s.Model.LSTM == nil:
			d.Format = FormatIDX
		case s.Model.LSTM != nil && s.Model.MLP == nil && s.Model.CNN == nil:
			d.Format = FormatSequenceCSV
		}
	}
	v := &d.Validation
	if unset("spec.data.validation.fraction", v.Fraction == 0) && unset("spec.data.validation.uri", v.URI == "") {
		v.Fraction = DefaultValidationFraction
	}
	if v.URI == "" {
		if unset("spec.data.validation.seed", v.Seed == 0) {
			v.Seed = DefaultSeed
		}
		if unset("spec.data.validation.stratify", !v.Stratify) && isClassification(s.Task) {
			v.Stratify = true
		}
	}

	t := &s.Training
	setInt("spec.training.epochs", &t.Epochs, DefaultEpochs)
	setInt("spec.training.batchSize", &t.BatchSize, DefaultBatchSize)
	if unset("spec.training.seed", t.Seed == 0) {
		t.Seed = DefaultSeed
	}
	o := &t.Optimizer
	setStr("spec.training.optimizer.name", &o.Name, DefaultOptimizer)
	switch o.Name {
	case OptimizerAdam:
		setFloat("spec.training.optimizer.learningRate", &o.LearningRate, 0.001)
		setFloat("spec.training.optimizer.beta1", &o.Beta1, 0.9)
		setFloat("spec.training.optimizer.beta2", &o.Beta2, 0.999)
		setFloat("spec.training.optimizer.epsilon", &o.Epsilon, 1e-8)
	case OptimizerMomentum:
		setFloat("spec.training.optimizer.learningRate", &o.LearningRate, 0.01)
		setFloat("spec.training.optimizer.momentum", &o.Momentum, 0.9)
	case OptimizerSGD:
		setFloat("spec.training.optimizer.learningRate", &o.LearningRate, 0.01)
	}
	setStr("spec.training.consistency.mode", &t.Consistency.Mode, DefaultConsistency)

	w := &s.Resources.Workers
	setInt("spec.resources.workers.count", &w.Count, 1)
	setInt("spec.resources.workers.min", &w.Min, w.Count)
	setInt("spec.resources.workers.max", &w.Max, w.Count)
	setStr("spec.resources.workers.cpu", &w.CPU, DefaultWorkerCPU)
	setStr("spec.resources.workers.memory", &w.Memory, DefaultWorkerMemory)
	ps := &s.Resources.ParameterServers
	setInt("spec.resources.parameterServers.shards", &ps.Shards, 1)
	setInt("spec.resources.parameterServers.replicas", &ps.Replicas, 1)
	setStr("spec.resources.parameterServers.cpu", &ps.CPU, DefaultShardCPU)
	setStr("spec.resources.parameterServers.memory", &ps.Memory, DefaultShardMemory)

	ck := &s.Checkpoint
	setInt("spec.checkpoint.keep", &ck.Keep, DefaultCheckpointKeep)
	setInt("spec.checkpoint.keepBest", &ck.KeepBest, DefaultKeepBest)
	setStr("spec.checkpoint.scoreBy.metric", &ck.ScoreBy.Metric, PrimaryMetric(s.Task))
	setStr("spec.checkpoint.scoreBy.mode", &ck.ScoreBy.Mode, MetricMode(ck.ScoreBy.Metric))
	if es := t.EarlyStopping; es != nil {
		const p = "spec.training.earlyStopping."
		setStr(p+"monitor", &es.Monitor, ck.ScoreBy.Metric)
		setStr(p+"mode", &es.Mode, MetricMode(es.Monitor))
		setInt(p+"patience", &es.Patience, DefaultPatience)
	}
	if sq := s.Data.SequenceCSV; sq != nil {
		setInt("spec.data.sequence_csv.period", &sq.Period, DefaultSeasonPeriod)
	}
	if th := s.Export.Threshold; th != nil && th.Optimize != nil && th.Optimize.Objective == "" && th.Optimize.PrecisionAtRecall != 0 {
		th.Optimize.Objective = ThresholdPrecisionAtRecall
	}
	if unset("spec.export.formats", len(s.Export.Formats) == 0) {
		s.Export.Formats = []string{DefaultExportFormat}
	}
	setStr("spec.export.onnx.preprocessing", &s.Export.ONNX.Preprocessing, DefaultONNXPreprocessing)

	if a := s.Audit; a != nil {
		setFloat("spec.audit.minGroupFraction", &a.MinGroupFraction, DefaultMinGroupFraction)
		setFloat("spec.audit.threshold", &a.Threshold, DefaultAuditThreshold)
		setInt("spec.audit.bootstrap.resamples", &a.Bootstrap.Resamples, DefaultBootstrapResamples)
		if unset("spec.audit.bootstrap.seed", a.Bootstrap.Seed == 0) {
			a.Bootstrap.Seed = DefaultSeed
		}
	}
	e := &s.Explain
	setInt("spec.explain.permutation.repeats", &e.Permutation.Repeats, DefaultPermutationRepeats)
	if unset("spec.explain.permutation.seed", e.Permutation.Seed == 0) {
		e.Permutation.Seed = DefaultPermutationSeed
	}
	if s.Model.CNN != nil {
		ig := &e.IntegratedGradients
		setInt("spec.explain.integratedGradients.steps", &ig.Steps, DefaultIntegratedGradientsSteps)
		setInt("spec.explain.integratedGradients.samplesPerClass", &ig.SamplesPerClass, DefaultSamplesPerClass)
	}
}

func isClassification(task string) bool {
	return task == TaskBinary || task == TaskMulticlass
}
