package export_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/export/ortest"
	"github.com/cohort-dev/cohort/serve"
	"github.com/cohort-dev/cohort/storage"
)

// writeExport writes the bundle's files under dir and returns the ONNX model's path.
func writeExport(t *testing.T, b *export.Bundle, dir string) string {
	t.Helper()
	files, err := b.Files([]string{export.FormatONNX})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, b.Name, filepath.FromSlash(export.ONNXFile))
}

// feeds turns a case's raw rows into the runtime's tensors.
func feeds(c export.EmbeddedCase) map[string]ortest.Tensor {
	out := map[string]ortest.Tensor{}
	for name, in := range c.Inputs {
		switch {
		case in.Strings != nil:
			out[name] = ortest.String(in.Dims, in.Strings)
		case in.Pixels != nil:
			out[name] = ortest.Uint8(in.Dims, in.Pixels)
		default:
			out[name] = ortest.Float32(in.Dims, in.Floats)
		}
	}
	return out
}

// TestEmbeddedONNXRuntimeMatchesServe runs the embedded export of every kind and task
// in onnxruntime on raw rows (tabular rows of the attrition sample with an unseen
// category, missing categories and a missing number; random pixels; windows with a
// missing value) and checks its outputs against `cohort serve`'s answers on the same
// rows, within 1e-5.
func TestEmbeddedONNXRuntimeMatchesServe(t *testing.T) {
	rt := ortest.Find(t)
	cases := export.EmbeddedCases(t)
	var runs []ortest.Run
	for _, c := range cases {
		runs = append(runs, ortest.Run{Model: writeExport(t, c.Bundle, filepath.Join(t.TempDir(), c.Name)), Feeds: feeds(c)})
	}
	results := rt.Run(t, runs)
	worstAbs, worstRel := 0.0, 0.0
	for i, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			dir := filepath.Dir(filepath.Dir(filepath.Dir(runs[i].Model)))
			m, err := serve.Load(context.Background(), dir, storage.S3Config{})
			if err != nil {
				t.Fatal(err)
			}
			tensors, err := ortest.ServeTensors(m, runs[i].Feeds)
			if err != nil {
				t.Fatal(err)
			}
			served, _, err := m.Infer(tensors, nil, 1024)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, in := range m.Metadata().Inputs {
				names = append(names, in.Name)
			}
			if !slices.Equal(results[i].InputNames, names) {
				t.Fatalf("onnxruntime inputs %v, serve's %v", results[i].InputNames, names)
			}
			d, rel, err := ortest.Compare(c.Bundle.Arch.Task, served, results[i], 1e-5)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("onnxruntime %s vs serve: max |diff| %.3g, relative %.3g", rt.Version, d, rel)
			worstAbs, worstRel = math.Max(worstAbs, d), math.Max(worstRel, rel)
		})
	}
	t.Logf("onnxruntime %s vs serve over %d models: max |diff| %.3g, relative %.3g", rt.Version, len(cases), worstAbs, worstRel)
}

// TestSeparateONNXRuntime runs the separate form of every case in onnxruntime on
// random features and checks it against the Go forward pass, within 1e-5: today's
// form loads and computes the same in the real runtime.
func TestSeparateONNXRuntime(t *testing.T) {
	rt := ortest.Find(t)
	cases := export.EmbeddedCases(t)
	var runs []ortest.Run
	var xs [][]float32
	const n = 5
	for i, c := range cases {
		b := *c.Bundle
		b.ONNXPreprocessing = export.ONNXSeparate
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		x := make([]float32, n*b.Arch.Inputs)
		for j := range x {
			x[j] = float32(rng.NormFloat64())
		}
		xs = append(xs, x)
		runs = append(runs, ortest.Run{Model: writeExport(t, &b, filepath.Join(t.TempDir(), c.Name)),
			Feeds: map[string]ortest.Tensor{export.ONNXInput: ortest.Float32(append([]int{n}, b.Arch.InputShape()...), x)}})
	}
	results := rt.Run(t, runs)
	for i, c := range cases {
		a := &c.Bundle.Arch
		w, err := a.CheckWeights(c.Bundle.Tensors)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float32, n*a.Outputs)
		if err := a.Predict(w, xs[i], n, want); err != nil {
			t.Fatal(err)
		}
		got, err := results[i].Outputs[export.ONNXOutput].Float32s()
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: output %v (%d values), want %d", c.Name, err, len(got), len(want))
		}
		for j := range want {
			ref := float64(want[j])
			if a.Task == export.TaskRegression {
				ref = a.Unscale(ref)
			}
			if d := math.Abs(float64(got[j]) - ref); !(d <= 1e-5*math.Max(1, math.Abs(ref))) {
				t.Fatalf("%s: value %d: onnxruntime %v, Go %v", c.Name, j, got[j], ref)
			}
		}
	}
}
