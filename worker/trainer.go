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
}

// Trainer is one worker's data-parallel training loop. Worker rank 0 is the chief: it
// evaluates, checkpoints and exports; every rank computes gradients on its data shard.
type Trainer struct {
	cfg   TrainerConfig
	log   *slog.Logger
	job   *cohortv1.Job
	spec  *jobs.TrainingJob
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
	world := int(a.GetJob().GetWorkerCount())
	rank := int(a.GetAllocation().GetIndex())
	if world < 1 || rank < 0 || rank >= world {
		return nil, fmt.Errorf("worker: rank %d outside worker count %d", rank, world)
	}
	if want := int(a.GetJob().GetShardCount()); len(a.GetShardAddresses()) != want {
		return nil, fmt.Errorf("worker: %d shard addresses for %d shards", len(a.GetShardAddresses()), want)
	}
	return &Trainer{cfg: cfg, log: cfg.Logger, job: a.GetJob(), spec: spec, rank: rank, world: world, chief: rank == 0}, nil
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
	client, err := paramserver.NewClient(paramserver.ClientConfig{
		Addresses:   t.cfg.Assignment.GetShardAddresses(),
		JobID:       t.job.GetId(),
		Generation:  t.cfg.Assignment.GetAllocation().GetGeneration(),
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
	if err := client.Init(ctx, m.InitParams(s.Training.Seed)); err != nil {
		return nil, fmt.Errorf("worker: init parameter shards: %w", err)
	}

	// Step s of an epoch trains on the global batch perm[s*G, (s+1)*G) with
	// G = world*batchSize, rank r taking the r-th slice of batchSize rows. The sample-
	// weighted mean of the ranks' gradients is then exactly the gradient of that global
	// batch, so N workers follow the same trajectory as one worker with an N-times batch.
	n, batch := ds.train.N, s.Training.BatchSize
	global := batch * t.world
	stepsPerEpoch := int64((n + global - 1) / global)
	if stepsPerEpoch == 0 {
		return nil, fmt.Errorf("data.train: no training rows after the validation split")
	}
	start, err := t.startPoint(ctx, client, m, n, global)
	if err != nil {
		return nil, err
	}
	total := start.step + remainingSteps(n, global, s.Training.Epochs, start.epoch, start.pos)
	t.log.Info("training", "train_rows", n, "val_rows", ds.val.N, "features", ds.inputs,
		"params", m.NumParams(), "steps_per_epoch", stepsPerEpoch, "total_steps", total,
		"start_step", start.step, "start_epoch", start.epoch, "start_row", start.pos)

	loop := &loopState{
		t: t, m: m, ds: ds, client: client,
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
}

func (l *loopState) run(ctx context.Context) (*Result, error) {
	t, s := l.t, &l.t.spec.Spec
	batch := s.Training.BatchSize
	dim := l.ds.inputs
	l.lastCkptStep = -1
	if l.start.resumed {
		// The checkpoint resumed from is committed: never write it again.
		l.lastCkptStep, l.checkpoint, l.metrics = l.start.step, l.start.uri, l.start.metrics
		l.epochLoss, l.epochRows = l.start.lossSum, int(l.start.rows)
	}
	if err := l.openTelemetry(ctx); err != nil {
		return nil, err
	}
	n, global := int64(l.ds.train.N), int64(batch*t.world)
	l.calls = append(make([]uint64, 0, t.world), l.start.calls...)
	l.calls = append(l.calls, make([]uint64, max(0, t.world-len(l.calls)))...)[:t.world]
	if setter, ok := l.m.(gradientCallSetter); ok {
		setter.SetGradientCalls(l.calls[t.rank])
	} else if l.start.resumed && l.calls[t.rank] > 0 && usesDropout(s) {
		t.log.Warn("resumed with dropout, but the model cannot restore its dropout stream: masks differ from an uninterrupted run")
	}
	step := l.start.step
	for l.epoch, l.pos = l.start.epoch, l.start.pos; l.epoch < s.Training.Epochs; l.epoch, l.pos = l.epoch+1, 0 {
		l.perm = data.ShardIndices(l.ds.train.N, 0, 1, l.epoch, s.Training.Seed)
		for ; l.pos < n; l.pos, step = l.pos+global, step+1 {
			stepStart := time.Now()
			l.curStep = step
			version, err := l.client.Pull(ctx, step, l.params)
			if err != nil {
				return nil, fmt.Errorf("worker: pull parameters for step %d: %w", step, err)
			}
			// Evaluate the previous epoch (unless this run resumed right here, after it
			// was evaluated and checkpointed).
			if t.chief && l.pos == 0 && l.epoch > 0 && !(l.start.resumed && step == l.start.step) {
				if err := l.endEpoch(ctx, l.epoch); err != nil {
					return nil, err
				}
			}
			if t.chief && s.Checkpoint.EverySteps > 0 && step > 0 && step%int64(s.Checkpoint.EverySteps) == 0 && step != l.lastCkptStep {
				if err := l.saveCheckpoint(ctx, step); err != nil {
					return nil, err
				}
			}
			for r := range l.calls {
				if l.pos+int64(r*batch) < n {
					l.calls[r]++
				}
			}
			lo := min(int(l.pos)+t.rank*batch, len(l.perm))
			hi := min(lo+batch, len(l.perm))
			rows := l.perm[lo:hi]
			for i, r := range rows {
				copy(l.xb[i*dim:(i+1)*dim], l.ds.train.X[r*dim:(r+1)*dim])
				l.yb[i] = l.ds.train.Y[r]
			}
			if err := l.trainStep(ctx, step, version, rows); err != nil {
				return nil, err
			}
			l.observeStep(time.Since(stepStart), len(rows))
		}
	}
	if step != l.total {
		return nil, fmt.Errorf("worker: internal error: trained to step %d, expected %d", step, l.total)
	}
	l.curStep = l.total
	// In bounded mode a pull carries the worker's own step (its clock). A worker that
	// is done says so with a pull for the total, and the chief's final pull, for
	// total+staleness, returns only once every worker has said so: the final model
	// holds every worker's last gradient.
	bounded := s.Training.Consistency.Mode == paramserver.ModeBounded
	if !t.chief {
		if bounded {
			if _, err := l.client.Pull(ctx, l.total, l.params); err != nil {
				return nil, fmt.Errorf("worker: report the last step: %w", err)
			}
		}
		return &Result{}, nil
	}
	finalStep := l.total
	if bounded {
		finalStep += int64(s.Training.Consistency.Staleness)
	}
	if _, err := l.client.Pull(ctx, finalStep, l.params); err != nil {
		return nil, fmt.Errorf("worker: pull final parameters: %w", err)
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
		if err := l.saveCheckpoint(ctx, l.total); err != nil {
			return nil, err
		}
	}
	exports, err := l.export(ctx)
	if err != nil {
		return nil, err
	}
	return &Result{Metrics: final, Checkpoint: l.checkpoint, Exports: exports, Progress: l.progress}, nil
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
		loss := 0.0
		if len(rows) > 0 {
			var err error
			if loss, err = l.m.Gradient(l.params, l.xb, l.yb, len(rows), l.grad); err != nil {
				return fmt.Errorf("worker: gradient at step %d: %w", step, err)
			}
		} else {
			clear(l.grad)
		}
		err := l.client.Push(ctx, pushStep, l.grad, int64(len(rows)))
		if err == nil {
			l.epochLoss += loss * float64(len(rows))
			l.epochRows += len(rows)
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
		StepInEpoch:     l.pos / int64(t.spec.Spec.Training.BatchSize*t.world),
		Generation:      t.cfg.Assignment.GetAllocation().GetGeneration(),
		LayoutHash:      l.m.LayoutHash(),
		TotalParams:     uint64(l.m.NumParams()),
		Seed:            t.spec.Spec.Training.Seed,
		Metrics:         l.metrics,
		CreatedUnixNano: time.Now().UnixNano(),
		Workers:         t.world,
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
	t.cfg.Report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Checkpoint: l.checkpoint})
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
