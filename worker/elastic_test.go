package worker

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestElasticShrinkAndGrowKeepsTrajectory runs the resume job (2 workers, 2 shards, 18
// steps of 32 rows) while its membership changes twice without a restart: at the
// chief's checkpoint of step 4 worker 1 dies and the job goes on with the chief alone
// (generation 2), and at the checkpoint of step 8 a new worker joins (generation 3).
// The global batch is the same rows whatever the membership and the step in progress
// at each change is trained again by the new membership, so the chief's trainer runs
// to the end and the final parameters and Adam state are bit-identical to an
// uninterrupted run's (here even the rounding agrees: the lone chief averages its two
// 16-row pieces with weights 1/2, as the shards do the two workers' gradients).
func TestElasticShrinkAndGrowKeepsTrajectory(t *testing.T) {
	c := newTestCluster(t, mustLocal(t))
	want := uninterrupted(t, c)
	res := runElastic(t, c, c.job("elastic"))
	sameBits(t, "elastic vs uninterrupted", want, finalState(t, c.store, res.Checkpoint))
}

// TestElasticRelaxedModes runs the same membership changes in the async and bounded
// modes: the survivor goes on without a restart, the newcomer joins, and the job ends.
func TestElasticRelaxedModes(t *testing.T) {
	for _, mode := range []string{"async", "bounded, staleness: 2"} {
		t.Run(mode, func(t *testing.T) {
			c := newTestCluster(t, mustLocal(t))
			job := c.job("elastic-relaxed")
			job.SpecYaml = bytes.Replace(job.SpecYaml, []byte("mode: sync"), []byte("mode: "+mode), 1)
			res := runElastic(t, c, job)
			if ck := finalState(t, c.store, res.Checkpoint); ck.Step == 0 {
				t.Fatalf("final checkpoint at step %d", ck.Step)
			}
		})
	}
}

// runElastic runs job's shards and workers with two membership changes (see
// TestElasticShrinkAndGrowKeepsTrajectory) and returns the chief's result.
func runElastic(t *testing.T, c *testCluster, job *cohortv1.Job) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addrs := []string{c.addr, c.addr}
	shard := func(i int, gen uint64, workers int32) *cohortv1.Assignment {
		j := proto.Clone(job).(*cohortv1.Job)
		j.ActiveWorkers = workers
		return &cohortv1.Assignment{Job: j, Allocation: &cohortv1.Allocation{
			Id: fmt.Sprintf("%s-ps%d", job.GetId(), i), JobId: job.GetId(), Kind: cohortv1.TaskKind_TASK_KIND_PS_SHARD, Index: int32(i), Generation: gen}}
	}
	for i := range resumeShards {
		c.ps.Start(ctx, shard(i, 1, 0), func(rep *cohortv1.TaskReport) {
			if rep.GetState() == cohortv1.TaskState_TASK_STATE_FAILED {
				t.Errorf("shard %d failed: %s", i, rep.GetMessage())
			}
		})
		defer c.ps.Stop(fmt.Sprintf("%s-ps%d", job.GetId(), i))
	}
	setShards := func(gen uint64, workers int32) {
		for i := range resumeShards {
			c.ps.Update(shard(i, gen, workers))
		}
	}

	type task struct {
		cancel context.CancelFunc
		done   chan struct{}
		res    *Result
		err    error
		watch  *MembershipWatch
	}
	var wg sync.WaitGroup
	// start runs a trainer into tk (filled in before its goroutine starts).
	start := func(tk *task, rank int, gen uint64, world int32, report func(*cohortv1.TaskReport)) {
		j := proto.Clone(job).(*cohortv1.Job)
		j.ActiveWorkers = world
		a := &cohortv1.Assignment{Job: j, ShardAddresses: addrs, Allocation: &cohortv1.Allocation{
			Id: fmt.Sprintf("%s-w%d-g%d", job.GetId(), rank, gen), JobId: job.GetId(), Kind: cohortv1.TaskKind_TASK_KIND_WORKER,
			Index: int32(rank), Generation: gen}}
		tk.done, tk.watch = make(chan struct{}), NewMembershipWatch(MembershipOf(a))
		tr, err := NewTrainer(TrainerConfig{Assignment: a, Store: c.store, CheckpointGrace: time.Nanosecond, DataRoots: testDataRoots(),
			Report: report, Membership: tk.watch})
		if err != nil {
			t.Fatal(err)
		}
		tctx, tcancel := context.WithCancel(ctx)
		tk.cancel = tcancel
		wg.Go(func() {
			defer close(tk.done)
			tk.res, tk.err = tr.Run(tctx)
		})
	}

	chief, w1, joiner := &task{}, &task{}, &task{}
	changes := 0
	start(w1, 1, 1, 2, func(*cohortv1.TaskReport) {})
	start(chief, 0, 1, 2, func(rep *cohortv1.TaskReport) {
		if rep.GetCheckpoint() == "" {
			return
		}
		switch checkpointStep(t, rep.GetCheckpoint()) {
		case 4: // worker 1 dies; the chief goes on alone
			w1.cancel()
			<-w1.done
			setShards(2, 1)
			chief.watch.Set(Membership{Generation: 2, Rank: 0, World: 1})
			changes++
		case 8: // a new worker joins
			setShards(3, 2)
			chief.watch.Set(Membership{Generation: 3, Rank: 0, World: 2})
			start(joiner, 1, 3, 2, func(*cohortv1.TaskReport) {})
			changes++
		}
		if rep.GetGeneration() == 0 {
			t.Errorf("checkpoint report without a generation")
		}
	})
	wg.Wait()
	if chief.err != nil {
		t.Fatalf("chief: %v", chief.err)
	}
	if changes != 2 || joiner.done == nil {
		t.Fatalf("%d membership changes happened, want 2", changes)
	}
	if joiner.err != nil {
		t.Fatalf("joiner: %v", joiner.err)
	}
	if chief.res.Progress.GetStep() != resumeTotal {
		t.Fatalf("chief ended at %v", chief.res.Progress)
	}
	return chief.res
}

// rawPush pushes grad to one shard only (the client always pushes to all).
func rawPush(ctx context.Context, stub cohortv1.ParameterServiceClient, shard int, gen uint64, rank int, step int64, grad []float32, samples int64) error {
	stream, err := stub.Push(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Header{Header: &cohortv1.PushHeader{
		Ref: &cohortv1.ShardRef{JobId: "m", Shard: int32(shard), Generation: gen}, Step: step, WorkerRank: int32(rank), NumSamples: samples}}}); err != nil {
		return err
	}
	data := make([]byte, 4*len(grad))
	for i, g := range grad {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(g))
	}
	if err := stream.Send(&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Chunk{Chunk: &cohortv1.Chunk{Data: data}}}); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// TestSettleAfterMembershipChange: a membership change (rank 1 of 2 lost) finds shard
// 0 past step 0 (every rank had pushed to it) and shard 1 still at step 0 (only rank
// 0 had). Settling, the survivor finishes step 0 with the gradient it computed (shard
// 0 answers that it has the step, shard 1 takes it as the whole new membership's) and
// goes on at step 1; a newcomer (no gradient) fills its place with an empty one. When
// every shard is at one step, that step is the one to train again.
func TestSettleAfterMembershipChange(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mixed     bool
		newcomer  bool
		wantStep  int64
		wantShard [2][]float32 // parameters after settling (sgd, learning rate 1, from 0)
	}{
		{name: "mixed: survivor finishes the step", mixed: true, wantStep: 1,
			wantShard: [2][]float32{{-2, -2}, {-1, -1}}}, // shard 0: mean of 1 and 3; shard 1: the survivor's 1
		{name: "mixed: newcomer pushes an empty gradient", mixed: true, newcomer: true, wantStep: 1,
			wantShard: [2][]float32{{-2, -2}, {0, 0}}},
		{name: "same step everywhere: trained again", wantStep: 0,
			wantShard: [2][]float32{{0, 0}, {0, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv := paramserver.NewServer(paramserver.DefaultServerConfig())
			g := grpc.NewServer(paramserver.ServerOptions()...)
			srv.Register(g)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = g.Serve(lis) }()
			defer g.Stop()
			for i := range 2 {
				if err := srv.AddShard(paramserver.ShardConfig{JobID: "m", Shard: i, Generation: 1, Workers: 2,
					Optimizer: paramserver.OptimizerConfig{Name: "sgd", LearningRate: 1}}); err != nil {
					t.Fatal(err)
				}
			}
			addrs := []string{lis.Addr().String(), lis.Addr().String()}
			client, err := paramserver.NewClient(paramserver.ClientConfig{Addresses: addrs, JobID: "m", Generation: 1, Rank: 0, TotalParams: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if err := client.Init(ctx, make([]float32, 4)); err != nil {
				t.Fatal(err)
			}
			cc, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			stub := cohortv1.NewParameterServiceClient(cc)
			// Rank 0 (gradient 1 over 1 row) reached both shards, rank 1 (3 over 1 row)
			// only shard 0 (or, not mixed, neither).
			mustPush := func(shard, rank int, v float32) {
				if err := rawPush(ctx, stub, shard, 1, rank, 0, []float32{v, v}, 1); err != nil {
					t.Fatal(err)
				}
			}
			mustPush(0, 0, 1)
			mustPush(1, 0, 1)
			if tc.mixed {
				mustPush(0, 1, 3)
			}
			for i := range 2 {
				if err := srv.SetGeneration("m", i, 2, 1); err != nil {
					t.Fatal(err)
				}
			}
			probe, err := newVersionProbe("m", addrs, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer probe.close()
			watch := NewMembershipWatch(Membership{Generation: 1, Rank: 0, World: 2})
			tr := &Trainer{cfg: TrainerConfig{Membership: watch}, log: slog.New(slog.DiscardHandler), base: 2, gen: 1, world: 2}
			l := &loopState{t: tr, client: client, probe: probe, grad: gradientState{values: []float32{1, 1, 1, 1}, step: 0, samples: 1}}
			if tc.newcomer {
				l.grad.step = -1
			}
			go watch.Set(Membership{Generation: 2, Rank: 0, World: 1})
			step, err := l.settle(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if step != tc.wantStep || tr.gen != 2 || tr.world != 1 || !tr.chief {
				t.Fatalf("settled at step %d (generation %d, world %d, chief %v), want step %d of generation 2 alone",
					step, tr.gen, tr.world, tr.chief, tc.wantStep)
			}
			got := make([]float32, 4)
			v, err := client.Pull(ctx, tc.wantStep, got)
			if err != nil || v != tc.wantStep {
				t.Fatalf("pull after settling: version %d, %v", v, err)
			}
			for i := range 2 {
				for j, w := range tc.wantShard[i] {
					if got[2*i+j] != w {
						t.Fatalf("parameters %v, want shard values %v", got, tc.wantShard)
					}
				}
			}
		})
	}
}
