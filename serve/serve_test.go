package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/model"
)

// fixture is a model as training leaves it (gorgonia model, parameters, fitted
// preprocessing) and the server for its export.
type fixture struct {
	m      model.Model
	params []float32
	arch   export.Architecture
	srv    *Server
	reg    *prometheus.Registry
}

// newFixture exports m with random parameters and the preprocessing, reads the export
// back as serve does, and starts a server on it.
func newFixture(t testing.TB, m model.Model, err error, arch export.Architecture, format string, pre any) *fixture {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	p := m.InitParams(9)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range p {
		p[i] += float32(rng.NormFloat64() * 0.2)
	}
	var tensors []export.Tensor
	for _, ti := range m.Layout() {
		tensors = append(tensors, export.Tensor{Name: ti.Name, Shape: ti.Shape, Data: p[ti.Offset : ti.Offset+ti.Size]})
	}
	preJSON, err := json.Marshal(pre)
	if err != nil {
		t.Fatal(err)
	}
	b := &export.Bundle{Name: "test-model", Arch: arch, Tensors: tensors,
		Metadata: map[string]string{export.MetaPreprocessing: string(preJSON), export.MetaDataFormat: format}}
	files, err := b.Files([]string{export.FormatSafetensors})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, export.SafetensorsFile), files[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	sm, err := Load(context.Background(), dir, storage.S3Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Model = sm
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.MaxRequestBytes = 1 << 20
	cfg.MaxBatchRows = 100
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{m: m, params: p, arch: arch, srv: srv, reg: reg}
	t.Cleanup(func() { f.srv.Close() })
	return f
}

// do sends one request to the server and decodes the JSON answer into v.
func (f *fixture) do(t *testing.T, method, path string, body any, v any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, httptest.NewRequest(method, path, rd))
	if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s %s: answer %q: %v", method, path, rec.Body.String(), err)
		}
	}
	return rec.Code
}

type input struct {
	Name     string `json:"name"`
	Shape    []int  `json:"shape"`
	Datatype string `json:"datatype"`
	Data     any    `json:"data"`
}

type inferReq struct {
	Inputs  []input          `json:"inputs"`
	Outputs []map[string]any `json:"outputs,omitempty"`
}

// infer posts inputs and returns outputs[0]'s values.
func (f *fixture) infer(t *testing.T, inputs []input) []float64 {
	t.Helper()
	var resp struct {
		Outputs []struct {
			Name  string    `json:"name"`
			Shape []int     `json:"shape"`
			Data  []float64 `json:"data"`
		} `json:"outputs"`
	}
	var raw json.RawMessage
	if code := f.do(t, "POST", "/v2/models/test-model/infer", inferReq{Inputs: inputs}, &raw); code != 200 {
		t.Fatalf("infer: %d %s", code, raw)
	}
	if err := json.Unmarshal(raw, &resp); err != nil && !strings.Contains(err.Error(), "string into Go") {
		t.Fatal(err)
	}
	return resp.Outputs[0].Data
}

// expected is the gorgonia forward pass on already preprocessed rows, with a regression
// output unscaled.
func (f *fixture) expected(t *testing.T, x []float32, n int) []float64 {
	t.Helper()
	out := make([]float32, n*f.m.OutputSize())
	if err := f.m.Predict(f.params, x, n, out); err != nil {
		t.Fatal(err)
	}
	want := make([]float64, len(out))
	for i, v := range out {
		want[i] = float64(v)
		if f.arch.Task == export.TaskRegression {
			want[i] = f.arch.Unscale(float64(v))
		}
	}
	return want
}

// assertClose compares with a tolerance of 1e-5, relative for values beyond 1 (the
// regression outputs in target units).
func assertClose(t *testing.T, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	worst := 0.0
	for i := range got {
		d := math.Abs(got[i] - want[i])
		if !(d <= 1e-5*math.Max(1, math.Abs(want[i]))) {
			t.Fatalf("value %d = %v, want %v (|diff| %.3g)", i, got[i], want[i], d)
		}
		worst = math.Max(worst, d/math.Max(1, math.Abs(want[i])))
	}
	t.Logf("max relative |diff| %.3g over %d values", worst, len(got))
}

func attritionTable(t testing.TB) *data.Table {
	t.Helper()
	fh, err := os.Open(filepath.Join("..", "jobs", "data", "attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	tbl, err := data.ReadCSV(fh)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// tabularFixture fits the preprocessing on the first 2400 rows of the attrition sample.
func tabularFixture(t testing.TB, label, task string) (*fixture, *data.Table, *data.Preprocessor) {
	tbl := attritionTable(t)
	rows := make([]int, 2400)
	for i := range rows {
		rows[i] = i
	}
	cfg := data.TabularConfig{Label: label, Task: task}
	if task == data.TaskBinary {
		cfg.Positive = "Yes"
	}
	pre, err := data.FitPreprocessor(tbl, rows, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.NewMLP(model.MLPConfig{Inputs: pre.Dim, Hidden: []int{16, 8}, Activation: model.ActivationTanh, Outputs: 1, Task: task, BatchSize: 8})
	arch := export.Architecture{Kind: export.KindMLP, Task: task, Inputs: pre.Dim, Outputs: 1, Activation: export.ActTanh, Hidden: []int{16, 8}}
	if task == data.TaskRegression {
		arch.LabelMean, arch.LabelStd = pre.LabelMean, pre.LabelStd
	}
	return newFixture(t, m, err, arch, "csv", pre), tbl, pre
}

// rawColumns turns table rows into one tensor per feature column: categorical as
// BYTES, numeric as FP64 numbers, except the first numeric column, sent as BYTES text
// with a missing value.
func rawColumns(tbl *data.Table, pre *data.Preprocessor, rows []int) []input {
	var inputs []input
	first := true
	for _, c := range pre.Columns {
		ci := tbl.ColumnIndex(c.Name)
		if c.Kind == data.KindCategorical || first && c.Kind == data.KindNumeric {
			vals := make([]string, len(rows))
			for i, r := range rows {
				vals[i] = tbl.Rows[r][ci]
			}
			if c.Kind == data.KindNumeric {
				first = false
				vals[1] = "NA"
				tbl.Rows[rows[1]][ci] = "NA"
			}
			inputs = append(inputs, input{c.Name, []int{len(rows)}, TypeBytes, vals})
			continue
		}
		vals := make([]float64, len(rows))
		for i, r := range rows {
			vals[i], _ = strconv.ParseFloat(tbl.Rows[r][ci], 64)
		}
		inputs = append(inputs, input{c.Name, []int{len(rows)}, TypeFP64, vals})
	}
	return inputs
}

// TestServeMatchesTrainingForwardPass sends raw rows of each model kind and compares
// the answers with the gorgonia forward pass on the rows the training preprocessing
// produced.
func TestServeMatchesTrainingForwardPass(t *testing.T) {
	for _, task := range []struct{ label, task string }{{"Attrition", data.TaskBinary}, {"MonthlyIncome", data.TaskRegression}} {
		t.Run("mlp-"+task.task, func(t *testing.T) {
			f, tbl, pre := tabularFixture(t, task.label, task.task)
			rows := make([]int, 25)
			for i := range rows {
				rows[i] = 2400 + i
			}
			inputs := rawColumns(tbl, pre, rows)
			x, err := pre.Transform(tbl, rows)
			if err != nil {
				t.Fatal(err)
			}
			assertClose(t, f.infer(t, inputs), f.expected(t, x, len(rows)))
		})
	}

	t.Run("cnn", func(t *testing.T) {
		m, err := model.NewCNN(model.CNNConfig{Height: 8, Width: 7, Channels: 1, Pool: 2, Dense: []int{6}, Outputs: 3,
			Task: model.TaskMulticlass, BatchSize: 4, Conv: []model.ConvLayer{{Filters: 3, Kernel: 3, Padding: 1}}})
		arch := export.Architecture{Kind: export.KindCNN, Task: export.TaskMulticlass, Inputs: 56, Outputs: 3, Activation: export.ActReLU,
			Channels: 1, Height: 8, Width: 7, Pool: 2, Dense: []int{6}, Conv: []export.Conv{{Filters: 3, Kernel: 3, Stride: 1, Padding: 1}}}
		info := imageInfo{Channels: 1, Height: 8, Width: 7, Scale: 1.0 / 255, Classes: 3, Layout: "NCHW"}
		f := newFixture(t, m, err, arch, "idx", info)
		const n = 9
		rng := rand.New(rand.NewPCG(4, 4))
		pix := make([]int, n*56)
		x := make([]float32, n*56)
		for i := range pix {
			pix[i] = rng.IntN(256)
			x[i] = float32(byte(pix[i])) / 255 // as data.LoadIDX scales
		}
		got := f.infer(t, []input{{ImageInput, []int{n, 8, 7}, TypeUINT8, pix}})
		assertClose(t, got, f.expected(t, x, n))
		got4 := f.infer(t, []input{{ImageInput, []int{n, 1, 8, 7}, TypeFP32, pix}})
		assertClose(t, got4, got)
	})

	t.Run("lstm", func(t *testing.T) {
		f, tbl, scaler := lstmFixture(t)
		ds, err := scaler.Windows(tbl, "test")
		if err != nil {
			t.Fatal(err)
		}
		// Window i holds rows i..i+3 of the single series, in time order.
		if ds.N != 30-4 {
			t.Fatalf("%d windows, want 26", ds.N)
		}
		var inputs []input
		for j, name := range []string{"Hours", "Absence", "Score"} {
			vals := make([]float64, ds.N*4)
			for i := range ds.N {
				for s := range 4 {
					vals[i*4+s], _ = strconv.ParseFloat(tbl.Rows[i+s][j+1], 64)
				}
			}
			dt := TypeFP64
			if name == "Absence" {
				dt = TypeINT64
			}
			inputs = append(inputs, input{name, []int{ds.N, 4}, dt, vals})
		}
		assertClose(t, f.infer(t, inputs), f.expected(t, ds.X, ds.N))
	})
}

// lstmFixture serves a two-layer LSTM regression (lookback 4, features Hours, Absence
// and Score) fitted on a 30-month series, which it returns with its scaler.
func lstmFixture(t *testing.T) (*fixture, *data.Table, *data.SequenceScaler) {
	t.Helper()
	var csv strings.Builder
	csv.WriteString("Month,Hours,Absence,Score\n")
	rng := rand.New(rand.NewPCG(5, 5))
	for m := 1; m <= 30; m++ {
		fmt.Fprintf(&csv, "%d,%.2f,%d,%.3f\n", m, 150+20*rng.NormFloat64(), rng.IntN(4), 3+rng.NormFloat64()*0.5)
	}
	tbl, err := data.ReadCSV(strings.NewReader(csv.String()))
	if err != nil {
		t.Fatal(err)
	}
	seq, err := data.LoadSequences(tbl, data.SequenceConfig{Lookback: 4, Horizon: 1, Target: "Score",
		Features: []string{"Hours", "Absence", "Score"}, Time: "Month", Task: data.TaskRegression, ValidationFraction: 0.2}, "test")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.NewLSTM(model.LSTMConfig{Steps: 4, Features: 3, Hidden: []int{5, 4}, Dense: []int{3}, Outputs: 1, Task: model.TaskRegression, BatchSize: 4})
	arch := export.Architecture{Kind: export.KindLSTM, Task: export.TaskRegression, Inputs: 12, Outputs: 1, Hidden: []int{5, 4}, Dense: []int{3},
		Steps: 4, Features: 3, LabelMean: seq.Scaler.TargetMean, LabelStd: seq.Scaler.TargetStd}
	return newFixture(t, m, err, arch, "sequence_csv", seq.Scaler), tbl, seq.Scaler
}

// TestServeBadInput checks that malformed requests get 4xx answers whose message names
// the input at fault, and that they are counted by status code.
func TestServeBadInput(t *testing.T) {
	f, tbl, pre := tabularFixture(t, "Attrition", data.TaskBinary)
	good := func() []input { return rawColumns(tbl, pre, []int{0, 1, 2}) }
	without := func(name string) []input {
		var out []input
		for _, in := range good() {
			if in.Name != name {
				out = append(out, in)
			}
		}
		return out
	}
	with := func(mut func(in *input)) []input {
		ins := good()
		for i := range ins {
			mut(&ins[i])
		}
		return ins
	}
	numeric, categorical := "", ""
	for _, c := range pre.Columns {
		if c.Kind == data.KindNumeric && numeric == "" && c.Name != "Age" {
			numeric = c.Name
		}
		if c.Kind == data.KindCategorical && categorical == "" {
			categorical = c.Name
		}
	}
	for _, tc := range []struct {
		name string
		body any
		code int
		want string
	}{
		{"missing column", inferReq{Inputs: without(categorical)}, 400, fmt.Sprintf("input %q: missing", categorical)},
		{"extra column", inferReq{Inputs: append(good(), input{"Attrition", []int{3}, TypeBytes, []string{"No", "No", "Yes"}})}, 400, `input "Attrition": not an input`},
		{"wrong rank", inferReq{Inputs: with(func(in *input) {
			if in.Name == numeric {
				in.Shape = []int{3, 1}
			}
		})}, 400, fmt.Sprintf("input %q: shape [3 1]: want [N]", numeric)},
		{"shape and data disagree", inferReq{Inputs: with(func(in *input) {
			if in.Name == numeric {
				in.Shape = []int{4}
			}
		})}, 400, fmt.Sprintf("input %q: data has 3 elements, shape [4] needs 4", numeric)},
		{"row counts differ", inferReq{Inputs: with(func(in *input) {
			if in.Name == numeric {
				in.Shape, in.Data = []int{2}, []float64{1, 2}
			}
		})}, 400, fmt.Sprintf("input %q: 2 rows", numeric)},
		{"categorical as number", inferReq{Inputs: with(func(in *input) {
			if in.Name == categorical {
				in.Datatype, in.Data = TypeINT64, []int{1, 2, 3}
			}
		})}, 400, fmt.Sprintf("input %q: a categorical column needs datatype BYTES", categorical)},
		{"text in numeric column", inferReq{Inputs: with(func(in *input) {
			if in.Name == numeric {
				in.Datatype, in.Data = TypeBytes, []string{"1", "lots", "3"}
			}
		})}, 400, fmt.Sprintf(`column %q is numeric, but the value "lots"`, numeric)},
		{"string in FP64 data", inferReq{Inputs: with(func(in *input) {
			if in.Name == numeric {
				in.Data = []any{1, "2", 3}
			}
		})}, 400, fmt.Sprintf(`input %q: data[1]: FP64 elements must be numbers`, numeric)},
		{"bad datatype", inferReq{Inputs: with(func(in *input) {
			if in.Name == numeric {
				in.Datatype = "FP16"
			}
		})}, 400, fmt.Sprintf(`input %q: datatype "FP16" is not supported`, numeric)},
		{"unknown output", inferReq{Inputs: good(), Outputs: []map[string]any{{"name": "logits"}}}, 400, `output "logits": not an output`},
		{"too many rows", inferReq{Inputs: rawColumns(tbl, pre, make([]int, 101))}, 400, "batch of 101 rows exceeds the limit of 100"},
		{"not JSON", []byte(`{"inputs": [`), 400, "request body"},
		{"unknown field", []byte(`{"inputs": [], "input": 1}`), 400, `unknown field "input"`},
		{"too large", []byte(`{"id": "` + strings.Repeat("x", 1<<20) + `"}`), 413, "exceeds the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var er ErrorResponse
			code := f.do(t, "POST", "/v2/models/test-model/infer", tc.body, &er)
			if code != tc.code || !strings.Contains(er.Error, tc.want) {
				t.Fatalf("got %d %q, want %d with %q", code, er.Error, tc.code, tc.want)
			}
		})
	}
	var er ErrorResponse
	if code := f.do(t, "POST", "/v2/models/other/infer", inferReq{Inputs: good()}, &er); code != 404 || !strings.Contains(er.Error, `"other"`) {
		t.Fatalf("other model: %d %q", code, er.Error)
	}
	if got := counterValue(t, f.srv.requests.WithLabelValues("400")); got != 13 {
		t.Fatalf("cohort_serve_requests_total{code=400} = %v, want 13", got)
	}
}

// TestServeEndpoints checks health, metadata, outputs selection, batch labels and the
// metrics of successful requests.
func TestServeEndpoints(t *testing.T) {
	f, tbl, pre := tabularFixture(t, "Attrition", data.TaskBinary)
	for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/test-model/ready", "/v2"} {
		var v map[string]any
		if code := f.do(t, "GET", path, nil, &v); code != 200 {
			t.Fatalf("GET %s: %d %v", path, code, v)
		}
		if path == "/v2" && fmt.Sprint(v["extensions"]) != "[binary_tensor_data]" {
			t.Fatalf("GET /v2: extensions %v, want [binary_tensor_data]", v["extensions"])
		}
	}
	var md ModelMetadata
	if code := f.do(t, "GET", "/v2/models/test-model", nil, &md); code != 200 {
		t.Fatalf("metadata: %d", code)
	}
	if len(md.Inputs) != len(pre.Columns) || md.Outputs[0].Name != OutputProbability || md.Inputs[0].Shape[0] != -1 {
		t.Fatalf("metadata %+v", md)
	}
	for i, c := range pre.Columns {
		if md.Inputs[i].Name != c.Name {
			t.Fatalf("metadata input %d is %q, want column %q", i, md.Inputs[i].Name, c.Name)
		}
	}
	var resp struct {
		ModelName string `json:"model_name"`
		Outputs   []struct {
			Name  string `json:"name"`
			Shape []int  `json:"shape"`
			Data  []any  `json:"data"`
		} `json:"outputs"`
	}
	code := f.do(t, "POST", "/v2/models/test-model/versions/1/infer",
		inferReq{Inputs: rawColumns(tbl, pre, []int{3, 4, 5, 6}), Outputs: []map[string]any{{"name": OutputLabel}}}, &resp)
	if code != 200 || resp.ModelName != "test-model" || len(resp.Outputs) != 1 || resp.Outputs[0].Name != OutputLabel || len(resp.Outputs[0].Data) != 4 {
		t.Fatalf("labels: %d %+v", code, resp)
	}
	for _, l := range resp.Outputs[0].Data {
		if l != "Yes" && l != "No" {
			t.Fatalf("label %v is not a class of Attrition", l)
		}
	}
	if got := counterValue(t, f.srv.requests.WithLabelValues("200")); got != 6 {
		t.Fatalf("cohort_serve_requests_total{code=200} = %v, want 6", got)
	}
	fams, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var observed uint64
	for _, fam := range fams {
		if fam.GetName() == "cohort_serve_request_duration_seconds" {
			observed = fam.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	if observed != 6 {
		t.Fatalf("cohort_serve_request_duration_seconds has %d observations, want 6", observed)
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(context.Background(), dir, storage.S3Config{}); err == nil || !strings.Contains(err.Error(), "model.safetensors") {
		t.Fatalf("empty dir: %v", err)
	}
	bad := filepath.Join(dir, "x.safetensors")
	os.WriteFile(bad, []byte("garbage!"), 0o644)
	if _, err := Load(context.Background(), bad, storage.S3Config{}); err == nil || !strings.Contains(err.Error(), "safetensors") {
		t.Fatalf("garbage file: %v", err)
	}
}

// FuzzDecodeRequest feeds arbitrary bodies to the request decoder: it must return
// tensors whose element counts match their shapes, or an error, and never panic.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"id":"1","inputs":[{"name":"Age","shape":[2],"datatype":"FP64","data":[41,35.5]},{"name":"Dept","shape":[2],"datatype":"BYTES","data":["Sales","R&D"]}]}`))
	f.Add([]byte(`{"inputs":[{"name":"image","shape":[1,2,2],"datatype":"UINT8","data":[[[0,255],[3,4]]]}],"outputs":[{"name":"label"}]}`))
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[-1],"datatype":"INT64","data":[]}]}`))
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[3],"datatype":"INT32","data":[1,2,99999999999]}]}`))
	// Data before its datatype, as encoders that sort keys write it: the envelope decoder
	// skips the data, decodeTensor reads it per datatype.
	f.Add([]byte(`{"inputs":[{"data":[[1.5,-0,0.25],[3,4,5]],"datatype":"FP64","name":"a","shape":[2,3]},{"data":[0,255,-0],"datatype":"UINT8","name":"b","shape":[3]},{"data":[-0,7,2147483647],"datatype":"INT32","name":"c","shape":[3]}]}`))
	f.Add([]byte(`{"inputs":[{"data":[1.5,2],"datatype":"INT64","name":"a","shape":[2]},{"data":[256],"datatype":"UINT8","name":"b","shape":[1]},{"data":[1e2, 0.1],"datatype":"FP32","name":"c","shape":[2]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		// A request the fast decoders take (envelope and tensors), encoding/json and the
		// same tensor checks take too, and read the same.
		if fast, ok := fastDecodeEnvelope(body); ok {
			if ft, err := decodeInputs(fast, nil, 1<<16); err == nil {
				ref, err := decodeEnvelope(body)
				if err != nil {
					t.Fatalf("fast decoder took a body encoding/json refuses: %v", err)
				}
				rt, err := decodeInputs(ref, nil, 1<<16)
				if err != nil {
					t.Fatalf("fast decoder took tensors the reference path refuses: %v", err)
				}
				a, _ := json.Marshal([]any{fast, ft})
				b, _ := json.Marshal([]any{ref, rt})
				if !bytes.Equal(a, b) {
					t.Fatalf("fast decoder read %s, encoding/json %s", a, b)
				}
			}
		}
		req, tensors, err := DecodeRequest(body, 1<<16)
		if err != nil {
			return
		}
		for i, tn := range tensors {
			// The fast data walker agrees with encoding/json on every accepted tensor.
			if in := req.Inputs[i]; len(in.Data) > 0 {
				var v any
				dec := json.NewDecoder(bytes.NewReader(in.Data))
				dec.UseNumber()
				if err := dec.Decode(&v); err != nil {
					t.Fatalf("tensor %q: accepted data %s that encoding/json refuses: %v", tn.Name, in.Data, err)
				}
				var leaves []any
				var walk func(any)
				walk = func(v any) {
					if a, ok := v.([]any); ok {
						for _, e := range a {
							walk(e)
						}
						return
					}
					leaves = append(leaves, v)
				}
				walk(v)
				if len(leaves) != len(tn.Numbers)+len(tn.Strings) {
					t.Fatalf("tensor %q: %d leaves, encoding/json finds %d", tn.Name, len(tn.Numbers)+len(tn.Strings), len(leaves))
				}
				for j, l := range leaves {
					switch l := l.(type) {
					case string:
						if tn.Strings == nil || tn.Strings[j] != l {
							t.Fatalf("tensor %q element %d: encoding/json reads %q", tn.Name, j, l)
						}
					case json.Number:
						f, _ := strconv.ParseFloat(l.String(), 64)
						if tn.Numbers == nil || (tn.Datatype != TypeFP32 && tn.Numbers[j] != f) {
							t.Fatalf("tensor %q element %d: encoding/json reads %v", tn.Name, j, l)
						}
					default:
						t.Fatalf("tensor %q element %d: accepted %v", tn.Name, j, l)
					}
				}
			}
			n := 1
			for _, d := range tn.Shape {
				n *= d
			}
			if len(tn.Numbers)+len(tn.Strings) != n || (tn.Numbers != nil) == (tn.Strings != nil) && n > 0 {
				t.Fatalf("tensor %q shape %v with %d numbers and %d strings", tn.Name, tn.Shape, len(tn.Numbers), len(tn.Strings))
			}
			for _, v := range tn.Numbers {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("tensor %q holds %v", tn.Name, v)
				}
			}
		}
	})
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// BenchmarkInferTabular measures requests of 1, 64 and 1,024 rows of the attrition MLP
// through the HTTP handler: decoding, preprocessing, the forward pass and encoding.
func BenchmarkInferTabular(b *testing.B) {
	f, tbl, pre := tabularFixture(b, "Attrition", data.TaskBinary)
	f.srv.cfg.MaxBatchRows = 1 << 16
	for _, n := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			var inputs []input
			for _, c := range pre.Columns {
				ci := tbl.ColumnIndex(c.Name)
				if c.Kind == data.KindCategorical {
					vals := make([]string, n)
					for i := range n {
						vals[i] = tbl.Rows[i][ci]
					}
					inputs = append(inputs, input{c.Name, []int{n}, TypeBytes, vals})
					continue
				}
				vals := make([]float64, n)
				for i := range n {
					vals[i], _ = strconv.ParseFloat(tbl.Rows[i][ci], 64)
				}
				inputs = append(inputs, input{c.Name, []int{n}, TypeFP64, vals})
			}
			body, err := json.Marshal(inferReq{Inputs: inputs})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				f.srv.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/models/test-model/infer", bytes.NewReader(body)))
				if rec.Code != 200 {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
