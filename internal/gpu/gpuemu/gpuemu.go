// Package gpuemu builds stand-ins for the NVIDIA libraries with the system's C
// compiler, for tests on machines without a GPU: libnvidia-ml (a fixed set of fake
// GPUs), and libcuda, libcublas and libnvrtc that together emulate a device whose
// memory is host memory, whose SGEMM is a naive column-major loop, and whose kernels are
// the real CUDA C source compiled as C++ for the CPU and run by cuLaunchKernel with one
// "thread" walking each grid-stride loop. Behaviour is chosen with -D defines; see the
// sources in fake/.
//
// It exercises everything between Go and the C ABI (purego argument passing, kernel
// parameter packing, the row-major to column-major GEMM mapping, error codes), not the
// GPU itself.
package gpuemu

import (
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed fake/*.c fake/*.h
var sources embed.FS

// Sonames the fakes are built under.
const (
	NVML   = "libnvidia-ml.so.1"
	CUDA   = "libcuda.so.1"
	Cublas = "libcublas.so.13"
	NVRTC  = "libnvrtc.so.13"
)

var srcOf = map[string]string{NVML: "nvml.c", CUDA: "cuda.c", Cublas: "cublas.c", NVRTC: "nvrtc.c"}

// Available reports why the fakes cannot be built here (gcc or g++ missing), or nil.
func Available() error {
	for _, c := range []string{"gcc", "g++"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("gpuemu: %s not found, so the fake NVIDIA libraries cannot be built: %w", c, err)
		}
	}
	return nil
}

func run(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("gpuemu: %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// writeSources copies the embedded sources into dir/src and returns that directory.
func writeSources(dir string) (string, error) {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	entries, err := sources.ReadDir("fake")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		b, err := sources.ReadFile("fake/" + e.Name())
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(src, e.Name()), b, 0o644); err != nil {
			return "", err
		}
	}
	return src, nil
}

// BuildLibrary compiles the fake for soname (NVML, CUDA, Cublas or NVRTC) into
// dir/soname with the given -D defines (for CUDA, EMU_PATH must name a kernel library
// built by BuildStack for kernels to run).
func BuildLibrary(dir, soname string, defines ...string) error {
	name, ok := srcOf[soname]
	if !ok {
		return fmt.Errorf("gpuemu: no fake for %q", soname)
	}
	src, err := writeSources(dir)
	if err != nil {
		return err
	}
	args := []string{"gcc", "-shared", "-fPIC", "-O1", "-o", filepath.Join(dir, soname)}
	for _, d := range defines {
		args = append(args, "-D"+d)
	}
	return run(append(args, filepath.Join(src, name), "-ldl")...)
}

// BuildStack builds the emulated kernels (kernelSource with entry points kernelNames)
// and the libcuda, libcublas and libnvrtc fakes into dir. defines["cuda"], ["cublas"]
// and ["nvrtc"] are extra -D defines for each.
func BuildStack(dir, kernelSource string, kernelNames []string, defines map[string][]string) error {
	src, err := writeSources(dir)
	if err != nil {
		return err
	}
	var cpp strings.Builder
	cpp.WriteString("#include \"emu_prelude.h\"\n" + kernelSource + "\n#include \"emu_wrappers.h\"\n")
	for _, n := range kernelNames {
		fmt.Fprintf(&cpp, "EMU(%s)\n", n)
	}
	cppPath := filepath.Join(src, "emu.cpp")
	if err := os.WriteFile(cppPath, []byte(cpp.String()), 0o644); err != nil {
		return err
	}
	emu := filepath.Join(dir, "libemu.so")
	if err := run("g++", "-std=c++17", "-shared", "-fPIC", "-O2", "-Wall", "-Werror",
		"-Wno-unused-function", "-Wno-unused-variable", "-I", src, "-o", emu, cppPath); err != nil {
		return err
	}
	if err := BuildLibrary(dir, CUDA, append([]string{fmt.Sprintf("EMU_PATH=%q", emu)}, defines["cuda"]...)...); err != nil {
		return err
	}
	if err := BuildLibrary(dir, Cublas, defines["cublas"]...); err != nil {
		return err
	}
	return BuildLibrary(dir, NVRTC, defines["nvrtc"]...)
}
