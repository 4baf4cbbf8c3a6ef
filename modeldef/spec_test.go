package modeldef

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/jobs"
)

// exampleSpec parses one of jobs/examples.
func exampleSpec(t *testing.T, name string) *jobs.Spec {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "jobs", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	j, err := jobs.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &j.Spec
}

// TestFromSpecExamples translates the example job of every kind.
func TestFromSpecExamples(t *testing.T) {
	for _, tc := range []struct {
		example string
		shape   DataShape
		want    Architecture
	}{
		{"attrition-mlp.yaml", DataShape{Inputs: 11, Outputs: 1, LabelMean: 5, LabelStd: 2},
			Architecture{Kind: KindMLP, Task: TaskBinary, Inputs: 11, Outputs: 1, Activation: ActReLU, Hidden: []int{64, 32}}},
		{"fashion-cnn.yaml", DataShape{Inputs: 28 * 28, Outputs: 10, Channels: 1, Height: 28, Width: 28},
			Architecture{Kind: KindCNN, Task: TaskMulticlass, Inputs: 28 * 28, Outputs: 10, Activation: ActReLU, Dense: []int{128},
				Channels: 1, Height: 28, Width: 28, Pool: 2,
				Conv: []Conv{{Filters: 32, Kernel: 3, Stride: 1}, {Filters: 64, Kernel: 3, Stride: 1}}}},
		{"performance-lstm.yaml", DataShape{Inputs: 12 * 7, Outputs: 1, LabelMean: 3, LabelStd: 0.5},
			Architecture{Kind: KindLSTM, Task: TaskRegression, Inputs: 12 * 7, Outputs: 1, Hidden: []int{32},
				Steps: 12, Features: 7, LabelMean: 3, LabelStd: 0.5}},
	} {
		t.Run(tc.example, func(t *testing.T) {
			s := exampleSpec(t, tc.example)
			a, err := FromSpec(s, tc.shape)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, tc.want) {
				t.Fatalf("FromSpec:\n got %+v\nwant %+v", a, tc.want)
			}
			if err := a.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFromSpecDefaultsAndCopies: an unset activation is relu, an unset stride 1, label
// statistics are kept for regression only, and the architecture shares no slice with
// the spec.
func TestFromSpecDefaultsAndCopies(t *testing.T) {
	s := &jobs.Spec{Task: jobs.TaskMulticlass, Model: jobs.Model{CNN: &jobs.CNN{
		Conv: []jobs.ConvLayer{{Filters: 2, Kernel: 3, Padding: 1}}, Dense: []int{4},
	}}}
	a, err := FromSpec(s, DataShape{Inputs: 3 * 6 * 5, Outputs: 4, Channels: 3, Height: 6, Width: 5, LabelMean: 1, LabelStd: 2})
	if err != nil {
		t.Fatal(err)
	}
	if a.Activation != ActReLU || a.Conv[0].Stride != 1 || a.LabelMean != 0 || a.LabelStd != 0 {
		t.Fatalf("defaults: %+v", a)
	}
	s.Model.CNN.Dense[0] = 99
	s.Model.CNN.Conv[0].Filters = 99
	if a.Dense[0] != 4 || a.Conv[0].Filters != 2 {
		t.Fatalf("the architecture shares the spec's slices: %+v", a)
	}

	r := &jobs.Spec{Task: jobs.TaskRegression, Model: jobs.Model{MLP: &jobs.MLP{Hidden: []int{3}, Activation: ActTanh}}}
	a, err = FromSpec(r, DataShape{Inputs: 2, Outputs: 1, LabelMean: 1, LabelStd: 2})
	if err != nil {
		t.Fatal(err)
	}
	if a.LabelMean != 1 || a.LabelStd != 2 || a.Activation != ActTanh {
		t.Fatalf("regression: %+v", a)
	}
	r.Model.MLP.Hidden[0] = 99
	if a.Hidden[0] != 3 {
		t.Fatalf("the architecture shares the spec's hidden widths: %+v", a)
	}
}

// TestFromSpecErrors: every error names the spec field it comes from.
func TestFromSpecErrors(t *testing.T) {
	mlp := func(hidden ...int) jobs.Model { return jobs.Model{MLP: &jobs.MLP{Hidden: hidden, Activation: ActReLU}} }
	cnn := func(pool int, conv ...jobs.ConvLayer) jobs.Model {
		return jobs.Model{CNN: &jobs.CNN{Conv: conv, Pool: pool, Activation: ActReLU}}
	}
	lstm := jobs.Model{LSTM: &jobs.LSTM{Hidden: []int{4}}}
	seq := jobs.Data{SequenceCSV: &jobs.SequenceCSV{Lookback: 5}}
	img := DataShape{Inputs: 64, Outputs: 3, Channels: 1, Height: 8, Width: 8}
	for _, tc := range []struct {
		name  string
		spec  jobs.Spec
		shape DataShape
		want  string
	}{
		{"no model", jobs.Spec{Task: jobs.TaskBinary}, DataShape{Inputs: 2, Outputs: 1},
			"spec.model: no model kind set"},
		{"mlp hidden", jobs.Spec{Task: jobs.TaskBinary, Model: mlp(4, 0)}, DataShape{Inputs: 2, Outputs: 1},
			"spec.model.mlp: hidden[1]: must be in [1, "},
		{"mlp activation", jobs.Spec{Task: jobs.TaskBinary, Model: jobs.Model{MLP: &jobs.MLP{Activation: "swish"}}}, DataShape{Inputs: 2, Outputs: 1},
			`spec.model.mlp: activation: "swish" is not one of relu, tanh, sigmoid, leaky_relu`},
		{"mlp outputs", jobs.Spec{Task: jobs.TaskMulticlass, Model: mlp(4)}, DataShape{Inputs: 2, Outputs: 1},
			"spec.model.mlp: outputs: task multiclass_classification needs >= 2 outputs (one per class), got 1"},
		{"mlp inputs", jobs.Spec{Task: jobs.TaskBinary, Model: mlp(4)}, DataShape{Inputs: 0, Outputs: 1},
			"spec.model.mlp: inputs: must be in [1, "},
		{"task", jobs.Spec{Task: "ranking", Model: mlp(4)}, DataShape{Inputs: 2, Outputs: 1},
			`spec.model.mlp: task: "ranking" is not one of`},
		{"cnn kernel", jobs.Spec{Task: jobs.TaskMulticlass, Model: cnn(0, jobs.ConvLayer{Filters: 2, Kernel: 9})}, img,
			"spec.model.cnn: conv[0]: kernel 9 with padding 0 shrinks its 8x8 input below 1x1"},
		{"cnn second kernel", jobs.Spec{Task: jobs.TaskMulticlass, Model: cnn(2, jobs.ConvLayer{Filters: 2, Kernel: 3}, jobs.ConvLayer{Filters: 2, Kernel: 4})}, img,
			"spec.model.cnn: conv[1]: kernel 4 with padding 0 shrinks its 3x3 input below 1x1"},
		{"cnn pool", jobs.Spec{Task: jobs.TaskMulticlass, Model: cnn(7, jobs.ConvLayer{Filters: 2, Kernel: 3})}, img,
			"spec.model.cnn: pool: size 7 after conv[0] shrinks its 6x6 output below 1x1"},
		{"cnn padding", jobs.Spec{Task: jobs.TaskMulticlass, Model: cnn(0, jobs.ConvLayer{Filters: 2, Kernel: 3, Padding: 3})}, img,
			"spec.model.cnn: conv[0].padding: must be in [0, kernel-1 = 2], got 3"},
		{"cnn negative stride", jobs.Spec{Task: jobs.TaskMulticlass, Model: cnn(0, jobs.ConvLayer{Filters: 2, Kernel: 3, Stride: -1})}, img,
			"spec.model.cnn: conv[0].stride: must be in [1, "},
		{"cnn no conv", jobs.Spec{Task: jobs.TaskMulticlass, Model: cnn(0)}, img,
			"spec.model.cnn: conv: a cnn needs at least one convolution"},
		{"cnn image", jobs.Spec{Task: jobs.TaskMulticlass, Model: cnn(0, jobs.ConvLayer{Filters: 2, Kernel: 3})}, DataShape{Inputs: 64, Outputs: 3, Height: 8, Width: 8},
			"spec.model.cnn: channels: must be in [1, "},
		{"lstm without sequences", jobs.Spec{Task: jobs.TaskRegression, Model: lstm}, DataShape{Inputs: 10, Outputs: 1},
			"spec.model.lstm: needs sequence_csv data with a lookback"},
		{"lstm inputs not whole steps", jobs.Spec{Task: jobs.TaskRegression, Model: lstm, Data: seq}, DataShape{Inputs: 12, Outputs: 1},
			"spec.model.lstm: needs sequence_csv data with a lookback"},
		{"lstm no layer", jobs.Spec{Task: jobs.TaskRegression, Model: jobs.Model{LSTM: &jobs.LSTM{}}, Data: seq}, DataShape{Inputs: 10, Outputs: 1},
			"spec.model.lstm: hidden: an lstm needs at least one layer"},
		{"lstm dense", jobs.Spec{Task: jobs.TaskRegression, Model: jobs.Model{LSTM: &jobs.LSTM{Hidden: []int{4}, Dense: []int{-2}}}, Data: seq}, DataShape{Inputs: 10, Outputs: 1},
			"spec.model.lstm: dense[0]: must be in [1, "},
		{"label statistics", jobs.Spec{Task: jobs.TaskRegression, Model: lstm, Data: seq}, DataShape{Inputs: 10, Outputs: 1, LabelStd: -1},
			"spec.model.lstm: label_mean 0, label_std -1: want finite values, std >= 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromSpec(&tc.spec, tc.shape)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v, want one starting %q", err, tc.want)
			}
		})
	}
}
