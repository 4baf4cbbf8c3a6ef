/* A stand-in for libcublas.so.13: a naive column-major SGEMM on host memory. */
#include <stdint.h>
static int handle_token;
int cublasCreate_v2(void** h) { *h = &handle_token; return 0; }
int cublasDestroy_v2(void* h) { return h == &handle_token ? 0 : 1; }
int cublasSetStream_v2(void* h, void* s) { return h == &handle_token ? 0 : 1; }
int cublasGetVersion_v2(void* h, int* v) { *v = 130000; return 0; }
int cublasSgemm_v2(void* h, int ta, int tb, int m, int n, int k, const float* alpha,
		const float* a, int lda, const float* b, int ldb, const float* beta, float* c, int ldc) {
	if (h != &handle_token) return 1;
	if (m < 0 || n < 0 || k < 0 || ldc < m) return 7;
	if (lda < (ta ? k : m) || ldb < (tb ? n : k)) return 7;
	for (int j = 0; j < n; j++) {
		for (int i = 0; i < m; i++) {
			double s = 0;
			for (int l = 0; l < k; l++) {
				float av = ta ? a[l + i * lda] : a[i + l * lda];
				float bv = tb ? b[j + l * ldb] : b[l + j * ldb];
				s += (double)av * bv;
			}
			float old = *beta == 0.0f ? 0.0f : c[i + j * ldc];
			c[i + j * ldc] = *alpha * (float)s + *beta * old;
		}
	}
	return 0;
}
