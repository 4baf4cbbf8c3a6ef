package modeldef

// TrainFLOPs returns the floating-point operations of one training step per row
// (forward and backward) in the network's matrix products, two per multiply-add: each
// layer's forward product, its weight gradient and, except for the first layer (whose
// input is the data), its input gradient. Convolutions count F·C·K²·OH·OW multiply-adds
// per product; an LSTM layer (in + hidden)·4·hidden per time step, its first layer's
// input gradient hidden·4·hidden (the recurrent part only). Element-wise work (biases,
// activations, pooling, the loss) is left out, as FLOP counts of these networks
// usually do. An invalid architecture gives 0.
func (a *Architecture) TrainFLOPs() float64 {
	var macs float64
	// product adds a layer of n multiply-adds per product.
	product := func(n float64, first bool) {
		macs += 2 * n // forward and weight gradient
		if !first {
			macs += n // input gradient
		}
	}
	in := a.Inputs
	first := true
	switch a.Kind {
	case KindMLP:
		for _, h := range a.Hidden {
			product(float64(in*h), first)
			in, first = h, false
		}
	case KindCNN:
		gs, err := a.geometry()
		if err != nil {
			return 0
		}
		for _, g := range gs {
			product(float64(g.outC*g.inC*g.k*g.k*g.outH*g.outW), first)
			first = false
		}
		last := gs[len(gs)-1]
		in = last.outC * last.poolH * last.poolW
	case KindLSTM:
		in = a.Features
		for _, h := range a.Hidden {
			n := float64((in + h) * 4 * h * a.Steps)
			macs += 2 * n
			if first {
				macs += float64(h * 4 * h * a.Steps)
			} else {
				macs += n
			}
			in, first = h, false
		}
	default:
		return 0
	}
	if a.Kind != KindMLP {
		for _, d := range a.Dense {
			product(float64(in*d), first)
			in, first = d, false
		}
	}
	product(float64(in*a.Outputs), first)
	return 2 * macs
}
