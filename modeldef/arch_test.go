package modeldef

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestTensors pins the layout of every kind: names, shapes and order are what
// checkpoints, exports and worker/model's flat parameter vector depend on.
func TestTensors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		arch   Architecture
		want   []TensorSpec
		shape  []int
		params int
	}{
		{"mlp", Architecture{Kind: KindMLP, Task: TaskBinary, Inputs: 5, Outputs: 1, Activation: ActReLU, Hidden: []int{7, 4}},
			[]TensorSpec{{"dense0.weight", []int{5, 7}}, {"dense0.bias", []int{7}}, {"dense1.weight", []int{7, 4}}, {"dense1.bias", []int{4}},
				{"out.weight", []int{4, 1}}, {"out.bias", []int{1}}},
			[]int{5}, 5*7 + 7 + 7*4 + 4 + 4 + 1},
		{"linear", Architecture{Kind: KindMLP, Task: TaskMulticlass, Inputs: 3, Outputs: 2, Activation: ActTanh},
			[]TensorSpec{{"out.weight", []int{3, 2}}, {"out.bias", []int{2}}},
			[]int{3}, 8},
		// 2x7x6 -> conv 3-3 pad 1: 3x7x6, pool 2: 3x3x3 -> conv 4-2: 4x2x2, pool 2: 4x1x1.
		{"cnn", Architecture{Kind: KindCNN, Task: TaskMulticlass, Inputs: 84, Outputs: 3, Activation: ActReLU, Dense: []int{5},
			Channels: 2, Height: 7, Width: 6, Pool: 2, Conv: []Conv{{Filters: 3, Kernel: 3, Stride: 1, Padding: 1}, {Filters: 4, Kernel: 2, Stride: 1}}},
			[]TensorSpec{{"conv0.weight", []int{3, 2, 3, 3}}, {"conv0.bias", []int{3}}, {"conv1.weight", []int{4, 3, 2, 2}}, {"conv1.bias", []int{4}},
				{"dense0.weight", []int{4, 5}}, {"dense0.bias", []int{5}}, {"out.weight", []int{5, 3}}, {"out.bias", []int{3}}},
			[]int{2, 7, 6}, 54 + 3 + 48 + 4 + 20 + 5 + 15 + 3},
		{"lstm", Architecture{Kind: KindLSTM, Task: TaskRegression, Inputs: 12, Outputs: 1, Hidden: []int{5, 3}, Dense: []int{4}, Steps: 4, Features: 3},
			[]TensorSpec{{"lstm0.weight", []int{8, 20}}, {"lstm0.bias", []int{20}}, {"lstm1.weight", []int{8, 12}}, {"lstm1.bias", []int{12}},
				{"dense0.weight", []int{3, 4}}, {"dense0.bias", []int{4}}, {"out.weight", []int{4, 1}}, {"out.bias", []int{1}}},
			[]int{4, 3}, 160 + 20 + 96 + 12 + 12 + 4 + 4 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.arch.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tc.arch.Tensors(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Tensors:\n got %v\nwant %v", got, tc.want)
			}
			if got := tc.arch.NumParams(); got != tc.params {
				t.Fatalf("NumParams %d, want %d", got, tc.params)
			}
			if got := tc.arch.InputShape(); !reflect.DeepEqual(got, tc.shape) {
				t.Fatalf("InputShape %v, want %v", got, tc.shape)
			}
			// The hash format is fixed: checkpoint manifests and model cards record it.
			var b strings.Builder
			for _, ts := range tc.want {
				fmt.Fprintf(&b, "%s%v;", ts.Name, ts.Shape)
			}
			if tc.name == "mlp" && b.String() != "dense0.weight[5 7];dense0.bias[7];dense1.weight[7 4];dense1.bias[4];out.weight[4 1];out.bias[1];" {
				t.Fatalf("hashed text %q", b.String())
			}
			sum := sha256.Sum256([]byte(b.String()))
			if got, want := tc.arch.LayoutHash(), hex.EncodeToString(sum[:]); got != want {
				t.Fatalf("LayoutHash %s, want %s (over %q)", got, want, b.String())
			}
		})
	}
}

// TestValidateNamesTheField: Validate's errors start "architecture: " and name the
// field.
func TestValidateNamesTheField(t *testing.T) {
	good := Architecture{Kind: KindMLP, Task: TaskBinary, Inputs: 2, Outputs: 1, Activation: ActReLU}
	for _, tc := range []struct {
		name string
		edit func(*Architecture)
		want string
	}{
		{"kind", func(a *Architecture) { a.Kind = "rnn" }, `architecture: kind: "rnn" is not one of mlp, cnn, lstm`},
		{"outputs", func(a *Architecture) { a.Outputs = 2 }, "architecture: outputs: task binary_classification needs exactly 1 output, got 2"},
		{"dense in an mlp", func(a *Architecture) { a.Dense = []int{2} }, "architecture: dense: an mlp lists its layers in hidden"},
		{"cnn inputs", func(a *Architecture) {
			a.Kind, a.Channels, a.Height, a.Width, a.Conv = KindCNN, 1, 3, 3, []Conv{{Filters: 1, Kernel: 1, Stride: 1}}
		}, "architecture: inputs 2 != channels*height*width 9"},
		{"lstm window", func(a *Architecture) { a.Kind, a.Hidden, a.Steps, a.Features = KindLSTM, []int{2}, 3, 1 }, "architecture: steps 3 x features 1 must be >= 1 and make inputs 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := good
			tc.edit(&a)
			if err := a.Validate(); err == nil || err.Error() != tc.want {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
}
