package gpu

import (
	"fmt"
	"unsafe"
)

// CUdevice_attribute values used here.
const (
	cuAttrComputeCapabilityMajor = 75
	cuAttrComputeCapabilityMinor = 76
	cuAttrMultiprocessorCount    = 16
)

// driverAPI is the subset of the CUDA driver API Cohort calls. CUDA handles (contexts,
// modules, functions, streams) are opaque pointers, carried as uintptr; device
// pointers are 64-bit integers.
type driverAPI struct {
	lib                *library
	Init               func(flags uint32) int32
	DriverGetVersion   func(v *int32) int32
	GetErrorName       func(code int32, s **byte) int32
	DeviceGetCount     func(n *int32) int32
	DeviceGet          func(dev *int32, ordinal int32) int32
	DeviceGetName      func(name *byte, length int32, dev int32) int32
	DeviceTotalMem     func(bytes *uint64, dev int32) int32
	DeviceGetAttribute func(v *int32, attr int32, dev int32) int32
	PrimaryCtxRetain   func(ctx *uintptr, dev int32) int32
	PrimaryCtxRelease  func(dev int32) int32
	CtxSetCurrent      func(ctx uintptr) int32
	MemAlloc           func(dptr *uint64, bytes uint64) int32
	MemFree            func(dptr uint64) int32
	MemcpyHtoD         func(dst uint64, src unsafe.Pointer, bytes uint64) int32
	MemcpyDtoH         func(dst unsafe.Pointer, src uint64, bytes uint64) int32
	MemcpyDtoD         func(dst, src uint64, bytes uint64) int32
	MemsetD32          func(dst uint64, v uint32, n uint64) int32
	StreamCreate       func(s *uintptr, flags uint32) int32
	StreamDestroy      func(s uintptr) int32
	StreamSynchronize  func(s uintptr) int32
	ModuleLoadData     func(mod *uintptr, image unsafe.Pointer) int32
	ModuleUnload       func(mod uintptr) int32
	ModuleGetFunction  func(fn *uintptr, mod uintptr, name string) int32
	LaunchKernel       func(fn uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params unsafe.Pointer, extra unsafe.Pointer) int32
}

func loadDriver(cfg LoadConfig) (*driverAPI, error) {
	lib, err := openLibrary("libcuda", cudaNames, cfg)
	if err != nil {
		return nil, err
	}
	return bindOnce(lib, func(lib *library) (*driverAPI, error) {
		d := &driverAPI{lib: lib}
		// The _v2 names are the ones cuda.h maps the plain names to since CUDA 3.2/11
		// (64-bit sizes, legacy default stream semantics).
		return d, lib.bind([]sym{
			{"cuInit", &d.Init},
			{"cuDriverGetVersion", &d.DriverGetVersion},
			{"cuGetErrorName", &d.GetErrorName},
			{"cuDeviceGetCount", &d.DeviceGetCount},
			{"cuDeviceGet", &d.DeviceGet},
			{"cuDeviceGetName", &d.DeviceGetName},
			{"cuDeviceTotalMem_v2", &d.DeviceTotalMem},
			{"cuDeviceGetAttribute", &d.DeviceGetAttribute},
			{"cuDevicePrimaryCtxRetain", &d.PrimaryCtxRetain},
			{"cuDevicePrimaryCtxRelease_v2", &d.PrimaryCtxRelease},
			{"cuCtxSetCurrent", &d.CtxSetCurrent},
			{"cuMemAlloc_v2", &d.MemAlloc},
			{"cuMemFree_v2", &d.MemFree},
			{"cuMemcpyHtoD_v2", &d.MemcpyHtoD},
			{"cuMemcpyDtoH_v2", &d.MemcpyDtoH},
			{"cuMemcpyDtoD_v2", &d.MemcpyDtoD},
			{"cuMemsetD32_v2", &d.MemsetD32},
			{"cuStreamCreate", &d.StreamCreate},
			{"cuStreamDestroy_v2", &d.StreamDestroy},
			{"cuStreamSynchronize", &d.StreamSynchronize},
			{"cuModuleLoadData", &d.ModuleLoadData},
			{"cuModuleUnload", &d.ModuleUnload},
			{"cuModuleGetFunction", &d.ModuleGetFunction},
			{"cuLaunchKernel", &d.LaunchKernel},
		})
	})
}

// check turns a CUresult into a *CUDAError naming op.
func (d *driverAPI) check(op string, code int32) error {
	if code == cudaSuccess {
		return nil
	}
	e := &CUDAError{Op: op, Code: code}
	var p *byte
	if d.GetErrorName(code, &p) == cudaSuccess && p != nil {
		e.Name = goString(p)
	}
	return e
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	var n int
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// cuBLAS enums.
const (
	cublasOpN = 0
	cublasOpT = 1
)

type cublasAPI struct {
	lib        *library
	major      int // from the soname tried; 0 when unknown
	Create     func(h *uintptr) int32
	Destroy    func(h uintptr) int32
	SetStream  func(h uintptr, stream uintptr) int32
	GetVersion func(h uintptr, v *int32) int32
	Sgemm      func(h uintptr, transa, transb int32, m, n, k int32, alpha *float32,
		a uint64, lda int32, b uint64, ldb int32, beta *float32, c uint64, ldc int32) int32
}

// loadCublas loads cuBLAS, preferring sonames whose CUDA major version the driver
// supports (driverVersion as 12040 for 12.4; 0 means unknown), so a CUDA 12 driver picks
// libcublas.so.12 over a libcublas.so.13 that is also installed.
func loadCublas(cfg LoadConfig, driverVersion int) (*cublasAPI, error) {
	lib, err := openForDriver("libcublas", cublasNames, cfg, driverVersion)
	if err != nil {
		return nil, err
	}
	return bindOnce(lib, func(lib *library) (*cublasAPI, error) {
		b := &cublasAPI{lib: lib, major: sonameMajor(lib.path)}
		return b, lib.bind([]sym{
			{"cublasCreate_v2", &b.Create},
			{"cublasDestroy_v2", &b.Destroy},
			{"cublasSetStream_v2", &b.SetStream},
			{"cublasGetVersion_v2", &b.GetVersion},
			{"cublasSgemm_v2", &b.Sgemm},
		})
	})
}

func checkCublas(op string, status int32) error {
	if status == 0 {
		return nil
	}
	return &CublasError{Op: op, Status: status}
}

type nvrtcAPI struct {
	lib               *library
	Version           func(major, minor *int32) int32
	GetErrorString    func(r int32) string
	CreateProgram     func(prog *uintptr, src string, name string, nHeaders int32, headers, includeNames unsafe.Pointer) int32
	DestroyProgram    func(prog *uintptr) int32
	CompileProgram    func(prog uintptr, nOpts int32, opts unsafe.Pointer) int32
	GetProgramLogSize func(prog uintptr, n *uint64) int32
	GetProgramLog     func(prog uintptr, log *byte) int32
	GetPTXSize        func(prog uintptr, n *uint64) int32
	GetPTX            func(prog uintptr, ptx *byte) int32
	GetCUBINSize      func(prog uintptr, n *uint64) int32
	GetCUBIN          func(prog uintptr, cubin *byte) int32
	GetNumArchs       func(n *int32) int32
	GetArchs          func(archs *int32) int32
}

// loadNVRTC loads NVRTC with the same preference as loadCublas.
func loadNVRTC(cfg LoadConfig, driverVersion int) (*nvrtcAPI, error) {
	lib, err := openForDriver("libnvrtc", nvrtcNames, cfg, driverVersion)
	if err != nil {
		return nil, err
	}
	return bindOnce(lib, func(lib *library) (*nvrtcAPI, error) {
		r := &nvrtcAPI{lib: lib}
		return r, lib.bind([]sym{
			{"nvrtcVersion", &r.Version},
			{"nvrtcGetErrorString", &r.GetErrorString},
			{"nvrtcCreateProgram", &r.CreateProgram},
			{"nvrtcDestroyProgram", &r.DestroyProgram},
			{"nvrtcCompileProgram", &r.CompileProgram},
			{"nvrtcGetProgramLogSize", &r.GetProgramLogSize},
			{"nvrtcGetProgramLog", &r.GetProgramLog},
			{"nvrtcGetPTXSize", &r.GetPTXSize},
			{"nvrtcGetPTX", &r.GetPTX},
			{"nvrtcGetCUBINSize", &r.GetCUBINSize},
			{"nvrtcGetCUBIN", &r.GetCUBIN},
			{"nvrtcGetNumSupportedArchs", &r.GetNumArchs},
			{"nvrtcGetSupportedArchs", &r.GetArchs},
		})
	})
}

func (r *nvrtcAPI) check(op string, res int32) error {
	if res == 0 {
		return nil
	}
	return &NVRTCError{Op: op, Result: res, Msg: r.GetErrorString(res)}
}

// sonameMajor reads the trailing version of a soname such as libcublas.so.13.
func sonameMajor(path string) int {
	var major int
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '.' {
			if _, err := fmt.Sscanf(path[i+1:], "%d", &major); err != nil {
				return 0
			}
			return major
		}
	}
	return 0
}

// openForDriver opens the first of names whose soname major the driver supports (or
// that is unversioned). When only newer ones exist, it reports the driver as too old.
func openForDriver(logical string, names []string, cfg LoadConfig, driverVersion int) (*library, error) {
	maxMajor := driverVersion / 1000
	if maxMajor <= 0 {
		return openLibrary(logical, names, cfg)
	}
	var fit []string
	for _, n := range names {
		if m := sonameMajor(n); m <= maxMajor {
			fit = append(fit, n)
		}
	}
	lib, err := openLibrary(logical, fit, cfg)
	if err == nil {
		return lib, nil
	}
	if newer, err2 := openLibrary(logical, names, cfg); err2 == nil {
		return nil, &DriverTooOldError{Have: driverVersion, Need: sonameMajor(newer.path) * 1000, Why: newer.path}
	}
	return nil, err
}
