package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/serve"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
)

// runCLI runs the CLI in-process and returns its stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	stdout = &out
	t.Cleanup(func() { stdout = os.Stdout })
	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// TestExportCommand trains the example job with export.formats [onnx, safetensors],
// checks the chief's Triton layout in storage, then exports the job's checkpoint with
// `cohort export` in both formats and checks that the files carry the same weights as
// the chief's export and that the ONNX graph computes what serve answers.
func TestExportCommand(t *testing.T) {
	spec := exampleSpec(t, "epochs: 30", "epochs: 2")
	job, c := runJob(t, spec, 2, 2)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	exports := job.GetExports()
	if len(exports) != 2 || !strings.HasSuffix(exports[0], "/export/model.safetensors") || !strings.HasSuffix(exports[1], "/export/attrition-mlp/1/model.onnx") {
		t.Fatalf("exports %v, want model.safetensors and attrition-mlp/1/model.onnx", exports)
	}
	if _, err := c.Store.Stat(context.Background(), keyOf(t, c, strings.Replace(exports[1], "1/model.onnx", "config.pbtxt", 1))); err != nil {
		t.Fatalf("Triton config.pbtxt: %v", err)
	}
	chiefTensors, _ := readExport(t, c, exports[0])

	dir := t.TempDir()
	out, err := runCLI(t, "--address", c.GRPCAddr, "export", job.GetId(), "--format", "onnx", "--out", dir, "-o", "json")
	if err != nil {
		t.Fatalf("cohort export: %v", err)
	}
	var res exportResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	want := []string{"model.safetensors", "attrition-mlp/config.pbtxt", "attrition-mlp/1/model.onnx", "report.json", "model_card.md"}
	if len(res.Files) != len(want) || res.Checkpoint != job.GetCheckpoint() || res.Name != "attrition-mlp" {
		t.Fatalf("result %+v, want files %v from checkpoint %s", res, want, job.GetCheckpoint())
	}
	for i, w := range want {
		if res.Files[i] != filepath.Join(dir, w) {
			t.Fatalf("file %d is %s, want %s", i, res.Files[i], filepath.Join(dir, w))
		}
	}
	fh, err := os.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	got, meta, err := export.ReadSafetensors(fh)
	fh.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i, ts := range got {
		if ts.Name != chiefTensors[i].Name || !equalFloats(ts.Data, chiefTensors[i].Data) {
			t.Fatalf("tensor %s differs from the chief's export", ts.Name)
		}
	}
	if !strings.Contains(meta[export.MetaPreprocessing], `"label":"Attrition"`) {
		t.Fatalf("preprocessing metadata %.100q", meta[export.MetaPreprocessing])
	}

	// The ONNX graph on preprocessed rows answers what serve answers on the raw rows.
	m, err := serve.Load(context.Background(), dir, storage.S3Config{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "attrition-mlp", "1", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	model, err := export.UnmarshalONNX(raw)
	if err != nil {
		t.Fatal(err)
	}
	em, err := export.ReadModel(bytes.NewReader(mustRead(t, filepath.Join(dir, "model.safetensors"))))
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 3*em.Arch.Inputs)
	for i := range x {
		x[i] = float32(i%7) * 0.3
	}
	onnxOut, _, err := export.EvalONNX(model, x, []int{3, em.Arch.Inputs})
	if err != nil {
		t.Fatal(err)
	}
	goOut := make([]float32, 3)
	if err := em.Arch.Predict(em.Weights, x, 3, goOut); err != nil {
		t.Fatal(err)
	}
	for i := range goOut {
		if math.Abs(float64(goOut[i]-onnxOut[i])) > 1e-5 {
			t.Fatalf("row %d: onnx %v, pure Go %v", i, onnxOut[i], goOut[i])
		}
	}
	if m.Name() != "attrition-mlp" {
		t.Fatalf("serve loaded %q", m.Name())
	}

	dir2 := t.TempDir()
	if _, err := runCLI(t, "--address", c.GRPCAddr, "export", job.GetId(), "--format", "safetensors", "--out", dir2); err != nil {
		t.Fatalf("cohort export --format safetensors: %v", err)
	}
	var names []string
	entries, _ := os.ReadDir(dir2)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "model.safetensors model_card.md report.json" {
		t.Fatalf("safetensors export wrote %v", names)
	}
}

// TestExportBadInput: a job without a checkpoint, an unknown job and a bad format exit
// 2 with a message naming the problem, and write nothing.
func TestExportBadInput(t *testing.T) {
	c, client, ctx := startCluster(t, 1, 1)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{
		SpecYaml: exampleSpec(t, "label: Attrition", "label: NoSuchColumn"), IdempotencyKey: newIdempotencyKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	job, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_FAILED || job.GetCheckpoint() != "" {
		t.Fatalf("job %s with checkpoint %q, want a failed job without one", stateName(job.GetState()), job.GetCheckpoint())
	}
	dir := filepath.Join(t.TempDir(), "out")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no checkpoint", []string{"export", job.GetId(), "--format", "onnx", "--out", dir}, "has no committed checkpoint"},
		{"unknown job", []string{"export", "no-such-job", "--format", "onnx", "--out", dir}, "no-such-job"},
		{"bad format", []string{"export", job.GetId(), "--format", "pickle", "--out", dir}, `--format: "pickle"`},
		{"no out", []string{"export", job.GetId(), "--format", "onnx"}, "--out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCLI(t, append([]string{"--address", c.GRPCAddr}, tc.args...)...)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want exit status 2 mentioning %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("bad input created %s", dir)
			}
		})
	}
}

// TestServeCommandBadModel: a --model without an export exits 2 naming it.
func TestServeCommandBadModel(t *testing.T) {
	dir := t.TempDir()
	_, err := runCLI(t, "serve", "--model", dir, "--addr", "127.0.0.1:0")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "model.safetensors") {
		t.Fatalf("err = %v, want exit status 2 naming model.safetensors", err)
	}
}

func equalFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestJobExportsServeEveryKind trains a small CNN on IDX images and the LSTM example
// with export.formats [onnx, safetensors], then serves each job's export straight from
// storage: the CNN's answers on raw pixels equal the exported ONNX graph's on the
// scaled pixels, and the LSTM answers one finite prediction per window.
func TestJobExportsServeEveryKind(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	dir := t.TempDir()
	const n = 200
	imgs, labels := make([]byte, n*64), make([]byte, n)
	for i := range n {
		q := i % 3
		labels[i] = byte(q)
		for p := range 64 {
			imgs[i*64+p] = byte((p*7 + i*13) % 60)
			if p%3 == q {
				imgs[i*64+p] += 150
			}
		}
	}
	writeIDX(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), []int{n, 8, 8}, imgs)
	writeIDX(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), []int{n}, labels)
	cnnSpec := []byte(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: stripes-cnn}
spec:
  task: multiclass_classification
  model:
    cnn: {conv: [{filters: 3, kernel: 3, padding: 1}], pool: 2, dense: [6]}
  data:
    format: idx
    train: file://` + filepath.Join(dir, "train-images-idx3-ubyte.gz") + `
    validation: {fraction: 0.2}
  training: {epochs: 1, batchSize: 16, optimizer: {name: adam, learningRate: 0.01}}
  resources:
    workers: {count: 1}
    parameterServers: {shards: 1}
  export: {formats: [onnx, safetensors]}
`)
	raw, err := os.ReadFile(repoPath(t, "jobs/examples/performance-lstm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lstmSpec := strings.Replace(string(raw), "file://jobs/data/performance-sample.csv", "file://"+repoPath(t, "jobs/data/performance-sample.csv"), 1)
	lstmSpec = strings.Replace(lstmSpec, "epochs: 20", "epochs: 1", 1)

	for _, tc := range []struct {
		name string
		spec []byte
	}{{"cnn", cnnSpec}, {"lstm", []byte(lstmSpec)}} {
		t.Run(tc.name, func(t *testing.T) {
			job, _ := runJob(t, tc.spec, 1, 1)
			if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
			}
			exports := job.GetExports()
			if len(exports) != 2 {
				t.Fatalf("exports %v", exports)
			}
			prefix := strings.TrimSuffix(exports[0], "model.safetensors")
			m, err := serve.Load(context.Background(), prefix, storage.S3Config{})
			if err != nil {
				t.Fatal(err)
			}
			cfg := serve.DefaultConfig()
			cfg.Model = m
			srv, err := serve.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			md := m.Metadata()
			const rows = 5
			var inputs []map[string]any
			var pixels []float32
			for _, in := range md.Inputs {
				shape := []int{rows}
				size := rows
				for _, d := range in.Shape[1:] {
					shape = append(shape, int(d))
					size *= int(d)
				}
				vals := make([]int, size)
				for i := range vals {
					vals[i] = (i * 37) % 256
					pixels = append(pixels, float32(byte(vals[i]))/255)
				}
				inputs = append(inputs, map[string]any{"name": in.Name, "shape": shape, "datatype": "INT64", "data": vals})
			}
			body, _ := json.Marshal(map[string]any{"inputs": inputs})
			rec := httptestPost(srv, "/v2/models/"+m.Name()+"/infer", body)
			if rec.code != 200 {
				t.Fatalf("infer: %d %s", rec.code, rec.body)
			}
			var resp struct {
				Outputs []struct {
					Data []any `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal(rec.body, &resp); err != nil {
				t.Fatal(err)
			}
			got := resp.Outputs[0].Data
			if tc.name == "lstm" {
				if len(got) != rows {
					t.Fatalf("%d predictions for %d windows", len(got), rows)
				}
				return
			}
			onnxRaw, err := os.ReadFile(strings.TrimPrefix(exports[1], "file://"))
			if err != nil {
				t.Fatal(err)
			}
			om, err := export.UnmarshalONNX(onnxRaw)
			if err != nil {
				t.Fatal(err)
			}
			want, _, err := export.EvalONNX(om, pixels, []int{rows, 1, 8, 8})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("serve gave %d values, onnx %d", len(got), len(want))
			}
			for i := range want {
				if math.Abs(got[i].(float64)-float64(want[i])) > 1e-5 {
					t.Fatalf("value %d: serve %v, onnx %v", i, got[i], want[i])
				}
			}
		})
	}
}

type recorded struct {
	code int
	body []byte
}

func httptestPost(h http.Handler, path string, body []byte) recorded {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", path, bytes.NewReader(body)))
	return recorded{rec.Code, rec.Body.Bytes()}
}

// TestExportAndServeOnS3 runs a job with all storage on a real S3 server (versitygw),
// exports its checkpoint from s3:// with `cohort export`, and loads the job's own
// export for serving from its s3:// prefix.
func TestExportAndServeOnS3(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 1, PS: 1, Logger: testLogger(t), S3: &cfg})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := cohortv1.NewJobServiceClient(conn)
	spec := exampleSpec(t, "epochs: 30", "epochs: 1")
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatal(err)
	}
	job, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED || !strings.HasPrefix(job.GetCheckpoint(), "s3://") {
		t.Fatalf("job %s (%s), checkpoint %q", stateName(job.GetState()), job.GetStatusMessage(), job.GetCheckpoint())
	}
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	dir := t.TempDir()
	if _, err := runCLI(t, "--address", c.GRPCAddr, "export", job.GetId(), "--format", "onnx", "--out", dir, "--s3-endpoint", cfg.Endpoint); err != nil {
		t.Fatalf("cohort export from S3: %v", err)
	}
	for _, f := range []string{"model.safetensors", "attrition-mlp/config.pbtxt", "attrition-mlp/1/model.onnx"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	prefix := strings.TrimSuffix(job.GetExports()[0], "/model.safetensors")
	if !strings.HasPrefix(prefix, "s3://") {
		t.Fatalf("export %s", job.GetExports()[0])
	}
	fromS3, err := serve.Load(ctx, prefix, storage.S3Config{Endpoint: cfg.Endpoint, PathStyle: true})
	if err != nil {
		t.Fatalf("serve.Load(%s): %v", prefix, err)
	}
	fromDir, err := serve.Load(ctx, dir, storage.S3Config{})
	if err != nil {
		t.Fatal(err)
	}
	if fromS3.Name() != fromDir.Name() || len(fromS3.Metadata().Inputs) != len(fromDir.Metadata().Inputs) {
		t.Fatalf("S3 model %q and exported model %q differ", fromS3.Name(), fromDir.Name())
	}
}
