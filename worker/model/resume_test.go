package model

import (
	"slices"
	"testing"
)

// TestSetGradientCalls checks that a model positioned with SetGradientCalls(k) draws the
// same dropout masks on its next Gradient call as a model that made k calls before.
func TestSetGradientCalls(t *testing.T) {
	mlpCfg := testConfig(TaskBinary, ActivationReLU, 4, false)
	mlpCfg.Dropout = 0.5
	cnnCfg := testCNNConfig(TaskMulticlass, ActivationReLU, 4, false)
	cnnCfg.Dropout = 0.5
	lstmCfg := smallLSTM(TaskRegression, []int{4}, 4, false)
	lstmCfg.Dropout = 0.5
	for _, tc := range []struct {
		name    string
		build   func() Model
		inputs  int
		outputs int
		task    string
	}{
		{"mlp", func() Model { return mustMLP(t, mlpCfg) }, mlpCfg.Inputs, 1, TaskBinary},
		{"cnn", func() Model { return mustCNN(t, cnnCfg) }, cnnInputs(cnnCfg), 3, TaskMulticlass},
		{"lstm", func() Model { return mustLSTM(t, lstmCfg) }, lstmCfg.Steps * lstmCfg.Features, 1, TaskRegression},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const k = 5
			a, b := tc.build(), tc.build()
			p := randomParams(a, 3)
			x, y := randomBatch(4, 4, tc.inputs, tc.outputs, tc.task)
			for range k {
				gradient(t, a, p, x, y, 4)
			}
			setter, ok := b.(interface{ SetGradientCalls(uint64) })
			if !ok {
				t.Fatalf("%T has no SetGradientCalls", b)
			}
			// b makes one call first, so the setter must move the counter, not just
			// leave a fresh one at k by chance.
			gradient(t, b, p, x, y, 4)
			setter.SetGradientCalls(k)
			ga, la := gradient(t, a, p, x, y, 4)
			gb, lb := gradient(t, b, p, x, y, 4)
			if la != lb || !slices.Equal(ga, gb) {
				t.Fatalf("call %d differs after SetGradientCalls(%d): loss %v vs %v", k, k, la, lb)
			}
			// And it differs from the call before (masks really depend on k).
			setter.SetGradientCalls(k - 1)
			gc, _ := gradient(t, b, p, x, y, 4)
			if slices.Equal(ga, gc) {
				t.Fatalf("calls %d and %d drew the same masks", k-1, k)
			}
		})
	}
}
