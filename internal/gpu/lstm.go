package gpu

import (
	"fmt"
)

var _ Net = (*LSTM)(nil)

// LSTMConfig describes a stacked LSTM as worker/model builds it: windows of Steps time
// steps of Features values each (time-major within a row), LSTM layers of Hidden units
// (gates [i f g o] from [x_t, h_{t-1}]·W + b, state starting at zero), then dense layers
// (ReLU) on the top layer's last hidden state and an output layer of Outputs.
type LSTMConfig struct {
	Steps, Features int
	Hidden          []int
	Dense           []int
	Outputs         int
	MaxBatch        int
}

// LSTM is a stacked LSTM resident on the device, trained by backpropagation through
// time. Parameters are ordered lstm0.weight [Features+H0, 4·H0] (the input rows, then
// the recurrent rows), lstm0.bias [4·H0], …, then the dense head's (see MLP).
type LSTM struct {
	d      *Device
	cfg    LSTMConfig
	x      *Buffer // the batch, step-major: [t][row][feature], rows strided by MaxBatch
	xhost  []float32
	w, b   []*Buffer
	dw, db []*Buffer
	hs, cs []*Buffer // per layer, Steps+1 states of MaxBatch×H (state 0 is zero)
	acts   []*Buffer // per layer, Steps activated gates of MaxBatch×4H
	dx     []*Buffer // per layer but the top, Steps gradients at its outputs (MaxBatch×H)
	gates  *Buffer   // pre-activations of one step (MaxBatch×4·maxH), reused as dgates
	dbStep *Buffer   // one step's bias gradient (4·maxH)
	dh, dc *Buffer   // running gradients at h and c (MaxBatch×maxH)
	dcPrev *Buffer
	head   *MLP

	// Dropout (EnableDropout): one mask per layer, shared by its steps, on the layer's
	// outputs (what the layer above, or the head, reads), then the head's masks.
	masks []*Buffer // per layer, MaxBatch×H
	hsm   []*Buffer // per layer but the top, Steps masked outputs (MaxBatch×H)
	topm  *Buffer   // the top layer's masked last output (MaxBatch×H)
	armed bool
	drop  bool
}

// NewLSTM allocates an LSTM for batches of up to cfg.MaxBatch windows. Parameters
// start at zero; see SetParamsFlat.
func NewLSTM(d *Device, cfg LSTMConfig) (*LSTM, error) {
	if cfg.Steps <= 0 || cfg.Features <= 0 || len(cfg.Hidden) == 0 || cfg.MaxBatch <= 0 || cfg.Outputs <= 0 {
		return nil, fmt.Errorf("gpu: lstm needs steps, features, a layer, a positive batch and outputs, got %+v", cfg)
	}
	n := &LSTM{d: d, cfg: cfg, xhost: make([]float32, cfg.Steps*cfg.MaxBatch*cfg.Features)}
	var err error
	alloc := func(size int) *Buffer {
		if err != nil {
			return nil
		}
		var buf *Buffer
		buf, err = d.Alloc(size)
		return buf
	}
	T, B := cfg.Steps, cfg.MaxBatch
	n.x = alloc(T * B * cfg.Features)
	in, maxH := cfg.Features, 0
	for l, h := range cfg.Hidden {
		if h <= 0 {
			return nil, fmt.Errorf("gpu: lstm layer %d has %d units", l, h)
		}
		n.w, n.b = append(n.w, alloc((in+h)*4*h)), append(n.b, alloc(4*h))
		n.dw, n.db = append(n.dw, alloc((in+h)*4*h)), append(n.db, alloc(4*h))
		n.hs, n.cs = append(n.hs, alloc((T+1)*B*h)), append(n.cs, alloc((T+1)*B*h))
		n.acts = append(n.acts, alloc(T*B*4*h))
		if l+1 < len(cfg.Hidden) {
			n.dx = append(n.dx, alloc(T*B*h))
		}
		in, maxH = h, max(maxH, h)
	}
	n.gates, n.dbStep = alloc(B*4*maxH), alloc(4*maxH)
	n.dh, n.dc, n.dcPrev = alloc(B*maxH), alloc(B*maxH), alloc(B*maxH)
	if err == nil {
		top := cfg.Hidden[len(cfg.Hidden)-1]
		n.head, err = newMLP(d, append(append([]int{top}, cfg.Dense...), cfg.Outputs), ReLU, B, true)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("gpu: allocate lstm: %w", err)
	}
	return n, nil
}

// state is step t's slice (rows×h) of a per-step buffer with MaxBatch rows per step.
func (n *LSTM) state(b *Buffer, t, rows, h int) *Buffer {
	return b.Slice(t*n.cfg.MaxBatch*h, rows*h)
}

// input is layer l's input at step t (rows×in) and in: the window's features, or the
// layer below's output (masked when the forward drops).
func (n *LSTM) input(l, t, rows int) (*Buffer, int) {
	if l == 0 {
		return n.state(n.x, t, rows, n.cfg.Features), n.cfg.Features
	}
	h := n.cfg.Hidden[l-1]
	if n.drop {
		return n.state(n.hsm[l-1], t, rows, h), h
	}
	return n.state(n.hs[l-1], t+1, rows, h), h
}

// EnableDropout allocates a mask per layer and the masked outputs, and the head's.
func (n *LSTM) EnableDropout() error {
	if n.masks != nil {
		return nil
	}
	T, B := n.cfg.Steps, n.cfg.MaxBatch
	maxH := 0
	for l, h := range n.cfg.Hidden {
		m, err := n.d.Alloc(B * h)
		if err != nil {
			return fmt.Errorf("gpu: lstm dropout masks: %w", err)
		}
		n.masks = append(n.masks, m)
		if l+1 < len(n.cfg.Hidden) {
			o, err := n.d.Alloc(T * B * h)
			if err != nil {
				return fmt.Errorf("gpu: lstm dropout outputs: %w", err)
			}
			n.hsm = append(n.hsm, o)
		}
		maxH = max(maxH, h)
	}
	var err error
	if n.topm, err = n.d.Alloc(B * maxH); err != nil {
		return fmt.Errorf("gpu: lstm dropout outputs: %w", err)
	}
	return n.head.EnableDropout()
}

// SetMasks uploads the layers' masks, then the head's, and arms them for the next
// Forward.
func (n *LSTM) SetMasks(masks [][]float32, rows int) error {
	L := len(n.cfg.Hidden)
	if len(masks) < L || len(n.masks) != L {
		return fmt.Errorf("gpu: lstm has %d layer dropout masks, got %d (EnableDropout first)", len(n.masks), len(masks))
	}
	for l, h := range n.cfg.Hidden {
		if rows <= 0 || rows > n.cfg.MaxBatch || len(masks[l]) < rows*h {
			return fmt.Errorf("gpu: lstm dropout mask %d: %d values for %d rows of %d", l, len(masks[l]), rows, h)
		}
		if err := n.masks[l].Slice(0, rows*h).Write(masks[l][:rows*h]); err != nil {
			return err
		}
	}
	if err := n.head.SetMasks(masks[L:], rows); err != nil {
		return err
	}
	n.armed = true
	return nil
}

// Forward runs rows windows of x (rows×Steps·Features, time-major within a row) through
// the layers and the head, and writes the logits.
func (n *LSTM) Forward(x []float32, rows int, logits []float32) error {
	T, F, B := n.cfg.Steps, n.cfg.Features, n.cfg.MaxBatch
	if rows <= 0 || rows > B || len(x) != rows*T*F || len(logits) != rows*n.cfg.Outputs {
		return fmt.Errorf("gpu: lstm forward: %d rows (max %d), x %d values (want %d), logits %d (want %d)",
			rows, B, len(x), rows*T*F, len(logits), rows*n.cfg.Outputs)
	}
	for r := range rows { // to step-major, so that each step's rows are one matrix
		for t := range T {
			copy(n.xhost[(t*B+r)*F:(t*B+r+1)*F], x[(r*T+t)*F:(r*T+t+1)*F])
		}
	}
	if err := n.x.Write(n.xhost); err != nil {
		return err
	}
	d := n.d
	n.drop, n.armed = n.armed, false
	if !n.drop {
		n.head.armed = false // the head drops only with the layers
	}
	for l, h := range n.cfg.Hidden {
		if err := n.state(n.hs[l], 0, rows, h).Zero(); err != nil {
			return err
		}
		if err := n.state(n.cs[l], 0, rows, h).Zero(); err != nil {
			return err
		}
		w := n.w[l]
		for t := range T {
			in, k := n.input(l, t, rows)
			wx, wh := w.Slice(0, k*4*h), w.Slice(k*4*h, h*4*h)
			gates := n.gates.Slice(0, rows*4*h)
			if err := d.Gemm(false, false, rows, 4*h, k, 1, in, wx, 0, gates); err != nil {
				return fmt.Errorf("gpu: lstm layer %d step %d: %w", l, t, err)
			}
			if err := d.Gemm(false, false, rows, 4*h, h, 1, n.state(n.hs[l], t, rows, h), wh, 1, gates); err != nil {
				return fmt.Errorf("gpu: lstm layer %d step %d: %w", l, t, err)
			}
			if err := d.AddBiasRows(gates, n.b[l], rows, 4*h); err != nil {
				return err
			}
			if err := d.LSTMCell(rows, h, gates, n.state(n.cs[l], t, rows, h), n.state(n.hs[l], t+1, rows, h),
				n.state(n.cs[l], t+1, rows, h), n.state(n.acts[l], t, rows, 4*h)); err != nil {
				return err
			}
			if n.drop && l+1 < len(n.cfg.Hidden) {
				if err := d.Mul(n.state(n.hsm[l], t, rows, h), n.state(n.hs[l], t+1, rows, h), n.masks[l], rows*h); err != nil {
					return err
				}
			}
		}
	}
	top := len(n.cfg.Hidden) - 1
	h := n.cfg.Hidden[top]
	last := n.state(n.hs[top], T, rows, h)
	if n.drop {
		if err := d.Mul(n.topm.Slice(0, rows*h), last, n.masks[top], rows*h); err != nil {
			return err
		}
		last = n.topm.Slice(0, rows*h)
	}
	return n.head.forwardFrom(last, rows, logits)
}

// Backward runs the head's backward, then backpropagation through time from the top
// layer down.
func (n *LSTM) Backward(dlogits []float32, rows int) error {
	if err := n.head.Backward(dlogits, rows); err != nil {
		return err
	}
	d, T := n.d, n.cfg.Steps
	for l := len(n.cfg.Hidden) - 1; l >= 0; l-- {
		h := n.cfg.Hidden[l]
		dh, dc, dcPrev := n.dh.Slice(0, rows*h), n.dc.Slice(0, rows*h), n.dcPrev.Slice(0, rows*h)
		if err := dc.Zero(); err != nil {
			return err
		}
		// The gradient reaching h_T: the head's (top layer) or the upper layer's.
		top := l == len(n.cfg.Hidden)-1
		if n.drop && !top { // the gradients at the masked outputs, through the mask
			for t := range T {
				g := n.state(n.dx[l], t, rows, h)
				if err := d.Mul(g, g, n.masks[l], rows*h); err != nil {
					return err
				}
			}
		}
		if top {
			if err := dh.CopyFrom(n.head.dx.Slice(0, rows*h)); err != nil {
				return err
			}
			if n.drop {
				if err := d.Mul(dh, dh, n.masks[l], rows*h); err != nil {
					return err
				}
			}
		} else if err := dh.CopyFrom(n.state(n.dx[l], T-1, rows, h)); err != nil {
			return err
		}
		w, dw := n.w[l], n.dw[l]
		for t := T - 1; t >= 0; t-- {
			in, k := n.input(l, t, rows)
			dgates := n.gates.Slice(0, rows*4*h)
			if err := d.LSTMCellGrad(rows, h, dh, dc, n.state(n.acts[l], t, rows, 4*h), n.state(n.cs[l], t+1, rows, h),
				n.state(n.cs[l], t, rows, h), dgates, dcPrev); err != nil {
				return err
			}
			beta := float32(1)
			if t == T-1 {
				beta = 0
			}
			// dW = [x_t, h_{t-1}]ᵀ·dgates, as its input rows and its recurrent rows.
			if err := d.Gemm(true, false, k, 4*h, rows, 1, in, dgates, beta, dw.Slice(0, k*4*h)); err != nil {
				return fmt.Errorf("gpu: lstm layer %d dWx step %d: %w", l, t, err)
			}
			if err := d.Gemm(true, false, h, 4*h, rows, 1, n.state(n.hs[l], t, rows, h), dgates, beta, dw.Slice(k*4*h, h*4*h)); err != nil {
				return fmt.Errorf("gpu: lstm layer %d dWh step %d: %w", l, t, err)
			}
			if t == T-1 {
				if err := d.BiasRowsGrad(n.db[l], dgates, rows, 4*h); err != nil {
					return err
				}
			} else {
				if err := d.BiasRowsGrad(n.dbStep.Slice(0, 4*h), dgates, rows, 4*h); err != nil {
					return err
				}
				if err := d.Axpy(n.db[l], n.dbStep, 1, 4*h); err != nil {
					return err
				}
			}
			if l > 0 { // the lower layer's output gradient at step t
				if err := d.Gemm(false, true, rows, k, 4*h, 1, dgates, w.Slice(0, k*4*h), 0, n.state(n.dx[l-1], t, rows, k)); err != nil {
					return fmt.Errorf("gpu: lstm layer %d dx step %d: %w", l, t, err)
				}
			}
			if t == 0 {
				break
			}
			// dh_{t-1} = dgates·Whᵀ, plus what the upper layer sends to h_{t-1}.
			if err := d.Gemm(false, true, rows, h, 4*h, 1, dgates, w.Slice(k*4*h, h*4*h), 0, dh); err != nil {
				return fmt.Errorf("gpu: lstm layer %d dh step %d: %w", l, t, err)
			}
			if !top {
				if err := d.Axpy(dh, n.state(n.dx[l], t-1, rows, h), 1, rows*h); err != nil {
					return err
				}
			}
			if err := dc.CopyFrom(dcPrev); err != nil {
				return err
			}
		}
	}
	return nil
}

// GradsInto downloads the gradients: every LSTM layer's, then the head's.
func (n *LSTM) GradsInto(dst []float32) error { return headedGrads(n.dw, n.db, n.head, dst) }

// SetParamsFlat uploads the parameters: every LSTM layer's, then the head's.
func (n *LSTM) SetParamsFlat(src []float32) error { return headedParams(n.w, n.b, n.head, src) }

// Close frees the device memory.
func (n *LSTM) Close() error {
	return freeAll(n.head, []*Buffer{n.x, n.gates, n.dbStep, n.dh, n.dc, n.dcPrev, n.topm},
		n.w, n.b, n.dw, n.db, n.hs, n.cs, n.acts, n.dx, n.masks, n.hsm)
}
