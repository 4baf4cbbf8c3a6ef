package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"time"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/model"
)

// TrainerConfig configures one training task.
type TrainerConfig struct {
	// Assignment is the worker allocation with its job and the shard addresses.
	Assignment *cohortv1.Assignment
	// OnShardLost, when set, is told that the primary of a shard of the job is
	// unreachable (replicated shards: the coordinator confirms and promotes its backup;
	// replicas.go).
	OnShardLost func(jobID string, generation uint64, shard int)
	// Store receives checkpoints and exports.
	Store storage.Blob
	// DialOptions are used to reach the parameter-server shards.
	DialOptions []grpc.DialOption
	// S3 is the endpoint and credentials for s3:// data URIs (nil: none).
	S3 *storage.S3Config
	// DataRoots are the directories a job's file:// data URIs may name (the node
	// agent's --data-root flags); a URI outside them, by ".." or by a symbolic link,
	// is refused before anything is opened. Empty: DefaultDataRoots (the working
	// directory).
	DataRoots []string
	// Logger receives structured logs.
	Logger *slog.Logger
	// Report sends progress, metrics and checkpoint pointers to the coordinator
	// (chief only). May be nil.
	Report func(*cohortv1.TaskReport)
	// Metrics receives the worker's Prometheus metrics (nil: none).
	Metrics *Metrics
	// Record is the checkpoint the job record was last seen pointing at; the chief's
	// retention never deletes it nor any it committed after it (chief.retain). Nil:
	// the chief keeps the two newest it committed besides checkpoint.keep.
	Record *CheckpointRecord
	// CheckpointGrace is the age after which checkpoint objects without a committed
	// manifest are collected (0: DefaultCheckpointGrace).
	CheckpointGrace time.Duration
	// StoragePause bounds how long the chief pauses the job, retrying, when a
	// checkpoint cannot be written because storage is unavailable (0:
	// DefaultStoragePause); the job fails after it.
	StoragePause time.Duration
	// StorageRetryBackoff is the first wait between checkpoint attempts; it doubles up
	// to 30 s (0: one second).
	StorageRetryBackoff time.Duration
	// Membership delivers the task's membership changes (elastic jobs; see elastic.go).
	// Nil: a shard refusing the task's generation ends the run with an error.
	Membership *MembershipWatch
	// GPUs are the node's GPUs: a task placed with GPUs (spec.resources.workers.gpus)
	// computes on one of them (device.go). Nil: such a task trains on the CPU, with a
	// warning.
	GPUs *GPUSet
	// ProgressInterval is how often the chief reports progress within an epoch (0:
	// DefaultProgressInterval; negative: by ProgressEverySteps only); ProgressEverySteps,
	// when positive, also reports after that many steps (progress.go).
	ProgressInterval   time.Duration
	ProgressEverySteps int
}

// DefaultCheckpointGrace is the default TrainerConfig.CheckpointGrace.
const DefaultCheckpointGrace = 10 * time.Minute

// DefaultStoragePause is the default TrainerConfig.StoragePause.
const DefaultStoragePause = 15 * time.Minute

// Result is what a finished training task reports.
type Result struct {
	Metrics    map[string]float64
	Checkpoint string
	Exports    []string
	Progress   *cohortv1.JobProgress
	// Report is the URI of the model's report.json; Gate the outcome of its export gate
	// (nil when the spec asks for none). A failed gate leaves Exports empty.
	Report string
	Gate   *cohortv1.GateResult
	// ExportedFrom names the checkpoint the exports, the report and Metrics describe
	// (the best by spec.checkpoint.scoreBy); EarlyStop is set when
	// spec.training.earlyStopping ended training.
	ExportedFrom *cohortv1.ExportedFrom
	EarlyStop    *cohortv1.EarlyStop
	// Undefined says which metrics Metrics leaves out and why ("val_auc undefined: the
	// validation split holds one class only (...)"); the final report's message.
	Undefined []string
	// LastStep is the global step this rank's run ended at: the shards' version when it
	// left the training loop (every rank's, in sync mode). Set on every rank.
	LastStep int64
}

// Trainer is one worker's data-parallel training loop. Worker rank 0 is the chief: it
// evaluates, checkpoints and exports; every rank computes gradients on its data shard.
// Rank, world size and generation change when the job's membership does (elastic.go).
type Trainer struct {
	cfg  TrainerConfig
	log  *slog.Logger
	job  *cohortv1.Job
	spec *jobs.TrainingJob
	// base is workers.count: the global batch is base*batchSize rows whatever the
	// membership.
	base  int
	gen   uint64
	rank  int
	world int
	chief bool
}

// NewTrainer checks the assignment and returns a Trainer.
func NewTrainer(cfg TrainerConfig) (*Trainer, error) {
	a := cfg.Assignment
	if a == nil || a.GetJob() == nil || a.GetAllocation() == nil {
		return nil, errors.New("worker: assignment without job or allocation")
	}
	if cfg.Store == nil {
		return nil, errors.New("worker: TrainerConfig.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Report == nil {
		cfg.Report = func(*cohortv1.TaskReport) {}
	}
	spec, err := jobs.Parse(a.GetJob().GetSpecYaml())
	if err != nil {
		return nil, fmt.Errorf("worker: job spec: %w", err)
	}
	base := int(a.GetJob().GetWorkerCount())
	m := MembershipOf(a)
	if base < 1 || m.World < 1 || m.Rank < 0 || m.Rank >= m.World {
		return nil, fmt.Errorf("worker: rank %d outside worker count %d", m.Rank, m.World)
	}
	if want := int(a.GetJob().GetShardCount()); len(a.GetShardAddresses()) != want {
		return nil, fmt.Errorf("worker: %d shard addresses for %d shards", len(a.GetShardAddresses()), want)
	}
	return &Trainer{cfg: cfg, log: cfg.Logger, job: a.GetJob(), spec: spec, base: base,
		gen: m.Generation, rank: m.Rank, world: m.World, chief: m.Rank == 0}, nil
}

// Run trains to the end and returns the chief's result (metrics, checkpoint, exports);
// other ranks return an empty result.
func (t *Trainer) Run(ctx context.Context) (*Result, error) {
	s := &t.spec.Spec
	ds, err := dataSource{ctx: ctx, s3: t.cfg.S3, roots: t.cfg.DataRoots}.loadData(s)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, dataFailure(err)
	}
	m, err := buildModel(s, ds, t.rank)
	if err != nil {
		return nil, dataFailure(err)
	}
	model.SetThreads(m, WorkerThreads(s))
	dev, m, err := t.placeModel(s, ds, m)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	client, err := paramserver.NewClient(paramserver.ClientConfig{
		Addresses:          t.cfg.Assignment.GetShardAddresses(),
		JobID:              t.job.GetId(),
		Generation:         t.gen,
		Rank:               t.rank,
		TotalParams:        uint64(m.NumParams()),
		LayoutHash:         m.LayoutHash(),
		Mode:               s.Training.Consistency.Mode,
		Compression:        clientCompression(s.Training.Compression),
		DialOptions:        t.cfg.DialOptions,
		Logger:             t.log,
		OnShardUnavailable: t.shardUnavailable,
	})
	if err != nil {
		return nil, fmt.Errorf("worker: parameter-server client: %w", err)
	}
	defer client.Close()
	initial := m.InitParams(s.Training.Seed)
	if err := t.withStaleRetry(ctx, client, func() error { return client.Init(ctx, initial) }); err != nil {
		return nil, fmt.Errorf("worker: init parameter shards: %w", err)
	}
	probe, err := newVersionProbe(t.job.GetId(), t.cfg.Assignment.GetShardAddresses(), t.cfg.DialOptions)
	if err != nil {
		return nil, err
	}
	defer probe.close()
	followCtx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	go t.followShards(followCtx, client, probe)

	// Step s of an epoch trains on the global batch perm[s*G, (s+1)*G) with
	// G = workers.count*batchSize, rank r of the w current ranks taking the r-th of w
	// even slices (batchSize rows each when all workers.count ranks run). The sample-
	// weighted mean of the ranks' gradients is then exactly the gradient of that global
	// batch, so N workers follow the same trajectory as one worker with an N-times
	// batch, and a membership change does not move the data order (elastic.go).
	n, batch := ds.train.N, s.Training.BatchSize
	global := batch * t.base
	stepsPerEpoch := int64((n + global - 1) / global)
	if stepsPerEpoch == 0 {
		return nil, fmt.Errorf("data.train: no training rows after the validation split")
	}
	if syncMode(s) && t.cfg.Membership != nil {
		if err := t.settleJoin(ctx, client, probe, m.NumParams()); err != nil {
			return nil, err
		}
	}
	var start resumePoint
	err = t.withStaleRetry(ctx, client, func() error {
		var err error
		start, err = t.startPoint(ctx, client, m, n, global)
		return err
	})
	if err != nil {
		return nil, err
	}
	total := start.step + remainingSteps(n, global, s.Training.Epochs, start.epoch, start.pos)
	t.log.Info("training", "train_rows", n, "val_rows", ds.val.N, "features", ds.inputs,
		"params", m.NumParams(), "steps_per_epoch", stepsPerEpoch, "total_steps", total,
		"start_step", start.step, "start_epoch", start.epoch, "start_row", start.pos)

	loop := newLoop(t, m, ds, client, probe, start, stepsPerEpoch, total)
	defer loop.chief.closeTelemetry()
	if s.Training.EarlyStopping != nil {
		// A job stopped early before this run (it failed after the decision, or this
		// worker joins late) stops at the same step again.
		rec, err := readStopRecord(ctx, t.cfg.Store, t.job.GetId())
		if err != nil {
			return nil, err
		}
		switch {
		case rec != nil:
			loop.applyStop(rec, start.step)
		case start.resumed && start.pos == 0 && start.epoch > 0:
			// Resumed at an epoch end: the run before may have decided to stop there
			// and failed before storing the decision; the chief takes it again and
			// every rank looks for it after this step.
			loop.checkStopAt = start.step + 1
			if t.chief {
				loop.chief.resumeStop(start)
			}
		}
	}
	return loop.run(ctx)
}

// loopState is one run of the training loop, on every rank: the schedule of the
// steps, the gradient computation and its buffers, the epoch's training loss, the
// following of membership changes (elastic.go), and rank 0's duties, which the loop
// hands to its chief.
type loopState struct {
	t      *Trainer
	m      model.Model
	ds     *datasets
	client *paramserver.Client
	probe  *versionProbe
	// params holds the parameters pulled for the step in progress (the chief
	// evaluates, checkpoints and exports them).
	params []float32

	sched schedule
	grad  gradientState
	loss  epochLoss
	// checkStopAt is the step after the last epoch end, at which the rank reads the
	// job's early-stopping record (earlystop.go); -1: none.
	checkStopAt int64
	// chief does rank 0's duties (chief.go). Every rank keeps one: the rank that becomes
	// rank 0 after a membership change takes over with it.
	chief *chief
	// traffic is the client's traffic at the last step (countTraffic).
	traffic paramserver.Traffic
}

// newLoop prepares the loop of a run that starts at start and trains to step total.
func newLoop(t *Trainer, m model.Model, ds *datasets, client *paramserver.Client, probe *versionProbe, start resumePoint, stepsPerEpoch, total int64) *loopState {
	batch := t.spec.Spec.Training.BatchSize
	params := make([]float32, m.NumParams())
	l := &loopState{
		t: t, m: m, ds: ds, client: client, probe: probe,
		params: params,
		sched: schedule{
			n: int64(ds.train.N), global: int64(batch * t.base), batch: batch,
			stepsPerEpoch: stepsPerEpoch, total: total, start: start, permEpoch: -1,
		},
		grad: gradientState{
			values: make([]float32, m.NumParams()),
			xb:     make([]float32, batch*ds.inputs),
			yb:     make([]float32, batch),
			step:   -1,
		},
		loss:        epochLoss{started: time.Now(), lastStep: -1},
		chief:       newChief(t, m, ds, client, params, total, start),
		checkStopAt: -1,
	}
	if start.resumed {
		l.loss.sum, l.loss.rows = start.lossSum, int(start.rows)
	}
	return l
}

// schedule places the global steps in the data. Step s of an epoch trains on the
// global batch perm[s*global, (s+1)*global) of the epoch's seeded permutation (see
// Run); steps advance through the epochs from the run's start point.
type schedule struct {
	n, global     int64 // training rows; rows of one global step (batchSize * workers.count)
	batch         int   // batchSize
	stepsPerEpoch int64
	total         int64 // the run's last step: training ends when the shards reach it
	// start is where this run began.
	start resumePoint
	// position is that of the next step.
	position
	// step is the step in progress (total once every step is trained).
	step int64
	// perm is the epoch permEpoch's permutation of the training rows.
	perm      []int
	permEpoch int
}

// position is where training stands in the data: the epoch and the rows of its
// permutation already trained on, and the gradient computations of every rank so far
// (their dropout streams' positions). A checkpoint records it.
type position struct {
	epoch int
	pos   int64
	calls []uint64
}

// seek sets the position of global step k.
func (s *schedule) seek(k int64) {
	first := (s.n - s.start.pos + s.global - 1) / s.global // steps left in the start epoch
	d := k - s.start.step
	if d < first {
		s.epoch, s.pos = s.start.epoch, s.start.pos+d*s.global
		return
	}
	d -= first
	s.epoch, s.pos = s.start.epoch+1+int(d/s.stepsPerEpoch), (d%s.stepsPerEpoch)*s.global
}

// permutation returns the current epoch's permutation of the training rows.
func (s *schedule) permutation(seed int64) []int {
	if s.perm == nil || s.permEpoch != s.epoch {
		s.perm = data.ShardIndices(int(s.n), 0, 1, s.epoch, seed)
		s.permEpoch = s.epoch
	}
	return s.perm
}

// epochEnded reports whether an epoch ended just before step k, at the current
// position: k is the first step of an epoch after the first, and not the step this run
// resumed at (the checkpoint it resumed from was taken after that epoch's evaluation).
func (s *schedule) epochEnded(k int64) bool {
	return s.pos == 0 && s.epoch > 0 && !(s.start.resumed && k == s.start.step)
}

// countGradients counts the step's gradient computation of every rank that has rows
// in it.
func (s *schedule) countGradients() {
	for r := range s.calls {
		if s.pos+int64(r*s.batch) < s.n {
			s.calls[r]++
		}
	}
}

// gradientState is the gradient this rank pushed last and the scratch it is computed
// in.
type gradientState struct {
	// values is the gradient of step (-1: none), over samples rows; settle pushes it
	// again when a membership change leaves a shard without it.
	values  []float32
	step    int64
	samples int64
	// xb and yb hold one piece of at most batchSize rows; part the gradient of a piece
	// after the first.
	xb, yb []float32
	part   []float32
	// acc sums the class-weighted pieces under spec.training.classWeights.
	acc []float32
}

// epochLoss is this rank's running training loss of the epoch: the sum of its steps'
// losses weighted by their rows, and those rows. A step trained again (after a
// membership change) replaces its earlier count.
type epochLoss struct {
	sum  float64
	rows int
	// started is when the epoch began (the chief reports its samples per second).
	started time.Time
	// lastStep is the step counted last, with its sum and rows.
	lastStep int64
	lastSum  float64
	lastRows int
}

// count adds the mean loss of step over rows rows, replacing the step's earlier count.
func (e *epochLoss) count(step int64, loss float64, rows int) {
	if step == e.lastStep {
		e.sum -= e.lastSum
		e.rows -= e.lastRows
	}
	e.lastStep, e.lastSum, e.lastRows = step, loss*float64(rows), rows
	e.sum += e.lastSum
	e.rows += e.lastRows
}

// mean is the epoch's mean training loss (NaN before any row).
func (e *epochLoss) mean() float64 {
	if e.rows > 0 {
		return e.sum / float64(e.rows)
	}
	return math.NaN()
}

// reset starts the next epoch.
func (e *epochLoss) reset() {
	e.sum, e.rows, e.started = 0, 0, time.Now()
}

// syncMode reports whether the spec's consistency mode is sync.
func syncMode(s *jobs.Spec) bool {
	return s.Training.Consistency.Mode == "" || s.Training.Consistency.Mode == paramserver.ModeSync
}

func (l *loopState) run(ctx context.Context) (*Result, error) {
	t, s := l.t, &l.t.spec.Spec
	start := l.sched.start
	if err := l.chief.openTelemetry(ctx); err != nil {
		return nil, err
	}
	l.chief.startInterim(start.step, &l.loss)
	calls := append(make([]uint64, 0, t.base), start.calls...)
	l.sched.calls = append(calls, make([]uint64, max(0, t.base-len(calls)))...)[:t.base]
	if setter, ok := l.m.(gradientCallSetter); ok {
		if t.rank < len(l.sched.calls) {
			setter.SetGradientCalls(l.sched.calls[t.rank])
		}
	} else if start.resumed && t.rank < len(l.sched.calls) && l.sched.calls[t.rank] > 0 && usesDropout(s) {
		t.log.Warn("resumed with dropout, but the model cannot restore its dropout stream: masks differ from an uninterrupted run")
	}
	sync := syncMode(s)
	step := start.step
	for {
		// Early stopping may move the last step (l.sched.total) closer.
		for step < l.sched.total {
			l.sched.seek(step)
			err := l.runStep(ctx, step)
			if err == nil {
				step++
				continue
			}
			if errors.Is(err, errStoppedEarly) {
				continue // the run ends at step
			}
			if step, err = l.recover(ctx, step, err); err != nil {
				return nil, err
			}
		}
		if !sync {
			break
		}
		// Every rank waits until the last step is complete on every shard: until then a
		// membership change may still ask it to train that step again.
		l.sched.seek(l.sched.total)
		l.sched.step = l.sched.total
		_, err := l.client.Pull(ctx, l.sched.total, l.params)
		if err == nil {
			break
		}
		if step, err = l.recover(ctx, l.sched.total, fmt.Errorf("worker: pull final parameters: %w", err)); err != nil {
			return nil, err
		}
	}
	total := l.sched.total
	l.sched.seek(total)
	l.sched.step = total
	// In bounded mode a pull carries the worker's own step (its clock). A worker that
	// is done says so with a pull for the total, and the chief's final pull, for
	// total+staleness, returns only once every worker has said so: the final model
	// holds every worker's last gradient.
	bounded := s.Training.Consistency.Mode == paramserver.ModeBounded
	// (A membership change now only renames the generation these calls carry.)
	pull := func(step int64) error {
		return t.withStaleRetry(ctx, l.client, func() error {
			_, err := l.client.Pull(ctx, step, l.params)
			return err
		})
	}
	if !t.chief {
		if bounded {
			if err := pull(total); err != nil {
				return nil, fmt.Errorf("worker: report the last step: %w", err)
			}
		}
		return &Result{LastStep: total}, nil
	}
	if !sync {
		finalStep := total
		if bounded {
			finalStep += int64(s.Training.Consistency.Staleness)
		}
		if err := pull(finalStep); err != nil {
			return nil, fmt.Errorf("worker: pull final parameters: %w", err)
		}
	}
	res, err := l.chief.finish(ctx, l.sched.position, &l.loss)
	if err != nil {
		return nil, err
	}
	res.LastStep = total
	return res, nil
}

// runStep trains global step k at the position seek set: pull, the chief's duties
// (the evaluation of the epoch that ended, the periodic checkpoint), gradient, push.
func (l *loopState) runStep(ctx context.Context, k int64) error {
	t, s := l.t, &l.t.spec.Spec
	perm := l.sched.permutation(s.Training.Seed)
	stepStart := time.Now()
	l.sched.step = k
	version, err := l.client.Pull(ctx, k, l.params)
	if err != nil {
		return fmt.Errorf("worker: pull parameters for step %d: %w", k, err)
	}
	if err := l.followStop(ctx, k); err != nil {
		return err
	}
	if l.sched.epochEnded(k) {
		if s.Training.EarlyStopping != nil {
			l.checkStopAt = k + 1
		}
		if t.chief {
			// Evaluate, commit the scored checkpoint of the epoch end, and, when early
			// stopping ends training here, store the decision before this rank's push
			// releases step k+1 (earlystop.go).
			if err := l.chief.evaluateEpoch(ctx, l.sched.epoch, k, &l.loss); err != nil {
				return err
			}
			if err := l.chief.epochCheckpoint(ctx, k, l.sched.position, &l.loss); err != nil {
				return err
			}
		}
	}
	if t.chief && l.chief.pendingStop != nil {
		rec, err := l.chief.commitStop(ctx)
		if err != nil {
			return err
		}
		l.applyStop(rec, k)
	}
	if t.chief {
		if err := l.chief.periodicCheckpoint(ctx, k, l.sched.position, &l.loss); err != nil {
			return err
		}
	}
	lo, hi := sliceOf(l.sched.pos, l.sched.global, l.sched.n, t.rank, t.world)
	rows := perm[lo:hi]
	if err := l.trainStep(ctx, k, version, rows); err != nil {
		return err
	}
	l.sched.countGradients()
	t.cfg.Metrics.observeStep(time.Since(stepStart), len(rows))
	l.countTraffic()
	if t.chief {
		l.chief.reportInterim(k+1, &l.sched, &l.loss)
	}
	return nil
}

// recover handles a failed step: a refusal for a stale generation is a membership
// change, which the trainer follows (settle, in sync mode; in the other modes it
// adopts the new membership and goes on with the same step); any other error ends the
// run. It returns the step to go on with.
func (l *loopState) recover(ctx context.Context, k int64, cause error) (int64, error) {
	t := l.t
	if !isStaleGeneration(cause) {
		return 0, cause
	}
	if t.cfg.Membership == nil {
		return 0, fmt.Errorf("%w: %w", errNoMembership, cause)
	}
	next := k
	if syncMode(&t.spec.Spec) {
		var err error
		if next, err = l.settle(ctx); err != nil {
			return 0, fmt.Errorf("%w (while following: %w)", err, cause)
		}
	} else if err := t.adopt(ctx, l.client, 50*time.Millisecond); err != nil {
		return 0, fmt.Errorf("%w (while following: %w)", err, cause)
	}
	// A rank that became the chief starts its event file.
	if err := l.chief.openTelemetry(ctx); err != nil {
		return 0, err
	}
	if next < l.sched.start.step || next > l.sched.total {
		return 0, fmt.Errorf("worker: after the membership change the shards are at step %d, outside this run's steps %d..%d", next, l.sched.start.step, l.sched.total)
	}
	return next, nil
}

// trainStep computes the gradient of rows under l.params (pulled at version) and pushes
// it. In sync mode the push is for the global step; in async and bounded modes for the
// version it was computed against, and a bounded push refused as too stale is
// recomputed from a fresh pull.
func (l *loopState) trainStep(ctx context.Context, step, version int64, rows []int) error {
	mode := l.t.spec.Spec.Training.Consistency.Mode
	pushStep := step
	if mode == paramserver.ModeAsync || mode == paramserver.ModeBounded {
		pushStep = version
	}
	for {
		loss, err := l.gradient(step, rows)
		if err != nil {
			return err
		}
		l.grad.step, l.grad.samples = pushStep, int64(len(rows))
		err = l.client.Push(ctx, pushStep, l.grad.values, int64(len(rows)))
		if err == nil {
			l.loss.count(step, loss, len(rows))
			return nil
		}
		if !paramserver.IsTooStale(err) {
			return fmt.Errorf("worker: push gradient for step %d: %w", step, err)
		}
		if pushStep, err = l.client.Pull(ctx, 0, l.params); err != nil {
			return fmt.Errorf("worker: pull parameters again for step %d: %w", step, err)
		}
	}
}

// gradient fills l.grad.values with the mean gradient of rows under l.params, computed
// in pieces of at most batchSize rows (the model's batch) weighted by their rows, and
// returns the mean loss.
func (l *loopState) gradient(step int64, rows []int) (float64, error) {
	if len(rows) == 0 {
		clear(l.grad.values)
		return 0, nil
	}
	if w := l.ds.classWeights; w != nil {
		return l.weightedGradient(step, rows, w)
	}
	return l.plainGradient(step, rows)
}

// plainGradient is gradient without class weights, on at least one row.
func (l *loopState) plainGradient(step int64, rows []int) (float64, error) {
	g := &l.grad
	batch, dim := l.t.spec.Spec.Training.BatchSize, l.ds.inputs
	var lossSum float64
	for off := 0; off < len(rows); off += batch {
		part := rows[off:min(off+batch, len(rows))]
		for i, r := range part {
			copy(g.xb[i*dim:(i+1)*dim], l.ds.train.X[r*dim:(r+1)*dim])
			g.yb[i] = l.ds.train.Y[r]
		}
		dst := g.values
		if off > 0 {
			if g.part == nil {
				g.part = make([]float32, len(g.values))
			}
			dst = g.part
		}
		loss, err := l.m.Gradient(l.params, g.xb, g.yb, len(part), dst)
		if err != nil {
			return 0, fmt.Errorf("worker: gradient at step %d: %w", step, err)
		}
		if off > 0 {
			total := float32(off + len(part))
			a, b := float32(off)/total, float32(len(part))/total
			for i, v := range dst {
				g.values[i] = a*g.values[i] + b*v
			}
		}
		lossSum += loss * float64(len(part))
	}
	return lossSum / float64(len(rows)), nil
}

func mergeMetrics(a, b map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }
