package serve

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cohort-dev/cohort/export"
)

// TestEngineMatchesReference runs the kernels engine of every kind on batches that
// fall in every bucket (padded), and past the largest (chunked), from concurrent
// goroutines, and compares each value with modeldef's float64 reference forward pass
// within 1e-5.
func TestEngineMatchesReference(t *testing.T) {
	archs := map[string]export.Architecture{
		"mlp": {Kind: export.KindMLP, Task: export.TaskBinary, Inputs: 11, Outputs: 1, Activation: export.ActReLU, Hidden: []int{16, 8}},
		"cnn": {Kind: export.KindCNN, Task: export.TaskMulticlass, Inputs: 2 * 9 * 8, Outputs: 4, Activation: export.ActReLU,
			Channels: 2, Height: 9, Width: 8, Pool: 2, Dense: []int{7}, Conv: []export.Conv{{Filters: 3, Kernel: 3, Stride: 1, Padding: 1}, {Filters: 4, Kernel: 2, Stride: 1}}},
		"lstm": {Kind: export.KindLSTM, Task: export.TaskRegression, Inputs: 15, Outputs: 1, Hidden: []int{6, 5}, Dense: []int{3},
			Steps: 5, Features: 3, LabelStd: 1},
	}
	for name, a := range archs {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			w := export.Weights{}
			for _, ts := range a.Tensors() {
				size := 1
				for _, d := range ts.Shape {
					size *= d
				}
				v := make([]float32, size)
				for i := range v {
					v[i] = float32(rng.NormFloat64() * 0.4)
				}
				w[ts.Name] = v
			}
			e, err := newEngine(a, w)
			if err != nil {
				t.Fatal(err)
			}
			sizes := []int{1, 3, 4, 5, 17, 64, 65, 300, 513}
			var wg sync.WaitGroup
			errs := make([]string, len(sizes))
			for si, n := range sizes {
				x := make([]float32, n*a.Inputs)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					got, want := make([]float32, n*a.Outputs), make([]float32, n*a.Outputs)
					if err := e.predict(x, n, got); err != nil {
						errs[si] = err.Error()
						return
					}
					if err := a.Predict(w, x, n, want); err != nil {
						errs[si] = err.Error()
						return
					}
					for i := range want {
						if d := math.Abs(float64(got[i] - want[i])); !(d <= 1e-5*math.Max(1, math.Abs(float64(want[i])))) {
							errs[si] = "value differs"
							t.Errorf("%d rows: value %d = %v, reference %v", n, i, got[i], want[i])
							return
						}
					}
				}()
			}
			wg.Wait()
			for i, e := range errs {
				if e != "" {
					t.Errorf("%d rows: %s", sizes[i], e)
				}
			}
		})
	}
}
