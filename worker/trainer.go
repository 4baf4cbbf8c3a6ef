package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/metrics"
	"github.com/cohort-dev/cohort/worker/model"
)

// TrainerConfig configures one training task.
type TrainerConfig struct {
	// Assignment is the worker allocation with its job and the shard addresses.
	Assignment *cohortv1.Assignment
	// Store receives checkpoints and exports.
	Store storage.Blob
	// DialOptions are used to reach the parameter-server shards.
	DialOptions []grpc.DialOption
	// S3 is the endpoint and credentials for s3:// data URIs (nil: none).
	S3 *storage.S3Config
	// Logger receives structured logs.
	Logger *slog.Logger
	// Report sends progress, metrics and checkpoint pointers to the coordinator
	// (chief only). May be nil.
	Report func(*cohortv1.TaskReport)
	// Metrics receives the worker's Prometheus metrics (nil: none).
	Metrics *Metrics
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
	ds, err := dataSource{ctx: ctx, s3: t.cfg.S3}.loadData(s)
	if err != nil {
		return nil, err
	}
	m, err := buildModel(s, ds, t.rank)
	if err != nil {
		return nil, err
	}
	model.SetThreads(m, WorkerThreads(s))
	client, err := paramserver.NewClient(paramserver.ClientConfig{
		Addresses:   t.cfg.Assignment.GetShardAddresses(),
		JobID:       t.job.GetId(),
		Generation:  t.gen,
		Rank:        t.rank,
		TotalParams: uint64(m.NumParams()),
		LayoutHash:  m.LayoutHash(),
		Mode:        s.Training.Consistency.Mode,
		DialOptions: t.cfg.DialOptions,
		Logger:      t.log,
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

	loop := &loopState{
		t: t, m: m, ds: ds, client: client, probe: probe,
		params:        make([]float32, m.NumParams()),
		grad:          make([]float32, m.NumParams()),
		xb:            make([]float32, batch*ds.inputs),
		yb:            make([]float32, batch),
		stepsPerEpoch: stepsPerEpoch,
		total:         total,
		epochStart:    time.Now(),
		start:         start,
	}
	defer loop.closeTelemetry()
	return loop.run(ctx)
}

type loopState struct {
	t      *Trainer
	m      model.Model
	ds     *datasets
	client *paramserver.Client
	probe  *versionProbe

	params, grad, xb, yb []float32
	stepsPerEpoch, total int64

	perm         []int // this epoch's seeded permutation of the training rows
	epochLoss    float64
	epochRows    int
	epochStart   time.Time
	metrics      map[string]float64
	progress     *cohortv1.JobProgress
	lastCkptStep int64
	checkpoint   string

	// start is where this run began; epoch and pos are the data position of the next
	// step (the epoch and the rows of its permutation already trained on), calls the
	// gradient computations of every rank so far (their dropout stream positions).
	start       resumePoint
	epoch       int
	pos         int64
	calls       []uint64
	curStep     int64
	prevCkptKey string
	telemetry   *jobTelemetry

	// permEpoch is the epoch perm was drawn for; evaluatedStep the step at whose start
	// the chief last evaluated (a step trained again after a membership change is not
	// evaluated twice).
	permEpoch     int
	evaluatedStep int64
	// gradStep is the step whose gradient grad holds (-1: none), over gradSamples rows;
	// gradPart is the scratch of a slice computed in several pieces.
	gradStep    int64
	gradSamples int64
	gradPart    []float32
	// lossStep is the last step whose loss (lossSum over lossRows rows) is counted in
	// the epoch's training loss: a step trained again replaces it.
	lossStep int64
	lossSum  float64
	lossRows int
}

// syncMode reports whether the spec's consistency mode is sync.
func syncMode(s *jobs.Spec) bool {
	return s.Training.Consistency.Mode == "" || s.Training.Consistency.Mode == paramserver.ModeSync
}

func (l *loopState) run(ctx context.Context) (*Result, error) {
	t, s := l.t, &l.t.spec.Spec
	l.lastCkptStep, l.evaluatedStep, l.gradStep, l.permEpoch, l.lossStep = -1, -1, -1, -1, -1
	if l.start.resumed {
		// The checkpoint resumed from is committed: never write it again.
		l.lastCkptStep, l.checkpoint, l.metrics = l.start.step, l.start.uri, l.start.metrics
		l.epochLoss, l.epochRows = l.start.lossSum, int(l.start.rows)
	}
	if err := l.openTelemetry(ctx); err != nil {
		return nil, err
	}
	l.calls = append(make([]uint64, 0, t.base), l.start.calls...)
	l.calls = append(l.calls, make([]uint64, max(0, t.base-len(l.calls)))...)[:t.base]
	if setter, ok := l.m.(gradientCallSetter); ok {
		if t.rank < len(l.calls) {
			setter.SetGradientCalls(l.calls[t.rank])
		}
	} else if l.start.resumed && t.rank < len(l.calls) && l.calls[t.rank] > 0 && usesDropout(s) {
		t.log.Warn("resumed with dropout, but the model cannot restore its dropout stream: masks differ from an uninterrupted run")
	}
	sync := syncMode(s)
	step := l.start.step
	for {
		for step < l.total {
			l.seek(step)
			err := l.runStep(ctx, step)
			if err == nil {
				step++
				continue
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
		l.seek(l.total)
		l.curStep = l.total
		_, err := l.client.Pull(ctx, l.total, l.params)
		if err == nil {
			break
		}
		if step, err = l.recover(ctx, l.total, fmt.Errorf("worker: pull final parameters: %w", err)); err != nil {
			return nil, err
		}
	}
	l.seek(l.total)
	l.curStep = l.total
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
			if err := pull(l.total); err != nil {
				return nil, fmt.Errorf("worker: report the last step: %w", err)
			}
		}
		return &Result{}, nil
	}
	if !sync {
		finalStep := l.total
		if bounded {
			finalStep += int64(s.Training.Consistency.Staleness)
		}
		if err := pull(finalStep); err != nil {
			return nil, fmt.Errorf("worker: pull final parameters: %w", err)
		}
	}
	if err := l.endEpoch(ctx, s.Training.Epochs); err != nil {
		return nil, err
	}
	final := l.metrics
	if l.ds.test != nil {
		tm, err := l.evaluate("test_", l.ds.test)
		if err != nil {
			return nil, err
		}
		final = mergeMetrics(final, tm)
		l.metrics = final
	}
	if l.lastCkptStep != l.total {
		err := t.withStaleRetry(ctx, l.client, func() error { return l.saveCheckpoint(ctx, l.total) })
		if err != nil {
			return nil, err
		}
	}
	started := time.Now()
	report, err := l.buildReport()
	if err != nil {
		return nil, err
	}
	reportJSON, card, err := l.reportFiles(report)
	if err != nil {
		return nil, err
	}
	reportURI, err := l.writeReport(ctx, reportJSON, card)
	if err != nil {
		return nil, err
	}
	gate := gateResult(s, report)
	t.log.Info("model report written", "uri", reportURI, "split", report.Split, "rows", report.Rows,
		"gate", gate != nil, "gate_passed", gate == nil || gate.Passed, "seconds", round4(time.Since(started).Seconds()))
	var exports []string
	if gate == nil || gate.Passed {
		if exports, err = l.export(ctx, reportJSON, card); err != nil {
			return nil, err
		}
	} else {
		t.log.Warn("export blocked by the audit gate", "reasons", gate.Reasons)
	}
	return &Result{Metrics: final, Checkpoint: l.checkpoint, Exports: exports, Progress: l.progress, Report: reportURI, Gate: gate}, nil
}

// seek sets the data position (epoch, pos) of global step k: steps advance global rows
// through each epoch's permutation from the run's start point.
func (l *loopState) seek(k int64) {
	n, global := int64(l.ds.train.N), int64(l.t.spec.Spec.Training.BatchSize*l.t.base)
	first := (n - l.start.pos + global - 1) / global // steps left in the start epoch
	d := k - l.start.step
	if d < first {
		l.epoch, l.pos = l.start.epoch, l.start.pos+d*global
		return
	}
	d -= first
	l.epoch, l.pos = l.start.epoch+1+int(d/l.stepsPerEpoch), (d%l.stepsPerEpoch)*global
}

// runStep trains global step k at the data position seek set: pull, the chief's
// evaluation at an epoch's start and its periodic checkpoint, gradient, push.
func (l *loopState) runStep(ctx context.Context, k int64) error {
	t, s := l.t, &l.t.spec.Spec
	if l.perm == nil || l.permEpoch != l.epoch {
		l.perm = data.ShardIndices(l.ds.train.N, 0, 1, l.epoch, s.Training.Seed)
		l.permEpoch = l.epoch
	}
	batch := s.Training.BatchSize
	n, global := int64(l.ds.train.N), int64(batch*t.base)
	stepStart := time.Now()
	l.curStep = k
	version, err := l.client.Pull(ctx, k, l.params)
	if err != nil {
		return fmt.Errorf("worker: pull parameters for step %d: %w", k, err)
	}
	// Evaluate the previous epoch (unless this run resumed right here, after it was
	// evaluated and checkpointed, or this step is trained again after a membership
	// change).
	if t.chief && l.pos == 0 && l.epoch > 0 && !(l.start.resumed && k == l.start.step) && k != l.evaluatedStep {
		if err := l.endEpoch(ctx, l.epoch); err != nil {
			return err
		}
		l.evaluatedStep = k
	}
	if t.chief && s.Checkpoint.EverySteps > 0 && k > 0 && k%int64(s.Checkpoint.EverySteps) == 0 && k != l.lastCkptStep {
		if err := l.saveCheckpoint(ctx, k); err != nil {
			return err
		}
	}
	lo, hi := sliceOf(l.pos, global, n, t.rank, t.world)
	rows := l.perm[lo:hi]
	if err := l.trainStep(ctx, k, version, rows); err != nil {
		return err
	}
	for r := range l.calls {
		if l.pos+int64(r*batch) < n {
			l.calls[r]++
		}
	}
	l.observeStep(time.Since(stepStart), len(rows))
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
	if t.chief && l.telemetry == nil {
		if err := l.openTelemetry(ctx); err != nil {
			return 0, err
		}
	}
	if next < l.start.step || next > l.total {
		return 0, fmt.Errorf("worker: after the membership change the shards are at step %d, outside this run's steps %d..%d", next, l.start.step, l.total)
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
		l.gradStep, l.gradSamples = pushStep, int64(len(rows))
		err = l.client.Push(ctx, pushStep, l.grad, int64(len(rows)))
		if err == nil {
			if step == l.lossStep {
				l.epochLoss -= l.lossSum
				l.epochRows -= l.lossRows
			}
			l.lossStep, l.lossSum, l.lossRows = step, loss*float64(len(rows)), len(rows)
			l.epochLoss += l.lossSum
			l.epochRows += l.lossRows
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

// gradient fills l.grad with the mean gradient of rows under l.params, computed in
// pieces of at most batchSize rows (the model's batch) weighted by their rows, and
// returns the mean loss.
func (l *loopState) gradient(step int64, rows []int) (float64, error) {
	if len(rows) == 0 {
		clear(l.grad)
		return 0, nil
	}
	batch, dim := l.t.spec.Spec.Training.BatchSize, l.ds.inputs
	var lossSum float64
	for off := 0; off < len(rows); off += batch {
		part := rows[off:min(off+batch, len(rows))]
		for i, r := range part {
			copy(l.xb[i*dim:(i+1)*dim], l.ds.train.X[r*dim:(r+1)*dim])
			l.yb[i] = l.ds.train.Y[r]
		}
		dst := l.grad
		if off > 0 {
			if l.gradPart == nil {
				l.gradPart = make([]float32, len(l.grad))
			}
			dst = l.gradPart
		}
		loss, err := l.m.Gradient(l.params, l.xb, l.yb, len(part), dst)
		if err != nil {
			return 0, fmt.Errorf("worker: gradient at step %d: %w", step, err)
		}
		if off > 0 {
			total := float32(off + len(part))
			a, b := float32(off)/total, float32(len(part))/total
			for i, g := range dst {
				l.grad[i] = a*l.grad[i] + b*g
			}
		}
		lossSum += loss * float64(len(part))
	}
	return lossSum / float64(len(rows)), nil
}

// endEpoch evaluates the parameters in l.params (those after `epochs` epochs) and
// reports progress and validation metrics.
func (l *loopState) endEpoch(ctx context.Context, epochs int) error {
	t := l.t
	vm, err := l.evaluate("val_", l.ds.val)
	if err != nil {
		return err
	}
	elapsed := time.Since(l.epochStart).Seconds()
	trainLoss := math.NaN()
	if l.epochRows > 0 {
		trainLoss = l.epochLoss / float64(l.epochRows)
	}
	l.progress = &cohortv1.JobProgress{
		Epoch:            int32(epochs),
		TotalEpochs:      int32(t.spec.Spec.Training.Epochs),
		Step:             l.curStep,
		TotalSteps:       l.total,
		SamplesPerSecond: float64(l.ds.train.N) / math.Max(elapsed, 1e-9),
		Loss:             trainLoss,
	}
	for k, v := range l.ds.baselines {
		vm[k] = v
	}
	l.metrics = vm
	args := []any{"epoch", epochs, "step", l.progress.Step, "train_loss", round4(trainLoss),
		"samples_per_s", math.Round(l.progress.SamplesPerSecond)}
	for _, k := range sortedKeys(vm) {
		args = append(args, k, round4(vm[k]))
	}
	t.log.Info("epoch done", args...)
	if err := l.recordEpoch(ctx, trainLoss, vm); err != nil {
		return err
	}
	t.cfg.Report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Progress: l.progress, Metrics: vm})
	l.epochLoss, l.epochRows, l.epochStart = 0, 0, time.Now()
	return nil
}

// evaluate computes the contract's metrics of ds under the current parameters.
func (l *loopState) evaluate(prefix string, ds *data.Dataset) (map[string]float64, error) {
	out := make([]float32, ds.N*l.m.OutputSize())
	if err := l.m.Predict(l.params, ds.X, ds.N, out); err != nil {
		return nil, fmt.Errorf("worker: evaluate %sset: %w", strings.TrimSuffix(prefix, "_"), err)
	}
	res := map[string]float64{}
	switch l.t.spec.Spec.Task {
	case jobs.TaskBinary:
		res["loss"] = metrics.BinaryLogLoss(out, ds.Y)
		res["accuracy"] = metrics.Accuracy(out, ds.Y, 0.5)
		res["auc"] = metrics.AUC(out, ds.Y)
	case jobs.TaskMulticlass:
		k := l.m.OutputSize()
		res["loss"] = metrics.CrossEntropy(out, k, ds.Y)
		res["accuracy"] = metrics.MulticlassAccuracy(out, k, ds.Y)
	case jobs.TaskRegression:
		mean, std := l.ds.labelMean, l.ds.labelStd
		if std == 0 {
			std = 1
		}
		var sq float64
		pred, target := make([]float32, ds.N), make([]float32, ds.N)
		for i := range ds.N {
			d := float64(out[i] - ds.Y[i])
			sq += d * d
			pred[i] = float32(float64(out[i])*std + mean)
			target[i] = float32(float64(ds.Y[i])*std + mean)
		}
		res["loss"] = sq / math.Max(float64(ds.N), 1)
		res["rmse"] = metrics.RMSE(pred, target)
		res["mae"] = metrics.MAE(pred, target)
		res["mape"] = metrics.MAPE(pred, target)
	}
	named := make(map[string]float64, len(res))
	for k, v := range res {
		named[prefix+k] = v
	}
	return named, nil
}

// saveCheckpoint has every shard write its slice at exactly `step`, then commits one
// manifest, written last and create-only, and reports its URI to the coordinator.
// saveCheckpoint commits a checkpoint of step. When storage is unavailable (S3 down or
// throttling past the client's own retries) the job pauses here, retrying with
// backoff, for up to StoragePause: in sync mode no worker can pass this step meanwhile,
// and nothing is ever committed half-written (objects first, the create-only manifest
// last). The coordinator sees the pause in the task's message.
func (l *loopState) saveCheckpoint(ctx context.Context, step int64) error {
	t := l.t
	pause := t.cfg.StoragePause
	if pause == 0 {
		pause = DefaultStoragePause
	}
	backoff := t.cfg.StorageRetryBackoff
	if backoff == 0 {
		backoff = time.Second
	}
	deadline := time.Now().Add(pause)
	for attempt := 1; ; attempt++ {
		err := l.trySaveCheckpoint(ctx, step)
		if err == nil {
			if attempt > 1 {
				t.log.Info("storage is back: checkpoint committed, job resumes", "step", step, "attempts", attempt)
				l.report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING})
			}
			return nil
		}
		if ctx.Err() != nil || !retryableStorageError(err) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		msg := fmt.Sprintf("paused at step %d: checkpoint storage unavailable (attempt %d, retrying in %s): %v", step, attempt, backoff, err)
		t.log.Warn("checkpoint failed; job paused until storage is back", "step", step, "attempt", attempt, "retry_in", backoff, "err", err)
		l.report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Message: msg})
		select {
		case <-ctx.Done():
			return fmt.Errorf("worker: checkpoint step %d: %w", step, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// report sends r to the coordinator when the trainer has a reporter.
func (l *loopState) report(r *cohortv1.TaskReport) {
	if l.t.cfg.Report != nil {
		l.t.cfg.Report(r)
	}
}

// retryableStorageError reports whether a failed checkpoint may succeed when tried
// again: anything but a verified-content problem (a corrupt object, a layout or
// generation mismatch) or a cancelled job.
func retryableStorageError(err error) bool {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, paramserver.ErrStaleGeneration), errors.Is(err, paramserver.ErrLayoutMismatch):
		return false
	}
	return true
}

// trySaveCheckpoint is one attempt of saveCheckpoint.
func (l *loopState) trySaveCheckpoint(ctx context.Context, step int64) error {
	t := l.t
	jobID := t.job.GetId()
	if err := l.saveModelCard(ctx); err != nil {
		return err
	}
	objs, err := l.client.Checkpoint(ctx, step, storage.CheckpointPrefix(jobID, step))
	if err != nil {
		return fmt.Errorf("worker: checkpoint step %d: %w", step, err)
	}
	man := &storage.Manifest{
		FormatVersion:   1,
		JobID:           jobID,
		Step:            step,
		Epoch:           l.epoch,
		StepInEpoch:     l.pos / int64(t.spec.Spec.Training.BatchSize*t.base),
		Generation:      t.gen,
		LayoutHash:      l.m.LayoutHash(),
		TotalParams:     uint64(l.m.NumParams()),
		Seed:            t.spec.Spec.Training.Seed,
		Metrics:         l.metrics,
		CreatedUnixNano: time.Now().UnixNano(),
		Workers:         t.base,
		BatchSize:       t.spec.Spec.Training.BatchSize,
		DataPosition:    l.pos,
		TrainLossSum:    l.epochLoss,
		TrainRows:       int64(l.epochRows),
		RNG:             &storage.RNGState{DropoutCalls: append([]uint64(nil), l.calls...)},
		Consistency:     t.spec.Spec.Training.Consistency.Mode,
	}
	for _, o := range objs {
		man.Objects = append(man.Objects, storage.ManifestObject{
			Shard: o.Shard, Key: o.Key, Size: o.Size, SHA256: o.SHA256, Offset: o.Offset, Length: o.Length,
		})
	}
	key, err := storage.WriteManifest(ctx, t.cfg.Store, man)
	if errors.Is(err, storage.ErrExists) {
		// An earlier attempt's create-only write went through but its answer was lost.
		// That manifest is this checkpoint if it is for this step and every object it
		// names verifies (the objects were just rewritten with the same content).
		key = storage.ManifestKey(jobID, step)
		prev, rerr := storage.ReadManifest(ctx, t.cfg.Store, key)
		if rerr == nil && prev.Step == step && prev.LayoutHash == man.LayoutHash {
			rerr = storage.VerifyManifestObjects(ctx, t.cfg.Store, prev)
		} else if rerr == nil {
			rerr = fmt.Errorf("manifest %s exists for step %d, layout %s", key, prev.Step, prev.LayoutHash)
		}
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("worker: commit checkpoint manifest for step %d: %w", step, err)
	}
	l.checkpoint = t.cfg.Store.URI(key)
	l.lastCkptStep = step
	t.log.Info("checkpoint committed", "step", step, "manifest", l.checkpoint)
	t.cfg.Report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Checkpoint: l.checkpoint, Generation: t.gen})
	return l.retain(ctx, step)
}

// retain applies checkpoint retention (storage.CollectCheckpoints): it keeps
// checkpoint.keep committed checkpoints and never deletes the one just committed, the
// one the job record pointed at when this run started, nor the one committed before
// the newest (the record may still point at it until the coordinator applies the
// report). A failed collection is logged, not fatal: it only costs space.
func (l *loopState) retain(ctx context.Context, newest int64) error {
	t := l.t
	jobID := t.job.GetId()
	protect := []string{storage.ManifestKey(jobID, newest)}
	if l.prevCkptKey != "" {
		protect = append(protect, l.prevCkptKey)
	}
	if uri := t.job.GetCheckpoint(); uri != "" {
		if key, err := storage.KeyOfURI(t.cfg.Store, uri); err == nil {
			protect = append(protect, key)
		}
	}
	l.prevCkptKey = storage.ManifestKey(jobID, newest)
	grace := t.cfg.CheckpointGrace
	if grace == 0 {
		grace = DefaultCheckpointGrace
	}
	res, err := storage.CollectCheckpoints(ctx, t.cfg.Store, storage.GCConfig{
		JobID: jobID, Keep: t.spec.Spec.Checkpoint.Keep, Protect: protect, Grace: grace, Logger: t.log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("worker: checkpoint retention: %w", err)
		}
		t.log.Warn("checkpoint retention incomplete", "err", err)
	}
	if len(res.Deleted)+res.Orphans+res.AbortedUploads > 0 {
		t.log.Info("checkpoint retention", "kept", len(res.Kept), "deleted", len(res.Deleted),
			"orphans", res.Orphans, "aborted_uploads", res.AbortedUploads)
	}
	return nil
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
