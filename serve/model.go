package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/worker/data"
)

// Output names.
const (
	// OutputProbability is a binary model's positive-class probability, shape [N].
	OutputProbability = "probability"
	// OutputProbabilities are a multiclass model's class probabilities, shape [N, K].
	OutputProbabilities = "probabilities"
	// OutputPrediction is a regression model's prediction in target units, shape [N].
	OutputPrediction = "prediction"
	// OutputLabel is a classifier's most probable class, shape [N].
	OutputLabel = "label"
	// ImageInput is the input of an image (idx) model.
	ImageInput = "image"
)

// BadInputError is an inference error caused by the request (HTTP 400).
type BadInputError struct{ msg string }

func (e *BadInputError) Error() string { return e.msg }

func badInput(format string, args ...any) error {
	return &BadInputError{msg: fmt.Sprintf(format, args...)}
}

// imageInfo is the preprocessing record of an image model (worker's imageInfo).
type imageInfo struct {
	Channels int     `json:"channels"`
	Height   int     `json:"height"`
	Width    int     `json:"width"`
	Scale    float64 `json:"scale"`
	Classes  int     `json:"classes"`
	Layout   string  `json:"layout"`
}

// featurizer turns a request's tensors into model features.
type featurizer interface {
	// inputs describes the expected input tensors.
	inputs() []TensorMetadata
	// rows checks the tensors (by name; every expected one present, no other) and
	// returns the batch size.
	rows(byName map[string]*Tensor) (int, error)
	// row writes the features of row r into dst.
	row(byName map[string]*Tensor, r int, dst []float32) error
}

// Model is a loaded model with its preprocessing; it is safe for concurrent use.
type Model struct {
	name    string
	arch    export.Architecture
	weights export.Weights
	feat    featurizer
	classes []string
	meta    map[string]string
	// threshold is a binary model's decision threshold for the label output: the
	// export's cohort.threshold (fixed or fitted on the validation split), else 0.5.
	threshold float64
	eng       *engine
	// naive is set for a sequence model trained with the seasonal-naive baseline: the
	// network predicts the residual, and the prediction adds back the target value the
	// window holds one period before the predicted row.
	naive *naiveValue
}

// naiveValue locates a seasonal-naive value inside a feature row: the scaled target
// at one step of the window.
type naiveValue struct {
	index     int     // position in the feature row
	mean, std float64 // the target feature's scaling, to undo it
}

// of returns the naive value of feature row x.
func (v *naiveValue) of(x []float32) float64 { return float64(x[v.index])*v.std + v.mean }

// NewModel prepares an exported model for serving: it decodes the preprocessing in
// its metadata (cohort.data_format, cohort.preprocessing) and checks that it produces
// the features the network takes.
func NewModel(m *export.Model) (*Model, error) {
	sm := &Model{name: m.Name, arch: m.Arch, weights: m.Weights, meta: m.Metadata, threshold: export.DefaultThreshold}
	if v, ok := m.Metadata[export.MetaThreshold]; ok {
		th, err := strconv.ParseFloat(v, 64)
		if err != nil || !(th > 0 && th < 1) {
			return nil, fmt.Errorf("model %s: metadata %s: %q is not a threshold in (0, 1)", m.Name, export.MetaThreshold, v)
		}
		sm.threshold = th
	}
	raw := m.Metadata[export.MetaPreprocessing]
	strict := func(v any) error {
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("model %s: metadata %s: %w", m.Name, export.MetaPreprocessing, err)
		}
		return nil
	}
	a := &m.Arch
	switch format := m.Metadata[export.MetaDataFormat]; format {
	case "csv":
		var p data.Preprocessor
		if err := strict(&p); err != nil {
			return nil, err
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("model %s: %w", m.Name, err)
		}
		if p.Dim != a.Inputs || a.Kind != export.KindMLP {
			return nil, fmt.Errorf("model %s: the preprocessing makes %d features, the %s takes %d", m.Name, p.Dim, a.Kind, a.Inputs)
		}
		sm.feat = &tabular{p: &p}
		sm.classes = p.Classes
	case "idx":
		var info imageInfo
		if err := strict(&info); err != nil {
			return nil, err
		}
		if info.Channels != a.Channels || info.Height != a.Height || info.Width != a.Width || a.Kind != export.KindCNN {
			return nil, fmt.Errorf("model %s: images of %dx%dx%d, the %s takes %dx%dx%d", m.Name, info.Channels, info.Height, info.Width, a.Kind, a.Channels, a.Height, a.Width)
		}
		if !(info.Scale > 0) || math.IsInf(info.Scale, 0) {
			return nil, fmt.Errorf("model %s: image scale %v: want a positive number", m.Name, info.Scale)
		}
		sm.feat = &images{info: info, div: float32(1 / info.Scale)}
	case "sequence_csv":
		var s data.SequenceScaler
		if err := strict(&s); err != nil {
			return nil, err
		}
		if len(s.Features) == 0 || len(s.Mean) != len(s.Features) || len(s.Std) != len(s.Features) || s.Lookback != a.Steps || s.StepWidth() != a.Features || a.Kind != export.KindLSTM {
			return nil, fmt.Errorf("model %s: the sequence preprocessing (%d features, %d calendar, lookback %d) does not fit the %s (%d features, %d steps)", m.Name, len(s.Features), len(s.Calendar), s.Lookback, a.Kind, a.Features, a.Steps)
		}
		if len(s.Calendar) > 0 && s.Time == "" {
			return nil, fmt.Errorf("model %s: the sequence preprocessing has calendar features but no time column", m.Name)
		}
		switch s.Baseline {
		case "":
		case data.BaselineSeasonalNaive:
			step, feature, ok := s.NaiveStep()
			if !ok || a.Task != export.TaskRegression {
				return nil, fmt.Errorf("model %s: the seasonal-naive baseline needs the target %q %d rows before the predicted row inside the %d-step window of a regression model: serving cannot add it back", m.Name, s.Target, s.Period, s.Lookback)
			}
			sm.naive = &naiveValue{index: step*s.StepWidth() + feature, mean: s.Mean[feature], std: s.Std[feature]}
		default:
			return nil, fmt.Errorf("model %s: sequence baseline %q is not %s", m.Name, s.Baseline, data.BaselineSeasonalNaive)
		}
		for i, std := range s.Std {
			if !(std > 0) || math.IsInf(std, 0) || math.IsNaN(s.Mean[i]) || math.IsInf(s.Mean[i], 0) {
				return nil, fmt.Errorf("model %s: feature %q: mean %v, std %v", m.Name, s.Features[i], s.Mean[i], std)
			}
		}
		sm.feat = &sequences{s: &s}
	default:
		return nil, fmt.Errorf("model %s: metadata %s: %q is not one of csv, idx, sequence_csv", m.Name, export.MetaDataFormat, format)
	}
	if len(sm.classes) == 0 && a.Task != export.TaskRegression {
		k := max(a.Outputs, 2)
		for i := range k {
			sm.classes = append(sm.classes, strconv.Itoa(i))
		}
	}
	if a.Task == export.TaskMulticlass && len(sm.classes) != a.Outputs {
		return nil, fmt.Errorf("model %s: %d class names for %d outputs", m.Name, len(sm.classes), a.Outputs)
	}
	if a.Task == export.TaskBinary && len(sm.classes) != 2 {
		return nil, fmt.Errorf("model %s: a binary model needs 2 class names, has %d", m.Name, len(sm.classes))
	}
	var err error
	if sm.eng, err = newEngine(m.Arch, m.Weights); err != nil {
		return nil, fmt.Errorf("model %s: %w", m.Name, err)
	}
	return sm, nil
}

// Name returns the model name.
func (m *Model) Name() string { return m.name }

// Metadata returns the model metadata of the protocol.
func (m *Model) Metadata() ModelMetadata {
	md := ModelMetadata{Name: m.name, Versions: []string{"1"}, Platform: "cohort_go", Inputs: m.feat.inputs(),
		Parameters: map[string]string{"task": m.arch.Task, "kind": m.arch.Kind}}
	switch m.arch.Task {
	case export.TaskBinary:
		md.Outputs = []TensorMetadata{{OutputProbability, TypeFP64, []int64{-1}}, {OutputLabel, TypeBytes, []int64{-1}}}
	case export.TaskMulticlass:
		md.Outputs = []TensorMetadata{{OutputProbabilities, TypeFP64, []int64{-1, int64(m.arch.Outputs)}}, {OutputLabel, TypeBytes, []int64{-1}}}
	default:
		md.Outputs = []TensorMetadata{{OutputPrediction, TypeFP64, []int64{-1}}}
	}
	return md
}

// Infer answers one request: its tensors, decoded, and the outputs it asks for (all
// when empty). Errors caused by the request are *BadInputError; maxRows bounds the
// batch.
func (m *Model) Infer(tensors []Tensor, wanted []RequestOutput, maxRows int) ([]ResponseOutput, int, error) {
	x, n, err := m.Features(tensors, maxRows)
	if err != nil {
		return nil, n, err
	}
	if err := m.checkWanted(wanted); err != nil {
		return nil, n, err
	}
	out := make([]float32, n*m.arch.Outputs)
	if err := m.Predict(x, n, out); err != nil {
		return nil, n, err
	}
	return m.Outputs(x, out, n, wanted), n, nil
}

// Features checks a request's decoded tensors and applies the preprocessing: it
// returns the n rows' features (n*Inputs values, as the network takes them). Errors
// are *BadInputError naming the input (and row); maxRows bounds n.
func (m *Model) Features(tensors []Tensor, maxRows int) ([]float32, int, error) {
	byName := make(map[string]*Tensor, len(tensors))
	for i := range tensors {
		byName[tensors[i].Name] = &tensors[i]
	}
	n, err := m.feat.rows(byName)
	if err != nil {
		return nil, 0, err
	}
	if n > maxRows {
		return nil, n, badInput("batch of %d rows exceeds the limit of %d", n, maxRows)
	}
	x := getFeatures(n * m.arch.Inputs)
	if bf, ok := m.feat.(batchFeaturizer); ok && bf.fill(byName, n, x) {
		return x, n, nil
	}
	for r := range n {
		if err := m.feat.row(byName, r, x[r*m.arch.Inputs:(r+1)*m.arch.Inputs]); err != nil {
			return nil, n, err
		}
	}
	return x, n, nil
}

// Predict runs the network on n rows of features (from Features) with the training
// kernels and writes Outputs values per row into out: the positive-class probability
// (binary), the class probabilities (multiclass) or the standardized prediction
// (regression).
func (m *Model) Predict(x []float32, n int, out []float32) error {
	if err := m.eng.predict(x, n, out); err != nil {
		return fmt.Errorf("predict: %w", err)
	}
	return nil
}

// checkWanted refuses a requested output the model does not have.
func (m *Model) checkWanted(wanted []RequestOutput) error {
	for _, w := range wanted {
		if !slices.ContainsFunc(m.Metadata().Outputs, func(o TensorMetadata) bool { return o.Name == w.Name }) {
			return badInput("output %q: not an output of model %s (outputs: %s)", w.Name, m.name, m.outputList())
		}
	}
	return nil
}

func (m *Model) outputList() string {
	var names []string
	for _, o := range m.Metadata().Outputs {
		names = append(names, o.Name)
	}
	return strings.Join(names, ", ")
}

// Outputs turns n rows of Predict's values into the response tensors asked for (all
// when wanted is empty; checkWanted has accepted the names). x holds the rows'
// features (from Features): a seasonal-naive model's prediction adds back the naive
// value they hold.
func (m *Model) Outputs(x, out []float32, n int, wanted []RequestOutput) []ResponseOutput {
	var outs []ResponseOutput
	switch m.arch.Task {
	case export.TaskRegression:
		vals := make([]float64, n)
		for i := range vals {
			vals[i] = m.arch.Unscale(float64(out[i]))
			if m.naive != nil {
				vals[i] += m.naive.of(x[i*m.arch.Inputs : (i+1)*m.arch.Inputs])
			}
		}
		outs = append(outs, ResponseOutput{Name: OutputPrediction, Shape: []int{n}, Datatype: TypeFP64, Data: vals})
	case export.TaskBinary:
		vals, labels := make([]float64, n), make([]string, n)
		for i := range vals {
			vals[i] = float64(out[i])
			labels[i] = m.classes[0]
			if float64(out[i]) >= m.threshold {
				labels[i] = m.classes[1]
			}
		}
		outs = append(outs, ResponseOutput{Name: OutputProbability, Shape: []int{n}, Datatype: TypeFP64, Data: vals},
			ResponseOutput{Name: OutputLabel, Shape: []int{n}, Datatype: TypeBytes, Data: labels})
	default:
		k := m.arch.Outputs
		vals, labels := make([]float64, n*k), make([]string, n)
		for i := range n {
			best := 0
			for j := range k {
				vals[i*k+j] = float64(out[i*k+j])
				if out[i*k+j] > out[i*k+best] {
					best = j
				}
			}
			labels[i] = m.classes[best]
		}
		outs = append(outs, ResponseOutput{Name: OutputProbabilities, Shape: []int{n, k}, Datatype: TypeFP64, Data: vals},
			ResponseOutput{Name: OutputLabel, Shape: []int{n}, Datatype: TypeBytes, Data: labels})
	}
	if len(wanted) == 0 {
		return outs
	}
	var sel []ResponseOutput
	for _, w := range wanted {
		if i := slices.IndexFunc(outs, func(o ResponseOutput) bool { return o.Name == w.Name }); i >= 0 {
			sel = append(sel, outs[i])
		}
	}
	return sel
}

func outputNames(outs []ResponseOutput) string {
	names := make([]string, len(outs))
	for i, o := range outs {
		names[i] = o.Name
	}
	return strings.Join(names, ", ")
}

// checkNames refuses a tensor that is not an expected input and returns the first
// expected input's tensor, or an error naming a missing one.
func checkNames(byName map[string]*Tensor, expected []TensorMetadata) error {
	names := make([]string, len(expected))
	for i, e := range expected {
		names[i] = e.Name
	}
	for name := range byName {
		if !slices.Contains(names, name) {
			return badInput("input %q: not an input of this model (inputs: %s)", name, strings.Join(names, ", "))
		}
	}
	for _, e := range expected {
		if byName[e.Name] == nil {
			return badInput("input %q: missing (inputs: %s)", e.Name, strings.Join(names, ", "))
		}
	}
	return nil
}

// batchOf checks that every tensor has the expected rank and trailing dimensions, and
// one batch size, which it returns.
func batchOf(byName map[string]*Tensor, expected []TensorMetadata) (int, error) {
	n := -1
	first := ""
	for _, e := range expected {
		t := byName[e.Name]
		if len(t.Shape) != len(e.Shape) {
			return 0, badInput("input %q: shape %v: want %s", e.Name, t.Shape, shapeString(e.Shape))
		}
		for i := 1; i < len(e.Shape); i++ {
			if t.Shape[i] != int(e.Shape[i]) {
				return 0, badInput("input %q: shape %v: want %s", e.Name, t.Shape, shapeString(e.Shape))
			}
		}
		if n >= 0 && t.Shape[0] != n {
			return 0, badInput("input %q: %d rows, but input %q has %d", e.Name, t.Shape[0], first, n)
		}
		n, first = t.Shape[0], e.Name
	}
	if n == 0 {
		return 0, badInput("input %q: no rows", first)
	}
	return n, nil
}

func shapeString(shape []int64) string {
	s := make([]string, len(shape))
	for i, d := range shape {
		if d < 0 {
			s[i] = "N"
		} else {
			s[i] = strconv.FormatInt(d, 10)
		}
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// batchFeaturizer is a featurizer with a fast path over all rows at once.
type batchFeaturizer interface {
	// fill writes the n rows' features into x and reports true, or reports false (x
	// partly written) when the rows need the row-by-row path: one of them is bad, and
	// row gives the error that names it.
	fill(byName map[string]*Tensor, n int, x []float32) bool
}

// fill is the column-at-a-time form of row (data.Preprocessor.TransformRow) for
// numeric columns sent as numbers and categorical columns sent as BYTES: the same
// standardization, missing-value filling and one-hot encoding, without formatting
// numbers as text and parsing them back. Numeric columns sent as text take the
// row-by-row path.
func (f *tabular) fill(byName map[string]*Tensor, n int, x []float32) bool {
	dim := f.p.Dim
	off := 0
	for _, c := range f.p.Columns {
		t := byName[c.Name]
		switch c.Kind {
		case data.KindNumeric:
			if t.Numbers == nil {
				return false
			}
			for r, v := range t.Numbers[:n] {
				z := (v - c.Mean) / c.Std
				if !(math.Abs(z) <= math.MaxFloat32) {
					return false
				}
				x[r*dim+off] = float32(z)
			}
			off++
		case data.KindCategorical:
			if t.Strings == nil {
				return false
			}
			k := len(c.Categories)
			for r, v := range t.Strings[:n] {
				row := x[r*dim+off : r*dim+off+k]
				clear(row)
				v = strings.TrimSpace(v)
				if data.IsMissing(v) {
					continue
				}
				if i, found := slices.BinarySearch(c.Categories, v); found {
					row[i] = 1
				}
			}
			off += k
		default:
			return false
		}
	}
	return off == dim
}

// tabular applies a csv model's Preprocessor to one column tensor per feature column.
type tabular struct{ p *data.Preprocessor }

func (f *tabular) inputs() []TensorMetadata {
	out := make([]TensorMetadata, len(f.p.Columns))
	for i, c := range f.p.Columns {
		dt := TypeFP64
		if c.Kind == data.KindCategorical {
			dt = TypeBytes
		}
		out[i] = TensorMetadata{Name: c.Name, Datatype: dt, Shape: []int64{-1}}
	}
	return out
}

func (f *tabular) rows(byName map[string]*Tensor) (int, error) {
	exp := f.inputs()
	if err := checkNames(byName, exp); err != nil {
		return 0, err
	}
	for i, c := range f.p.Columns {
		if t := byName[c.Name]; c.Kind == data.KindCategorical && t.Datatype != TypeBytes {
			return 0, badInput("input %q: a categorical column needs datatype BYTES, got %s", c.Name, t.Datatype)
		} else if t.Datatype == TypeUINT8 {
			return 0, badInput("input %q: datatype %s: want %s, FP32, INT64 or BYTES", c.Name, t.Datatype, exp[i].Datatype)
		}
	}
	return batchOf(byName, exp)
}

func (f *tabular) row(byName map[string]*Tensor, r int, dst []float32) error {
	get := func(col string) (string, bool) {
		t := byName[col]
		if t == nil {
			return "", false
		}
		if t.Strings != nil {
			return t.Strings[r], true
		}
		return strconv.FormatFloat(t.Numbers[r], 'g', -1, 64), true
	}
	if err := f.p.TransformRow(get, dst); err != nil {
		return badInput("row %d: %s", r, strings.TrimPrefix(err.Error(), "data: "))
	}
	return nil
}

// images scales an image model's pixels as training did.
type images struct {
	info imageInfo
	div  float32
}

func (f *images) expected(rank int) []TensorMetadata {
	i := f.info
	if rank == 3 && i.Channels == 1 {
		return []TensorMetadata{{ImageInput, TypeUINT8, []int64{-1, int64(i.Height), int64(i.Width)}}}
	}
	return []TensorMetadata{{ImageInput, TypeUINT8, []int64{-1, int64(i.Channels), int64(i.Height), int64(i.Width)}}}
}

func (f *images) inputs() []TensorMetadata { return f.expected(4) }

func (f *images) rows(byName map[string]*Tensor) (int, error) {
	if err := checkNames(byName, f.inputs()); err != nil {
		return 0, err
	}
	t := byName[ImageInput]
	if t.Datatype == TypeBytes {
		return 0, badInput("input %q: datatype BYTES: want UINT8, INT32, INT64, FP32 or FP64 pixel values", ImageInput)
	}
	return batchOf(byName, f.expected(len(t.Shape)))
}

func (f *images) row(byName map[string]*Tensor, r int, dst []float32) error {
	t := byName[ImageInput]
	vals := t.Numbers[r*len(dst) : (r+1)*len(dst)]
	for i, v := range vals {
		if !(v >= 0 && v <= 255) {
			return badInput("input %q: row %d value %d is %v: pixels must be in [0, 255]", ImageInput, r, i, v)
		}
		dst[i] = float32(v) / f.div
	}
	return nil
}

// sequences scales an LSTM model's windows: one [N, lookback] tensor per feature.
type sequences struct{ s *data.SequenceScaler }

func (f *sequences) inputs() []TensorMetadata {
	out := make([]TensorMetadata, len(f.s.Features), len(f.s.Features)+1)
	for i, name := range f.s.Features {
		out[i] = TensorMetadata{Name: name, Datatype: TypeFP64, Shape: []int64{-1, int64(f.s.Lookback)}}
	}
	if len(f.s.Calendar) > 0 {
		// The calendar features come from each step's date, in the time column.
		out = append(out, TensorMetadata{Name: f.s.Time, Datatype: TypeBytes, Shape: []int64{-1, int64(f.s.Lookback)}})
	}
	return out
}

func (f *sequences) rows(byName map[string]*Tensor) (int, error) {
	if err := checkNames(byName, f.inputs()); err != nil {
		return 0, err
	}
	return batchOf(byName, f.inputs())
}

func (f *sequences) row(byName map[string]*Tensor, r int, dst []float32) error {
	nf, lb := f.s.StepWidth(), f.s.Lookback
	naiveStep, naiveFeature := -1, -1
	if f.s.Baseline == data.BaselineSeasonalNaive {
		naiveStep, naiveFeature, _ = f.s.NaiveStep()
	}
	for j, name := range f.s.Features {
		t := byName[name]
		for step := range lb {
			k := r*lb + step
			var v float64
			if t.Strings != nil {
				s := strings.TrimSpace(t.Strings[k])
				if data.IsMissing(s) {
					if step == naiveStep && j == naiveFeature {
						return badInput("input %q: row %d step %d: missing, but the seasonal-naive forecast adds this value back (the target %d steps before the prediction)", name, r, step, f.s.Period)
					}
					dst[step*nf+j] = 0 // the training mean
					continue
				}
				var err error
				if v, err = strconv.ParseFloat(s, 64); err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
					return badInput("input %q: row %d step %d: %q is not a finite number", name, r, step, s)
				}
			} else {
				v = t.Numbers[k]
			}
			z := (v - f.s.Mean[j]) / f.s.Std[j]
			if !(math.Abs(z) <= math.MaxFloat32) {
				return badInput("input %q: row %d step %d: %v is out of range after scaling", name, r, step, v)
			}
			dst[step*nf+j] = float32(z)
		}
	}
	if len(f.s.Calendar) > 0 {
		t, cal := byName[f.s.Time], make([]float64, 2*len(f.s.Calendar))
		if t.Strings == nil {
			return badInput("input %q: the time column holds dates (BYTES), such as 2024-01 or 2024-01-31", f.s.Time)
		}
		for step := range lb {
			if err := f.s.CalendarStep(t.Strings[r*lb+step], cal); err != nil {
				return badInput("input %q: row %d step %d: %v", f.s.Time, r, step, err)
			}
			for j, v := range cal {
				dst[step*nf+len(f.s.Features)+j] = float32(v)
			}
		}
	}
	return nil
}

// errNoModel is returned by Load for a location without a model.
var errNoModel = errors.New("no model.safetensors")

// fill is the column-at-a-time form of row for windows sent as numbers, without
// calendar features: the same scaling, feature by feature. Windows sent as text
// (which may hold missing values) and calendar features take the row-by-row path, as
// does a value out of range after scaling, whose error row gives.
func (f *sequences) fill(byName map[string]*Tensor, n int, x []float32) bool {
	if len(f.s.Calendar) > 0 {
		return false
	}
	nf, lb := f.s.StepWidth(), f.s.Lookback
	for j, name := range f.s.Features {
		t := byName[name]
		if t.Numbers == nil || len(t.Numbers) < n*lb {
			return false
		}
		mean, std := f.s.Mean[j], f.s.Std[j]
		for r := range n {
			dst := x[r*lb*nf+j : (r+1)*lb*nf]
			for step, v := range t.Numbers[r*lb : (r+1)*lb] {
				z := (v - mean) / std
				if !(math.Abs(z) <= math.MaxFloat32) {
					return false
				}
				dst[step*nf] = float32(z)
			}
		}
	}
	return true
}

// fill is row over all rows at once: the pixels of the n images, scaled; a pixel out
// of range takes the row-by-row path, whose error names it.
func (f *images) fill(byName map[string]*Tensor, n int, x []float32) bool {
	t := byName[ImageInput]
	if t.Numbers == nil || len(t.Numbers) < len(x) {
		return false
	}
	for i, v := range t.Numbers[:len(x)] {
		if !(v >= 0 && v <= 255) {
			return false
		}
		x[i] = float32(v) / f.div
	}
	return true
}

// featureBuffers pools feature matrices (*[]float32) that a request used and gave back
// (putFeatures): the server's unbatched inference path.
var featureBuffers sync.Pool

// getFeatures returns n zeroed features.
func getFeatures(n int) []float32 {
	if n >= 1024 {
		if bp, _ := featureBuffers.Get().(*[]float32); bp != nil {
			if cap(*bp) >= n {
				x := (*bp)[:n]
				clear(x)
				return x
			}
			featureBuffers.Put(bp)
		}
	}
	return make([]float32, n)
}

// putFeatures hands features from Features back once nothing refers to them.
func putFeatures(x []float32) {
	if cap(x) >= 1024 {
		featureBuffers.Put(&x)
	}
}
