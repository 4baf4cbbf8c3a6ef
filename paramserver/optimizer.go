package paramserver

import (
	"errors"
	"fmt"
	"math"
)

// Optimizer names accepted by NewOptimizer.
const (
	OptimizerSGD      = "sgd"
	OptimizerMomentum = "momentum"
	OptimizerAdam     = "adam"
)

// Defaults used when the corresponding OptimizerConfig field is zero.
const (
	DefaultMomentum = 0.9
	DefaultBeta1    = 0.9
	DefaultBeta2    = 0.999
	DefaultEpsilon  = 1e-8
)

// ErrInvalidConfig is wrapped by every error about a bad optimizer or shard
// configuration.
var ErrInvalidConfig = errors.New("paramserver: invalid config")

// OptimizerConfig selects and tunes a shard's optimizer. Zero Momentum, Beta1, Beta2 and
// Epsilon take DefaultMomentum, DefaultBeta1, DefaultBeta2 and DefaultEpsilon.
type OptimizerConfig struct {
	// Name is "sgd", "momentum" or "adam".
	Name string
	// LearningRate must be positive.
	LearningRate float64
	// Momentum is the velocity decay mu of "momentum", in [0,1).
	Momentum float64
	// Beta1 and Beta2 are Adam's moment decays, in [0,1).
	Beta1, Beta2 float64
	// Epsilon is Adam's denominator guard, positive.
	Epsilon float64
	// WeightDecay is L2 regularisation for sgd and momentum (added to the gradient) and
	// decoupled weight decay (AdamW) for adam; non-negative.
	WeightDecay float64
}

// withDefaults returns c with zero fields replaced by the defaults.
func (c OptimizerConfig) withDefaults() OptimizerConfig {
	if c.Momentum == 0 {
		c.Momentum = DefaultMomentum
	}
	if c.Beta1 == 0 {
		c.Beta1 = DefaultBeta1
	}
	if c.Beta2 == 0 {
		c.Beta2 = DefaultBeta2
	}
	if c.Epsilon == 0 {
		c.Epsilon = DefaultEpsilon
	}
	return c
}

// Validate reports whether c names a known optimizer with usable hyper-parameters.
func (c OptimizerConfig) Validate() error {
	d := c.withDefaults()
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case c.Name != OptimizerSGD && c.Name != OptimizerMomentum && c.Name != OptimizerAdam:
		return fmt.Errorf("%w: unknown optimizer %q (want sgd, momentum or adam)", ErrInvalidConfig, c.Name)
	case !finite(c.LearningRate) || c.LearningRate <= 0:
		return fmt.Errorf("%w: learning rate %v must be positive", ErrInvalidConfig, c.LearningRate)
	case !finite(c.WeightDecay) || c.WeightDecay < 0:
		return fmt.Errorf("%w: weight decay %v must be non-negative", ErrInvalidConfig, c.WeightDecay)
	case !finite(d.Momentum) || d.Momentum < 0 || d.Momentum >= 1:
		return fmt.Errorf("%w: momentum %v must be in [0,1)", ErrInvalidConfig, c.Momentum)
	case !finite(d.Beta1) || d.Beta1 < 0 || d.Beta1 >= 1:
		return fmt.Errorf("%w: beta1 %v must be in [0,1)", ErrInvalidConfig, c.Beta1)
	case !finite(d.Beta2) || d.Beta2 < 0 || d.Beta2 >= 1:
		return fmt.Errorf("%w: beta2 %v must be in [0,1)", ErrInvalidConfig, c.Beta2)
	case !finite(d.Epsilon) || d.Epsilon <= 0:
		return fmt.Errorf("%w: epsilon %v must be positive", ErrInvalidConfig, c.Epsilon)
	}
	return nil
}

// Optimizer updates one shard's parameters from a gradient. Implementations are not
// safe for concurrent use; the shard serialises calls under its lock.
type Optimizer interface {
	// Name returns "sgd", "momentum" or "adam".
	Name() string
	// Apply performs one optimizer step in place. params and grad must both have the
	// length the optimizer was created for; Apply panics otherwise.
	Apply(params, grad []float32)
	// State returns the optimizer's state vectors (none for sgd; the velocity for
	// momentum; the first and second moments m, v for adam). The slices alias the
	// optimizer's memory and change on the next Apply.
	State() [][]float32
	// Step returns the number of Apply calls made (Adam's bias-correction step).
	Step() int64
	// SetState replaces the step count and copies state in (as returned by State).
	SetState(step int64, state [][]float32) error
}

// NewOptimizer returns an optimizer for n parameters. Update rules (lr learning rate,
// wd weight decay, t the step after increment):
//
//	sgd:      p -= lr*(g + wd*p)
//	momentum: v = mu*v + g + wd*p;  p -= lr*v
//	adam:     m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
//	          p -= lr*( (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + wd*p )   (AdamW)
//
// Adam's weight decay is decoupled from the gradient (AdamW, Loshchilov & Hutter),
// because L2 added to the gradient is rescaled away by Adam's normaliser.
func NewOptimizer(cfg OptimizerConfig, n int) (Optimizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: negative parameter count %d", ErrInvalidConfig, n)
	}
	c := cfg.withDefaults()
	switch cfg.Name {
	case OptimizerSGD:
		return &sgd{lr: float32(c.LearningRate), wd: float32(c.WeightDecay), n: n}, nil
	case OptimizerMomentum:
		return &momentum{lr: float32(c.LearningRate), wd: float32(c.WeightDecay), mu: float32(c.Momentum), v: make([]float32, n)}, nil
	default:
		return &adam{lr: c.LearningRate, wd: float32(c.WeightDecay), b1: c.Beta1, b2: c.Beta2, eps: float32(c.Epsilon),
			m: make([]float32, n), v: make([]float32, n)}, nil
	}
}

// stateCount returns how many state vectors the named optimizer keeps, or -1.
func stateCount(name string) int {
	switch name {
	case OptimizerSGD:
		return 0
	case OptimizerMomentum:
		return 1
	case OptimizerAdam:
		return 2
	}
	return -1
}

func checkLens(n int, params, grad []float32) {
	if len(params) != n || len(grad) != n {
		panic(fmt.Sprintf("paramserver: optimizer for %d values applied to %d params and %d gradients", n, len(params), len(grad)))
	}
}

func setState(name string, n int, step int64, state [][]float32, dst ...[]float32) error {
	if step < 0 {
		return fmt.Errorf("%w: %s: negative step %d", ErrInvalidConfig, name, step)
	}
	if len(state) != len(dst) {
		return fmt.Errorf("%w: %s: %d state vectors, want %d", ErrInvalidConfig, name, len(state), len(dst))
	}
	for i, s := range state {
		if len(s) != n {
			return fmt.Errorf("%w: %s: state vector %d has %d values, want %d", ErrInvalidConfig, name, i, len(s), n)
		}
	}
	for i, s := range state {
		copy(dst[i], s)
	}
	return nil
}

type sgd struct {
	lr, wd float32
	n      int
	step   int64
}

func (o *sgd) Name() string       { return OptimizerSGD }
func (o *sgd) State() [][]float32 { return nil }
func (o *sgd) Step() int64        { return o.step }
func (o *sgd) SetState(step int64, state [][]float32) error {
	if err := setState(OptimizerSGD, o.n, step, state); err != nil {
		return err
	}
	o.step = step
	return nil
}

func (o *sgd) Apply(params, grad []float32) {
	checkLens(o.n, params, grad)
	o.step++
	lr, wd := o.lr, o.wd
	grad = grad[:len(params)]
	if wd == 0 {
		for i, g := range grad {
			params[i] -= lr * g
		}
		return
	}
	for i, g := range grad {
		params[i] -= lr * (g + wd*params[i])
	}
}

type momentum struct {
	lr, wd, mu float32
	v          []float32
	step       int64
}

func (o *momentum) Name() string       { return OptimizerMomentum }
func (o *momentum) State() [][]float32 { return [][]float32{o.v} }
func (o *momentum) Step() int64        { return o.step }
func (o *momentum) SetState(step int64, state [][]float32) error {
	if err := setState(OptimizerMomentum, len(o.v), step, state, o.v); err != nil {
		return err
	}
	o.step = step
	return nil
}

func (o *momentum) Apply(params, grad []float32) {
	checkLens(len(o.v), params, grad)
	o.step++
	v := o.v[:len(params)]
	grad = grad[:len(params)]
	k := momentumConsts{mu: o.mu, wd: o.wd, lr: o.lr}
	done := momentumVector(params, grad, v, &k)
	momentumScalar(params[done:], grad[done:], v[done:], &k)
}

// momentumConsts are one momentum step's scalars, laid out as adam_amd64.s reads them.
type momentumConsts struct{ mu, wd, lr float32 }

// momentumScalar is the momentum step one value at a time: the reference the vector
// version follows operation by operation.
func momentumScalar(params, grad, v []float32, k *momentumConsts) {
	v = v[:len(params)]
	grad = grad[:len(params)]
	for i, g := range grad {
		vi := k.mu*v[i] + g + k.wd*params[i]
		v[i] = vi
		params[i] -= k.lr * vi
	}
}

type adam struct {
	lr, b1, b2 float64
	wd, eps    float32
	m, v       []float32
	step       int64
}

func (o *adam) Name() string       { return OptimizerAdam }
func (o *adam) State() [][]float32 { return [][]float32{o.m, o.v} }
func (o *adam) Step() int64        { return o.step }
func (o *adam) SetState(step int64, state [][]float32) error {
	if err := setState(OptimizerAdam, len(o.m), step, state, o.m, o.v); err != nil {
		return err
	}
	o.step = step
	return nil
}

func (o *adam) Apply(params, grad []float32) {
	checkLens(len(o.m), params, grad)
	o.step++
	t := float64(o.step)
	// Bias corrections folded into two scalars:
	// p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)  ==  p -= a * m / (sqrt(v)*c + eps).
	bc1 := 1 - math.Pow(o.b1, t)
	bc2 := 1 - math.Pow(o.b2, t)
	a := float32(o.lr / bc1)
	c := float32(1 / math.Sqrt(bc2))
	b1, b2 := float32(o.b1), float32(o.b2)
	ob1, ob2 := 1-b1, 1-b2
	decay := float32(1 - o.lr*float64(o.wd)) // exactly 1 when wd == 0
	eps := o.eps
	m, v := o.m[:len(params)], o.v[:len(params)]
	grad = grad[:len(params)]
	k := adamConsts{b1: b1, ob1: ob1, b2: b2, ob2: ob2, decay: decay, a: a, c: c, eps: eps}
	done := adamVector(params, grad, m, v, &k)
	adamScalar(params[done:], grad[done:], m[done:], v[done:], &k)
}

// adamConsts are one Adam step's scalars, laid out as adam_amd64.s reads them.
type adamConsts struct {
	b1, ob1, b2, ob2, decay, a, c, eps float32
}

// adamScalar is the Adam step one value at a time: the reference the vector version
// follows operation by operation.
func adamScalar(params, grad, m, v []float32, k *adamConsts) {
	m, v = m[:len(params)], v[:len(params)]
	grad = grad[:len(params)]
	for i, g := range grad {
		mi := k.b1*m[i] + k.ob1*g
		vi := k.b2*v[i] + k.ob2*g*g
		m[i], v[i] = mi, vi
		params[i] = params[i]*k.decay - k.a*mi/(float32(math.Sqrt(float64(vi)))*k.c+k.eps)
	}
}
