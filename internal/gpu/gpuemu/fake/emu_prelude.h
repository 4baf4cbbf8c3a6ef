// Compiles Cohort's CUDA C kernels as C++ for the CPU: one "thread" with a grid and
// block of 1, so each grid-stride loop walks every element in order.
#include <math.h>
#include <utility>
struct emu_dim3 { int x, y, z; };
static const emu_dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0};
static const emu_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
static inline float atomicAdd(float* a, float v) { float o = *a; *a += v; return o; }
