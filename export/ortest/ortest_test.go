package ortest

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cohort-dev/cohort/export"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends the
// goroutine, so that a test can check that Run fails.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// runExpectingFailure runs the model in the runtime and returns Run's failure message.
func runExpectingFailure(t *testing.T, rt *Runtime, run Run) string {
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rt.Run(rec, []Run{run})
	}()
	<-done
	return rec.msg
}

// TestRunRejectsBrokenModels makes sure the onnxruntime runs of the tests can fail: a
// file that is not a model, a graph whose node reads an undefined value, and a feed of
// the wrong type each fail the test with the runtime's reason.
func TestRunRejectsBrokenModels(t *testing.T) {
	rt := Find(t)
	a := export.Architecture{Kind: export.KindMLP, Task: export.TaskBinary, Inputs: 2, Outputs: 1, Activation: export.ActReLU, Hidden: []int{3}}
	var tensors []export.Tensor
	for _, s := range a.Tensors() {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		tensors = append(tensors, export.Tensor{Name: s.Name, Shape: s.Shape, Data: make([]float32, n)})
	}
	w, err := a.CheckWeights(tensors)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m, err := export.BuildONNX(&a, w, "good", nil)
	if err != nil {
		t.Fatal(err)
	}
	good, err := export.MarshalONNX(m)
	if err != nil {
		t.Fatal(err)
	}
	m.Graph.Node[0].Input[0] = "nowhere"
	broken, err := export.MarshalONNX(m)
	if err != nil {
		t.Fatal(err)
	}
	feed := map[string]Tensor{export.ONNXInput: Float32([]int{1, 2}, []float32{1, 2})}

	res := rt.Run(t, []Run{{Model: write("good.onnx", good), Feeds: feed}})
	if v, err := res[0].Outputs[export.ONNXOutput].Float32s(); err != nil || len(v) != 1 || v[0] != 0.5 {
		t.Fatalf("good model answered %v (%v), want [0.5] (zero weights)", v, err)
	}
	for _, tc := range []struct {
		name string
		run  Run
		want string
	}{
		{"not a model", Run{Model: write("junk.onnx", []byte("not onnx")), Feeds: feed}, "does not load"},
		{"undefined value", Run{Model: write("broken.onnx", broken), Feeds: feed}, "nowhere"},
		{"wrong feed type", Run{Model: write("good.onnx", good), Feeds: map[string]Tensor{export.ONNXInput: String([]int{1, 2}, []string{"a", "b"})}}, ": run: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if msg := runExpectingFailure(t, rt, tc.run); !strings.Contains(msg, tc.want) {
				t.Fatalf("Run failed with %q, want a failure mentioning %q", msg, tc.want)
			}
		})
	}
}

// TestTensorJSON: NaN travels as null and back.
func TestTensorJSON(t *testing.T) {
	in := []float32{1.5, float32(math.NaN()), -3}
	got, err := Float32([]int{3}, in).Float32s()
	if err != nil || len(got) != 3 || got[0] != 1.5 || !math.IsNaN(float64(got[1])) || got[2] != -3 {
		t.Fatalf("round trip %v (%v)", got, err)
	}
	if _, err := String([]int{1}, []string{"x"}).Float32s(); err == nil {
		t.Fatal("a string tensor read as floats")
	}
}
