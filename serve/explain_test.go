package serve

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/model"
)

type explainReq struct {
	Inputs     []input          `json:"inputs"`
	Outputs    []map[string]any `json:"outputs,omitempty"`
	Parameters map[string]any   `json:"parameters,omitempty"`
}

type explainAnswer struct {
	ModelName  string            `json:"model_name"`
	Parameters ExplainParameters `json:"parameters"`
	Outputs    []struct {
		Name     string          `json:"name"`
		Shape    []int           `json:"shape"`
		Datatype string          `json:"datatype"`
		Data     json.RawMessage `json:"data"`
	} `json:"outputs"`
}

// explain posts a request to the explain endpoint and fails the test unless it gets 200.
func (f *fixture) explain(t *testing.T, req explainReq) *explainAnswer {
	t.Helper()
	var raw json.RawMessage
	if code := f.do(t, "POST", "/v2/models/test-model/explain", req, &raw); code != 200 {
		t.Fatalf("explain: %d %s", code, raw)
	}
	var ans explainAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		t.Fatal(err)
	}
	return &ans
}

// names returns the output names in order.
func (a *explainAnswer) names() []string {
	var ns []string
	for _, o := range a.Outputs {
		ns = append(ns, o.Name)
	}
	return ns
}

// tensor returns output name's shape and data decoded into v.
func (a *explainAnswer) tensor(t *testing.T, name string, v any) []int {
	t.Helper()
	for _, o := range a.Outputs {
		if o.Name == name {
			if err := json.Unmarshal(o.Data, v); err != nil {
				t.Fatalf("output %s: %v", name, err)
			}
			return o.Shape
		}
	}
	t.Fatalf("no output %q in %v", name, a.names())
	return nil
}

func (a *explainAnswer) floats(t *testing.T, name string) []float64 {
	t.Helper()
	var v []float64
	a.tensor(t, name, &v)
	return v
}

// checkCompleteness checks, per row, that the attributions over all inputs sum to
// output - baseline (each from the infer endpoint) within 1e-3 plus the float32
// rounding infer applies, that explained_output and baseline_output agree with them,
// and that the reported gap bounds the sums' gaps.
func checkCompleteness(t *testing.T, ans *explainAnswer, inputs []input, output, baseline []float64) {
	t.Helper()
	n := len(output)
	sums := make([]float64, n)
	for _, in := range inputs {
		attr := ans.floats(t, AttributionPrefix+in.Name)
		per := len(attr) / n
		for r := range n {
			for _, v := range attr[r*per : (r+1)*per] {
				sums[r] += v
			}
		}
	}
	explained, base := ans.floats(t, OutputExplained), ans.floats(t, OutputBaseline)
	worst := 0.0
	for r := range n {
		round := 4 * 0x1p-24 * (math.Abs(output[r]) + math.Abs(baseline[r])) // infer rounds through float32
		if d := math.Abs(sums[r] - (output[r] - baseline[r])); !(d <= 1e-3+round) {
			t.Fatalf("row %d: attributions sum to %.8g, output %.8g - baseline %.8g = %.8g", r, sums[r], output[r], baseline[r], output[r]-baseline[r])
		}
		if math.Abs(explained[r]-output[r]) > 2*round+1e-12 || math.Abs(base[r]-baseline[r]) > 2*round+1e-12 {
			t.Fatalf("row %d: explained %v baseline %v, infer says %v and %v", r, explained[r], base[r], output[r], baseline[r])
		}
		gap := math.Abs(sums[r] - (explained[r] - base[r]))
		if gap > ans.Parameters.CompletenessGap+1e-9*math.Max(1, math.Abs(explained[r])) {
			t.Fatalf("row %d: gap %.3g above the reported %.3g", r, gap, ans.Parameters.CompletenessGap)
		}
		worst = math.Max(worst, gap)
	}
	t.Logf("%d rows: worst completeness gap %.3g, steps %d", n, worst, ans.Parameters.Steps)
}

// missingColumns is one row of every feature column with every value missing.
func missingColumns(pre *data.Preprocessor, n int) []input {
	var inputs []input
	for _, c := range pre.Columns {
		inputs = append(inputs, input{c.Name, []int{n}, TypeBytes, slices.Repeat([]string{"NA"}, n)})
	}
	return inputs
}

// TestExplainTabular explains rows of the attrition MLPs (binary and regression): the
// response tensors' names and shapes, completeness against infer and an all-missing
// infer request, and a zero attribution where the value is missing.
func TestExplainTabular(t *testing.T) {
	for _, task := range []struct{ label, task, output string }{
		{"Attrition", data.TaskBinary, OutputProbability}, {"MonthlyIncome", data.TaskRegression, OutputPrediction},
	} {
		t.Run(task.task, func(t *testing.T) {
			f, tbl, pre := tabularFixture(t, task.label, task.task)
			rows := make([]int, 12)
			for i := range rows {
				rows[i] = 2400 + i
			}
			inputs := rawColumns(tbl, pre, rows)
			ans := f.explain(t, explainReq{Inputs: inputs})
			want := []string{task.output}
			if task.task == data.TaskBinary {
				want = append(want, OutputLabel, OutputExplainedClass)
			}
			want = append(want, OutputExplained, OutputBaseline)
			for _, c := range pre.Columns {
				want = append(want, AttributionPrefix+c.Name)
			}
			if got := ans.names(); !slices.Equal(got, want) {
				t.Fatalf("outputs %v, want %v", got, want)
			}
			for _, o := range ans.Outputs {
				if !slices.Equal(o.Shape, []int{len(rows)}) || strings.HasPrefix(o.Name, AttributionPrefix) && o.Datatype != TypeFP64 {
					t.Fatalf("output %s: shape %v datatype %s", o.Name, o.Shape, o.Datatype)
				}
			}
			p := ans.Parameters
			if p.Method != MethodIntegratedGradients || !strings.Contains(p.Baseline, "missing") || p.Output != task.output || p.Steps < ExplainSteps {
				t.Fatalf("parameters %+v", p)
			}
			if task.task == data.TaskBinary {
				var classes []string
				ans.tensor(t, OutputExplainedClass, &classes)
				if classes[0] != "Yes" {
					t.Fatalf("explained class %q, want the positive class Yes", classes[0])
				}
			}
			checkCompleteness(t, ans, inputs, f.infer(t, inputs), f.infer(t, missingColumns(pre, len(rows))))
			// rawColumns sends row 1 of the first numeric column as NA: at the baseline.
			first := inputs[slices.IndexFunc(inputs, func(in input) bool { return in.Datatype == TypeBytes && in.Data.([]string)[1] == "NA" })]
			if v := ans.floats(t, AttributionPrefix+first.Name)[1]; v != 0 {
				t.Fatalf("missing value of %s: attribution %v, want 0", first.Name, v)
			}
		})
	}
}

// TestExplainZeroWeightColumn zeroes the first-layer weights of one numeric and one
// categorical column: the output no longer depends on them and their attributions
// are exactly 0, while the other columns' are not all 0.
func TestExplainZeroWeightColumn(t *testing.T) {
	f, tbl, pre := tabularFixture(t, "Attrition", data.TaskBinary)
	w := f.srv.cfg.Model.weights["dense0.weight"]
	width := f.arch.Hidden[0]
	dead := map[string]bool{}
	off := 0
	for _, c := range pre.Columns {
		k := 1
		if c.Kind == data.KindCategorical {
			k = len(c.Categories)
		}
		if !dead[c.Kind] {
			dead[c.Kind], dead[c.Name] = true, true
			clear(w[off*width : (off+k)*width])
		}
		off += k
	}
	m := f.srv.cfg.Model
	var err error
	if m.eng, err = newEngine(m.arch, m.weights); err != nil { // the kernels' copy of the weights
		t.Fatal(err)
	}
	rows := []int{10, 11, 12, 13, 14}
	inputs := rawColumns(tbl, pre, rows)
	ans := f.explain(t, explainReq{Inputs: inputs})
	live := 0
	for _, c := range pre.Columns {
		for r, v := range ans.floats(t, AttributionPrefix+c.Name) {
			if dead[c.Name] && v != 0 {
				t.Fatalf("column %s (zero weights) row %d: attribution %v, want 0", c.Name, r, v)
			}
			if !dead[c.Name] && v != 0 {
				live++
			}
		}
	}
	if live == 0 {
		t.Fatal("every attribution is 0")
	}
	checkCompleteness(t, ans, inputs, f.infer(t, inputs), f.infer(t, missingColumns(pre, len(rows))))
}

// cnnFixture is TestServeMatchesTrainingForwardPass's 8x7 image model: conv 3-3 with
// padding 1, pool 2, dense 6, 3 classes.
func cnnFixture(t *testing.T) *fixture {
	m, err := model.NewCNN(model.CNNConfig{Height: 8, Width: 7, Channels: 1, Pool: 2, Dense: []int{6}, Outputs: 3,
		Task: model.TaskMulticlass, BatchSize: 4, Conv: []model.ConvLayer{{Filters: 3, Kernel: 3, Padding: 1}}})
	arch := export.Architecture{Kind: export.KindCNN, Task: export.TaskMulticlass, Inputs: 56, Outputs: 3, Activation: export.ActReLU,
		Channels: 1, Height: 8, Width: 7, Pool: 2, Dense: []int{6}, Conv: []export.Conv{{Filters: 3, Kernel: 3, Stride: 1, Padding: 1}}}
	return newFixture(t, m, err, arch, "idx", imageInfo{Channels: 1, Height: 8, Width: 7, Scale: 1.0 / 255, Classes: 3, Layout: "NCHW"})
}

// TestExplainImage explains images given as [N, H, W] and [N, 1, H, W]: an
// attribution_image of the same shape, completeness against infer on the image and on
// the zero image for the predicted class, and for a class picked by target_class.
func TestExplainImage(t *testing.T) {
	f := cnnFixture(t)
	const n = 6
	rng := rand.New(rand.NewPCG(6, 6))
	pix := make([]int, n*56)
	for i := range pix {
		pix[i] = rng.IntN(256)
	}
	zero := []input{{ImageInput, []int{n, 8, 7}, TypeUINT8, make([]int, n*56)}}
	baseProbs := f.infer(t, zero)
	for _, tc := range []struct {
		name   string
		shape  []int
		target string
	}{{"NHW", []int{n, 8, 7}, ""}, {"NCHW", []int{n, 1, 8, 7}, ""}, {"target-class", []int{n, 8, 7}, "2"}} {
		t.Run(tc.name, func(t *testing.T) {
			inputs := []input{{ImageInput, tc.shape, TypeUINT8, pix}}
			req := explainReq{Inputs: inputs}
			if tc.target != "" {
				req.Parameters = map[string]any{ParamTargetClass: tc.target}
			}
			ans := f.explain(t, req)
			want := []string{OutputProbabilities, OutputLabel, OutputExplainedClass, OutputExplained, OutputBaseline, AttributionPrefix + ImageInput}
			if got := ans.names(); !slices.Equal(got, want) {
				t.Fatalf("outputs %v, want %v", got, want)
			}
			if shape := ans.tensor(t, AttributionPrefix+ImageInput, new([]float64)); !slices.Equal(shape, tc.shape) {
				t.Fatalf("attribution shape %v, want %v", shape, tc.shape)
			}
			if ans.Parameters.Output != OutputProbabilities || ans.Parameters.Baseline != "all-zero image" {
				t.Fatalf("parameters %+v", ans.Parameters)
			}
			var labels, classes []string
			ans.tensor(t, OutputLabel, &labels)
			ans.tensor(t, OutputExplainedClass, &classes)
			probs := f.infer(t, inputs)
			output, baseline := make([]float64, n), make([]float64, n)
			for r := range n {
				if want := cmp(tc.target != "", tc.target, labels[r]); classes[r] != want {
					t.Fatalf("row %d: explained class %q, want %q", r, classes[r], want)
				}
				k, _ := strconv.Atoi(classes[r])
				output[r], baseline[r] = probs[r*3+k], baseProbs[r*3+k]
			}
			checkCompleteness(t, ans, inputs, output, baseline)
		})
	}
}

func cmp(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

// TestExplainSequences explains windows of the two-layer LSTM regression of
// TestServeMatchesTrainingForwardPass: one [N, lookback] attribution per feature input,
// completeness against infer and an infer request whose every value is missing.
func TestExplainSequences(t *testing.T) {
	f, tbl, _ := lstmFixture(t)
	const n = 10
	var inputs, missing []input
	for j, name := range []string{"Hours", "Absence", "Score"} {
		vals := make([]float64, n*4)
		for i := range n {
			for s := range 4 {
				vals[i*4+s], _ = strconv.ParseFloat(tbl.Rows[i+s][j+1], 64)
			}
		}
		inputs = append(inputs, input{name, []int{n, 4}, TypeFP64, vals})
		missing = append(missing, input{name, []int{n, 4}, TypeBytes, slices.Repeat([]string{"NA"}, n*4)})
	}
	ans := f.explain(t, explainReq{Inputs: inputs})
	want := []string{OutputPrediction, OutputExplained, OutputBaseline, AttributionPrefix + "Hours", AttributionPrefix + "Absence", AttributionPrefix + "Score"}
	if got := ans.names(); !slices.Equal(got, want) {
		t.Fatalf("outputs %v, want %v", got, want)
	}
	for _, name := range want[3:] {
		if shape := ans.tensor(t, name, new([]float64)); !slices.Equal(shape, []int{n, 4}) {
			t.Fatalf("%s: shape %v, want [%d 4]", name, shape, n)
		}
	}
	if !strings.Contains(ans.Parameters.Baseline, "training mean") {
		t.Fatalf("parameters %+v", ans.Parameters)
	}
	checkCompleteness(t, ans, inputs, f.infer(t, inputs), f.infer(t, missing))
}

// TestExplainBadInput checks that explain refuses bad requests with infer's status and
// message (an unknown output's message lists explain's outputs), refuses a bad
// target_class naming the parameter, and selects outputs among its own.
func TestExplainBadInput(t *testing.T) {
	f, tbl, pre := tabularFixture(t, "Attrition", data.TaskBinary)
	good := func() []input { return rawColumns(tbl, pre, []int{0, 1, 2}) }
	categorical := pre.Columns[slices.IndexFunc(pre.Columns, func(c data.ColumnTransform) bool { return c.Kind == data.KindCategorical })].Name
	var without, wrongType []input
	for _, in := range good() {
		if in.Name != categorical {
			without = append(without, in)
			wrongType = append(wrongType, in)
			continue
		}
		wrongType = append(wrongType, input{in.Name, in.Shape, TypeINT64, []int{1, 2, 3}})
	}
	for _, tc := range []struct {
		name string
		body any
		want string
	}{
		{"missing column", inferReq{Inputs: without}, fmt.Sprintf("input %q: missing", categorical)},
		{"wrong datatype", inferReq{Inputs: wrongType}, fmt.Sprintf("input %q: a categorical column needs datatype BYTES", categorical)},
		{"extra input", inferReq{Inputs: append(good(), input{"Attrition", []int{3}, TypeBytes, []string{"No", "No", "Yes"}})}, `input "Attrition": not an input`},
		{"too many rows", inferReq{Inputs: rawColumns(tbl, pre, make([]int, 101))}, "batch of 101 rows exceeds the limit of 100"},
		{"unknown output", inferReq{Inputs: good(), Outputs: []map[string]any{{"name": "logits"}}}, `output "logits": not an output`},
		{"not JSON", []byte(`{"inputs": [`), "request body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var inferErr, explainErr ErrorResponse
			ic := f.do(t, "POST", "/v2/models/test-model/infer", tc.body, &inferErr)
			ec := f.do(t, "POST", "/v2/models/test-model/explain", tc.body, &explainErr)
			same := inferErr == explainErr || tc.name == "unknown output" && strings.Contains(inferErr.Error, tc.want)
			if ec != 400 || !strings.Contains(explainErr.Error, tc.want) || ic != ec || !same {
				t.Fatalf("explain %d %q, infer %d %q, want 400 with %q from both", ec, explainErr.Error, ic, inferErr.Error, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		target any
		want   string
	}{{"Maybe", `parameter "target_class": "Maybe" is not a class of model test-model (classes: No, Yes)`}, {1, `parameter "target_class": want a class label string`}} {
		var er ErrorResponse
		code := f.do(t, "POST", "/v2/models/test-model/explain", explainReq{Inputs: good(), Parameters: map[string]any{ParamTargetClass: tc.target}}, &er)
		if code != 400 || !strings.Contains(er.Error, tc.want) {
			t.Fatalf("target_class %v: %d %q, want 400 with %q", tc.target, code, er.Error, tc.want)
		}
	}
	// Selecting outputs works over the explanation's too; the negative class is
	// explained as 1 - p.
	ans := f.explain(t, explainReq{Inputs: good(), Parameters: map[string]any{ParamTargetClass: "No"},
		Outputs: []map[string]any{{"name": OutputExplained}, {"name": OutputExplainedClass}}})
	if got := ans.names(); !slices.Equal(got, []string{OutputExplained, OutputExplainedClass}) {
		t.Fatalf("selected outputs %v", got)
	}
	var classes []string
	ans.tensor(t, OutputExplainedClass, &classes)
	p := f.infer(t, good())
	for r, v := range ans.floats(t, OutputExplained) {
		if classes[r] != "No" || math.Abs(v-(1-p[r])) > 1e-6 {
			t.Fatalf("row %d: explained %q %v, want No %v", r, classes[r], v, 1-p[r])
		}
	}
}
