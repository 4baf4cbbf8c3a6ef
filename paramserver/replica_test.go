package paramserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// node is one parameter-server "node" of a replication test: a Server on a real
// loopback gRPC listener that the test can kill (its listener and connections close at
// once, as when the process dies).
type node struct {
	srv  *Server
	addr string
	kill func()
}

func startNode(t testing.TB, cfg ServerConfig) *node {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.ReplicaTimeout == 0 {
		cfg.ReplicaTimeout = 2 * time.Second
	}
	srv := NewServer(cfg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(ServerOptions()...)
	srv.Register(g)
	go func() { _ = g.Serve(lis) }()
	var once sync.Once
	kill := func() { once.Do(g.Stop) }
	t.Cleanup(kill)
	return &node{srv: srv, addr: lis.Addr().String(), kill: kill}
}

// replicaCfg is the one-shard job of the replication tests.
func replicaCfg(mode string, workers int) ShardConfig {
	return ShardConfig{JobID: "job-r", Shard: 0, Generation: 1, Workers: workers, Mode: mode, Staleness: 1,
		Optimizer: OptimizerConfig{Name: OptimizerAdam, LearningRate: 0.01, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8}}
}

// worker drives one worker of the replication tests: sync mode trains steps 0..steps-1
// (pull at the step, push the step); async and bounded push steps pushes, each
// computed against the version it pulled. A shard refusing its generation (the backup
// was promoted under a newer one) makes it adopt the current membership and read the
// shard's version, as package worker's settle does: in sync mode it goes on at that
// step (retraining it when the step in progress was lost with the primary), in the
// other modes it retries the same push, which the promoted backup answers
// AlreadyExists when it already has it.
type testWorker struct {
	rank    int
	samples int64
	client  *Client
	gen     *atomic.Uint64 // the job's current generation
	where   func() *Server // the server hosting the primary now
	// onStep, when set, is called before each step (sync) or push (other modes).
	onStep func(rank int, step int64)
	// versions seen by this worker's pulls, in order.
	versions []int64
}

func (w *testWorker) adopt(t *testing.T) {
	g := w.gen.Load()
	w.client.SetMembership(g, w.rank)
}

func (w *testWorker) run(ctx context.Context, t *testing.T, mode string, steps int64, total int) error {
	params := make([]float32, total)
	grad := make([]float32, total)
	if mode == ModeSync {
		for k := int64(0); k < steps; {
			if w.onStep != nil {
				w.onStep(w.rank, k)
			}
			v, err := w.client.Pull(ctx, k, params)
			if err == nil {
				w.versions = append(w.versions, v)
				workerGrad(w.rank, params, grad)
				err = w.client.Push(ctx, k, grad, w.samples)
			}
			if errors.Is(err, ErrStaleGeneration) {
				w.adopt(t)
				v, _, verr := w.where().ShardVersion("job-r", 0)
				if verr != nil {
					return verr
				}
				k = v
				continue
			}
			if err != nil {
				return fmt.Errorf("rank %d step %d: %w", w.rank, k, err)
			}
			k++
		}
		return nil
	}
	for i := int64(0); i < steps; i++ {
		if w.onStep != nil {
			w.onStep(w.rank, i)
		}
		minStep := int64(0)
		if mode == ModeBounded {
			minStep = i
		}
	pull:
		v, err := w.client.Pull(ctx, minStep, params)
		if errors.Is(err, ErrStaleGeneration) {
			w.adopt(t)
			goto pull
		}
		if err != nil {
			return fmt.Errorf("rank %d push %d: pull: %w", w.rank, i, err)
		}
		w.versions = append(w.versions, v)
		workerGrad(w.rank, params, grad)
		for {
			err = w.client.Push(ctx, v, grad, w.samples)
			if errors.Is(err, ErrStaleGeneration) {
				w.adopt(t)
				continue
			}
			break
		}
		if IsTooStale(err) {
			goto pull
		}
		if err != nil {
			return fmt.Errorf("rank %d push %d: %w", w.rank, i, err)
		}
	}
	return nil
}

// runWorkers runs workers until they finish and fails the test on any error.
func runWorkers(ctx context.Context, t *testing.T, mode string, steps int64, total int, ws []*testWorker) {
	t.Helper()
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { errs[i] = w.run(ctx, t, mode, steps, total) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func newTestWorkers(t *testing.T, n, total int, addr string, gen *atomic.Uint64, where func() *Server) []*testWorker {
	var ws []*testWorker
	for r := range n {
		c := newTestClient(t, ClientConfig{Addresses: []string{addr}, JobID: "job-r", Generation: gen.Load(), Rank: r,
			TotalParams: uint64(total), LayoutHash: "L", Mode: ""})
		ws = append(ws, &testWorker{rank: r, samples: int64(3 + 2*r), client: c, gen: gen, where: where})
	}
	return ws
}

// referenceRun trains the same job on one unreplicated shard, undisturbed, and
// returns its final values.
func referenceRun(t *testing.T, mode string, workers int, steps int64, total int) ([]float32, int64) {
	t.Helper()
	ref := startNode(t, ServerConfig{})
	cfg := replicaCfg(mode, workers)
	if err := ref.srv.AddShard(cfg); err != nil {
		t.Fatal(err)
	}
	var gen atomic.Uint64
	gen.Store(1)
	ws := newTestWorkers(t, workers, total, ref.addr, &gen, func() *Server { return ref.srv })
	for _, w := range ws {
		w.client.cfg.Mode = mode
	}
	ctx := testCtx(t)
	if err := ws[0].client.Init(ctx, initialValues(total)); err != nil {
		t.Fatal(err)
	}
	runWorkers(ctx, t, mode, steps, total, ws)
	vals, _, err := ref.srv.ShardValues("job-r", 0)
	if err != nil {
		t.Fatal(err)
	}
	v, _, _ := ref.srv.ShardVersion("job-r", 0)
	return vals, v
}

func bitIdentical(a, b []float32) (int, bool) {
	if len(a) != len(b) {
		return -1, false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i, false
		}
	}
	return 0, true
}

// replicatedPair starts a primary and a backup of the one-shard job and attaches the
// backup; hook is the primary's replication test hook.
func replicatedPair(t *testing.T, mode string, workers int, hook func(stage string, version int64)) (primary, backup *node) {
	t.Helper()
	primary, backup = startNode(t, ServerConfig{}), startNode(t, ServerConfig{})
	primary.srv.replica.hook = hook
	cfg := replicaCfg(mode, workers)
	if err := primary.srv.AddShard(cfg); err != nil {
		t.Fatal(err)
	}
	if err := backup.srv.AddBackupShard(cfg, ""); err != nil {
		t.Fatal(err)
	}
	if err := primary.srv.SetBackup("job-r", 0, backup.addr); err != nil {
		t.Fatal(err)
	}
	return primary, backup
}

// TestReplicatedShardSurvivesPrimaryLoss kills the primary of a replicated shard (its
// gRPC server stops: connections drop as when the process dies) in the middle of an
// update, once just before it forwards the update of step K to the backup (the step is
// lost with it and trained again) and once just after the backup applied it (the step
// survives on the backup, unacknowledged). The backup is promoted under a new
// generation, the workers follow it (SetAddress, SetMembership) and train to the end
// without any checkpoint. Sync mode: the final values are bit-identical to an
// undisturbed run on one unreplicated shard, and the version the workers pulled never
// went backwards. Async and bounded: every push is applied exactly once (the final
// version counts every worker's pushes; the retry of a push the backup already had is
// answered AlreadyExists).
func TestReplicatedShardSurvivesPrimaryLoss(t *testing.T) {
	const total, workers = 3000, 2
	for _, mode := range []string{ModeSync, ModeAsync, ModeBounded} {
		steps := int64(30)
		want, wantVersion := referenceRun(t, mode, workers, steps, total)
		for _, stage := range []string{"forward", "forwarded"} {
			t.Run(mode+"/killed at "+stage, func(t *testing.T) {
				const killAt = 17
				var (
					primary, backup *node
					killed          = make(chan struct{})
					once            sync.Once
				)
				hook := func(s string, version int64) {
					if s == stage && version == killAt {
						once.Do(func() {
							primary.kill()
							close(killed)
						})
						// The process is dead: nothing after this point happens.
						<-t.Context().Done()
					}
				}
				primary, backup = replicatedPair(t, mode, workers, hook)
				var gen atomic.Uint64
				gen.Store(1)
				var cur atomic.Pointer[Server]
				cur.Store(primary.srv)
				ws := newTestWorkers(t, workers, total, primary.addr, &gen, func() *Server { return cur.Load() })
				for _, w := range ws {
					w.client.cfg.Mode = mode
				}
				ctx := testCtx(t)
				if err := ws[0].client.Init(ctx, initialValues(total)); err != nil {
					t.Fatal(err)
				}
				// The coordinator's part: on the primary's death, one promotion under a new
				// generation, then the workers are pointed at the backup.
				go func() {
					select {
					case <-killed:
					case <-ctx.Done():
						return
					}
					gen.Store(2)
					if err := backup.srv.PromoteShard("job-r", 0, 2, workers); err != nil {
						t.Error(err)
						return
					}
					cur.Store(backup.srv)
					for _, w := range ws {
						if err := w.client.SetAddress(0, backup.addr); err != nil {
							t.Error(err)
						}
					}
				}()
				runWorkers(ctx, t, mode, steps, total, ws)
				select {
				case <-killed:
				default:
					t.Fatal("the primary was never killed")
				}
				v, isBackup, err := backup.srv.ShardVersion("job-r", 0)
				if err != nil || isBackup {
					t.Fatalf("promoted shard: version %d backup %v err %v", v, isBackup, err)
				}
				if v != wantVersion {
					t.Errorf("final version %d, an undisturbed run ends at %d (each update applied exactly once)", v, wantVersion)
				}
				for _, w := range ws {
					for i := 1; i < len(w.versions); i++ {
						if w.versions[i] < w.versions[i-1] {
							t.Fatalf("rank %d pulled version %d after %d: progress went backwards", w.rank, w.versions[i], w.versions[i-1])
						}
					}
				}
				if mode == ModeSync {
					got, _, err := backup.srv.ShardValues("job-r", 0)
					if err != nil {
						t.Fatal(err)
					}
					if i, ok := bitIdentical(got, want); !ok {
						t.Fatalf("final values differ from the undisturbed run at %d: %v vs %v", i, got[max(i, 0)], want[max(i, 0)])
					}
				}
				if n := testutil.ToFloat64(backup.srv.replica.promotions); n != 1 {
					t.Errorf("promotions metric %v, want 1", n)
				}
			})
		}
	}
}

// TestBackupLossAndNewBackupCatchesUp: the backup dies mid-training; the primary
// detaches it (reported through OnBackupLost), and training goes on. A new backup is
// then attached while the workers keep training: it receives the shard's state (one
// install) and every later update, and ends bit-identical to the primary, at its
// version.
func TestBackupLossAndNewBackupCatchesUp(t *testing.T) {
	const total, workers = 2000, 2
	steps := int64(40)
	lost := make(chan string, 1)
	primary := startNode(t, ServerConfig{OnBackupLost: func(job string, shard int, err error) { lost <- fmt.Sprintf("%s/%d: %v", job, shard, err) }})
	backup, second := startNode(t, ServerConfig{}), startNode(t, ServerConfig{})
	cfg := replicaCfg(ModeSync, workers)
	if err := primary.srv.AddShard(cfg); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{backup, second} {
		if err := n.srv.AddBackupShard(cfg, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := primary.srv.SetBackup("job-r", 0, backup.addr); err != nil {
		t.Fatal(err)
	}
	var gen atomic.Uint64
	gen.Store(1)
	ws := newTestWorkers(t, workers, total, primary.addr, &gen, func() *Server { return primary.srv })
	var (
		killOnce, attachOnce sync.Once
		attached             = make(chan struct{})
	)
	ws[0].onStep = func(_ int, k int64) {
		switch {
		case k == 10:
			killOnce.Do(backup.kill)
		case k == 20:
			attachOnce.Do(func() {
				if err := primary.srv.SetBackup("job-r", 0, second.addr); err != nil {
					t.Error(err)
				}
				close(attached)
			})
		}
	}
	ctx := testCtx(t)
	if err := ws[0].client.Init(ctx, initialValues(total)); err != nil {
		t.Fatal(err)
	}
	runWorkers(ctx, t, ModeSync, steps, total, ws)
	select {
	case msg := <-lost:
		t.Logf("backup lost: %s", msg)
	default:
		t.Fatal("OnBackupLost was not called after the backup died")
	}
	<-attached
	if !primary.srv.HasBackup("job-r", 0) {
		t.Fatal("the new backup was detached")
	}
	pv, _, _ := primary.srv.ShardVersion("job-r", 0)
	bv, isBackup, _ := second.srv.ShardVersion("job-r", 0)
	if pv != steps || bv != pv || !isBackup {
		t.Fatalf("primary at %d, new backup at %d (backup %v), want both at %d", pv, bv, isBackup, steps)
	}
	pvals, pstep, _ := primary.srv.ShardValues("job-r", 0)
	bvals, bstep, _ := second.srv.ShardValues("job-r", 0)
	if i, ok := bitIdentical(bvals, pvals); !ok || pstep != bstep {
		t.Fatalf("new backup differs from the primary at %d (optimizer steps %d, %d)", i, bstep, pstep)
	}
	if n := testutil.ToFloat64(primary.srv.replica.installs); n != 2 {
		t.Errorf("%v state installs, want 2 (the first backup, the new one)", n)
	}
	if n := testutil.ToFloat64(primary.srv.replica.failures); n != 1 {
		t.Errorf("%v replica failures, want 1", n)
	}
}

// TestBackupRefusesWorkersAndBadPromotions: a backup answers worker calls
// Unavailable/NOT_PRIMARY (clients retry them), cannot be promoted before it holds
// its primary's state or at an old generation, and a primary refuses replication;
// on a server with a CallerFunc only the named primary node may replicate.
func TestBackupRefusesWorkersAndBadPromotions(t *testing.T) {
	b := startNode(t, ServerConfig{})
	cfg := replicaCfg(ModeSync, 1)
	cfg.Generation = 3
	if err := b.srv.AddBackupShard(cfg, "ps-a"); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	stub := rawStub(t, b.addr)
	ref := &cohortv1.ShardRef{JobId: "job-r", Shard: 0, Generation: 3}
	_, _, err := pullRaw(ctx, stub, ref, 0)
	if status.Code(err) != codes.Unavailable || !errors.Is(FromStatus(err), ErrNotPrimary) {
		t.Fatalf("pull from a backup: %v, want Unavailable NOT_PRIMARY", err)
	}
	if err := b.srv.PromoteShard("job-r", 0, 4, 1); !errors.Is(err, ErrNotInitialised) {
		t.Fatalf("promotion without state: %v", err)
	}
	if err := b.srv.AddShard(cfg); err != nil {
		// AddShard of the same settings on a backup only updates membership.
		t.Fatal(err)
	}
	p := startNode(t, ServerConfig{})
	pcfg := cfg
	if err := p.srv.AddShard(pcfg); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.AddBackupShard(pcfg, ""); err == nil {
		t.Fatal("a backup was added over a primary")
	}
	if _, err := initRaw(ctx, rawStub(t, p.addr), ref, Range{0, 10}, 10, "L", initialValues(10)); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.SetBackup("job-r", 0, b.addr); err != nil {
		t.Fatal(err)
	}
	// The CallerFunc names the primary's node wrongly: the install is refused and the
	// primary goes on alone.
	b.srv.SetCaller(func(context.Context) (string, error) { return "ps-z", nil })
	if _, err := pushRaw(ctx, rawStub(t, p.addr), ref, 0, 0, 1, make([]float32, 10)); err != nil {
		t.Fatal(err)
	}
	if p.srv.HasBackup("job-r", 0) {
		t.Fatal("the primary kept a backup that refused it")
	}
	b.srv.SetCaller(func(context.Context) (string, error) { return "ps-a", nil })
	if err := p.srv.SetBackup("job-r", 0, b.addr); err != nil {
		t.Fatal(err)
	}
	if _, err := pushRaw(ctx, rawStub(t, p.addr), ref, 1, 0, 1, make([]float32, 10)); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := b.srv.ShardVersion("job-r", 0); v != 2 {
		t.Fatalf("backup at version %d after the primary's second step, want 2", v)
	}
	if err := b.srv.PromoteShard("job-r", 0, 3, 1); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("promotion at the backup's own generation: %v", err)
	}
	if err := b.srv.PromoteShard("job-r", 0, 4, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.PromoteShard("job-r", 0, 4, 1); err != nil {
		t.Fatalf("a repeated promotion: %v", err)
	}
	// The old primary, still alive, now replicates into a primary: refused.
	if _, err := pushRaw(ctx, rawStub(t, p.addr), ref, 2, 0, 1, make([]float32, 10)); err != nil {
		t.Fatal(err)
	}
	if p.srv.HasBackup("job-r", 0) {
		t.Fatal("the old primary kept replicating into the promoted shard")
	}
	if v, _, _ := b.srv.ShardVersion("job-r", 0); v != 2 {
		t.Fatalf("the promoted shard moved to version %d on its old primary's update", v)
	}
}

// FuzzInstallReplicaHeader feeds arbitrary InstallReplica headers and bodies to the
// backup's decoder: it never panics, refuses what does not fit with an
// ErrInvalidArgument naming the field, and what it accepts installs exactly the values
// sent.
func FuzzInstallReplicaHeader(f *testing.F) {
	f.Add(uint64(0), uint64(4), uint64(4), "adam", uint32(2), int64(3), int64(2), []byte(make([]byte, 48)))
	f.Add(uint64(2), uint64(2), uint64(4), "adam", uint32(2), int64(0), int64(0), []byte(make([]byte, 24)))
	f.Add(uint64(0), uint64(1), uint64(1), "sgd", uint32(0), int64(0), int64(0), []byte{0, 0, 128, 63})
	f.Add(uint64(5), uint64(1<<40), uint64(1), "adam", uint32(7), int64(-1), int64(-3), []byte{1})
	f.Add(uint64(0), uint64(3), uint64(3), "adam", uint32(1), int64(1), int64(1), []byte(make([]byte, 36)))
	f.Fuzz(func(t *testing.T, off, length, total uint64, opt string, vectors uint32, version, optStep int64, body []byte) {
		h := &cohortv1.InstallReplicaHeader{Ref: &cohortv1.ShardRef{JobId: "j"}, Version: version, RangeOffset: off,
			RangeLength: length, TotalParams: total, LayoutHash: "L", Optimizer: opt, OptimizerStep: optStep, StateVectors: vectors}
		ih, n, err := checkInstallHeader(h, OptimizerAdam)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("refusal %v is not ErrInvalidArgument", err)
			}
			return
		}
		if n != 3*length || length == 0 || off+length > total || version < 0 || optStep < 0 {
			t.Fatalf("accepted %+v: flat length %d", h, n)
		}
		if n > 1<<16 || uint64(len(body)) < 4*n {
			return
		}
		flat := make([]float32, n)
		asm := assembler{dst: flat}
		if err := asm.add(0, body[:4*n]); err != nil {
			t.Fatal(err)
		}
		sh := newShard(replicaCfg(ModeSync, 1), newMetrics(nil), quietLogger(), nil)
		sh.replica.backup = true
		if _, err := sh.installReplica(0, ih, flat); err != nil {
			return // state a real optimizer refuses
		}
		if i, ok := bitIdentical(sh.params, flat[:length]); !ok || sh.version != version || sh.opt.Step() != optStep {
			t.Fatalf("installed values differ at %d, version %d, optimizer step %d", i, sh.version, sh.opt.Step())
		}
	})
}
