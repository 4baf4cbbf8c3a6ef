package export

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/advancedclimatesystems/gonnx/onnx"

	"github.com/cohort-dev/cohort/worker/data"
)

// RawInput is raw rows for one input of an embedded export: Floats (NaN is a missing
// value), Strings or Pixels, with Dims batch first as the graph takes them.
type RawInput struct {
	Dims    []int
	Floats  []float32
	Strings []string
	Pixels  []byte
}

// EmbeddedCase is a model of one kind and task with its fitted preprocessing, and raw
// rows for its embedded export that include missing values and, for tabular models,
// unseen and missing categories. The external tests (onnxruntime_test.go) use it too.
type EmbeddedCase struct {
	Name   string
	Bundle *Bundle
	Inputs map[string]RawInput
}

// randomTensors returns the architecture's weights, normal with the given spread.
func randomTensors(a *Architecture, seed uint64, spread float64) []Tensor {
	rng := rand.New(rand.NewPCG(seed, 3))
	var ts []Tensor
	for _, s := range a.Tensors() {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * spread)
		}
		ts = append(ts, Tensor{Name: s.Name, Shape: s.Shape, Data: v})
	}
	return ts
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// attritionTable reads jobs/data/attrition-sample.csv.
func attritionTable(t testing.TB) *data.Table {
	t.Helper()
	f, err := os.Open("../jobs/data/attrition-sample.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := data.ReadCSV(f)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// tabularCase fits the preprocessing of the attrition sample for the label and task,
// and takes its first rows as raw inputs, with an unseen category in row 0, a missing
// number in row 1, "NA" and "" categories in rows 2 and 3.
func tabularCase(t testing.TB, tbl *data.Table, name, task, label, act string, seed uint64) EmbeddedCase {
	t.Helper()
	rows := make([]int, len(tbl.Rows))
	for i := range rows {
		rows[i] = i
	}
	cfg := data.TabularConfig{Label: label, Task: task, Exclude: []string{"Gender", "MaritalStatus"}}
	if task == TaskBinary {
		cfg.Positive = "Yes"
	}
	p, err := data.FitPreprocessor(tbl, rows, cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := 1
	if task == TaskMulticlass {
		out = len(p.Classes)
	}
	a := Architecture{Kind: KindMLP, Task: task, Inputs: p.Dim, Outputs: out, Activation: act, Hidden: []int{8, 4}}
	if task == TaskRegression {
		a.LabelMean, a.LabelStd = p.LabelMean, p.LabelStd
	}
	const n = 24
	in := map[string]RawInput{}
	var firstCat, secondCat, firstNum string
	for _, c := range p.Columns {
		ci := tbl.ColumnIndex(c.Name)
		r := RawInput{Dims: []int{n, 1}}
		for row := range n {
			v := tbl.Rows[row][ci]
			if c.Kind == data.KindCategorical {
				r.Strings = append(r.Strings, v)
				continue
			}
			f := math.NaN()
			if !data.IsMissing(v) {
				if f, err = strconv.ParseFloat(v, 64); err != nil {
					t.Fatal(err)
				}
			}
			r.Floats = append(r.Floats, float32(f))
		}
		in[c.Name] = r
		switch {
		case c.Kind == data.KindNumeric && firstNum == "":
			firstNum = c.Name
		case c.Kind == data.KindCategorical && firstCat == "":
			firstCat = c.Name
		case c.Kind == data.KindCategorical && secondCat == "":
			secondCat = c.Name
		}
	}
	if firstCat == "" || secondCat == "" || firstNum == "" {
		t.Fatalf("%s: the preprocessing lacks two categorical and a numeric column: %+v", name, p.Columns)
	}
	in[firstCat].Strings[0] = "Teleport"
	in[firstNum].Floats[1] = float32(math.NaN())
	in[secondCat].Strings[2] = "NA"
	in[firstCat].Strings[3] = ""
	return EmbeddedCase{Name: name, Inputs: in, Bundle: &Bundle{
		Name: name, Arch: a, Tensors: randomTensors(&a, seed, 0.4),
		Metadata: map[string]string{MetaDataFormat: DataCSV, MetaPreprocessing: mustJSON(t, p)},
	}}
}

// smallTabularCase is a hand-made preprocessing of the given columns with raw rows:
// numeric columns get values around their mean and a NaN in row 1, categorical columns
// cycle through their categories plus an unseen value and "".
func smallTabularCase(t testing.TB, name, task string, cols []data.ColumnTransform, seed uint64) EmbeddedCase {
	t.Helper()
	p := data.Preprocessor{Label: "y", Task: task, Columns: cols}
	for _, c := range cols {
		if c.Kind == data.KindNumeric {
			p.Dim++
		} else {
			p.Dim += len(c.Categories)
		}
	}
	out := 1
	if task == TaskMulticlass {
		p.Classes, out = []string{"high", "low", "mid"}, 3
	}
	a := Architecture{Kind: KindMLP, Task: task, Inputs: p.Dim, Outputs: out, Activation: ActReLU, Hidden: []int{5}}
	if task == TaskRegression {
		a.LabelMean, a.LabelStd = 100, 20
	}
	const n = 9
	rng := rand.New(rand.NewPCG(seed, 2))
	in := map[string]RawInput{}
	for _, c := range cols {
		r := RawInput{Dims: []int{n, 1}}
		for row := range n {
			if c.Kind == data.KindCategorical {
				vals := append(append([]string(nil), c.Categories...), "unseen", "")
				r.Strings = append(r.Strings, vals[row%len(vals)])
				continue
			}
			v := float32(c.Mean + c.Std*rng.NormFloat64())
			if row == 1 {
				v = float32(math.NaN())
			}
			r.Floats = append(r.Floats, v)
		}
		in[c.Name] = r
	}
	return EmbeddedCase{Name: name, Inputs: in, Bundle: &Bundle{Name: name, Arch: a, Tensors: randomTensors(&a, seed, 0.5),
		Metadata: map[string]string{MetaDataFormat: DataCSV, MetaPreprocessing: mustJSON(t, p)}}}
}

// imageCase is a CNN over random pixels.
func imageCase(t testing.TB, name string, a Architecture, seed uint64) EmbeddedCase {
	t.Helper()
	const n = 6
	rng := rand.New(rand.NewPCG(seed, 5))
	px := make([]byte, n*a.Channels*a.Height*a.Width)
	for i := range px {
		px[i] = byte(rng.IntN(256))
	}
	info := ImagePreprocessing{Channels: a.Channels, Height: a.Height, Width: a.Width, Scale: 1.0 / 255, Classes: max(a.Outputs, 2), Layout: "NCHW"}
	return EmbeddedCase{Name: name,
		Inputs: map[string]RawInput{ONNXImage: {Dims: []int{n, a.Channels, a.Height, a.Width}, Pixels: px}},
		Bundle: &Bundle{Name: name, Arch: a, Tensors: randomTensors(&a, seed, 0.3),
			Metadata: map[string]string{MetaDataFormat: DataIDX, MetaPreprocessing: mustJSON(t, info)}}}
}

// sequenceCase is an LSTM over random windows around the features' means, with a
// missing value in row 1.
func sequenceCase(t testing.TB, name string, a Architecture, s data.SequenceScaler, seed uint64) EmbeddedCase {
	t.Helper()
	const n = 7
	rng := rand.New(rand.NewPCG(seed, 9))
	in := map[string]RawInput{}
	for j, f := range s.Features {
		r := RawInput{Dims: []int{n, s.Lookback}}
		for range n * s.Lookback {
			r.Floats = append(r.Floats, float32(s.Mean[j]+s.Std[j]*rng.NormFloat64()))
		}
		in[f] = r
	}
	in[s.Features[0]].Floats[1*s.Lookback+s.Lookback/2] = float32(math.NaN())
	return EmbeddedCase{Name: name, Inputs: in, Bundle: &Bundle{Name: name, Arch: a, Tensors: randomTensors(&a, seed, 0.5),
		Metadata: map[string]string{MetaDataFormat: DataSequenceCSV, MetaPreprocessing: mustJSON(t, s)}}}
}

// EmbeddedCases returns one embedded-export case of every data format and task.
func EmbeddedCases(t testing.TB) []EmbeddedCase {
	tbl := attritionTable(t)
	perf := data.SequenceScaler{Features: []string{"HoursWorked", "OvertimeHours", "PerformanceScore"},
		Mean: []float64{160.5, 6.2, 3.3}, Std: []float64{14.1, 4.4, 0.6}, Target: "PerformanceScore",
		TargetMean: 3.3, TargetStd: 0.6, Lookback: 5, Horizon: 3, Group: "EmployeeID", Time: "Month", Task: TaskRegression}
	cls := data.SequenceScaler{Features: []string{"a", "b"}, Mean: []float64{0, 10}, Std: []float64{1, 2},
		Target: "a", TargetStd: 1, Lookback: 3, Horizon: 1, Time: "t", Task: TaskMulticlass}
	return []EmbeddedCase{
		tabularCase(t, tbl, "tabular-binary", TaskBinary, "Attrition", ActReLU, 1),
		tabularCase(t, tbl, "tabular-multiclass", TaskMulticlass, "Department", ActTanh, 2),
		tabularCase(t, tbl, "tabular-regression", TaskRegression, "MonthlyIncome", ActLeakyReLU, 3),
		smallTabularCase(t, "tabular-categorical-only", TaskMulticlass, []data.ColumnTransform{
			{Name: "Dept", Kind: data.KindCategorical, Categories: []string{"HR", "R&D", "Sales"}},
			{Name: "Role", Kind: data.KindCategorical, Categories: []string{"analyst", "manager"}},
		}, 8),
		smallTabularCase(t, "tabular-one-number", TaskRegression, []data.ColumnTransform{
			{Name: "Tenure", Kind: data.KindNumeric, Mean: 7.5, Std: 3.25},
		}, 9),
		smallTabularCase(t, "tabular-interleaved", TaskBinary, []data.ColumnTransform{
			{Name: "A", Kind: data.KindNumeric, Mean: 1, Std: 2},
			{Name: "B", Kind: data.KindNumeric, Mean: -5, Std: 0.5},
			{Name: "C", Kind: data.KindCategorical, Categories: []string{"x", "y"}},
			{Name: "D", Kind: data.KindNumeric, Mean: 1000, Std: 300},
			{Name: "E", Kind: data.KindCategorical, Categories: []string{"only"}},
		}, 10),
		imageCase(t, "image-multiclass", Architecture{Kind: KindCNN, Task: TaskMulticlass, Inputs: 64, Outputs: 3, Activation: ActReLU,
			Channels: 1, Height: 8, Width: 8, Pool: 2, Dense: []int{5}, Conv: []Conv{{Filters: 3, Kernel: 3, Stride: 1, Padding: 1}}}, 4),
		imageCase(t, "image-binary", Architecture{Kind: KindCNN, Task: TaskBinary, Inputs: 108, Outputs: 1, Activation: ActSigmoid,
			Channels: 3, Height: 6, Width: 6, Conv: []Conv{{Filters: 2, Kernel: 3, Stride: 2, Padding: 1}}}, 5),
		sequenceCase(t, "sequence-regression", Architecture{Kind: KindLSTM, Task: TaskRegression, Inputs: 15, Outputs: 1,
			Hidden: []int{6, 4}, Dense: []int{3}, Steps: 5, Features: 3, LabelMean: 3.3, LabelStd: 0.6}, perf, 6),
		sequenceCase(t, "sequence-multiclass", Architecture{Kind: KindLSTM, Task: TaskMulticlass, Inputs: 6, Outputs: 3,
			Hidden: []int{4}, Steps: 3, Features: 2}, cls, 7),
	}
}

// onnxOf returns the bundle's ONNX model and config.pbtxt.
func onnxOf(t *testing.T, b *Bundle) (*onnx.ModelProto, string) {
	t.Helper()
	files, err := b.Files([]string{FormatONNX})
	if err != nil {
		t.Fatal(err)
	}
	var m *onnx.ModelProto
	var cfg string
	for _, f := range files {
		switch {
		case strings.HasSuffix(f.Path, ONNXFile):
			if m, err = UnmarshalONNX(f.Data); err != nil {
				t.Fatal(err)
			}
		case strings.HasSuffix(f.Path, TritonConfigFile):
			cfg = string(f.Data)
		}
	}
	return m, cfg
}

// TestEmbeddedSignature checks every embedded export's graph inputs and outputs, opsets
// and metadata against EmbeddedSignature, and that config.pbtxt declares exactly them.
func TestEmbeddedSignature(t *testing.T) {
	for _, c := range EmbeddedCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			m, cfg := onnxOf(t, c.Bundle)
			got, err := SignatureOf(m)
			if err != nil {
				t.Fatal(err)
			}
			p, err := DecodePreprocessing(c.Bundle.Metadata[MetaDataFormat], c.Bundle.Metadata[MetaPreprocessing], &c.Bundle.Arch)
			if err != nil {
				t.Fatal(err)
			}
			want, err := EmbeddedSignature(&c.Bundle.Arch, p)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("graph signature %v, want %v", got, want)
			}
			if len(got.Inputs) != len(c.Inputs) {
				t.Fatalf("%d graph inputs, the case feeds %d", len(got.Inputs), len(c.Inputs))
			}
			opsets := map[string]int64{}
			for _, o := range m.GetOpsetImport() {
				opsets[o.GetDomain()] = o.GetVersion()
			}
			if opsets[""] != ONNXOpset || opsets[ONNXMLDomain] != ONNXMLOpset || len(opsets) != 2 {
				t.Fatalf("opsets %v", opsets)
			}
			props := map[string]string{}
			for _, kv := range m.GetMetadataProps() {
				props[kv.GetKey()] = kv.GetValue()
			}
			if props[MetaONNXPreprocessing] != ONNXEmbedded || props[MetaPreprocessing] == "" {
				t.Fatalf("metadata %v", props)
			}
			if got := strings.Count(cfg, "data_type:"); got != len(want.Inputs)+len(want.Outputs) {
				t.Fatalf("config.pbtxt declares %d tensors, want %d:\n%s", got, len(want.Inputs)+len(want.Outputs), cfg)
			}
			for _, ts := range append(append([]ONNXTensor(nil), want.Inputs...), want.Outputs...) {
				dims := make([]string, len(ts.Dims))
				for i, d := range ts.Dims {
					dims[i] = strconv.Itoa(d)
				}
				decl := fmt.Sprintf("name: %q\n    data_type: %s\n    dims: [ %s ]", ts.Name, ts.TritonType(), strings.Join(dims, ", "))
				if ts.TritonType() == "" || !strings.Contains(cfg, decl) {
					t.Fatalf("config.pbtxt lacks\n%s\nin\n%s", decl, cfg)
				}
			}
			for _, w := range []string{"max_batch_size: 1024", `string_value: "embedded"`} {
				if !strings.Contains(cfg, w) {
					t.Fatalf("config.pbtxt lacks %s:\n%s", w, cfg)
				}
			}
		})
	}
}

// TestTritonConfigTabular pins the config.pbtxt of a small tabular model.
func TestTritonConfigTabular(t *testing.T) {
	pre := data.Preprocessor{Label: "Attrition", Task: TaskBinary, Positive: "Yes", Classes: []string{"No", "Yes"}, Dim: 3,
		Columns: []data.ColumnTransform{
			{Name: "Age", Kind: data.KindNumeric, Mean: 40, Std: 10},
			{Name: `Dept "x"`, Kind: data.KindCategorical, Categories: []string{"HR", "Sales"}},
		}}
	a := Architecture{Kind: KindMLP, Task: TaskBinary, Inputs: 3, Outputs: 1, Activation: ActReLU, Hidden: []int{2}}
	b := &Bundle{Name: "attrition", Arch: a, Tensors: randomTensors(&a, 1, 1),
		Metadata: map[string]string{MetaDataFormat: DataCSV, MetaPreprocessing: mustJSON(t, pre)}}
	_, cfg := onnxOf(t, b)
	want := `name: "attrition"
platform: "onnxruntime_onnx"
max_batch_size: 1024
input [
  {
    name: "Age"
    data_type: TYPE_FP32
    dims: [ 1 ]
  },
  {
    name: "Dept \"x\""
    data_type: TYPE_STRING
    dims: [ 1 ]
  }
]
output [
  {
    name: "probability"
    data_type: TYPE_FP32
    dims: [ 1 ]
  },
  {
    name: "label"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }
]
parameters [
  {
    key: "cohort.task"
    value: { string_value: "binary_classification" }
  },
  {
    key: "cohort.onnx_preprocessing"
    value: { string_value: "embedded" }
  }
]
`
	if cfg != want {
		t.Fatalf("config.pbtxt:\n%s\nwant:\n%s", cfg, want)
	}
	if got := pbtxtQuote("a\nb\\c\x7f\u00e9"); got != `"a\012b\\c\177`+"\u00e9\"" {
		t.Fatalf("pbtxtQuote: %s", got)
	}
}

// TestEmbeddedONNXRejects: a bundle whose preprocessing cannot be embedded, or whose
// raw input names clash with the graph's, is refused with an error naming the problem.
func TestEmbeddedONNXRejects(t *testing.T) {
	base := EmbeddedCases(t)[0].Bundle
	var pre data.Preprocessor
	if err := json.Unmarshal([]byte(base.Metadata[MetaPreprocessing]), &pre); err != nil {
		t.Fatal(err)
	}
	renamed := func(name string) string {
		p := pre
		p.Columns = append([]data.ColumnTransform(nil), pre.Columns...)
		p.Columns[0].Name = name
		return mustJSON(t, p)
	}
	for _, tc := range []struct {
		name   string
		mutate func(b *Bundle)
		want   string
	}{
		{"no data format", func(b *Bundle) { delete(b.Metadata, MetaDataFormat) }, `data format ""`},
		{"unknown field", func(b *Bundle) { b.Metadata[MetaPreprocessing] = `{"label":"x","bogus":1}` }, `unknown field "bogus"`},
		{"other format's record", func(b *Bundle) { b.Metadata[MetaDataFormat] = DataIDX }, `unknown field "label"`},
		{"fewer features", func(b *Bundle) {
			p := pre
			p.Columns = pre.Columns[1:]
			p.Dim--
			b.Metadata[MetaPreprocessing] = mustJSON(t, p)
		}, fmt.Sprintf("makes %d features, the mlp takes %d", pre.Dim-1, pre.Dim)},
		{"trailing data", func(b *Bundle) { b.Metadata[MetaPreprocessing] += " {}" }, "trailing data"},
		{"input named as an output", func(b *Bundle) { b.Metadata[MetaPreprocessing] = renamed(ONNXLabel) }, `input "label" has the name of an output`},
		{"input named as a weight", func(b *Bundle) { b.Metadata[MetaPreprocessing] = renamed("dense0.weight") }, `"dense0.weight"`},
		{"bad threshold", func(b *Bundle) { b.Threshold = 1.5 }, "threshold 1.5"},
		{"bad form", func(b *Bundle) { b.ONNXPreprocessing = "inline" }, `onnx preprocessing "inline"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := *base
			b.Metadata = map[string]string{}
			for k, v := range base.Metadata {
				b.Metadata[k] = v
			}
			tc.mutate(&b)
			_, err := b.Files([]string{FormatONNX})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %s", err, tc.want)
			}
			// The safetensors export does not read the preprocessing.
			if _, err := b.Files([]string{FormatSafetensors}); tc.name != "bad form" && err != nil {
				t.Fatalf("safetensors: %v", err)
			}
		})
	}
}

// TestEmbeddedThreshold: a bundle's threshold is in the graph and the metadata.
func TestEmbeddedThreshold(t *testing.T) {
	b := *EmbeddedCases(t)[0].Bundle
	b.Threshold = 0.3
	m, _ := onnxOf(t, &b)
	found := false
	for _, init := range m.GetGraph().GetInitializer() {
		if strings.HasPrefix(init.GetName(), "threshold_") {
			v, err := tensorValue(init)
			if err != nil {
				t.Fatal(err)
			}
			found = len(v.f) == 1 && float32(v.f[0]) == 0.3
		}
	}
	props := map[string]string{}
	for _, kv := range m.GetMetadataProps() {
		props[kv.GetKey()] = kv.GetValue()
	}
	if !found || props[MetaThreshold] != "0.3" {
		t.Fatalf("threshold 0.3 not in the graph (%v) or metadata %q", found, props[MetaThreshold])
	}
}

// FuzzDecodePreprocessing: the decoder of the preprocessing record never panics, and
// what it accepts for a format embeds into a graph.
func FuzzDecodePreprocessing(f *testing.F) {
	f.Add(DataCSV, `{"label":"y","task":"binary_classification","classes":["a","b"],"columns":[{"name":"x","kind":"numeric","mean":1,"std":2},{"name":"c","kind":"categorical","categories":["p","q"]}],"dim":3}`)
	f.Add(DataIDX, `{"channels":1,"height":2,"width":2,"scale":0.00392156862745098,"classes":2,"layout":"NCHW"}`)
	f.Add(DataSequenceCSV, `{"features":["a","b"],"mean":[0,1],"std":[1,2],"target":"a","target_mean":0,"target_std":1,"lookback":3,"horizon":1,"time":"t","task":"binary_classification"}`)
	f.Add(DataCSV, `{"columns":[{"name":"","kind":"numeric","mean":0,"std":1}],"dim":1}`)
	f.Add("idx", `{"scale":1e-320}`)
	archs := map[string]*Architecture{
		DataCSV:         {Kind: KindMLP, Task: TaskBinary, Inputs: 3, Outputs: 1, Activation: ActReLU},
		DataIDX:         {Kind: KindCNN, Task: TaskBinary, Inputs: 4, Outputs: 1, Activation: ActReLU, Channels: 1, Height: 2, Width: 2, Conv: []Conv{{Filters: 1, Kernel: 1, Stride: 1}}},
		DataSequenceCSV: {Kind: KindLSTM, Task: TaskBinary, Inputs: 6, Outputs: 1, Hidden: []int{2}, Steps: 3, Features: 2},
	}
	f.Fuzz(func(t *testing.T, format, raw string) {
		a := archs[format]
		if a == nil {
			a = archs[DataCSV]
		}
		p, err := DecodePreprocessing(format, raw, a)
		if err != nil {
			return
		}
		w, err := a.CheckWeights(randomTensors(a, 1, 1))
		if err != nil {
			t.Fatal(err)
		}
		m, err := BuildEmbeddedONNX(a, w, p, 0, "fuzz", nil)
		if err != nil {
			if strings.Contains(err.Error(), "name") {
				return // a raw input named as a graph value
			}
			t.Fatalf("accepted preprocessing %q does not embed: %v", raw, err)
		}
		if _, err := SignatureOf(m); err != nil {
			t.Fatal(err)
		}
	})
}
