package gpu

import (
	"errors"
	"fmt"
)

// Net is a network resident on a device whose loss is computed by the caller: Forward
// leaves the logits on the host, Backward takes their gradient back. MLP, CNN and LSTM
// are Nets; each keeps its parameters in one flat vector whose order is worker/model's
// layout.
type Net interface {
	// Forward runs rows rows of x and writes the logits (rows×outputs).
	Forward(x []float32, rows int, logits []float32) error
	// Backward takes the gradient at the logits of the last Forward and leaves every
	// parameter's gradient on the device.
	Backward(dlogits []float32, rows int) error
	// GradsInto downloads the gradients as one flat vector.
	GradsInto(dst []float32) error
	// SetParamsFlat uploads the parameters from one flat vector.
	SetParamsFlat(src []float32) error
	// EnableDropout allocates the network's inverted-dropout masks.
	EnableDropout() error
	// SetMasks uploads the masks (in worker/model's DropoutWidths order, each at least
	// rows×width) and arms them for the next Forward only: a training step.
	SetMasks(masks [][]float32, rows int) error
	// Close frees the device memory.
	Close() error
}

var (
	_ Net = (*MLP)(nil)
	_ Net = (*CNN)(nil)
)

// ConvLayer is one convolution of a CNN.
type ConvLayer struct {
	Filters, Kernel, Stride, Padding int
}

// CNNConfig describes a CNN as worker/model builds it: convolutions over C×H×W images,
// each followed by the activation and, when Pool > 1, a Pool×Pool max-pool with stride
// Pool; then dense layers (Dense, with the activation) and an output layer of Outputs.
type CNNConfig struct {
	Channels, Height, Width int
	Conv                    []ConvLayer
	Pool                    int
	Dense                   []int
	Outputs                 int
	Act                     Activation
	MaxBatch                int
}

// CNN is a convolutional network resident on the device. Parameters are ordered
// conv0.weight [F, C, k, k], conv0.bias [F], …, then the dense head's (see MLP).
type CNN struct {
	d        *Device
	cfg      CNNConfig
	conv     []ConvShape // N = MaxBatch
	pool     []PoolShape // Planes = MaxBatch·F; unused when Pool <= 1
	x        *Buffer     // the input batch
	w, b     []*Buffer
	dw, db   []*Buffer
	y        []*Buffer // each convolution's activated output
	p, idx   []*Buffer // pooled outputs and their argmax (Pool > 1)
	dy       []*Buffer // gradient at each convolution's output (pre-activation after ActivateGrad)
	dout     []*Buffer // gradient at each layer's output after pooling (dout[i] is layer i+1's dx)
	cols     *Buffer   // im2col workspace
	dcols    *Buffer
	head     *MLP
	features int
}

// NewCNN allocates a CNN for batches of up to cfg.MaxBatch images. Parameters start at
// zero; see SetParamsFlat.
func NewCNN(d *Device, cfg CNNConfig) (*CNN, error) {
	if len(cfg.Conv) == 0 || cfg.MaxBatch <= 0 || cfg.Outputs <= 0 {
		return nil, fmt.Errorf("gpu: cnn needs a convolution, a positive batch and outputs, got %+v", cfg)
	}
	if _, _, err := cfg.Act.kernels(); err != nil {
		return nil, err
	}
	n := &CNN{d: d, cfg: cfg}
	c, h, w := cfg.Channels, cfg.Height, cfg.Width
	maxCols := 0
	for i, l := range cfg.Conv {
		s := ConvShape{N: cfg.MaxBatch, C: c, H: h, W: w, F: l.Filters, KH: l.Kernel, KW: l.Kernel, Stride: max(l.Stride, 1), Pad: l.Padding}
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("gpu: cnn conv %d: %w", i, err)
		}
		n.conv = append(n.conv, s)
		maxCols = max(maxCols, s.ColsLen())
		c, h, w = l.Filters, s.OutH(), s.OutW()
		if cfg.Pool > 1 {
			ps := PoolShape{Planes: cfg.MaxBatch * c, H: h, W: w, K: cfg.Pool, Stride: cfg.Pool}
			if err := ps.validate(); err != nil {
				return nil, fmt.Errorf("gpu: cnn pool after conv %d: %w", i, err)
			}
			n.pool = append(n.pool, ps)
			h, w = ps.OutH(), ps.OutW()
		}
	}
	n.features = c * h * w
	var err error
	alloc := func(size int) *Buffer {
		if err != nil {
			return nil
		}
		var buf *Buffer
		buf, err = d.Alloc(size)
		return buf
	}
	n.x = alloc(cfg.MaxBatch * cfg.Channels * cfg.Height * cfg.Width)
	for i, s := range n.conv {
		k := s.C * s.KH * s.KW
		out := s.N * s.F * s.OutH() * s.OutW()
		n.w, n.b = append(n.w, alloc(s.F*k)), append(n.b, alloc(s.F))
		n.dw, n.db = append(n.dw, alloc(s.F*k)), append(n.db, alloc(s.F))
		n.y, n.dy = append(n.y, alloc(out)), append(n.dy, alloc(out))
		size := out
		if cfg.Pool > 1 {
			size = n.pool[i].OutLen()
			n.p, n.idx = append(n.p, alloc(size)), append(n.idx, alloc(size))
		}
		if i+1 < len(n.conv) {
			n.dout = append(n.dout, alloc(size))
		}
	}
	n.cols, n.dcols = alloc(maxCols), alloc(maxCols)
	if err == nil {
		sizes := append(append([]int{n.features}, cfg.Dense...), cfg.Outputs)
		n.head, err = newMLP(d, sizes, cfg.Act, cfg.MaxBatch, true)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("gpu: allocate cnn: %w", err)
	}
	return n, nil
}

// out is layer i's output after pooling.
func (n *CNN) out(i int) *Buffer {
	if n.cfg.Pool > 1 {
		return n.p[i]
	}
	return n.y[i]
}

// shapes returns layer i's convolution and pooling shapes for a batch of rows.
func (n *CNN) shapes(i, rows int) (ConvShape, PoolShape) {
	s := n.conv[i]
	s.N = rows
	var ps PoolShape
	if n.cfg.Pool > 1 {
		ps = n.pool[i]
		ps.Planes = rows * s.F
	}
	return s, ps
}

// Forward runs the convolutions and the dense head on rows images of x (rows×C·H·W,
// NCHW) and writes the logits.
func (n *CNN) Forward(x []float32, rows int, logits []float32) error {
	in := n.cfg.Channels * n.cfg.Height * n.cfg.Width
	if rows <= 0 || rows > n.cfg.MaxBatch || len(x) != rows*in || len(logits) != rows*n.cfg.Outputs {
		return fmt.Errorf("gpu: cnn forward: %d rows (max %d), x %d values (want %d), logits %d (want %d)",
			rows, n.cfg.MaxBatch, len(x), rows*in, len(logits), rows*n.cfg.Outputs)
	}
	d := n.d
	if err := n.x.Slice(0, rows*in).Write(x); err != nil {
		return err
	}
	src := n.x
	for i := range n.conv {
		s, ps := n.shapes(i, rows)
		size := rows * s.F * s.OutH() * s.OutW()
		if err := d.Conv2D(s, src, n.w[i], n.b[i], n.y[i], n.cols); err != nil {
			return fmt.Errorf("gpu: cnn conv %d: %w", i, err)
		}
		if err := d.Activate(n.cfg.Act, n.y[i], n.y[i], size); err != nil {
			return err
		}
		if n.cfg.Pool > 1 {
			if err := d.MaxPool(ps, n.y[i], n.p[i], n.idx[i]); err != nil {
				return fmt.Errorf("gpu: cnn pool %d: %w", i, err)
			}
		}
		src = n.out(i)
	}
	return n.head.forwardFrom(src, rows, logits)
}

// Backward runs the dense head's backward, then each convolution's, from the gradient
// at the logits of the last Forward.
func (n *CNN) Backward(dlogits []float32, rows int) error {
	if err := n.head.Backward(dlogits, rows); err != nil {
		return err
	}
	d := n.d
	g := n.head.dx // gradient at the last layer's output
	for i := len(n.conv) - 1; i >= 0; i-- {
		s, ps := n.shapes(i, rows)
		size := rows * s.F * s.OutH() * s.OutW()
		dy := n.dy[i].Slice(0, size)
		if n.cfg.Pool > 1 {
			if err := d.MaxPoolGrad(ps, dy, g, n.idx[i]); err != nil {
				return fmt.Errorf("gpu: cnn pool %d grad: %w", i, err)
			}
		} else if err := dy.CopyFrom(g.Slice(0, size)); err != nil {
			return err
		}
		if err := d.ActivateGrad(n.cfg.Act, dy, dy, n.y[i], size); err != nil {
			return err
		}
		src, dx := n.x, (*Buffer)(nil)
		if i > 0 {
			src, dx = n.out(i-1), n.dout[i-1]
		}
		if err := d.Conv2DGrad(s, src, n.w[i], dy, dx, n.dw[i], n.db[i], n.cols, n.dcols); err != nil {
			return fmt.Errorf("gpu: cnn conv %d grad: %w", i, err)
		}
		g = dx
	}
	return nil
}

// EnableDropout allocates the dense head's masks (a CNN drops after its hidden dense
// layers only).
func (n *CNN) EnableDropout() error { return n.head.EnableDropout() }

// SetMasks arms the dense head's masks for the next Forward.
func (n *CNN) SetMasks(masks [][]float32, rows int) error { return n.head.SetMasks(masks, rows) }

// GradsInto downloads the gradients: every convolution's, then the head's.
func (n *CNN) GradsInto(dst []float32) error { return headedGrads(n.dw, n.db, n.head, dst) }

// SetParamsFlat uploads the parameters: every convolution's, then the head's.
func (n *CNN) SetParamsFlat(src []float32) error { return headedParams(n.w, n.b, n.head, src) }

// headedGrads downloads a network's own gradients (dw[0], db[0], …), then its dense
// head's, into one flat vector.
func headedGrads(dw, db []*Buffer, head *MLP, dst []float32) error {
	off, err := eachBuffer(dw, db, len(dst), func(b *Buffer, at int) error { return b.Read(dst[at : at+b.Len()]) })
	if err != nil {
		return err
	}
	return head.GradsInto(dst[off:])
}

// headedParams uploads a network's own parameters (w[0], b[0], …), then its dense
// head's, from one flat vector.
func headedParams(w, b []*Buffer, head *MLP, src []float32) error {
	off, err := eachBuffer(w, b, len(src), func(buf *Buffer, at int) error { return buf.Write(src[at : at+buf.Len()]) })
	if err != nil {
		return err
	}
	return head.SetParamsFlat(src[off:])
}

// freeAll frees every buffer of the groups (nil ones skipped) and then the head, if
// any.
func freeAll(head *MLP, groups ...[]*Buffer) error {
	var errs []error
	for _, group := range groups {
		for _, b := range group {
			if b != nil {
				errs = append(errs, b.Free())
			}
		}
	}
	if head != nil {
		errs = append(errs, head.Close())
	}
	return errors.Join(errs...)
}

// eachBuffer calls f on ws[0], bs[0], ws[1], bs[1], … with each one's offset in a flat
// vector of total values and returns the offset after the last.
func eachBuffer(ws, bs []*Buffer, total int, f func(b *Buffer, at int) error) (int, error) {
	off := 0
	for l := range ws {
		for _, b := range []*Buffer{ws[l], bs[l]} {
			if off+b.Len() > total {
				return 0, fmt.Errorf("gpu: a flat vector of %d values is too short for the parameters", total)
			}
			if err := f(b, off); err != nil {
				return 0, err
			}
			off += b.Len()
		}
	}
	return off, nil
}

// Close frees the device memory.
func (n *CNN) Close() error {
	return freeAll(n.head, []*Buffer{n.x, n.cols, n.dcols}, n.w, n.b, n.dw, n.db, n.y, n.dy, n.p, n.idx, n.dout)
}
