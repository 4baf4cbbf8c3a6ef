package gpu

// KernelSource is the CUDA C source Open compiles with NVRTC (for emulators and tools).
func KernelSource() string { return kernelSource }

// KernelNames are the entry points of KernelSource.
func KernelNames() []string { return append([]string(nil), kernelNames...) }
