package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/audit"
	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/internal/tasklog"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/node/nodetest"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/metrics"
	"github.com/cohort-dev/cohort/worker/model"
)

// repoPath is a path relative to the repository root.
func repoPath(t testing.TB, rel string) string {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// exampleSpec returns the example job with its data path made absolute and the
// replacements applied (pairs of old, new).
func exampleSpec(t *testing.T, replacements ...string) []byte {
	t.Helper()
	raw, err := os.ReadFile(repoPath(t, "jobs/examples/attrition-mlp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(raw), "file://jobs/data/attrition-sample.csv",
		"file://"+repoPath(t, "jobs/data/attrition-sample.csv"), 1)
	for i := 0; i+1 < len(replacements); i += 2 {
		if !strings.Contains(s, replacements[i]) {
			t.Fatalf("example spec has no %q", replacements[i])
		}
		s = strings.Replace(s, replacements[i], replacements[i+1], 1)
	}
	return []byte(s)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// runJob starts a dev cluster, submits spec and waits for the job to end.
func runJob(t *testing.T, spec []byte, workers, ps int) (*cohortv1.Job, *nodetest.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: workers, PS: ps, Logger: testLogger(t)})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := cohortv1.NewJobServiceClient(conn)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	final, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	return final, c
}

// keyOf turns a file:// URI of the dev store back into its storage key.
func keyOf(t *testing.T, c *nodetest.Cluster, uri string) string {
	t.Helper()
	root := c.Store.URI("")
	if !strings.HasPrefix(uri, root) {
		t.Fatalf("URI %s is not under the store %s", uri, root)
	}
	return strings.TrimPrefix(strings.TrimPrefix(uri, root), "/")
}

func readExport(t *testing.T, c *nodetest.Cluster, uri string) ([]export.Tensor, map[string]string) {
	t.Helper()
	rc, err := c.Store.Get(context.Background(), keyOf(t, c, uri))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ts, meta, err := export.ReadSafetensors(rc)
	if err != nil {
		t.Fatalf("read export: %v", err)
	}
	return ts, meta
}

// TestDevTrainsExampleJob runs the whole embedded cluster over loopback gRPC (raft
// coordinator, two parameter-server nodes, two workers) on the example job, then checks
// the metrics, the committed checkpoint, retention, and that the exported model, the
// best-scored checkpoint's shards and the reported metrics all describe the same
// parameters.
func TestDevTrainsExampleJob(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	spec := exampleSpec(t)
	job, c := runJob(t, spec, 2, 2)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	m := job.GetMetrics()
	for _, k := range []string{"val_loss", "val_accuracy", "val_auc"} {
		if _, ok := m[k]; !ok {
			t.Errorf("metric %s missing: %v", k, m)
		}
	}
	if m["val_auc"] < 0.75 {
		t.Errorf("val_auc = %.4f, want >= 0.75", m["val_auc"])
	}
	parsed, err := jobs.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	if p := job.GetProgress(); p.GetEpoch() != int32(parsed.Spec.Training.Epochs) || p.GetStep() != p.GetTotalSteps() {
		t.Errorf("progress %v: want all %d epochs and steps done", p, parsed.Spec.Training.Epochs)
	}

	ctx := context.Background()
	man, err := storage.ReadManifest(ctx, c.Store, keyOf(t, c, job.GetCheckpoint()))
	if err != nil {
		t.Fatalf("read committed manifest: %v", err)
	}
	if err := storage.VerifyManifestObjects(ctx, c.Store, man); err != nil {
		t.Fatalf("verify checkpoint: %v", err)
	}
	if man.Step != job.GetProgress().GetTotalSteps() || len(man.Objects) != 2 {
		t.Errorf("manifest step %d with %d objects, want step %d and 2 shard objects", man.Step, len(man.Objects), job.GetProgress().GetTotalSteps())
	}
	// The job exports its best-scored checkpoint (spec.checkpoint.scoreBy: val_auc).
	infos, err := storage.ListCheckpoints(ctx, c.Store, job.GetId())
	if err != nil {
		t.Fatal(err)
	}
	best := storage.BestCheckpoints(infos, 1)
	if len(best) != 1 || job.GetExportedFrom().GetCheckpoint() != best[0].URI || m["val_auc"] != best[0].Score.Value {
		t.Fatalf("exported from %v with val_auc %v, want the best-scored checkpoint %+v", job.GetExportedFrom(), m["val_auc"], best)
	}
	if man, err = storage.ReadManifest(ctx, c.Store, best[0].ManifestKey); err != nil {
		t.Fatal(err)
	}
	ckParams := make([]float32, man.TotalParams)
	for _, o := range man.Objects {
		rc, err := c.Store.Get(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		ck, err := paramserver.ReadShardCheckpoint(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("shard checkpoint %s: %v", o.Key, err)
		}
		copy(ckParams[o.Offset:o.Offset+o.Length], ck.Params)
	}
	objs, err := c.Store.List(ctx, "jobs/"+job.GetId()+"/checkpoints/")
	if err != nil {
		t.Fatal(err)
	}
	manifests := 0
	for _, o := range objs {
		if strings.HasSuffix(o.Key, "/manifest.json") {
			manifests++
		}
	}
	if ck := parsed.Spec.Checkpoint; manifests == 0 || manifests > ck.Keep+ck.KeepBest {
		t.Errorf("%d committed checkpoints kept, want 1..%d (keep and keepBest)", manifests, ck.Keep+ck.KeepBest)
	}

	if len(job.GetExports()) != 2 || !strings.HasSuffix(job.GetExports()[0], "/model.safetensors") ||
		!strings.HasSuffix(job.GetExports()[1], "/1/model.onnx") {
		t.Fatalf("exports %v, want model.safetensors and the Triton model.onnx", job.GetExports())
	}
	tensors, meta := readExport(t, c, job.GetExports()[0])
	var flat []float32
	for _, ts := range tensors {
		flat = append(flat, ts.Data...)
	}
	if len(flat) != len(ckParams) {
		t.Fatalf("export has %d parameters, checkpoint %d", len(flat), len(ckParams))
	}
	for i := range flat {
		if flat[i] != ckParams[i] {
			t.Fatalf("parameter %d: export %v != checkpoint %v", i, flat[i], ckParams[i])
		}
	}

	// Recompute the validation AUC from the exported parameters and the saved
	// preprocessing; it must equal what the chief reported.
	var pre data.Preprocessor
	if err := jsonUnmarshal([]byte(meta["cohort.preprocessing"]), &pre); err != nil {
		t.Fatalf("preprocessing metadata: %v", err)
	}
	f, err := os.Open(repoPath(t, "jobs/data/attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := parsed.Spec.Data.Validation
	_, val, _, err := data.LoadTabular(f, data.TabularConfig{Label: "Attrition", Positive: "Yes", Task: jobs.TaskBinary,
		Exclude: parsed.Spec.Audit.Sensitive}, v.Fraction, v.Seed, v.Stratify)
	if err != nil {
		t.Fatal(err)
	}
	mdl, err := model.NewMLP(model.MLPConfig{Inputs: pre.Dim, Hidden: parsed.Spec.Model.MLP.Hidden,
		Activation: parsed.Spec.Model.MLP.Activation, Outputs: 1, Task: jobs.TaskBinary, BatchSize: parsed.Spec.Training.BatchSize})
	if err != nil {
		t.Fatal(err)
	}
	probs := make([]float32, val.N)
	if err := mdl.Predict(flat, val.X, val.N, probs); err != nil {
		t.Fatal(err)
	}
	if auc := metrics.AUC(probs, val.Y); math.Abs(auc-m["val_auc"]) > 1e-6 {
		t.Errorf("AUC of the exported model = %.6f, reported val_auc = %.6f", auc, m["val_auc"])
	}

	// The report of the exported model: the audited columns are no inputs, the
	// importance ranks the attrition model's drivers (internal/hrdata) above its
	// distractors, no gate was asked for, and the export carries the report.
	r := readReport(t, c, job)
	if r.Metrics["val_auc"].Value != m["val_auc"] || job.GetGate() != nil {
		t.Errorf("report val_auc %v (job %v), gate %v", r.Metrics["val_auc"], m["val_auc"], job.GetGate())
	}
	drivers := []string{"OverTime", "StockOptionLevel", "YearsWithCurrManager", "JobSatisfaction", "EnvironmentSatisfaction",
		"JobInvolvement", "WorkLifeBalance", "BusinessTravel", "JobRole", "MonthlyIncome", "JobLevel", "Age", "NumCompaniesWorked",
		"DistanceFromHome", "TotalWorkingYears"}
	distractors := []string{"RelationshipSatisfaction", "Education", "EducationField", "PercentSalaryHike", "TrainingTimesLastYear"}
	if len(r.Importance) < 3 {
		t.Fatalf("importance %v", r.Importance)
	}
	for i, im := range r.Importance {
		switch {
		case im.Feature == "Gender" || im.Feature == "MaritalStatus":
			t.Errorf("sensitive column %s is a model input", im.Feature)
		case i < 3 && !slices.Contains(drivers, im.Feature):
			t.Errorf("importance rank %d is %s, not one of the model's drivers", i+1, im.Feature)
		case slices.Contains(distractors, im.Feature) && im.Mean > r.Importance[0].Mean/2:
			t.Errorf("distractor %s has importance %.4f, top is %s %.4f", im.Feature, im.Mean, r.Importance[0].Feature, r.Importance[0].Mean)
		}
	}
	attrs := map[string]int{}
	for _, g := range r.Audit.Groups {
		attrs[g.Attribute] += g.Count
	}
	for _, a := range []string{"Gender", "MaritalStatus", "Gender,MaritalStatus"} {
		if attrs[a] != r.Rows {
			t.Errorf("groups of %s count %d rows, want all %d", a, attrs[a], r.Rows)
		}
	}
	for _, f := range []string{"report.json", "model_card.md"} {
		key := strings.TrimSuffix(keyOf(t, c, job.GetExports()[0]), "model.safetensors") + f
		if _, err := c.Store.Stat(ctx, key); err != nil {
			t.Errorf("export lacks %s: %v", f, err)
		}
	}
}

// readReport reads and strictly decodes a finished job's report.json from the dev
// cluster's storage.
func readReport(t *testing.T, c *nodetest.Cluster, job *cohortv1.Job) *audit.Report {
	t.Helper()
	if job.GetReport() == "" {
		t.Fatalf("job %s has no report", job.GetId())
	}
	rc, err := c.Store.Get(context.Background(), keyOf(t, c, job.GetReport()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	r, err := audit.DecodeReport(rc)
	if err != nil {
		t.Fatalf("%s: %v", job.GetReport(), err)
	}
	return r
}

// TestSyncWorkersMatchOneWorkerWithLargerBatch: in sync mode, two workers with batch B
// must follow the same trajectory as one worker with batch 2B over the same data order.
// It fails if a worker trains on parameters other than the shards' current ones, or a
// shard applies a step before every worker's gradient arrived.
func TestSyncWorkersMatchOneWorkerWithLargerBatch(t *testing.T) {
	base := []string{"epochs: 30", "epochs: 2", "hidden: [64, 32]", "hidden: [16]", "everySteps: 200", "everySteps: 20"}
	two, c2 := runJob(t, exampleSpec(t, append(base, "batchSize: 32", "batchSize: 16")...), 2, 2)
	one, c1 := runJob(t, exampleSpec(t, append(base, "count: 2", "count: 1")...), 1, 2)
	for _, j := range []*cohortv1.Job{two, one} {
		if j.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
			t.Fatalf("job %s %s: %s", j.GetId(), stateName(j.GetState()), j.GetStatusMessage())
		}
	}
	if two.GetProgress().GetTotalSteps() != one.GetProgress().GetTotalSteps() {
		t.Fatalf("total steps %d vs %d", two.GetProgress().GetTotalSteps(), one.GetProgress().GetTotalSteps())
	}
	for _, k := range []string{"val_loss", "val_auc"} {
		if d := math.Abs(two.GetMetrics()[k] - one.GetMetrics()[k]); d > 1e-4 {
			t.Errorf("%s: 2 workers %.6f, 1 worker %.6f", k, two.GetMetrics()[k], one.GetMetrics()[k])
		}
	}
	p2, _ := readExport(t, c2, two.GetExports()[0])
	p1, _ := readExport(t, c1, one.GetExports()[0])
	var worst float64
	for i := range p2 {
		for j := range p2[i].Data {
			worst = math.Max(worst, math.Abs(float64(p2[i].Data[j]-p1[i].Data[j])))
		}
	}
	if worst > 1e-5 {
		t.Errorf("final parameters differ by up to %g between 2 workers and 1 worker", worst)
	}
	t.Logf("largest parameter difference, 2 workers vs 1 worker with a 2x batch: %g", worst)
}

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	cleanup, err := setupTestPKI()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test CA:", err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// TestDevRunBadInput runs the CLI in-process and checks that bad input exits 2 with a
// message naming the problem, before any job is submitted.
func TestDevRunBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, content []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	csvNoLabel := write("nolabel.csv", []byte("Age,Income\n30,1000\n40,2000\n"))
	csvThree := write("three.csv", []byte("Age,Attrition\n30,Yes\n40,No\n50,Maybe\n31,Yes\n41,No\n"))
	sample, err := os.ReadFile(repoPath(t, "jobs/data/attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	attritionCopy := write("attrition.csv", sample)
	cases := []struct {
		name string
		spec []byte
		want []string
	}{
		{"unknown field", exampleSpec(t, "epochs: 30", "epochs: 30\n    epochz: 3"), []string{"spec.training.epochz", "line"}},
		{"malformed yaml", []byte("apiVersion: [\n"), []string{"line"}},
		{"zero and negative sizes", exampleSpec(t, "batchSize: 32", "batchSize: 0", "hidden: [64, 32]", "hidden: [64, -1]"),
			[]string{"spec.training.batchSize", "spec.model.mlp.hidden"}},
		{"missing data file", exampleSpec(t, "attrition-sample.csv", "no-such-file.csv"), []string{"spec.data.train", "no-such-file.csv"}},
		{"label column missing", exampleSpec(t, "file://"+repoPath(t, "jobs/data/attrition-sample.csv"), "file://"+csvNoLabel), []string{"Attrition", "not found"}},
		{"non-binary label", exampleSpec(t, "file://"+repoPath(t, "jobs/data/attrition-sample.csv"), "file://"+csvThree), []string{"binary", "3"}},
		{"class weight of an unknown class", exampleSpec(t, "file://"+repoPath(t, "jobs/data/attrition-sample.csv"), "file://"+attritionCopy,
			"    seed: 42\n  resources:", "    seed: 42\n    classWeights: {\"yes\": 3}\n  resources:"),
			[]string{"spec.training.classWeights.yes", `did you mean "Yes"`}},
		// Data is read only inside the data roots (--data-root): no secrets from the
		// process's environment, no escapes with "..".
		{"data outside the roots", exampleSpec(t, "file://"+repoPath(t, "jobs/data/attrition-sample.csv"), "file:///proc/self/environ"),
			[]string{"spec.data.train", "outside the data roots"}},
		{"escape from the roots", exampleSpec(t, "file://"+repoPath(t, "jobs/data/attrition-sample.csv"), "file://"+dir+"/"+strings.Repeat("../", 12)+"etc/passwd"),
			[]string{"spec.data.train", "outside the data roots"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			specPath := write(strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.spec)
			_, err := execCLI(context.Background(), "dev", "--run", specPath, "--data-dir", filepath.Join(dir, "data"), "--data-root", dir, "-o", "json")
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 {
				t.Fatalf("err = %v, want exit status 2", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not mention %q", err.Error(), w)
				}
			}
			if strings.Contains(err.Error(), "PATH=") || strings.Contains(err.Error(), "root:") {
				t.Errorf("message %q shows a file's contents", err.Error())
			}
			if _, err := os.Stat(filepath.Join(dir, "data", "storage", "jobs")); !os.IsNotExist(err) {
				t.Errorf("bad input wrote job data to storage (stat err %v)", err)
			}
		})
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// startCluster starts a dev cluster for a test and returns it with a job client.
func startCluster(t *testing.T, workers, ps int) (*nodetest.Cluster, cohortv1.JobServiceClient, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: workers, PS: ps, Logger: testLogger(t)})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, cohortv1.NewJobServiceClient(conn), ctx
}

// TestJobWithBadDataFails: a problem with the data that the coordinator's pre-flight
// does not look for (a positive class that is not a value of the label column) is found
// by the workers' first step; such a failure is permanent, so the job fails at once with
// a message naming the problem, without shrinking to a new generation or restarting, and
// writes no checkpoint or export.
func TestJobWithBadDataFails(t *testing.T) {
	c, client, ctx := startCluster(t, 2, 2)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: exampleSpec(t, `positive: "Yes"`, `positive: "Maybe"`)})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	job, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_FAILED {
		t.Fatalf("job %s, want failed", stateName(job.GetState()))
	}
	for _, want := range []string{"worker", "data.positive", `"Maybe"`} {
		if !strings.Contains(job.GetStatusMessage(), want) {
			t.Errorf("status message %q does not mention %q", job.GetStatusMessage(), want)
		}
	}
	if job.GetGeneration() != 1 || job.GetRestarts() != 0 {
		t.Errorf("failed job reached generation %d with %d restarts; a permanent failure must neither shrink nor restart it",
			job.GetGeneration(), job.GetRestarts())
	}
	if job.GetCheckpoint() != "" || len(job.GetExports()) != 0 {
		t.Errorf("failed job has checkpoint %q exports %v", job.GetCheckpoint(), job.GetExports())
	}
	objs, err := c.Store.List(ctx, "jobs/"+job.GetId()+"/")
	if err != nil {
		t.Fatal(err)
	}
	// Only the tasks' logs, which say why.
	objs = slices.DeleteFunc(objs, func(o storage.ObjectInfo) bool { return strings.HasPrefix(o.Key, tasklog.Prefix(job.GetId())) })
	if len(objs) != 0 {
		t.Errorf("failed job left %d objects in storage, first %s", len(objs), objs[0].Key)
	}
}

// TestCancelRunningJob cancels a job after its first epoch: the job ends cancelled with
// every allocation stopped, and the cluster goes on serving (a second job succeeds).
func TestCancelRunningJob(t *testing.T) {
	_, client, ctx := startCluster(t, 2, 2)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: exampleSpec(t, "epochs: 30", "epochs: 100000")})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	id := resp.GetJob().GetId()
	stream, err := client.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if msg.GetJob().GetProgress().GetEpoch() >= 1 {
			break
		}
	}
	if _, err := client.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: id, Reason: "test"}); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	job, err := watchUntilDone(ctx, client, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("job %s, want cancelled", stateName(job.GetState()))
	}
	got, err := client.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range got.GetAllocations() {
		if a.GetState() == cohortv1.TaskState_TASK_STATE_RUNNING || a.GetState() == cohortv1.TaskState_TASK_STATE_PENDING {
			t.Errorf("allocation %s still %s after cancel", a.GetId(), taskStateName(a.GetState()))
		}
	}
	resp2, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: exampleSpec(t, "epochs: 30", "epochs: 2")})
	if err != nil {
		t.Fatalf("submit after cancel: %v", err)
	}
	job2, err := watchUntilDone(ctx, client, resp2.GetJob().GetId(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if job2.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("second job %s: %s", stateName(job2.GetState()), job2.GetStatusMessage())
	}
}

// TestDevRunOnAnotherCSV drives the CLI as a user would: generate a different attrition
// table with `cohort data gen attrition`, point the example spec at it, and `dev --run`
// it with -o json; the last stdout line is the contract's result object.
func TestDevRunOnAnotherCSV(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "attrition-7.csv")
	gen := newRootCmd()
	gen.SetArgs([]string{"data", "gen", "attrition", "--rows", "2000", "--seed", "7", "--out", csvPath})
	if err := gen.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("data gen: %v", err)
	}
	spec := exampleSpec(t, "file://"+repoPath(t, "jobs/data/attrition-sample.csv"), "file://"+csvPath, "epochs: 30", "epochs: 8")
	specPath := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(specPath, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := execCLI(context.Background(), "dev", "--run", specPath, "--data-dir", filepath.Join(dir, "data"), "--data-root", dir, "-o", "json", "--log-level", "error")
	if err != nil {
		t.Fatalf("dev --run: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var res jobResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last stdout line %q is not the result object: %v", lines[len(lines)-1], err)
	}
	if res.Status != "succeeded" || res.JobID == "" || !strings.HasPrefix(res.Checkpoint, "file://") || len(res.Exports) != 2 ||
		res.ExportedStep == nil || res.ExportedEpoch == nil || *res.ExportedEpoch < 1 || *res.ExportedEpoch > 8 {
		t.Fatalf("result %+v", res)
	}
	if res.Metrics["val_auc"] < 0.75 {
		t.Errorf("val_auc %.4f on the generated table, want >= 0.75", res.Metrics["val_auc"])
	}
}

// writeIDX writes a gzip IDX file of unsigned bytes with the given dimensions.
func writeIDX(t *testing.T, path string, dims []int, values []byte) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	hdr := []byte{0, 0, 0x08, byte(len(dims))}
	for _, d := range dims {
		hdr = binary.BigEndian.AppendUint32(hdr, uint32(d))
	}
	if _, err := zw.Write(append(hdr, values...)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDevTrainsCNNOnIDX trains a small CNN end to end on IDX images (which quadrant of
// an 8x8 image is bright, 4 classes) written in the MNIST file layout, with a separate
// test set, and checks the test metrics the contract names.
func TestDevTrainsCNNOnIDX(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	dir := t.TempDir()
	write := func(prefix string, n int, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 1))
		imgs := make([]byte, n*64)
		labels := make([]byte, n)
		for i := range n {
			q := rng.IntN(4)
			labels[i] = byte(q)
			for y := range 8 {
				for x := range 8 {
					v := rng.IntN(60)
					if (y/4)*2+x/4 == q {
						v += 120
					}
					imgs[i*64+y*8+x] = byte(v)
				}
			}
		}
		writeIDX(t, filepath.Join(dir, prefix+"-images-idx3-ubyte.gz"), []int{n, 8, 8}, imgs)
		writeIDX(t, filepath.Join(dir, prefix+"-labels-idx1-ubyte.gz"), []int{n}, labels)
	}
	write("train", 600, 1)
	write("t10k", 200, 2)
	spec := []byte(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: quadrants-cnn}
spec:
  task: multiclass_classification
  model:
    cnn: {conv: [{filters: 4, kernel: 3, padding: 1}], pool: 2, dense: [8]}
  data:
    format: idx
    train: file://` + filepath.Join(dir, "train-images-idx3-ubyte.gz") + `
    validation: {fraction: 0.2}
    test: file://` + filepath.Join(dir, "t10k-images-idx3-ubyte.gz") + `
  training: {epochs: 6, batchSize: 16, optimizer: {name: adam, learningRate: 0.01}}
  resources:
    workers: {count: 2}
    parameterServers: {shards: 2}
`)
	job, c := runJob(t, spec, 2, 2)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	m := job.GetMetrics()
	for _, k := range []string{"val_loss", "val_accuracy", "test_loss", "test_accuracy"} {
		if _, ok := m[k]; !ok {
			t.Errorf("metric %s missing: %v", k, m)
		}
	}
	if m["test_accuracy"] < 0.9 {
		t.Errorf("test_accuracy %.3f, want >= 0.9 on a separable task", m["test_accuracy"])
	}
	tensors, meta := readExport(t, c, job.GetExports()[0])
	if tensors[0].Name != "conv0.weight" || !strings.Contains(meta["cohort.preprocessing"], `"height":8`) {
		t.Errorf("export: first tensor %s, preprocessing %s", tensors[0].Name, meta["cohort.preprocessing"])
	}

	// Integrated gradients of the trained model look where the class is: each class's
	// mean |attribution| is largest in its own bright quadrant.
	r := readReport(t, c, job)
	if r.Split != "test" || r.Attribution == nil || len(r.Attribution.Classes) != 4 {
		t.Fatalf("report on %s with attribution %+v", r.Split, r.Attribution)
	}
	for _, ca := range r.Attribution.Classes {
		var mass [4]float64
		for p, v := range ca.MeanAbs {
			y, x := p/8, p%8
			mass[(y/4)*2+x/4] += v
		}
		for q := range 4 {
			if q != ca.Class && mass[q] >= mass[ca.Class] {
				t.Errorf("class %d: attribution mass by quadrant %.4f: quadrant %d outweighs its own", ca.Class, mass, q)
			}
		}
	}
}

// TestDevTrainsLSTMOnSequences trains the performance-lstm example (shortened) and checks
// that it beats the seasonal-naive forecast on the validation period.
func TestDevTrainsLSTMOnSequences(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	raw, err := os.ReadFile(repoPath(t, "jobs/examples/performance-lstm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	spec := strings.Replace(string(raw), "file://jobs/data/performance-sample.csv",
		"file://"+repoPath(t, "jobs/data/performance-sample.csv"), 1)
	spec = strings.Replace(spec, "epochs: 20", "epochs: 8", 1)
	job, _ := runJob(t, []byte(spec), 2, 2)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	m := job.GetMetrics()
	naive, ok := m["val_rmse_seasonal_naive"]
	if !ok || naive <= 0 {
		t.Fatalf("no seasonal-naive baseline in %v", m)
	}
	if m["val_rmse"] >= naive {
		t.Errorf("val_rmse %.4f does not beat the seasonal-naive forecast %.4f", m["val_rmse"], naive)
	}
	t.Logf("val_rmse %.4f, seasonal naive %.4f", m["val_rmse"], naive)
}

// TestDevTrainsOnS3 runs the embedded cluster with all storage on a real S3 server
// (versitygw on 127.0.0.1): the training data is read from s3://, and the committed
// checkpoint and the export land in the bucket and verify.
func TestDevTrainsOnS3(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t), S3: &cfg})
	csv, err := os.ReadFile(repoPath(t, "jobs/data/attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Store.Put(ctx, "datasets/attrition.csv", bytes.NewReader(csv), int64(len(csv))); err != nil {
		t.Fatal(err)
	}
	dataURI := c.Store.URI("datasets/attrition.csv")
	if !strings.HasPrefix(dataURI, "s3://") {
		t.Fatalf("data URI %s", dataURI)
	}
	spec := exampleSpec(t, "file://"+repoPath(t, "jobs/data/attrition-sample.csv"), dataURI, "epochs: 30", "epochs: 4")
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := cohortv1.NewJobServiceClient(conn)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec})
	if err != nil {
		t.Fatal(err)
	}
	job, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	if !strings.HasPrefix(job.GetCheckpoint(), "s3://") || len(job.GetExports()) != 2 || !strings.HasPrefix(job.GetExports()[0], "s3://") {
		t.Fatalf("checkpoint %s exports %v: want s3:// URIs", job.GetCheckpoint(), job.GetExports())
	}
	man, err := storage.ReadManifest(ctx, c.Store, keyOf(t, c, job.GetCheckpoint()))
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.VerifyManifestObjects(ctx, c.Store, man); err != nil {
		t.Fatalf("verify checkpoint on S3: %v", err)
	}
	tensors, _ := readExport(t, c, job.GetExports()[0])
	if len(tensors) == 0 {
		t.Fatal("empty export")
	}
	// The tasks' logs are segment objects in the bucket, read through the coordinator.
	// Each task writes its last segment as it stops, which can be just after the job
	// is recorded as done: wait for all four.
	waitFor(t, "every task's log segments in the bucket", 30*time.Second, func() error {
		segs, err := tasklog.List(ctx, c.Store, job.GetId(), "")
		if err == nil && len(segs) < 4 {
			err = fmt.Errorf("%d segments", len(segs))
		}
		return err
	})
	checkFinishedJobLogs(t, c.GRPCAddr, job.GetId(), 4)
}
