package gpu

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"unsafe"
)

// ErrClosed is returned by every operation on a closed Device.
var ErrClosed = errors.New("gpu: device closed")

// Config configures Open.
type Config struct {
	Load    LoadConfig
	Ordinal int // which GPU, as the driver numbers them
	Logger  *slog.Logger
}

// DefaultConfig opens GPU 0 with the libraries found through DefaultLoadConfig.
func DefaultConfig() Config {
	return Config{Load: DefaultLoadConfig(), Logger: slog.Default()}
}

// Props describes an opened device and the libraries driving it.
type Props struct {
	Ordinal         int      `json:"ordinal"`
	Name            string   `json:"name"`
	TotalMemBytes   uint64   `json:"total_mem_bytes"`
	Major           int      `json:"cc_major"` // compute capability
	Minor           int      `json:"cc_minor"`
	Multiprocessors int      `json:"multiprocessors"`
	DriverVersion   int      `json:"driver_cuda_version"` // e.g. 13000
	NVRTCVersion    int      `json:"nvrtc_version"`       // e.g. 13000
	CublasVersion   int      `json:"cublas_version"`      // e.g. 130000
	KernelTarget    string   `json:"kernel_target"`       // sm_90 (CUBIN) or compute_90 (PTX)
	Libraries       []string `json:"libraries"`
}

// Device is one GPU with its primary context, a stream, a cuBLAS handle and Cohort's
// compiled kernels. Its methods are safe for concurrent use; they are serialised, and
// each runs on a locked OS thread with the device's context current, because CUDA
// contexts are bound to threads and goroutines are not.
type Device struct {
	props  Props
	log    *slog.Logger
	drv    *driverAPI
	blas   *cublasAPI
	rtc    *nvrtcAPI
	dev    int32
	mu     sync.Mutex
	closed bool
	ctx    uintptr
	stream uintptr
	handle uintptr
	module uintptr
	fns    map[string]uintptr
}

// Open loads the libraries, checks the driver version against them, retains the
// primary context of cfg.Ordinal (CUDA 13 changed cuCtxCreate; the primary context
// sidesteps it and is shared with cuBLAS), and compiles the kernels with NVRTC for the
// device's compute capability. Errors match ErrLibraryMissing, ErrSymbolMissing,
// ErrNoDevice or ErrDriverTooOld when that is the cause.
func Open(cfg Config) (*Device, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	drv, err := loadDriver(cfg.Load)
	if err != nil {
		return nil, err
	}
	d := &Device{log: cfg.Logger, drv: drv, fns: map[string]uintptr{}}
	d.props.Ordinal = cfg.Ordinal
	if err := drv.check("cuInit", drv.Init(0)); err != nil {
		return nil, fmt.Errorf("gpu: initialise the CUDA driver: %w", err)
	}
	var ver int32
	if err := drv.check("cuDriverGetVersion", drv.DriverGetVersion(&ver)); err != nil {
		return nil, err
	}
	d.props.DriverVersion = int(ver)
	if d.blas, err = loadCublas(cfg.Load, int(ver)); err != nil {
		return nil, err
	}
	if d.rtc, err = loadNVRTC(cfg.Load, int(ver)); err != nil {
		return nil, err
	}
	blas, rtc := d.blas, d.rtc
	d.props.Libraries = []string{drv.lib.path, blas.lib.path, rtc.lib.path}
	var rmaj, rmin int32
	if err := rtc.check("nvrtcVersion", rtc.Version(&rmaj, &rmin)); err != nil {
		return nil, err
	}
	d.props.NVRTCVersion = int(rmaj)*1000 + int(rmin)*10
	// CUDA minor-version compatibility: libraries of major M run on any driver that
	// supports M.0 or newer.
	if need := int(rmaj) * 1000; d.props.DriverVersion < need {
		return nil, &DriverTooOldError{Have: d.props.DriverVersion, Need: need, Why: rtc.lib.path}
	}
	if need := blas.major * 1000; d.props.DriverVersion < need {
		return nil, &DriverTooOldError{Have: d.props.DriverVersion, Need: need, Why: blas.lib.path}
	}
	var count int32
	if err := drv.check("cuDeviceGetCount", drv.DeviceGetCount(&count)); err != nil {
		return nil, err
	}
	if cfg.Ordinal < 0 || cfg.Ordinal >= int(count) {
		return nil, fmt.Errorf("gpu: device %d requested, the driver sees %d: %w", cfg.Ordinal, count, ErrNoDevice)
	}
	if err := drv.check("cuDeviceGet", drv.DeviceGet(&d.dev, int32(cfg.Ordinal))); err != nil {
		return nil, err
	}
	if err := d.queryProps(); err != nil {
		return nil, err
	}
	if err := d.setup(); err != nil {
		d.Close()
		return nil, err
	}
	d.log.Info("gpu device opened", "ordinal", cfg.Ordinal, "name", d.props.Name,
		"compute_capability", fmt.Sprintf("%d.%d", d.props.Major, d.props.Minor),
		"driver_cuda", FormatCUDAVersion(d.props.DriverVersion), "kernels", d.props.KernelTarget)
	return d, nil
}

func (d *Device) queryProps() error {
	drv := d.drv
	name := make([]byte, 256)
	if err := drv.check("cuDeviceGetName", drv.DeviceGetName(&name[0], int32(len(name)), d.dev)); err != nil {
		return err
	}
	d.props.Name = cString(name)
	if err := drv.check("cuDeviceTotalMem_v2", drv.DeviceTotalMem(&d.props.TotalMemBytes, d.dev)); err != nil {
		return err
	}
	for _, a := range []struct {
		attr int32
		dst  *int
	}{
		{cuAttrComputeCapabilityMajor, &d.props.Major},
		{cuAttrComputeCapabilityMinor, &d.props.Minor},
		{cuAttrMultiprocessorCount, &d.props.Multiprocessors},
	} {
		var v int32
		if err := drv.check("cuDeviceGetAttribute", drv.DeviceGetAttribute(&v, a.attr, d.dev)); err != nil {
			return err
		}
		*a.dst = int(v)
	}
	return nil
}

// setup retains the context and creates the stream, the cuBLAS handle and the kernels.
func (d *Device) setup() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	drv := d.drv
	if err := drv.check("cuDevicePrimaryCtxRetain", drv.PrimaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return err
	}
	if err := drv.check("cuCtxSetCurrent", drv.CtxSetCurrent(d.ctx)); err != nil {
		return err
	}
	if err := drv.check("cuStreamCreate", drv.StreamCreate(&d.stream, 0)); err != nil {
		return err
	}
	if err := checkCublas("cublasCreate_v2", d.blas.Create(&d.handle)); err != nil {
		return err
	}
	if err := checkCublas("cublasSetStream_v2", d.blas.SetStream(d.handle, d.stream)); err != nil {
		return err
	}
	var bv int32
	if err := checkCublas("cublasGetVersion_v2", d.blas.GetVersion(d.handle, &bv)); err != nil {
		return err
	}
	d.props.CublasVersion = int(bv)
	image, target, err := compileKernels(d.rtc, kernelSource, "cohort_kernels.cu", d.props.Major*10+d.props.Minor)
	if err != nil {
		return err
	}
	d.props.KernelTarget = target
	if err := drv.check("cuModuleLoadData("+target+")", drv.ModuleLoadData(&d.module, unsafe.Pointer(&image[0]))); err != nil {
		return err
	}
	runtime.KeepAlive(image)
	for _, name := range kernelNames {
		var fn uintptr
		if err := drv.check("cuModuleGetFunction("+name+")", drv.ModuleGetFunction(&fn, d.module, name)); err != nil {
			return err
		}
		d.fns[name] = fn
	}
	return nil
}

// Props returns what Open learnt about the device.
func (d *Device) Props() Props { return d.props }

// do runs f with the device's context current on a locked OS thread.
func (d *Device) do(f func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.drv.check("cuCtxSetCurrent", d.drv.CtxSetCurrent(d.ctx)); err != nil {
		return err
	}
	return f()
}

// Synchronize waits for all work queued on the device's stream.
func (d *Device) Synchronize() error {
	return d.do(func() error {
		return d.drv.check("cuStreamSynchronize", d.drv.StreamSynchronize(d.stream))
	})
}

// Close releases the kernels, the cuBLAS handle, the stream and the primary context.
// Buffers not freed before are freed with the context.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if d.ctx == 0 {
		return nil
	}
	var errs []error
	errs = append(errs, d.drv.check("cuCtxSetCurrent", d.drv.CtxSetCurrent(d.ctx)))
	if d.module != 0 {
		errs = append(errs, d.drv.check("cuModuleUnload", d.drv.ModuleUnload(d.module)))
	}
	if d.handle != 0 {
		errs = append(errs, checkCublas("cublasDestroy_v2", d.blas.Destroy(d.handle)))
	}
	if d.stream != 0 {
		errs = append(errs, d.drv.check("cuStreamDestroy_v2", d.drv.StreamDestroy(d.stream)))
	}
	errs = append(errs, d.drv.check("cuDevicePrimaryCtxRelease_v2", d.drv.PrimaryCtxRelease(d.dev)))
	return errors.Join(errs...)
}

// Buffer is float32 (or int32) memory on the device. A Buffer made by Slice is a view
// that shares its parent's memory and is not freed on its own.
type Buffer struct {
	d     *Device
	ptr   uint64
	n     int
	owner bool
}

// maxElems keeps element indices within the kernels' 32-bit int arithmetic.
const maxElems = math.MaxInt32

// Alloc allocates n zeroed elements of 4 bytes.
func (d *Device) Alloc(n int) (*Buffer, error) {
	if n <= 0 || n > maxElems {
		return nil, fmt.Errorf("gpu: alloc %d elements: want 1..%d", n, maxElems)
	}
	b := &Buffer{d: d, n: n, owner: true}
	err := d.do(func() error {
		if err := d.drv.check("cuMemAlloc_v2", d.drv.MemAlloc(&b.ptr, uint64(n)*4)); err != nil {
			return fmt.Errorf("gpu: alloc %d bytes: %w", n*4, err)
		}
		return d.drv.check("cuMemsetD32_v2", d.drv.MemsetD32(b.ptr, 0, uint64(n)))
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Upload allocates a buffer holding a copy of host.
func (d *Device) Upload(host []float32) (*Buffer, error) {
	b, err := d.Alloc(len(host))
	if err != nil {
		return nil, err
	}
	if err := b.Write(host); err != nil {
		b.Free()
		return nil, err
	}
	return b, nil
}

// Len is the number of elements.
func (b *Buffer) Len() int { return b.n }

// Slice is a view of n elements starting at element off.
func (b *Buffer) Slice(off, n int) *Buffer {
	if off < 0 || n <= 0 || off+n > b.n {
		panic(fmt.Sprintf("gpu: slice [%d:%d] of a buffer of %d", off, off+n, b.n))
	}
	return &Buffer{d: b.d, ptr: b.ptr + uint64(off)*4, n: n}
}

// Write copies host (exactly Len elements) to the device.
func (b *Buffer) Write(host []float32) error {
	if len(host) != b.n {
		return fmt.Errorf("gpu: write %d elements into a buffer of %d", len(host), b.n)
	}
	return b.d.do(func() error {
		err := b.d.drv.check("cuMemcpyHtoD_v2", b.d.drv.MemcpyHtoD(b.ptr, unsafe.Pointer(&host[0]), uint64(b.n)*4))
		runtime.KeepAlive(host)
		return err
	})
}

// Read copies the buffer (exactly Len elements) into host, after the work queued
// before it has finished.
func (b *Buffer) Read(host []float32) error {
	if len(host) != b.n {
		return fmt.Errorf("gpu: read a buffer of %d elements into %d", b.n, len(host))
	}
	return b.d.do(func() error {
		err := b.d.drv.check("cuMemcpyDtoH_v2", b.d.drv.MemcpyDtoH(unsafe.Pointer(&host[0]), b.ptr, uint64(b.n)*4))
		runtime.KeepAlive(host)
		return err
	})
}

// ReadAll copies the buffer into a new slice.
func (b *Buffer) ReadAll() ([]float32, error) {
	out := make([]float32, b.n)
	return out, b.Read(out)
}

// ReadInt32 copies a buffer of int32 (such as max-pool indices) to the host.
func (b *Buffer) ReadInt32() ([]int32, error) {
	out := make([]int32, b.n)
	return out, b.d.do(func() error {
		err := b.d.drv.check("cuMemcpyDtoH_v2", b.d.drv.MemcpyDtoH(unsafe.Pointer(&out[0]), b.ptr, uint64(b.n)*4))
		runtime.KeepAlive(out)
		return err
	})
}

// CopyFrom copies src (same length) into b on the device.
func (b *Buffer) CopyFrom(src *Buffer) error {
	if src.n != b.n {
		return fmt.Errorf("gpu: copy %d elements into a buffer of %d", src.n, b.n)
	}
	return b.d.do(func() error {
		return b.d.drv.check("cuMemcpyDtoD_v2", b.d.drv.MemcpyDtoD(b.ptr, src.ptr, uint64(b.n)*4))
	})
}

// Zero sets every element to 0.
func (b *Buffer) Zero() error {
	return b.d.do(func() error {
		return b.d.drv.check("cuMemsetD32_v2", b.d.drv.MemsetD32(b.ptr, 0, uint64(b.n)))
	})
}

// Free releases the memory; views and already-freed buffers are left alone.
func (b *Buffer) Free() error {
	if !b.owner || b.ptr == 0 {
		return nil
	}
	err := b.d.do(func() error { return b.d.drv.check("cuMemFree_v2", b.d.drv.MemFree(b.ptr)) })
	if errors.Is(err, ErrClosed) {
		err = nil // freed with the context
	}
	b.ptr = 0
	return err
}

// launch runs kernel name over n elements (a 1-D grid of 256-thread blocks; the
// kernels loop with a grid stride). args are *Buffer, int (passed as int) or float32.
func (d *Device) launch(name string, n int, args ...any) error {
	if n <= 0 {
		return nil
	}
	vals := make([]uint64, len(args))
	ptrs := make([]unsafe.Pointer, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case *Buffer:
			vals[i] = v.ptr
		case int:
			if v > math.MaxInt32 || v < math.MinInt32 {
				return fmt.Errorf("gpu: %s argument %d: %d overflows int", name, i, v)
			}
			vals[i] = uint64(uint32(int32(v)))
		case float32:
			vals[i] = uint64(math.Float32bits(v))
		default:
			return fmt.Errorf("gpu: %s argument %d: unsupported type %T", name, i, a)
		}
		ptrs[i] = unsafe.Pointer(&vals[i])
	}
	const block = 256
	grid := min((n+block-1)/block, 1<<20)
	return d.do(func() error {
		fn, ok := d.fns[name]
		if !ok {
			return fmt.Errorf("gpu: no kernel %q", name)
		}
		var params unsafe.Pointer
		if len(ptrs) > 0 {
			params = unsafe.Pointer(&ptrs[0])
		}
		err := d.drv.check("cuLaunchKernel("+name+")",
			d.drv.LaunchKernel(fn, uint32(grid), 1, 1, block, 1, 1, 0, d.stream, params, nil))
		runtime.KeepAlive(vals)
		runtime.KeepAlive(ptrs)
		return err
	})
}
