package gorgoniaops

import (
	"math/rand/v2"
	"testing"

	"github.com/cohort-dev/cohort/internal/gpu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestConvPoolGraphMatchesGorgonia builds conv → max-pool with the GPU ops and with
// gorgonia's own CPU Conv2d and MaxPool2D, differentiates both, and compares outputs and
// the gradients of x and w within 1e-4 + 1e-3·|want|.
func TestConvPoolGraphMatchesGorgonia(t *testing.T) {
	for _, backend := range []struct {
		name string
		dev  func(*testing.T) *gpu.Device
	}{{"emulated", emulated}, {"gpu", realGPU}} {
		t.Run(backend.name, func(t *testing.T) {
			d := backend.dev(t)
			r := rand.New(rand.NewPCG(51, 52))
			const n, c, h, w, f, k, stride, pad, pool = 2, 3, 9, 8, 4, 3, 1, 1, 2
			xs, ws := []int{n, c, h, w}, []int{f, c, k, k}
			x, wt := randSlice(r, n*c*h*w, 1), randSlice(r, f*c*k*k, 0.5)
			oh, ow := (h+2*pad-k)/stride+1, (w+2*pad-k)/stride+1
			ps := []int{n, f, (oh-pool)/pool + 1, (ow-pool)/pool + 1}
			up := randSlice(r, ps[0]*ps[1]*ps[2]*ps[3], 1)
			run := func(useGPU bool) [][]float32 {
				g := G.NewGraph()
				node := func(name string, data []float32, shape []int) *G.Node {
					v := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float32(nil), data...)))
					return G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(v))
				}
				xn, wn, un := node("x", x, xs), node("w", wt, ws), node("up", up, ps)
				var y, p *G.Node
				var err error
				if useGPU {
					if y, err = G.ApplyOp(NewConv2D(d, stride, pad), xn, wn); err == nil {
						p, err = G.ApplyOp(NewMaxPool2D(d, pool, pool), y)
					}
				} else {
					if y, err = G.Conv2d(xn, wn, tensor.Shape{k, k}, []int{pad, pad}, []int{stride, stride}, []int{1, 1}); err == nil {
						p, err = G.MaxPool2D(y, tensor.Shape{pool, pool}, []int{0, 0}, []int{pool, pool})
					}
				}
				if err != nil {
					t.Fatal(err)
				}
				loss := G.Must(G.Sum(G.Must(G.HadamardProd(p, un))))
				grads, err := G.Grad(loss, xn, wn)
				if err != nil {
					t.Fatal(err)
				}
				vm := G.NewTapeMachine(g)
				defer vm.Close()
				if err := vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				return [][]float32{p.Value().Data().([]float32), grads[0].Value().Data().([]float32), grads[1].Value().Data().([]float32)}
			}
			got, want := run(true), run(false)
			for i, what := range []string{"pooled output", "dx", "dw"} {
				assertClose(t, what, got[i], want[i])
			}
		})
	}
}
