package audit

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchInput returns n binary rows with two sensitive columns.
func benchInput(n int) Input {
	scores, labels := randomBinary(n, 5)
	r := rand.New(rand.NewPCG(5, 5))
	genders := []string{"F", "M", "X", "NA"}
	bands := []string{"<30", "[30,40)", "[40,50)", ">=50"}
	g, b := make([]string, n), make([]string, n)
	for i := range n {
		g[i] = genders[min(r.IntN(10), 3)%4]
		b[i] = bands[r.IntN(4)]
	}
	return Input{Scores: scores, Labels: labels, Groups: map[string][]string{"Gender": g, "Age": b}}
}

func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{600, 5000} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Sensitive = []string{"Gender", "Age"}
			cfg.Intersectional = true
			cfg.Gate = GateConfig{MinImpactRatio: ptr(0.8), MinAUC: ptr(0.7)}
			in := benchInput(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Evaluate(cfg, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPermutationImportance(b *testing.B) {
	const n = 2000
	x := table(n, 6, 1)
	labels := make([]float64, n)
	for i := range n {
		if x[i*6]-x[i*6+3] > 0 {
			labels[i] = 1
		}
	}
	groups := singles("x0", "x1", "x2", "x3", "x4", "x5")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := PermutationImportance(logistic, x, n, 6, 1, labels, TaskBinary, groups, 5, 1); err != nil {
			b.Fatal(err)
		}
	}
}
