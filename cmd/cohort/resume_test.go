package main

import (
	"context"
	"encoding/json"
	"math"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/internal/psagent"
	"github.com/cohort-dev/cohort/node/nodetest"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker"
)

// resumeTestSpec is the example job, shortened: 4 epochs of 38 steps with 2 workers,
// a checkpoint every 20 steps.
func resumeTestSpec(t *testing.T) []byte {
	return exampleSpec(t, "epochs: 30", "epochs: 4", "everySteps: 200, keep: 3", "everySteps: 20, keep: 2")
}

// fullState reads all parameters and optimizer state of a committed checkpoint.
func fullState(t *testing.T, store storage.Blob, uri string) *paramserver.ShardCheckpoint {
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

// TestDevJobResumesExactly trains the example job to the end in a dev cluster, then
// trains it again and cancels it once a checkpoint is committed. `cohort checkpoint
// list` shows the cancelled job's committed checkpoints with the one its record points
// at marked. The cancelled job's tasks are then started again, on a fresh parameter
// server, from its record as the coordinator holds it (checkpoint pointer set): the
// shards restore parameters and Adam state, the workers continue at the saved data
// position, and the final parameters and optimizer state are bit-identical to the
// uninterrupted run's.
func TestDevJobResumesExactly(t *testing.T) {
	c, client, ctx := startCluster(t, 2, 2)
	spec := resumeTestSpec(t)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatal(err)
	}
	straight, err := watchUntilDone(ctx, client, resp.GetJob().GetId(), nil)
	if err != nil || straight.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("uninterrupted job: %v %s %s", err, stateName(straight.GetState()), straight.GetStatusMessage())
	}

	resp, err = client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJob().GetId()
	cancelled := cancelAfterFirstCheckpoint(ctx, t, client, id)
	pointer := cancelled.GetCheckpoint()
	pointerKey := keyOf(t, c, pointer)
	man, err := storage.ReadManifest(ctx, c.Store, pointerKey)
	if err != nil {
		t.Fatal(err)
	}
	if man.Step <= 0 || man.Step >= 4*38 {
		t.Fatalf("cancelled at checkpoint step %d, want one inside the job", man.Step)
	}

	t.Logf("cancelled at the checkpoint of step %d (epoch %d, row %d)", man.Step, man.Epoch, man.DataPosition)

	// cohort checkpoint list, as a user runs it.
	out, err := execCLI(ctx, "checkpoint", "list", id, "--address", c.GRPCAddr, "-o", "json")
	if err != nil {
		t.Fatalf("checkpoint list: %v", err)
	}
	var rows []checkpointRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("checkpoint list -o json: %v\n%s", err, out)
	}
	latest := 0
	for _, r := range rows {
		if r.Latest {
			latest++
			if r.Step != man.Step || r.URI != pointer || r.SizeBytes <= 0 || r.Epoch != man.Epoch {
				t.Errorf("latest row %+v, want step %d epoch %d at %s", r, man.Step, man.Epoch, pointer)
			}
		}
	}
	if latest != 1 || len(rows) == 0 {
		t.Fatalf("checkpoint list: %+v, want one row marked latest", rows)
	}

	// Start the job's tasks again from its record, as the coordinator places a
	// stopped job again.
	srv := paramserver.NewServer(paramserver.DefaultServerConfig())
	g := grpc.NewServer(paramserver.ServerOptions()...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	ps, err := psagent.New(psagent.Config{Server: srv, Store: c.Store, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	wr, err := worker.NewRunner(worker.RunnerConfig{Store: c.Store, Logger: testLogger(t), DataRoots: nodetest.TestDataRoots()})
	if err != nil {
		t.Fatal(err)
	}
	job := proto.Clone(cancelled).(*cohortv1.Job)
	job.State, job.Generation = cohortv1.JobState_JOB_STATE_RUNNING, cancelled.GetGeneration()+1
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan *cohortv1.TaskReport, 16)
	report := func(rep *cohortv1.TaskReport) {
		if rep.GetState() == cohortv1.TaskState_TASK_STATE_FAILED ||
			(rep.GetState() == cohortv1.TaskState_TASK_STATE_SUCCEEDED && strings.HasSuffix(rep.GetAllocationId(), "w0")) {
			done <- rep
		}
	}
	for i := range int(job.GetShardCount()) {
		ps.Start(runCtx, &cohortv1.Assignment{Job: job, Allocation: &cohortv1.Allocation{
			Id: id + "-resume-ps" + string(rune('0'+i)), JobId: id, Kind: cohortv1.TaskKind_TASK_KIND_PS_SHARD,
			Index: int32(i), Generation: job.GetGeneration()}}, report)
	}
	addrs := make([]string, job.GetShardCount())
	for i := range addrs {
		addrs[i] = lis.Addr().String()
	}
	for r := range int(job.GetWorkerCount()) {
		wr.Start(runCtx, &cohortv1.Assignment{Job: job, ShardAddresses: addrs, Allocation: &cohortv1.Allocation{
			Id: id + "-resume-w" + string(rune('0'+r)), JobId: id, Kind: cohortv1.TaskKind_TASK_KIND_WORKER,
			Index: int32(r), Generation: job.GetGeneration()}}, report)
	}
	var final *cohortv1.TaskReport
	select {
	case final = <-done:
	case <-ctx.Done():
		t.Fatal("resumed job did not finish")
	}
	if final.GetState() != cohortv1.TaskState_TASK_STATE_SUCCEEDED {
		t.Fatalf("resumed job: %s %s", taskStateName(final.GetState()), final.GetMessage())
	}
	want, got := fullState(t, c.Store, straight.GetCheckpoint()), fullState(t, c.Store, final.GetCheckpoint())
	if got.Step != want.Step || got.OptimizerStep != want.OptimizerStep {
		t.Fatalf("resumed run ends at step %d (optimizer %d), uninterrupted at %d (%d)", got.Step, got.OptimizerStep, want.Step, want.OptimizerStep)
	}
	vecs := [][2][]float32{{want.Params, got.Params}, {want.State[0], got.State[0]}, {want.State[1], got.State[1]}}
	for v, p := range vecs {
		for i := range p[0] {
			if math.Float32bits(p[0][i]) != math.Float32bits(p[1][i]) {
				t.Fatalf("vector %d (0 parameters, 1-2 Adam moments) differs at %d: uninterrupted %v, resumed %v", v, i, p[0][i], p[1][i])
			}
		}
	}
	if final.GetMetrics()["val_auc"] != straight.GetMetrics()["val_auc"] {
		t.Errorf("val_auc %v after resume, %v uninterrupted", final.GetMetrics()["val_auc"], straight.GetMetrics()["val_auc"])
	}
	stop()
	for r := range int(job.GetWorkerCount()) {
		wr.Stop(id + "-resume-w" + string(rune('0'+r)))
	}
}

// cancelAfterFirstCheckpoint waits until job id has a committed checkpoint, cancels it,
// and returns the job once it is cancelled.
func cancelAfterFirstCheckpoint(ctx context.Context, t *testing.T, client cohortv1.JobServiceClient, id string) *cohortv1.Job {
	t.Helper()
	stream, err := client.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if msg.GetJob().GetCheckpoint() != "" {
			break
		}
	}
	if _, err := client.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: id, Reason: "resume test"}); err != nil {
		t.Fatal(err)
	}
	cancelled, err := watchUntilDone(ctx, client, id, nil)
	if err != nil || cancelled.GetState() != cohortv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("cancelled job: %v %s", err, stateName(cancelled.GetState()))
	}
	return cancelled
}
