package export

import (
	"bytes"
	"strings"
	"testing"
)

func TestBundleFilesLayout(t *testing.T) {
	c := testCases(t)[0]
	b := &Bundle{Name: "attrition-mlp", Arch: c.arch, Tensors: c.tensors(c.params(2)), ONNXPreprocessing: ONNXSeparate}
	for _, tc := range []struct {
		formats []string
		want    []string
	}{
		{[]string{FormatSafetensors}, []string{"model.safetensors"}},
		{[]string{FormatONNX}, []string{"model.safetensors", "attrition-mlp/config.pbtxt", "attrition-mlp/1/model.onnx"}},
		{[]string{FormatONNX, FormatSafetensors}, []string{"model.safetensors", "attrition-mlp/config.pbtxt", "attrition-mlp/1/model.onnx"}},
	} {
		files, err := b.Files(tc.formats)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range files {
			got = append(got, f.Path)
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Fatalf("formats %v: files %v, want %v", tc.formats, got, tc.want)
		}
		m, err := ReadModel(bytes.NewReader(files[0].Data))
		if err != nil {
			t.Fatal(err)
		}
		if m.Name != "attrition-mlp" || m.Arch.Kind != KindMLP || len(m.Weights) != 6 {
			t.Fatalf("read back name %q kind %q with %d tensors", m.Name, m.Arch.Kind, len(m.Weights))
		}
	}
	files, _ := b.Files([]string{FormatONNX})
	cfg := string(files[1].Data)
	for _, want := range []string{`name: "attrition-mlp"`, `platform: "onnxruntime_onnx"`, `dims: [ 5 ]`, `dims: [ 1 ]`, "max_batch_size: 1024"} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("config.pbtxt lacks %q:\n%s", want, cfg)
		}
	}
}

func TestBundleFilesRejects(t *testing.T) {
	c := testCases(t)[0]
	good := c.tensors(c.params(2))
	for _, tc := range []struct {
		name    string
		mutate  func(b *Bundle)
		formats []string
		want    string
	}{
		{"no format", func(*Bundle) {}, nil, "no format"},
		{"bad format", func(*Bundle) {}, []string{"torchscript"}, `"torchscript"`},
		{"bad name", func(b *Bundle) { b.Name = "a/b" }, []string{FormatONNX}, `"a/b"`},
		{"missing tensor", func(b *Bundle) { b.Tensors = b.Tensors[1:] }, []string{FormatONNX}, `"dense0.weight"`},
		{"extra tensor", func(b *Bundle) {
			b.Tensors = append(append([]Tensor(nil), b.Tensors...), Tensor{Name: "extra", Shape: []int{1}, Data: []float32{1}})
		}, []string{FormatONNX}, `"extra"`},
		{"wrong shape", func(b *Bundle) {
			ts := append([]Tensor(nil), b.Tensors...)
			ts[1] = Tensor{Name: ts[1].Name, Shape: []int{8}, Data: make([]float32, 8)}
			b.Tensors = ts
		}, []string{FormatONNX}, `"dense0.bias" has shape [8]`},
		{"bad kind", func(b *Bundle) { b.Arch.Kind = "rnn" }, []string{FormatONNX}, `kind: "rnn"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Bundle{Name: "m", Arch: c.arch, Tensors: good, ONNXPreprocessing: ONNXSeparate}
			tc.mutate(b)
			_, err := b.Files(tc.formats)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %s", err, tc.want)
			}
		})
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{"attrition-mlp": "attrition-mlp", "a b/c": "a_b_c", "..x": "x", "": "model", "Ü": "_"} {
		if got := SanitizeName(in); got != want {
			t.Errorf("SanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadModelRejects(t *testing.T) {
	c := testCases(t)[0]
	var noArch bytes.Buffer
	if err := WriteSafetensors(&noArch, c.tensors(c.params(1)), map[string]string{"x": "y"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadModel(&noArch); err == nil || !strings.Contains(err.Error(), MetaArchitecture) {
		t.Fatalf("error %v, want one naming %s", err, MetaArchitecture)
	}
	var badArch bytes.Buffer
	if err := WriteSafetensors(&badArch, c.tensors(c.params(1)), map[string]string{MetaArchitecture: `{"kind":"mlp","task":"regression","inputs":5,"outputs":1,"activation":"relu","hidden":[7,5]}`}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadModel(&badArch); err == nil || !strings.Contains(err.Error(), `"dense1.weight" has shape [7 4], the architecture needs [7 5]`) {
		t.Fatalf("error %v, want a shape mismatch naming dense1.weight", err)
	}
}

// FuzzReadModel feeds arbitrary bytes to the model reader serve uses: it must return a
// model whose weights fit its architecture, or an error, and never panic.
func FuzzReadModel(f *testing.F) {
	a := Architecture{Kind: KindLSTM, Task: TaskMulticlass, Inputs: 2, Outputs: 3, Hidden: []int{2}, Steps: 1, Features: 2}
	var tensors []Tensor
	for _, ts := range a.Tensors() {
		n, _ := numElements(ts.Shape)
		tensors = append(tensors, Tensor{Name: ts.Name, Shape: ts.Shape, Data: make([]float32, n)})
	}
	b := &Bundle{Name: "seed", Arch: a, Tensors: tensors}
	files, err := b.Files([]string{FormatSafetensors})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(files[0].Data)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ReadModel(bytes.NewReader(data))
		if err != nil {
			return
		}
		n := 2
		out := make([]float32, n*m.Arch.Outputs)
		if m.Arch.Inputs > 1<<16 {
			return
		}
		if err := m.Arch.Predict(m.Weights, make([]float32, n*m.Arch.Inputs), n, out); err != nil {
			t.Fatalf("a model ReadModel accepted fails to predict: %v", err)
		}
	})
}
