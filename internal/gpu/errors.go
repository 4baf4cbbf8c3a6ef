package gpu

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors; the typed errors below match them with errors.Is.
var (
	// ErrLibraryMissing: none of the names tried for a library could be loaded.
	ErrLibraryMissing = errors.New("gpu: library missing")
	// ErrSymbolMissing: a library loaded but lacks a function Cohort needs.
	ErrSymbolMissing = errors.New("gpu: symbol missing")
	// ErrNoDevice: the libraries loaded but there is no usable GPU.
	ErrNoDevice = errors.New("gpu: no device")
	// ErrDriverTooOld: the driver is older than the CUDA libraries need.
	ErrDriverTooOld = errors.New("gpu: driver too old")
)

// LibraryError reports that a library could not be loaded under any of its names.
type LibraryError struct {
	Library string   // logical name, e.g. "libcublas"
	Tried   []string // every path or name passed to dlopen, in order
	Last    string   // the loader's message for the last attempt
}

func (e *LibraryError) Error() string {
	msg := fmt.Sprintf("gpu: %s not found (tried %s)", e.Library, strings.Join(e.Tried, ", "))
	if e.Last != "" {
		msg += ": " + e.Last
	}
	return msg
}

// Is makes errors.Is(err, ErrLibraryMissing) true.
func (e *LibraryError) Is(target error) bool { return target == ErrLibraryMissing }

// SymbolError reports a function missing from a loaded library.
type SymbolError struct {
	Library string // the path the library was loaded from
	Symbol  string
}

func (e *SymbolError) Error() string {
	return fmt.Sprintf("gpu: symbol %s missing from %s", e.Symbol, e.Library)
}

// Is makes errors.Is(err, ErrSymbolMissing) true.
func (e *SymbolError) Is(target error) bool { return target == ErrSymbolMissing }

// DriverTooOldError reports a driver whose CUDA version is below what is needed.
// Versions are encoded as CUDA does: 1000*major + 10*minor (12080 is 12.8).
type DriverTooOldError struct {
	Have, Need int
	Why        string // what needs the newer driver
}

func (e *DriverTooOldError) Error() string {
	return fmt.Sprintf("gpu: driver supports CUDA %s, %s needs %s or newer",
		FormatCUDAVersion(e.Have), e.Why, FormatCUDAVersion(e.Need))
}

// Is makes errors.Is(err, ErrDriverTooOld) true.
func (e *DriverTooOldError) Is(target error) bool { return target == ErrDriverTooOld }

// FormatCUDAVersion renders a CUDA version number such as 13000 as "13.0".
func FormatCUDAVersion(v int) string { return fmt.Sprintf("%d.%d", v/1000, (v%1000)/10) }

// CUDA driver result codes this package interprets.
const (
	cudaSuccess                 = 0
	cudaErrorOutOfMemory        = 2
	cudaErrorNotInitialized     = 3
	cudaErrorInsufficientDriver = 35
	cudaErrorNoBinaryForGPU     = 209
	cudaErrorUnsupportedPTX     = 222
	cudaErrorNoDevice           = 100
	cudaErrorInvalidDevice      = 101
	cudaErrorSystemDriverMismat = 803
	cudaErrorCompatNotSupported = 804
)

// CUDAError is a failed CUDA driver API call.
type CUDAError struct {
	Op   string // the driver function, e.g. "cuMemAlloc_v2"
	Code int32
	Name string // the driver's name for Code, when it could be asked
}

func (e *CUDAError) Error() string {
	name := e.Name
	if name == "" {
		name = "CUresult"
	}
	return fmt.Sprintf("gpu: %s: %s (%d)", e.Op, name, e.Code)
}

// Is maps the driver's codes for "no GPU" and "driver too old" onto the sentinels.
func (e *CUDAError) Is(target error) bool {
	switch target {
	case ErrNoDevice:
		return e.Code == cudaErrorNoDevice || e.Code == cudaErrorInvalidDevice
	case ErrDriverTooOld:
		return e.Code == cudaErrorInsufficientDriver || e.Code == cudaErrorUnsupportedPTX ||
			e.Code == cudaErrorSystemDriverMismat || e.Code == cudaErrorCompatNotSupported
	}
	return false
}

// CublasError is a failed cuBLAS call.
type CublasError struct {
	Op     string
	Status int32
}

var cublasStatusNames = map[int32]string{
	1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
	7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH",
	11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func (e *CublasError) Error() string {
	name, ok := cublasStatusNames[e.Status]
	if !ok {
		name = "cublasStatus"
	}
	return fmt.Sprintf("gpu: %s: %s (%d)", e.Op, name, e.Status)
}

// NVRTCError is a failed NVRTC call; for a failed compile Log holds the compiler's log.
type NVRTCError struct {
	Op     string
	Result int32
	Msg    string
	Log    string
}

func (e *NVRTCError) Error() string {
	msg := fmt.Sprintf("gpu: %s: %s (%d)", e.Op, e.Msg, e.Result)
	if e.Log != "" {
		msg += "\n" + e.Log
	}
	return msg
}

// NVML return codes this package interprets.
const (
	nvmlSuccess          = 0
	nvmlErrorUninit      = 1
	nvmlErrorNotFound    = 6
	nvmlErrorDriverNotLd = 9
	nvmlErrorLibRMVerMis = 18
)

// NVMLError is a failed NVML call.
type NVMLError struct {
	Op     string
	Result int32
	Msg    string
}

func (e *NVMLError) Error() string {
	return fmt.Sprintf("gpu: %s: %s (%d)", e.Op, e.Msg, e.Result)
}

// Is maps NVML's "driver not loaded" onto ErrNoDevice: NVML ships with the driver
// package, so it can be present on machines whose kernel module is not.
func (e *NVMLError) Is(target error) bool {
	return target == ErrNoDevice && e.Result == nvmlErrorDriverNotLd
}
