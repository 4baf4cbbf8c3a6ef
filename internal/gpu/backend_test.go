package gpu

import (
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
)

// RequireGPUEnv set to 1 turns the GPU tests' skips into failures (scripts/gpu-check.sh).
const RequireGPUEnv = "COHORT_REQUIRE_GPU"

var gpuDev struct {
	once sync.Once
	dev  *Device
	err  error
}

// realDevice opens GPU 0 once; without one the test is skipped with the reason, or
// fails under COHORT_REQUIRE_GPU=1.
func realDevice(t *testing.T) *Device {
	t.Helper()
	gpuDev.once.Do(func() { gpuDev.dev, gpuDev.err = Open(DefaultConfig()) })
	if gpuDev.err != nil {
		if os.Getenv(RequireGPUEnv) == "1" {
			t.Fatalf("%s=1 but no usable GPU: %v", RequireGPUEnv, gpuDev.err)
		}
		if isUnavailable(gpuDev.err) {
			t.Skipf("skipped: no usable GPU here: %v", gpuDev.err)
		}
		t.Fatalf("open GPU: %v", gpuDev.err)
	}
	return gpuDev.dev
}

// Tolerances, |got-want| <= abs + rel*|want|. Elementwise kernels differ from the CPU
// references only in float32 expf/tanhf rounding; GEMM-based ops also in summation
// order (cuBLAS in its default FP32 math mode, no TF32).
const (
	tolAbsElem = 1e-5
	tolRelElem = 1e-4
	tolAbsGemm = 1e-4
	tolRelGemm = 1e-3
)

// forEachBackend runs f on the emulated device and on the real GPU.
func forEachBackend(t *testing.T, f func(t *testing.T, d *Device)) {
	t.Run("emulated", func(t *testing.T) { f(t, emulatedDevice(t)) })
	t.Run("gpu", func(t *testing.T) { f(t, realDevice(t)) })
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func upload(t *testing.T, d *Device, host []float32) *Buffer {
	t.Helper()
	b, err := d.Upload(host)
	if err != nil {
		t.Fatalf("upload %d: %v", len(host), err)
	}
	t.Cleanup(func() {
		if err := b.Free(); err != nil {
			t.Errorf("free: %v", err)
		}
	})
	return b
}

func alloc(t *testing.T, d *Device, n int) *Buffer {
	t.Helper()
	b, err := d.Alloc(n)
	if err != nil {
		t.Fatalf("alloc %d: %v", n, err)
	}
	t.Cleanup(func() {
		if err := b.Free(); err != nil {
			t.Errorf("free: %v", err)
		}
	})
	return b
}

func read(t *testing.T, b *Buffer) []float32 {
	t.Helper()
	out, err := b.ReadAll()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func assertClose(t *testing.T, what string, got, want []float32, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst, at := 0.0, -1
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(float64(got[i])) || d > abs+rel*math.Abs(float64(want[i])) {
			if d > worst || at < 0 {
				worst, at = d, i
			}
		}
	}
	if at >= 0 {
		t.Fatalf("%s: element %d is %g, want %g (|diff| %g > %g + %g*|want|)", what, at, got[at], want[at], worst, abs, rel)
	}
}
