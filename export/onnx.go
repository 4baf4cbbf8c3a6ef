package export

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"google.golang.org/protobuf/proto"
)

// ONNX versions written by BuildONNX: opset 13 of the default domain, IR version 7
// (the IR of opset 13), which ONNX Runtime (Triton's onnxruntime backend) and onnx >= 1.8
// read.
const (
	ONNXOpset     = 13
	ONNXIRVersion = 7
)

// ONNX graph input and output names (also in the Triton config).
const (
	ONNXInput  = "input"
	ONNXOutput = "output"
)

// onnxGraph accumulates nodes and initializers with unique value names.
type onnxGraph struct {
	g     *onnx.GraphProto
	names map[string]int
}

func (b *onnxGraph) fresh(prefix string) string {
	b.names[prefix]++
	return fmt.Sprintf("%s_%d", prefix, b.names[prefix])
}

// node adds one node with a single output and returns the output's name.
func (b *onnxGraph) node(op string, inputs []string, attrs ...*onnx.AttributeProto) string {
	return b.nodeN(op, inputs, 1, attrs...)[0]
}

func (b *onnxGraph) nodeN(op string, inputs []string, nout int, attrs ...*onnx.AttributeProto) []string {
	outs := make([]string, nout)
	for i := range outs {
		outs[i] = b.fresh(strings.ToLower(op))
	}
	b.g.Node = append(b.g.Node, &onnx.NodeProto{
		Name: b.fresh("node_" + strings.ToLower(op)), OpType: op, Input: inputs, Output: outs, Attribute: attrs,
	})
	return outs
}

func (b *onnxGraph) initF32(name string, shape []int, data []float32) string {
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

// valueInfo describes a float tensor whose first dimension is the symbolic batch.
func valueInfo(name string, shape []int) *onnx.ValueInfoProto {
	dims := []*onnx.TensorShapeProto_Dimension{{Value: &onnx.TensorShapeProto_Dimension_DimParam{DimParam: "batch"}}}
	for _, d := range shape {
		dims = append(dims, &onnx.TensorShapeProto_Dimension{Value: &onnx.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}})
	}
	return &onnx.ValueInfoProto{Name: name, Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{TensorType: &onnx.TypeProto_Tensor{
		ElemType: int32(onnx.TensorProto_FLOAT), Shape: &onnx.TensorShapeProto{Dim: dims},
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

// BuildONNX returns the ONNX model of the architecture with the given weights (from
// CheckWeights) and metadata (recorded as metadata_props, sorted by key).
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
	b := &onnxGraph{g: &onnx.GraphProto{Name: name}, names: map[string]int{}}
	for _, ts := range a.Tensors() {
		data, ok := w[ts.Name]
		if !ok {
			return nil, fmt.Errorf("onnx: weight %q missing", ts.Name)
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
	b.g.Input = []*onnx.ValueInfoProto{valueInfo(ONNXInput, a.InputShape())}

	h := ONNXInput
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
		h = b.lstm(a)
		for i := range a.Dense {
			h = b.activation(b.dense(h, fmt.Sprintf("dense%d", i)), ActReLU)
		}
	}
	z := b.dense(h, "out")
	switch a.Task {
	case TaskBinary:
		b.node("Sigmoid", []string{z})
	case TaskMulticlass:
		b.node("Softmax", []string{z}, attrInt("axis", 1))
	default:
		std := a.LabelStd
		if std == 0 {
			std = 1
		}
		scaled := b.node("Mul", []string{z, b.initF32("label.std", []int{1}, []float32{float32(std)})})
		b.node("Add", []string{scaled, b.initF32("label.mean", []int{1}, []float32{float32(a.LabelMean)})})
	}
	// The last node's output is the graph output.
	b.g.Node[len(b.g.Node)-1].Output[0] = ONNXOutput
	b.g.Output = []*onnx.ValueInfoProto{valueInfo(ONNXOutput, []int{a.Outputs})}

	m := &onnx.ModelProto{
		IrVersion:       ONNXIRVersion,
		OpsetImport:     []*onnx.OperatorSetIdProto{{Domain: "", Version: ONNXOpset}},
		ProducerName:    "cohort",
		ProducerVersion: "1",
		Domain:          "dev.cohort",
		ModelVersion:    1,
		DocString:       fmt.Sprintf("Cohort %s %s model; the features are preprocessed as the metadata cohort.preprocessing says.", a.Kind, a.Task),
		Graph:           b.g,
	}
	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m.MetadataProps = append(m.MetadataProps, &onnx.StringStringEntryProto{Key: k, Value: metadata[k]})
	}
	return m, nil
}

// lstm adds the unrolled stacked LSTM and returns the top layer's last hidden state.
func (b *onnxGraph) lstm(a *Architecture) string {
	xs := make([]string, a.Steps)
	for t := range xs {
		idx := b.initI64(fmt.Sprintf("step.%d", t), nil, []int64{int64(t)})
		xs[t] = b.node("Gather", []string{ONNXInput, idx}, attrInt("axis", 1))
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
