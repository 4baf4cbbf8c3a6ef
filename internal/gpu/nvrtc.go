package gpu

import (
	"fmt"
	"runtime"
	"slices"
	"unsafe"
)

const nvrtcErrorCompilation = 6

// chooseTarget picks what NVRTC should generate for a device of compute capability cc
// (major*10+minor) given the architectures it supports: a CUBIN for the exact sm_ when
// NVRTC knows it, else PTX for the newest older compute_ that the driver JIT-compiles.
func chooseTarget(cc int, supported []int) (arch string, cubin bool, err error) {
	if slices.Contains(supported, cc) {
		return fmt.Sprintf("sm_%d", cc), true, nil
	}
	best := 0
	for _, a := range supported {
		if a <= cc && a > best {
			best = a
		}
	}
	if best == 0 {
		return "", false, fmt.Errorf("gpu: compute capability %d.%d is older than every architecture this NVRTC supports (%v)", cc/10, cc%10, supported)
	}
	return fmt.Sprintf("compute_%d", best), false, nil
}

// compileKernels compiles src for a device of compute capability cc and returns the
// image for cuModuleLoadData and the target it was built for.
func compileKernels(r *nvrtcAPI, src, name string, cc int) ([]byte, string, error) {
	var n int32
	if err := r.check("nvrtcGetNumSupportedArchs", r.GetNumArchs(&n)); err != nil {
		return nil, "", err
	}
	archs := make([]int32, max(n, 1))
	if err := r.check("nvrtcGetSupportedArchs", r.GetArchs(&archs[0])); err != nil {
		return nil, "", err
	}
	supported := make([]int, n)
	for i := range supported {
		supported[i] = int(archs[i])
	}
	arch, cubin, err := chooseTarget(cc, supported)
	if err != nil {
		return nil, "", err
	}
	var prog uintptr
	if err := r.check("nvrtcCreateProgram", r.CreateProgram(&prog, src, name, 0, nil, nil)); err != nil {
		return nil, "", err
	}
	defer r.DestroyProgram(&prog)
	opts := [][]byte{[]byte("--gpu-arch=" + arch + "\x00")}
	optPtrs := make([]*byte, len(opts))
	for i := range opts {
		optPtrs[i] = &opts[i][0]
	}
	res := r.CompileProgram(prog, int32(len(optPtrs)), unsafe.Pointer(&optPtrs[0]))
	runtime.KeepAlive(opts)
	runtime.KeepAlive(optPtrs)
	if res != 0 {
		e := &NVRTCError{Op: "nvrtcCompileProgram(" + arch + ")", Result: res, Msg: r.GetErrorString(res)}
		if res == nvrtcErrorCompilation {
			e.Log = programLog(r, prog)
		}
		return nil, "", e
	}
	var size uint64
	get, getSize, what := r.GetPTX, r.GetPTXSize, "PTX"
	if cubin {
		get, getSize, what = r.GetCUBIN, r.GetCUBINSize, "CUBIN"
	}
	if err := r.check("nvrtcGet"+what+"Size", getSize(prog, &size)); err != nil {
		return nil, "", err
	}
	if size == 0 {
		return nil, "", fmt.Errorf("gpu: NVRTC produced an empty %s for %s", what, arch)
	}
	image := make([]byte, size+1) // PTX must end in NUL; the extra byte is harmless for a CUBIN
	if err := r.check("nvrtcGet"+what, get(prog, &image[0])); err != nil {
		return nil, "", err
	}
	return image, arch, nil
}

func programLog(r *nvrtcAPI, prog uintptr) string {
	var n uint64
	if r.GetProgramLogSize(prog, &n) != 0 || n == 0 {
		return ""
	}
	buf := make([]byte, n)
	if r.GetProgramLog(prog, &buf[0]) != 0 {
		return ""
	}
	return cString(buf)
}
