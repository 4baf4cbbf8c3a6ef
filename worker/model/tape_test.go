package model

import (
	"slices"
	"testing"
)

// TestTapeRunner checks that every model's graphs run on the calling goroutine (the
// reflection into gorgonia's tape machine resolved) and that doing so computes exactly
// what TapeMachine.RunAll computes.
func TestTapeRunner(t *testing.T) {
	mlpCfg := testConfig(TaskBinary, ActivationTanh, 4, false)
	cnnCfg := testCNNConfig(TaskMulticlass, ActivationReLU, 4, false)
	lstmCfg := smallLSTM(TaskRegression, []int{3}, 4, false)
	for _, tc := range []struct {
		name   string
		m      Model
		inputs int
		k      int
		task   string
	}{
		{"mlp", mustMLP(t, mlpCfg), mlpCfg.Inputs, 1, TaskBinary},
		{"cnn", mustCNN(t, cnnCfg), cnnInputs(cnnCfg), 3, TaskMulticlass},
		{"lstm", mustLSTM(t, lstmCfg), lstmCfg.Steps * lstmCfg.Features, 1, TaskRegression},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var eng *graphEngine[float32]
			switch m := tc.m.(type) {
			case *mlp:
				eng = m.eng.(*graphEngine[float32])
			case *cnn:
				eng = m.eng.(*cnnEngine[float32]).ge
			case *lstm:
				eng = m.eng.(*graphEngine[float32])
			}
			for _, n := range []*net[float32]{eng.train, eng.pred} {
				if !n.tape.run.IsValid() {
					t.Fatal("the tape runner did not resolve: graphs fall back to RunAll")
				}
			}
			p := randomParams(tc.m, 5)
			x, y := randomBatch(6, 4, tc.inputs, tc.k, tc.task)
			g1, l1 := gradient(t, tc.m, p, x, y, 4)
			out1 := make([]float32, 4*tc.m.OutputSize())
			if err := tc.m.Predict(p, x, 4, out1); err != nil {
				t.Fatal(err)
			}
			eng.train.tape, eng.pred.tape = tapeRunner{}, tapeRunner{}
			g2, l2 := gradient(t, tc.m, p, x, y, 4)
			out2 := make([]float32, 4*tc.m.OutputSize())
			if err := tc.m.Predict(p, x, 4, out2); err != nil {
				t.Fatal(err)
			}
			if l1 != l2 || !slices.Equal(g1, g2) || !slices.Equal(out1, out2) {
				t.Fatalf("tape runner and RunAll differ: loss %v vs %v", l1, l2)
			}
		})
	}
}
