package jobs

// APIVersion is the only apiVersion a TrainingJob spec may declare.
const APIVersion = "cohort.dev/v1"

// Kind is the only kind a TrainingJob spec may declare.
const Kind = "TrainingJob"

// MaxSpecBytes is the largest spec, in bytes, that Parse accepts.
const MaxSpecBytes = 1 << 20

// Tasks a job can train for (spec.task).
const (
	// TaskBinary is a two-class classification; data.positive names the positive class.
	TaskBinary = "binary_classification"
	// TaskMulticlass is a classification into more than two classes.
	TaskMulticlass = "multiclass_classification"
	// TaskRegression predicts a real number.
	TaskRegression = "regression"
)

// Data formats (spec.data.format).
const (
	// FormatCSV is a table with a header row; one row is one sample. It feeds MLP models.
	FormatCSV = "csv"
	// FormatIDX is the IDX tensor format (as MNIST uses). It feeds CNN models.
	FormatIDX = "idx"
	// FormatSequenceCSV is a table of time-ordered rows, grouped by entity, cut into windows
	// as spec.data.sequence_csv describes. It feeds LSTM models.
	FormatSequenceCSV = "sequence_csv"
)

// Activation functions (spec.model.mlp.activation, spec.model.cnn.activation).
const (
	ActivationReLU      = "relu"
	ActivationTanh      = "tanh"
	ActivationSigmoid   = "sigmoid"
	ActivationLeakyReLU = "leaky_relu"
)

// Optimizers (spec.training.optimizer.name).
const (
	// OptimizerSGD is plain stochastic gradient descent; default learning rate 0.01.
	OptimizerSGD = "sgd"
	// OptimizerMomentum is SGD with momentum; default learning rate 0.01, momentum 0.9.
	OptimizerMomentum = "momentum"
	// OptimizerAdam is Adam; default learning rate 0.001, beta1 0.9, beta2 0.999, epsilon 1e-8.
	OptimizerAdam = "adam"
)

// Consistency modes (spec.training.consistency.mode).
const (
	// ConsistencySync makes every shard wait for all workers' gradients of step t before it
	// releases step t+1.
	ConsistencySync = "sync"
	// ConsistencyAsync applies each gradient as it arrives.
	ConsistencyAsync = "async"
	// ConsistencyBounded lets a worker run at most Staleness steps ahead of the slowest one.
	ConsistencyBounded = "bounded"
)

// Export formats (spec.export.formats).
const (
	ExportONNX        = "onnx"
	ExportSafetensors = "safetensors"
)

// Tasks lists the valid values of spec.task.
var Tasks = []string{TaskBinary, TaskMulticlass, TaskRegression}

// Formats lists the valid values of spec.data.format.
var Formats = []string{FormatCSV, FormatIDX, FormatSequenceCSV}

// Activations lists the valid activation functions.
var Activations = []string{ActivationReLU, ActivationTanh, ActivationSigmoid, ActivationLeakyReLU}

// Optimizers lists the valid values of spec.training.optimizer.name.
var Optimizers = []string{OptimizerSGD, OptimizerMomentum, OptimizerAdam}

// ConsistencyModes lists the valid values of spec.training.consistency.mode.
var ConsistencyModes = []string{ConsistencySync, ConsistencyAsync, ConsistencyBounded}

// ExportFormats lists the valid values of spec.export.formats.
var ExportFormats = []string{ExportONNX, ExportSafetensors}

// ONNX preprocessing forms (spec.export.onnx.preprocessing).
const (
	// ONNXPreprocessingEmbedded exports a self-contained graph over the raw values.
	ONNXPreprocessingEmbedded = "embedded"
	// ONNXPreprocessingSeparate exports the network alone, over preprocessed features.
	ONNXPreprocessingSeparate = "separate"
)

// ONNXPreprocessings lists the valid values of spec.export.onnx.preprocessing.
var ONNXPreprocessings = []string{ONNXPreprocessingEmbedded, ONNXPreprocessingSeparate}

// TrainingJob is one job spec document. Values returned by Parse have their defaults applied
// and have been validated.
type TrainingJob struct {
	// APIVersion must be APIVersion.
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	// Kind must be Kind.
	Kind string `yaml:"kind" json:"kind"`
	// Metadata names the job.
	Metadata Metadata `yaml:"metadata" json:"metadata"`
	// Spec describes what to train and with which resources.
	Spec Spec `yaml:"spec" json:"spec"`

	// lines maps a field path ("spec.training.epochs", "spec.model.mlp.hidden[1]") to the
	// line it was written on, and records which fields the document set explicitly. It is
	// nil for a job built in Go code.
	lines map[string]int
}

// Metadata names a job.
type Metadata struct {
	// Name is required: lowercase letters, digits and '-', starting and ending with a letter
	// or digit, at most 63 characters.
	Name string `yaml:"name" json:"name"`
	// Namespace defaults to "default"; same form as Name.
	Namespace string `yaml:"namespace" json:"namespace"`
}

// Spec is the body of a TrainingJob.
type Spec struct {
	// Priority is in 0..1000 (default 0); a higher priority wins and may preempt lower ones.
	Priority int `yaml:"priority" json:"priority"`
	// Queue defaults to "default"; same form as a name.
	Queue string `yaml:"queue" json:"queue"`
	// Task is one of TaskBinary, TaskMulticlass, TaskRegression.
	Task string `yaml:"task" json:"task"`
	// Model is the network to train; exactly one kind is set.
	Model Model `yaml:"model" json:"model"`
	// Data says where the samples are and how to read them.
	Data Data `yaml:"data" json:"data"`
	// Training holds the training-loop settings.
	Training Training `yaml:"training" json:"training"`
	// Resources sizes the workers and parameter-server shards.
	Resources Resources `yaml:"resources" json:"resources"`
	// Checkpoint says how often to checkpoint and how many checkpoints to keep.
	Checkpoint Checkpoint `yaml:"checkpoint" json:"checkpoint"`
	// Export lists the serving formats written when the job succeeds.
	Export Export `yaml:"export" json:"export"`
	// Placement constrains where the scheduler may put the job's tasks; optional.
	Placement Placement `yaml:"placement,omitempty" json:"placement,omitzero"`
	// RestartPolicy bounds how often the job is placed again after losing a node;
	// absent means DefaultMaxRestarts.
	RestartPolicy *RestartPolicy `yaml:"restartPolicy,omitempty" json:"restartPolicy,omitempty"`
	// Audit asks for a fairness audit of the exported model by sensitive group, and an
	// export gate; optional (format csv only).
	Audit *Audit `yaml:"audit,omitempty" json:"audit,omitempty"`
	// Explain configures the explanations computed for the exported model (permutation
	// importance; integrated gradients for a CNN). Every job computes them; the defaults
	// apply when it is omitted.
	Explain Explain `yaml:"explain,omitempty" json:"explain,omitzero"`
}

// Audit is spec.audit: which columns to audit the model's decisions by, and the gate an
// export must pass.
type Audit struct {
	// Sensitive lists the audited columns (at least one). They are not model inputs
	// unless UseAsFeatures is set.
	Sensitive []string `yaml:"sensitive" json:"sensitive"`
	// UseAsFeatures keeps the sensitive columns among the model's inputs.
	UseAsFeatures bool `yaml:"useAsFeatures" json:"useAsFeatures"`
	// Intersectional also audits every combination of two or more sensitive columns.
	Intersectional bool `yaml:"intersectional" json:"intersectional"`
	// MinGroupFraction is the share of the evaluated rows under which a group is
	// reported but left out of the impact ratios; default DefaultMinGroupFraction.
	MinGroupFraction float64 `yaml:"minGroupFraction" json:"minGroupFraction"`
	// Threshold is the decision threshold on the positive-class probability for
	// selection rates (binary tasks); default DefaultAuditThreshold.
	Threshold float64 `yaml:"threshold" json:"threshold"`
	// Bins groups a numeric sensitive column by these strictly increasing edges
	// ("<e0", "[e0,e1)", ..., ">=en"); a column of more than MaxAuditCategories
	// distinct values needs them.
	Bins map[string][]float64 `yaml:"bins,omitempty" json:"bins,omitempty"`
	// Bootstrap sets the resampling of the metrics' confidence intervals.
	Bootstrap Bootstrap `yaml:"bootstrap,omitempty" json:"bootstrap,omitzero"`
	// Gate, when set, blocks the export of a model that fails it.
	Gate *Gate `yaml:"gate,omitempty" json:"gate,omitempty"`
}

// Bootstrap configures the percentile bootstrap of the report's 95% confidence intervals.
type Bootstrap struct {
	// Resamples is the number of resamples, 0..MaxBootstrapResamples (0: no intervals);
	// default DefaultBootstrapResamples.
	Resamples int `yaml:"resamples" json:"resamples"`
	// Seed seeds the resampling; default DefaultSeed.
	Seed int64 `yaml:"seed" json:"seed"`
}

// Gate is spec.audit.gate: the figures an exported model must reach. Each field is
// optional; an absent one is not checked.
type Gate struct {
	// MinImpactRatio is the lowest impact ratio any eligible group may have (0.8 is the
	// four-fifths rule): selection rates for binary tasks, scoring rates for regression.
	MinImpactRatio *float64 `yaml:"minImpactRatio,omitempty" json:"minImpactRatio,omitempty"`
	// MinAUC is the lowest AUC on the evaluated split (binary tasks).
	MinAUC *float64 `yaml:"minAUC,omitempty" json:"minAUC,omitempty"`
	// MinAccuracy is the lowest accuracy on the evaluated split (classification).
	MinAccuracy *float64 `yaml:"minAccuracy,omitempty" json:"minAccuracy,omitempty"`
	// MaxRMSE is the highest RMSE, in target units, on the evaluated split (regression).
	MaxRMSE *float64 `yaml:"maxRMSE,omitempty" json:"maxRMSE,omitempty"`
}

// Explain is spec.explain.
type Explain struct {
	// Permutation configures permutation importance per raw input column.
	Permutation Permutation `yaml:"permutation,omitempty" json:"permutation,omitzero"`
	// IntegratedGradients configures the CNN's pixel attributions.
	IntegratedGradients IntegratedGradients `yaml:"integratedGradients,omitempty" json:"integratedGradients,omitzero"`
}

// Permutation configures permutation importance: each input column (for an LSTM, each
// feature and each lag) is shuffled Repeats times and the drop of the model's score is
// averaged.
type Permutation struct {
	// Repeats is 0..MaxPermutationRepeats (0: no importance); default
	// DefaultPermutationRepeats.
	Repeats int `yaml:"repeats" json:"repeats"`
	// Seed seeds the shuffles; default 1.
	Seed int64 `yaml:"seed" json:"seed"`
}

// IntegratedGradients configures a CNN's integrated-gradients attributions: the mean
// absolute attribution image of up to SamplesPerClass evaluated images per class.
type IntegratedGradients struct {
	// Steps is the number of points on the path from the all-zero image, 1..1024;
	// default DefaultIntegratedGradientsSteps.
	Steps int `yaml:"steps" json:"steps"`
	// SamplesPerClass is 0..MaxSamplesPerClass (0: none); default
	// DefaultSamplesPerClass.
	SamplesPerClass int `yaml:"samplesPerClass" json:"samplesPerClass"`
}

// RestartPolicy is a job's restart budget.
type RestartPolicy struct {
	// MaxRestarts is how many times the job is placed again (from its last checkpoint)
	// after a node running one of its tasks goes down, 0..MaxRestartsLimit; once spent,
	// the next loss fails the job. Preemption and drains do not spend it.
	MaxRestarts int `yaml:"maxRestarts" json:"maxRestarts"`
}

// DefaultMaxRestarts is the restart budget of a job without spec.restartPolicy.
const DefaultMaxRestarts = 3

// MaxRestartsLimit bounds spec.restartPolicy.maxRestarts.
const MaxRestartsLimit = 100

// Placement constrains where a job's tasks run.
type Placement struct {
	// NodeSelector lists node labels a node must carry, every pair, to run the job's
	// workers and shards; at most MaxNodeSelectorLabels pairs.
	NodeSelector map[string]string `yaml:"nodeSelector,omitempty" json:"nodeSelector,omitempty"`
	// Spread places the tasks on as many nodes as possible instead of bin-packing them
	// onto the fullest nodes that fit; default false.
	Spread bool `yaml:"spread,omitempty" json:"spread,omitempty"`
}

// MaxNodeSelectorLabels bounds spec.placement.nodeSelector.
const MaxNodeSelectorLabels = 32

// Model is the network to train. Exactly one of MLP, CNN and LSTM is set.
type Model struct {
	// MLP is a fully connected network; it reads data.format csv.
	MLP *MLP `yaml:"mlp,omitempty" json:"mlp,omitempty"`
	// CNN is a convolutional network; it reads data.format idx.
	CNN *CNN `yaml:"cnn,omitempty" json:"cnn,omitempty"`
	// LSTM is a recurrent network; it reads data.format sequence_csv.
	LSTM *LSTM `yaml:"lstm,omitempty" json:"lstm,omitempty"`
}

// MLP is a fully connected network.
type MLP struct {
	// Hidden lists the hidden layer widths, input side first (each 1..65536, at most 32
	// layers). An empty list gives a linear model.
	Hidden []int `yaml:"hidden" json:"hidden"`
	// Activation is one of Activations; default relu.
	Activation string `yaml:"activation" json:"activation"`
	// Dropout is the dropout rate after each hidden layer, in [0, 1); default 0.
	Dropout float64 `yaml:"dropout" json:"dropout"`
}

// CNN is a convolutional network: convolution layers, then fully connected layers.
type CNN struct {
	// Conv lists the convolution layers, input side first (1..32 layers).
	Conv []ConvLayer `yaml:"conv" json:"conv"`
	// Pool is the side (and stride) of the max-pooling window applied after each convolution,
	// in 0..16; 0 or 1 means no pooling.
	Pool int `yaml:"pool" json:"pool"`
	// Dense lists the widths of the fully connected layers after the convolutions (each
	// 1..65536, at most 32 layers); it may be empty.
	Dense []int `yaml:"dense" json:"dense"`
	// Activation is one of Activations; default relu.
	Activation string `yaml:"activation" json:"activation"`
	// Dropout is the dropout rate before each dense layer, in [0, 1); default 0.
	Dropout float64 `yaml:"dropout" json:"dropout"`
}

// ConvLayer is one 2-D convolution with square kernels.
type ConvLayer struct {
	// Filters is the number of output channels, 1..65536.
	Filters int `yaml:"filters" json:"filters"`
	// Kernel is the side of the square kernel, 1..64.
	Kernel int `yaml:"kernel" json:"kernel"`
	// Stride is 1..64; default 1.
	Stride int `yaml:"stride" json:"stride"`
	// Padding is the zero padding on each side, 0..Kernel-1; default 0.
	Padding int `yaml:"padding" json:"padding"`
}

// LSTM is a stack of LSTM layers followed by fully connected layers.
type LSTM struct {
	// Hidden lists the LSTM layer widths (each 1..65536, 1..32 layers).
	Hidden []int `yaml:"hidden" json:"hidden"`
	// Dense lists the widths of fully connected layers after the last LSTM layer; it may be
	// empty.
	Dense []int `yaml:"dense" json:"dense"`
	// Dropout is the dropout rate between layers, in [0, 1); default 0.
	Dropout float64 `yaml:"dropout" json:"dropout"`
}

// Data says where a job's samples are and how to read them.
type Data struct {
	// Format is one of Formats. When omitted it follows the model: mlp reads csv, cnn reads
	// idx, lstm reads sequence_csv.
	Format string `yaml:"format" json:"format"`
	// Train is the training set's URI (see ParseURI); required.
	Train string `yaml:"train" json:"train"`
	// Validation says how to get the validation set.
	Validation Validation `yaml:"validation" json:"validation"`
	// Test is an optional test set's URI; empty (or null in YAML) means none.
	Test string `yaml:"test,omitempty" json:"test,omitempty" jobs:"nullable"`
	// Label is the label column; required for csv, not used by idx (labels are part of the
	// data) nor by sequence_csv (see SequenceCSV.Target).
	Label string `yaml:"label" json:"label"`
	// Positive is the label value of the positive class of a binary task, compared as text
	// with the column's values. When empty, the worker takes the lexically greater of the
	// two label values as positive (so "Yes" over "No", "1" over "0"). Only for binary tasks.
	Positive string `yaml:"positive" json:"positive"`
	// Exclude lists csv columns that are not features (identifiers, leaks). Only for csv.
	Exclude []string `yaml:"exclude,omitempty" json:"exclude,omitempty"`
	// SequenceCSV describes the windows cut from a sequence_csv table; required iff Format is
	// sequence_csv.
	SequenceCSV *SequenceCSV `yaml:"sequence_csv,omitempty" json:"sequence_csv,omitempty"`
}

// Validation says how to get the validation set: either a Fraction of the training set held
// out, or a separate URI. When neither is given, Fraction 0.2 with Seed 42 is used, stratified
// for classification tasks.
type Validation struct {
	// Fraction of the training set held out, in (0, 1).
	Fraction float64 `yaml:"fraction" json:"fraction"`
	// Seed for the hold-out split; default 42. Only with Fraction.
	Seed int64 `yaml:"seed" json:"seed"`
	// Stratify keeps the class proportions in the split; classification tasks only, default
	// true there. Only with Fraction.
	Stratify bool `yaml:"stratify" json:"stratify"`
	// URI of a separate validation set, in the same format as the training set.
	URI string `yaml:"uri,omitempty" json:"uri,omitempty"`
}

// SequenceCSV describes how rows of a sequence_csv table become samples: rows are grouped by
// Group, ordered by Time, and each window of Lookback consecutive rows predicts Target Horizon
// rows after the window's last row.
type SequenceCSV struct {
	// Lookback is the window length in rows, 1..10000.
	Lookback int `yaml:"lookback" json:"lookback"`
	// Horizon is how many rows ahead the target is, 1..10000.
	Horizon int `yaml:"horizon" json:"horizon"`
	// Target is the column to predict; required.
	Target string `yaml:"target" json:"target"`
	// Features lists the input columns; empty means every column other than Group and Time.
	Features []string `yaml:"features,omitempty" json:"features,omitempty"`
	// Group is the entity id column (for example EmployeeID); empty means one sequence.
	Group string `yaml:"group,omitempty" json:"group,omitempty"`
	// Time is the ordering column; empty means file order.
	Time string `yaml:"time,omitempty" json:"time,omitempty"`
	// Baseline is BaselineSeasonalNaive (regression only) to make the model predict
	// the residual over the seasonal-naive forecast (the target Period rows earlier);
	// empty means none.
	Baseline string `yaml:"baseline,omitempty" json:"baseline,omitempty"`
	// Period is the season in rows of the seasonal-naive forecast, its metrics
	// (val_rmse_seasonal_naive, val_skill_seasonal_naive) and Baseline, 1..10000;
	// default DefaultSeasonPeriod (monthly rows, a yearly season).
	Period int `yaml:"period,omitempty" json:"period,omitempty"`
	// Calendar lists calendar features derived from Time, which must then hold dates
	// (2024-01, 2024-01-31): month and/or week, each the sine and cosine of its
	// position in the year, added to every step.
	Calendar []string `yaml:"calendar,omitempty" json:"calendar,omitempty"`
}

// BaselineSeasonalNaive is spec.data.sequence_csv.baseline's value.
const BaselineSeasonalNaive = "seasonalNaive"

// DefaultSeasonPeriod is spec.data.sequence_csv.period's default.
const DefaultSeasonPeriod = 12

// CalendarFeatures lists spec.data.sequence_csv.calendar's values.
var CalendarFeatures = []string{"month", "week"}

// Training holds the training-loop settings.
type Training struct {
	// Epochs is 1..100000; default 10.
	Epochs int `yaml:"epochs" json:"epochs"`
	// BatchSize is the per-worker batch size, 1..65536; default 32.
	BatchSize int `yaml:"batchSize" json:"batchSize"`
	// Optimizer is applied by the parameter-server shards.
	Optimizer Optimizer `yaml:"optimizer" json:"optimizer"`
	// Consistency says when a shard releases the next step.
	Consistency Consistency `yaml:"consistency" json:"consistency"`
	// Seed seeds weight initialisation and shuffling; default 42.
	Seed int64 `yaml:"seed" json:"seed"`
	// EarlyStopping, when set, stops training once the monitored validation metric
	// stops improving; the best checkpoint (checkpoint.scoreBy) is then exported.
	EarlyStopping *EarlyStopping `yaml:"earlyStopping,omitempty" json:"earlyStopping,omitempty"`
	// ClassWeights weights each class's rows in the training loss (classification);
	// `balanced` or a mapping of class to weight (see ClassWeights).
	ClassWeights *ClassWeights `yaml:"classWeights,omitempty" json:"classWeights,omitempty"`
	// Compression, when set, compresses the tensors workers exchange with the
	// parameter servers (see Compression).
	Compression *Compression `yaml:"compression,omitempty" json:"compression,omitempty"`
}

// EarlyStopping is spec.training.earlyStopping. The chief evaluates the validation split
// at every epoch end; an epoch improves on the best so far when its Monitor value is
// better than the best by more than MinDelta (in Mode's direction). Once Patience epochs
// in a row have not improved, every worker stops at the same step and the job exports
// its best checkpoint. Epochs up to StartEpoch are not monitored.
type EarlyStopping struct {
	// Monitor is one of ValidationMetrics(task); default checkpoint.scoreBy's metric.
	Monitor string `yaml:"monitor" json:"monitor"`
	// Mode is ModeMax or ModeMin, and must be Monitor's direction (MetricMode); default
	// that direction.
	Mode string `yaml:"mode" json:"mode"`
	// Patience is how many epochs without improvement end training, 0..MaxEpochs
	// (0: the first one); default DefaultPatience.
	Patience int `yaml:"patience" json:"patience"`
	// MinDelta is the least change that counts as an improvement, >= 0; default 0.
	MinDelta float64 `yaml:"minDelta" json:"minDelta"`
	// StartEpoch is the number of warm-up epochs not monitored, 0..epochs-1; default 0.
	StartEpoch int `yaml:"startEpoch" json:"startEpoch"`
}

// Optimizer configures the parameter-server optimizer. Fields that belong to another
// optimizer must be left zero.
type Optimizer struct {
	// Name is one of Optimizers; default adam.
	Name string `yaml:"name" json:"name"`
	// LearningRate is in (0, 10]; default 0.001 for adam, 0.01 for sgd and momentum.
	LearningRate float64 `yaml:"learningRate" json:"learningRate"`
	// Momentum is in [0, 1); momentum only, default 0.9.
	Momentum float64 `yaml:"momentum" json:"momentum"`
	// Beta1 is in [0, 1); adam only, default 0.9.
	Beta1 float64 `yaml:"beta1" json:"beta1"`
	// Beta2 is in [0, 1); adam only, default 0.999.
	Beta2 float64 `yaml:"beta2" json:"beta2"`
	// Epsilon is in (0, 1]; adam only, default 1e-8.
	Epsilon float64 `yaml:"epsilon" json:"epsilon"`
	// WeightDecay is the L2 penalty, >= 0; default 0.
	WeightDecay float64 `yaml:"weightDecay" json:"weightDecay"`
}

// Consistency says when a parameter-server shard releases the next step.
type Consistency struct {
	// Mode is one of ConsistencyModes; default sync.
	Mode string `yaml:"mode" json:"mode"`
	// Staleness is the most steps a worker may run ahead of the slowest; 1..10000 with
	// bounded, 0 otherwise.
	Staleness int `yaml:"staleness" json:"staleness"`
}

// Resources sizes a job's tasks.
type Resources struct {
	// Workers sizes the training workers.
	Workers WorkerResources `yaml:"workers" json:"workers"`
	// ParameterServers sizes the parameter-server shards.
	ParameterServers PSResources `yaml:"parameterServers" json:"parameterServers"`
}

// WorkerResources is the number of workers and what each one needs.
type WorkerResources struct {
	// Count is the number of workers to start, 1..1024; default 1.
	Count int `yaml:"count" json:"count"`
	// Min is the fewest workers the job keeps running with, 1..Count; default Count.
	Min int `yaml:"min" json:"min"`
	// Max is the most workers the job may grow to, Count..1024; default Count.
	Max int `yaml:"max" json:"max"`
	// GPUs per worker, 0..64; default 0.
	GPUs int `yaml:"gpus" json:"gpus"`
	// CPU per worker as ParseCPU reads it; default "1".
	CPU string `yaml:"cpu" json:"cpu"`
	// Memory per worker as ParseMemory reads it; default "1Gi".
	Memory string `yaml:"memory" json:"memory"`
	// GPUModel, when set with gpus > 0, requires nodes whose GPU model is this name
	// (case-insensitive, e.g. "NVIDIA H100 80GB HBM3"); optional.
	GPUModel string `yaml:"gpuModel,omitempty" json:"gpuModel,omitempty"`
	// GPUMemory, when set with gpus > 0, is the least memory per GPU a node must have,
	// as ParseMemory reads it; optional.
	GPUMemory string `yaml:"gpuMemory,omitempty" json:"gpuMemory,omitempty"`
}

// PSResources is the number of parameter-server shards and what each one needs.
type PSResources struct {
	// Shards is 1..256; default 1.
	Shards int `yaml:"shards" json:"shards"`
	// CPU per shard as ParseCPU reads it; default "500m".
	CPU string `yaml:"cpu" json:"cpu"`
	// Memory per shard as ParseMemory reads it; default "512Mi".
	Memory string `yaml:"memory" json:"memory"`
	// Replicas is how many copies of each shard run, 1..2; default 1. With 2 every
	// shard has a primary and a backup on a different node: the primary forwards each
	// aggregated update to the backup before the step is acknowledged, and the backup
	// is promoted when the primary is lost (no checkpoint restore).
	Replicas int `yaml:"replicas,omitempty" json:"replicas,omitempty"`
}

// Checkpoint says how often a job checkpoints and how many checkpoints it keeps.
type Checkpoint struct {
	// EverySteps is the number of global steps between checkpoints, >= 0; 0 means only the
	// final checkpoint is written. Default 0.
	EverySteps int `yaml:"everySteps" json:"everySteps"`
	// Keep is how many committed checkpoints to keep, 1..1000; default 3.
	Keep int `yaml:"keep" json:"keep"`
	// ScoreBy is the validation metric that ranks checkpoints: the chief commits a
	// checkpoint at every epoch end with that epoch's value as its score, and the job
	// exports the best one. Written as a metric name (scoreBy: val_loss) or a mapping
	// ({metric: val_loss, mode: min}); default the task's PrimaryMetric.
	ScoreBy ScoreBy `yaml:"scoreBy" json:"scoreBy"`
	// KeepBest is how many of the best-scored checkpoints retention keeps besides the
	// newest Keep, 1..1000; default DefaultKeepBest.
	KeepBest int `yaml:"keepBest" json:"keepBest"`
}

// ScoreBy is spec.checkpoint.scoreBy: a validation metric and its direction.
type ScoreBy struct {
	// Metric is one of ValidationMetrics(task); default PrimaryMetric(task).
	Metric string `yaml:"metric" json:"metric"`
	// Mode is ModeMax or ModeMin, and must be Metric's direction (MetricMode); default
	// that direction.
	Mode string `yaml:"mode" json:"mode"`
}

// setScalar reads the short form: a metric name alone.
func (s *ScoreBy) setScalar(v string) string {
	s.Metric = v
	return "metric"
}

// scalarShape names the short form in type errors.
func (*ScoreBy) scalarShape() string { return "a metric name or a mapping {metric, mode}" }

// Score directions (spec.checkpoint.scoreBy.mode, spec.training.earlyStopping.mode).
const (
	// ModeMax: higher is better (val_auc, val_accuracy).
	ModeMax = "max"
	// ModeMin: lower is better (val_loss, val_rmse, val_mae, val_mape).
	ModeMin = "min"
)

// Modes lists the valid score directions.
var Modes = []string{ModeMax, ModeMin}

// ValidationMetrics lists the validation metrics the chief reports for task, which
// checkpoint.scoreBy and training.earlyStopping.monitor may name (nil for an unknown
// task).
func ValidationMetrics(task string) []string {
	switch task {
	case TaskBinary:
		// F1, precision and recall are at the decision threshold the epoch ends use
		// (export.threshold's value, else 0.5; a fitted one is fitted at the end).
		return []string{"val_auc", "val_accuracy", "val_loss", "val_f1", "val_precision", "val_recall"}
	case TaskMulticlass:
		return []string{"val_accuracy", "val_loss"}
	case TaskRegression:
		return []string{"val_rmse", "val_mae", "val_mape", "val_loss", "val_r2"}
	}
	return nil
}

// PrimaryMetric is the default checkpoint.scoreBy metric of task: val_auc for a
// binary, val_accuracy for a multiclass classification, val_rmse for a regression
// ("" for an unknown task).
func PrimaryMetric(task string) string {
	if m := ValidationMetrics(task); len(m) > 0 {
		return m[0]
	}
	return ""
}

// MetricMode is the direction of a validation metric: ModeMax for val_auc,
// val_accuracy, val_f1, val_precision, val_recall and val_r2, ModeMin for the losses and
// errors ("" for an unknown metric).
func MetricMode(metric string) string {
	switch metric {
	case "val_auc", "val_accuracy", "val_f1", "val_precision", "val_recall", "val_r2":
		return ModeMax
	case "val_loss", "val_rmse", "val_mae", "val_mape":
		return ModeMin
	}
	return ""
}

// Export lists the serving formats written when a job succeeds.
type Export struct {
	// Formats lists ExportFormats without duplicates, at least one; default [safetensors].
	Formats []string `yaml:"formats" json:"formats"`
	// ONNX configures the onnx format.
	ONNX ONNXExport `yaml:"onnx" json:"onnx"`
	// Threshold is the decision threshold of a binary task's label (see Threshold);
	// absent means DefaultThreshold.
	Threshold *Threshold `yaml:"threshold,omitempty" json:"threshold,omitempty"`
}

// ONNXExport is spec.export.onnx.
type ONNXExport struct {
	// Preprocessing is one of ONNXPreprocessings: embedded (the default) puts the
	// fitted preprocessing inside the graph, which then takes the raw values (one input
	// per column or feature, or the uint8 pixels) and outputs the prediction and label;
	// separate leaves it out, and the graph takes the preprocessed features. Anything but
	// embedded needs onnx in Formats.
	Preprocessing string `yaml:"preprocessing" json:"preprocessing"`
}
