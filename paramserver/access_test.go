package paramserver

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// testCallerKey stands in, in this unit test, for the node name a TLS server reads
// from the caller's certificate (node.tlsCaller, tested over real TLS in package node).
const testCallerKey = "x-test-caller"

func metadataCaller(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(testCallerKey); len(v) == 1 {
		return v[0], nil
	}
	return "", errors.New("the call carries no verified identity")
}

func as(ctx context.Context, name string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, testCallerKey, name)
}

// TestShardServesOnlyItsJobsWorkers: with a caller check on, job A's worker cannot
// init, pull, push to or checkpoint job B's shard (PermissionDenied naming it); a
// caller without identity is refused; a caller at a generation the shard has not heard
// of yet is told to retry (NotFound); the job's own worker is served; a removed shard
// forgets its list.
func TestShardServesOnlyItsJobsWorkers(t *testing.T) {
	ctx := testCtx(t)
	srv, addr := startServer(t, 0)
	srv.SetCaller(metadataCaller)
	for _, job := range []string{"a", "b"} {
		if err := srv.AddShard(ShardConfig{JobID: job, Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.1}}); err != nil {
			t.Fatal(err)
		}
	}
	srv.SetAllowedWorkers("a", 0, 1, []string{"node-a"})
	srv.SetAllowedWorkers("b", 0, 1, []string{"node-b"})
	srv.SetAllowedWorkers("b", 0, 0, []string{"node-a"}) // older: ignored
	stub := rawStub(t, addr)
	refA := &cohortv1.ShardRef{JobId: "a", Generation: 1}
	refB := &cohortv1.ShardRef{JobId: "b", Generation: 1}

	if _, err := initRaw(as(ctx, "node-b"), stub, refB, Range{0, 2}, 2, "L", []float32{1, 2}); err != nil {
		t.Fatalf("job b's worker: init: %v", err)
	}
	if _, err := initRaw(as(ctx, "node-a"), stub, refA, Range{0, 2}, 2, "L", []float32{3, 4}); err != nil {
		t.Fatalf("job a's worker: init: %v", err)
	}
	intruder := as(ctx, "node-a")
	_, err := initRaw(intruder, stub, refB, Range{0, 2}, 2, "L", []float32{9, 9})
	wantCode(t, err, codes.PermissionDenied, "node-a is not among the workers of job \"b\"")
	_, _, err = pullRaw(intruder, stub, refB, 0)
	wantCode(t, err, codes.PermissionDenied, "not among the workers")
	_, err = pushRaw(intruder, stub, refB, 0, 0, 1, []float32{0, 0})
	wantCode(t, err, codes.PermissionDenied, "not among the workers")
	_, err = stub.Checkpoint(intruder, &cohortv1.CheckpointRequest{Ref: refB, Step: 0, KeyPrefix: "b/checkpoints/x"})
	wantCode(t, err, codes.PermissionDenied, "not among the workers")
	_, _, err = pullRaw(ctx, stub, refB, 0)
	wantCode(t, err, codes.PermissionDenied, "no verified identity")
	_, _, err = pullRaw(as(ctx, "node-c"), stub, &cohortv1.ShardRef{JobId: "b", Generation: 2}, 0)
	wantCode(t, err, codes.NotFound, "not known here yet")

	vals, _, err := pullRaw(as(ctx, "node-b"), stub, refB, 0)
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, vals, []float32{1, 2}, 0)

	srv.RemoveShard("b", 0)
	if err := srv.AddShard(ShardConfig{JobID: "b", Generation: 1, Workers: 1, Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 0.1}}); err != nil {
		t.Fatal(err)
	}
	_, _, err = pullRaw(as(ctx, "node-b"), stub, refB, 0)
	wantCode(t, err, codes.NotFound, "not known here yet")
}
