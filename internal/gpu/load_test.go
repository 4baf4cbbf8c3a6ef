package gpu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/internal/gpu/gpuemu"
)

func emptyDirConfig(t *testing.T) LoadConfig {
	return LoadConfig{Dirs: []string{t.TempDir()}, NoSystemSearch: true}
}

func TestOpenLibraryMissingNamesEveryTry(t *testing.T) {
	cfg := emptyDirConfig(t)
	_, err := Open(Config{Load: cfg})
	var le *LibraryError
	if !errors.As(err, &le) || !errors.Is(err, ErrLibraryMissing) {
		t.Fatalf("Open from an empty directory: %v, want a LibraryError", err)
	}
	want := []string{filepath.Join(cfg.Dirs[0], "libcuda.so.1"), filepath.Join(cfg.Dirs[0], "libcuda.so")}
	if le.Library != "libcuda" || !slices.Equal(le.Tried, want) {
		t.Fatalf("LibraryError %+v, want libcuda tried as %v", le, want)
	}
	if !strings.Contains(err.Error(), "libcuda.so.1") || le.Last == "" {
		t.Fatalf("message %q should name the tries and the loader's reason", err)
	}
}

func TestLoadConfigCandidates(t *testing.T) {
	c := LoadConfig{Dirs: []string{"/a", "/b"}}
	got := c.candidates([]string{"x.so.1", "x.so"})
	want := []string{"/a/x.so.1", "/a/x.so", "/b/x.so.1", "/b/x.so", "x.so.1", "x.so"}
	if !slices.Equal(got, want) {
		t.Fatalf("candidates %v, want %v", got, want)
	}
	t.Setenv(LibraryPathEnv, "/opt/cuda/lib64::/usr/lib/wsl/lib")
	if d := DefaultLoadConfig().Dirs; !slices.Equal(d, []string{"/opt/cuda/lib64", "/usr/lib/wsl/lib"}) {
		t.Fatalf("DefaultLoadConfig dirs %v", d)
	}
}

func TestDiscoverWithoutLibrariesReportsReason(t *testing.T) {
	inv := DiscoverWith(DiscoverConfig{Load: emptyDirConfig(t)})
	if inv.Usable() != 0 || !errors.Is(inv.Err, ErrLibraryMissing) {
		t.Fatalf("inventory %+v, want 0 usable and ErrLibraryMissing", inv)
	}
	if !strings.Contains(inv.Reason, "libnvidia-ml") {
		t.Fatalf("reason %q should name libnvidia-ml", inv.Reason)
	}
}

func TestDiscoverFakeNVML(t *testing.T) {
	needCompilers(t)
	nvml := func(t *testing.T, defines ...string) LoadConfig {
		dir := t.TempDir()
		if err := gpuemu.BuildLibrary(dir, gpuemu.NVML, defines...); err != nil {
			t.Fatal(err)
		}
		return LoadConfig{Dirs: []string{dir}, NoSystemSearch: true}
	}
	t.Run("devices", func(t *testing.T) {
		inv := DiscoverWith(DiscoverConfig{Load: nvml(t), SkipComputeLibraries: true})
		if inv.Err != nil || inv.Usable() != 2 {
			t.Fatalf("inventory %+v, want 2 usable", inv)
		}
		d := inv.Devices[1]
		if d.Name != "Fake GPU 1" || d.UUID != "GPU-fake-1" || d.MemoryTotalBytes != 32<<30 || d.ComputeCapability != "9.0" {
			t.Fatalf("device 1 = %+v", d)
		}
		if inv.DriverVersion != "580.65.06" || inv.CUDADriverVersion != 13000 {
			t.Fatalf("driver %q cuda %d", inv.DriverVersion, inv.CUDADriverVersion)
		}
	})
	t.Run("compute libraries missing", func(t *testing.T) {
		inv := DiscoverWith(DiscoverConfig{Load: nvml(t)})
		if inv.Usable() != 0 || len(inv.Devices) != 2 || !errors.Is(inv.Err, ErrLibraryMissing) || !strings.Contains(inv.Reason, "libcuda") {
			t.Fatalf("inventory %+v, want the 2 devices listed, 0 usable, libcuda missing", inv)
		}
	})
	t.Run("no device", func(t *testing.T) {
		inv := DiscoverWith(DiscoverConfig{Load: nvml(t, "NVML_COUNT=0"), SkipComputeLibraries: true})
		if inv.Usable() != 0 || !errors.Is(inv.Err, ErrNoDevice) {
			t.Fatalf("inventory %+v, want ErrNoDevice", inv)
		}
	})
	t.Run("driver not loaded", func(t *testing.T) {
		inv := DiscoverWith(DiscoverConfig{Load: nvml(t, "NVML_INIT_RESULT=9"), SkipComputeLibraries: true})
		var ne *NVMLError
		if !errors.As(inv.Err, &ne) || ne.Op != "nvmlInit_v2" || !errors.Is(inv.Err, ErrNoDevice) {
			t.Fatalf("inventory %+v, want nvmlInit_v2 failing with ErrNoDevice", inv)
		}
		if !strings.Contains(inv.Reason, "Driver Not Loaded") {
			t.Fatalf("reason %q should carry NVML's message", inv.Reason)
		}
	})
	t.Run("driver too old", func(t *testing.T) {
		inv := DiscoverWith(DiscoverConfig{Load: nvml(t, "NVML_CUDA_VERSION=11080"), SkipComputeLibraries: true})
		var de *DriverTooOldError
		if !errors.As(inv.Err, &de) || de.Have != 11080 || de.Need != MinCUDADriverVersion || inv.Usable() != 0 {
			t.Fatalf("inventory %+v, want DriverTooOldError 11080 < %d", inv, MinCUDADriverVersion)
		}
		if !strings.Contains(inv.Reason, "CUDA 11.8") {
			t.Fatalf("reason %q", inv.Reason)
		}
	})
	t.Run("symbol missing", func(t *testing.T) {
		inv := DiscoverWith(DiscoverConfig{Load: nvml(t, "OMIT_MEMINFO"), SkipComputeLibraries: true})
		var se *SymbolError
		if !errors.As(inv.Err, &se) || se.Symbol != "nvmlDeviceGetMemoryInfo" || !errors.Is(inv.Err, ErrSymbolMissing) {
			t.Fatalf("inventory %+v, want nvmlDeviceGetMemoryInfo missing", inv)
		}
	})
}

func TestOpenErrorPaths(t *testing.T) {
	needCompilers(t)
	t.Run("symbol missing", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "empty.c")
		if err := os.WriteFile(src, []byte("int cohort_not_cuda = 1;\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", filepath.Join(dir, "libcuda.so.1"), src).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, out)
		}
		_, err := Open(Config{Load: LoadConfig{Dirs: []string{dir}, NoSystemSearch: true}})
		var se *SymbolError
		if !errors.As(err, &se) || se.Symbol != "cuInit" || se.Library != filepath.Join(dir, "libcuda.so.1") {
			t.Fatalf("Open over a library without cuInit: %v, want SymbolError for cuInit", err)
		}
	})
	t.Run("cublas missing", func(t *testing.T) {
		cfg := fakeStack(t, nil)
		if err := os.Remove(filepath.Join(cfg.Dirs[0], "libcublas.so.13")); err != nil {
			t.Fatal(err)
		}
		_, err := Open(Config{Load: cfg})
		var le *LibraryError
		if !errors.As(err, &le) || le.Library != "libcublas" || len(le.Tried) != 3 {
			t.Fatalf("Open without cuBLAS: %v, want LibraryError naming 3 tries", err)
		}
	})
	t.Run("no device", func(t *testing.T) {
		_, err := Open(Config{Load: fakeStack(t, map[string][]string{"cuda": {"INIT_RESULT=100"}})})
		var ce *CUDAError
		if !errors.Is(err, ErrNoDevice) || !errors.As(err, &ce) || ce.Name != "CUDA_ERROR_NO_DEVICE" || ce.Op != "cuInit" {
			t.Fatalf("Open with cuInit failing: %v, want cuInit CUDA_ERROR_NO_DEVICE", err)
		}
	})
	t.Run("ordinal out of range", func(t *testing.T) {
		_, err := Open(Config{Load: fakeStack(t, nil), Ordinal: 3})
		if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "device 3 requested, the driver sees 1") {
			t.Fatalf("Open(ordinal 3): %v", err)
		}
	})
	t.Run("driver too old", func(t *testing.T) {
		_, err := Open(Config{Load: fakeStack(t, map[string][]string{"cuda": {"DRIVER_VERSION=12040"}})})
		var de *DriverTooOldError
		if !errors.As(err, &de) || de.Have != 12040 || de.Need != 13000 || !errors.Is(err, ErrDriverTooOld) {
			t.Fatalf("Open with a CUDA 12.4 driver and NVRTC 13: %v, want DriverTooOldError", err)
		}
	})
	t.Run("older libraries picked for an older driver", func(t *testing.T) {
		cfg := fakeStack(t, map[string][]string{"cuda": {"DRIVER_VERSION=12080"}})
		dir := cfg.Dirs[0]
		// The fake cuBLAS does not care which soname it has.
		b, err := os.ReadFile(filepath.Join(dir, gpuemu.Cublas))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "libcublas.so.12"), b, 0o755); err != nil {
			t.Fatal(err)
		}
		sub := t.TempDir()
		if err := gpuemu.BuildLibrary(sub, gpuemu.NVRTC, "NVRTC_MAJOR=12"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(sub, gpuemu.NVRTC), filepath.Join(dir, "libnvrtc.so.12")); err != nil {
			t.Fatal(err)
		}
		d, err := Open(Config{Load: cfg})
		if err != nil {
			t.Fatalf("Open with a CUDA 12.8 driver and both 12 and 13 libraries: %v", err)
		}
		defer d.Close()
		libs := d.Props().Libraries
		if !strings.HasSuffix(libs[1], "libcublas.so.12") || !strings.HasSuffix(libs[2], "libnvrtc.so.12") {
			t.Fatalf("libraries %v, want the .so.12 ones", libs)
		}
	})
	t.Run("compile error carries the log", func(t *testing.T) {
		_, err := Open(Config{Load: fakeStack(t, map[string][]string{"nvrtc": {"COMPILE_RESULT=6"}})})
		var ne *NVRTCError
		if !errors.As(err, &ne) || !strings.Contains(ne.Log, "fake compile error") || ne.Op != "nvrtcCompileProgram(compute_80)" {
			t.Fatalf("Open with NVRTC failing: %v, want NVRTCError with the log", err)
		}
	})
}

func TestChooseTarget(t *testing.T) {
	for _, tc := range []struct {
		cc        int
		supported []int
		arch      string
		cubin     bool
	}{
		{90, []int{75, 80, 90}, "sm_90", true},
		{86, []int{75, 80, 90}, "compute_80", false},
		{120, []int{75, 80, 90, 100}, "compute_100", false},
	} {
		arch, cubin, err := chooseTarget(tc.cc, tc.supported)
		if err != nil || arch != tc.arch || cubin != tc.cubin {
			t.Errorf("chooseTarget(%d, %v) = %q %v %v, want %q %v", tc.cc, tc.supported, arch, cubin, err, tc.arch, tc.cubin)
		}
	}
	if _, _, err := chooseTarget(60, []int{75, 80}); err == nil || !strings.Contains(err.Error(), "6.0") {
		t.Errorf("chooseTarget(60) = %v, want an error naming 6.0", err)
	}
}

func TestEmulatedDeviceLifecycle(t *testing.T) {
	cfg := fakeStack(t, nil)
	d, err := Open(Config{Load: cfg})
	if err != nil {
		t.Fatal(err)
	}
	var liveAllocs func() int64
	if err := d.drv.lib.bind([]sym{{"fake_live_allocs", &liveAllocs}}); err != nil {
		t.Fatal(err)
	}
	p := d.Props()
	if p.Name != "Emulated GPU 0" || p.Major != 8 || p.Minor != 6 || p.KernelTarget != "compute_80" ||
		p.DriverVersion != 13000 || p.NVRTCVersion != 13000 || p.CublasVersion != 130000 {
		t.Fatalf("props %+v", p)
	}
	b, err := d.Upload([]float32{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	v := b.Slice(1, 2)
	if err := v.Write([]float32{20, 30}); err != nil {
		t.Fatal(err)
	}
	got, err := b.ReadAll()
	if err != nil || !slices.Equal(got, []float32{1, 20, 30, 4}) {
		t.Fatalf("after writing a view: %v %v", got, err)
	}
	if err := b.Write([]float32{1}); err == nil {
		t.Fatal("Write of the wrong length succeeded")
	}
	if err := v.Free(); err != nil {
		t.Fatal(err)
	}
	if err := b.Free(); err != nil {
		t.Fatal(err)
	}
	m, err := NewMLP(d, []int{3, 4, 2}, Tanh, 5)
	if err != nil {
		t.Fatal(err)
	}
	if n := liveAllocs(); n != 16 {
		t.Fatalf("a 2-layer MLP holds %d device allocations, want 16 (3 activations, 5 per layer, 3 for the loss)", n)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := liveAllocs(); n != 0 {
		t.Fatalf("%d device allocations left after freeing everything", n)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Alloc(4); !errors.Is(err, ErrClosed) {
		t.Fatalf("Alloc after Close: %v, want ErrClosed", err)
	}
}

// TestSampleUsageFakeNVML reads GPU memory in use through the fake NVML: two devices
// of 16 and 32 GiB, half of each used; the fake reports no utilization.
func TestSampleUsageFakeNVML(t *testing.T) {
	needCompilers(t)
	dir := t.TempDir()
	if err := gpuemu.BuildLibrary(dir, gpuemu.NVML); err != nil {
		t.Fatal(err)
	}
	u, err := SampleUsage(LoadConfig{Dirs: []string{dir}, NoSystemSearch: true})
	if err != nil || u.Devices != 2 || u.MemoryUsedBytes != 24<<30 || u.Utilization >= 0 {
		t.Fatalf("SampleUsage = %+v, %v; want 2 devices, 24 GiB used, no utilization", u, err)
	}
	if _, err := SampleUsage(LoadConfig{Dirs: []string{t.TempDir()}, NoSystemSearch: true}); !errors.Is(err, ErrLibraryMissing) {
		t.Fatalf("without NVML: %v, want ErrLibraryMissing", err)
	}
}
