package gpu

import (
	"os"
	"sync"
	"testing"

	"github.com/cohort-dev/cohort/internal/gpu/gpuemu"
)

// The gpuemu fakes stand in for the NVIDIA libraries so that the loader, the error
// paths and the purego plumbing (argument passing, kernel parameter packing, the
// row-major GEMM mapping onto column-major cuBLAS) are tested on every machine with a C
// compiler. The emulated device also runs the real CUDA C kernel source, compiled as
// C++ for the CPU, so each op is checked against its CPU reference without a GPU.

// needCompilers skips t when gcc or g++ is missing.
func needCompilers(t *testing.T) {
	t.Helper()
	if err := gpuemu.Available(); err != nil {
		t.Skipf("skipped: %v", err)
	}
}

// fakeStack builds a fresh fake stack for one test and returns where to load it from.
func fakeStack(t *testing.T, defines map[string][]string) LoadConfig {
	t.Helper()
	needCompilers(t)
	dir := t.TempDir()
	if err := gpuemu.BuildStack(dir, kernelSource, kernelNames, defines); err != nil {
		t.Fatal(err)
	}
	return LoadConfig{Dirs: []string{dir}, NoSystemSearch: true}
}

var emulated struct {
	once sync.Once
	dir  string
	dev  *Device
	err  error
}

// emulatedDevice is one Device over the fakes, shared by the op tests.
func emulatedDevice(t *testing.T) *Device {
	t.Helper()
	needCompilers(t)
	emulated.once.Do(func() {
		emulated.dir, emulated.err = os.MkdirTemp("", "cohort-gpu-emu-")
		if emulated.err != nil {
			return
		}
		if emulated.err = gpuemu.BuildStack(emulated.dir, kernelSource, kernelNames, nil); emulated.err != nil {
			return
		}
		emulated.dev, emulated.err = Open(Config{Load: LoadConfig{Dirs: []string{emulated.dir}, NoSystemSearch: true}})
	})
	if emulated.err != nil {
		t.Fatalf("emulated device: %v", emulated.err)
	}
	return emulated.dev
}

func TestMain(m *testing.M) {
	code := m.Run()
	if emulated.dev != nil {
		emulated.dev.Close()
	}
	if emulated.dir != "" {
		os.RemoveAll(emulated.dir)
	}
	if gpuDev.dev != nil {
		gpuDev.dev.Close()
	}
	os.Exit(code)
}
