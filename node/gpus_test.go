package node

import (
	"io"
	"log/slog"
	"testing"

	"github.com/cohort-dev/cohort/internal/gpu"
)

func TestNodeGPUs(t *testing.T) {
	h200 := func(mem ...uint64) func() gpu.Inventory {
		return func() gpu.Inventory {
			var inv gpu.Inventory
			for i, m := range mem {
				inv.Devices = append(inv.Devices, gpu.DeviceInfo{Index: i, Name: "NVIDIA H200", MemoryTotalBytes: m})
			}
			return inv
		}
	}
	none := func() gpu.Inventory {
		return gpu.Inventory{Devices: []gpu.DeviceInfo{}, Reason: "libnvidia-ml.so.1 not found", Err: io.EOF}
	}
	broken := func() gpu.Inventory { // devices seen, compute libraries missing
		inv := h200(80 << 30)()
		inv.Reason, inv.Err = "libcublas missing", io.EOF
		return inv
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name      string
		requested int
		discover  func() gpu.Inventory
		gpus      int32
		model     string
		mem       int64
	}{
		{"auto finds two, smallest memory", GPUsAuto, h200(141<<30, 140<<30), 2, "NVIDIA H200", 140 << 30},
		{"auto finds none", GPUsAuto, none, 0, "", 0},
		{"auto with unusable devices", GPUsAuto, broken, 0, "", 0},
		{"explicit zero on a GPU host", 0, h200(141 << 30), 0, "", 0},
		{"explicit fewer than found", 1, h200(141<<30, 141<<30), 1, "NVIDIA H200", 141 << 30},
		{"explicit without NVML (emulated)", 4, none, 4, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := nodeGPUs(tc.requested, tc.discover, log)
			if r.Gpus != tc.gpus || r.GpuModel != tc.model || r.GpuMemoryBytes != tc.mem {
				t.Errorf("got %d x %q (%d bytes), want %d x %q (%d bytes)", r.Gpus, r.GpuModel, r.GpuMemoryBytes, tc.gpus, tc.model, tc.mem)
			}
		})
	}
}
