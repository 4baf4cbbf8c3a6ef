// Package ortest runs exported ONNX models in the real ONNX Runtime for tests, and
// compares its answers with `cohort serve`'s.
//
// The runtime is the npm package onnxruntime-node (its CPU library ships inside the
// package), driven by scripts/onnxruntime-check.mjs under Node.js. `make deps` installs
// it into bin/tools/onnxruntime ($COHORT_ONNXRUNTIME_DIR overrides the directory). A
// test calls Find first: without Node or the package the test is skipped with the
// reason, unless COHORT_REQUIRE_ONNX=1 (which `make test` sets), when it fails.
package ortest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/serve"
)

// RequireEnv is the environment variable that turns a missing runtime from a skip into
// a failure.
const RequireEnv = "COHORT_REQUIRE_ONNX"

// DirEnv overrides the directory whose node_modules holds onnxruntime-node.
const DirEnv = "COHORT_ONNXRUNTIME_DIR"

// Tensor types of the script.
const (
	TypeFloat32 = "float32"
	TypeString  = "string"
	TypeUint8   = "uint8"
	TypeInt64   = "int64"
)

// Tensor is one input or output in the script's JSON: its type, its dims (batch
// first) and its values, flat and row-major (a float32 NaN is null).
type Tensor struct {
	Type string          `json:"type"`
	Dims []int           `json:"dims"`
	Data json.RawMessage `json:"data"`
}

// Float32 is a float32 tensor; NaN (a missing value) is written as null.
func Float32(dims []int, v []float32) Tensor {
	vals := make([]any, len(v))
	for i, x := range v {
		if math.IsNaN(float64(x)) {
			vals[i] = nil
		} else {
			vals[i] = float64(x)
		}
	}
	return mustTensor(TypeFloat32, dims, vals)
}

// String is a string tensor.
func String(dims []int, v []string) Tensor { return mustTensor(TypeString, dims, v) }

// Uint8 is a uint8 tensor.
func Uint8(dims []int, v []byte) Tensor {
	vals := make([]int, len(v))
	for i, x := range v {
		vals[i] = int(x)
	}
	return mustTensor(TypeUint8, dims, vals)
}

func mustTensor(typ string, dims []int, v any) Tensor {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return Tensor{Type: typ, Dims: slices.Clone(dims), Data: b}
}

// Float32s returns a float32 tensor's values (null as NaN).
func (t Tensor) Float32s() ([]float32, error) {
	if t.Type != TypeFloat32 {
		return nil, fmt.Errorf("tensor of type %s, want %s", t.Type, TypeFloat32)
	}
	var vals []*float64
	if err := json.Unmarshal(t.Data, &vals); err != nil {
		return nil, err
	}
	out := make([]float32, len(vals))
	for i, v := range vals {
		out[i] = float32(math.NaN())
		if v != nil {
			out[i] = float32(*v)
		}
	}
	return out, nil
}

// Strings returns a string tensor's values.
func (t Tensor) Strings() ([]string, error) {
	if t.Type != TypeString {
		return nil, fmt.Errorf("tensor of type %s, want %s", t.Type, TypeString)
	}
	var vals []string
	err := json.Unmarshal(t.Data, &vals)
	return vals, err
}

// Run is one model file and its feeds by input name.
type Run struct {
	Model string            `json:"model"`
	Feeds map[string]Tensor `json:"feeds"`
}

// Result is what the runtime answered for one Run.
type Result struct {
	InputNames  []string          `json:"inputNames"`
	OutputNames []string          `json:"outputNames"`
	Outputs     map[string]Tensor `json:"outputs"`
}

// Runtime is a found Node.js with onnxruntime-node.
type Runtime struct {
	node, script, dir string
	// Version is onnxruntime-node's version.
	Version string
}

// Find returns the runtime, or skips the test (fails it when COHORT_REQUIRE_ONNX=1)
// with the reason when Node.js or onnxruntime-node is missing or does not load.
func Find(t testing.TB) *Runtime {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	r := &Runtime{script: filepath.Join(root, "scripts", "onnxruntime-check.mjs"), dir: os.Getenv(DirEnv)}
	if r.dir == "" {
		r.dir = filepath.Join(root, "bin", "tools", "onnxruntime")
	}
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + "; `make deps` installs it (npm install --prefix bin/tools/onnxruntime --ignore-scripts onnxruntime-node@1)"
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s=1: %s", RequireEnv, msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("onnxruntime: Node.js (node) not found on PATH")
		return nil
	}
	r.node = node
	cmd := exec.Command(node, r.script, "--version")
	cmd.Env = append(os.Environ(), DirEnv+"="+r.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		unavailable("onnxruntime: %s --version: %v: %s", r.script, err, strings.TrimSpace(string(out)))
		return nil
	}
	var v struct {
		Version string `json:"onnxruntime"`
	}
	if err := json.Unmarshal(out, &v); err != nil || v.Version == "" {
		unavailable("onnxruntime: %s --version printed %q", r.script, out)
		return nil
	}
	r.Version = v.Version
	return r
}

// Run runs the models in one Node process, each session on one thread, and returns
// their results in order; a model that does not load or run fails the test.
func (r *Runtime) Run(t testing.TB, runs []Run) []Result {
	t.Helper()
	req, err := json.Marshal(map[string]any{"runs": runs})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "onnxruntime-request.json")
	if err := os.WriteFile(path, req, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(r.node, r.script, path)
	cmd.Env = append(os.Environ(), DirEnv+"="+r.dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("onnxruntime %s: %v: %s", r.Version, err, strings.TrimSpace(stderr.String()))
	}
	var resp struct {
		Results []Result `json:"results"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("onnxruntime output %.200q: %v", out, err)
	}
	if len(resp.Results) != len(runs) {
		t.Fatalf("onnxruntime answered %d runs of %d", len(resp.Results), len(runs))
	}
	return resp.Results
}

// ServeTensors turns ONNX feeds of an embedded export into the tensors `cohort serve`
// takes for the same rows, in the order of the model's inputs: a float32 feed becomes
// FP64 numbers (the float32 values exactly), or BYTES strings with "NA" for NaN when
// it has a missing value; a string feed BYTES, a uint8 feed UINT8. A tabular column
// ([N, 1] in ONNX) is [N] in serve.
func ServeTensors(m *serve.Model, feeds map[string]Tensor) ([]serve.Tensor, error) {
	var out []serve.Tensor
	for _, in := range m.Metadata().Inputs {
		f, ok := feeds[in.Name]
		if !ok {
			return nil, fmt.Errorf("serve input %q has no ONNX feed", in.Name)
		}
		st := serve.Tensor{Name: in.Name, Shape: slices.Clone(f.Dims)}
		if len(in.Shape) == 1 && len(f.Dims) == 2 && f.Dims[1] == 1 {
			st.Shape = f.Dims[:1]
		}
		switch f.Type {
		case TypeFloat32:
			vals, err := f.Float32s()
			if err != nil {
				return nil, err
			}
			missing := slices.ContainsFunc(vals, func(v float32) bool { return math.IsNaN(float64(v)) })
			st.Datatype = serve.TypeFP64
			if missing {
				st.Datatype = serve.TypeBytes
			}
			for _, v := range vals {
				switch {
				case !missing:
					st.Numbers = append(st.Numbers, float64(v))
				case math.IsNaN(float64(v)):
					st.Strings = append(st.Strings, "NA")
				default:
					st.Strings = append(st.Strings, strconv.FormatFloat(float64(v), 'g', -1, 64))
				}
			}
		case TypeString:
			vals, err := f.Strings()
			if err != nil {
				return nil, err
			}
			st.Datatype, st.Strings = serve.TypeBytes, vals
		case TypeUint8:
			var vals []float64
			if err := json.Unmarshal(f.Data, &vals); err != nil {
				return nil, err
			}
			st.Datatype, st.Numbers = serve.TypeUINT8, vals
		default:
			return nil, fmt.Errorf("feed %q: type %s", in.Name, f.Type)
		}
		out = append(out, st)
	}
	if len(out) != len(feeds) {
		return nil, fmt.Errorf("%d ONNX feeds for the %d inputs of the served model", len(feeds), len(out))
	}
	return out, nil
}

// InferBody is the KServe v2 request body of the tensors.
func InferBody(tensors []serve.Tensor) []byte {
	var inputs []map[string]any
	for _, t := range tensors {
		var data any = t.Numbers
		if t.Datatype == serve.TypeBytes {
			data = t.Strings
		}
		inputs = append(inputs, map[string]any{"name": t.Name, "shape": t.Shape, "datatype": t.Datatype, "data": data})
	}
	b, err := json.Marshal(map[string]any{"inputs": inputs})
	if err != nil {
		panic(err)
	}
	return b
}

// Compare checks the runtime's outputs of an embedded export against serve's for the
// same rows: "probability" against serve's probability (binary) or probabilities
// (multiclass), "value" against serve's prediction, each within tol (relative to the
// value where it exceeds 1), and "label" equal to serve's label, except for a binary
// row whose probability is within tol of the threshold. It returns the largest
// absolute difference and the largest relative one (the difference over the value
// where it exceeds 1), which tol bounds.
func Compare(task string, served []serve.ResponseOutput, got Result, tol float64) (maxAbs, maxRel float64, err error) {
	byName := map[string]serve.ResponseOutput{}
	for _, o := range served {
		byName[o.Name] = o
	}
	var names []string
	switch task {
	case export.TaskRegression:
		names = []string{export.ONNXValue}
	default:
		names = []string{export.ONNXProbability, export.ONNXLabel}
	}
	if !slices.Equal(got.OutputNames, names) {
		return 0, 0, fmt.Errorf("onnxruntime outputs %v, want %v", got.OutputNames, names)
	}
	servedName := map[string]string{
		export.TaskBinary: serve.OutputProbability, export.TaskMulticlass: serve.OutputProbabilities,
		export.TaskRegression: serve.OutputPrediction,
	}[task]
	want, ok := byName[servedName].Data.([]float64)
	if !ok {
		return 0, 0, fmt.Errorf("serve output %q missing", servedName)
	}
	vals, err := got.Outputs[names[0]].Float32s()
	if err != nil {
		return 0, 0, fmt.Errorf("output %s: %w", names[0], err)
	}
	if len(vals) != len(want) {
		return 0, 0, fmt.Errorf("output %s: %d values, serve %d", names[0], len(vals), len(want))
	}
	for i, v := range vals {
		d := math.Abs(float64(v) - want[i])
		rel := d / math.Max(1, math.Abs(want[i]))
		if !(rel <= tol) {
			return maxAbs, maxRel, fmt.Errorf("output %s[%d]: onnxruntime %v, serve %v (|diff| %.3g, relative %.3g > %g)", names[0], i, v, want[i], d, rel, tol)
		}
		maxAbs, maxRel = math.Max(maxAbs, d), math.Max(maxRel, rel)
	}
	if task == export.TaskRegression {
		return maxAbs, maxRel, nil
	}
	labels, err := got.Outputs[export.ONNXLabel].Strings()
	if err != nil {
		return maxAbs, maxRel, fmt.Errorf("output label: %w", err)
	}
	wantLabels, ok := byName[serve.OutputLabel].Data.([]string)
	if !ok || len(labels) != len(wantLabels) {
		return maxAbs, maxRel, fmt.Errorf("output label: %d labels, serve %d", len(labels), len(wantLabels))
	}
	for i := range labels {
		if labels[i] == wantLabels[i] {
			continue
		}
		if task == export.TaskBinary && math.Abs(want[i]-export.DefaultThreshold) <= tol {
			continue
		}
		return maxAbs, maxRel, fmt.Errorf("label[%d]: onnxruntime %q, serve %q", i, labels[i], wantLabels[i])
	}
	return maxAbs, maxRel, nil
}
