package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// denseCase is one dense layer under test: x of xShape (rows first), in -> out.
type denseCase struct {
	xShape  []int
	in, out int
}

var denseCases = []denseCase{
	{[]int{5, 7}, 7, 3},
	{[]int{4, 2, 3, 2}, 12, 5}, // a feature map flattened per row
	{[]int{13, 40}, 40, 17},    // edge tiles in every GEMM dimension
}

// denseRun builds loss = Σ act(x·W + b) ⊙ r in float64, with the fused op or with
// gorgonia's composed ops (Reshape, Mul, BroadcastAdd and the activation), runs it
// twice (the second run must not see the first's buffers) and returns the loss and the
// gradients with respect to x, W and b.
func denseRun(t *testing.T, composed bool, act string, c denseCase, xs, ws, bs, rs []float64) (float64, [3][]float64) {
	t.Helper()
	buildMu.Lock()
	g := G.NewGraph()
	bind := func(name string, v []float64, shape ...int) *G.Node {
		return G.NewTensor(g, G.Float64, len(shape), G.WithShape(shape...), G.WithName(name),
			G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), v...)))))
	}
	rows := c.xShape[0]
	x, w, b, r := bind("x", xs, c.xShape...), bind("w", ws, c.in, c.out), bind("b", bs, c.out), bind("r", rs, rows, c.out)
	var y *G.Node
	var err error
	if composed {
		h := x
		if len(c.xShape) > 2 {
			h = G.Must(G.Reshape(x, tensor.Shape{rows, c.in}))
		}
		y = G.Must(G.BroadcastAdd(G.Must(G.Mul(h, w)), b, nil, []byte{0}))
		switch act {
		case ActivationReLU:
			y = G.Must(G.Rectify(y))
		case ActivationTanh:
			y = G.Must(G.Tanh(y))
		case ActivationSigmoid:
			y = G.Must(G.Sigmoid(y))
		case ActivationLeakyReLU:
			y = G.Must(G.LeakyRelu(y, LeakyReLUSlope))
		}
	} else if y, err = dense[float64]("d", x, w, b, act, true); err != nil {
		buildMu.Unlock()
		t.Fatal(err)
	}
	cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, r))))
	grads, err := G.Grad(cost, x, w, b)
	if err != nil {
		buildMu.Unlock()
		t.Fatal(err)
	}
	var costV G.Value
	gv := make([]G.Value, 3)
	G.Read(cost, &costV)
	for i := range grads {
		G.Read(grads[i], &gv[i])
	}
	vm := G.NewTapeMachine(g)
	buildMu.Unlock()
	defer vm.Close()
	var out [3][]float64
	for run := range 2 {
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	for i := range gv {
		out[i] = append([]float64(nil), gv[i].Data().([]float64)...)
	}
	return costV.Data().(float64), out
}

func denseData(seed uint64, c denseCase) (xs, ws, bs, rs []float64) {
	rng := rand.New(rand.NewPCG(seed, 9))
	f := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		return v
	}
	rows := c.xShape[0]
	return f(rows * c.in), f(c.in * c.out), f(c.out), f(rows * c.out)
}

var denseActivations = []string{identity, ActivationReLU, ActivationTanh, ActivationSigmoid, ActivationLeakyReLU}

func actName(act string) string {
	if act == identity {
		return "identity"
	}
	return act
}

// TestDenseOpMatchesComposed checks the fused dense op's loss and gradients against
// gorgonia's composed ops for every activation, including a flattened feature map.
func TestDenseOpMatchesComposed(t *testing.T) {
	for ci, c := range denseCases {
		for _, act := range denseActivations {
			t.Run(fmt.Sprintf("%v/%s", c.xShape, actName(act)), func(t *testing.T) {
				xs, ws, bs, rs := denseData(uint64(ci), c)
				lf, gf := denseRun(t, false, act, c, xs, ws, bs, rs)
				lc, gc := denseRun(t, true, act, c, xs, ws, bs, rs)
				if math.Abs(lf-lc) > 1e-9*(1+math.Abs(lc)) {
					t.Fatalf("loss %v, composed %v", lf, lc)
				}
				for i, name := range []string{"dx", "dW", "db"} {
					for j := range gc[i] {
						if math.Abs(gf[i][j]-gc[i][j]) > 1e-9*(1+math.Abs(gc[i][j])) {
							t.Fatalf("%s[%d] = %v, composed %v", name, j, gf[i][j], gc[i][j])
						}
					}
				}
			})
		}
	}
}

// TestDenseOpFiniteDifferences checks the fused op's gradients against central
// differences of its own loss (float64).
func TestDenseOpFiniteDifferences(t *testing.T) {
	c := denseCases[1]
	for _, act := range denseActivations {
		t.Run(actName(act), func(t *testing.T) {
			xs, ws, bs, rs := denseData(42, c)
			_, grads := denseRun(t, false, act, c, xs, ws, bs, rs)
			const h = 1e-6
			for i, v := range [][]float64{xs, ws, bs} {
				for j := range v {
					orig := v[j]
					v[j] = orig + h
					lp, _ := denseRun(t, false, act, c, xs, ws, bs, rs)
					v[j] = orig - h
					lm, _ := denseRun(t, false, act, c, xs, ws, bs, rs)
					v[j] = orig
					fd := (lp - lm) / (2 * h)
					if math.Abs(fd-grads[i][j]) > 1e-5*(1+math.Abs(fd)) {
						t.Fatalf("input %d [%d]: gradient %v, finite difference %v", i, j, grads[i][j], fd)
					}
				}
			}
		})
	}
}

// TestActivationOpMatchesComposed checks the fused activation op on a 4-D tensor
// against gorgonia's own activations: values and the gradient of Σ act(x) ⊙ r.
func TestActivationOpMatchesComposed(t *testing.T) {
	shape := []int{2, 3, 4, 5}
	xs, _, _, _ := denseData(3, denseCase{xShape: []int{120, 1}, in: 1, out: 1})
	rs, _, _, _ := denseData(4, denseCase{xShape: []int{120, 1}, in: 1, out: 1})
	run := func(act string, fused bool) (float64, []float64) {
		buildMu.Lock()
		g := G.NewGraph()
		x := G.NewTensor(g, G.Float64, 4, G.WithShape(shape...), G.WithName("x"),
			G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), xs...)))))
		r := G.NewTensor(g, G.Float64, 4, G.WithShape(shape...), G.WithName("r"),
			G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), rs...)))))
		var y *G.Node
		switch {
		case fused:
			y = G.Must(activation[float64]("act", x, act))
		case act == ActivationReLU:
			y = G.Must(G.Rectify(x))
		case act == ActivationTanh:
			y = G.Must(G.Tanh(x))
		case act == ActivationSigmoid:
			y = G.Must(G.Sigmoid(x))
		default:
			y = G.Must(G.LeakyRelu(x, LeakyReLUSlope))
		}
		cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, r))))
		grads, err := G.Grad(cost, x)
		if err != nil {
			buildMu.Unlock()
			t.Fatal(err)
		}
		var cv, gv G.Value
		G.Read(cost, &cv)
		G.Read(grads[0], &gv)
		vm := G.NewTapeMachine(g)
		buildMu.Unlock()
		defer vm.Close()
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		return cv.Data().(float64), append([]float64(nil), gv.Data().([]float64)...)
	}
	for _, act := range denseActivations[1:] {
		t.Run(act, func(t *testing.T) {
			lf, gf := run(act, true)
			lc, gc := run(act, false)
			if math.Abs(lf-lc) > 1e-9*(1+math.Abs(lc)) {
				t.Fatalf("loss %v, composed %v", lf, lc)
			}
			for i := range gc {
				if math.Abs(gf[i]-gc[i]) > 1e-9*(1+math.Abs(gc[i])) {
					t.Fatalf("dx[%d] = %v, composed %v", i, gf[i], gc[i])
				}
			}
		})
	}
}

// TestDenseMultiMatchesConcat checks a dense layer over two inputs side by side, with
// weights that have rows to spare (the LSTM's first step), against gorgonia's Concat,
// Slice and Mul: loss and the gradients of both inputs, W and b.
func TestDenseMultiMatchesConcat(t *testing.T) {
	const rows, w1, w2, spare, out = 5, 3, 4, 2, 6
	xs1, ws, bs, rs := denseData(7, denseCase{xShape: []int{rows, w1 + w2 + spare}, in: w1 + w2 + spare, out: out})
	xs1, xs2 := xs1[:rows*w1], xs1[rows*w1:rows*(w1+w2)]
	for _, act := range denseActivations[:3] {
		t.Run(actName(act), func(t *testing.T) {
			var losses [2]float64
			var grads [2][4][]float64
			for fused := range 2 {
				buildMu.Lock()
				g := G.NewGraph()
				bind := func(name string, v []float64, shape ...int) *G.Node {
					return G.NewTensor(g, G.Float64, len(shape), G.WithShape(shape...), G.WithName(name),
						G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), v...)))))
				}
				x1, x2 := bind("x1", xs1, rows, w1), bind("x2", xs2, rows, w2)
				w, b, r := bind("w", ws, w1+w2+spare, out), bind("b", bs, out), bind("r", rs, rows, out)
				var y *G.Node
				var err error
				if fused == 1 {
					y, err = denseMulti[float64]("d", []*G.Node{x1, x2}, w, b, act, []bool{true, true})
				} else {
					xh := G.Must(G.Concat(1, x1, x2))
					z := G.Must(G.BroadcastAdd(G.Must(G.Mul(xh, G.Must(G.Slice(w, G.S(0, w1+w2))))), b, nil, []byte{0}))
					if act == identity {
						y, err = z, nil
					} else if act == ActivationReLU {
						y, err = G.Rectify(z)
					} else {
						y, err = G.Tanh(z)
					}
				}
				if err != nil {
					buildMu.Unlock()
					t.Fatal(err)
				}
				cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, r))))
				gn, err := G.Grad(cost, x1, x2, w, b)
				if err != nil {
					buildMu.Unlock()
					t.Fatal(err)
				}
				var cv G.Value
				gv := make([]G.Value, 4)
				G.Read(cost, &cv)
				for i := range gn {
					G.Read(gn[i], &gv[i])
				}
				vm := G.NewTapeMachine(g)
				buildMu.Unlock()
				if err := vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				losses[fused] = cv.Data().(float64)
				for i := range gv {
					grads[fused][i] = append([]float64(nil), gv[i].Data().([]float64)...)
				}
				vm.Close()
			}
			if math.Abs(losses[0]-losses[1]) > 1e-9*(1+math.Abs(losses[0])) {
				t.Fatalf("loss %v, composed %v", losses[1], losses[0])
			}
			for i, name := range []string{"dx1", "dx2", "dW", "db"} {
				for j := range grads[0][i] {
					if math.Abs(grads[1][i][j]-grads[0][i][j]) > 1e-9*(1+math.Abs(grads[0][i][j])) {
						t.Fatalf("%s[%d] = %v, composed %v", name, j, grads[1][i][j], grads[0][i][j])
					}
				}
			}
		})
	}
}
