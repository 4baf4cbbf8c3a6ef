package node

import (
	"log/slog"

	"github.com/cohort-dev/cohort/internal/gpu"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// nodeGPUs resolves the GPUs a node agent offers (AgentConfig.GPUs, cohort's --gpus).
// With GPUsAuto it offers every usable GPU discover finds (none, with the reason logged,
// when NVML or the compute libraries are missing); with N it offers N (0: none, on any
// host, without looking). The model and per-GPU memory come from discovery whenever it
// found devices (the smallest memory of all, so a task's gpuMemory request holds on any
// of them); N beyond what was found is honoured with a warning (emulated or not yet
// visible devices).
func nodeGPUs(requested int, discover func() gpu.Inventory, log *slog.Logger) *cohortv1.Resources {
	r := &cohortv1.Resources{}
	if requested == 0 {
		return r // no GPUs: nothing to discover
	}
	inv := discover()
	if n := inv.Usable(); n > 0 {
		r.GpuModel = inv.Devices[0].Name
		mem := inv.Devices[0].MemoryTotalBytes
		for _, d := range inv.Devices[1:] {
			mem = min(mem, d.MemoryTotalBytes)
			if d.Name != r.GpuModel {
				log.Warn("GPUs of different models; advertising the first", "model", r.GpuModel, "other", d.Name)
			}
		}
		r.GpuMemoryBytes = int64(mem)
	}
	switch {
	case requested == GPUsAuto:
		r.Gpus = int32(inv.Usable())
		if inv.Usable() == 0 {
			log.Info("offering no GPUs", "reason", inv.Reason)
		} else {
			log.Info("offering discovered GPUs", "gpus", r.Gpus, "model", r.GpuModel, "gpu_memory_bytes", r.GpuMemoryBytes)
		}
	default:
		r.Gpus = int32(requested)
		if requested > inv.Usable() {
			log.Warn("--gpus exceeds the usable GPUs found", "gpus", requested, "usable", inv.Usable(), "reason", inv.Reason)
		}
	}
	if r.Gpus == 0 { // the coordinator refuses a model or memory without GPUs
		r.GpuModel, r.GpuMemoryBytes = "", 0
	}
	return r
}
