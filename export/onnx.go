package export

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/worker/data"
)

// ONNX versions written by BuildONNX and BuildEmbeddedONNX: opset 13 of the default
// domain, IR version 7 (the IR of opset 13), and opset 2 of the ai.onnx.ml domain (the
// embedded form only), which ONNX Runtime (Triton's onnxruntime backend) and onnx >= 1.8
// read.
const (
	ONNXOpset     = 13
	ONNXIRVersion = 7
	// ONNXMLDomain is the domain of the classical-ML operators (Imputer, Scaler,
	// OneHotEncoder, LabelEncoder).
	ONNXMLDomain = "ai.onnx.ml"
	// ONNXMLOpset is the ai.onnx.ml opset of the embedded form.
	ONNXMLOpset = 2
)

// ONNX graph input and output names of the separate form (also in the Triton config).
const (
	ONNXInput  = "input"
	ONNXOutput = "output"
)

// ONNX graph input and output names of the embedded form (see EmbeddedSignature).
const (
	// ONNXImage is an image model's input, the raw uint8 pixels.
	ONNXImage = "image"
	// ONNXProbability is a classifier's output: the positive-class probability (binary)
	// or the class probabilities (multiclass).
	ONNXProbability = "probability"
	// ONNXLabel is a classifier's output: the predicted class name.
	ONNXLabel = "label"
	// ONNXValue is a regression model's output, in target units.
	ONNXValue = "value"
)

// ONNX preprocessing forms (spec.export.onnx.preprocessing).
const (
	// ONNXEmbedded puts the fitted preprocessing inside the graph: raw inputs in, the
	// prediction and label out (BuildEmbeddedONNX). The default.
	ONNXEmbedded = "embedded"
	// ONNXSeparate leaves it out: preprocessed features in, the network's output out
	// (BuildONNX); the preprocessing is only in the metadata.
	ONNXSeparate = "separate"
)

// DefaultThreshold is the positive-class probability from which a binary model's label
// is the positive class, as `cohort serve` decides it.
const DefaultThreshold = 0.5

// ONNXTensor is one input or output of an exported graph: its name, element type and
// dimensions after the batch dimension (which is always first and variable).
type ONNXTensor struct {
	Name string
	Type onnx.TensorProto_DataType
	Dims []int
}

// TritonType is the Triton data type of the tensor (TYPE_FP32, TYPE_STRING,
// TYPE_UINT8, TYPE_INT64), or "" for another element type.
func (t ONNXTensor) TritonType() string {
	switch t.Type {
	case onnx.TensorProto_FLOAT:
		return "TYPE_FP32"
	case onnx.TensorProto_STRING:
		return "TYPE_STRING"
	case onnx.TensorProto_UINT8:
		return "TYPE_UINT8"
	case onnx.TensorProto_INT64:
		return "TYPE_INT64"
	}
	return ""
}

// ONNXSignature lists a graph's inputs and outputs, in order.
type ONNXSignature struct {
	Inputs, Outputs []ONNXTensor
}

// SignatureOf reads the signature of a model's graph: every input and output must be a
// tensor whose first dimension is symbolic (the batch) and whose others are fixed.
func SignatureOf(m *onnx.ModelProto) (ONNXSignature, error) {
	var sig ONNXSignature
	read := func(vs []*onnx.ValueInfoProto) ([]ONNXTensor, error) {
		var out []ONNXTensor
		for _, v := range vs {
			tt := v.GetType().GetTensorType()
			dims := tt.GetShape().GetDim()
			if tt == nil || len(dims) == 0 || dims[0].GetDimParam() == "" {
				return nil, fmt.Errorf("onnx: %q is not a tensor with a symbolic batch dimension", v.GetName())
			}
			t := ONNXTensor{Name: v.GetName(), Type: onnx.TensorProto_DataType(tt.GetElemType())}
			for _, d := range dims[1:] {
				if d.GetDimParam() != "" || d.GetDimValue() <= 0 {
					return nil, fmt.Errorf("onnx: %q has a variable dimension after the batch", v.GetName())
				}
				t.Dims = append(t.Dims, int(d.GetDimValue()))
			}
			out = append(out, t)
		}
		return out, nil
	}
	var err error
	if sig.Inputs, err = read(m.GetGraph().GetInput()); err != nil {
		return sig, err
	}
	if sig.Outputs, err = read(m.GetGraph().GetOutput()); err != nil {
		return sig, err
	}
	return sig, nil
}

// onnxGraph accumulates nodes and initializers with unique value names.
type onnxGraph struct {
	g *onnx.GraphProto
	// names counts the values made from each prefix (see fresh).
	names map[string]int
	// taken holds every value name in use: graph inputs and outputs, initializers and
	// node outputs.
	taken map[string]bool
	// err is the first fixed initializer name that clashed with a value already taken.
	err error
}

func newONNXGraph(name string) *onnxGraph {
	return &onnxGraph{g: &onnx.GraphProto{Name: name}, names: map[string]int{}, taken: map[string]bool{}}
}

// fresh returns a value name "<prefix>_<n>" not taken yet, and takes it.
func (b *onnxGraph) fresh(prefix string) string {
	name := b.unused(prefix)
	b.taken[name] = true
	return name
}

// unused returns a value name "<prefix>_<n>" not taken yet, for an initializer (which
// takes it).
func (b *onnxGraph) unused(prefix string) string {
	for {
		b.names[prefix]++
		if name := fmt.Sprintf("%s_%d", prefix, b.names[prefix]); !b.taken[name] {
			return name
		}
	}
}

// take claims a fixed value name (a graph input or output, a layout tensor); a name
// claimed twice is recorded in b.err.
func (b *onnxGraph) take(name string) {
	if b.taken[name] && b.err == nil {
		b.err = fmt.Errorf("onnx: value name %q is used twice", name)
	}
	b.taken[name] = true
}

// node adds one node of the default domain with a single output and returns the
// output's name.
func (b *onnxGraph) node(op string, inputs []string, attrs ...*onnx.AttributeProto) string {
	return b.nodeN(op, inputs, 1, attrs...)[0]
}

func (b *onnxGraph) nodeN(op string, inputs []string, nout int, attrs ...*onnx.AttributeProto) []string {
	outs := make([]string, nout)
	for i := range outs {
		outs[i] = b.fresh(strings.ToLower(op))
	}
	b.addNode("", op, inputs, outs, attrs)
	return outs
}

// nodeML adds one node of the ai.onnx.ml domain with a single output of the element
// type and dims (after the batch), which it records in the graph's value_info: onnx's
// shape inference does not know every ai.onnx.ml operator.
func (b *onnxGraph) nodeML(op string, inputs []string, typ onnx.TensorProto_DataType, dims []int, attrs ...*onnx.AttributeProto) string {
	out := b.fresh(strings.ToLower(op))
	b.addNode(ONNXMLDomain, op, inputs, []string{out}, attrs)
	b.g.ValueInfo = append(b.g.ValueInfo, valueInfo(ONNXTensor{Name: out, Type: typ, Dims: dims}))
	return out
}

// nodeTo adds one node whose single output is the (graph output) name out.
func (b *onnxGraph) nodeTo(out, domain, op string, inputs []string, attrs ...*onnx.AttributeProto) string {
	b.take(out)
	b.addNode(domain, op, inputs, []string{out}, attrs)
	return out
}

func (b *onnxGraph) addNode(domain, op string, inputs, outs []string, attrs []*onnx.AttributeProto) {
	b.g.Node = append(b.g.Node, &onnx.NodeProto{
		Name: b.fresh("node_" + strings.ToLower(op)), OpType: op, Domain: domain, Input: inputs, Output: outs, Attribute: attrs,
	})
}

func (b *onnxGraph) initF32(name string, shape []int, data []float32) string {
	b.take(name)
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	b.g.Initializer = append(b.g.Initializer, &onnx.TensorProto{
		Name: name, Dims: dims64(shape), DataType: int32(onnx.TensorProto_FLOAT), RawData: raw,
	})
	return name
}

func (b *onnxGraph) initI64(name string, shape []int, data []int64) string {
	b.take(name)
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	b.g.Initializer = append(b.g.Initializer, &onnx.TensorProto{
		Name: name, Dims: dims64(shape), DataType: int32(onnx.TensorProto_INT64), RawData: raw,
	})
	return name
}

func dims64(shape []int) []int64 {
	d := make([]int64, len(shape))
	for i, v := range shape {
		d[i] = int64(v)
	}
	return d
}

func attrInt(name string, v int64) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INT, I: v}
}

func attrInts(name string, v ...int64) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_INTS, Ints: v}
}

func attrFloat(name string, v float32) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_FLOAT, F: v}
}

func attrFloats(name string, v ...float32) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_FLOATS, Floats: v}
}

func attrString(name, v string) *onnx.AttributeProto {
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_STRING, S: []byte(v)}
}

func attrStrings(name string, v ...string) *onnx.AttributeProto {
	s := make([][]byte, len(v))
	for i, x := range v {
		s[i] = []byte(x)
	}
	return &onnx.AttributeProto{Name: name, Type: onnx.AttributeProto_STRINGS, Strings: s}
}

// valueInfo describes a tensor of the element type whose first dimension is the
// symbolic batch.
func valueInfo(t ONNXTensor) *onnx.ValueInfoProto {
	dims := []*onnx.TensorShapeProto_Dimension{{Value: &onnx.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}}}
	for _, d := range t.Dims {
		dims = append(dims, &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}})
	}
	return &onnx.ValueInfoProto{Name: t.Name, Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{TensorType: &onnx.TypeProto_Tensor{
		ElemType: int32(t.Type), Shape: &onnx.TensorShapeProto{Dim: dims},
	}}}}
}

// activation adds the hidden activation act on x.
func (b *onnxGraph) activation(x, act string) string {
	switch act {
	case ActTanh:
		return b.node("Tanh", []string{x})
	case ActSigmoid:
		return b.node("Sigmoid", []string{x})
	case ActLeakyReLU:
		return b.node("LeakyRelu", []string{x}, attrFloat("alpha", LeakyReLUSlope))
	}
	return b.node("Relu", []string{x})
}

// dense adds Gemm(h, W, b) for the layout tensors prefix.weight and prefix.bias.
func (b *onnxGraph) dense(h, prefix string) string {
	return b.node("Gemm", []string{h, prefix + ".weight", prefix + ".bias"})
}

// weights adds the layout tensors as initializers (an LSTM's weight split into its
// input and recurrent rows).
func (b *onnxGraph) weights(a *Architecture, w Weights) error {
	for _, ts := range a.Tensors() {
		data, ok := w[ts.Name]
		if !ok {
			return fmt.Errorf("onnx: weight %q missing", ts.Name)
		}
		if strings.HasPrefix(ts.Name, "lstm") && strings.HasSuffix(ts.Name, ".weight") {
			rows, cols := ts.Shape[0], ts.Shape[1]
			hid := cols / 4
			in := rows - hid
			b.initF32(ts.Name+".input", []int{in, cols}, data[:in*cols])
			b.initF32(ts.Name+".hidden", []int{hid, cols}, data[in*cols:])
			continue
		}
		b.initF32(ts.Name, ts.Shape, data)
	}
	return nil
}

// network adds the layers on the features x, float32 [batch, InputShape()...], and
// returns the output layer's pre-activation [batch, Outputs].
func (b *onnxGraph) network(a *Architecture, x string) string {
	h := x
	switch a.Kind {
	case KindMLP:
		for i := range a.Hidden {
			h = b.activation(b.dense(h, fmt.Sprintf("dense%d", i)), a.Activation)
		}
	case KindCNN:
		for i, l := range a.Conv {
			p, k, st := int64(l.Padding), int64(l.Kernel), int64(l.Stride)
			h = b.node("Conv", []string{h, fmt.Sprintf("conv%d.weight", i), fmt.Sprintf("conv%d.bias", i)},
				attrInts("kernel_shape", k, k), attrInts("pads", p, p, p, p),
				attrInts("strides", st, st), attrInts("dilations", 1, 1))
			h = b.activation(h, a.Activation)
			if a.Pool > 1 {
				pp := int64(a.Pool)
				h = b.node("MaxPool", []string{h}, attrInts("kernel_shape", pp, pp), attrInts("strides", pp, pp))
			}
		}
		h = b.node("Flatten", []string{h}, attrInt("axis", 1))
		for i := range a.Dense {
			h = b.activation(b.dense(h, fmt.Sprintf("dense%d", i)), a.Activation)
		}
	case KindLSTM:
		h = b.lstm(a, x)
		for i := range a.Dense {
			h = b.activation(b.dense(h, fmt.Sprintf("dense%d", i)), ActReLU)
		}
	}
	return b.dense(h, "out")
}

// head adds the task's output function on the logits z, writing the graph output out:
// the positive-class probability (Sigmoid), the class probabilities (Softmax) or the
// regression value in target units (z times LabelStd plus LabelMean).
func (b *onnxGraph) head(a *Architecture, z, out string) {
	switch a.Task {
	case TaskBinary:
		b.nodeTo(out, "", "Sigmoid", []string{z})
	case TaskMulticlass:
		b.nodeTo(out, "", "Softmax", []string{z}, attrInt("axis", 1))
	default:
		std := a.LabelStd
		if std == 0 {
			std = 1
		}
		scaled := b.node("Mul", []string{z, b.initF32("label.std", []int{1}, []float32{float32(std)})})
		b.nodeTo(out, "", "Add", []string{scaled, b.initF32("label.mean", []int{1}, []float32{float32(a.LabelMean)})})
	}
}

// model wraps the graph with the opsets, producer and metadata (sorted by key).
func (b *onnxGraph) model(doc string, ml bool, metadata map[string]string) *onnx.ModelProto {
	m := &onnx.ModelProto{
		IrVersion:       ONNXIRVersion,
		OpsetImport:     []*onnx.OperatorSetIdProto{{Domain: "", Version: ONNXOpset}},
		ProducerName:    "cohort",
		ProducerVersion: "1",
		Domain:          "dev.cohort",
		ModelVersion:    1,
		DocString:       doc,
		Graph:           b.g,
	}
	if ml {
		m.OpsetImport = append(m.OpsetImport, &onnx.OperatorSetIdProto{Domain: ONNXMLDomain, Version: ONNXMLOpset})
	}
	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m.MetadataProps = append(m.MetadataProps, &onnx.StringStringEntryProto{Key: k, Value: metadata[k]})
	}
	return m
}

// SeparateSignature is the graph signature of BuildONNX: "input", float32
// [batch, InputShape()...], the preprocessed features, and "output", float32
// [batch, Outputs].
func SeparateSignature(a *Architecture) ONNXSignature {
	return ONNXSignature{
		Inputs:  []ONNXTensor{{Name: ONNXInput, Type: onnx.TensorProto_FLOAT, Dims: a.InputShape()}},
		Outputs: []ONNXTensor{{Name: ONNXOutput, Type: onnx.TensorProto_FLOAT, Dims: []int{a.Outputs}}},
	}
}

// BuildONNX returns the ONNX model of the architecture with the given weights (from
// CheckWeights) and metadata (recorded as metadata_props, sorted by key), in the
// separate form (spec.export.onnx.preprocessing: separate): the preprocessing is not in
// the graph.
//
// The graph takes "input", float32 [batch, InputShape()...], holding the features
// after preprocessing, and returns "output", float32 [batch, Outputs]: the positive-class
// probability (Sigmoid), the class probabilities (Softmax) or the regression value in
// target units (the model's standardized output times LabelStd plus LabelMean). Dense
// layers are Gemm with the [in, out] weights of the layout; a CNN is Conv, the
// activation and MaxPool per layer, then Flatten; an LSTM is unrolled over its steps
// (Gather of the step, Gemm/MatMul/Add for the fused gates [i, f, g, o], Split, Sigmoid,
// Tanh, Mul, Add), its weight split into the input rows "lstm<l>.weight.input" and the
// recurrent rows "lstm<l>.weight.hidden".
func BuildONNX(a *Architecture, w Weights, name string, metadata map[string]string) (*onnx.ModelProto, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	b := newONNXGraph(name)
	sig := SeparateSignature(a)
	b.take(ONNXInput)
	if err := b.weights(a, w); err != nil {
		return nil, err
	}
	b.head(a, b.network(a, ONNXInput), ONNXOutput)
	if b.err != nil {
		return nil, b.err
	}
	b.g.Input = []*onnx.ValueInfoProto{valueInfo(sig.Inputs[0])}
	b.g.Output = []*onnx.ValueInfoProto{valueInfo(sig.Outputs[0])}
	doc := fmt.Sprintf("Cohort %s %s model; the features are preprocessed as the metadata cohort.preprocessing says.", a.Kind, a.Task)
	return b.model(doc, false, metadata), nil
}

// EmbeddedSignature is the graph signature of BuildEmbeddedONNX for the architecture
// and its preprocessing (the batch dimension is left out of Dims):
//
//   - tabular (csv): one input per feature column, named as the column, in the
//     preprocessing's column order: float32 [1] for a numeric column (NaN is a missing
//     value), string [1] for a categorical one;
//   - image (idx): "image", uint8 [channels, height, width], the raw pixels;
//   - sequence (sequence_csv): one input per feature, named as the feature, in the
//     scaler's order: float32 [lookback], the raw values from the oldest step to the
//     newest (NaN is a missing value);
//
// and the outputs: "probability" float32 [1] (binary: the positive class) or
// [classes] (multiclass) with "label" string [1], the predicted class name; or
// "value" float32 [1], a regression's prediction in target units.
func EmbeddedSignature(a *Architecture, p *Preprocessing) (ONNXSignature, error) {
	var sig ONNXSignature
	switch {
	case p.Tabular != nil:
		for _, c := range p.Tabular.Columns {
			t := ONNXTensor{Name: c.Name, Type: onnx.TensorProto_FLOAT, Dims: []int{1}}
			if c.Kind == data.KindCategorical {
				t.Type = onnx.TensorProto_STRING
			}
			sig.Inputs = append(sig.Inputs, t)
		}
	case p.Image != nil:
		sig.Inputs = []ONNXTensor{{Name: ONNXImage, Type: onnx.TensorProto_UINT8, Dims: []int{a.Channels, a.Height, a.Width}}}
	case p.Sequence != nil:
		for _, f := range p.Sequence.Features {
			sig.Inputs = append(sig.Inputs, ONNXTensor{Name: f, Type: onnx.TensorProto_FLOAT, Dims: []int{a.Steps}})
		}
	default:
		return sig, errors.New("onnx: no preprocessing to embed")
	}
	switch a.Task {
	case TaskRegression:
		sig.Outputs = []ONNXTensor{{Name: ONNXValue, Type: onnx.TensorProto_FLOAT, Dims: []int{1}}}
	default:
		sig.Outputs = []ONNXTensor{
			{Name: ONNXProbability, Type: onnx.TensorProto_FLOAT, Dims: []int{a.Outputs}},
			{Name: ONNXLabel, Type: onnx.TensorProto_STRING, Dims: []int{1}},
		}
	}
	for _, in := range sig.Inputs {
		for _, out := range sig.Outputs {
			if in.Name == out.Name {
				return sig, fmt.Errorf("onnx: input %q has the name of an output of the graph", in.Name)
			}
		}
	}
	return sig, nil
}

// BuildEmbeddedONNX returns the ONNX model of the architecture with its preprocessing
// inside the graph (spec.export.onnx.preprocessing: embedded): it takes the raw inputs
// of EmbeddedSignature and computes what `cohort serve` computes from them, with
// operators of the default domain (opset ONNXOpset) and of ai.onnx.ml (opset
// ONNXMLOpset) that onnxruntime implements:
//
//   - tabular: the numeric columns are concatenated, Imputer replaces NaN by the
//     training mean and Scaler standardizes ((x - mean) / std); each categorical column
//     is one-hot encoded by OneHotEncoder over its training categories with zeros=1, so
//     that a missing or unseen value is all zeros (strings are compared exactly: cohort
//     serve also trims surrounding white space); Split and Concat restore the feature
//     order of the preprocessing;
//   - image: Cast to float32 and Div by 1/scale;
//   - sequence: Unsqueeze and Concat into [batch, lookback, features], Sub the mean,
//     Div by the std, and Where(IsNaN) sets a missing value to 0, the mean;
//
// then the network of BuildONNX and its output function, and for a classifier "label":
// GreaterOrEqual(probability, threshold) (binary; threshold 0 means DefaultThreshold)
// or ArgMax (multiclass, the first of equal maxima), mapped to the class name by
// LabelEncoder. It fails when a raw input's name clashes with a layout tensor's.
func BuildEmbeddedONNX(a *Architecture, w Weights, p *Preprocessing, threshold float64, name string, metadata map[string]string) (*onnx.ModelProto, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	if threshold == 0 {
		threshold = DefaultThreshold
	}
	if !(threshold > 0 && threshold < 1) {
		return nil, fmt.Errorf("onnx: threshold %v: want a number between 0 and 1", threshold)
	}
	sig, err := EmbeddedSignature(a, p)
	if err != nil {
		return nil, err
	}
	b := newONNXGraph(name)
	for _, t := range sig.Inputs {
		b.take(t.Name)
		b.g.Input = append(b.g.Input, valueInfo(t))
	}
	if err := b.weights(a, w); err != nil {
		return nil, err
	}
	if b.err != nil {
		return nil, fmt.Errorf("onnx: an input has the name of a weight tensor: %w", b.err)
	}
	var x string
	switch {
	case p.Tabular != nil:
		x = b.tabular(p.Tabular)
	case p.Image != nil:
		px := b.node("Cast", []string{ONNXImage}, attrInt("to", int64(onnx.TensorProto_FLOAT)))
		x = b.node("Div", []string{px, b.initF32(b.unused("pixel_divisor"), nil, []float32{float32(1 / p.Image.Scale)})})
	default:
		x = b.sequence(p.Sequence)
	}
	z := b.network(a, x)
	classes := p.ClassNames(a)
	switch a.Task {
	case TaskRegression:
		b.head(a, z, ONNXValue)
	case TaskBinary:
		prob := ONNXProbability
		b.head(a, z, prob)
		ge := b.node("GreaterOrEqual", []string{prob, b.initF32(b.unused("threshold"), nil, []float32{float32(threshold)})})
		idx := b.node("Cast", []string{ge}, attrInt("to", int64(onnx.TensorProto_INT64)))
		b.label(idx, classes)
	default:
		prob := ONNXProbability
		b.head(a, z, prob)
		b.label(b.node("ArgMax", []string{prob}, attrInt("axis", 1), attrInt("keepdims", 1)), classes)
	}
	if b.err != nil {
		return nil, b.err
	}
	for _, t := range sig.Outputs {
		b.g.Output = append(b.g.Output, valueInfo(t))
	}
	doc := fmt.Sprintf("Cohort %s %s model with its preprocessing inside the graph: it takes the raw inputs (see the graph's inputs) and applies the fitted preprocessing in the metadata cohort.preprocessing.", a.Kind, a.Task)
	return b.model(doc, true, metadata), nil
}

// label adds the "label" output: the class names of the int64 class indexes idx.
func (b *onnxGraph) label(idx string, classes []string) {
	keys := make([]int64, len(classes))
	for i := range keys {
		keys[i] = int64(i)
	}
	b.nodeTo(ONNXLabel, ONNXMLDomain, "LabelEncoder", []string{idx},
		attrInts("keys_int64s", keys...), attrStrings("values_strings", classes...), attrString("default_string", ""))
}

// tabular adds the preprocessing of one raw input per column and returns the features,
// float32 [batch, Dim], in the preprocessing's order.
func (b *onnxGraph) tabular(t *data.Preprocessor) string {
	var numeric []string
	var means, scales []float32
	var runs []int64 // lengths of the runs of consecutive numeric columns
	for i, c := range t.Columns {
		if c.Kind != data.KindNumeric {
			continue
		}
		numeric = append(numeric, c.Name)
		means = append(means, float32(c.Mean))
		scales = append(scales, float32(1/c.Std))
		if i == 0 || t.Columns[i-1].Kind != data.KindNumeric {
			runs = append(runs, 0)
		}
		runs[len(runs)-1]++
	}
	var scaled []string // one per run
	if len(numeric) > 0 {
		x := numeric[0]
		if len(numeric) > 1 {
			x = b.node("Concat", numeric, attrInt("axis", 1))
		}
		m := []int{len(numeric)}
		imp := b.nodeML("Imputer", []string{x}, onnx.TensorProto_FLOAT, m,
			attrFloats("imputed_value_floats", means...), attrFloat("replaced_value_float", float32(math.NaN())))
		sc := b.nodeML("Scaler", []string{imp}, onnx.TensorProto_FLOAT, m, attrFloats("offset", means...), attrFloats("scale", scales...))
		scaled = []string{sc}
		if len(runs) > 1 {
			scaled = b.nodeN("Split", []string{sc, b.initI64(b.unused("numeric_runs"), []int{len(runs)}, runs)}, len(runs), attrInt("axis", 1))
		}
	}
	var parts []string
	for i, c := range t.Columns {
		switch {
		case c.Kind == data.KindNumeric && (i == 0 || t.Columns[i-1].Kind != data.KindNumeric):
			parts = append(parts, scaled[0])
			scaled = scaled[1:]
		case c.Kind == data.KindCategorical:
			oh := b.nodeML("OneHotEncoder", []string{c.Name}, onnx.TensorProto_FLOAT, []int{1, len(c.Categories)},
				attrStrings("cats_strings", c.Categories...), attrInt("zeros", 1))
			parts = append(parts, b.node("Flatten", []string{oh}, attrInt("axis", 1)))
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return b.node("Concat", parts, attrInt("axis", 1))
}

// sequence adds the scaling of one raw [batch, lookback] input per feature and returns
// the windows, float32 [batch, lookback, features].
func (b *onnxGraph) sequence(s *data.SequenceScaler) string {
	axes := b.initI64(b.unused("feature_axis"), []int{1}, []int64{2})
	cols := make([]string, len(s.Features))
	means, stds := make([]float32, len(s.Features)), make([]float32, len(s.Features))
	for j, f := range s.Features {
		cols[j] = b.node("Unsqueeze", []string{f, axes})
		means[j], stds[j] = float32(s.Mean[j]), float32(s.Std[j])
	}
	x := cols[0]
	if len(cols) > 1 {
		x = b.node("Concat", cols, attrInt("axis", 2))
	}
	n := len(s.Features)
	centered := b.node("Sub", []string{x, b.initF32(b.unused("feature_mean"), []int{n}, means)})
	z := b.node("Div", []string{centered, b.initF32(b.unused("feature_std"), []int{n}, stds)})
	missing := b.node("IsNaN", []string{z})
	return b.node("Where", []string{missing, b.initF32(b.unused("missing_value"), nil, []float32{0}), z})
}

// lstm adds the unrolled stacked LSTM on the windows x and returns the top layer's last
// hidden state.
func (b *onnxGraph) lstm(a *Architecture, x string) string {
	xs := make([]string, a.Steps)
	for t := range xs {
		idx := b.initI64(fmt.Sprintf("step.%d", t), nil, []int64{int64(t)})
		xs[t] = b.node("Gather", []string{x, idx}, attrInt("axis", 1))
	}
	for l, hid := range a.Hidden {
		wx, wh := fmt.Sprintf("lstm%d.weight.input", l), fmt.Sprintf("lstm%d.weight.hidden", l)
		bias := fmt.Sprintf("lstm%d.bias", l)
		split := b.initI64(fmt.Sprintf("lstm%d.split", l), []int{4}, []int64{int64(hid), int64(hid), int64(hid), int64(hid)})
		hs := make([]string, len(xs))
		var h, c string
		for t, x := range xs {
			z := b.node("Gemm", []string{x, wx, bias})
			if t > 0 {
				z = b.node("Add", []string{z, b.node("MatMul", []string{h, wh})})
			}
			g := b.nodeN("Split", []string{z, split}, 4, attrInt("axis", 1))
			ig := b.node("Sigmoid", []string{g[0]})
			fg := b.node("Sigmoid", []string{g[1]})
			gg := b.node("Tanh", []string{g[2]})
			og := b.node("Sigmoid", []string{g[3]})
			c2 := b.node("Mul", []string{ig, gg})
			if t > 0 {
				c2 = b.node("Add", []string{b.node("Mul", []string{fg, c}), c2})
			}
			c = c2
			h = b.node("Mul", []string{og, b.node("Tanh", []string{c})})
			hs[t] = h
		}
		xs = hs
	}
	return xs[len(xs)-1]
}

// MarshalONNX encodes a model in the protobuf wire format of model.onnx files.
func MarshalONNX(m *onnx.ModelProto) ([]byte, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("onnx: encode: %w", err)
	}
	return b, nil
}

// MaxONNXSize bounds the model.onnx files UnmarshalONNX accepts (2 GiB, protobuf's
// limit).
const MaxONNXSize = 2 << 30

// UnmarshalONNX decodes a model.onnx file.
func UnmarshalONNX(b []byte) (*onnx.ModelProto, error) {
	if len(b) > MaxONNXSize {
		return nil, fmt.Errorf("onnx: %d bytes exceed the %d-byte limit", len(b), MaxONNXSize)
	}
	m := &onnx.ModelProto{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("onnx: decode: %w", err)
	}
	return m, nil
}
