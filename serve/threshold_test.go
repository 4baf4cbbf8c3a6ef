package serve

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/model"
)

// TestServeLabelUsesExportedThreshold: a binary model exported with cohort.threshold
// (spec.export.threshold, fixed or fitted) labels a row positive exactly when its
// probability is at or above that threshold, not 0.5; a threshold outside (0, 1) is
// refused at load.
func TestServeLabelUsesExportedThreshold(t *testing.T) {
	tbl := attritionTable(t)
	rows := make([]int, 400)
	for i := range rows {
		rows[i] = i
	}
	pre, err := data.FitPreprocessor(tbl, rows, data.TabularConfig{Label: "Attrition", Task: data.TaskBinary, Positive: "Yes"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.NewMLP(model.MLPConfig{Inputs: pre.Dim, Hidden: []int{4}, Activation: model.ActivationTanh, Outputs: 1, Task: data.TaskBinary, BatchSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	arch := export.Architecture{Kind: export.KindMLP, Task: data.TaskBinary, Inputs: pre.Dim, Outputs: 1, Activation: export.ActTanh, Hidden: []int{4}}
	p := m.InitParams(3)
	var tensors []export.Tensor
	for _, ti := range m.Layout() {
		tensors = append(tensors, export.Tensor{Name: ti.Name, Shape: ti.Shape, Data: p[ti.Offset : ti.Offset+ti.Size]})
	}
	preJSON, err := json.Marshal(pre)
	if err != nil {
		t.Fatal(err)
	}
	load := func(threshold string) (*Model, error) {
		meta := map[string]string{export.MetaPreprocessing: string(preJSON), export.MetaDataFormat: "csv"}
		if threshold != "" {
			meta[export.MetaThreshold] = threshold
		}
		b := &export.Bundle{Name: "thr", Arch: arch, Tensors: tensors, Metadata: meta}
		files, err := b.Files([]string{export.FormatSafetensors})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, export.SafetensorsFile), files[0].Data, 0o644); err != nil {
			t.Fatal(err)
		}
		return Load(context.Background(), dir, storage.S3Config{})
	}
	eval := rows[:60]
	var inputs []Tensor
	for _, in := range rawColumns(tbl, pre, eval) {
		tn := Tensor{Name: in.Name, Shape: in.Shape, Datatype: in.Datatype}
		switch v := in.Data.(type) {
		case []string:
			tn.Strings = v
		case []float64:
			tn.Numbers = v
		}
		inputs = append(inputs, tn)
	}
	base, err := load("")
	if err != nil {
		t.Fatal(err)
	}
	outs, _, err := base.Infer(inputs, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	probs := outs[0].Data.([]float64)
	// A threshold between the probabilities' median and its neighbour splits them.
	sorted := append([]float64(nil), probs...)
	sort.Float64s(sorted)
	// The threshold is a probability 0.5 is not next to, so some labels differ from
	// 0.5's.
	th := sorted[len(sorted)/4]
	if sorted[0] >= 0.5 {
		th = sorted[3*len(sorted)/4]
	}
	sm, err := load(strconv.FormatFloat(th, 'g', -1, 64))
	if err != nil {
		t.Fatal(err)
	}
	outs, _, err = sm.Infer(inputs, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	labels := outs[1].Data.([]string)
	positives, flipped := 0, 0
	for i, pr := range outs[0].Data.([]float64) {
		want := "No"
		if pr >= th {
			want = "Yes"
			positives++
		}
		if (pr >= th) != (pr >= 0.5) {
			flipped++
		}
		if labels[i] != want {
			t.Fatalf("row %d: probability %v, threshold %v: label %q, want %q", i, pr, th, labels[i], want)
		}
	}
	if positives == 0 || positives == len(labels) || flipped == 0 {
		t.Fatalf("%d of %d rows positive, %d labelled otherwise than at 0.5: the threshold %v does not test anything", positives, len(labels), flipped, th)
	}
	if _, err := load("1.5"); err == nil {
		t.Fatal("threshold 1.5 loaded")
	}
}
