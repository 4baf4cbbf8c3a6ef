package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/internal/hrdata"
	"github.com/cohort-dev/cohort/internal/psagent"
	"github.com/cohort-dev/cohort/internal/tfevents"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
	"github.com/cohort-dev/cohort/storage/storagetest"
)

// resumeSpec is a small attrition MLP: 192 training rows, 2 workers of batch 16, so 6
// steps per epoch and 18 in all; a checkpoint every 4 steps (steps 4 and 8 fall inside
// an epoch, step 12 on an epoch boundary).
const resumeSpec = `apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: resume-mlp}
spec:
  task: binary_classification
  model:
    mlp: {hidden: [12, 6], activation: relu}
  data:
    format: csv
    train: file://%s
    validation: {fraction: 0.2, seed: 7, stratify: true}
    label: Attrition
    positive: "Yes"
  training:
    epochs: 3
    batchSize: 16
    optimizer: {name: adam, learningRate: 0.01}
    consistency: {mode: sync}
    seed: 11
  resources:
    workers: {count: 2}
    parameterServers: {shards: 2}
  checkpoint: {everySteps: 4, keep: 2}
  export: {formats: [safetensors]}
`

const (
	resumeWorkers = 2
	resumeShards  = 2
	resumeTotal   = 18
)

// testCluster is a real parameter server (gRPC on loopback) hosting the shards through
// psagent, as a paramserver node does, and a store.
type testCluster struct {
	t     *testing.T
	store storage.Blob
	srv   *paramserver.Server
	addr  string
	ps    *psagent.Runner
	spec  []byte
}

func newTestCluster(t *testing.T, store storage.Blob) *testCluster {
	t.Helper()
	srv := paramserver.NewServer(paramserver.DefaultServerConfig())
	g := grpc.NewServer(paramserver.ServerOptions()...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	ps, err := psagent.New(psagent.Config{Server: srv, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	csv := filepath.Join(t.TempDir(), "attrition.csv")
	f, err := os.Create(csv)
	if err != nil {
		t.Fatal(err)
	}
	if err := hrdata.GenerateAttrition(f, hrdata.AttritionConfig{Rows: 240, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return &testCluster{t: t, store: store, srv: srv, addr: lis.Addr().String(), ps: ps, spec: fmt.Appendf(nil, resumeSpec, csv)}
}

func (c *testCluster) job(id string) *cohortv1.Job {
	return &cohortv1.Job{Id: id, Name: "resume-mlp", SpecYaml: c.spec, WorkerCount: resumeWorkers, ShardCount: resumeShards, Generation: 1}
}

// runOpts tune one run of a job's tasks.
type runOpts struct {
	// onReport sees the chief's reports; cancel stops every task (a stop or a crash).
	onReport func(rep *cohortv1.TaskReport, cancel func())
	// ctx, when set, is the run's parent context.
	ctx context.Context
	// metrics are given to the trainers.
	metrics *Metrics
	// configure, when set, adjusts each trainer's configuration.
	configure func(*TrainerConfig)
	// results, when set, receives every rank's result.
	results *[]*Result
}

// run starts the job's shards (restored when job.Checkpoint is set) and workers at the
// job's generation, waits for the workers, stops the shards, and returns the chief's
// result and the first error.
func (c *testCluster) run(job *cohortv1.Job, o runOpts) (*Result, error) {
	parent := o.ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	ctx, stopTimeout := context.WithTimeout(ctx, 3*time.Minute)
	defer stopTimeout()
	gen := job.GetGeneration()
	var psIDs []string
	for i := range resumeShards {
		id := fmt.Sprintf("%s-ps%d-g%d", job.GetId(), i, gen)
		psIDs = append(psIDs, id)
		a := &cohortv1.Assignment{Job: job, Allocation: &cohortv1.Allocation{
			Id: id, JobId: job.GetId(), Kind: cohortv1.TaskKind_TASK_KIND_PS_SHARD, Index: int32(i), Generation: gen}}
		c.ps.Start(ctx, a, func(rep *cohortv1.TaskReport) {
			if rep.GetState() == cohortv1.TaskState_TASK_STATE_FAILED {
				cancel(fmt.Errorf("shard %d failed: %s", i, rep.GetMessage()))
			}
		})
	}
	defer func() {
		for _, id := range psIDs {
			c.ps.Stop(id)
		}
	}()
	addrs := make([]string, resumeShards)
	for i := range addrs {
		addrs[i] = c.addr
	}
	workers := int(job.GetWorkerCount())
	results := make([]*Result, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for r := range workers {
		cfg := TrainerConfig{
			Assignment: &cohortv1.Assignment{Job: job, ShardAddresses: addrs, Allocation: &cohortv1.Allocation{
				Id: fmt.Sprintf("%s-w%d-g%d", job.GetId(), r, gen), JobId: job.GetId(), Kind: cohortv1.TaskKind_TASK_KIND_WORKER,
				Index: int32(r), Generation: gen}},
			Store:           c.store,
			DataRoots:       testDataRoots(),
			Metrics:         o.metrics,
			CheckpointGrace: time.Nanosecond,
			Report: func(rep *cohortv1.TaskReport) {
				if o.onReport != nil {
					o.onReport(rep, func() { cancel(errStopped) })
				}
			},
		}
		if o.configure != nil {
			o.configure(&cfg)
		}
		tr, err := NewTrainer(cfg)
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			results[r], errs[r] = tr.Run(ctx)
			if errs[r] != nil {
				cancel(errs[r])
			}
		})
	}
	wg.Wait()
	if o.results != nil {
		*o.results = results
	}
	if cause := context.Cause(ctx); cause != nil {
		return nil, cause
	}
	return results[0], errors.Join(errs...)
}

var errStopped = errors.New("stopped by the test")

// finalState reads every parameter and optimizer value of a committed checkpoint.
func finalState(t *testing.T, store storage.Blob, uri string) *paramserver.ShardCheckpoint {
	t.Helper()
	ctx := context.Background()
	man, err := storage.OpenCheckpoint(ctx, store, uri)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := paramserver.LoadShardRange(ctx, store, man, 0, paramserver.Range{Length: man.TotalParams})
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

// sameBits fails unless a and b hold bit-identical parameters and optimizer state.
func sameBits(t *testing.T, what string, a, b *paramserver.ShardCheckpoint) {
	t.Helper()
	if a.Step != b.Step || a.OptimizerStep != b.OptimizerStep || len(a.Params) != len(b.Params) || len(a.State) != len(b.State) {
		t.Fatalf("%s: step %d/%d optimizer step %d/%d params %d/%d state %d/%d", what,
			a.Step, b.Step, a.OptimizerStep, b.OptimizerStep, len(a.Params), len(b.Params), len(a.State), len(b.State))
	}
	vecs := [][2][]float32{{a.Params, b.Params}}
	for i := range a.State {
		vecs = append(vecs, [2][]float32{a.State[i], b.State[i]})
	}
	for v, p := range vecs {
		for i := range p[0] {
			if math.Float32bits(p[0][i]) != math.Float32bits(p[1][i]) {
				t.Fatalf("%s: vector %d (0 = parameters, then optimizer state) differs at %d: %v vs %v", what, v, i, p[0][i], p[1][i])
			}
		}
	}
}

// uninterrupted trains a job to the end once and returns its final state.
func uninterrupted(t *testing.T, c *testCluster) *paramserver.ShardCheckpoint {
	t.Helper()
	res, err := c.run(c.job("straight"), runOpts{})
	if err != nil {
		t.Fatalf("uninterrupted run: %v", err)
	}
	ck := finalState(t, c.store, res.Checkpoint)
	if ck.Step != resumeTotal {
		t.Fatalf("final checkpoint at step %d, want %d", ck.Step, resumeTotal)
	}
	return ck
}

// checkpointStep returns the step of a manifest URI.
func checkpointStep(t *testing.T, uri string) int64 {
	t.Helper()
	var step int64
	i := strings.LastIndex(uri, "/checkpoints/")
	if i < 0 {
		t.Fatalf("not a checkpoint URI: %s", uri)
	}
	if _, err := fmt.Sscanf(uri[i+len("/checkpoints/"):], "%012d/manifest.json", &step); err != nil {
		t.Fatalf("checkpoint URI %s: %v", uri, err)
	}
	return step
}

// TestExactResume stops a job right after a committed checkpoint (inside an epoch, and
// on an epoch boundary), places it again with the job record pointing at that
// checkpoint, and checks that it ends with parameters and Adam state bit-identical to
// an uninterrupted run's.
func TestExactResume(t *testing.T) {
	c := newTestCluster(t, mustLocal(t))
	want := uninterrupted(t, c)
	for _, stopAt := range []int64{8, 12} {
		t.Run(fmt.Sprintf("stop_at_%d", stopAt), func(t *testing.T) {
			job := c.job(fmt.Sprintf("resume-%d", stopAt))
			var pointer string
			_, err := c.run(job, runOpts{onReport: func(rep *cohortv1.TaskReport, cancel func()) {
				if rep.GetCheckpoint() != "" {
					pointer = rep.GetCheckpoint() // what the coordinator records
					if checkpointStep(t, pointer) == stopAt {
						cancel()
					}
				}
			}})
			if !errors.Is(err, errStopped) {
				t.Fatalf("first run: %v, want it stopped", err)
			}
			if got := checkpointStep(t, pointer); got != stopAt {
				t.Fatalf("job record points at step %d, want %d", got, stopAt)
			}
			resumed := job
			resumed.Checkpoint, resumed.Generation = pointer, 2
			var firstProgress *cohortv1.JobProgress
			res, err := c.run(resumed, runOpts{onReport: func(rep *cohortv1.TaskReport, _ func()) {
				// Epoch reports: in-epoch and checkpoint reports carry progress too.
				if firstProgress == nil && rep.GetProgress() != nil && !rep.GetInterim() && rep.GetCheckpoint() == "" {
					firstProgress = rep.GetProgress()
				}
			}})
			if err != nil {
				t.Fatalf("resumed run: %v", err)
			}
			sameBits(t, "resumed vs uninterrupted", want, finalState(t, c.store, res.Checkpoint))
			// The first epoch end after the stop (an epoch evaluated before the stop is not
			// evaluated again).
			if wantStep := (stopAt/6 + 1) * 6; firstProgress.GetStep() != wantStep || firstProgress.GetTotalSteps() != resumeTotal {
				t.Errorf("first progress after resume %v: want step %d of %d", firstProgress, wantStep, resumeTotal)
			}
			cks, err := storage.ListCheckpoints(context.Background(), c.store, job.GetId())
			if err != nil {
				t.Fatal(err)
			}
			if len(cks) == 0 || len(cks) > 4 || cks[len(cks)-1].Step != resumeTotal {
				t.Errorf("committed checkpoints after resume: %+v, want at most keep (2), keepBest (1) and the resumed one, newest at %d", cks, resumeTotal)
			}
		})
	}
}

func mustLocal(t *testing.T) *storage.Local {
	t.Helper()
	l, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestCrashAtEachCheckpointPhase kills a job at each phase of the checkpoint of step 8
// (with a storage fault that also stops every task, as a dead process would): during
// the shard writes, before the manifest, and after the manifest but before the job
// record points at it. The job is then placed again from what the record points at
// (step 6, the scored checkpoint of the first epoch end): it must resume from that
// newest complete checkpoint, commit step 8 again, and end bit-identical to an
// uninterrupted run, with no uncommitted objects left.
func TestCrashAtEachCheckpointPhase(t *testing.T) {
	t.Run("local", func(t *testing.T) { testCrashAtEachCheckpointPhase(t, mustLocal(t)) })
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s3, err := storage.NewS3(ctx, srv.Config())
		if err != nil {
			t.Fatal(err)
		}
		testCrashAtEachCheckpointPhase(t, s3)
	})
}

func testCrashAtEachCheckpointPhase(t *testing.T, base storage.Blob) {
	fault := &storagetest.FaultBlob{Blob: base}
	c := newTestCluster(t, fault)
	want := uninterrupted(t, c)
	errCrash := errors.New("injected crash")
	for _, tc := range []struct {
		phase string
		op    string // the write that crashes (empty: none, the pointer is lost)
		file  string
	}{
		{"during_shard_writes", storagetest.OpPut, "shard-001.ckpt"},
		{"before_manifest", storagetest.OpPutIfAbsent, "manifest.json"},
		{"after_manifest_before_pointer", "", ""},
	} {
		t.Run(tc.phase, func(t *testing.T) {
			job := c.job("crash-" + strings.ReplaceAll(tc.phase, "_", "-"))
			step8 := storage.CheckpointPrefix(job.GetId(), 8) + "/"
			ctx, crash := context.WithCancelCause(context.Background())
			var once sync.Once
			fault.SetBeforeWrite(func(op, key string) error {
				if tc.op == op && key == step8+tc.file {
					once.Do(func() { crash(errCrash) })
					return errCrash
				}
				return nil
			})
			defer fault.SetBeforeWrite(nil)
			var pointer string
			_, err := c.run(job, runOpts{ctx: ctx, onReport: func(rep *cohortv1.TaskReport, _ func()) {
				if uri := rep.GetCheckpoint(); uri != "" {
					if checkpointStep(t, uri) == 8 { // the process dies before the record is updated
						crash(errCrash)
						return
					}
					pointer = uri
				}
			}})
			if err == nil {
				t.Fatal("crashed run succeeded")
			}
			fault.SetBeforeWrite(nil)
			if got := checkpointStep(t, pointer); got != 6 {
				t.Fatalf("job record points at step %d, want 6", got)
			}
			resumed := job
			resumed.Checkpoint, resumed.Generation = pointer, 2
			res, err := c.run(resumed, runOpts{})
			if err != nil {
				t.Fatalf("resume after a crash %s: %v", tc.phase, err)
			}
			sameBits(t, "resumed after crash vs uninterrupted", want, finalState(t, c.store, res.Checkpoint))
			objs, err := base.List(context.Background(), storage.CheckpointsRoot(job.GetId()))
			if err != nil {
				t.Fatal(err)
			}
			dirs := map[string]bool{}
			committed := map[string]bool{}
			for _, o := range objs {
				dir, file, _ := strings.Cut(strings.TrimPrefix(o.Key, storage.CheckpointsRoot(job.GetId())), "/")
				dirs[dir] = true
				if file == "manifest.json" {
					committed[dir] = true
				}
			}
			for d := range dirs {
				if !committed[d] {
					t.Errorf("checkpoint directory %s has objects but no manifest after the resumed run", d)
				}
			}
		})
	}
}

// TestResumeRefusesBadCheckpoint points a job at a checkpoint whose shard object is
// truncated, corrupt or missing: the shard fails with an error naming the object and
// the problem, and nothing in the store changes.
func TestResumeRefusesBadCheckpoint(t *testing.T) {
	local := mustLocal(t)
	c := newTestCluster(t, local)
	job := c.job("bad")
	var pointer string
	if _, err := c.run(job, runOpts{onReport: func(rep *cohortv1.TaskReport, cancel func()) {
		if rep.GetCheckpoint() != "" {
			pointer = rep.GetCheckpoint()
			cancel()
		}
	}}); !errors.Is(err, errStopped) {
		t.Fatalf("first run: %v", err)
	}
	obj := filepath.Join(local.Root(), filepath.FromSlash(storage.CheckpointPrefix(job.GetId(), 4)), "shard-001.ckpt")
	good, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		apply func() error
		want  string
	}{
		{"truncated", func() error { return os.WriteFile(obj, good[:len(good)-5], 0o644) }, "truncated"},
		{"corrupt", func() error {
			bad := append([]byte(nil), good...)
			bad[len(bad)-1] ^= 0x40
			return os.WriteFile(obj, bad, 0o644)
		}, "corrupt"},
		{"missing", func() error { return os.Remove(obj) }, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.apply(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := os.WriteFile(obj, good, 0o644); err != nil {
					t.Fatal(err)
				}
			}()
			before, err := local.List(context.Background(), "jobs/")
			if err != nil {
				t.Fatal(err)
			}
			resumed := job
			resumed.Checkpoint, resumed.Generation = pointer, 2
			_, err = c.run(resumed, runOpts{})
			if err == nil || !strings.Contains(err.Error(), "shard 1 failed") || !strings.Contains(err.Error(), "shard-001.ckpt") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("resume from a %s object: %v, want shard 1 to fail naming shard-001.ckpt and %q", tc.name, err, tc.want)
			}
			after, err := local.List(context.Background(), "jobs/")
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(keysOf(before)) != fmt.Sprint(keysOf(after)) {
				t.Errorf("store changed by a refused resume:\nbefore %v\nafter  %v", keysOf(before), keysOf(after))
			}
		})
	}
}

func keysOf(objs []storage.ObjectInfo) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.Key
	}
	return out
}

// TestTensorBoardEventsAndMetrics trains a job and reads its TensorBoard event file
// back from the store (framing and CRCs verified by tfevents.ReadEvents), and checks
// the worker's Prometheus metrics.
func TestTensorBoardEventsAndMetrics(t *testing.T) {
	local := mustLocal(t)
	c := newTestCluster(t, local)
	reg := prometheusRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var lossSeen []float64
	if _, err := c.run(c.job("tb"), runOpts{metrics: m, onReport: func(rep *cohortv1.TaskReport, _ func()) {
		if rep.GetProgress() == nil || rep.GetInterim() || rep.GetCheckpoint() != "" {
			return // not an epoch report
		}
		families, err := reg.Gather()
		if err != nil {
			t.Error(err)
			return
		}
		for _, f := range families {
			for _, mt := range f.GetMetric() {
				if f.GetName() == "cohort_job_loss" && len(mt.GetLabel()) == 1 && mt.GetLabel()[0].GetValue() == "tb" {
					lossSeen = append(lossSeen, mt.GetGauge().GetValue())
				}
			}
		}
	}}); err != nil {
		t.Fatal(err)
	}
	if len(lossSeen) != 3 || lossSeen[0] <= 0 {
		t.Errorf("cohort_job_loss{job=\"tb\"} at the 3 epoch reports: %v", lossSeen)
	}
	objs, err := local.List(context.Background(), TensorBoardPrefix("tb"))
	if err != nil {
		t.Fatal(err)
	}
	// The in-epoch points are in their own run (TensorBoardTrainRun), checked by
	// cmd/cohort's TestChiefReportsProgressWithinEpochs.
	objs = slices.DeleteFunc(objs, func(o storage.ObjectInfo) bool {
		return strings.HasPrefix(o.Key, TensorBoardPrefix("tb")+TensorBoardTrainRun)
	})
	if len(objs) != 1 || !strings.Contains(objs[0].Key, "/events.out.tfevents.") {
		t.Fatalf("tensorboard objects %v, want one events.out.tfevents.* file", keysOf(objs))
	}
	rc, err := local.Get(context.Background(), objs[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	events, err := tfevents.ReadEvents(rc)
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	if len(events) == 0 || events[0].FileVersion != tfevents.FileVersion {
		t.Fatalf("first event %+v, want the file version", events)
	}
	byTag := map[string][]int64{}
	for _, ev := range events[1:] {
		for tag, v := range ev.Scalars {
			if math.IsNaN(v) {
				t.Errorf("%s at step %d is NaN", tag, ev.Step)
			}
			byTag[tag] = append(byTag[tag], ev.Step)
		}
	}
	for _, tag := range []string{"loss", "val_loss", "val_auc", "val_accuracy", "learning_rate", "samples_per_second"} {
		if fmt.Sprint(byTag[tag]) != "[1 2 3]" {
			t.Errorf("tag %s at steps %v, want [1 2 3] (one per epoch)", tag, byTag[tag])
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			switch {
			case mt.GetHistogram() != nil:
				got[f.GetName()] = float64(mt.GetHistogram().GetSampleCount())
			case mt.GetCounter() != nil:
				got[f.GetName()] = mt.GetCounter().GetValue()
			}
		}
	}
	// Two workers, 18 steps each; every training row is seen once per epoch.
	if got["cohort_worker_step_seconds"] != 2*resumeTotal || got["cohort_worker_samples_total"] != 3*192 {
		t.Errorf("worker metrics %v, want %d steps and %d samples", got, 2*resumeTotal, 3*192)
	}
}

func prometheusRegistry() *prometheus.Registry { return prometheus.NewPedanticRegistry() }

// TestResumeWithFewerWorkers stops a 2-worker job inside epoch 1 (step 8: 64 of 192
// rows done) and resumes it with one worker: it continues at the same row of the same
// epoch with the new global batch (8 more steps of 16 rows for epoch 1, 12 for epoch
// 2), so it ends at step 28, having trained every row of every epoch exactly once.
func TestResumeWithFewerWorkers(t *testing.T) {
	c := newTestCluster(t, mustLocal(t))
	job := c.job("shrink")
	var pointer string
	_, err := c.run(job, runOpts{onReport: func(rep *cohortv1.TaskReport, cancel func()) {
		if rep.GetCheckpoint() != "" {
			pointer = rep.GetCheckpoint()
			if checkpointStep(t, pointer) == 8 {
				cancel()
			}
		}
	}})
	if !errors.Is(err, errStopped) {
		t.Fatalf("first run: %v", err)
	}
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	resumed := job
	resumed.Checkpoint, resumed.Generation, resumed.WorkerCount = pointer, 2, 1
	res, err := c.run(resumed, runOpts{metrics: m})
	if err != nil {
		t.Fatalf("resumed with one worker: %v", err)
	}
	if res.Progress.GetStep() != 28 || res.Progress.GetTotalSteps() != 28 || res.Progress.GetEpoch() != 3 {
		t.Fatalf("final progress %v, want step 28 of 28 after epoch 3", res.Progress)
	}
	if ck := finalState(t, c.store, res.Checkpoint); ck.Step != 28 {
		t.Fatalf("final checkpoint at step %d, want 28", ck.Step)
	}
	samples := 0.0
	ch := make(chan prometheus.Metric, 1)
	m.samples.Collect(ch)
	var pb dto.Metric
	if err := (<-ch).Write(&pb); err != nil {
		t.Fatal(err)
	}
	samples = pb.GetCounter().GetValue()
	if samples != 128+192 {
		t.Errorf("resumed run trained %v rows, want the 128 left of epoch 1 and the 192 of epoch 2", samples)
	}
}

// TestResumeAsync stops an async job after its checkpoint of step 8 and resumes it:
// each shard's object holds the version it had reached (every worker's pushes count),
// the manifest records the chief's step and data position, and the resumed job
// finishes its 18 steps.
func TestResumeAsync(t *testing.T) {
	c := newTestCluster(t, mustLocal(t))
	job := c.job("async")
	job.SpecYaml = bytes.Replace(job.SpecYaml, []byte("mode: sync"), []byte("mode: async"), 1)
	var pointer string
	_, err := c.run(job, runOpts{onReport: func(rep *cohortv1.TaskReport, cancel func()) {
		if rep.GetCheckpoint() != "" {
			pointer = rep.GetCheckpoint()
			if checkpointStep(t, pointer) == 8 {
				cancel()
			}
		}
	}})
	if !errors.Is(err, errStopped) {
		t.Fatalf("first run: %v", err)
	}
	man, err := storage.OpenCheckpoint(context.Background(), c.store, pointer)
	if err != nil {
		t.Fatal(err)
	}
	if man.Consistency != "async" || man.Step != 8 || man.DataPosition != 64 {
		t.Fatalf("async manifest: consistency %q step %d row %d", man.Consistency, man.Step, man.DataPosition)
	}
	ck, err := paramserver.LoadShardRange(context.Background(), c.store, man, 0, paramserver.Range{Length: man.TotalParams})
	if err != nil || ck.Step < 8 {
		t.Fatalf("async checkpoint state: step %v, %v", ck, err)
	}
	resumed := job
	resumed.Checkpoint, resumed.Generation = pointer, 2
	res, err := c.run(resumed, runOpts{})
	if err != nil {
		t.Fatalf("resumed async job: %v", err)
	}
	if res.Progress.GetStep() != resumeTotal || res.Metrics["val_auc"] <= 0.5 {
		t.Fatalf("resumed async job ended at %v with %v", res.Progress, res.Metrics)
	}
}
