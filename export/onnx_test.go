package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/internal/testenv"
	"github.com/cohort-dev/cohort/worker/model"
)

// testCase is one trained-model stand-in: a worker/model network with perturbed
// parameters and the Architecture that describes it.
type testCase struct {
	name string
	m    model.Model
	arch Architecture
}

// testCases builds one model of every kind, task and activation the exporter handles.
func testCases(t testing.TB) []testCase {
	mustModel := func(m model.Model, err error) model.Model {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var cs []testCase
	for _, act := range []string{ActReLU, ActTanh, ActSigmoid, ActLeakyReLU} {
		for _, task := range []string{TaskBinary, TaskMulticlass, TaskRegression} {
			out := 1
			if task == TaskMulticlass {
				out = 3
			}
			m := mustModel(model.NewMLP(model.MLPConfig{Inputs: 5, Hidden: []int{7, 4}, Activation: act, Outputs: out, Task: task, BatchSize: 4}))
			a := Architecture{Kind: KindMLP, Task: task, Inputs: 5, Outputs: out, Activation: act, Hidden: []int{7, 4}}
			if task == TaskRegression {
				a.LabelMean, a.LabelStd = 10, 3
			}
			cs = append(cs, testCase{fmt.Sprintf("mlp-%s-%s", act, task), m, a})
		}
	}
	conv := []model.ConvLayer{{Filters: 3, Kernel: 3, Stride: 1, Padding: 1}, {Filters: 4, Kernel: 2, Stride: 1}}
	cs = append(cs, testCase{"cnn-pool-multiclass",
		mustModel(model.NewCNN(model.CNNConfig{Height: 7, Width: 6, Channels: 2, Conv: conv, Pool: 2, Dense: []int{5}, Activation: ActReLU, Outputs: 3, Task: TaskMulticlass, BatchSize: 4})),
		Architecture{Kind: KindCNN, Task: TaskMulticlass, Inputs: 84, Outputs: 3, Activation: ActReLU, Dense: []int{5},
			Channels: 2, Height: 7, Width: 6, Pool: 2, Conv: []Conv{{Filters: 3, Kernel: 3, Stride: 1, Padding: 1}, {Filters: 4, Kernel: 2, Stride: 1}}}})
	cs = append(cs, testCase{"cnn-stride-binary",
		mustModel(model.NewCNN(model.CNNConfig{Height: 8, Width: 8, Channels: 1, Conv: []model.ConvLayer{{Filters: 2, Kernel: 3, Stride: 2, Padding: 1}}, Activation: ActTanh, Outputs: 1, Task: TaskBinary, BatchSize: 3})),
		Architecture{Kind: KindCNN, Task: TaskBinary, Inputs: 64, Outputs: 1, Activation: ActTanh,
			Channels: 1, Height: 8, Width: 8, Conv: []Conv{{Filters: 2, Kernel: 3, Stride: 2, Padding: 1}}}})
	cs = append(cs, testCase{"lstm-regression",
		mustModel(model.NewLSTM(model.LSTMConfig{Steps: 4, Features: 3, Hidden: []int{5, 3}, Dense: []int{4}, Outputs: 1, Task: TaskRegression, BatchSize: 4})),
		Architecture{Kind: KindLSTM, Task: TaskRegression, Inputs: 12, Outputs: 1, Hidden: []int{5, 3}, Dense: []int{4}, Steps: 4, Features: 3, LabelMean: -2, LabelStd: 0.5}})
	cs = append(cs, testCase{"lstm-multiclass",
		mustModel(model.NewLSTM(model.LSTMConfig{Steps: 1, Features: 2, Hidden: []int{3}, Outputs: 4, Task: TaskMulticlass, BatchSize: 2})),
		Architecture{Kind: KindLSTM, Task: TaskMulticlass, Inputs: 2, Outputs: 4, Hidden: []int{3}, Steps: 1, Features: 2}})
	return cs
}

// params returns perturbed initial parameters (so that biases are not zero).
func (c testCase) params(seed uint64) []float32 {
	p := c.m.InitParams(int64(seed))
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := range p {
		p[i] += float32(rng.NormFloat64() * 0.3)
	}
	return p
}

func (c testCase) tensors(p []float32) []Tensor {
	var ts []Tensor
	for _, ti := range c.m.Layout() {
		ts = append(ts, Tensor{Name: ti.Name, Shape: ti.Shape, Data: p[ti.Offset : ti.Offset+ti.Size]})
	}
	return ts
}

func randomRows(n, dim int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 11))
	x := make([]float32, n*dim)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// reference is the gorgonia forward pass with a regression output unscaled.
func (c testCase) reference(t *testing.T, p, x []float32, n int) []float32 {
	t.Helper()
	out := make([]float32, n*c.m.OutputSize())
	if err := c.m.Predict(p, x, n, out); err != nil {
		t.Fatal(err)
	}
	if c.arch.Task == TaskRegression {
		for i, v := range out {
			out[i] = float32(c.arch.Unscale(float64(v)))
		}
	}
	return out
}

func assertClose(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst := 0.0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) || d > tol*math.Max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("%s: value %d = %v, want %v (|diff| %.3g > %.0e)", what, i, got[i], want[i], d, tol)
		}
		worst = math.Max(worst, d)
	}
	t.Logf("%s: max |diff| %.3g over %d values", what, worst, len(got))
}

// TestPredictMatchesGorgonia checks the pure-Go forward pass against worker/model.
func TestPredictMatchesGorgonia(t *testing.T) {
	for _, c := range testCases(t) {
		t.Run(c.name, func(t *testing.T) {
			p := c.params(3)
			w, err := c.arch.CheckWeights(c.tensors(p))
			if err != nil {
				t.Fatal(err)
			}
			const n = 9
			x := randomRows(n, c.arch.Inputs, 5)
			want := make([]float32, n*c.arch.Outputs)
			if err := c.m.Predict(p, x, n, want); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, n*c.arch.Outputs)
			if err := c.arch.Predict(w, x, n, got); err != nil {
				t.Fatal(err)
			}
			assertClose(t, "pure Go vs gorgonia", got, want, 1e-5)
		})
	}
}

// TestONNXMatchesGorgonia evaluates every exported graph of the separate form with the
// independent ONNX evaluator and compares it with the gorgonia forward pass (regression
// unscaled).
func TestONNXMatchesGorgonia(t *testing.T) {
	for _, c := range testCases(t) {
		t.Run(c.name, func(t *testing.T) {
			p := c.params(4)
			b := &Bundle{Name: "m-" + c.name, Arch: c.arch, Tensors: c.tensors(p), Metadata: map[string]string{MetaPreprocessing: `{"x":1}`}, ONNXPreprocessing: ONNXSeparate}
			files, err := b.Files([]string{FormatONNX})
			if err != nil {
				t.Fatal(err)
			}
			var onnxBytes []byte
			for _, f := range files {
				if strings.HasSuffix(f.Path, ONNXFile) {
					onnxBytes = f.Data
				}
			}
			m, err := UnmarshalONNX(onnxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.GetOpsetImport()[0].GetVersion(); got != ONNXOpset {
				t.Fatalf("opset %d, want %d", got, ONNXOpset)
			}
			props := map[string]string{}
			for _, kv := range m.GetMetadataProps() {
				props[kv.GetKey()] = kv.GetValue()
			}
			if props[MetaPreprocessing] != `{"x":1}` || props[MetaTask] != c.arch.Task || props[MetaOpset] != "13" || props[MetaONNXPreprocessing] != ONNXSeparate {
				t.Fatalf("metadata_props %v lack the preprocessing, task or opset", props)
			}
			const n = 6
			x := randomRows(n, c.arch.Inputs, 8)
			got, shape, err := EvalONNX(m, x, append([]int{n}, c.arch.InputShape()...))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(shape) != fmt.Sprint([]int{n, c.arch.Outputs}) {
				t.Fatalf("output shape %v, want [%d %d]", shape, n, c.arch.Outputs)
			}
			assertClose(t, "onnx vs gorgonia", got, c.reference(t, p, x, n), 1e-5)
		})
	}
}

// TestONNXChecker runs onnx.checker.check_model(full_check=True) from python3-onnx on an
// export of every test model, in the separate and the embedded form. It skips (with the reason) when python3 cannot import
// onnx, unless COHORT_REQUIRE_ONNX=1, when it fails.
func TestONNXChecker(t *testing.T) {
	py, info := testenv.Python(t, "onnx", "python3-onnx", "COHORT_REQUIRE_ONNX")
	t.Logf("python %s, onnx %s", py, info)
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "..", "scripts", "onnx-check.py")
	dir := t.TempDir()
	var paths []string
	bundles := map[string]*Bundle{}
	for _, c := range testCases(t) {
		bundles["separate/"+c.name] = &Bundle{Name: c.name, Arch: c.arch, Tensors: c.tensors(c.params(1)), Metadata: map[string]string{MetaPreprocessing: "{}"}, ONNXPreprocessing: ONNXSeparate}
	}
	for _, c := range EmbeddedCases(t) {
		bundles["embedded/"+c.Name] = c.Bundle
	}
	for _, key := range slices.Sorted(maps.Keys(bundles)) {
		b := bundles[key]
		files, err := b.Files([]string{FormatONNX, FormatSafetensors})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			p := filepath.Join(dir, key, filepath.FromSlash(f.Path))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(f.Path, ".onnx") {
				paths = append(paths, p)
			}
		}
	}
	cmd := exec.Command(py, append([]string{script}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("onnx checker: %v: %s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(paths) {
		t.Fatalf("checker reported %d models, want %d:\n%s", len(lines), len(paths), out)
	}
	for _, l := range lines {
		var r struct {
			Path     string         `json:"path"`
			Opset    map[string]int `json:"opset"`
			Metadata []string       `json:"metadata"`
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("checker output %q: %v", l, err)
		}
		wantML := 0
		if strings.Contains(r.Path, "/embedded/") {
			wantML = ONNXMLOpset
		}
		if r.Opset["ai.onnx"] != ONNXOpset || r.Opset[ONNXMLDomain] != wantML || !strings.Contains(strings.Join(r.Metadata, ","), MetaPreprocessing) {
			t.Fatalf("checker saw %s", l)
		}
	}
	t.Logf("onnx.checker.check_model(full_check=True) passed for %d models", len(paths))
}

// TestONNXCheckerRejectsBrokenModel makes sure the checker run above can fail: a model
// whose node reads an undefined value must be refused.
func TestONNXCheckerRejectsBrokenModel(t *testing.T) {
	py, _ := testenv.Python(t, "onnx", "python3-onnx", "COHORT_REQUIRE_ONNX")
	c := testCases(t)[0]
	w, err := c.arch.CheckWeights(c.tensors(c.params(1)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := BuildONNX(&c.arch, w, "broken", nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Graph.Node[0].Input[0] = "nowhere"
	data, err := MarshalONNX(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "broken.onnx")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "..", "scripts", "onnx-check.py")
	out, err := exec.Command(py, script, p).CombinedOutput()
	if err == nil {
		t.Fatalf("checker accepted a graph with an undefined input:\n%s", out)
	}
	if !strings.Contains(string(out), "nowhere") {
		t.Fatalf("checker error does not name the undefined value: %s", out)
	}
}
