package gpu

import (
	"fmt"
)

// MLP is a multilayer perceptron whose parameters, activations and gradients live on
// the device across steps: Step moves only the batch in (and the per-row losses out),
// Grads moves the gradients out. Layer l computes h_{l+1} = act(h_l·W_l + b_l) with W_l
// stored row-major as in×out; the last layer's output are the logits of a softmax
// cross-entropy loss averaged over the batch.
type MLP struct {
	d        *Device
	sizes    []int
	act      Activation
	maxBatch int
	w, b     []*Buffer // parameters
	dw, db   []*Buffer // gradients of the last Step
	h        []*Buffer // h[0] the input batch, h[l+1] the output of layer l
	dz       []*Buffer // gradient with respect to layer l's pre-activation (reused for dh)
	tgt      *Buffer
	probs    *Buffer
	loss     *Buffer
	dx       *Buffer // gradient with respect to the input batch, when asked for (newMLP)

	masks []*Buffer // per hidden layer, MaxBatch×width inverted-dropout masks (EnableDropout)
	acts  []*Buffer // per hidden layer, the activations before their mask
	armed bool      // SetMasks was called: the next forward drops
	drop  bool      // the last forward dropped: its backward goes through the masks
}

// NewMLP allocates an MLP with layer widths sizes (input first, classes last) for
// batches of up to maxBatch rows. Parameters start at zero; see SetParams.
func NewMLP(d *Device, sizes []int, act Activation, maxBatch int) (*MLP, error) {
	return newMLP(d, sizes, act, maxBatch, false)
}

// newMLP is NewMLP; with inputGrad, Backward also leaves the gradient with respect to
// the input batch in m.dx (the dense head of a CNN passes it down to the convolutions).
func newMLP(d *Device, sizes []int, act Activation, maxBatch int, inputGrad bool) (*MLP, error) {
	if len(sizes) < 2 || maxBatch <= 0 {
		return nil, fmt.Errorf("gpu: mlp needs at least 2 sizes and a positive batch, got %v and %d", sizes, maxBatch)
	}
	if _, _, err := act.kernels(); err != nil {
		return nil, err
	}
	m := &MLP{d: d, sizes: append([]int(nil), sizes...), act: act, maxBatch: maxBatch}
	var err error
	allocInto := func(dst *[]*Buffer, n int) {
		if err != nil {
			return
		}
		var buf *Buffer
		buf, err = d.Alloc(n)
		*dst = append(*dst, buf)
	}
	allocInto(&m.h, maxBatch*sizes[0])
	for l := range len(sizes) - 1 {
		in, out := sizes[l], sizes[l+1]
		allocInto(&m.w, in*out)
		allocInto(&m.b, out)
		allocInto(&m.dw, in*out)
		allocInto(&m.db, out)
		allocInto(&m.h, maxBatch*out)
		allocInto(&m.dz, maxBatch*max(in, out))
	}
	classes := sizes[len(sizes)-1]
	for _, p := range []**Buffer{&m.tgt, &m.probs} {
		if err == nil {
			*p, err = d.Alloc(maxBatch * classes)
		}
	}
	if err == nil {
		m.loss, err = d.Alloc(maxBatch)
	}
	if err == nil && inputGrad {
		m.dx, err = d.Alloc(maxBatch * sizes[0])
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("gpu: allocate mlp %v: %w", sizes, err)
	}
	return m, nil
}

// Layers is the number of weight layers.
func (m *MLP) Layers() int { return len(m.sizes) - 1 }

// SetParams uploads the parameters, ordered W0, b0, W1, b1, ….
func (m *MLP) SetParams(params [][]float32) error {
	if len(params) != 2*m.Layers() {
		return fmt.Errorf("gpu: mlp has %d parameter tensors, got %d", 2*m.Layers(), len(params))
	}
	for l := range m.Layers() {
		if err := m.w[l].Write(params[2*l]); err != nil {
			return fmt.Errorf("gpu: mlp W%d: %w", l, err)
		}
		if err := m.b[l].Write(params[2*l+1]); err != nil {
			return fmt.Errorf("gpu: mlp b%d: %w", l, err)
		}
	}
	return nil
}

// Params downloads the parameters in SetParams order.
func (m *MLP) Params() ([][]float32, error) { return readAll(m.w, m.b) }

// Grads downloads the last Step's gradients in SetParams order.
func (m *MLP) Grads() ([][]float32, error) { return readAll(m.dw, m.db) }

func readAll(ws, bs []*Buffer) ([][]float32, error) {
	out := make([][]float32, 0, 2*len(ws))
	for l := range ws {
		w, err := ws[l].ReadAll()
		if err != nil {
			return nil, err
		}
		b, err := bs[l].ReadAll()
		if err != nil {
			return nil, err
		}
		out = append(out, w, b)
	}
	return out, nil
}

// Step runs forward and backward on a batch of rows (x rows×in, targets rows×classes)
// and returns the mean softmax cross-entropy; the gradients stay on the device.
func (m *MLP) Step(x, targets []float32, rows int) (float32, error) {
	in, classes := m.sizes[0], m.sizes[len(m.sizes)-1]
	if rows <= 0 || rows > m.maxBatch || len(x) != rows*in || len(targets) != rows*classes {
		return 0, fmt.Errorf("gpu: mlp step: %d rows (max %d), x %d values (want %d), targets %d (want %d)",
			rows, m.maxBatch, len(x), rows*in, len(targets), rows*classes)
	}
	d := m.d
	if err := m.forward(x, rows); err != nil {
		return 0, err
	}
	tgt := m.tgt.Slice(0, rows*classes)
	if err := tgt.Write(targets); err != nil {
		return 0, err
	}
	last := m.Layers() - 1
	logits := m.h[last+1].Slice(0, rows*classes)
	probs, loss := m.probs.Slice(0, rows*classes), m.loss.Slice(0, rows)
	if err := d.SoftmaxCrossEntropy(probs, loss, logits, tgt, rows, classes); err != nil {
		return 0, err
	}
	dz := m.dz[last].Slice(0, rows*classes)
	if err := d.SoftmaxCrossEntropyGrad(dz, probs, tgt, rows, classes, 1/float32(rows)); err != nil {
		return 0, err
	}
	if err := m.backward(rows); err != nil {
		return 0, err
	}
	losses, err := loss.ReadAll()
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, v := range losses {
		sum += float64(v)
	}
	return float32(sum / float64(rows)), nil
}

// Forward runs the network on rows rows of x (rows×in) and writes the last layer's
// values before any loss (rows×out logits) into logits. The activations stay on the
// device for a Backward of the same batch.
func (m *MLP) Forward(x []float32, rows int, logits []float32) error {
	in, out := m.sizes[0], m.sizes[len(m.sizes)-1]
	if rows <= 0 || rows > m.maxBatch || len(x) != rows*in || len(logits) != rows*out {
		return fmt.Errorf("gpu: mlp forward: %d rows (max %d), x %d values (want %d), logits %d (want %d)",
			rows, m.maxBatch, len(x), rows*in, len(logits), rows*out)
	}
	if err := m.forward(x, rows); err != nil {
		return err
	}
	return m.h[m.Layers()].Slice(0, rows*out).Read(logits)
}

// Backward takes the gradient of the loss with respect to the logits of the last
// Forward (rows×out, same rows) and leaves the parameters' gradients on the device
// (see Grads and GradsInto). A loss computed on the host this way costs two transfers
// of rows×out values, so any task's loss can use the resident network.
func (m *MLP) Backward(dlogits []float32, rows int) error {
	out := m.sizes[len(m.sizes)-1]
	if rows <= 0 || rows > m.maxBatch || len(dlogits) != rows*out {
		return fmt.Errorf("gpu: mlp backward: %d rows (max %d), dlogits %d values (want %d)", rows, m.maxBatch, len(dlogits), rows*out)
	}
	if err := m.dz[m.Layers()-1].Slice(0, rows*out).Write(dlogits); err != nil {
		return err
	}
	return m.backward(rows)
}

// GradsInto downloads the last step's gradients into dst, one flat vector in
// SetParams order (W0, b0, W1, b1, …), without allocating.
func (m *MLP) GradsInto(dst []float32) error {
	off, err := eachBuffer(m.dw, m.db, len(dst), func(b *Buffer, at int) error { return b.Read(dst[at : at+b.Len()]) })
	if err == nil && off != len(dst) {
		err = fmt.Errorf("gpu: mlp gradients are %d values, dst has %d", off, len(dst))
	}
	return err
}

// SetParamsFlat uploads the parameters from one flat vector in SetParams order.
func (m *MLP) SetParamsFlat(src []float32) error {
	off, err := eachBuffer(m.w, m.b, len(src), func(b *Buffer, at int) error { return b.Write(src[at : at+b.Len()]) })
	if err == nil && off != len(src) {
		err = fmt.Errorf("gpu: mlp parameters are %d values, %d given", off, len(src))
	}
	return err
}

// forward uploads x and runs every layer; h[last+1] holds the logits.
func (m *MLP) forward(x []float32, rows int) error {
	if err := m.h[0].Slice(0, rows*m.sizes[0]).Write(x); err != nil {
		return err
	}
	return m.layers(rows)
}

// EnableDropout allocates a mask per hidden layer; SetMasks then arms them for the
// next Forward.
func (m *MLP) EnableDropout() error {
	if m.masks != nil {
		return nil
	}
	for l := range m.Layers() - 1 {
		for _, dst := range []*[]*Buffer{&m.masks, &m.acts} {
			b, err := m.d.Alloc(m.maxBatch * m.sizes[l+1])
			if err != nil {
				return fmt.Errorf("gpu: mlp dropout masks: %w", err)
			}
			*dst = append(*dst, b)
		}
	}
	return nil
}

// SetMasks uploads the first rows rows of each hidden layer's mask (masks[l] holds at
// least rows×width values, each 0 or 1/keep) and arms them for the next Forward only.
func (m *MLP) SetMasks(masks [][]float32, rows int) error {
	if len(masks) != len(m.masks) {
		return fmt.Errorf("gpu: mlp has %d dropout masks, got %d (EnableDropout first)", len(m.masks), len(masks))
	}
	for l, mask := range masks {
		n := rows * m.sizes[l+1]
		if rows <= 0 || rows > m.maxBatch || len(mask) < n {
			return fmt.Errorf("gpu: mlp dropout mask %d: %d values for %d rows of %d", l, len(mask), rows, m.sizes[l+1])
		}
		if err := m.masks[l].Slice(0, n).Write(mask[:n]); err != nil {
			return err
		}
	}
	m.armed = len(masks) > 0
	return nil
}

// forwardFrom runs the network on rows rows already on the device (features, rows×in)
// and writes the logits: the dense head of a CNN or an LSTM.
func (m *MLP) forwardFrom(features *Buffer, rows int, logits []float32) error {
	n := rows * m.sizes[0]
	if err := m.h[0].Slice(0, n).CopyFrom(features.Slice(0, n)); err != nil {
		return err
	}
	if err := m.layers(rows); err != nil {
		return err
	}
	return m.h[m.Layers()].Slice(0, rows*m.sizes[len(m.sizes)-1]).Read(logits)
}

// layers runs every layer on the batch in h[0], dropping with the armed masks.
func (m *MLP) layers(rows int) error {
	d := m.d
	m.drop, m.armed = m.armed, false
	last := m.Layers() - 1
	for l := range m.Layers() {
		in, out := m.sizes[l], m.sizes[l+1]
		z := m.h[l+1].Slice(0, rows*out)
		if err := d.Gemm(false, false, rows, out, in, 1, m.h[l], m.w[l], 0, z); err != nil {
			return fmt.Errorf("gpu: mlp layer %d: %w", l, err)
		}
		if err := d.AddBiasRows(z, m.b[l], rows, out); err != nil {
			return err
		}
		if l < last && m.drop {
			a := m.acts[l].Slice(0, rows*out)
			if err := d.Activate(m.act, a, z, rows*out); err != nil {
				return err
			}
			if err := d.Mul(z, a, m.masks[l], rows*out); err != nil {
				return err
			}
		} else if l < last {
			if err := d.Activate(m.act, z, z, rows*out); err != nil {
				return err
			}
		}
	}
	return nil
}

// backward propagates dz[last] (the gradient at the logits) down to every layer's
// parameter gradients.
func (m *MLP) backward(rows int) error {
	d := m.d
	for l := m.Layers() - 1; l >= 0; l-- {
		in, out := m.sizes[l], m.sizes[l+1]
		dz := m.dz[l].Slice(0, rows*out)
		if err := d.Gemm(true, false, in, out, rows, 1, m.h[l], dz, 0, m.dw[l]); err != nil {
			return fmt.Errorf("gpu: mlp dW%d: %w", l, err)
		}
		if err := d.BiasRowsGrad(m.db[l], dz, rows, out); err != nil {
			return err
		}
		if l == 0 {
			if m.dx != nil { // dx = dz_0·W_0ᵀ: the input has no activation
				if err := d.Gemm(false, true, rows, in, out, 1, dz, m.w[0], 0, m.dx.Slice(0, rows*in)); err != nil {
					return fmt.Errorf("gpu: mlp dx: %w", err)
				}
			}
			break
		}
		// dh_l = dz_l·W_lᵀ, then through the activation that produced h_l into dz_{l-1}.
		dh := m.dz[l-1].Slice(0, rows*in)
		if err := d.Gemm(false, true, rows, in, out, 1, dz, m.w[l], 0, dh); err != nil {
			return fmt.Errorf("gpu: mlp dh%d: %w", l, err)
		}
		y := m.h[l]
		if m.drop { // through the mask, then the activation it multiplied
			if err := d.Mul(dh, dh, m.masks[l-1], rows*in); err != nil {
				return err
			}
			y = m.acts[l-1]
		}
		if err := d.ActivateGrad(m.act, dh, dh, y, rows*in); err != nil {
			return err
		}
	}
	return nil
}

// SGD applies params -= lr·grads on the device.
func (m *MLP) SGD(lr float32) error {
	for l := range m.Layers() {
		if err := m.d.Axpy(m.w[l], m.dw[l], -lr, m.w[l].Len()); err != nil {
			return err
		}
		if err := m.d.Axpy(m.b[l], m.db[l], -lr, m.b[l].Len()); err != nil {
			return err
		}
	}
	return nil
}

// Close frees the device memory.
func (m *MLP) Close() error {
	return freeAll(nil, m.w, m.b, m.dw, m.db, m.h, m.dz, m.masks, m.acts, []*Buffer{m.tgt, m.probs, m.loss, m.dx})
}

// CPUMLPStep is MLP.Step on the CPU: it returns the mean loss and the gradients in
// SetParams order.
func CPUMLPStep(sizes []int, act Activation, params [][]float32, x, targets []float32, rows int) (float32, [][]float32) {
	layers := len(sizes) - 1
	h := [][]float32{x}
	for l := range layers {
		z := make([]float32, rows*sizes[l+1])
		CPUGemm(false, false, rows, sizes[l+1], sizes[l], 1, h[l], params[2*l], 0, z)
		CPUAddBiasRows(z, params[2*l+1], rows, sizes[l+1])
		if l < layers-1 {
			CPUActivate(act, z, z)
		}
		h = append(h, z)
	}
	classes := sizes[layers]
	probs, losses := make([]float32, rows*classes), make([]float32, rows)
	CPUSoftmaxCrossEntropy(probs, losses, h[layers], targets, rows, classes)
	dz := make([]float32, rows*classes)
	CPUSoftmaxCrossEntropyGrad(dz, probs, targets, rows, classes, 1/float32(rows))
	grads := make([][]float32, 2*layers)
	for l := layers - 1; l >= 0; l-- {
		in, out := sizes[l], sizes[l+1]
		grads[2*l], grads[2*l+1] = make([]float32, in*out), make([]float32, out)
		CPUGemm(true, false, in, out, rows, 1, h[l], dz, 0, grads[2*l])
		CPUBiasRowsGrad(grads[2*l+1], dz, rows, out)
		if l > 0 {
			dh := make([]float32, rows*in)
			CPUGemm(false, true, rows, in, out, 1, dz, params[2*l], 0, dh)
			CPUActivateGrad(act, dh, dh, h[l])
			dz = dh
		}
	}
	var sum float64
	for _, v := range losses {
		sum += float64(v)
	}
	return float32(sum / float64(rows)), grads
}
