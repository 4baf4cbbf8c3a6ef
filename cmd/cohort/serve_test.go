package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/worker/data"
)

// writeTinyExport writes the export of a small tabular regression MLP into dir.
func writeTinyExport(t *testing.T, dir string) {
	t.Helper()
	pre := data.Preprocessor{Label: "Income", Task: data.TaskRegression, Dim: 3, LabelMean: 5000, LabelStd: 1000,
		Columns: []data.ColumnTransform{
			{Name: "Age", Kind: data.KindNumeric, Mean: 40, Std: 10},
			{Name: "Dept", Kind: data.KindCategorical, Categories: []string{"HR", "Sales"}},
		}}
	preJSON, _ := json.Marshal(pre)
	a := export.Architecture{Kind: export.KindMLP, Task: export.TaskRegression, Inputs: 3, Outputs: 1, Activation: export.ActReLU,
		Hidden: []int{2}, LabelMean: 5000, LabelStd: 1000}
	var tensors []export.Tensor
	for _, ts := range a.Tensors() {
		n := 1
		for _, d := range ts.Shape {
			n *= d
		}
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = 0.5
		}
		tensors = append(tensors, export.Tensor{Name: ts.Name, Shape: ts.Shape, Data: vals})
	}
	b := &export.Bundle{Name: "income", Arch: a, Tensors: tensors,
		Metadata: map[string]string{export.MetaPreprocessing: string(preJSON), export.MetaDataFormat: "csv"}}
	files, err := b.Files([]string{export.FormatONNX})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeExportDir(dir, files); err != nil {
		t.Fatal(err)
	}
}

// TestServeCommand runs `cohort serve` in-process on a free port and checks readiness,
// an inference, a 400 naming the input, the Prometheus metrics and a clean stop.
func TestServeCommand(t *testing.T) {
	dir := t.TempDir()
	writeTinyExport(t, dir)
	addr := freePort(t)
	var logs bytes.Buffer
	serveLog = &logs
	t.Cleanup(func() { serveLog = os.Stderr })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"serve", "--model", dir, "--addr", addr})
		done <- root.ExecuteContext(ctx)
	}()
	base := "http://" + addr
	waitFor(t, "serve ready", 30*time.Second, func() error {
		resp, err := http.Get(base + "/v2/health/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	post := func(body string) (int, string) {
		resp, err := http.Post(base+"/v2/models/income/infer", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Age 50 -> z 1; Dept Sales -> [0, 1]; hidden relu(0.5*(1+0+1)+0.5) = 1.5 each;
	// out 0.5*1.5*2+0.5 = 2 -> 2*1000+5000 = 7000.
	code, body := post(`{"inputs":[{"name":"Age","shape":[2],"datatype":"INT64","data":[50,40]},{"name":"Dept","shape":[2],"datatype":"BYTES","data":["Sales","HR"]}]}`)
	var resp struct {
		Outputs []struct {
			Name string    `json:"name"`
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &resp) != nil || resp.Outputs[0].Name != "prediction" || resp.Outputs[0].Data[0] != 7000 {
		t.Fatalf("infer: %d %s", code, body)
	}
	// Age 40 -> z 0; Dept HR -> [1, 0]; hidden 0.5*1+0.5 = 1 each; out 0.5*2+0.5 = 1.5 -> 6500.
	if resp.Outputs[0].Data[1] != 6500 {
		t.Fatalf("row 1: %v, want 6500", resp.Outputs[0].Data[1])
	}
	if code, body := post(`{"inputs":[{"name":"Age","shape":[1],"datatype":"INT64","data":[50]}]}`); code != 400 || !strings.Contains(body, `input \"Dept\": missing`) {
		t.Fatalf("missing column: %d %s", code, body)
	}
	// The binary tensor data extension: INT64 ages and BYTES departments as raw bytes,
	// the prediction answered in binary (FP64 little-endian).
	le := binary.LittleEndian
	var raw []byte
	for _, age := range []uint64{50, 40} {
		raw = le.AppendUint64(raw, age)
	}
	ages := len(raw)
	for _, d := range []string{"Sales", "HR"} {
		raw = le.AppendUint32(raw, uint32(len(d)))
		raw = append(raw, d...)
	}
	head := fmt.Sprintf(`{"inputs":[{"name":"Age","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":%d}},{"name":"Dept","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":%d}}],"outputs":[{"name":"prediction","parameters":{"binary_data":true}}]}`, ages, len(raw)-ages)
	breq, err := http.NewRequest("POST", base+"/v2/models/income/infer", bytes.NewReader(append([]byte(head), raw...)))
	if err != nil {
		t.Fatal(err)
	}
	breq.Header.Set("Inference-Header-Content-Length", strconv.Itoa(len(head)))
	bresp, err := http.DefaultClient.Do(breq)
	if err != nil {
		t.Fatal(err)
	}
	bbody, _ := io.ReadAll(bresp.Body)
	bresp.Body.Close()
	jl, err := strconv.Atoi(bresp.Header.Get("Inference-Header-Content-Length"))
	if bresp.StatusCode != 200 || err != nil || jl+16 != len(bbody) || !strings.Contains(string(bbody[:jl]), `"binary_data_size":16`) {
		t.Fatalf("binary infer: %d %q", bresp.StatusCode, bbody)
	}
	if a, b := math.Float64frombits(le.Uint64(bbody[jl:])), math.Float64frombits(le.Uint64(bbody[jl+8:])); a != 7000 || b != 6500 {
		t.Fatalf("binary infer: %v, %v, want 7000, 6500", a, b)
	}
	// Concurrent one-row requests (batched server-side) each get their own row's answer.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			age, dept, want := 50, "Sales", 7000.0
			if i%2 == 1 {
				age, dept, want = 40, "HR", 6500
			}
			resp, err := http.Post(base+"/v2/models/income/infer", "application/json", strings.NewReader(fmt.Sprintf(
				`{"inputs":[{"name":"Age","shape":[1],"datatype":"INT64","data":[%d]},{"name":"Dept","shape":[1],"datatype":"BYTES","data":[%q]}]}`, age, dept)))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var r struct {
				Outputs []struct {
					Data []float64 `json:"data"`
				} `json:"outputs"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 || len(r.Outputs) != 1 || len(r.Outputs[0].Data) != 1 || r.Outputs[0].Data[0] != want {
				errs <- fmt.Errorf("request %d: status %d, %+v (%v), want %v", i, resp.StatusCode, r, err, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mresp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`cohort_serve_requests_total{code="200"}`, `cohort_serve_requests_total{code="400"} 1`, "cohort_serve_request_duration_seconds_count",
		"cohort_serve_queue_depth 0", "cohort_serve_batch_size_rows_count", "cohort_serve_rejected_requests_total 0", "cohort_serve_queue_wait_seconds_count"} {
		if !strings.Contains(string(metrics), want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after its context was cancelled")
	}
	if !strings.Contains(logs.String(), `"model":"income"`) {
		t.Fatalf("logs lack the model: %s", logs.String())
	}
}

// TestServeBatchingFlags checks that bad batching flags exit with a usage error naming
// the flag.
func TestServeBatchingFlags(t *testing.T) {
	dir := t.TempDir()
	writeTinyExport(t, dir)
	for _, args := range [][]string{{"--queue", "0"}, {"--batch-max-rows", "-1"}, {"--batch-window", "-1ms"}} {
		root := newRootCmd()
		root.SetArgs(append([]string{"serve", "--model", dir, "--addr", "127.0.0.1:0"}, args...))
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		var u *exitError
		if !errors.As(err, &u) || u.code != 2 || !strings.HasPrefix(err.Error(), args[0]+" ") {
			t.Fatalf("%v: %v, want a usage error naming %s", args, err, args[0])
		}
	}
}
