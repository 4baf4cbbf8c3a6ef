package gpu

import (
	"github.com/cohort-dev/cohort/internal/gpu/gpuemu"
)

// BuildEmulated builds the emulated NVIDIA stack of package gpuemu into dir: a fake
// libnvidia-ml with two GPUs, and a libcuda with the same two, libcublas and libnvrtc that run Cohort's
// real kernel source on the CPU. It returns the LoadConfig that opens it; setting
// $COHORT_CUDA_LIBRARY_PATH to dir has the same effect on a whole process (discovery
// included). It needs gcc and g++ (gpuemu.Available says why not).
//
// Tests outside this package use it to run the GPU path of training end to end on
// machines without a GPU; it checks the plumbing, not the GPU.
func BuildEmulated(dir string) (LoadConfig, error) {
	if err := gpuemu.Available(); err != nil {
		return LoadConfig{}, err
	}
	if err := gpuemu.BuildStack(dir, kernelSource, kernelNames, map[string][]string{"cuda": {"DEVICE_COUNT=2"}}); err != nil {
		return LoadConfig{}, err
	}
	if err := gpuemu.BuildLibrary(dir, gpuemu.NVML); err != nil {
		return LoadConfig{}, err
	}
	return LoadConfig{Dirs: []string{dir}, NoSystemSearch: true}, nil
}
