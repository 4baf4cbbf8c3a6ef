package gpu

import (
	"fmt"
	"sync"
)

// nvmlUtilization mirrors nvmlUtilization_t.
type nvmlUtilization struct {
	GPU, Memory uint32
}

// Usage is what a node's GPUs use now, from NVML.
type Usage struct {
	// Devices is the number of GPUs sampled.
	Devices int
	// MemoryUsedBytes is the GPU memory in use on all of them.
	MemoryUsedBytes uint64
	// Utilization is the mean busy fraction (0..1) over the last sample period of
	// the driver; negative when the driver does not report it.
	Utilization float64
}

var utilization struct {
	once sync.Once
	fn   func(dev uintptr, u *nvmlUtilization) int32
}

// SampleUsage reads the GPUs' memory in use and utilization through NVML (the same
// library Discover uses). It fails when NVML is missing or reports no device.
func SampleUsage(cfg LoadConfig) (Usage, error) {
	n, err := loadNVML(cfg)
	if err != nil {
		return Usage{}, err
	}
	utilization.once.Do(func() {
		if n.lib.has("nvmlDeviceGetUtilizationRates") {
			var fn func(dev uintptr, u *nvmlUtilization) int32
			if n.lib.bind([]sym{{"nvmlDeviceGetUtilizationRates", &fn}}) == nil {
				utilization.fn = fn
			}
		}
	})
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if err := n.check("nvmlInit_v2", n.Init()); err != nil {
		return Usage{}, err
	}
	defer n.Shutdown()
	var count uint32
	if err := n.check("nvmlDeviceGetCount_v2", n.DeviceGetCount(&count)); err != nil {
		return Usage{}, err
	}
	if count == 0 {
		return Usage{}, fmt.Errorf("gpu: usage: %w", ErrNoDevice)
	}
	u := Usage{Devices: int(count), Utilization: -1}
	var busy float64
	measured := 0
	for i := range count {
		var h uintptr
		if err := n.check(fmt.Sprintf("nvmlDeviceGetHandleByIndex_v2(%d)", i), n.DeviceGetHandleByIdx(i, &h)); err != nil {
			return Usage{}, err
		}
		var mem nvmlMemory
		if err := n.check("nvmlDeviceGetMemoryInfo", n.DeviceGetMemoryInfo(h, &mem)); err != nil {
			return Usage{}, err
		}
		u.MemoryUsedBytes += mem.Used
		if utilization.fn != nil {
			var ut nvmlUtilization
			if utilization.fn(h, &ut) == nvmlSuccess {
				busy += float64(ut.GPU) / 100
				measured++
			}
		}
	}
	if measured > 0 {
		u.Utilization = busy / float64(measured)
	}
	return u, nil
}
