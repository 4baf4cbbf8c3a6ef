/* A stand-in for libnvrtc.so.13: "compiles" to a placeholder image (the fake libcuda
 * runs the kernels from a CPU build). Knobs: COMPILE_RESULT (6 = compilation error),
 * NVRTC_MAJOR (the version it reports). */
#include <string.h>
#ifndef NVRTC_MAJOR
#define NVRTC_MAJOR 13
#endif
#ifndef COMPILE_RESULT
#define COMPILE_RESULT 0
#endif
static const char image[] = "// fake image";
static const char log_text[] = "cohort_kernels.cu(1): error: fake compile error";
static int prog_token;
int nvrtcVersion(int* major, int* minor) { *major = NVRTC_MAJOR; *minor = 0; return 0; }
const char* nvrtcGetErrorString(int r) { return r == 6 ? "NVRTC_ERROR_COMPILATION" : "NVRTC_ERROR_FAKE"; }
int nvrtcCreateProgram(void** p, const char* src, const char* name, int nh, const char* const* h, const char* const* inc) {
	if (src == NULL || strstr(src, "extern \"C\"") == NULL) return 3;
	*p = &prog_token;
	return 0;
}
int nvrtcDestroyProgram(void** p) { *p = 0; return 0; }
int nvrtcCompileProgram(void* p, int n, const char* const* opts) {
	if (n != 1 || strncmp(opts[0], "--gpu-arch=", 11) != 0) return 5;
	return COMPILE_RESULT;
}
int nvrtcGetProgramLogSize(void* p, size_t* n) { *n = sizeof log_text; return 0; }
int nvrtcGetProgramLog(void* p, char* log) { memcpy(log, log_text, sizeof log_text); return 0; }
int nvrtcGetPTXSize(void* p, size_t* n) { *n = sizeof image; return 0; }
int nvrtcGetPTX(void* p, char* out) { memcpy(out, image, sizeof image); return 0; }
int nvrtcGetCUBINSize(void* p, size_t* n) { *n = sizeof image; return 0; }
int nvrtcGetCUBIN(void* p, char* out) { memcpy(out, image, sizeof image); return 0; }
static const int archs[] = {75, 80, 90};
int nvrtcGetNumSupportedArchs(int* n) { *n = 3; return 0; }
int nvrtcGetSupportedArchs(int* a) { memcpy(a, archs, sizeof archs); return 0; }
