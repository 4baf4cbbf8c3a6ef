package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/export/ortest"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/serve"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
)

// runCLI runs the CLI in-process and returns its stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return execCLI(context.Background(), args...)
}

// cliMu serialises execCLI: the commands write to the package's stdout.
var cliMu sync.Mutex

// execCLI runs the cohort command line in this process and returns what it wrote to
// standard output. stdout is package state, so parallel tests take turns.
func execCLI(ctx context.Context, args ...string) (string, error) {
	cliMu.Lock()
	defer cliMu.Unlock()
	var out bytes.Buffer
	stdout = &out
	defer func() { stdout = os.Stdout }()
	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// TestExportCommand trains the example job with export.formats [onnx, safetensors],
// checks the chief's Triton layout in storage, then exports the job's best checkpoint with
// `cohort export` in both formats and checks that the files carry the same weights as
// the chief's export and that the ONNX graph takes the raw columns serve takes.
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
	if len(res.Files) != len(want) || res.Checkpoint != job.GetExportedFrom().GetCheckpoint() || !res.Best || res.Name != "attrition-mlp" {
		t.Fatalf("result %+v, want files %v from the best checkpoint %s", res, want, job.GetExportedFrom().GetCheckpoint())
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

	// The ONNX graph takes the raw columns serve takes (onnxruntime runs it in
	// TestJobExportsServeEveryKind).
	m, err := serve.Load(context.Background(), dir, storage.S3Config{})
	if err != nil {
		t.Fatal(err)
	}
	model, err := export.UnmarshalONNX(mustRead(t, filepath.Join(dir, "attrition-mlp", "1", "model.onnx")))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := export.SignatureOf(model)
	if err != nil {
		t.Fatal(err)
	}
	inputs := m.Metadata().Inputs
	if len(sig.Inputs) != len(inputs) {
		t.Fatalf("onnx inputs %v, serve's %v", sig.Inputs, inputs)
	}
	for i, in := range sig.Inputs {
		if want := map[string]string{serve.TypeBytes: "TYPE_STRING", serve.TypeFP64: "TYPE_FP32"}[inputs[i].Datatype]; in.Name != inputs[i].Name || in.TritonType() != want {
			t.Fatalf("onnx input %d is %s %s, serve's %s %s", i, in.Name, in.TritonType(), inputs[i].Name, inputs[i].Datatype)
		}
	}
	if cfg := string(mustRead(t, filepath.Join(dir, "attrition-mlp", "config.pbtxt"))); !strings.Contains(cfg, `string_value: "embedded"`) || !strings.Contains(cfg, "TYPE_STRING") {
		t.Fatalf("config.pbtxt:\n%s", cfg)
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
		SpecYaml: exampleSpec(t, `positive: "Yes"`, `positive: "Maybe"`), IdempotencyKey: newIdempotencyKey(), // fails at its first step
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

// TestJobExportsServeEveryKind trains the three example kinds with export.formats
// [onnx, safetensors] (the attrition MLP on jobs/data/attrition-sample.csv, a small CNN
// on generated IDX images, the performance LSTM on jobs/data/performance-sample.csv),
// serves each job's export straight from storage, and runs the exported ONNX graph,
// whose preprocessing is embedded, in onnxruntime on the same raw rows: real rows with
// an unseen category, a missing category and a missing number; images; real windows
// with a missing value. Its outputs must equal serve's within 1e-5 (relative to the
// value where it exceeds 1), and its labels serve's labels.
func TestJobExportsServeEveryKind(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	dir := t.TempDir()
	images := func(n int, seed int) ([]byte, []byte) {
		imgs, labels := make([]byte, n*64), make([]byte, n)
		for i := range n {
			q := (i + seed) % 3
			labels[i] = byte(q)
			for p := range 64 {
				imgs[i*64+p] = byte((p*7 + (i+seed)*13) % 60)
				if p%3 == q {
					imgs[i*64+p] += 150
				}
			}
		}
		return imgs, labels
	}
	imgs, labels := images(200, 0)
	writeIDX(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), []int{200, 8, 8}, imgs)
	writeIDX(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), []int{200}, labels)
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
	mlpSpec := exampleSpec(t, "epochs: 30", "epochs: 2", "explain:\n    permutation: {repeats: 5, seed: 1}", "explain:\n    permutation: {repeats: 1, seed: 1}")

	for _, tc := range []struct {
		name        string
		spec        []byte
		workers, ps int
	}{{"mlp", mlpSpec, 2, 2}, {"cnn", cnnSpec, 1, 1}, {"lstm", []byte(lstmSpec), 1, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			job, _ := runJob(t, tc.spec, tc.workers, tc.ps)
			if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
			}
			exports := job.GetExports()
			if len(exports) != 2 || !strings.HasSuffix(exports[1], "/1/model.onnx") {
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
			var feeds map[string]ortest.Tensor
			switch tc.name {
			case "mlp":
				feeds = attritionFeeds(t, m, 40)
			case "cnn":
				px, _ := images(12, 7)
				feeds = map[string]ortest.Tensor{export.ONNXImage: ortest.Uint8([]int{12, 1, 8, 8}, px)}
			case "lstm":
				feeds = performanceFeeds(t, m, 30)
			}
			tensors, err := ortest.ServeTensors(m, feeds)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptestPost(srv, "/v2/models/"+m.Name()+"/infer", ortest.InferBody(tensors))
			if rec.code != 200 {
				t.Fatalf("infer: %d %s", rec.code, rec.body)
			}
			var resp struct {
				Outputs []struct {
					Name string `json:"name"`
					Data []any  `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal(rec.body, &resp); err != nil {
				t.Fatal(err)
			}
			var served []serve.ResponseOutput
			for _, o := range resp.Outputs {
				so := serve.ResponseOutput{Name: o.Name}
				if o.Name == serve.OutputLabel {
					var labels []string
					for _, v := range o.Data {
						labels = append(labels, v.(string))
					}
					so.Data = labels
				} else {
					var vals []float64
					for _, v := range o.Data {
						vals = append(vals, v.(float64))
					}
					so.Data = vals
				}
				served = append(served, so)
			}

			// The same rows in the real ONNX Runtime.
			rt := ortest.Find(t)
			res := rt.Run(t, []ortest.Run{{Model: strings.TrimPrefix(exports[1], "file://"), Feeds: feeds}})[0]
			var names []string
			for _, in := range m.Metadata().Inputs {
				names = append(names, in.Name)
			}
			if !slices.Equal(res.InputNames, names) {
				t.Fatalf("onnxruntime inputs %v, serve's %v", res.InputNames, names)
			}
			d, rel, err := ortest.Compare(m.Metadata().Parameters["task"], served, res, 1e-5)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: onnxruntime %s vs cohort serve on %d raw rows: max |diff| %.3g, relative %.3g", tc.name, rt.Version, tensors[0].Shape[0], d, rel)
		})
	}
}

// attritionFeeds returns the first n rows of jobs/data/attrition-sample.csv as the
// embedded ONNX inputs of the served model's columns, with an unseen category in row 0,
// a missing number in row 1 and missing categories ("NA", "") in rows 2 and 3.
func attritionFeeds(t *testing.T, m *serve.Model, n int) map[string]ortest.Tensor {
	t.Helper()
	rows := readCSVRows(t, repoPath(t, "jobs/data/attrition-sample.csv"))
	header := rows[0]
	feeds := map[string]ortest.Tensor{}
	cats, nums := 0, 0
	for _, in := range m.Metadata().Inputs {
		ci := slices.Index(header, in.Name)
		if ci < 0 {
			t.Fatalf("input %q is not a CSV column", in.Name)
		}
		var strs []string
		var vals []float32
		for r := 1; r <= n; r++ {
			strs = append(strs, rows[r][ci])
			v, err := strconv.ParseFloat(rows[r][ci], 64)
			if err != nil && in.Datatype != serve.TypeBytes {
				t.Fatalf("column %s row %d: %v", in.Name, r, err)
			}
			vals = append(vals, float32(v))
		}
		if in.Datatype == serve.TypeBytes {
			switch cats++; cats {
			case 1:
				strs[0], strs[3] = "Teleport", ""
			case 2:
				strs[2] = "NA"
			}
			feeds[in.Name] = ortest.String([]int{n, 1}, strs)
			continue
		}
		if nums++; nums == 1 {
			vals[1] = float32(math.NaN())
		}
		feeds[in.Name] = ortest.Float32([]int{n, 1}, vals)
	}
	if cats < 2 || nums < 1 {
		t.Fatalf("the model has %d categorical and %d numeric inputs", cats, nums)
	}
	return feeds
}

// performanceFeeds returns n windows of the served model's lookback from the first
// employee series of jobs/data/performance-sample.csv (rows in time order), one
// [n, lookback] input per feature, with a missing value in window 1.
func performanceFeeds(t *testing.T, m *serve.Model, n int) map[string]ortest.Tensor {
	t.Helper()
	rows := readCSVRows(t, repoPath(t, "jobs/data/performance-sample.csv"))
	header := rows[0]
	feeds := map[string]ortest.Tensor{}
	for fi, in := range m.Metadata().Inputs {
		lookback := int(in.Shape[1])
		ci := slices.Index(header, in.Name)
		if ci < 0 || len(rows) <= n+lookback {
			t.Fatalf("feature %q: column %d, %d rows", in.Name, ci, len(rows))
		}
		vals := make([]float32, 0, n*lookback)
		for w := range n {
			for s := range lookback {
				row := rows[1+w+s]
				if row[0] != rows[1][0] {
					t.Fatalf("window %d leaves the first series", w)
				}
				v, err := strconv.ParseFloat(row[ci], 64)
				if err != nil {
					t.Fatal(err)
				}
				vals = append(vals, float32(v))
			}
		}
		if fi == 0 {
			vals[lookback+lookback/2] = float32(math.NaN())
		}
		feeds[in.Name] = ortest.Float32([]int{n, lookback}, vals)
	}
	return feeds
}

func readCSVRows(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
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
