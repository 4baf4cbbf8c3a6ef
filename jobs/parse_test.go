package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// baseSpec is a small valid spec; the error tests edit it by line number, so keep the line
// numbers in the comments below in step with it.
var baseSpec = strings.Join([]string{
	/* 1 */ "apiVersion: cohort.dev/v1",
	/* 2 */ "kind: TrainingJob",
	/* 3 */ "metadata:",
	/* 4 */ "  name: churn",
	/* 5 */ "spec:",
	/* 6 */ "  task: binary_classification",
	/* 7 */ "  model:",
	/* 8 */ "    mlp:",
	/* 9 */ "      hidden: [16, 8]",
	/* 10 */ "  data:",
	/* 11 */ "    train: file://data/train.csv",
	/* 12 */ "    label: Attrition",
	/* 13 */ "  training:",
	/* 14 */ "    epochs: 5",
	/* 15 */ "    optimizer:",
	/* 16 */ "      name: adam",
	/* 17 */ "  resources:",
	/* 18 */ "    workers:",
	/* 19 */ "      count: 2",
	/* 20 */ "    parameterServers:",
	/* 21 */ "      shards: 1",
	/* 22 */ "  checkpoint:",
	/* 23 */ "    keep: 2",
	/* 24 */ "  export:",
	/* 25 */ "    formats: [safetensors]",
}, "\n") + "\n"

// edit describes a change to baseSpec: replace line Line (1-based) with Text, or, when Insert
// is set, insert Text after line Line. Text may hold several lines.
type edit struct {
	Line   int
	Text   string
	Insert bool
}

func editSpec(t *testing.T, edits ...edit) string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(baseSpec, "\n"), "\n")
	// Apply from the bottom up so that earlier line numbers stay valid.
	for i := len(edits) - 1; i >= 0; i-- {
		e := edits[i]
		if e.Line < 1 || e.Line > len(lines) {
			t.Fatalf("edit line %d out of range", e.Line)
		}
		var repl []string
		if e.Text != "" {
			repl = strings.Split(e.Text, "\n")
		}
		if e.Insert {
			lines = append(lines[:e.Line], append(repl, lines[e.Line:]...)...)
		} else {
			lines = append(lines[:e.Line-1], append(repl, lines[e.Line:]...)...)
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

func mustParse(t *testing.T, spec string) *TrainingJob {
	t.Helper()
	j, err := Parse([]byte(spec))
	if err != nil {
		t.Fatalf("Parse: %v\nspec:\n%s", err, spec)
	}
	return j
}

func specErrors(t *testing.T, err error) []FieldError {
	t.Helper()
	if err == nil {
		t.Fatal("Parse succeeded; want an error")
	}
	var se *SpecError
	if !errors.As(err, &se) {
		t.Fatalf("error is %T, want *SpecError: %v", err, err)
	}
	if len(se.Errors) == 0 {
		t.Fatal("SpecError holds no FieldErrors")
	}
	return se.Errors
}

func TestParseExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d example specs, want at least 3", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			j := mustParse(t, string(data))
			if _, err := j.JobTemplate(); err != nil {
				t.Errorf("JobTemplate: %v", err)
			}
			assertRoundTrip(t, j)
		})
	}
}

// TestAttritionExampleMatchesContract pins the reference example to the values of the
// contract in ARCHITECTURE.md.
func TestAttritionExampleMatchesContract(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("examples", "attrition-mlp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	j := mustParse(t, string(data))
	s := j.Spec
	checks := []struct {
		name      string
		got, want any
	}{
		{"name", j.Metadata.Name, "attrition-mlp"},
		{"namespace", j.Metadata.Namespace, "default"},
		{"priority", s.Priority, 50},
		{"task", s.Task, TaskBinary},
		{"hidden", s.Model.MLP.Hidden, []int{64, 32}},
		{"activation", s.Model.MLP.Activation, ActivationReLU},
		{"train", s.Data.Train, "file://jobs/data/attrition-sample.csv"},
		{"validation", s.Data.Validation, Validation{Fraction: 0.2, Seed: 42, Stratify: true}},
		{"test", s.Data.Test, ""},
		{"label", s.Data.Label, "Attrition"},
		{"positive", s.Data.Positive, "Yes"},
		{"epochs", s.Training.Epochs, 30},
		{"batchSize", s.Training.BatchSize, 32},
		{"optimizer", s.Training.Optimizer.Name, OptimizerAdam},
		{"learningRate", s.Training.Optimizer.LearningRate, 0.001},
		{"consistency", s.Training.Consistency.Mode, ConsistencySync},
		{"workers", s.Resources.Workers, WorkerResources{Count: 2, Min: 1, Max: 4, CPU: "1", Memory: "1Gi"}},
		{"shards", s.Resources.ParameterServers.Shards, 2},
		{"checkpoint", s.Checkpoint, Checkpoint{EverySteps: 200, Keep: 3, ScoreBy: ScoreBy{Metric: "val_auc", Mode: ModeMax}, KeepBest: 1}},
		{"export", s.Export.Formats, []string{ExportONNX, ExportSafetensors}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// assertRoundTrip checks that a parsed job marshals to YAML that parses back to the same job.
func assertRoundTrip(t *testing.T, j *TrainingJob) {
	t.Helper()
	out, err := yaml.Marshal(j)
	if err != nil {
		t.Fatalf("yaml.Marshal: %v", err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parsing the marshalled job: %v\n%s", err, out)
	}
	a, b := *j, *again
	a.lines, b.lines = nil, nil
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("round trip changed the job:\nbefore %+v\nafter  %+v\nyaml:\n%s", a, b, out)
	}
}

func TestParseDefaults(t *testing.T) {
	minimal := `apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: m}
spec:
  task: binary_classification
  model: {mlp: {hidden: [4]}}
  data: {train: "s3://bkt/a.csv", label: y}
`
	j := mustParse(t, minimal)
	want := TrainingJob{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: "m", Namespace: "default"},
		Spec: Spec{
			Queue: "default",
			Task:  TaskBinary,
			Model: Model{MLP: &MLP{Hidden: []int{4}, Activation: "relu"}},
			Data: Data{
				Format:     FormatCSV,
				Train:      "s3://bkt/a.csv",
				Label:      "y",
				Validation: Validation{Fraction: 0.2, Seed: 42, Stratify: true},
			},
			Training: Training{
				Epochs:      10,
				BatchSize:   32,
				Seed:        42,
				Optimizer:   Optimizer{Name: "adam", LearningRate: 0.001, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8},
				Consistency: Consistency{Mode: "sync"},
			},
			Resources: Resources{
				Workers:          WorkerResources{Count: 1, Min: 1, Max: 1, CPU: "1", Memory: "1Gi"},
				ParameterServers: PSResources{Shards: 1, Replicas: 1, CPU: "500m", Memory: "512Mi"},
			},
			Checkpoint: Checkpoint{Keep: 3, ScoreBy: ScoreBy{Metric: "val_auc", Mode: "max"}, KeepBest: 1},
			Export:     Export{Formats: []string{"safetensors"}, ONNX: ONNXExport{Preprocessing: ONNXPreprocessingEmbedded}},
			Explain:    Explain{Permutation: Permutation{Repeats: 5, Seed: 1}},
		},
	}
	got := *j
	got.lines = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

// TestParseONNXPreprocessing: spec.export.onnx.preprocessing defaults to embedded,
// takes separate with the onnx format, and survives the JSON round trip.
func TestParseONNXPreprocessing(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"    formats: [onnx]", ONNXPreprocessingEmbedded},
		{"    formats: [onnx, safetensors]\n    onnx: {preprocessing: separate}", ONNXPreprocessingSeparate},
		{"    formats: [onnx]\n    onnx:\n      preprocessing: embedded", ONNXPreprocessingEmbedded},
		{"    formats: [safetensors]\n    onnx: {preprocessing: embedded}", ONNXPreprocessingEmbedded},
	} {
		j := mustParse(t, editSpec(t, edit{Line: 25, Text: tc.text}))
		if got := j.Spec.Export.ONNX.Preprocessing; got != tc.want {
			t.Errorf("%q: preprocessing %q, want %q", tc.text, got, tc.want)
		}
		assertRoundTrip(t, j)
	}
}

func TestParseDefaultsDependOnContext(t *testing.T) {
	tests := []struct {
		name  string
		edits []edit
		check func(*TrainingJob) error
	}{
		{"regression is not stratified", []edit{{Line: 6, Text: "  task: regression"}}, func(j *TrainingJob) error {
			if v := j.Spec.Data.Validation; v.Stratify || v.Fraction != 0.2 || v.Seed != 42 {
				return fmt.Errorf("validation = %+v, want fraction 0.2 seed 42 unstratified", v)
			}
			return nil
		}},
		{"validation uri gets no split defaults", []edit{{Line: 12, Text: "    validation: {uri: file://v.csv}", Insert: true}}, func(j *TrainingJob) error {
			if v := j.Spec.Data.Validation; v != (Validation{URI: "file://v.csv"}) {
				return fmt.Errorf("validation = %+v", v)
			}
			return nil
		}},
		{"explicit zero seed and stratify false are kept", []edit{
			{Line: 12, Text: "    validation: {fraction: 0.3, seed: 0, stratify: false}", Insert: true},
			{Line: 14, Text: "    seed: 0", Insert: true},
		}, func(j *TrainingJob) error {
			if v := j.Spec.Data.Validation; v != (Validation{Fraction: 0.3}) {
				return fmt.Errorf("validation = %+v", v)
			}
			if j.Spec.Training.Seed != 0 {
				return fmt.Errorf("training.seed = %d, want 0", j.Spec.Training.Seed)
			}
			return nil
		}},
		{"sgd learning rate", []edit{{Line: 16, Text: "      name: sgd"}}, func(j *TrainingJob) error {
			if o := j.Spec.Training.Optimizer; o != (Optimizer{Name: "sgd", LearningRate: 0.01}) {
				return fmt.Errorf("optimizer = %+v", o)
			}
			return nil
		}},
		{"momentum defaults", []edit{{Line: 16, Text: "      name: momentum"}}, func(j *TrainingJob) error {
			if o := j.Spec.Training.Optimizer; o != (Optimizer{Name: "momentum", LearningRate: 0.01, Momentum: 0.9}) {
				return fmt.Errorf("optimizer = %+v", o)
			}
			return nil
		}},
		{"min and max follow count", []edit{{Line: 19, Text: "      count: 3"}}, func(j *TrainingJob) error {
			if w := j.Spec.Resources.Workers; w.Min != 3 || w.Max != 3 {
				return fmt.Errorf("workers = %+v, want min 3 max 3", w)
			}
			return nil
		}},
		{"conv stride defaults to 1", []edit{
			{Line: 8, Text: "    cnn:\n      conv: [{filters: 8, kernel: 3}, {filters: 8, kernel: 3, stride: 2}]"},
			{Line: 9, Text: ""},
			{Line: 12, Text: ""},
		}, func(j *TrainingJob) error {
			c := j.Spec.Model.CNN
			if c.Conv[0].Stride != 1 || c.Conv[1].Stride != 2 || c.Activation != "relu" || j.Spec.Data.Format != FormatIDX {
				return fmt.Errorf("cnn = %+v, format %q", c, j.Spec.Data.Format)
			}
			return nil
		}},
		{"null test set means none", []edit{{Line: 12, Text: "    test: null", Insert: true}}, func(j *TrainingJob) error {
			if j.Spec.Data.Test != "" {
				return fmt.Errorf("test = %q", j.Spec.Data.Test)
			}
			return nil
		}},
		{"unquoted numeric label values are text", []edit{{Line: 12, Text: "    label: 1\n    positive: 1"}}, func(j *TrainingJob) error {
			if j.Spec.Data.Label != "1" || j.Spec.Data.Positive != "1" {
				return fmt.Errorf("label %q positive %q", j.Spec.Data.Label, j.Spec.Data.Positive)
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := mustParse(t, editSpec(t, tt.edits...))
			if err := tt.check(j); err != nil {
				t.Fatal(err)
			}
			assertRoundTrip(t, j)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		edits    []edit
		wantPath string
		wantLine int
		wantMsg  string
	}{
		// Document shape.
		{"wrong apiVersion", []edit{{Line: 1, Text: "apiVersion: cohort.dev/v2"}}, "apiVersion", 1, `must be "cohort.dev/v1"`},
		{"missing apiVersion", []edit{{Line: 1, Text: ""}}, "apiVersion", 1, `must be "cohort.dev/v1", got ""`},
		{"wrong kind", []edit{{Line: 2, Text: "kind: Job"}}, "kind", 2, `must be "TrainingJob"`},
		{"unknown top-level field", []edit{{Line: 2, Text: "status: {}", Insert: true}}, "status", 3, `unknown field "status"`},
		{"unknown nested field with suggestion", []edit{{Line: 14, Text: "    batch_size: 8", Insert: true}}, "spec.training.batch_size", 15, `did you mean "batchSize"`},
		{"duplicate field", []edit{{Line: 14, Text: "    epochs: 6", Insert: true}}, "spec.training.epochs", 15, "duplicate field \"epochs\" (first set on line 14)"},
		{"wrong type int", []edit{{Line: 14, Text: "    epochs: abc"}}, "spec.training.epochs", 14, `expected an integer, got the string "abc"`},
		{"quoted int is a string", []edit{{Line: 14, Text: `    epochs: "5"`}}, "spec.training.epochs", 14, "expected an integer"},
		{"float for int", []edit{{Line: 14, Text: "    epochs: 5.5"}}, "spec.training.epochs", 14, "expected an integer, got the number 5.5"},
		{"int overflow", []edit{{Line: 14, Text: "    epochs: 99999999999999999999999"}}, "spec.training.epochs", 14, "out of range"},
		{"list for mapping", []edit{{Line: 15, Text: "    optimizer: [adam]"}, {Line: 16, Text: ""}}, "spec.training.optimizer", 15, "expected a mapping, got a list"},
		{"scalar for list", []edit{{Line: 9, Text: "      hidden: 16"}}, "spec.model.mlp.hidden", 9, "expected a list of integers, got the integer 16"},
		{"wrong list item type", []edit{{Line: 9, Text: "      hidden: [16, x]"}}, "spec.model.mlp.hidden[1]", 9, "expected an integer"},
		{"null not allowed", []edit{{Line: 12, Text: "    label: null"}}, "spec.data.label", 12, "must not be null"},
		{"bool wrong type", []edit{{Line: 12, Text: "    validation: {stratify: yes-please}", Insert: true}}, "spec.data.validation.stratify", 13, "expected a boolean"},
		{"nan", []edit{{Line: 9, Text: "      dropout: .nan", Insert: true}}, "spec.model.mlp.dropout", 10, "finite"},
		{"merge key", []edit{{Line: 16, Text: "      <<: {name: sgd}"}}, "spec.training.optimizer", 16, "merge keys"},
		{"custom tag", []edit{{Line: 15, Text: "    optimizer: !fancy"}}, "spec.training.optimizer", 15, "a value tagged !fancy"},
		{"alias", []edit{{Line: 4, Text: "  name: &n churn"}, {Line: 12, Text: "    label: *n"}}, "spec.data.label", 12, "aliases"},
		// Values.
		{"name required", []edit{{Line: 4, Text: "  namespace: team"}}, "metadata.name", 3, "required"},
		{"name form", []edit{{Line: 4, Text: "  name: Churn_Model"}}, "metadata.name", 4, "lowercase letters"},
		{"name too long", []edit{{Line: 4, Text: "  name: " + strings.Repeat("a", 64)}}, "metadata.name", 4, "at most 63"},
		{"namespace form", []edit{{Line: 4, Text: "  namespace: -x", Insert: true}}, "metadata.namespace", 5, "lowercase letters"},
		{"priority range", []edit{{Line: 5, Text: "  priority: 1001", Insert: true}}, "spec.priority", 6, "at most 1000"},
		{"queue form", []edit{{Line: 5, Text: "  queue: Gold", Insert: true}}, "spec.queue", 6, "lowercase letters"},
		{"task", []edit{{Line: 6, Text: "  task: clustering"}}, "spec.task", 6, `"clustering" is not one of`},
		{"task required", []edit{{Line: 6, Text: ""}}, "spec.task", 5, "required"},
		{"no model", []edit{{Line: 8, Text: "    cnn: null"}, {Line: 9, Text: ""}}, "spec.model", 7, "found none"},
		{"two models", []edit{{Line: 9, Text: "    lstm: {hidden: [4]}", Insert: true}}, "spec.model", 7, "found mlp, lstm"},
		{"hidden size zero", []edit{{Line: 9, Text: "      hidden: [16, 0]"}}, "spec.model.mlp.hidden[1]", 9, "must be greater than 0"},
		{"hidden size too big", []edit{{Line: 9, Text: "      hidden: [65537]"}}, "spec.model.mlp.hidden[0]", 9, "at most 65536"},
		{"too many layers", []edit{{Line: 9, Text: "      hidden: [" + strings.TrimSuffix(strings.Repeat("1, ", 33), ", ") + "]"}}, "spec.model.mlp.hidden", 9, "at most 32 layers"},
		{"activation", []edit{{Line: 9, Text: "      activation: swish", Insert: true}}, "spec.model.mlp.activation", 10, `"swish" is not one of`},
		{"dropout one", []edit{{Line: 9, Text: "      dropout: 1", Insert: true}}, "spec.model.mlp.dropout", 10, "[0, 1)"},
		{"cnn filters", []edit{{Line: 8, Text: "    cnn: {conv: [{filters: 0, kernel: 3}]}"}, {Line: 9, Text: ""}, {Line: 10, Text: "    format: idx", Insert: true}, {Line: 12, Text: ""}}, "spec.model.cnn.conv[0].filters", 8, "must be greater than 0"},
		{"cnn kernel", []edit{{Line: 8, Text: "    cnn:\n      conv:\n        - {filters: 4, kernel: 3}\n        - {filters: 4, kernel: 0}"}, {Line: 9, Text: ""}, {Line: 12, Text: ""}}, "spec.model.cnn.conv[1].kernel", 11, "must be greater than 0"},
		{"cnn needs idx", []edit{{Line: 8, Text: "    cnn: {conv: [{filters: 4, kernel: 3}]}"}, {Line: 9, Text: ""}, {Line: 10, Text: "    format: csv", Insert: true}}, "spec.data.format", 10, "model cnn reads format idx, not csv"},
		{"lstm needs sequence_csv", []edit{{Line: 8, Text: "    lstm: {hidden: [4]}"}, {Line: 9, Text: ""}, {Line: 10, Text: "    format: csv", Insert: true}}, "spec.data.format", 10, "model lstm reads format sequence_csv, not csv"},
		{"mlp needs csv", []edit{{Line: 10, Text: "    format: idx", Insert: true}}, "spec.data.format", 11, "model mlp reads format csv, not idx"},
		{"format unknown", []edit{{Line: 10, Text: "    format: parquet", Insert: true}}, "spec.data.format", 11, `"parquet" is not one of csv, idx, sequence_csv`},
		{"train required", []edit{{Line: 11, Text: ""}}, "spec.data.train", 10, "required"},
		{"train scheme", []edit{{Line: 11, Text: "    train: https://example.com/a.csv"}}, "spec.data.train", 11, `unsupported scheme "https"`},
		{"train not a URI", []edit{{Line: 11, Text: "    train: data/train.csv"}}, "spec.data.train", 11, "file://data/train.csv"},
		{"test URI", []edit{{Line: 12, Text: "    test: s3://bucket-only", Insert: true}}, "spec.data.test", 13, "no object key"},
		{"fraction and uri", []edit{{Line: 12, Text: "    validation: {fraction: 0.1, uri: file://v.csv}", Insert: true}}, "spec.data.validation", 13, "either fraction or uri"},
		{"fraction range", []edit{{Line: 12, Text: "    validation: {fraction: 1}", Insert: true}}, "spec.data.validation.fraction", 13, "between 0 and 1"},
		{"fraction zero", []edit{{Line: 12, Text: "    validation:\n      fraction: 0", Insert: true}}, "spec.data.validation.fraction", 14, "between 0 and 1"},
		{"stratify with uri", []edit{{Line: 12, Text: "    validation: {uri: file://v.csv, stratify: true}", Insert: true}}, "spec.data.validation.stratify", 13, "only to a split by fraction"},
		{"stratify regression", []edit{{Line: 6, Text: "  task: regression"}, {Line: 12, Text: "    validation: {stratify: true}", Insert: true}}, "spec.data.validation.stratify", 13, "classification"},
		{"label required for csv", []edit{{Line: 12, Text: ""}}, "spec.data.label", 10, "required for format csv"},
		{"positive for regression", []edit{{Line: 6, Text: "  task: regression"}, {Line: 12, Text: "    positive: \"Yes\"", Insert: true}}, "spec.data.positive", 13, "only to task binary_classification"},
		{"exclude duplicate", []edit{{Line: 12, Text: "    exclude: [id, id]", Insert: true}}, "spec.data.exclude[1]", 13, `duplicate "id"`},
		{"exclude label", []edit{{Line: 12, Text: "    exclude: [Attrition]", Insert: true}}, "spec.data.exclude[0]", 13, "label column"},
		{"sequence_csv required", []edit{{Line: 8, Text: "    lstm: {hidden: [4]}"}, {Line: 9, Text: ""}, {Line: 12, Text: ""}}, "spec.data.sequence_csv", 9, "required for format sequence_csv"},
		{"sequence_csv only for its format", []edit{{Line: 12, Text: "    sequence_csv: {lookback: 2, horizon: 1, target: y}", Insert: true}}, "spec.data.sequence_csv", 13, "only to format sequence_csv"},
		{"lookback", []edit{{Line: 8, Text: "    lstm: {hidden: [4]}"}, {Line: 9, Text: ""}, {Line: 12, Text: "    sequence_csv: {lookback: 0, horizon: 1, target: y}"}}, "spec.data.sequence_csv.lookback", 11, "must be greater than 0"},
		{"horizon", []edit{{Line: 8, Text: "    lstm: {hidden: [4]}"}, {Line: 9, Text: ""}, {Line: 12, Text: "    sequence_csv:\n      lookback: 3\n      horizon: 0\n      target: y"}}, "spec.data.sequence_csv.horizon", 13, "must be greater than 0"},
		{"target", []edit{{Line: 8, Text: "    lstm: {hidden: [4]}"}, {Line: 9, Text: ""}, {Line: 12, Text: "    sequence_csv: {lookback: 3, horizon: 1}"}}, "spec.data.sequence_csv.target", 11, "required"},
		{"label with sequence_csv", []edit{{Line: 8, Text: "    lstm: {hidden: [4]}"}, {Line: 9, Text: ""}, {Line: 12, Text: "    label: y\n    sequence_csv: {lookback: 3, horizon: 1, target: y}"}}, "spec.data.label", 11, "sequence_csv.target"},
		{"epochs zero", []edit{{Line: 14, Text: "    epochs: 0"}}, "spec.training.epochs", 14, "must be greater than 0"},
		{"epochs too many", []edit{{Line: 14, Text: "    epochs: 100001"}}, "spec.training.epochs", 14, "at most 100000"},
		{"batch size", []edit{{Line: 14, Text: "    batchSize: 65537", Insert: true}}, "spec.training.batchSize", 15, "at most 65536"},
		{"optimizer name", []edit{{Line: 16, Text: "      name: rmsprop"}}, "spec.training.optimizer.name", 16, `"rmsprop" is not one of sgd, momentum, adam`},
		{"learning rate zero", []edit{{Line: 16, Text: "      learningRate: 0", Insert: true}}, "spec.training.optimizer.learningRate", 17, "greater than 0"},
		{"learning rate too big", []edit{{Line: 16, Text: "      learningRate: 10.5", Insert: true}}, "spec.training.optimizer.learningRate", 17, "at most 10"},
		{"momentum range", []edit{{Line: 16, Text: "      name: momentum\n      momentum: 1"}}, "spec.training.optimizer.momentum", 17, "[0, 1)"},
		{"momentum on adam", []edit{{Line: 16, Text: "      momentum: 0.5", Insert: true}}, "spec.training.optimizer.momentum", 17, "only to optimizer momentum"},
		{"beta1 range", []edit{{Line: 16, Text: "      beta1: 1.0", Insert: true}}, "spec.training.optimizer.beta1", 17, "[0, 1)"},
		{"beta2 on sgd", []edit{{Line: 16, Text: "      name: sgd\n      beta2: 0.9"}}, "spec.training.optimizer.beta2", 17, "only to optimizer adam"},
		{"weight decay", []edit{{Line: 16, Text: "      weightDecay: -0.1", Insert: true}}, "spec.training.optimizer.weightDecay", 17, "0 or more"},
		{"consistency mode", []edit{{Line: 16, Text: "    consistency: {mode: eventual}", Insert: true}}, "spec.training.consistency.mode", 17, `"eventual" is not one of`},
		{"bounded needs staleness", []edit{{Line: 16, Text: "    consistency: {mode: bounded}", Insert: true}}, "spec.training.consistency.staleness", 17, "must be greater than 0"},
		{"staleness only with bounded", []edit{{Line: 16, Text: "    consistency: {mode: async, staleness: 3}", Insert: true}}, "spec.training.consistency.staleness", 17, "only to mode bounded"},
		{"worker count zero", []edit{{Line: 19, Text: "      count: 0"}}, "spec.resources.workers.count", 19, "must be greater than 0"},
		{"worker count too many", []edit{{Line: 19, Text: "      count: 1025"}}, "spec.resources.workers.count", 19, "at most 1024"},
		{"min above count", []edit{{Line: 19, Text: "      min: 3", Insert: true}}, "spec.resources.workers.min", 20, "between 1 and count (2)"},
		{"max below count", []edit{{Line: 19, Text: "      max: 1", Insert: true}}, "spec.resources.workers.max", 20, "between count (2) and 1024"},
		{"gpus negative", []edit{{Line: 19, Text: "      gpus: -1", Insert: true}}, "spec.resources.workers.gpus", 20, "between 0 and 64"},
		{"cpu unparsable", []edit{{Line: 19, Text: "      cpu: lots", Insert: true}}, "spec.resources.workers.cpu", 20, `invalid CPU amount "lots"`},
		{"cpu zero", []edit{{Line: 19, Text: "      cpu: 0m", Insert: true}}, "spec.resources.workers.cpu", 20, "greater than 0"},
		{"memory unparsable", []edit{{Line: 19, Text: "      memory: 1GB", Insert: true}}, "spec.resources.workers.memory", 20, `unknown unit "GB"`},
		{"memory zero", []edit{{Line: 21, Text: "      memory: 0Mi", Insert: true}}, "spec.resources.parameterServers.memory", 22, "greater than 0"},
		{"shards zero", []edit{{Line: 21, Text: "      shards: 0"}}, "spec.resources.parameterServers.shards", 21, "must be greater than 0"},
		{"shards too many", []edit{{Line: 21, Text: "      shards: 257"}}, "spec.resources.parameterServers.shards", 21, "at most 256"},
		{"replicas three", []edit{{Line: 21, Text: "      replicas: 3", Insert: true}}, "spec.resources.parameterServers.replicas", 22, "at most 2, got 3"},
		{"replicas negative", []edit{{Line: 21, Text: "      replicas: -1", Insert: true}}, "spec.resources.parameterServers.replicas", 22, "must be greater than 0"},
		{"replicas not a number", []edit{{Line: 21, Text: "      replicas: two", Insert: true}}, "spec.resources.parameterServers.replicas", 22, "expected an integer"},
		{"everySteps negative", []edit{{Line: 23, Text: "    everySteps: -1", Insert: true}}, "spec.checkpoint.everySteps", 24, "0 (final checkpoint only) or more"},
		{"keep zero", []edit{{Line: 23, Text: "    keep: 0"}}, "spec.checkpoint.keep", 23, "must be greater than 0"},
		{"export unknown", []edit{{Line: 25, Text: "    formats: [safetensors, pickle]"}}, "spec.export.formats[1]", 25, `"pickle" is not one of onnx, safetensors`},
		{"export duplicate", []edit{{Line: 25, Text: "    formats:\n      - onnx\n      - onnx"}}, "spec.export.formats[1]", 27, `duplicate "onnx"`},
		{"export empty", []edit{{Line: 25, Text: "    formats: []"}}, "spec.export.formats", 25, "at least one"},
		{"onnx preprocessing unknown", []edit{{Line: 25, Text: "    formats: [onnx]\n    onnx: {preprocessing: inline}"}}, "spec.export.onnx.preprocessing", 26, `"inline" is not one of embedded, separate`},
		{"onnx preprocessing unknown field", []edit{{Line: 25, Text: "    formats: [onnx]\n    onnx: {preprocesing: separate}"}}, "spec.export.onnx.preprocesing", 26, `did you mean "preprocessing"`},
		{"onnx preprocessing wrong type", []edit{{Line: 25, Text: "    formats: [onnx]\n    onnx:\n      preprocessing: [separate]"}}, "spec.export.onnx.preprocessing", 27, "expected a string, got a list"},
		{"onnx preprocessing null", []edit{{Line: 25, Text: "    formats: [onnx]\n    onnx: null"}}, "spec.export.onnx", 26, "null"},
		{"onnx preprocessing without onnx", []edit{{Line: 25, Text: "    formats: [safetensors]\n    onnx: {preprocessing: separate}"}}, "spec.export.onnx.preprocessing", 26, `"separate" applies only to the onnx format`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertOneProblem(t, editSpec(t, tt.edits...), tt.wantPath, tt.wantLine, tt.wantMsg)
		})
	}
}

// assertOneProblem parses spec and checks that it has exactly one problem, at path and
// line, whose message contains msg.
func assertOneProblem(t *testing.T, spec, path string, line int, msg string) {
	t.Helper()
	_, err := Parse([]byte(spec))
	errs := specErrors(t, err)
	if len(errs) != 1 {
		t.Errorf("got %d problems, want 1:\n%v", len(errs), err)
	}
	fe := errs[0]
	if fe.Path != path || fe.Line != line || !strings.Contains(fe.Message, msg) {
		t.Fatalf("got  %s\nwant %s (line %d): ...%s...\nspec:\n%s", fe.Error(), path, line, msg, spec)
	}
}

func TestParseReportsAllProblems(t *testing.T) {
	spec := editSpec(t,
		edit{Line: 4, Text: "  name: Bad_Name"},
		edit{Line: 9, Text: "      hidden: [0]"},
		edit{Line: 11, Text: "    train: ftp://x/y"},
		edit{Line: 14, Text: "    epochs: abc"},
		edit{Line: 16, Text: "      nme: adam"},
		edit{Line: 19, Text: "      count: 0"},
		edit{Line: 23, Text: "    keep: -1"},
	)
	_, err := Parse([]byte(spec))
	errs := specErrors(t, err)
	want := []struct {
		path string
		line int
	}{
		{"metadata.name", 4},
		{"spec.model.mlp.hidden[0]", 9},
		{"spec.data.train", 11},
		{"spec.training.epochs", 14},
		{"spec.training.optimizer.nme", 16},
		{"spec.resources.workers.count", 19},
		{"spec.checkpoint.keep", 23},
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(errs), len(want), err)
	}
	for i, w := range want {
		if errs[i].Path != w.path || errs[i].Line != w.line {
			t.Errorf("problem %d = %s, want %s (line %d)", i, errs[i].Error(), w.path, w.line)
		}
	}
	if got := strings.Count(err.Error(), "\n") + 1; got != len(want) {
		t.Errorf("Error() has %d lines, want %d:\n%s", got, len(want), err)
	}
}

func TestParseDocumentErrors(t *testing.T) {
	tests := []struct {
		name     string
		data     string
		wantLine int
		wantMsg  string
	}{
		{"empty", "", 0, "spec is empty"},
		{"comment only", "# nothing\n", 0, "spec is empty"},
		{"malformed", "apiVersion: cohort.dev/v1\nkind: TrainingJob\n  metadata: x\n", 3, "malformed YAML"},
		{"unclosed flow", "apiVersion: cohort.dev/v1\nspec: {task: [\n", 2, "malformed YAML"},
		{"two documents", baseSpec + "---\n" + baseSpec, 26, "more than one YAML document"},
		{"tab indentation", "apiVersion: x\n\tkind: y\n", 2, "malformed YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.data))
			errs := specErrors(t, err)
			if len(errs) != 1 || errs[0].Line != tt.wantLine || !strings.Contains(errs[0].Message, tt.wantMsg) {
				t.Fatalf("got %v; want one problem on line %d containing %q", err, tt.wantLine, tt.wantMsg)
			}
		})
	}
}

func TestParseRootShape(t *testing.T) {
	tests := []struct {
		name, data, wantMsg string
	}{
		{"list", "- a\n- b\n", "expected a mapping, got a list"},
		{"scalar", "hello\n", `expected a mapping, got the string "hello"`},
		{"null", "~\n", "must not be null"},
		{"non-string key", "1: a\n", "field names must be strings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.data))
			errs := specErrors(t, err)
			if errs[0].Line != 1 || !strings.Contains(errs[0].Message, tt.wantMsg) {
				t.Fatalf("got %v; want a problem on line 1 containing %q", err, tt.wantMsg)
			}
		})
	}
}

func TestParseSizeLimit(t *testing.T) {
	big := baseSpec + "# " + strings.Repeat("x", MaxSpecBytes) + "\n"
	_, err := Parse([]byte(big))
	errs := specErrors(t, err)
	if len(errs) != 1 || !strings.Contains(errs[0].Message, "limit is 1048576") {
		t.Fatalf("got %v; want the size limit", err)
	}
	// A spec just under the limit is parsed.
	pad := MaxSpecBytes - len(baseSpec) - 3
	mustParse(t, baseSpec+"# "+strings.Repeat("x", pad)+"\n")
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		fe   FieldError
		want string
	}{
		{FieldError{Path: "spec.training.epochs", Line: 12, Message: "must be greater than 0"}, "spec.training.epochs (line 12): must be greater than 0"},
		{FieldError{Path: "spec.task", Message: "required"}, "spec.task: required"},
		{FieldError{Line: 3, Message: "malformed YAML: x"}, "line 3: malformed YAML: x"},
		{FieldError{Message: "spec is empty"}, "spec is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.fe.Error(); got != tt.want {
				t.Fatalf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
	se := &SpecError{Errors: []FieldError{tests[0].fe, tests[1].fe}}
	if got, want := se.Error(), tests[0].want+"\n"+tests[1].want; got != want {
		t.Fatalf("SpecError.Error() = %q, want %q", got, want)
	}
}

func TestJSONUsesYAMLNames(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("examples", "workforce-lstm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	j := mustParse(t, string(data))
	out, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"apiVersion"`, `"batchSize"`, `"parameterServers"`, `"sequence_csv"`, `"learningRate"`, `"everySteps"`} {
		if !strings.Contains(string(out), key) {
			t.Errorf("JSON lacks %s: %s", key, out)
		}
	}
	var back TrainingJob
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	orig := *j
	orig.lines = nil
	if !reflect.DeepEqual(back, orig) {
		t.Fatalf("JSON round trip changed the job:\n%+v\n%+v", back, orig)
	}
}
