package gpu

import (
	"fmt"
)

// Activation names an elementwise nonlinearity.
type Activation int

// The activations the models use.
const (
	ReLU Activation = iota
	Sigmoid
	Tanh
	// LeakyReLU is x for x > 0 and LeakyReLUSlope·x below (worker/model's leaky_relu).
	LeakyReLU
)

// LeakyReLUSlope is LeakyReLU's negative-side slope; the kernels hard-code it.
const LeakyReLUSlope = 0.01

func (a Activation) String() string {
	switch a {
	case ReLU:
		return "relu"
	case Sigmoid:
		return "sigmoid"
	case Tanh:
		return "tanh"
	case LeakyReLU:
		return "leaky_relu"
	}
	return fmt.Sprintf("Activation(%d)", int(a))
}

func (a Activation) kernels() (fwd, bwd string, err error) {
	switch a {
	case ReLU:
		return "relu_fwd", "relu_bwd", nil
	case Sigmoid:
		return "sigmoid_fwd", "sigmoid_bwd", nil
	case Tanh:
		return "tanh_fwd", "tanh_bwd", nil
	case LeakyReLU:
		return "leaky_relu_fwd", "leaky_relu_bwd", nil
	}
	return "", "", fmt.Errorf("gpu: unknown activation %d", int(a))
}

func need(op string, b *Buffer, n int) error {
	if b == nil {
		return fmt.Errorf("gpu: %s: nil buffer", op)
	}
	if b.n < n {
		return fmt.Errorf("gpu: %s: buffer of %d elements, need %d", op, b.n, n)
	}
	return nil
}

// Gemm computes C = alpha*op(A)*op(B) + beta*C on row-major matrices, where op(A) is
// m×k, op(B) is k×n and C is m×n; transA says A is stored k×m, transB that B is stored
// n×k. cuBLAS is column-major, so it is asked for Cᵀ = op(B)ᵀ·op(A)ᵀ, which has the same
// bytes as row-major C.
func (d *Device) Gemm(transA, transB bool, m, n, k int, alpha float32, a, b *Buffer, beta float32, c *Buffer) error {
	if err := need("gemm A", a, m*k); err != nil {
		return err
	}
	if err := need("gemm B", b, k*n); err != nil {
		return err
	}
	if err := need("gemm C", c, m*n); err != nil {
		return err
	}
	opA, lda := int32(cublasOpN), k
	if transA {
		opA, lda = cublasOpT, m
	}
	opB, ldb := int32(cublasOpN), n
	if transB {
		opB, ldb = cublasOpT, k
	}
	return d.do(func() error {
		return checkCublas("cublasSgemm_v2", d.blas.Sgemm(d.handle, opB, opA, int32(n), int32(m), int32(k),
			&alpha, b.ptr, int32(ldb), a.ptr, int32(lda), &beta, c.ptr, int32(n)))
	})
}

// MatMulGrad is the backward of C = A·B (A m×k, B k×n): dA = dC·Bᵀ and dB = Aᵀ·dC,
// accumulated into da and db with weight beta on their old contents (0 overwrites).
func (d *Device) MatMulGrad(m, n, k int, a, b, dc, da, db *Buffer, beta float32) error {
	if da != nil {
		if err := d.Gemm(false, true, m, k, n, 1, dc, b, beta, da); err != nil {
			return fmt.Errorf("gpu: matmul grad dA: %w", err)
		}
	}
	if db != nil {
		if err := d.Gemm(true, false, k, n, m, 1, a, dc, beta, db); err != nil {
			return fmt.Errorf("gpu: matmul grad dB: %w", err)
		}
	}
	return nil
}

// AddBiasRows adds b (cols) to every row of y (rows×cols).
func (d *Device) AddBiasRows(y, b *Buffer, rows, cols int) error {
	if err := need("bias_rows y", y, rows*cols); err != nil {
		return err
	}
	if err := need("bias_rows b", b, cols); err != nil {
		return err
	}
	return d.launch("bias_rows", rows*cols, y, b, rows, cols)
}

// BiasRowsGrad writes db[c] = Σ_r dy[r][c].
func (d *Device) BiasRowsGrad(db, dy *Buffer, rows, cols int) error {
	if err := need("bias_rows_grad dy", dy, rows*cols); err != nil {
		return err
	}
	if err := need("bias_rows_grad db", db, cols); err != nil {
		return err
	}
	return d.launch("bias_rows_grad", cols, db, dy, rows, cols)
}

// AddBiasChannels adds b[c] to channel c of y (n×ch×hw, NCHW).
func (d *Device) AddBiasChannels(y, b *Buffer, n, ch, hw int) error {
	if err := need("bias_chan y", y, n*ch*hw); err != nil {
		return err
	}
	if err := need("bias_chan b", b, ch); err != nil {
		return err
	}
	return d.launch("bias_chan", n*ch*hw, y, b, n, ch, hw)
}

// BiasChannelsGrad writes db[c] = Σ over images and positions of dy[·][c][·].
func (d *Device) BiasChannelsGrad(db, dy *Buffer, n, ch, hw int) error {
	if err := need("bias_chan_grad dy", dy, n*ch*hw); err != nil {
		return err
	}
	if err := need("bias_chan_grad db", db, ch); err != nil {
		return err
	}
	return d.launch("bias_chan_grad", ch, db, dy, n, ch, hw)
}

// Activate writes y = act(x) for n elements; y may be x.
func (d *Device) Activate(act Activation, y, x *Buffer, n int) error {
	fwd, _, err := act.kernels()
	if err != nil {
		return err
	}
	if err := need(fwd+" x", x, n); err != nil {
		return err
	}
	if err := need(fwd+" y", y, n); err != nil {
		return err
	}
	return d.launch(fwd, n, y, x, n)
}

// ActivateGrad writes dx = dy · act'(x), computed from the forward output y.
func (d *Device) ActivateGrad(act Activation, dx, dy, y *Buffer, n int) error {
	_, bwd, err := act.kernels()
	if err != nil {
		return err
	}
	for _, b := range []*Buffer{dx, dy, y} {
		if err := need(bwd, b, n); err != nil {
			return err
		}
	}
	return d.launch(bwd, n, dx, dy, y, n)
}

// SoftmaxCrossEntropy writes the row-wise softmax of logits (rows×cols) into probs and
// each row's cross-entropy against targets (rows×cols, one-hot or soft) into loss
// (rows).
func (d *Device) SoftmaxCrossEntropy(probs, loss, logits, targets *Buffer, rows, cols int) error {
	for _, b := range []*Buffer{probs, logits, targets} {
		if err := need("softmax_xent", b, rows*cols); err != nil {
			return err
		}
	}
	if err := need("softmax_xent loss", loss, rows); err != nil {
		return err
	}
	return d.launch("softmax_xent_fwd", rows, probs, loss, logits, targets, rows, cols)
}

// SoftmaxCrossEntropyGrad writes the gradient of scale·Σ_r loss[r] with respect to the
// logits; scale is 1/rows for a mean loss.
func (d *Device) SoftmaxCrossEntropyGrad(dlogits, probs, targets *Buffer, rows, cols int, scale float32) error {
	for _, b := range []*Buffer{dlogits, probs, targets} {
		if err := need("softmax_xent_grad", b, rows*cols); err != nil {
			return err
		}
	}
	return d.launch("softmax_xent_bwd", rows, dlogits, probs, targets, rows, cols, scale)
}

// Axpy adds alpha·x to y (n elements).
func (d *Device) Axpy(y, x *Buffer, alpha float32, n int) error {
	if err := need("axpy y", y, n); err != nil {
		return err
	}
	if err := need("axpy x", x, n); err != nil {
		return err
	}
	return d.launch("axpy", n, y, x, alpha, n)
}

// Mul writes y = a ⊙ b for n elements; y may be a or b.
func (d *Device) Mul(y, a, b *Buffer, n int) error {
	for _, x := range []*Buffer{y, a, b} {
		if err := need("mul", x, n); err != nil {
			return err
		}
	}
	return d.launch("mul", n, y, a, b, n)
}

// ConvShape describes a 2-D convolution over NCHW input with F filters of C×KH×KW.
type ConvShape struct {
	N, C, H, W  int
	F, KH, KW   int
	Stride, Pad int
}

// OutH is the output height.
func (s ConvShape) OutH() int { return (s.H+2*s.Pad-s.KH)/s.Stride + 1 }

// OutW is the output width.
func (s ConvShape) OutW() int { return (s.W+2*s.Pad-s.KW)/s.Stride + 1 }

// ColsLen is the size of the im2col workspace for one image.
func (s ConvShape) ColsLen() int { return s.C * s.KH * s.KW * s.OutH() * s.OutW() }

func (s ConvShape) validate() error {
	if s.N <= 0 || s.C <= 0 || s.H <= 0 || s.W <= 0 || s.F <= 0 || s.KH <= 0 || s.KW <= 0 || s.Stride <= 0 || s.Pad < 0 {
		return fmt.Errorf("gpu: invalid conv shape %+v", s)
	}
	if s.OutH() <= 0 || s.OutW() <= 0 {
		return fmt.Errorf("gpu: conv shape %+v has an empty output", s)
	}
	return nil
}

// Im2col lays out one image (C×H×W) as columns (C·KH·KW × OutH·OutW).
func (d *Device) Im2col(cols, x *Buffer, s ConvShape) error {
	if err := s.validate(); err != nil {
		return err
	}
	if err := need("im2col x", x, s.C*s.H*s.W); err != nil {
		return err
	}
	if err := need("im2col cols", cols, s.ColsLen()); err != nil {
		return err
	}
	return d.launch("im2col", s.ColsLen(), cols, x, s.C, s.H, s.W, s.KH, s.KW, s.Stride, s.Pad, s.OutH(), s.OutW())
}

// Col2im is the adjoint of Im2col: it writes dx (C×H×W) from column gradients.
func (d *Device) Col2im(dx, cols *Buffer, s ConvShape) error {
	if err := s.validate(); err != nil {
		return err
	}
	if err := need("col2im dx", dx, s.C*s.H*s.W); err != nil {
		return err
	}
	if err := need("col2im cols", cols, s.ColsLen()); err != nil {
		return err
	}
	return d.launch("col2im", s.C*s.H*s.W, dx, cols, s.C, s.H, s.W, s.KH, s.KW, s.Stride, s.Pad, s.OutH(), s.OutW())
}

// Conv2D computes y (N×F×OutH×OutW) = w (F × C·KH·KW) ⊛ x (N×C×H×W) + b (F) per image
// as im2col then one GEMM. cols is a workspace of at least s.ColsLen(); b may be nil.
func (d *Device) Conv2D(s ConvShape, x, w, b, y, cols *Buffer) error {
	if err := s.validate(); err != nil {
		return err
	}
	k, hw := s.C*s.KH*s.KW, s.OutH()*s.OutW()
	if err := need("conv y", y, s.N*s.F*hw); err != nil {
		return err
	}
	if err := need("conv x", x, s.N*s.C*s.H*s.W); err != nil {
		return err
	}
	for i := range s.N {
		xi := x.Slice(i*s.C*s.H*s.W, s.C*s.H*s.W)
		if err := d.Im2col(cols, xi, s); err != nil {
			return err
		}
		if err := d.Gemm(false, false, s.F, hw, k, 1, w, cols, 0, y.Slice(i*s.F*hw, s.F*hw)); err != nil {
			return fmt.Errorf("gpu: conv image %d: %w", i, err)
		}
	}
	if b != nil {
		return d.AddBiasChannels(y, b, s.N, s.F, hw)
	}
	return nil
}

// Conv2DGrad is the backward of Conv2D: it writes dw and db (when not nil) and dx (when
// not nil) from dy. cols and dcols are workspaces of at least s.ColsLen() each.
func (d *Device) Conv2DGrad(s ConvShape, x, w, dy, dx, dw, db, cols, dcols *Buffer) error {
	if err := s.validate(); err != nil {
		return err
	}
	k, hw := s.C*s.KH*s.KW, s.OutH()*s.OutW()
	if err := need("conv grad dy", dy, s.N*s.F*hw); err != nil {
		return err
	}
	for i := range s.N {
		xi := x.Slice(i*s.C*s.H*s.W, s.C*s.H*s.W)
		dyi := dy.Slice(i*s.F*hw, s.F*hw)
		if dw != nil {
			if err := d.Im2col(cols, xi, s); err != nil {
				return err
			}
			beta := float32(1)
			if i == 0 {
				beta = 0
			}
			// dW (F×K) += dY_i (F×HW) · cols_iᵀ (HW×K)
			if err := d.Gemm(false, true, s.F, k, hw, 1, dyi, cols, beta, dw); err != nil {
				return fmt.Errorf("gpu: conv grad dW image %d: %w", i, err)
			}
		}
		if dx != nil {
			// dcols (K×HW) = Wᵀ (K×F) · dY_i (F×HW)
			if err := d.Gemm(true, false, k, hw, s.F, 1, w, dyi, 0, dcols); err != nil {
				return fmt.Errorf("gpu: conv grad dX image %d: %w", i, err)
			}
			if err := d.Col2im(dx.Slice(i*s.C*s.H*s.W, s.C*s.H*s.W), dcols, s); err != nil {
				return err
			}
		}
	}
	if db != nil {
		return d.BiasChannelsGrad(db, dy, s.N, s.F, hw)
	}
	return nil
}

// PoolShape describes max pooling without padding over Planes = N·C planes of H×W.
type PoolShape struct {
	Planes, H, W, K, Stride int
}

// OutH is the output height.
func (s PoolShape) OutH() int { return (s.H-s.K)/s.Stride + 1 }

// OutW is the output width.
func (s PoolShape) OutW() int { return (s.W-s.K)/s.Stride + 1 }

// OutLen is the number of outputs.
func (s PoolShape) OutLen() int { return s.Planes * s.OutH() * s.OutW() }

func (s PoolShape) validate() error {
	if s.Planes <= 0 || s.K <= 0 || s.Stride <= 0 || s.H < s.K || s.W < s.K {
		return fmt.Errorf("gpu: invalid pool shape %+v", s)
	}
	return nil
}

// MaxPool writes y (OutLen) and idx (OutLen int32, the flat index of each maximum).
func (d *Device) MaxPool(s PoolShape, x, y, idx *Buffer) error {
	if err := s.validate(); err != nil {
		return err
	}
	if err := need("maxpool x", x, s.Planes*s.H*s.W); err != nil {
		return err
	}
	for _, b := range []*Buffer{y, idx} {
		if err := need("maxpool out", b, s.OutLen()); err != nil {
			return err
		}
	}
	return d.launch("maxpool_fwd", s.OutLen(), y, idx, x, s.Planes, s.H, s.W, s.K, s.Stride, s.OutH(), s.OutW())
}

// MaxPoolGrad writes dx (Planes·H·W): each dy goes to the input its maximum came from.
func (d *Device) MaxPoolGrad(s PoolShape, dx, dy, idx *Buffer) error {
	if err := s.validate(); err != nil {
		return err
	}
	if err := need("maxpool grad dx", dx, s.Planes*s.H*s.W); err != nil {
		return err
	}
	if err := dx.Zero(); err != nil {
		return err
	}
	return d.launch("maxpool_bwd", s.OutLen(), dx, dy, idx, s.OutLen())
}

// LSTMCell runs one LSTM step's gate math for a batch of b rows and hidden size h:
// gates (b×4h, pre-activations [i f g o] from x·Wx + hprev·Wh + bias) and cprev (b×h)
// give c, hout (b×h) and acts (b×4h, the activated gates kept for the backward).
func (d *Device) LSTMCell(b, h int, gates, cprev, hout, c, acts *Buffer) error {
	for _, x := range []*Buffer{gates, acts} {
		if err := need("lstm gates", x, 4*b*h); err != nil {
			return err
		}
	}
	for _, x := range []*Buffer{cprev, hout, c} {
		if err := need("lstm state", x, b*h); err != nil {
			return err
		}
	}
	return d.launch("lstm_fwd", b*h, hout, c, acts, gates, cprev, b, h)
}

// LSTMCellGrad is the backward of LSTMCell: from dh and dc (b×h; dc is what later steps
// send back into c) to dgates (b×4h, pre-activation) and dcprev (b×h).
func (d *Device) LSTMCellGrad(b, h int, dh, dc, acts, c, cprev, dgates, dcprev *Buffer) error {
	for _, x := range []*Buffer{dgates, acts} {
		if err := need("lstm grad gates", x, 4*b*h); err != nil {
			return err
		}
	}
	for _, x := range []*Buffer{dh, dc, c, cprev, dcprev} {
		if err := need("lstm grad state", x, b*h); err != nil {
			return err
		}
	}
	return d.launch("lstm_bwd", b*h, dgates, dcprev, dh, dc, acts, c, cprev, b, h)
}
