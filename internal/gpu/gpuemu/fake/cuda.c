/* A stand-in for libcuda.so.1: device memory is host memory, and "kernels" are the
 * CUDA C kernels compiled for the CPU into EMU_PATH (see emu_prelude.h), each wrapped
 * as emu_<name>(void** params). Build-time knobs: INIT_RESULT, DRIVER_VERSION,
 * DEVICE_COUNT, CC_MAJOR, CC_MINOR. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef INIT_RESULT
#define INIT_RESULT 0
#endif
#ifndef DRIVER_VERSION
#define DRIVER_VERSION 13000
#endif
#ifndef DEVICE_COUNT
#define DEVICE_COUNT 1
#endif
#ifndef CC_MAJOR
#define CC_MAJOR 8
#endif
#ifndef CC_MINOR
#define CC_MINOR 6
#endif
#ifndef EMU_PATH
#define EMU_PATH ""
#endif
typedef unsigned long long CUdeviceptr;
static long live_allocs;
static long launches;
long fake_live_allocs(void) { return live_allocs; }
long fake_launches(void) { return launches; }

int cuInit(unsigned int flags) { return flags == 0 ? INIT_RESULT : 1; }
int cuDriverGetVersion(int* v) { *v = DRIVER_VERSION; return 0; }
int cuGetErrorName(int code, const char** s) {
	switch (code) {
	case 100: *s = "CUDA_ERROR_NO_DEVICE"; return 0;
	case 35: *s = "CUDA_ERROR_INSUFFICIENT_DRIVER"; return 0;
	case 500: *s = "CUDA_ERROR_NOT_FOUND"; return 0;
	}
	*s = "CUDA_ERROR_UNKNOWN";
	return 0;
}
int cuDeviceGetCount(int* n) { *n = DEVICE_COUNT; return 0; }
int cuDeviceGet(int* dev, int ordinal) {
	if (ordinal < 0 || ordinal >= DEVICE_COUNT) return 101;
	*dev = ordinal;
	return 0;
}
int cuDeviceGetName(char* name, int len, int dev) { snprintf(name, len, "Emulated GPU %d", dev); return 0; }
int cuDeviceTotalMem_v2(size_t* b, int dev) { *b = (size_t)8 << 30; return 0; }
int cuDeviceGetAttribute(int* v, int attr, int dev) {
	switch (attr) {
	case 75: *v = CC_MAJOR; return 0;
	case 76: *v = CC_MINOR; return 0;
	case 16: *v = 4; return 0;
	}
	return 1;
}
static int ctx_token;
int cuDevicePrimaryCtxRetain(void** ctx, int dev) { *ctx = &ctx_token; return 0; }
int cuDevicePrimaryCtxRelease_v2(int dev) { return 0; }
int cuCtxSetCurrent(void* ctx) { return ctx == &ctx_token ? 0 : 201; }
int cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
	void* m = malloc(n);
	if (!m) return 2;
	live_allocs++;
	*p = (CUdeviceptr)(uintptr_t)m;
	return 0;
}
int cuMemFree_v2(CUdeviceptr p) { free((void*)(uintptr_t)p); live_allocs--; return 0; }
int cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) { memcpy((void*)(uintptr_t)dst, src, n); return 0; }
int cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) { memcpy(dst, (void*)(uintptr_t)src, n); return 0; }
int cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) { memmove((void*)(uintptr_t)dst, (void*)(uintptr_t)src, n); return 0; }
int cuMemsetD32_v2(CUdeviceptr dst, unsigned int v, size_t n) {
	unsigned int* p = (unsigned int*)(uintptr_t)dst;
	for (size_t i = 0; i < n; i++) p[i] = v;
	return 0;
}
static int stream_token;
int cuStreamCreate(void** s, unsigned int flags) { *s = &stream_token; return 0; }
int cuStreamDestroy_v2(void* s) { return s == &stream_token ? 0 : 400; }
int cuStreamSynchronize(void* s) { return s == &stream_token ? 0 : 400; }
int cuModuleLoadData(void** mod, const void* image) {
	if (image == NULL) return 1;
	void* h = dlopen(EMU_PATH, RTLD_NOW | RTLD_LOCAL);
	if (!h) { fprintf(stderr, "fake cuda: %s\n", dlerror()); return 200; }
	*mod = h;
	return 0;
}
int cuModuleUnload(void* mod) { return 0; }
int cuModuleGetFunction(void** fn, void* mod, const char* name) {
	char buf[256];
	snprintf(buf, sizeof buf, "emu_%s", name);
	*fn = dlsym(mod, buf);
	return *fn ? 0 : 500;
}
int cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
		unsigned shared, void* stream, void** params, void** extra) {
	if (gx == 0 || bx == 0 || gy != 1 || by != 1 || gz != 1 || bz != 1 || stream != &stream_token || extra != NULL) return 1;
	launches++;
	((void (*)(void**))f)(params);
	return 0;
}
