package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/worker/data"
)

// Explanation outputs, method and parameters.
const (
	// OutputExplained is the explained output at each row, in the output's units,
	// before infer's rounding to float32, shape [N].
	OutputExplained = "explained_output"
	// OutputBaseline is the explained output at the baseline, shape [N].
	OutputBaseline = "baseline_output"
	// OutputExplainedClass is, for a classifier, the class whose probability is
	// explained at each row, shape [N].
	OutputExplainedClass = "explained_class"
	// AttributionPrefix prefixes an input's name to name its attribution tensor.
	AttributionPrefix = "attribution_"
	// MethodIntegratedGradients is the explanation method.
	MethodIntegratedGradients = "integrated_gradients"
	// ParamTargetClass is the request parameter that picks a classifier's explained
	// class by label.
	ParamTargetClass = "target_class"
	// ExplainSteps is the gradient evaluations an explanation starts from; see
	// export.Architecture.IntegratedGradients for how it refines.
	ExplainSteps = 32
)

// ExplainResponse is the body of a successful POST /v2/models/{name}/explain.
type ExplainResponse struct {
	ModelName    string            `json:"model_name"`
	ModelVersion string            `json:"model_version,omitempty"`
	ID           string            `json:"id,omitempty"`
	Parameters   ExplainParameters `json:"parameters"`
	Outputs      []ResponseOutput  `json:"outputs"`
}

// ExplainParameters says what an explanation explains and how it was computed.
type ExplainParameters struct {
	// Method is integrated_gradients.
	Method string `json:"method"`
	// Baseline describes the baseline input in the model's input terms.
	Baseline string `json:"baseline"`
	// Steps is the most gradient evaluations any row took.
	Steps int `json:"steps"`
	// Output is the explained output: probability (of explained_class), probabilities
	// (the explained_class column) or prediction.
	Output string `json:"output"`
	// CompletenessGap is the largest |sum of a row's attributions - (explained_output
	// - baseline_output)| of the batch, in the output's units.
	CompletenessGap float64 `json:"completeness_gap"`
}

// attributor maps the attributions of a row's features back onto the input tensors
// (every featurizer is one).
type attributor interface {
	// attribute writes row r's attributions from feat (one per feature) into dst, by
	// input name, each laid out as that input tensor.
	attribute(r int, feat []float64, dst map[string][]float64)
	// baseline describes the all-zero feature row in the inputs' terms.
	baseline() string
}

var (
	_ attributor = (*tabular)(nil)
	_ attributor = (*images)(nil)
	_ attributor = (*sequences)(nil)
)

// attribute gives a column the sum of its features' attributions: the standardized
// value of a numeric column, every category's indicator of a categorical one.
func (f *tabular) attribute(r int, feat []float64, dst map[string][]float64) {
	off := 0
	for _, c := range f.p.Columns {
		k := 1
		if c.Kind == data.KindCategorical {
			k = len(c.Categories)
		}
		var s float64
		for _, v := range feat[off : off+k] {
			s += v
		}
		dst[c.Name][r] = s
		off += k
	}
}

func (f *tabular) baseline() string {
	return "every value missing: numeric columns at their training mean, categorical columns in no category (all-zero features)"
}

// attribute gives each pixel its feature's attribution (integrated gradients do not
// change under the pixel scaling).
func (f *images) attribute(r int, feat []float64, dst map[string][]float64) {
	copy(dst[ImageInput][r*len(feat):], feat)
}

func (f *images) baseline() string { return "all-zero image" }

// attribute gives each (feature, step) value its feature's attribution.
// Calendar features' attributions go to the time input, summed per step.
func (f *sequences) attribute(r int, feat []float64, dst map[string][]float64) {
	nf, lb := f.s.StepWidth(), f.s.Lookback
	for j, name := range f.s.Features {
		d := dst[name][r*lb : (r+1)*lb]
		for step := range d {
			d[step] = feat[step*nf+j]
		}
	}
	if len(f.s.Calendar) > 0 {
		d := dst[f.s.Time][r*lb : (r+1)*lb]
		for step := range d {
			d[step] = 0
			for j := len(f.s.Features); j < nf; j++ {
				d[step] += feat[step*nf+j]
			}
		}
	}
}

func (f *sequences) baseline() string {
	b := "every value at its feature's training mean (all-zero scaled features)"
	if len(f.s.Calendar) > 0 {
		b += ", calendar features zero"
	}
	if f.s.Baseline == data.BaselineSeasonalNaive {
		b += "; the explained output is the residual over the seasonal-naive forecast (the prediction less the value one period earlier)"
	}
	return b
}

// Explain answers one explain request: Infer's outputs for the tensors, then per row
// explained_class (classifiers), explained_output and baseline_output, then one
// attribution_<input> tensor per input, shaped as that input, holding the
// integrated-gradients attributions of the explained output against the all-zero
// feature row. They sum, per row, to explained_output - baseline_output up to the
// completeness gap the parameters report. The explained output is the positive-class
// probability (binary), the predicted class's probability (multiclass), or the
// prediction in target units (regression; the attributions are scaled by the label
// standard deviation); the parameter target_class picks a classifier's class by label.
// wanted selects outputs among all of these. Errors caused by the request are
// *BadInputError, the same as Infer's; maxRows bounds the batch; rows are explained
// in parallel until ctx ends.
func (m *Model) Explain(ctx context.Context, tensors []Tensor, params map[string]json.RawMessage, wanted []RequestOutput, maxRows int) ([]ResponseOutput, ExplainParameters, int, error) {
	var ep ExplainParameters
	target, err := m.targetClass(params)
	if err != nil {
		return nil, ep, 0, err
	}
	outs, n, err := m.Infer(tensors, nil, maxRows)
	if err != nil {
		return nil, ep, n, err
	}
	at, ok := m.feat.(attributor)
	if !ok {
		return nil, ep, n, fmt.Errorf("explain: the %T featurizer cannot map attributions", m.feat)
	}
	byName := make(map[string]*Tensor, len(tensors))
	for i := range tensors {
		byName[tensors[i].Name] = &tensors[i]
	}
	a := &m.arch
	// Per row: the network output to explain, and the affine map from it to the
	// explained output (scale*v + shift).
	output, class := make([]int, n), make([]string, n)
	scale, shift := 1.0, 0.0
	switch a.Task {
	case export.TaskBinary:
		ep.Output = OutputProbability
		for r := range class {
			class[r] = m.classes[1]
		}
		if target == 0 {
			scale, shift = -1, 1
			for r := range class {
				class[r] = m.classes[0]
			}
		}
	case export.TaskMulticlass:
		ep.Output = OutputProbabilities
		probs := outs[0].Data.([]float64)
		for r := range output {
			output[r] = max(target, 0)
			if target < 0 { // the predicted class, as Infer picks the label
				for j := range a.Outputs {
					if probs[r*a.Outputs+j] > probs[r*a.Outputs+output[r]] {
						output[r] = j
					}
				}
			}
			class[r] = m.classes[output[r]]
		}
	default:
		ep.Output = OutputPrediction
		scale, shift = a.LabelStd, a.LabelMean
		if scale == 0 {
			scale = 1
		}
	}
	explained, base := make([]float64, n), make([]float64, n)
	attrs := make(map[string][]float64, len(byName))
	for name, t := range byName {
		attrs[name] = make([]float64, len(t.Numbers)+len(t.Strings))
	}
	results := make([]export.Attribution, n)
	err = forRows(ctx, n, func(r int) error {
		x32 := make([]float32, a.Inputs)
		if err := m.feat.row(byName, r, x32); err != nil {
			return err
		}
		x := make([]float64, a.Inputs)
		for i, v := range x32 {
			x[i] = float64(v)
		}
		res, err := a.IntegratedGradients(m.weights, x, make([]float64, a.Inputs), output[r], ExplainSteps)
		if err != nil {
			return fmt.Errorf("explain row %d: %w", r, err)
		}
		for i := range res.Attr {
			res.Attr[i] *= scale
		}
		explained[r], base[r] = scale*res.Output+shift, scale*res.Baseline+shift
		at.attribute(r, res.Attr, attrs) // each row writes its own elements
		results[r] = res
		return nil
	})
	if err != nil {
		return nil, ep, n, err
	}
	ep.Method, ep.Baseline = MethodIntegratedGradients, at.baseline()
	for _, res := range results {
		ep.Steps = max(ep.Steps, res.Steps)
		ep.CompletenessGap = math.Max(ep.CompletenessGap, math.Abs(scale*res.Gap))
	}
	if a.Task != export.TaskRegression {
		outs = append(outs, ResponseOutput{Name: OutputExplainedClass, Shape: []int{n}, Datatype: TypeBytes, Data: class})
	}
	outs = append(outs, ResponseOutput{Name: OutputExplained, Shape: []int{n}, Datatype: TypeFP64, Data: explained},
		ResponseOutput{Name: OutputBaseline, Shape: []int{n}, Datatype: TypeFP64, Data: base})
	for _, in := range m.feat.inputs() {
		outs = append(outs, ResponseOutput{Name: AttributionPrefix + in.Name, Shape: byName[in.Name].Shape, Datatype: TypeFP64, Data: attrs[in.Name]})
	}
	if len(wanted) == 0 {
		return outs, ep, n, nil
	}
	var sel []ResponseOutput
	for _, w := range wanted {
		i := slices.IndexFunc(outs, func(o ResponseOutput) bool { return o.Name == w.Name })
		if i < 0 {
			return nil, ep, n, badInput("output %q: not an output of model %s (outputs: %s)", w.Name, m.name, outputNames(outs))
		}
		sel = append(sel, outs[i])
	}
	return sel, ep, n, nil
}

// targetClass returns the class index the target_class parameter names, or -1
// without one.
func (m *Model) targetClass(params map[string]json.RawMessage) (int, error) {
	raw, ok := params[ParamTargetClass]
	if !ok {
		return -1, nil
	}
	if m.arch.Task == export.TaskRegression {
		return 0, badInput("parameter %q: model %s is a regression, it has no classes", ParamTargetClass, m.name)
	}
	var label string
	if err := json.Unmarshal(raw, &label); err != nil {
		return 0, badInput("parameter %q: want a class label string, got %.40s", ParamTargetClass, raw)
	}
	i := slices.Index(m.classes, label)
	if i < 0 {
		return 0, badInput("parameter %q: %q is not a class of model %s (classes: %s)", ParamTargetClass, label, m.name, strings.Join(m.classes, ", "))
	}
	return i, nil
}

// forRows calls fn for rows 0..n-1 on GOMAXPROCS goroutines and returns the first
// error, or ctx's once it ends; rows not yet started are then skipped.
func forRows(ctx context.Context, n int, fn func(r int) error) error {
	var (
		next   atomic.Int64
		failed atomic.Bool
		mu     sync.Mutex
		first  error
		wg     sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for !failed.Load() {
				r := int(next.Add(1) - 1)
				if r >= n {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = fn(r)
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return first
}

// explain answers POST /v2/models/{name}/explain: an infer request's body, answered
// with Model.Explain's outputs and parameters.
func (s *Server) explain(w http.ResponseWriter, r *http.Request) {
	req, tensors, ok := s.decodeBody(w, r)
	if !ok {
		return
	}
	m := s.cfg.Model
	outs, params, n, err := m.Explain(r.Context(), tensors, req.Parameters, req.Outputs, s.cfg.MaxBatchRows)
	if err != nil {
		var bad *BadInputError
		switch {
		case errors.As(err, &bad):
			writeError(w, http.StatusBadRequest, "%v", err)
		case r.Context().Err() != nil:
			writeError(w, http.StatusServiceUnavailable, "explanation abandoned: %v", err)
		default:
			s.log.Error("explanation failed", "model", m.Name(), "err", err)
			writeError(w, http.StatusInternalServerError, "explanation failed: %v", err)
		}
		return
	}
	s.rows.Add(float64(n))
	writeJSON(w, http.StatusOK, ExplainResponse{ModelName: m.Name(), ModelVersion: "1", ID: req.ID, Parameters: params, Outputs: outs})
}
