package modeldef

import (
	"fmt"
	"math"
	"slices"
	"sync"
)

// Integrated-gradients limits.
const (
	// MaxIntegratedGradientsSteps bounds the quadrature nodes of IntegratedGradients,
	// requested or reached by doubling.
	MaxIntegratedGradientsSteps = 1024
	// CompletenessTolerance is the relative completeness gap IntegratedGradients
	// accepts: |sum(Attr) - (Output - Baseline)| <= CompletenessTolerance*max(1, |Output - Baseline|).
	CompletenessTolerance = 1e-4
)

// trace records what one forward pass (logits) computed that the backward pass needs:
// activated outputs, max-pool choices and LSTM gates. Nothing is copied; the slices are
// the forward pass's own, which it does not change after recording them.
type trace struct {
	// dense holds each hidden dense layer's activated output, first layer first.
	dense [][]float64
	// conv holds each convolution's activated output and pooling choices.
	conv []convTrace
	// lstm holds, per layer, each time step's gates and cell states.
	lstm [][]lstmStep
}

// convTrace is one convolution of a traced forward pass.
type convTrace struct {
	// act is the activated convolution output (before pooling), CHW.
	act []float64
	// argmax is, per pooled value, the index in act of the value the pool kept (nil
	// without pooling).
	argmax []int32
}

// lstmStep is one LSTM layer's time step of a traced forward pass.
type lstmStep struct {
	// gates holds the activated input, forget, cell and output gates, hidden units each.
	gates []float64
	// c and prev are the cell state after and before the step.
	c, prev []float64
}

// OutputGradient returns output number output of the network for one row x (what
// Predict writes for it, before its rounding to float32: a probability for a
// classifier, the standardized prediction for a regression) and writes its gradient
// with respect to x into grad (len Inputs). It differentiates exactly Predict's
// float64 forward pass, in reverse mode. At a kink (relu or leaky relu at 0, a max-pool
// tie) it takes the one-sided derivative the forward pass's choice implies: relu's
// derivative at 0 is 0, leaky relu's is 1, and a pool routes the gradient to the first
// maximum of its window. w must come from CheckWeights.
func (a *Architecture) OutputGradient(w Weights, x []float64, output int, grad []float64) (float64, error) {
	gs, err := a.checkRow(x, output)
	if err != nil {
		return 0, err
	}
	if len(grad) != a.Inputs {
		return 0, fmt.Errorf("gradient: grad has %d values, want %d", len(grad), a.Inputs)
	}
	return a.gradient(gs, w, x, output, grad), nil
}

// Attribution is the integrated-gradients explanation of one output for one row.
type Attribution struct {
	// Attr holds one attribution per input; they sum to Output - Baseline, up to Gap.
	Attr []float64
	// Output and Baseline are the explained output at the row and at the baseline.
	Output, Baseline float64
	// Steps is the number of gradient evaluations (quadrature nodes) of the estimate.
	Steps int
	// Gap is the completeness error sum(Attr) - (Output - Baseline).
	Gap float64
}

// panelNodes is the Gauss-Legendre node count of one IntegratedGradients panel.
const panelNodes = 4

// IntegratedGradients explains output number output for the row x against baseline
// with the integrated gradients of Sundararajan et al. (2017): the attribution of input
// i is (x_i - b_i) times the mean of the output's partial derivative in i along the
// straight line p(t) = b + t(x - b), t in [0, 1].
//
// The mean is a composite Gauss-Legendre quadrature: [0, 1] is cut into ceil(steps/4)
// equal panels of 4 nodes each (exact for integrands of degree 7 per panel, so
// converging fast on smooth tanh, sigmoid or LSTM networks). Relu, leaky relu and
// max-pool kinks make the integrand jump, and then any rule's error is O(panel width)
// per kink, so the rule refines where the kinks are: a panel's own completeness gap,
// (x - b)·(its gradient integral) - (F(p(t1)) - F(p(t0))), is known exactly from one
// forward pass per panel end, and while the total gap exceeds
// CompletenessTolerance*max(1, |Output - Baseline|) the panel with the largest gap is
// halved, until MaxIntegratedGradientsSteps gradient evaluations are spent. (Doubling a
// uniform rule instead still left gaps of 2e-3 after 1024 nodes on leaky-relu
// networks.) The estimate is returned with its Steps and Gap even when the budget ran
// out first; the caller decides. Output and Baseline are the values OutputGradient
// returns at x and b.
func (a *Architecture) IntegratedGradients(w Weights, x, baseline []float64, output, steps int) (Attribution, error) {
	return a.IntegratedGradientsWithin(w, x, baseline, output, steps, MaxIntegratedGradientsSteps)
}

// IntegratedGradientsWithin is IntegratedGradients with the refinement stopped at
// budget gradient evaluations (budget <= steps: none, a fixed cost of steps rounded up
// to a multiple of 4), for callers that explain many rows and care more about time than
// about the last digit of completeness (a training job's per-class attribution images).
func (a *Architecture) IntegratedGradientsWithin(w Weights, x, baseline []float64, output, steps, budget int) (Attribution, error) {
	gs, err := a.checkRow(x, output)
	if err != nil {
		return Attribution{}, err
	}
	if len(baseline) != a.Inputs {
		return Attribution{}, fmt.Errorf("integrated gradients: baseline has %d values, want %d", len(baseline), a.Inputs)
	}
	for i, v := range baseline {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Attribution{}, fmt.Errorf("integrated gradients: baseline value %d is not finite (%v)", i, v)
		}
	}
	if steps < 1 || steps > MaxIntegratedGradientsSteps {
		return Attribution{}, fmt.Errorf("integrated gradients: steps %d: must be in [1, %d]", steps, MaxIntegratedGradientsSteps)
	}
	q := igQuadrature{a: a, gs: gs, w: w, base: baseline, output: output,
		diff: make([]float64, a.Inputs), point: make([]float64, a.Inputs), grad: make([]float64, a.Inputs)}
	for i := range q.diff {
		q.diff[i] = x[i] - baseline[i]
	}
	res := Attribution{Output: a.value(gs, w, x, output), Baseline: a.value(gs, w, baseline, output)}
	m := (steps + panelNodes - 1) / panelNodes
	panels := make([]igPanel, m)
	lo, flo := 0.0, res.Baseline
	for j := range panels {
		hi, fhi := float64(j+1)/float64(m), res.Output
		if j < m-1 {
			fhi = q.valueAt(hi)
		}
		panels[j] = q.panel(lo, hi, flo, fhi)
		lo, flo = hi, fhi
	}
	res.Steps = m * panelNodes
	tol := CompletenessTolerance * math.Max(1, math.Abs(res.Output-res.Baseline))
	for res.Steps+2*panelNodes <= min(budget, MaxIntegratedGradientsSteps) {
		var gap float64
		worst := 0
		for j, p := range panels {
			gap += p.gap
			if math.Abs(p.gap) > math.Abs(panels[worst].gap) {
				worst = j
			}
		}
		if math.Abs(gap) <= tol {
			break
		}
		p := panels[worst]
		mid := (p.lo + p.hi) / 2
		fmid := q.valueAt(mid)
		panels[worst] = q.panel(p.lo, mid, p.flo, fmid)
		panels = slices.Insert(panels, worst+1, q.panel(mid, p.hi, fmid, p.fhi))
		res.Steps += 2 * panelNodes
	}
	res.Attr = make([]float64, a.Inputs)
	for _, p := range panels {
		for i, v := range p.integral {
			res.Attr[i] += v
		}
	}
	var sum float64
	for i := range res.Attr {
		res.Attr[i] *= q.diff[i]
		sum += res.Attr[i]
	}
	res.Gap = sum - (res.Output - res.Baseline)
	return res, nil
}

// igQuadrature is the state of one IntegratedGradients call.
type igQuadrature struct {
	a           *Architecture
	gs          []convGeom
	w           Weights
	base, diff  []float64
	output      int
	point, grad []float64
}

// igPanel is one panel [lo, hi] of the path with the output at its ends, the integral
// of the gradient over it and its completeness gap.
type igPanel struct {
	lo, hi, flo, fhi float64
	integral         []float64
	gap              float64
}

// at writes the path's point at t (0 < t < 1) into q.point.
func (q *igQuadrature) at(t float64) []float64 {
	for i := range q.point {
		q.point[i] = q.base[i] + t*q.diff[i]
	}
	return q.point
}

// valueAt returns the output at the path's point t (0 < t < 1).
func (q *igQuadrature) valueAt(t float64) float64 {
	return q.a.value(q.gs, q.w, q.at(t), q.output)
}

// panel integrates the gradient over [lo, hi] with the Gauss-Legendre rule.
func (q *igQuadrature) panel(lo, hi, flo, fhi float64) igPanel {
	p := igPanel{lo: lo, hi: hi, flo: flo, fhi: fhi, integral: make([]float64, len(q.point))}
	nodes, weights := gaussLegendre(panelNodes)
	h := hi - lo
	for k, t := range nodes {
		q.a.gradient(q.gs, q.w, q.at(lo+h*t), q.output, q.grad)
		for i, g := range q.grad {
			p.integral[i] += h * weights[k] * g
		}
	}
	var dir float64
	for i, v := range p.integral {
		dir += v * q.diff[i]
	}
	p.gap = dir - (fhi - flo)
	return p
}

// checkRow checks one row and an output index and returns a CNN's geometry.
func (a *Architecture) checkRow(x []float64, output int) ([]convGeom, error) {
	if len(x) != a.Inputs {
		return nil, fmt.Errorf("gradient: x has %d values, want %d", len(x), a.Inputs)
	}
	for i, v := range x {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("gradient: x value %d is not finite (%v)", i, v)
		}
	}
	if output < 0 || output >= a.Outputs {
		return nil, fmt.Errorf("gradient: output %d: the model has outputs 0 to %d", output, a.Outputs-1)
	}
	if a.Kind != KindCNN {
		return nil, nil
	}
	gs, err := a.geometry()
	if err != nil {
		return nil, fmt.Errorf("architecture: %w", err)
	}
	return gs, nil
}

// value returns output number output of the network for one row.
func (a *Architecture) value(gs []convGeom, w Weights, x []float64, output int) float64 {
	return a.outputs(a.logits(gs, w, x, nil))[output]
}

// gradient runs the traced forward pass on x, writes the gradient of output number
// output with respect to x into grad and returns the output.
func (a *Architecture) gradient(gs []convGeom, w Weights, x []float64, output int, grad []float64) float64 {
	var tr trace
	p := a.outputs(a.logits(gs, w, x, &tr))
	v := p[output]
	g := make([]float64, a.Outputs)
	switch a.Task {
	case TaskBinary:
		g[0] = v * (1 - v)
	case TaskMulticlass:
		for j, pj := range p {
			g[j] = -v * pj
		}
		g[output] += v
	default:
		g[0] = 1
	}
	g = denseBackward(g, w["out.weight"])
	act := a.Activation
	if a.Kind == KindLSTM {
		act = ActReLU
	}
	for i := len(tr.dense) - 1; i >= 0; i-- {
		activateBackward(g, tr.dense[i], act)
		g = denseBackward(g, w[fmt.Sprintf("dense%d.weight", i)])
	}
	switch a.Kind {
	case KindCNN:
		g = a.convBackward(gs, w, &tr, g)
	case KindLSTM:
		g = a.lstmBackward(w, &tr, g)
	}
	copy(grad, g)
	return v
}

// denseBackward returns W·g, the gradient with respect to a dense layer's input h
// given g, the gradient with respect to its output h·W + b (W [len(h), len(g)]).
func denseBackward(g []float64, wt []float32) []float64 {
	width := len(g)
	in := make([]float64, len(wt)/width)
	for i := range in {
		wr := wt[i*width : (i+1)*width]
		var s float64
		for j, d := range g {
			s += d * float64(wr[j])
		}
		in[i] = s
	}
	return in
}

// activateBackward turns g, the gradient with respect to activate's output y, into the
// gradient with respect to its input, in place. Every derivative follows from y.
func activateBackward(g, y []float64, act string) {
	for i, v := range y {
		switch act {
		case ActReLU:
			if !(v > 0) {
				g[i] = 0
			}
		case ActTanh:
			g[i] *= 1 - v*v
		case ActSigmoid:
			g[i] *= v * (1 - v)
		case ActLeakyReLU:
			if v < 0 {
				g[i] *= LeakyReLUSlope
			}
		}
	}
}

// convBackward turns g, the gradient with respect to convForward's output, into the
// gradient with respect to the image.
func (a *Architecture) convBackward(gs []convGeom, w Weights, tr *trace, g []float64) []float64 {
	for i := len(gs) - 1; i >= 0; i-- {
		geo, ct := gs[i], tr.conv[i]
		if ct.argmax != nil {
			gz := make([]float64, len(ct.act))
			for k, j := range ct.argmax {
				gz[j] += g[k]
			}
			g = gz
		}
		activateBackward(g, ct.act, a.Activation)
		wt := w[fmt.Sprintf("conv%d.weight", i)]
		in := make([]float64, geo.inC*geo.inH*geo.inW)
		for oc := range geo.outC {
			for oy := range geo.outH {
				for ox := range geo.outW {
					d := g[(oc*geo.outH+oy)*geo.outW+ox]
					if d == 0 { // most are, behind a relu or a pool
						continue
					}
					x0 := ox*geo.stride - geo.pad
					kx0, kx1 := max(0, -x0), min(geo.k, geo.inW-x0)
					for ic := range geo.inC {
						for ky := range geo.k {
							iy := oy*geo.stride - geo.pad + ky
							if iy < 0 || iy >= geo.inH {
								continue
							}
							wr := wt[((oc*geo.inC+ic)*geo.k+ky)*geo.k+kx0 : ((oc*geo.inC+ic)*geo.k+ky)*geo.k+kx1]
							ir := in[(ic*geo.inH+iy)*geo.inW+x0+kx0:]
							ir = ir[:len(wr)]
							for kx, wv := range wr {
								ir[kx] += d * float64(wv)
							}
						}
					}
				}
			}
		}
		g = in
	}
	return g
}

// lstmBackward turns g, the gradient with respect to the top layer's last hidden
// state, into the gradient with respect to the time-major window (backpropagation
// through time, layer by layer from the top).
func (a *Architecture) lstmBackward(w Weights, tr *trace, g []float64) []float64 {
	// above[t] is the gradient with respect to the current layer's hidden state at
	// step t from the layers above (nil: zero).
	above := make([][]float64, a.Steps)
	above[a.Steps-1] = g
	for l := len(a.Hidden) - 1; l >= 0; l-- {
		hid := a.Hidden[l]
		wt := w[fmt.Sprintf("lstm%d.weight", l)]
		in := len(wt)/(4*hid) - hid
		steps := tr.lstm[l]
		below := make([][]float64, len(steps))
		dh, dc, dz := make([]float64, hid), make([]float64, hid), make([]float64, 4*hid)
		for t := len(steps) - 1; t >= 0; t-- {
			st := steps[t]
			for j, v := range above[t] {
				dh[j] += v
			}
			for j := range hid {
				ig, f, gg, o := st.gates[j], st.gates[hid+j], st.gates[2*hid+j], st.gates[3*hid+j]
				tc := math.Tanh(st.c[j])
				d := dc[j] + dh[j]*o*(1-tc*tc)
				dz[j] = d * gg * ig * (1 - ig)
				dz[hid+j] = d * st.prev[j] * f * (1 - f)
				dz[2*hid+j] = d * ig * (1 - gg*gg)
				dz[3*hid+j] = dh[j] * tc * o * (1 - o)
				dc[j] = d * f
			}
			dxh := denseBackward(dz, wt)
			below[t], dh = dxh[:in:in], dxh[in:]
		}
		above = below
	}
	grad := make([]float64, 0, a.Inputs)
	for _, v := range above {
		grad = append(grad, v...)
	}
	return grad
}

// glRule is a Gauss-Legendre rule on [0, 1].
type glRule struct{ nodes, weights []float64 }

// glRules caches the rules by node count.
var glRules sync.Map

// gaussLegendre returns the nodes and weights (summing to 1) of the n-node
// Gauss-Legendre rule on [0, 1]: the roots of the Legendre polynomial P_n by Newton's
// method from Tricomi's estimate, as in Numerical Recipes' gauleg.
func gaussLegendre(n int) (nodes, weights []float64) {
	if r, ok := glRules.Load(n); ok {
		return r.(glRule).nodes, r.(glRule).weights
	}
	r := glRule{nodes: make([]float64, n), weights: make([]float64, n)}
	for i := range (n + 1) / 2 {
		z := math.Cos(math.Pi * (float64(i) + 0.75) / (float64(n) + 0.5))
		var pp float64
		for range 100 {
			p1, p2 := 1.0, 0.0
			for j := 1; j <= n; j++ {
				p1, p2 = ((2*float64(j)-1)*z*p1-(float64(j)-1)*p2)/float64(j), p1
			}
			pp = float64(n) * (z*p1 - p2) / (z*z - 1)
			z1 := z
			z = z1 - p1/pp
			if math.Abs(z-z1) <= 1e-15 {
				break
			}
		}
		wt := 1 / ((1 - z*z) * pp * pp) // 2/((1-z^2)P_n'^2), halved for [0, 1]
		r.nodes[i], r.nodes[n-1-i] = (1-z)/2, (1+z)/2
		r.weights[i], r.weights[n-1-i] = wt, wt
	}
	glRules.Store(n, r)
	return r.nodes, r.weights
}
