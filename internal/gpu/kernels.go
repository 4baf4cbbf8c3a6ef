package gpu

// kernelNames are the entry points of kernelSource that Open looks up.
var kernelNames = []string{
	"bias_rows", "bias_rows_grad", "bias_chan", "bias_chan_grad",
	"relu_fwd", "relu_bwd", "sigmoid_fwd", "sigmoid_bwd", "tanh_fwd", "tanh_bwd",
	"leaky_relu_fwd", "leaky_relu_bwd",
	"softmax_xent_fwd", "softmax_xent_bwd",
	"im2col", "col2im",
	"maxpool_fwd", "maxpool_bwd",
	"lstm_fwd", "lstm_bwd",
	"axpy", "mul",
}

// kernelSource is compiled by NVRTC at Open for the device present. Every kernel is a
// grid-stride loop over its n work items, so any 1-D launch covers it. Semantics match
// the CPU references in cpu.go one for one.
const kernelSource = `
#define GRID_LOOP(i, n) for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

extern "C" {

// y[r][c] += b[c]
__global__ void bias_rows(float* y, const float* b, int rows, int cols) {
	GRID_LOOP(i, rows * cols) { y[i] += b[i % cols]; }
}

// db[c] = sum_r dy[r][c]
__global__ void bias_rows_grad(float* db, const float* dy, int rows, int cols) {
	GRID_LOOP(c, cols) {
		float s = 0.0f;
		for (int r = 0; r < rows; r++) s += dy[r * cols + c];
		db[c] = s;
	}
}

// y[n][c][s] += b[c] for NCHW with hw = H*W
__global__ void bias_chan(float* y, const float* b, int n, int ch, int hw) {
	GRID_LOOP(i, n * ch * hw) { y[i] += b[(i / hw) % ch]; }
}

// db[c] = sum_{n,s} dy[n][c][s]
__global__ void bias_chan_grad(float* db, const float* dy, int n, int ch, int hw) {
	GRID_LOOP(c, ch) {
		float s = 0.0f;
		for (int k = 0; k < n; k++) {
			const float* p = dy + (k * ch + c) * hw;
			for (int j = 0; j < hw; j++) s += p[j];
		}
		db[c] = s;
	}
}

__global__ void relu_fwd(float* y, const float* x, int n) {
	GRID_LOOP(i, n) { float v = x[i]; y[i] = v > 0.0f ? v : 0.0f; }
}
// The backward kernels take the forward output y.
__global__ void relu_bwd(float* dx, const float* dy, const float* y, int n) {
	GRID_LOOP(i, n) { dx[i] = y[i] > 0.0f ? dy[i] : 0.0f; }
}
__global__ void sigmoid_fwd(float* y, const float* x, int n) {
	GRID_LOOP(i, n) { y[i] = 1.0f / (1.0f + expf(-x[i])); }
}
__global__ void sigmoid_bwd(float* dx, const float* dy, const float* y, int n) {
	GRID_LOOP(i, n) { float s = y[i]; dx[i] = dy[i] * s * (1.0f - s); }
}
__global__ void tanh_fwd(float* y, const float* x, int n) {
	GRID_LOOP(i, n) { y[i] = tanhf(x[i]); }
}
__global__ void tanh_bwd(float* dx, const float* dy, const float* y, int n) {
	GRID_LOOP(i, n) { float t = y[i]; dx[i] = dy[i] * (1.0f - t * t); }
}
// Slope 0.01 (LeakyReLUSlope); y > 0 exactly where x > 0.
__global__ void leaky_relu_fwd(float* y, const float* x, int n) {
	GRID_LOOP(i, n) { float v = x[i]; y[i] = v > 0.0f ? v : 0.01f * v; }
}
__global__ void leaky_relu_bwd(float* dx, const float* dy, const float* y, int n) {
	GRID_LOOP(i, n) { dx[i] = y[i] > 0.0f ? dy[i] : 0.01f * dy[i]; }
}

// Row-wise softmax of logits into probs and loss[r] = -sum_c t[r][c] * log p[r][c].
__global__ void softmax_xent_fwd(float* probs, float* loss, const float* logits, const float* t, int rows, int cols) {
	GRID_LOOP(r, rows) {
		const float* z = logits + r * cols;
		float* p = probs + r * cols;
		float m = z[0];
		for (int c = 1; c < cols; c++) m = fmaxf(m, z[c]);
		float sum = 0.0f;
		for (int c = 0; c < cols; c++) sum += expf(z[c] - m);
		float lse = m + logf(sum);
		float l = 0.0f;
		for (int c = 0; c < cols; c++) {
			float lp = z[c] - lse;
			p[c] = expf(lp);
			l -= t[r * cols + c] * lp;
		}
		loss[r] = l;
	}
}

// dlogits = scale * (p * sum_c t - t), the gradient of scale * loss[r].
__global__ void softmax_xent_bwd(float* dz, const float* probs, const float* t, int rows, int cols, float scale) {
	GRID_LOOP(r, rows) {
		float st = 0.0f;
		for (int c = 0; c < cols; c++) st += t[r * cols + c];
		for (int c = 0; c < cols; c++) {
			int i = r * cols + c;
			dz[i] = scale * (probs[i] * st - t[i]);
		}
	}
}

// One image: x[ch][h][w] -> cols[(c*kh+ki)*kw+kj][oy*ow+ox], zero outside the image.
__global__ void im2col(float* cols, const float* x, int ch, int h, int w, int kh, int kw,
		int stride, int pad, int oh, int ow) {
	GRID_LOOP(i, ch * kh * kw * oh * ow) {
		int ox = i % ow;
		int oy = (i / ow) % oh;
		int row = i / (ow * oh);
		int kj = row % kw;
		int ki = (row / kw) % kh;
		int c = row / (kw * kh);
		int y = oy * stride - pad + ki;
		int xx = ox * stride - pad + kj;
		cols[i] = (y >= 0 && y < h && xx >= 0 && xx < w) ? x[(c * h + y) * w + xx] : 0.0f;
	}
}

// The adjoint of im2col for one image: dx[c][y][x] = sum of the cols entries it fed.
// Gathers instead of scattering, so no atomics and a deterministic sum order.
__global__ void col2im(float* dx, const float* cols, int ch, int h, int w, int kh, int kw,
		int stride, int pad, int oh, int ow) {
	GRID_LOOP(i, ch * h * w) {
		int xx = i % w;
		int y = (i / w) % h;
		int c = i / (w * h);
		float s = 0.0f;
		for (int ki = 0; ki < kh; ki++) {
			int ty = y + pad - ki;
			if (ty < 0 || ty % stride != 0) continue;
			int oy = ty / stride;
			if (oy >= oh) continue;
			for (int kj = 0; kj < kw; kj++) {
				int tx = xx + pad - kj;
				if (tx < 0 || tx % stride != 0) continue;
				int ox = tx / stride;
				if (ox >= ow) continue;
				s += cols[(((c * kh + ki) * kw + kj) * oh + oy) * ow + ox];
			}
		}
		dx[i] = s;
	}
}

// Max pooling without padding over planes = N*C planes of h*w; idx holds the flat input
// index of each maximum (the first one on ties).
__global__ void maxpool_fwd(float* y, int* idx, const float* x, int planes, int h, int w,
		int k, int stride, int oh, int ow) {
	GRID_LOOP(i, planes * oh * ow) {
		int ox = i % ow;
		int oy = (i / ow) % oh;
		int p = i / (ow * oh);
		int best = (p * h + oy * stride) * w + ox * stride;
		float m = x[best];
		for (int ki = 0; ki < k; ki++) {
			for (int kj = 0; kj < k; kj++) {
				int j = (p * h + oy * stride + ki) * w + ox * stride + kj;
				if (x[j] > m) { m = x[j]; best = j; }
			}
		}
		y[i] = m;
		idx[i] = best;
	}
}

// dx must be zero on entry; overlapping windows add up.
__global__ void maxpool_bwd(float* dx, const float* dy, const int* idx, int n) {
	GRID_LOOP(i, n) { atomicAdd(&dx[idx[i]], dy[i]); }
}

__device__ float sigm(float v) { return 1.0f / (1.0f + expf(-v)); }

// One LSTM step for a batch of b rows. gates[r] holds the pre-activations [i f g o], each
// hsz wide. acts receives the activated gates for the backward pass.
__global__ void lstm_fwd(float* h, float* c, float* acts, const float* gates, const float* cprev, int b, int hsz) {
	GRID_LOOP(k, b * hsz) {
		int r = k / hsz, j = k % hsz;
		const float* g = gates + r * 4 * hsz;
		float* a = acts + r * 4 * hsz;
		float ig = sigm(g[j]);
		float fg = sigm(g[hsz + j]);
		float gg = tanhf(g[2 * hsz + j]);
		float og = sigm(g[3 * hsz + j]);
		float cn = fg * cprev[k] + ig * gg;
		a[j] = ig; a[hsz + j] = fg; a[2 * hsz + j] = gg; a[3 * hsz + j] = og;
		c[k] = cn;
		h[k] = og * tanhf(cn);
	}
}

// Backward of lstm_fwd: from dh and dc (the gradient flowing into this step's c from
// later steps) to the pre-activation gradients dgates and dcprev.
__global__ void lstm_bwd(float* dgates, float* dcprev, const float* dh, const float* dc,
		const float* acts, const float* c, const float* cprev, int b, int hsz) {
	GRID_LOOP(k, b * hsz) {
		int r = k / hsz, j = k % hsz;
		const float* a = acts + r * 4 * hsz;
		float* dg = dgates + r * 4 * hsz;
		float ig = a[j], fg = a[hsz + j], gg = a[2 * hsz + j], og = a[3 * hsz + j];
		float tc = tanhf(c[k]);
		float dct = dc[k] + dh[k] * og * (1.0f - tc * tc);
		dg[j] = dct * gg * ig * (1.0f - ig);
		dg[hsz + j] = dct * cprev[k] * fg * (1.0f - fg);
		dg[2 * hsz + j] = dct * ig * (1.0f - gg * gg);
		dg[3 * hsz + j] = dh[k] * tc * og * (1.0f - og);
		dcprev[k] = dct * fg;
	}
}

// y[i] = a[i] * b[i] (y may be a or b): dropout masks.
__global__ void mul(float* y, const float* a, const float* b, int n) {
	GRID_LOOP(i, n) { y[i] = a[i] * b[i]; }
}

// y += alpha * x
__global__ void axpy(float* y, const float* x, float alpha, int n) {
	GRID_LOOP(i, n) { y[i] += alpha * x[i]; }
}

}
`
