package gpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

func mlpParams(r *rand.Rand, sizes []int) [][]float32 {
	var p [][]float32
	for l := range len(sizes) - 1 {
		w := randSlice(r, sizes[l]*sizes[l+1])
		scale := float32(1 / math.Sqrt(float64(sizes[l])))
		for i := range w {
			w[i] *= scale
		}
		p = append(p, w, randSlice(r, sizes[l+1]))
	}
	return p
}

func TestCPUMLPStepMatchesFiniteDifferences(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	sizes, rows := []int{4, 5, 3}, 6
	params, x, tg := mlpParams(r, sizes), randSlice(r, rows*4), oneHot(r, rows, 3)
	for _, act := range []Activation{Sigmoid, Tanh} {
		_, grads := CPUMLPStep(sizes, act, params, x, tg, rows)
		for i := range params {
			checkGrad(t, act.String()+" param", params[i], grads[i], func() float64 {
				l, _ := CPUMLPStep(sizes, act, params, x, tg, rows)
				return float64(l)
			})
		}
	}
}

// TestMLPOnDeviceMatchesCPU trains three SGD steps with the parameters resident on the
// device and checks loss, gradients and parameters against the CPU after every step.
func TestMLPOnDeviceMatchesCPU(t *testing.T) {
	forEachBackend(t, func(t *testing.T, d *Device) {
		r := rand.New(rand.NewPCG(33, 34))
		sizes, maxBatch := []int{12, 16, 8, 4}, 10
		params := mlpParams(r, sizes)
		m, err := NewMLP(d, sizes, ReLU, maxBatch)
		must(t, err)
		t.Cleanup(func() { must(t, m.Close()) })
		must(t, m.SetParams(params))
		const lr = 0.1
		for _, rows := range []int{10, 7, 10} {
			x, tg := randSlice(r, rows*sizes[0]), oneHot(r, rows, sizes[3])
			wantLoss, wantGrads := CPUMLPStep(sizes, ReLU, params, x, tg, rows)
			loss, err := m.Step(x, tg, rows)
			must(t, err)
			assertClose(t, "loss", []float32{loss}, []float32{wantLoss}, tolAbsGemm, tolRelGemm)
			grads, err := m.Grads()
			must(t, err)
			for i := range grads {
				assertClose(t, "grad", grads[i], wantGrads[i], tolAbsGemm, tolRelGemm)
			}
			must(t, m.SGD(lr))
			for i := range params {
				for j := range params[i] {
					params[i][j] -= lr * wantGrads[i][j]
				}
			}
			got, err := m.Params()
			must(t, err)
			for i := range got {
				assertClose(t, "params after step", got[i], params[i], tolAbsGemm, tolRelGemm)
			}
		}
		if _, err := m.Step(make([]float32, 11*12), make([]float32, 11*4), 11); err == nil {
			t.Fatal("Step with more rows than maxBatch succeeded")
		}
	})
}
