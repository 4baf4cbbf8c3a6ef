package gorgoniaops

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/cohort-dev/cohort/internal/gpu"
	"github.com/cohort-dev/cohort/internal/gpu/gpuemu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

var devices struct {
	emuOnce, gpuOnce sync.Once
	emuDir           string
	emu, gpu         *gpu.Device
	emuErr, gpuErr   error
}

func emulated(t *testing.T) *gpu.Device {
	t.Helper()
	if err := gpuemu.Available(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	devices.emuOnce.Do(func() {
		devices.emuDir, devices.emuErr = os.MkdirTemp("", "cohort-gorgoniaops-emu-")
		if devices.emuErr != nil {
			return
		}
		if devices.emuErr = gpuemu.BuildStack(devices.emuDir, gpu.KernelSource(), gpu.KernelNames(), nil); devices.emuErr != nil {
			return
		}
		devices.emu, devices.emuErr = gpu.Open(gpu.Config{Load: gpu.LoadConfig{Dirs: []string{devices.emuDir}, NoSystemSearch: true}})
	})
	if devices.emuErr != nil {
		t.Fatalf("emulated device: %v", devices.emuErr)
	}
	return devices.emu
}

func realGPU(t *testing.T) *gpu.Device {
	t.Helper()
	devices.gpuOnce.Do(func() { devices.gpu, devices.gpuErr = gpu.Open(gpu.DefaultConfig()) })
	if devices.gpuErr != nil {
		if os.Getenv("COHORT_REQUIRE_GPU") == "1" {
			t.Fatalf("COHORT_REQUIRE_GPU=1 but no usable GPU: %v", devices.gpuErr)
		}
		t.Skipf("skipped: no usable GPU here: %v", devices.gpuErr)
	}
	return devices.gpu
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []*gpu.Device{devices.emu, devices.gpu} {
		if d != nil {
			d.Close()
		}
	}
	if devices.emuDir != "" {
		os.RemoveAll(devices.emuDir)
	}
	os.Exit(code)
}

func randSlice(r *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64() * scale)
	}
	return s
}

// Tolerance of every comparison here: |got-want| <= tolAbs + tolRel*|want|.
const (
	tolAbs = 1e-4
	tolRel = 1e-3
)

func assertClose(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); math.IsNaN(d) || d > tolAbs+tolRel*math.Abs(float64(want[i])) {
			t.Fatalf("%s: element %d is %g, want %g", what, i, got[i], want[i])
		}
	}
}

// TestMLPGraphMatchesCPU builds a two-layer MLP in gorgonia from the GPU ops, lets
// gorgonia differentiate it, and compares the loss and every parameter gradient with
// gpu.CPUMLPStep, within 1e-4 + 1e-3·|want|.
func TestMLPGraphMatchesCPU(t *testing.T) {
	for _, backend := range []struct {
		name string
		dev  func(*testing.T) *gpu.Device
	}{{"emulated", emulated}, {"gpu", realGPU}} {
		t.Run(backend.name, func(t *testing.T) {
			d := backend.dev(t)
			r := rand.New(rand.NewPCG(41, 42))
			sizes, rows := []int{6, 8, 3}, 5
			params := [][]float32{
				randSlice(r, 6*8, 0.4), randSlice(r, 8, 0.1), randSlice(r, 8*3, 0.4), randSlice(r, 3, 0.1),
			}
			x := randSlice(r, rows*6, 1)
			targets := make([]float32, rows*3)
			for i := range rows {
				targets[i*3+r.IntN(3)] = 1
			}
			for _, act := range []gpu.Activation{gpu.ReLU, gpu.Tanh} {
				wantLoss, wantGrads := gpu.CPUMLPStep(sizes, act, params, x, targets, rows)

				g := G.NewGraph()
				mat := func(name string, data []float32, shape ...int) *G.Node {
					v := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float32(nil), data...)))
					if len(shape) == 1 {
						return G.NewVector(g, tensor.Float32, G.WithShape(shape...), G.WithName(name), G.WithValue(v))
					}
					return G.NewMatrix(g, tensor.Float32, G.WithShape(shape...), G.WithName(name), G.WithValue(v))
				}
				xn, yn := mat("x", x, rows, 6), mat("y", targets, rows, 3)
				w0, b0 := mat("w0", params[0], 6, 8), mat("b0", params[1], 8)
				w1, b1 := mat("w1", params[2], 8, 3), mat("b1", params[3], 3)
				apply := func(op G.Op, in ...*G.Node) *G.Node {
					n, err := G.ApplyOp(op, in...)
					if err != nil {
						t.Fatalf("%v: %v", op, err)
					}
					return n
				}
				h := apply(NewAct(d, act), apply(NewBiasAdd(d), apply(NewMatMul(d, false, false), xn, w0), b0))
				logits := apply(NewBiasAdd(d), apply(NewMatMul(d, false, false), h, w1), b1)
				loss := apply(NewSoftmaxCrossEntropy(d), logits, yn)
				grads, err := G.Grad(loss, w0, b0, w1, b1)
				if err != nil {
					t.Fatalf("Grad: %v", err)
				}
				vm := G.NewTapeMachine(g)
				if err := vm.RunAll(); err != nil {
					t.Fatalf("run: %v", err)
				}
				vm.Close()
				gotLoss := float32(*loss.Value().(*G.F32))
				assertClose(t, act.String()+" loss", []float32{gotLoss}, []float32{wantLoss})
				for i, gn := range grads {
					got := gn.Value().Data().([]float32)
					assertClose(t, fmt.Sprintf("%v grad %d", act, i), got, wantGrads[i])
				}
			}
		})
	}
}

// TestMatMulTransposedGradients checks SymDiff's four transpose cases on the emulated
// device against gorgonia's own CPU Mul and gradients.
func TestMatMulTransposedGradients(t *testing.T) {
	d := emulated(t)
	r := rand.New(rand.NewPCG(43, 44))
	for _, tc := range []struct{ ta, tb bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		m, n, k := 3, 4, 5
		aShape, bShape := []int{m, k}, []int{k, n}
		if tc.ta {
			aShape = []int{k, m}
		}
		if tc.tb {
			bShape = []int{n, k}
		}
		a, b, up := randSlice(r, m*k, 1), randSlice(r, k*n, 1), randSlice(r, m*n, 1)
		run := func(useGPU bool) ([]float32, []float32, []float32) {
			g := G.NewGraph()
			an := G.NewMatrix(g, tensor.Float32, G.WithShape(aShape...), G.WithName("a"), G.WithValue(tensor.New(tensor.WithShape(aShape...), tensor.WithBacking(append([]float32(nil), a...)))))
			bn := G.NewMatrix(g, tensor.Float32, G.WithShape(bShape...), G.WithName("b"), G.WithValue(tensor.New(tensor.WithShape(bShape...), tensor.WithBacking(append([]float32(nil), b...)))))
			un := G.NewMatrix(g, tensor.Float32, G.WithShape(m, n), G.WithName("up"), G.WithValue(tensor.New(tensor.WithShape(m, n), tensor.WithBacking(append([]float32(nil), up...)))))
			var c *G.Node
			var err error
			if useGPU {
				c, err = G.ApplyOp(NewMatMul(d, tc.ta, tc.tb), an, bn)
			} else {
				aa, bb := an, bn
				if tc.ta {
					aa = G.Must(G.Transpose(an))
				}
				if tc.tb {
					bb = G.Must(G.Transpose(bn))
				}
				c, err = G.Mul(aa, bb)
			}
			if err != nil {
				t.Fatal(err)
			}
			loss := G.Must(G.Sum(G.Must(G.HadamardProd(c, un))))
			grads, err := G.Grad(loss, an, bn)
			if err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(g)
			defer vm.Close()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			return c.Value().Data().([]float32), grads[0].Value().Data().([]float32), grads[1].Value().Data().([]float32)
		}
		gc, gda, gdb := run(true)
		wc, wda, wdb := run(false)
		for _, p := range []struct {
			what      string
			got, want []float32
		}{{"C", gc, wc}, {"dA", gda, wda}, {"dB", gdb, wdb}} {
			assertClose(t, fmt.Sprintf("transA=%v transB=%v %s", tc.ta, tc.tb, p.what), p.got, p.want)
		}
	}
}
