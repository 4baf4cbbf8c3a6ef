/* A stand-in for libnvidia-ml.so.1 used by the loader tests. Behaviour is chosen at
 * build time with -D: NVML_INIT_RESULT, NVML_COUNT, NVML_CUDA_VERSION, OMIT_MEMINFO. */
#include <stdio.h>
#include <string.h>
#ifndef NVML_INIT_RESULT
#define NVML_INIT_RESULT 0
#endif
#ifndef NVML_COUNT
#define NVML_COUNT 2
#endif
#ifndef NVML_CUDA_VERSION
#define NVML_CUDA_VERSION 13000
#endif
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
int nvmlInit_v2(void) { return NVML_INIT_RESULT; }
int nvmlShutdown(void) { return 0; }
const char* nvmlErrorString(int r) { return r == 9 ? "Driver Not Loaded" : "Fake NVML error"; }
int nvmlDeviceGetCount_v2(unsigned int* n) { *n = NVML_COUNT; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void** dev) {
	if (i >= NVML_COUNT) return 2;
	*dev = (void*)(unsigned long)(i + 1);
	return 0;
}
int nvmlDeviceGetName(void* dev, char* name, unsigned int len) {
	snprintf(name, len, "Fake GPU %lu", (unsigned long)dev - 1);
	return 0;
}
int nvmlDeviceGetUUID(void* dev, char* uuid, unsigned int len) {
	snprintf(uuid, len, "GPU-fake-%lu", (unsigned long)dev - 1);
	return 0;
}
#ifndef OMIT_MEMINFO
int nvmlDeviceGetMemoryInfo(void* dev, nvmlMemory_t* m) {
	m->total = (unsigned long long)((unsigned long)dev) << 34; /* 16 GiB per index+1 */
	m->free = m->total / 2;
	m->used = m->total - m->free;
	return 0;
}
#endif
int nvmlSystemGetDriverVersion(char* v, unsigned int len) { snprintf(v, len, "580.65.06"); return 0; }
int nvmlSystemGetCudaDriverVersion_v2(int* v) { *v = NVML_CUDA_VERSION; return 0; }
int nvmlDeviceGetCudaComputeCapability(void* dev, int* major, int* minor) { *major = 9; *minor = 0; return 0; }
