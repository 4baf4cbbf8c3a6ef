package psagent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/internal/psagent"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

const spec = `apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: ps}
spec:
  task: binary_classification
  model:
    mlp: {hidden: [4]}
  data:
    train: file:///nonexistent.csv
    label: y
  training:
    epochs: 1
    batchSize: 4
    optimizer: {name: momentum, learningRate: 0.5}
  resources:
    workers: {count: 1}
    parameterServers: {shards: %d}
`

// serve starts a parameter server on loopback and returns it with its address.
func serve(t *testing.T) (*paramserver.Server, string) {
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
	return srv, lis.Addr().String()
}

func assignment(job *cohortv1.Job, shard int) *cohortv1.Assignment {
	return &cohortv1.Assignment{Job: job, Allocation: &cohortv1.Allocation{
		Id: fmt.Sprintf("%s-ps%d-g%d", job.GetId(), shard, job.GetGeneration()), JobId: job.GetId(),
		Kind: cohortv1.TaskKind_TASK_KIND_PS_SHARD, Index: int32(shard), Generation: job.GetGeneration()}}
}

// startShards starts every shard of job through a Runner and waits for their reports.
func startShards(t *testing.T, r *psagent.Runner, job *cohortv1.Job) []*cohortv1.TaskReport {
	t.Helper()
	reports := make(chan *cohortv1.TaskReport, job.GetShardCount())
	for i := range int(job.GetShardCount()) {
		r.Start(context.Background(), assignment(job, i), func(rep *cohortv1.TaskReport) { reports <- rep })
	}
	var out []*cohortv1.TaskReport
	timeout := time.After(time.Minute)
	for range job.GetShardCount() {
		select {
		case rep := <-reports:
			out = append(out, rep)
		case <-timeout:
			t.Fatal("shards did not report")
		}
	}
	return out
}

// TestRestoreFromCheckpointOtherShardCount trains one momentum step on 2 shards,
// checkpoints it, and places the job again with 3 shards on a fresh server from the
// checkpoint: every shard comes back at the checkpoint's step with the values and the
// momentum, so the next step gives the same values as on the original shards.
func TestRestoreFromCheckpointOtherShardCount(t *testing.T) {
	ctx := context.Background()
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const total = 11
	srv1, addr1 := serve(t)
	r1, err := psagent.New(psagent.Config{Server: srv1, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	job := &cohortv1.Job{Id: "j", SpecYaml: fmt.Appendf(nil, spec, 2), WorkerCount: 1, ShardCount: 2, Generation: 1}
	for _, rep := range startShards(t, r1, job) {
		if rep.GetState() != cohortv1.TaskState_TASK_STATE_RUNNING {
			t.Fatalf("shard report %v", rep)
		}
	}
	client := func(addr string, shards int, gen uint64) *paramserver.Client {
		addrs := make([]string, shards)
		for i := range addrs {
			addrs[i] = addr
		}
		c, err := paramserver.NewClient(paramserver.ClientConfig{Addresses: addrs, JobID: "j", Generation: gen, TotalParams: total, LayoutHash: "L"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	init := make([]float32, total)
	grad := make([]float32, total)
	for i := range init {
		init[i], grad[i] = float32(i), float32(i%3)-1
	}
	c1 := client(addr1, 2, 1)
	if err := c1.Init(ctx, init); err != nil {
		t.Fatal(err)
	}
	if err := c1.Push(ctx, 0, grad, 4); err != nil {
		t.Fatal(err)
	}
	objs, err := c1.Checkpoint(ctx, 1, storage.CheckpointPrefix("j", 1))
	if err != nil {
		t.Fatal(err)
	}
	man := &storage.Manifest{JobID: "j", Step: 1, Generation: 1, LayoutHash: "L", TotalParams: total}
	for _, o := range objs {
		man.Objects = append(man.Objects, storage.ManifestObject{Shard: o.Shard, Key: o.Key, Size: o.Size, SHA256: o.SHA256, Offset: o.Offset, Length: o.Length})
	}
	key, err := storage.WriteManifest(ctx, store, man)
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.Push(ctx, 1, grad, 4); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, total)
	if _, err := c1.Pull(ctx, 2, want); err != nil {
		t.Fatal(err)
	}

	srv2, addr2 := serve(t)
	r2, err := psagent.New(psagent.Config{Server: srv2, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	again := &cohortv1.Job{Id: "j", SpecYaml: fmt.Appendf(nil, spec, 3), WorkerCount: 1, ShardCount: 3, Generation: 2, Checkpoint: store.URI(key)}
	for _, rep := range startShards(t, r2, again) {
		if rep.GetState() != cohortv1.TaskState_TASK_STATE_RUNNING {
			t.Fatalf("restored shard report %v", rep)
		}
	}
	c2 := client(addr2, 3, 2)
	if err := c2.Init(ctx, make([]float32, total)); err != nil { // ignored: restored
		t.Fatal(err)
	}
	got := make([]float32, total)
	v, err := c2.Pull(ctx, 0, got)
	if err != nil || v != 1 {
		t.Fatalf("restored shards at version %d (%v), want 1", v, err)
	}
	if err := c2.Push(ctx, 1, grad, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Pull(ctx, 2, got); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("value %d after the restored step: %v, want %v (momentum lost?)", i, got[i], want[i])
		}
	}

	// A record pointing at another job's or a missing checkpoint fails the shard.
	for _, uri := range []string{store.URI("jobs/j/checkpoints/000000000009/manifest.json"), "s3://b/jobs/j/checkpoints/000000000001/manifest.json"} {
		bad := &cohortv1.Job{Id: "j", SpecYaml: fmt.Appendf(nil, spec, 1), WorkerCount: 1, ShardCount: 1, Generation: 3, Checkpoint: uri}
		rep := startShards(t, r2, bad)[0]
		if rep.GetState() != cohortv1.TaskState_TASK_STATE_FAILED || !strings.Contains(rep.GetMessage(), "restore job j shard 0") {
			t.Errorf("shard from checkpoint %s: %v, want failed", uri, rep)
		}
	}
}

// TestStopOldGenerationKeepsReusedShard: a job placed again (generation 2) on the same
// node reuses the (job, shard) the generation-1 allocation created; stopping the
// generation-1 allocation afterwards must leave the shard generation 2 trains on (it
// used to delete it, and the job stayed RUNNING without progress).
func TestStopOldGenerationKeepsReusedShard(t *testing.T) {
	// A removed shard makes the client retry; the deadline turns that into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, addr := serve(t)
	r, err := psagent.New(psagent.Config{Server: srv, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	gen1 := &cohortv1.Job{Id: "j", SpecYaml: fmt.Appendf(nil, spec, 1), WorkerCount: 1, ShardCount: 1, Generation: 1}
	gen2 := &cohortv1.Job{Id: "j", SpecYaml: fmt.Appendf(nil, spec, 1), WorkerCount: 1, ShardCount: 1, Generation: 2}
	for _, job := range []*cohortv1.Job{gen1, gen2} {
		if rep := startShards(t, r, job)[0]; rep.GetState() != cohortv1.TaskState_TASK_STATE_RUNNING {
			t.Fatalf("generation %d shard report %v", job.GetGeneration(), rep)
		}
	}
	r.Stop(assignment(gen1, 0).GetAllocation().GetId())

	c, err := paramserver.NewClient(paramserver.ClientConfig{Addresses: []string{addr}, JobID: "j", Generation: 2, TotalParams: 3, LayoutHash: "L"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Init(ctx, []float32{1, 2, 3}); err != nil {
		t.Fatalf("generation 2 after the generation-1 stop: %v", err)
	}
	if err := c.Push(ctx, 0, []float32{1, 1, 1}, 4); err != nil {
		t.Fatalf("generation 2 push after the generation-1 stop: %v", err)
	}

	// The owner's stop removes it.
	r.Stop(assignment(gen2, 0).GetAllocation().GetId())
	if err := srv.SetGeneration("j", 0, 3, 1); !errors.Is(err, paramserver.ErrUnknownShard) {
		t.Fatalf("after the generation-2 stop: %v, want the shard gone", err)
	}
}

// TestRestoreOfAMissingCheckpointSaysItIsGone: a job record pointing at a manifest that
// no longer exists fails the restore with an error that wraps storage.ErrNotFound and
// says the recorded checkpoint is gone; nothing is installed.
func TestRestoreOfAMissingCheckpointSaysItIsGone(t *testing.T) {
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := paramserver.NewServer(paramserver.DefaultServerConfig())
	uri := store.URI(storage.ManifestKey("j", 8))
	err = psagent.RestoreShard(context.Background(), srv, paramserver.ShardConfig{JobID: "j", Shard: 0}, store, uri, 2)
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "the checkpoint the job record points at is gone") {
		t.Fatalf("restore from a missing manifest: %v; want ErrNotFound saying the recorded checkpoint is gone", err)
	}
}
