package jobs

import "slices"

// sizeCount adds up a lower bound on a model's parameters and remembers the first
// spec path at which it passed MaxParams.
type sizeCount struct {
	params int64
	over   string
}

// add counts n more parameters of the layers at path.
func (c *sizeCount) add(path string, n int64) {
	c.params += n
	if c.params > MaxParams && c.over == "" {
		c.over = path
	}
}

// dense counts fully connected layers of the given widths after in inputs and
// returns the last width.
func (c *sizeCount) dense(path string, in int64, widths []int) int64 {
	for _, w := range widths {
		c.add(path, in*int64(w)+int64(w))
		in = int64(w)
	}
	return in
}

// widthsOK reports whether every width is one Validate accepts (the other checks
// report the rest).
func widthsOK(ws []int) bool {
	return !slices.ContainsFunc(ws, func(w int) bool { return w < 1 || w > MaxLayerWidth })
}

// modelSize refuses a model that has more than MaxParams parameters, or a batch of
// more than MaxActivations activations, for any data: it counts the layers the spec
// fixes, as the workers' models do (worker/model), with the widths that only the data
// tells (inputs, image size and channels) taken as 1 and the outputs as few as the
// task allows. Without it, such a job was accepted and failed on every worker.
func (v *validator) modelSize(kind string) {
	s := &v.j.Spec
	m := &s.Model
	outputs := int64(1)
	if s.Task == TaskMulticlass {
		outputs = 2
	}
	batch := int64(s.Training.BatchSize)
	var c sizeCount
	var widest, acts int64 // per row
	var p, actPath string
	switch kind {
	case "mlp":
		p = "spec.model.mlp"
		if !widthsOK(m.MLP.Hidden) {
			return
		}
		in := c.dense(p+".hidden", 1, m.MLP.Hidden)
		c.add(p+".hidden", in*outputs+outputs)
		widest = max(outputs, int64(slices.Max(append([]int{1}, m.MLP.Hidden...))))
		acts, actPath = widest, p+".hidden"
	case "cnn":
		p = "spec.model.cnn"
		cn := m.CNN
		ch := int64(1)
		for _, l := range cn.Conv {
			if l.Filters < 1 || l.Filters > MaxLayerWidth || l.Kernel < 1 || l.Kernel > MaxKernel {
				return
			}
			f, k := int64(l.Filters), int64(l.Kernel)
			c.add(p+".conv", f*ch*k*k+f)
			// One output position at least, and its im2col column of k*k*ch values.
			widest = max(widest, f, ch*k*k)
			ch = f
		}
		if !widthsOK(cn.Dense) {
			return
		}
		in := c.dense(p+".dense", ch, cn.Dense)
		c.add(p+".dense", in*outputs+outputs)
		widest = max(widest, outputs, int64(slices.Max(append([]int{1}, cn.Dense...))))
		acts, actPath = widest, p
	case "lstm":
		p = "spec.model.lstm"
		l := m.LSTM
		if !widthsOK(l.Hidden) || !widthsOK(l.Dense) {
			return
		}
		steps := int64(1)
		if sq := s.Data.SequenceCSV; sq != nil && sq.Lookback >= 1 && sq.Lookback <= MaxSequenceWindow {
			steps = int64(sq.Lookback)
		}
		in, gates := int64(1), int64(0)
		for _, h := range l.Hidden {
			h := int64(h)
			c.add(p+".hidden", (in+h)*4*h+4*h)
			gates += 6 * h
			in = h
		}
		in = c.dense(p+".dense", in, l.Dense)
		c.add(p+".dense", in*outputs+outputs)
		acts, actPath = gates*steps+steps, p+".hidden"
	default:
		return
	}
	if c.over != "" {
		v.add(c.over, "the model would have at least %d parameters, more than the limit of %d (%s)", c.params, MaxParams, sizeNote(kind))
		return
	}
	if batch >= 1 && batch <= MaxBatchSize && acts > 0 && batch*acts > MaxActivations {
		v.add("spec.training.batchSize", "%d rows of at least %d activations each (%s) exceed the limit of %d; use a smaller batch or narrower layers", batch, acts, actPath, MaxActivations)
	}
}

// sizeNote says what modelSize assumed of the data.
func sizeNote(kind string) string {
	switch kind {
	case "cnn":
		return "counting the convolution and dense layers with 1x1 images of 1 channel"
	case "lstm":
		return "counting the LSTM and dense layers with 1 feature per step"
	}
	return "counting the hidden layers with 1 input"
}
