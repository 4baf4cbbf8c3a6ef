package gorgoniaops

import (
	"math/rand/v2"
	"testing"

	"github.com/cohort-dev/cohort/internal/gpu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestLSTMGatesMatchesGorgonia compares the fused GPU gate op with the same cell
// composed from gorgonia's CPU Slice, Sigmoid, Tanh and HadamardProd: the h and c it
// produces and the gradients of gates and cprev, within 1e-4 + 1e-3·|want|.
func TestLSTMGatesMatchesGorgonia(t *testing.T) {
	for _, backend := range []struct {
		name string
		dev  func(*testing.T) *gpu.Device
	}{{"emulated", emulated}, {"gpu", realGPU}} {
		t.Run(backend.name, func(t *testing.T) {
			d := backend.dev(t)
			r := rand.New(rand.NewPCG(61, 62))
			const b, h = 4, 5
			gates, cprev := randSlice(r, b*4*h, 1), randSlice(r, b*h, 1)
			uh, uc := randSlice(r, b*h, 1), randSlice(r, b*h, 1)
			run := func(useGPU bool) [][]float32 {
				g := G.NewGraph()
				mat := func(name string, data []float32, rows, cols int) *G.Node {
					v := tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(append([]float32(nil), data...)))
					return G.NewMatrix(g, tensor.Float32, G.WithShape(rows, cols), G.WithName(name), G.WithValue(v))
				}
				gn, cn := mat("gates", gates, b, 4*h), mat("cprev", cprev, b, h)
				uhn, ucn := mat("uh", uh, b, h), mat("uc", uc, b, h)
				var hn, c *G.Node
				if useGPU {
					out, err := G.ApplyOp(NewLSTMGates(d), gn, cn)
					if err != nil {
						t.Fatal(err)
					}
					hn, c = G.Must(G.Slice(out, nil, G.S(0, h))), G.Must(G.Slice(out, nil, G.S(h, 2*h)))
				} else {
					part := func(k int) *G.Node { return G.Must(G.Slice(gn, nil, G.S(k*h, (k+1)*h))) }
					i, f := G.Must(G.Sigmoid(part(0))), G.Must(G.Sigmoid(part(1)))
					gg, o := G.Must(G.Tanh(part(2))), G.Must(G.Sigmoid(part(3)))
					c = G.Must(G.Add(G.Must(G.HadamardProd(f, cn)), G.Must(G.HadamardProd(i, gg))))
					hn = G.Must(G.HadamardProd(o, G.Must(G.Tanh(c))))
				}
				loss := G.Must(G.Add(G.Must(G.Sum(G.Must(G.HadamardProd(hn, uhn)))), G.Must(G.Sum(G.Must(G.HadamardProd(c, ucn))))))
				grads, err := G.Grad(loss, gn, cn)
				if err != nil {
					t.Fatal(err)
				}
				vm := G.NewTapeMachine(g)
				defer vm.Close()
				if err := vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				flat := func(n *G.Node) []float32 {
					v := tensor.Materialize(n.Value().(tensor.Tensor)) // slices are views
					return append([]float32(nil), v.Data().([]float32)...)
				}
				return [][]float32{flat(hn), flat(c), flat(grads[0]), flat(grads[1])}
			}
			got, want := run(true), run(false)
			for i, what := range []string{"h", "c", "dgates", "dcprev"} {
				assertClose(t, what, got[i], want[i])
			}
		})
	}
}
