// Package gpu is Cohort's GPU path without cgo: it loads the NVIDIA driver (libcuda),
// cuBLAS, NVRTC and NVML at run time with purego, so the one CGO_ENABLED=0 binary lights
// up wherever those libraries exist and reports a clear reason wherever they do not.
//
// Discover enumerates GPUs through NVML for node agents and the scheduler. Open retains
// the primary context of one device, creates a stream and a cuBLAS handle, and compiles
// Cohort's kernels with NVRTC for the compute capability of the device that is present.
// The ops (GEMM, bias, activations, softmax cross-entropy, im2col convolution, max pooling
// and the LSTM gates, each with its backward) work on Buffers that stay on the device
// across steps; each has a plain-Go CPU reference in cpu.go that the GPU tests compare
// against.
//
// MLP keeps a whole multilayer perceptron resident: only the batch goes in and the
// gradients come out. Package gorgoniaops wraps the ops as gorgonia custom ops, and
// package gpuemu builds stand-in libraries (the real kernel source compiled for the
// CPU) so that all of this is tested on machines without a GPU; the tests against a
// real GPU skip with the reason, or fail under COHORT_REQUIRE_GPU=1.
//
// Importing this package makes a CGO_ENABLED=0 binary dynamically linked against libc
// (purego needs the system's dynamic loader for dlopen); it still needs no C toolchain
// to build.
//
// All matrices are row-major float32; images are NCHW.
package gpu
