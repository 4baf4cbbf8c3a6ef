package export

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
)

// onnxValue is a dense tensor of the evaluator: float values (f) or int64 values (i).
type onnxValue struct {
	shape []int
	f     []float64
	i     []int64
}

func (v *onnxValue) size() int {
	n := 1
	for _, d := range v.shape {
		n *= d
	}
	return n
}

// EvalONNX runs a model written by BuildONNX (the separate form) on one input tensor
// (float32, shape given with the batch dimension first) and returns the output tensor
// "output" and its shape. It implements exactly the operators and attributes BuildONNX
// emits (Gemm, MatMul, Add, Mul, Relu, LeakyRelu, Tanh, Sigmoid, Softmax, Conv,
// MaxPool, Flatten, Gather, Split) in float64 arithmetic, to verify the network of an
// export independently of the forward pass it was built from; any other operator or
// attribute is an error. It is a unit-level check: it does not evaluate the embedded
// form of BuildEmbeddedONNX (string and uint8 inputs, ai.onnx.ml operators), which the
// tests run in the real ONNX Runtime instead (package export/ortest).
func EvalONNX(m *onnx.ModelProto, input []float32, shape []int) ([]float32, []int, error) {
	g := m.GetGraph()
	if g == nil {
		return nil, nil, fmt.Errorf("onnx eval: model has no graph")
	}
	vals := map[string]*onnxValue{}
	for _, t := range g.GetInitializer() {
		v, err := tensorValue(t)
		if err != nil {
			return nil, nil, fmt.Errorf("onnx eval: initializer %q: %w", t.GetName(), err)
		}
		vals[t.GetName()] = v
	}
	in := &onnxValue{shape: append([]int(nil), shape...), f: make([]float64, len(input))}
	if in.size() != len(input) {
		return nil, nil, fmt.Errorf("onnx eval: input shape %v has %d values, got %d", shape, in.size(), len(input))
	}
	for i, v := range input {
		in.f[i] = float64(v)
	}
	if len(g.GetInput()) != 1 {
		return nil, nil, fmt.Errorf("onnx eval: graph has %d inputs, want 1", len(g.GetInput()))
	}
	vals[g.GetInput()[0].GetName()] = in
	for _, n := range g.GetNode() {
		args := make([]*onnxValue, len(n.GetInput()))
		for i, name := range n.GetInput() {
			if args[i] = vals[name]; args[i] == nil {
				return nil, nil, fmt.Errorf("onnx eval: node %s (%s): input %q is not defined before it", n.GetName(), n.GetOpType(), name)
			}
		}
		outs, err := evalNode(n, args)
		if err != nil {
			return nil, nil, fmt.Errorf("onnx eval: node %s (%s): %w", n.GetName(), n.GetOpType(), err)
		}
		if len(outs) != len(n.GetOutput()) {
			return nil, nil, fmt.Errorf("onnx eval: node %s (%s): %d outputs, the node names %d", n.GetName(), n.GetOpType(), len(outs), len(n.GetOutput()))
		}
		for i, name := range n.GetOutput() {
			vals[name] = outs[i]
		}
	}
	if len(g.GetOutput()) != 1 {
		return nil, nil, fmt.Errorf("onnx eval: graph has %d outputs, want 1", len(g.GetOutput()))
	}
	out := vals[g.GetOutput()[0].GetName()]
	if out == nil || out.f == nil {
		return nil, nil, fmt.Errorf("onnx eval: output %q is not computed", g.GetOutput()[0].GetName())
	}
	res := make([]float32, len(out.f))
	for i, v := range out.f {
		res[i] = float32(v)
	}
	return res, out.shape, nil
}

func tensorValue(t *onnx.TensorProto) (*onnxValue, error) {
	v := &onnxValue{shape: make([]int, len(t.GetDims()))}
	for i, d := range t.GetDims() {
		v.shape[i] = int(d)
	}
	n := v.size()
	raw := t.GetRawData()
	switch onnx.TensorProto_DataType(t.GetDataType()) {
	case onnx.TensorProto_FLOAT:
		if len(raw) != 4*n {
			return nil, fmt.Errorf("raw_data has %d bytes for %d floats", len(raw), n)
		}
		v.f = make([]float64, n)
		for i := range v.f {
			v.f[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
		}
	case onnx.TensorProto_INT64:
		if len(raw) != 8*n {
			return nil, fmt.Errorf("raw_data has %d bytes for %d int64s", len(raw), n)
		}
		v.i = make([]int64, n)
		for i := range v.i {
			v.i[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	default:
		return nil, fmt.Errorf("data type %d is not supported", t.GetDataType())
	}
	return v, nil
}

// attrs returns the node's attributes by name, refusing any not in allowed.
func attrs(n *onnx.NodeProto, allowed ...string) (map[string]*onnx.AttributeProto, error) {
	m := map[string]*onnx.AttributeProto{}
	for _, a := range n.GetAttribute() {
		ok := false
		for _, name := range allowed {
			ok = ok || a.GetName() == name
		}
		if !ok {
			return nil, fmt.Errorf("attribute %q is not supported", a.GetName())
		}
		m[a.GetName()] = a
	}
	return m, nil
}

func want(args []*onnxValue, n int, ranks ...int) error {
	if len(args) != n {
		return fmt.Errorf("%d inputs, want %d", len(args), n)
	}
	for i, r := range ranks {
		if r >= 0 && len(args[i].shape) != r {
			return fmt.Errorf("input %d has shape %v, want rank %d", i, args[i].shape, r)
		}
		if args[i].f == nil {
			return fmt.Errorf("input %d is not a float tensor", i)
		}
	}
	return nil
}

func unary(args []*onnxValue, f func(float64) float64) ([]*onnxValue, error) {
	if err := want(args, 1, -1); err != nil {
		return nil, err
	}
	out := &onnxValue{shape: args[0].shape, f: make([]float64, len(args[0].f))}
	for i, v := range args[0].f {
		out.f[i] = f(v)
	}
	return []*onnxValue{out}, nil
}

func evalNode(n *onnx.NodeProto, args []*onnxValue) ([]*onnxValue, error) {
	op := n.GetOpType()
	if n.GetDomain() != "" {
		return nil, fmt.Errorf("domain %q is not supported", n.GetDomain())
	}
	var allowed []string
	switch op {
	case "LeakyRelu":
		allowed = []string{"alpha"}
	case "Softmax", "Flatten", "Gather", "Split":
		allowed = []string{"axis"}
	case "Conv":
		allowed = []string{"kernel_shape", "pads", "strides", "dilations"}
	case "MaxPool":
		allowed = []string{"kernel_shape", "strides"}
	}
	at, err := attrs(n, allowed...)
	if err != nil {
		return nil, err
	}
	switch op {
	case "Relu":
		return unary(args, func(v float64) float64 { return math.Max(v, 0) })
	case "Tanh":
		return unary(args, math.Tanh)
	case "Sigmoid":
		return unary(args, func(v float64) float64 { return 1 / (1 + math.Exp(-v)) })
	case "LeakyRelu":
		alpha := 0.01
		if a := at["alpha"]; a != nil {
			alpha = float64(a.GetF())
		}
		return unary(args, func(v float64) float64 {
			if v < 0 {
				return alpha * v
			}
			return v
		})
	case "Add", "Mul":
		if err := want(args, 2, -1, -1); err != nil {
			return nil, err
		}
		f := func(a, b float64) float64 { return a + b }
		if op == "Mul" {
			f = func(a, b float64) float64 { return a * b }
		}
		out, err := broadcast(args[0], args[1], f)
		return []*onnxValue{out}, err
	case "Gemm":
		if len(args) != 3 {
			return nil, fmt.Errorf("%d inputs, want 3", len(args))
		}
		if err := want(args, 3, 2, 2, -1); err != nil {
			return nil, err
		}
		z, err := matmul(args[0], args[1])
		if err != nil {
			return nil, err
		}
		out, err := broadcast(z, args[2], func(a, b float64) float64 { return a + b })
		return []*onnxValue{out}, err
	case "MatMul":
		if err := want(args, 2, 2, 2); err != nil {
			return nil, err
		}
		z, err := matmul(args[0], args[1])
		return []*onnxValue{z}, err
	case "Softmax":
		if err := want(args, 1, 2); err != nil {
			return nil, err
		}
		if a := at["axis"]; a == nil || (a.GetI() != 1 && a.GetI() != -1) {
			return nil, fmt.Errorf("softmax axis must be 1")
		}
		x := args[0]
		out := &onnxValue{shape: x.shape, f: append([]float64(nil), x.f...)}
		for r := range x.shape[0] {
			onnxSoftmax(out.f[r*x.shape[1] : (r+1)*x.shape[1]])
		}
		return []*onnxValue{out}, nil
	case "Flatten":
		if err := want(args, 1, -1); err != nil {
			return nil, err
		}
		if a := at["axis"]; a == nil || a.GetI() != 1 {
			return nil, fmt.Errorf("flatten axis must be 1")
		}
		x := args[0]
		return []*onnxValue{{shape: []int{x.shape[0], x.size() / max(x.shape[0], 1)}, f: x.f}}, nil
	case "Gather":
		return gather(args, at)
	case "Split":
		return split(args, at)
	case "Conv":
		return conv(args, at)
	case "MaxPool":
		return maxPool(args, at)
	}
	return nil, fmt.Errorf("operator %s is not supported", op)
}

// broadcast applies f element-wise with numpy (multidirectional) broadcasting.
func broadcast(a, b *onnxValue, f func(a, b float64) float64) (*onnxValue, error) {
	rank := max(len(a.shape), len(b.shape))
	pad := func(s []int) []int {
		p := make([]int, rank)
		for i := range p {
			p[i] = 1
		}
		copy(p[rank-len(s):], s)
		return p
	}
	as, bs := pad(a.shape), pad(b.shape)
	shape := make([]int, rank)
	for i := range shape {
		switch {
		case as[i] == bs[i], bs[i] == 1:
			shape[i] = as[i]
		case as[i] == 1:
			shape[i] = bs[i]
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast", a.shape, b.shape)
		}
	}
	out := &onnxValue{shape: shape}
	n := out.size()
	out.f = make([]float64, n)
	idx := make([]int, rank)
	for k := range n {
		ai, bi := 0, 0
		for d := range rank {
			ai = ai*as[d] + min(idx[d], as[d]-1)
			bi = bi*bs[d] + min(idx[d], bs[d]-1)
		}
		out.f[k] = f(a.f[ai], b.f[bi])
		for d := rank - 1; d >= 0; d-- {
			idx[d]++
			if idx[d] < shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, nil
}

func matmul(a, b *onnxValue) (*onnxValue, error) {
	m, k, n := a.shape[0], a.shape[1], b.shape[1]
	if b.shape[0] != k {
		return nil, fmt.Errorf("matmul of %v and %v", a.shape, b.shape)
	}
	out := &onnxValue{shape: []int{m, n}, f: make([]float64, m*n)}
	for i := range m {
		for p := range k {
			av := a.f[i*k+p]
			for j := range n {
				out.f[i*n+j] += av * b.f[p*n+j]
			}
		}
	}
	return out, nil
}

func gather(args []*onnxValue, at map[string]*onnx.AttributeProto) ([]*onnxValue, error) {
	if len(args) != 2 || args[0].f == nil || args[1].i == nil || len(args[1].shape) != 0 || len(args[0].shape) != 3 {
		return nil, fmt.Errorf("gather supports a rank-3 float tensor and a scalar int64 index")
	}
	if a := at["axis"]; a == nil || a.GetI() != 1 {
		return nil, fmt.Errorf("gather axis must be 1")
	}
	x, t := args[0], int(args[1].i[0])
	b, s, f := x.shape[0], x.shape[1], x.shape[2]
	if t < 0 || t >= s {
		return nil, fmt.Errorf("gather index %d outside [0, %d)", t, s)
	}
	out := &onnxValue{shape: []int{b, f}, f: make([]float64, b*f)}
	for r := range b {
		copy(out.f[r*f:(r+1)*f], x.f[(r*s+t)*f:(r*s+t+1)*f])
	}
	return []*onnxValue{out}, nil
}

func split(args []*onnxValue, at map[string]*onnx.AttributeProto) ([]*onnxValue, error) {
	if len(args) != 2 || args[0].f == nil || args[1].i == nil || len(args[0].shape) != 2 {
		return nil, fmt.Errorf("split supports a rank-2 float tensor and int64 split sizes")
	}
	if a := at["axis"]; a == nil || a.GetI() != 1 {
		return nil, fmt.Errorf("split axis must be 1")
	}
	x := args[0]
	rows, cols := x.shape[0], x.shape[1]
	var outs []*onnxValue
	off := 0
	for _, s := range args[1].i {
		w := int(s)
		if w < 0 || off+w > cols {
			return nil, fmt.Errorf("split sizes %v exceed %d columns", args[1].i, cols)
		}
		o := &onnxValue{shape: []int{rows, w}, f: make([]float64, rows*w)}
		for r := range rows {
			copy(o.f[r*w:(r+1)*w], x.f[r*cols+off:r*cols+off+w])
		}
		outs = append(outs, o)
		off += w
	}
	if off != cols {
		return nil, fmt.Errorf("split sizes %v cover %d of %d columns", args[1].i, off, cols)
	}
	return outs, nil
}

func ints(at map[string]*onnx.AttributeProto, name string, n int, def int64) ([]int, error) {
	a := at[name]
	if a == nil {
		out := make([]int, n)
		for i := range out {
			out[i] = int(def)
		}
		return out, nil
	}
	if len(a.GetInts()) != n {
		return nil, fmt.Errorf("attribute %s has %d values, want %d", name, len(a.GetInts()), n)
	}
	out := make([]int, n)
	for i, v := range a.GetInts() {
		out[i] = int(v)
	}
	return out, nil
}

func conv(args []*onnxValue, at map[string]*onnx.AttributeProto) ([]*onnxValue, error) {
	if err := want(args, 3, 4, 4, 1); err != nil {
		return nil, err
	}
	x, w, bias := args[0], args[1], args[2]
	ks, err := ints(at, "kernel_shape", 2, 0)
	if err != nil {
		return nil, err
	}
	pads, err := ints(at, "pads", 4, 0)
	if err != nil {
		return nil, err
	}
	strides, err := ints(at, "strides", 2, 1)
	if err != nil {
		return nil, err
	}
	dil, err := ints(at, "dilations", 2, 1)
	if err != nil {
		return nil, err
	}
	if dil[0] != 1 || dil[1] != 1 || pads[0] != pads[2] || pads[1] != pads[3] {
		return nil, fmt.Errorf("conv supports dilation 1 and symmetric pads")
	}
	nb, c, h, wd := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	oc, kh, kw := w.shape[0], w.shape[2], w.shape[3]
	if w.shape[1] != c || kh != ks[0] || kw != ks[1] || bias.shape[0] != oc {
		return nil, fmt.Errorf("conv weights %v, bias %v do not fit input %v", w.shape, bias.shape, x.shape)
	}
	oh := (h+2*pads[0]-kh)/strides[0] + 1
	ow := (wd+2*pads[1]-kw)/strides[1] + 1
	out := &onnxValue{shape: []int{nb, oc, oh, ow}, f: make([]float64, nb*oc*oh*ow)}
	for b := range nb {
		for o := range oc {
			for y := range oh {
				for xx := range ow {
					s := bias.f[o]
					for ic := range c {
						for ky := range kh {
							iy := y*strides[0] - pads[0] + ky
							if iy < 0 || iy >= h {
								continue
							}
							for kx := range kw {
								ix := xx*strides[1] - pads[1] + kx
								if ix < 0 || ix >= wd {
									continue
								}
								s += x.f[((b*c+ic)*h+iy)*wd+ix] * w.f[((o*c+ic)*kh+ky)*kw+kx]
							}
						}
					}
					out.f[((b*oc+o)*oh+y)*ow+xx] = s
				}
			}
		}
	}
	return []*onnxValue{out}, nil
}

func maxPool(args []*onnxValue, at map[string]*onnx.AttributeProto) ([]*onnxValue, error) {
	if err := want(args, 1, 4); err != nil {
		return nil, err
	}
	ks, err := ints(at, "kernel_shape", 2, 0)
	if err != nil {
		return nil, err
	}
	st, err := ints(at, "strides", 2, 1)
	if err != nil {
		return nil, err
	}
	x := args[0]
	nb, c, h, w := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	if ks[0] < 1 || ks[1] < 1 || ks[0] > h || ks[1] > w {
		return nil, fmt.Errorf("maxpool kernel %v does not fit %v", ks, x.shape)
	}
	oh, ow := (h-ks[0])/st[0]+1, (w-ks[1])/st[1]+1
	out := &onnxValue{shape: []int{nb, c, oh, ow}, f: make([]float64, nb*c*oh*ow)}
	for bc := range nb * c {
		for y := range oh {
			for xx := range ow {
				m := math.Inf(-1)
				for dy := range ks[0] {
					for dx := range ks[1] {
						m = math.Max(m, x.f[(bc*h+y*st[0]+dy)*w+xx*st[1]+dx])
					}
				}
				out.f[(bc*oh+y)*ow+xx] = m
			}
		}
	}
	return []*onnxValue{out}, nil
}

// onnxSoftmax is ONNX's Softmax over one row, in place. The evaluator keeps its own
// (shifted by the row's maximum) rather than modeldef's forward pass, which it checks.
func onnxSoftmax(z []float64) {
	mx := math.Inf(-1)
	for _, v := range z {
		mx = math.Max(mx, v)
	}
	var s float64
	for i, v := range z {
		z[i] = math.Exp(v - mx)
		s += z[i]
	}
	for i := range z {
		z[i] /= s
	}
}
