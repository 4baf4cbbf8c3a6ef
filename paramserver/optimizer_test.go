package paramserver

import (
	"errors"
	"math"
	"testing"
)

// reference is a straightforward float64 implementation of the documented update rules.
type reference struct {
	cfg  OptimizerConfig
	m, v []float64
	t    int
}

func (r *reference) apply(p []float64, g []float64) {
	c := r.cfg.withDefaults()
	if r.m == nil {
		r.m, r.v = make([]float64, len(p)), make([]float64, len(p))
	}
	r.t++
	for i := range p {
		switch r.cfg.Name {
		case "sgd":
			p[i] -= c.LearningRate * (g[i] + c.WeightDecay*p[i])
		case "momentum":
			r.m[i] = c.Momentum*r.m[i] + g[i] + c.WeightDecay*p[i]
			p[i] -= c.LearningRate * r.m[i]
		case "adam":
			r.m[i] = c.Beta1*r.m[i] + (1-c.Beta1)*g[i]
			r.v[i] = c.Beta2*r.v[i] + (1-c.Beta2)*g[i]*g[i]
			mhat := r.m[i] / (1 - math.Pow(c.Beta1, float64(r.t)))
			vhat := r.v[i] / (1 - math.Pow(c.Beta2, float64(r.t)))
			p[i] -= c.LearningRate * (mhat/(math.Sqrt(vhat)+c.Epsilon) + c.WeightDecay*p[i])
		}
	}
}

func TestOptimizersMatchReference(t *testing.T) {
	tests := []OptimizerConfig{
		{Name: "sgd", LearningRate: 0.1},
		{Name: "sgd", LearningRate: 0.05, WeightDecay: 0.01},
		{Name: "momentum", LearningRate: 0.05},
		{Name: "momentum", LearningRate: 0.01, Momentum: 0.5, WeightDecay: 0.1},
		{Name: "adam", LearningRate: 0.01},
		{Name: "adam", LearningRate: 0.001, Beta1: 0.8, Beta2: 0.99, Epsilon: 1e-6, WeightDecay: 0.05},
	}
	for _, cfg := range tests {
		t.Run(cfg.Name, func(t *testing.T) {
			const n = 7
			opt, err := NewOptimizer(cfg, n)
			if err != nil {
				t.Fatal(err)
			}
			if opt.Name() != cfg.Name {
				t.Fatalf("Name() = %q", opt.Name())
			}
			p32 := make([]float32, n)
			p64 := make([]float64, n)
			for i := range p32 {
				p32[i] = float32(i-3) * 0.25
				p64[i] = float64(p32[i])
			}
			ref := &reference{cfg: cfg}
			g32 := make([]float32, n)
			g64 := make([]float64, n)
			for step := range 25 {
				for i := range g32 {
					g32[i] = float32(math.Sin(float64(i*7+step))) + 0.3*p32[i]
					g64[i] = float64(g32[i])
				}
				opt.Apply(p32, g32)
				ref.apply(p64, g64)
			}
			if opt.Step() != 25 {
				t.Errorf("Step() = %d, want 25", opt.Step())
			}
			for i := range p32 {
				if d := math.Abs(float64(p32[i]) - p64[i]); d > 1e-5*(1+math.Abs(p64[i])) {
					t.Errorf("param %d = %v, reference %v (diff %g)", i, p32[i], p64[i], d)
				}
			}
			if want := stateCount(cfg.Name); len(opt.State()) != want {
				t.Errorf("State() has %d vectors, want %d", len(opt.State()), want)
			}
		})
	}
}

// TestOptimizerSetStateContinues checks that copying State/Step into a fresh optimizer
// continues bit-identically.
func TestOptimizerSetStateContinues(t *testing.T) {
	for _, name := range []string{"sgd", "momentum", "adam"} {
		t.Run(name, func(t *testing.T) {
			cfg := OptimizerConfig{Name: name, LearningRate: 0.01, WeightDecay: 0.01}
			a, _ := NewOptimizer(cfg, 4)
			p := []float32{1, -2, 3, -4}
			g := []float32{0.5, 0.25, -1, 2}
			for range 3 {
				a.Apply(p, g)
			}
			b, _ := NewOptimizer(cfg, 4)
			if err := b.SetState(a.Step(), a.State()); err != nil {
				t.Fatal(err)
			}
			q := append([]float32(nil), p...)
			a.Apply(p, g)
			b.Apply(q, g)
			for i := range p {
				if p[i] != q[i] {
					t.Fatalf("after SetState: %v != %v", p, q)
				}
			}
			if err := b.SetState(1, make([][]float32, 3)); err == nil {
				t.Error("SetState with 3 state vectors succeeded")
			}
			if name != "sgd" {
				if err := b.SetState(1, [][]float32{{1}, {2}}[:stateCount(name)]); err == nil {
					t.Error("SetState with short vectors succeeded")
				}
			}
		})
	}
}

func TestOptimizerConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  OptimizerConfig
	}{
		{"unknown name", OptimizerConfig{Name: "rmsprop", LearningRate: 0.1}},
		{"zero lr", OptimizerConfig{Name: "sgd"}},
		{"nan lr", OptimizerConfig{Name: "sgd", LearningRate: math.NaN()}},
		{"negative wd", OptimizerConfig{Name: "sgd", LearningRate: 0.1, WeightDecay: -1}},
		{"momentum 1", OptimizerConfig{Name: "momentum", LearningRate: 0.1, Momentum: 1}},
		{"beta1 negative", OptimizerConfig{Name: "adam", LearningRate: 0.1, Beta1: -0.1}},
		{"beta2 too big", OptimizerConfig{Name: "adam", LearningRate: 0.1, Beta2: 1.5}},
		{"negative eps", OptimizerConfig{Name: "adam", LearningRate: 0.1, Epsilon: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewOptimizer(tc.cfg, 3); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("NewOptimizer(%+v) = %v, want ErrInvalidConfig", tc.cfg, err)
			}
		})
	}
}

func TestOptimizerApplyPanicsOnLengthMismatch(t *testing.T) {
	opt, _ := NewOptimizer(OptimizerConfig{Name: "adam", LearningRate: 0.1}, 3)
	defer func() {
		if recover() == nil {
			t.Fatal("Apply with a short gradient did not panic")
		}
	}()
	opt.Apply(make([]float32, 3), make([]float32, 2))
}
