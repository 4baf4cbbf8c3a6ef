package main

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/cohort-dev/cohort/internal/gpu"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// gpusAuto is --gpus's default: offer the GPUs NVML finds.
const gpusAuto = -1

// nodeGPUs resolves the GPUs a node agent offers. With --gpus auto (gpusAuto) it offers
// every usable GPU discover finds (none, with the reason logged, when NVML or the
// compute libraries are missing); with --gpus N it offers N (0: none, on any host). The model and per-GPU
// memory come from discovery whenever it found devices (the smallest memory of all, so
// a task's gpuMemory request holds on any of them); --gpus N beyond what was found is
// honoured with a warning (emulated or not yet visible devices).
func nodeGPUs(requested int, discover func() gpu.Inventory, log *slog.Logger) *cohortv1.Resources {
	inv := discover()
	r := &cohortv1.Resources{}
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
	case requested == gpusAuto:
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

// labelKey and labelValue follow Kubernetes' label syntax: an optional DNS-subdomain
// prefix and a name of at most 63 characters; values of at most 63 characters.
var (
	labelName  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)
	labelValue = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$`)
	dnsPrefix  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)
)

// parseLabels parses repeated --label KEY=VALUE flags into the node's labels (the ones
// spec.placement.nodeSelector matches). A malformed pair or a key given twice with
// different values is an error naming the flag and the pair.
func parseLabels(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("--label %q: want KEY=VALUE", p)
		}
		if err := checkLabelKey(k); err != nil {
			return nil, fmt.Errorf("--label %q: %w", p, err)
		}
		if !labelValue.MatchString(v) {
			return nil, fmt.Errorf("--label %q: value must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", p)
		}
		if old, dup := out[k]; dup && old != v {
			return nil, fmt.Errorf("--label %q: key %q already set to %q", p, k, old)
		}
		out[k] = v
	}
	return out, nil
}

func checkLabelKey(k string) error {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if len(prefix) > 253 || !dnsPrefix.MatchString(prefix) {
			return fmt.Errorf("key prefix %q must be a DNS subdomain (lower-case, at most 253 characters)", prefix)
		}
		name = rest
	}
	if !labelName.MatchString(name) {
		return fmt.Errorf("key %q: name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k)
	}
	return nil
}
