package gpu

import (
	"errors"
	"fmt"
	"sync"
)

// nvmlMemory mirrors nvmlMemory_t.
type nvmlMemory struct {
	Total, Free, Used uint64
}

type nvmlAPI struct {
	lib                   *library
	Init                  func() int32
	Shutdown              func() int32
	ErrorString           func(r int32) string
	DeviceGetCount        func(n *uint32) int32
	DeviceGetHandleByIdx  func(i uint32, dev *uintptr) int32
	DeviceGetName         func(dev uintptr, name *byte, length uint32) int32
	DeviceGetMemoryInfo   func(dev uintptr, mem *nvmlMemory) int32
	DeviceGetUUID         func(dev uintptr, uuid *byte, length uint32) int32
	SystemGetDriverVer    func(ver *byte, length uint32) int32
	SystemGetCUDADriver   func(ver *int32) int32
	DeviceGetComputeCap   func(dev uintptr, major, minor *int32) int32
	hasComputeCapability  bool
	hasCUDADriverVersion2 bool
}

func loadNVML(cfg LoadConfig) (*nvmlAPI, error) {
	lib, err := openLibrary("libnvidia-ml", nvmlNames, cfg)
	if err != nil {
		return nil, err
	}
	return bindOnce(lib, bindNVML)
}

func bindNVML(lib *library) (*nvmlAPI, error) {
	n := &nvmlAPI{lib: lib}
	if err := lib.bind([]sym{
		{"nvmlInit_v2", &n.Init},
		{"nvmlShutdown", &n.Shutdown},
		{"nvmlErrorString", &n.ErrorString},
		{"nvmlDeviceGetCount_v2", &n.DeviceGetCount},
		{"nvmlDeviceGetHandleByIndex_v2", &n.DeviceGetHandleByIdx},
		{"nvmlDeviceGetName", &n.DeviceGetName},
		{"nvmlDeviceGetMemoryInfo", &n.DeviceGetMemoryInfo},
		{"nvmlDeviceGetUUID", &n.DeviceGetUUID},
		{"nvmlSystemGetDriverVersion", &n.SystemGetDriverVer},
	}); err != nil {
		return nil, err
	}
	// Optional: present in every driver of the last years, but Discover works without.
	if lib.has("nvmlSystemGetCudaDriverVersion_v2") {
		if err := lib.bind([]sym{{"nvmlSystemGetCudaDriverVersion_v2", &n.SystemGetCUDADriver}}); err != nil {
			return nil, err
		}
		n.hasCUDADriverVersion2 = true
	}
	if lib.has("nvmlDeviceGetCudaComputeCapability") {
		if err := lib.bind([]sym{{"nvmlDeviceGetCudaComputeCapability", &n.DeviceGetComputeCap}}); err != nil {
			return nil, err
		}
		n.hasComputeCapability = true
	}
	return n, nil
}

func (n *nvmlAPI) check(op string, r int32) error {
	if r == nvmlSuccess {
		return nil
	}
	return &NVMLError{Op: op, Result: r, Msg: n.ErrorString(r)}
}

// DeviceInfo describes one GPU as NVML sees it.
type DeviceInfo struct {
	Index             int    `json:"index"`
	Name              string `json:"name"`
	UUID              string `json:"uuid,omitempty"`
	MemoryTotalBytes  uint64 `json:"memory_total_bytes"`
	ComputeCapability string `json:"compute_capability,omitempty"`
}

// Inventory is what a node reports about its GPUs.
type Inventory struct {
	Devices []DeviceInfo `json:"devices"`
	// DriverVersion is the NVIDIA driver's version string, e.g. "580.65.06".
	DriverVersion string `json:"driver_version,omitempty"`
	// CUDADriverVersion is the CUDA version the driver supports (13000 is 13.0).
	CUDADriverVersion int `json:"cuda_driver_version,omitempty"`
	// Libraries lists the compute libraries that loaded, by the path dlopen took.
	Libraries []string `json:"libraries,omitempty"`
	// Reason says why the GPUs cannot be used; empty when they can.
	Reason string `json:"reason,omitempty"`
	// Err is the error behind Reason, for errors.Is against the sentinels.
	Err error `json:"-"`
}

// Usable is the number of GPUs the node may offer: 0 whenever Reason is set.
func (inv Inventory) Usable() int {
	if inv.Err != nil {
		return 0
	}
	return len(inv.Devices)
}

// MinCUDADriverVersion is the oldest CUDA version a driver must support: cuBLAS and
// NVRTC 12 need a CUDA 12 driver.
const MinCUDADriverVersion = 12000

// DiscoverConfig tunes Discover.
type DiscoverConfig struct {
	Load LoadConfig
	// SkipComputeLibraries skips checking that libcuda, libcublas and libnvrtc load.
	SkipComputeLibraries bool
}

var nvmlMu sync.Mutex // NVML init/shutdown are reference counted; keep them paired

// Discover enumerates the GPUs through NVML and checks that the compute libraries load.
// It never fails: a node without a usable GPU gets an Inventory whose Reason says why
// and whose Usable is 0.
func Discover() Inventory {
	return DiscoverWith(DiscoverConfig{Load: DefaultLoadConfig()})
}

// DiscoverWith is Discover with explicit library locations.
func DiscoverWith(cfg DiscoverConfig) Inventory {
	inv, err := discover(cfg)
	if err == nil && !cfg.SkipComputeLibraries {
		var libs []string
		libs, err = checkComputeLibraries(cfg.Load, inv.CUDADriverVersion)
		inv.Libraries = libs
	}
	if err != nil {
		inv.Err = err
		inv.Reason = err.Error()
	}
	if inv.Devices == nil {
		inv.Devices = []DeviceInfo{}
	}
	return inv
}

func discover(cfg DiscoverConfig) (Inventory, error) {
	var inv Inventory
	n, err := loadNVML(cfg.Load)
	if err != nil {
		return inv, err
	}
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if err := n.check("nvmlInit_v2", n.Init()); err != nil {
		return inv, err
	}
	defer n.Shutdown()
	buf := make([]byte, 96)
	if err := n.check("nvmlSystemGetDriverVersion", n.SystemGetDriverVer(&buf[0], uint32(len(buf)))); err != nil {
		return inv, err
	}
	inv.DriverVersion = cString(buf)
	if n.hasCUDADriverVersion2 {
		var v int32
		if err := n.check("nvmlSystemGetCudaDriverVersion_v2", n.SystemGetCUDADriver(&v)); err != nil {
			return inv, err
		}
		inv.CUDADriverVersion = int(v)
	}
	var count uint32
	if err := n.check("nvmlDeviceGetCount_v2", n.DeviceGetCount(&count)); err != nil {
		return inv, err
	}
	for i := range count {
		var h uintptr
		if err := n.check(fmt.Sprintf("nvmlDeviceGetHandleByIndex_v2(%d)", i), n.DeviceGetHandleByIdx(i, &h)); err != nil {
			return inv, err
		}
		d := DeviceInfo{Index: int(i)}
		clear(buf)
		if err := n.check("nvmlDeviceGetName", n.DeviceGetName(h, &buf[0], uint32(len(buf)))); err != nil {
			return inv, err
		}
		d.Name = cString(buf)
		clear(buf)
		if n.DeviceGetUUID(h, &buf[0], uint32(len(buf))) == nvmlSuccess {
			d.UUID = cString(buf)
		}
		var mem nvmlMemory
		if err := n.check("nvmlDeviceGetMemoryInfo", n.DeviceGetMemoryInfo(h, &mem)); err != nil {
			return inv, err
		}
		d.MemoryTotalBytes = mem.Total
		if n.hasComputeCapability {
			var major, minor int32
			if n.DeviceGetComputeCap(h, &major, &minor) == nvmlSuccess {
				d.ComputeCapability = fmt.Sprintf("%d.%d", major, minor)
			}
		}
		inv.Devices = append(inv.Devices, d)
	}
	if count == 0 {
		return inv, fmt.Errorf("NVML found no GPU: %w", ErrNoDevice)
	}
	if inv.CUDADriverVersion != 0 && inv.CUDADriverVersion < MinCUDADriverVersion {
		return inv, &DriverTooOldError{Have: inv.CUDADriverVersion, Need: MinCUDADriverVersion, Why: "Cohort's GPU path"}
	}
	return inv, nil
}

// checkComputeLibraries loads libcuda, libcublas and libnvrtc and binds their symbols.
// driverVersion is the driver's CUDA version (0 when unknown).
func checkComputeLibraries(cfg LoadConfig, driverVersion int) ([]string, error) {
	cu, err := loadDriver(cfg)
	if err != nil {
		return nil, err
	}
	bl, err := loadCublas(cfg, driverVersion)
	if err != nil {
		return []string{cu.lib.path}, err
	}
	rt, err := loadNVRTC(cfg, driverVersion)
	if err != nil {
		return []string{cu.lib.path, bl.lib.path}, err
	}
	return []string{cu.lib.path, bl.lib.path, rt.lib.path}, nil
}

// isUnavailable reports whether err means "no usable GPU here" rather than a bug.
func isUnavailable(err error) bool {
	return errors.Is(err, ErrLibraryMissing) || errors.Is(err, ErrSymbolMissing) ||
		errors.Is(err, ErrNoDevice) || errors.Is(err, ErrDriverTooOld)
}
