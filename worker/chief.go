package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/metrics"
	"github.com/cohort-dev/cohort/worker/model"
)

// chief does the duties of worker rank 0 that the training loop hands it: it evaluates
// every epoch and reports progress and metrics, commits checkpoints and applies their
// retention, keeps the TensorBoard events and the job's gauges (telemetry.go), and at
// the end writes the model report (report.go) and exports the model (export.go).
//
// Every rank's loop keeps a chief, which records what the job's record holds (the
// committed checkpoint, the last metrics) from the run's start point on, but only the
// trainer that is rank 0 (Trainer.chief) calls its duties: the rank that becomes rank 0
// after a membership change takes over with that record.
type chief struct {
	t      *Trainer
	m      model.Model
	ds     *datasets
	client *paramserver.Client
	// params is the loop's parameter vector, pulled in place for every step.
	params []float32
	// total is the run's last step.
	total int64

	// metrics and progress are the last evaluation's; evaluatedStep the step at whose
	// start the chief last evaluated (a step trained again after a membership change
	// is not evaluated twice).
	metrics       map[string]float64
	progress      *cohortv1.JobProgress
	evaluatedStep int64
	// checkpoint is the URI of the last committed checkpoint's manifest, of step
	// lastCkptStep (-1: none); unrecorded the checkpoints this run committed, oldest
	// first, from the one the job record was last seen at (or from the run's first
	// when it has not been seen at one of them): retention keeps them all (retain).
	checkpoint   string
	lastCkptStep int64
	// skippedCkpts counts the optional checkpoints skipped for a full storage since the
	// last commit (optionalCheckpoint).
	skippedCkpts int
	unrecorded   []committedCheckpoint
	// telemetry is the TensorBoard event file, opened once the trainer is rank 0.
	telemetry *jobTelemetry
	// interim is the last in-epoch progress report (progress.go).
	interim interimState
	// traffic is the client's traffic at the last progress report (compression.go).
	traffic trafficMark

	// early is spec.training.earlyStopping's state after the last epoch evaluated;
	// pendingStop a decision to stop not stored yet, stop the job's stored decision
	// (earlystop.go).
	early       storage.EarlyStoppingState
	pendingStop *stopRecord
	stop        *stopRecord
	// exported names the checkpoint finish exports (best.go); its parameters are in
	// params from then on.
	exported *cohortv1.ExportedFrom
	// threshold is a binary task's decision threshold: spec.export.threshold's value
	// (else jobs.DefaultThreshold) until finish fits spec.export.threshold.optimize on
	// the validation split.
	threshold float64
	// undefined maps a metric left out of the metrics to the reason (evaluate).
	undefined map[string]string
}

// newChief returns the chief of a run that starts at start; a run that resumes from
// the job's checkpoint starts with its step, URI and metrics, and never writes it again.
func newChief(t *Trainer, m model.Model, ds *datasets, client *paramserver.Client, params []float32, total int64, start resumePoint) *chief {
	c := &chief{t: t, m: m, ds: ds, client: client, params: params, total: total, evaluatedStep: -1, lastCkptStep: -1,
		threshold: decisionThreshold(&t.spec.Spec)}
	if start.resumed {
		c.lastCkptStep, c.checkpoint, c.metrics = start.step, start.uri, start.metrics
		if start.early != nil {
			c.early = *start.early
		}
	}
	return c
}

// evaluateEpoch evaluates and reports the epoch that ended before step k (epochs
// epochs done) and takes it into the early-stopping state, unless the chief already did
// at k, and starts loss's next epoch.
func (c *chief) evaluateEpoch(ctx context.Context, epochs int, k int64, loss *epochLoss) error {
	if k == c.evaluatedStep {
		return nil
	}
	if err := c.endEpoch(ctx, epochs, k, loss); err != nil {
		return err
	}
	c.evaluatedStep = k
	return c.observeEpoch(ctx, epochs, k)
}

// endEpoch evaluates the parameters (those after `epochs` epochs, pulled for step),
// reports progress, the epoch's training loss and the validation metrics, and starts
// loss's next epoch.
func (c *chief) endEpoch(ctx context.Context, epochs int, step int64, loss *epochLoss) error {
	t := c.t
	vm, err := c.evaluate("val_", c.ds.val)
	if err != nil {
		return err
	}
	elapsed := time.Since(loss.started).Seconds()
	trainLoss := loss.mean()
	c.progress = &cohortv1.JobProgress{
		Epoch:            int32(epochs),
		TotalEpochs:      int32(t.spec.Spec.Training.Epochs),
		Step:             step,
		TotalSteps:       c.total,
		SamplesPerSecond: float64(c.ds.train.N) / math.Max(elapsed, 1e-9),
		Loss:             trainLoss,
		TimeUnixNano:     time.Now().UnixNano(),
	}
	for k, v := range c.ds.baselines {
		vm[k] = v
	}
	c.metrics = vm
	args := []any{"epoch", epochs, "step", c.progress.Step, "train_loss", round4(trainLoss),
		"samples_per_s", math.Round(c.progress.SamplesPerSecond)}
	for _, k := range sortedKeys(vm) {
		args = append(args, k, round4(vm[k]))
	}
	t.log.Info("epoch done", args...)
	// The epoch end closes the last reporting interval too, so the loss curve has a
	// point at every epoch end, however short the epoch (the epoch's samples per second
	// stay those of the whole epoch). Before recordEpoch, which stores the event files.
	sps := c.progress.SamplesPerSecond
	c.markInterval(c.progress, loss, time.Unix(0, c.progress.TimeUnixNano))
	c.progress.SamplesPerSecond = sps
	if c.progress.IntervalRows > 0 {
		t.cfg.Metrics.observeInterim(t.job.GetId(), c.progress)
		c.recordInterim(c.progress)
	}
	if err := c.recordEpoch(ctx, trainLoss, vm); err != nil {
		return err
	}
	t.cfg.Report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Progress: c.progress, Metrics: vm})
	loss.reset()
	return nil
}

// evaluate computes the contract's metrics of ds under the current parameters. A
// metric that is undefined on ds (AUC of a split holding one class, MAPE with every
// target zero) is left out, never NaN, and its reason is kept in c.undefined.
func (c *chief) evaluate(prefix string, ds *data.Dataset) (map[string]float64, error) {
	out := make([]float32, ds.N*c.m.OutputSize())
	if err := c.m.Predict(c.params, ds.X, ds.N, out); err != nil {
		return nil, fmt.Errorf("worker: evaluate %sset: %w", strings.TrimSuffix(prefix, "_"), err)
	}
	split := strings.TrimSuffix(prefix, "_")
	if split == "val" {
		split = "validation"
	}
	res := map[string]float64{}
	why := map[string]string{}
	switch c.t.spec.Spec.Task {
	case jobs.TaskBinary:
		res["loss"] = metrics.BinaryLogLoss(out, ds.Y)
		res["accuracy"] = metrics.Accuracy(out, ds.Y, float32(c.threshold))
		res["auc"] = metrics.AUC(out, ds.Y)
		conf := metrics.ConfusionAt(out, ds.Y, c.threshold)
		res["precision"], res["recall"], res["f1"] = conf.Precision(), conf.Recall(), conf.F1()
		pos, neg := conf.TP+conf.FN, conf.FP+conf.TN
		if pos == 0 || neg == 0 {
			why["auc"] = fmt.Sprintf("the %s split holds one class only (%d positive, %d negative rows)", split, pos, neg)
			why["recall"] = fmt.Sprintf("the %s split has no positive rows", split)
		}
		why["precision"] = fmt.Sprintf("no %s row scores at or above the threshold %g", split, c.threshold)
		why["f1"] = fmt.Sprintf("the %s split has no positive rows and none is predicted positive", split)
	case jobs.TaskMulticlass:
		k := c.m.OutputSize()
		res["loss"] = metrics.CrossEntropy(out, k, ds.Y)
		res["accuracy"] = metrics.MulticlassAccuracy(out, k, ds.Y)
	case jobs.TaskRegression:
		var sq float64
		pred, target := make([]float32, ds.N), make([]float32, ds.N)
		for i := range ds.N {
			d := float64(out[i] - ds.Y[i])
			sq += d * d
			pred[i] = float32(c.ds.unscale(float64(out[i])))
			target[i] = float32(c.ds.unscale(float64(ds.Y[i])))
		}
		res["loss"] = sq / math.Max(float64(ds.N), 1)
		if ds.Residual {
			// The model predicts the residual over the seasonal-naive forecast
			// (sequence_csv.baseline: seasonalNaive): its forecast adds them.
			for i := range ds.N {
				pred[i] += float32(ds.Naive[i])
				target[i] += float32(ds.Naive[i])
			}
		}
		res["rmse"] = metrics.RMSE(pred, target)
		res["mae"] = metrics.MAE(pred, target)
		mape, excluded := metrics.MAPEExcluded(pred, target)
		res["mape"] = mape
		// MAPE leaves out the rows whose target is zero; the count says how many.
		res["mape_excluded_rows"] = float64(excluded)
		res["r2"] = metrics.R2(pred, target)
		why["mape"] = fmt.Sprintf("every target of the %s split is zero", split)
		why["r2"] = fmt.Sprintf("the target is constant over the %s split", split)
		c.seasonalNaiveMetrics(res, why, ds, pred, target)
	}
	named := make(map[string]float64, len(res))
	for k, v := range res {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			reason := why[k]
			if reason == "" {
				reason = fmt.Sprintf("the %s split has no rows to compute it on", split)
			}
			c.markUndefined(prefix+k, reason)
			continue
		}
		named[prefix+k] = v
	}
	return named, nil
}

// markUndefined records why a metric is left out, logging it the first time.
func (c *chief) markUndefined(name, reason string) {
	if c.undefined == nil {
		c.undefined = map[string]string{}
	}
	if c.undefined[name] != reason {
		c.t.log.Warn("metric undefined; left out of the metrics", "metric", name, "reason", reason)
	}
	c.undefined[name] = reason
}

// periodicCheckpoint commits the checkpoint of step k when checkpoint.everySteps asks
// for one there and it is not committed yet; at is the position of k, loss the epoch's
// running training loss.
func (c *chief) periodicCheckpoint(ctx context.Context, k int64, at position, loss *epochLoss) error {
	every := int64(c.t.spec.Spec.Checkpoint.EverySteps)
	if every <= 0 || k <= 0 || k%every != 0 || k == c.lastCkptStep {
		return nil
	}
	return c.optionalCheckpoint(ctx, k, at, loss)
}

// optionalCheckpoint commits the checkpoint of step k (a periodic or an epoch one),
// except when its storage is full (a shard's store or the manifest's: no space left,
// storage.IsFull). A full disk lasts until someone frees space, so waiting it out (as
// for an outage) would stop training for nothing: the checkpoint is skipped, nothing
// of it is committed, the last committed checkpoint stays the job's (retention runs
// only after a commit, so it is never deleted for a newer one that failed), and
// training goes on. The task's message says so until a later checkpoint commits, and
// the parameter server counts it (cohort_ps_checkpoint_failures_total). The final
// checkpoint is not optional: it waits for space as for an outage, then fails the job
// with the reason.
func (c *chief) optionalCheckpoint(ctx context.Context, k int64, at position, loss *epochLoss) error {
	err := c.saveCheckpoint(ctx, k, at, loss, true)
	if err == nil || !checkpointStorageFull(err) {
		return err
	}
	c.skippedCkpts++
	last := "none yet: a lost node now restarts the job from its start"
	if c.checkpoint != "" {
		last = fmt.Sprintf("step %d, %s", c.lastCkptStep, c.checkpoint)
	}
	msg := fmt.Sprintf("checkpoint at step %d not written: storage full (%v); training goes on; last committed checkpoint: %s; %d checkpoint(s) skipped, the next is tried as scheduled",
		k, err, last, c.skippedCkpts)
	c.t.log.Error("checkpoint skipped: storage full; training goes on", "step", k, "last_committed_step", c.lastCkptStep,
		"last_committed", c.checkpoint, "skipped", c.skippedCkpts, "err", err)
	c.report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Message: msg})
	return nil
}

// checkpointStorageFull reports whether a failed checkpoint found its storage full: a
// shard's store (paramserver.ErrStorageFull) or the manifest's.
func checkpointStorageFull(err error) bool {
	return errors.Is(err, paramserver.ErrStorageFull) || storage.IsFull(err)
}

// saveCheckpoint commits a checkpoint of step (at position at, with the epoch's
// running training loss): every shard writes its slice at exactly step, then one
// manifest is written last, create-only, and its URI is reported to the coordinator.
// When storage is unavailable (S3 down or throttling past the client's own retries)
// the job pauses here, retrying with backoff, for up to StoragePause: in sync mode no
// worker can pass this step meanwhile, and nothing is ever committed half-written. The
// coordinator sees the pause in the task's message. With skipWhenFull a full storage
// (checkpointStorageFull) fails at once instead (see optionalCheckpoint).
func (c *chief) saveCheckpoint(ctx context.Context, step int64, at position, loss *epochLoss, skipWhenFull bool) error {
	t := c.t
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
		err := c.trySaveCheckpoint(ctx, step, at, loss)
		if err == nil {
			if c.skippedCkpts > 0 {
				t.log.Info("checkpoint committed after skipped ones: storage has room again", "step", step, "skipped", c.skippedCkpts)
				c.skippedCkpts = 0
			}
			if attempt > 1 {
				t.log.Info("storage is back: checkpoint committed, job resumes", "step", step, "attempts", attempt)
				c.report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING})
			}
			return nil
		}
		if ctx.Err() != nil || !retryableStorageError(err) || time.Now().Add(backoff).After(deadline) ||
			(skipWhenFull && checkpointStorageFull(err)) {
			return err
		}
		msg := fmt.Sprintf("paused at step %d: checkpoint storage unavailable (attempt %d, retrying in %s): %v", step, attempt, backoff, err)
		t.log.Warn("checkpoint failed; job paused until storage is back", "step", step, "attempt", attempt, "retry_in", backoff, "err", err)
		c.report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Message: msg})
		select {
		case <-ctx.Done():
			return fmt.Errorf("worker: checkpoint step %d: %w", step, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// adoptExistingManifest decides about the manifest found at man's step when man's
// create-only write failed because one exists, and returns the key of the committed
// checkpoint:
//   - an earlier attempt's write went through but its answer was lost: that manifest is
//     this checkpoint if it is for this step and every object it names verifies (the
//     objects were just rewritten with the same content);
//   - a chief of an older generation, paused while it committed this step and woken
//     after the job was requeued from an earlier checkpoint, wrote it after this run
//     discarded what the record did not point at: its objects were just overwritten by
//     this run, so it no longer verifies and no record can point at it. It is deleted
//     and man written in its place.
//
// Anything else is an error naming the manifest.
func (c *chief) adoptExistingManifest(ctx context.Context, man *storage.Manifest) (string, error) {
	t := c.t
	key := storage.ManifestKey(man.JobID, man.Step)
	prev, err := storage.ReadManifest(ctx, t.cfg.Store, key)
	if err != nil {
		return "", err
	}
	if prev.Step != man.Step || prev.LayoutHash != man.LayoutHash {
		return "", fmt.Errorf("manifest %s exists for step %d, layout %s", key, prev.Step, prev.LayoutHash)
	}
	verr := storage.VerifyManifestObjects(ctx, t.cfg.Store, prev)
	if verr == nil {
		return key, nil
	}
	if prev.Generation >= man.Generation {
		return "", verr
	}
	t.log.Warn("replacing a checkpoint manifest a chief of an older generation left behind", "step", man.Step,
		"manifest", key, "its_generation", prev.Generation, "generation", man.Generation, "why", verr)
	if err := t.cfg.Store.Delete(ctx, key); err != nil {
		return "", fmt.Errorf("delete the stale manifest %s of generation %d: %w", key, prev.Generation, err)
	}
	return storage.WriteManifest(ctx, t.cfg.Store, man)
}

// report sends r to the coordinator when the trainer has a reporter.
func (c *chief) report(r *cohortv1.TaskReport) {
	if c.t.cfg.Report != nil {
		c.t.cfg.Report(r)
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
func (c *chief) trySaveCheckpoint(ctx context.Context, step int64, at position, loss *epochLoss) error {
	t := c.t
	jobID := t.job.GetId()
	if err := c.saveModelCard(ctx); err != nil {
		return err
	}
	objs, err := c.client.Checkpoint(ctx, step, storage.CheckpointPrefix(jobID, step))
	if err != nil {
		return fmt.Errorf("worker: checkpoint step %d: %w", step, err)
	}
	man := &storage.Manifest{
		FormatVersion:   1,
		JobID:           jobID,
		Step:            step,
		Epoch:           at.epoch,
		StepInEpoch:     at.pos / int64(t.spec.Spec.Training.BatchSize*t.base),
		Generation:      t.gen,
		LayoutHash:      c.m.LayoutHash(),
		TotalParams:     uint64(c.m.NumParams()),
		Seed:            t.spec.Spec.Training.Seed,
		Metrics:         c.metrics,
		CreatedUnixNano: time.Now().UnixNano(),
		Workers:         t.base,
		BatchSize:       t.spec.Spec.Training.BatchSize,
		DataPosition:    at.pos,
		TrainLossSum:    loss.sum,
		TrainRows:       int64(loss.rows),
		RNG:             &storage.RNGState{DropoutCalls: append([]uint64(nil), at.calls...)},
		Consistency:     t.spec.Spec.Training.Consistency.Mode,
		Score:           c.score(step, at.epoch),
	}
	if t.spec.Spec.Training.EarlyStopping != nil {
		st := c.early
		man.EarlyStopping = &st
	}
	for _, o := range objs {
		man.Objects = append(man.Objects, storage.ManifestObject{
			Shard: o.Shard, Key: o.Key, Size: o.Size, SHA256: o.SHA256, Offset: o.Offset, Length: o.Length,
		})
	}
	key, err := storage.WriteManifest(ctx, t.cfg.Store, man)
	if errors.Is(err, storage.ErrExists) {
		key, err = c.adoptExistingManifest(ctx, man)
	}
	if err != nil {
		return fmt.Errorf("worker: commit checkpoint manifest for step %d: %w", step, err)
	}
	c.checkpoint = t.cfg.Store.URI(key)
	c.lastCkptStep = step
	if man.Score != nil {
		t.log.Info("checkpoint committed", "step", step, "manifest", c.checkpoint, "score", man.Score.Metric, "value", round4(man.Score.Value))
	} else {
		t.log.Info("checkpoint committed", "step", step, "manifest", c.checkpoint)
	}
	t.cfg.Report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Checkpoint: c.checkpoint, Generation: t.gen,
		Progress: c.checkpointProgress(step, at, loss)})
	return c.retain(ctx, step)
}

// retain applies checkpoint retention (storage.CollectCheckpoints): it keeps
// checkpoint.keep committed checkpoints and the checkpoint.keepBest best-scored ones
// (ranked from the manifests in the store, so a resumed run keeps the same ones), and
// never deletes one the job record points at or may yet point at: the one the record
// pointed at when this run started, the one it was last seen at (TrainerConfig.Record)
// and every one this run committed after that. Reports reach the coordinator late or
// never (a slow link, a paused process), and a requeue restarts from whatever the
// record holds then, so a checkpoint is released only once the record is seen past
// it. Without a Record the chief takes each report as recorded once the next
// checkpoint is committed (the newest two are kept). Nothing at or after the oldest of
// these is deleted (storage.GCConfig.KeepFromStep), so a chief that was paused and wakes
// after its job was requeued cannot delete what the new run committed meanwhile. A
// failed collection is logged, not fatal: it only costs space.
func (c *chief) retain(ctx context.Context, newest int64) error {
	t := c.t
	jobID := t.job.GetId()
	c.unrecorded = append(c.unrecorded, committedCheckpoint{step: newest, key: storage.ManifestKey(jobID, newest)})
	var protect []string
	for _, uri := range []string{t.job.GetCheckpoint(), c.recorded()} {
		if uri == "" {
			continue
		}
		key, err := storage.KeyOfURI(t.cfg.Store, uri)
		if err != nil {
			continue
		}
		protect = append(protect, key)
		if i := slices.IndexFunc(c.unrecorded, func(ck committedCheckpoint) bool { return ck.key == key }); i >= 0 {
			c.unrecorded = c.unrecorded[i:]
		}
	}
	if t.cfg.Record == nil && len(c.unrecorded) > 2 {
		c.unrecorded = c.unrecorded[len(c.unrecorded)-2:]
	}
	for _, ck := range c.unrecorded {
		protect = append(protect, ck.key)
	}
	if keep := t.spec.Spec.Checkpoint.Keep; len(c.unrecorded) > keep+1 {
		t.log.Info("retention keeps checkpoints the job record has not reached yet", "recorded", c.recorded(),
			"unrecorded", len(c.unrecorded), "keep", keep)
	}
	grace := t.cfg.CheckpointGrace
	if grace == 0 {
		grace = DefaultCheckpointGrace
	}
	res, err := storage.CollectCheckpoints(ctx, t.cfg.Store, storage.GCConfig{
		JobID: jobID, Keep: t.spec.Spec.Checkpoint.Keep, KeepBest: t.spec.Spec.Checkpoint.KeepBest,
		Protect: protect, KeepFromStep: c.unrecorded[0].step, Grace: grace, Logger: t.log,
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

// committedCheckpoint is a checkpoint the chief committed: its step and manifest key.
type committedCheckpoint struct {
	step int64
	key  string
}

// recorded returns the checkpoint URI the job record was last seen at ("": unknown).
func (c *chief) recorded() string {
	if c.t.cfg.Record == nil {
		return ""
	}
	return c.t.cfg.Record.Get()
}

// finish does the chief's duties once every step is trained and the final parameters
// are pulled (at is the position after the last step, loss the last epoch's training
// loss): the last epoch's evaluation and its checkpoint (unless early stopping ended
// training, whose last checkpoint is the one of the stop epoch), then, on the best
// checkpoint (best.go) read back from storage, the validation and test metrics, the
// model report and, when its gate lets it, the export. It returns the run's result.
func (c *chief) finish(ctx context.Context, at position, loss *epochLoss) (*Result, error) {
	t, s := c.t, &c.t.spec.Spec
	if c.stop == nil {
		if err := c.endEpoch(ctx, s.Training.Epochs, c.total, loss); err != nil {
			return nil, err
		}
		c.evaluatedStep = c.total
		if err := c.observeEpoch(ctx, s.Training.Epochs, c.total); err != nil {
			return nil, err
		}
		if c.lastCkptStep != c.total {
			err := t.withStaleRetry(ctx, c.client, func() error { return c.saveCheckpoint(ctx, c.total, at, loss, false) })
			if err != nil {
				return nil, err
			}
		}
	} else if c.lastCkptStep < c.stop.Step {
		// Another chief committed the stop epoch's checkpoint (before a membership
		// change): it is the run's latest.
		key := storage.ManifestKey(t.job.GetId(), c.stop.Step)
		if _, err := storage.ReadManifest(ctx, t.cfg.Store, key); err == nil {
			c.checkpoint, c.lastCkptStep = t.cfg.Store.URI(key), c.stop.Step
		}
	}
	man, uri, err := c.exportSource(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.loadCheckpoint(ctx, man, c.params); err != nil {
		return nil, err
	}
	c.exported = exportedFrom(man, uri)
	if err := c.fitThreshold(); err != nil {
		return nil, err
	}
	final, err := c.evaluate("val_", c.ds.val)
	if err != nil {
		return nil, err
	}
	for k, v := range c.ds.baselines {
		final[k] = v
	}
	if s.Task == jobs.TaskBinary {
		final["threshold"] = c.threshold
	}
	if c.ds.test != nil {
		tm, err := c.evaluate("test_", c.ds.test)
		if err != nil {
			return nil, err
		}
		final = mergeMetrics(final, tm)
	}
	c.metrics = final
	args := []any{"checkpoint", uri, "step", man.Step, "epoch", c.exported.Epoch}
	if c.exported.Metric != "" {
		args = append(args, "score", c.exported.Metric, "value", round4(c.exported.Score))
	}
	if c.stop != nil {
		args = append(args, "stopped_after_epoch", c.stop.Epoch)
	}
	t.log.Info("exporting the best checkpoint", args...)
	started := time.Now()
	report, err := c.buildReport()
	if err != nil {
		return nil, err
	}
	reportJSON, card, err := c.reportFiles(report)
	if err != nil {
		return nil, err
	}
	reportURI, err := c.writeReport(ctx, reportJSON, card)
	if err != nil {
		return nil, err
	}
	gate := gateResult(s, report)
	t.log.Info("model report written", "uri", reportURI, "split", report.Split, "rows", report.Rows,
		"gate", gate != nil, "gate_passed", gate == nil || gate.Passed, "seconds", round4(time.Since(started).Seconds()))
	var exports []string
	if gate == nil || gate.Passed {
		if exports, err = c.export(ctx, reportJSON, card); err != nil {
			return nil, err
		}
	} else {
		t.log.Warn("export blocked by the audit gate", "reasons", gate.Reasons)
	}
	return &Result{Metrics: final, Checkpoint: c.checkpoint, Exports: exports, Progress: c.progress, Report: reportURI, Gate: gate,
		ExportedFrom: c.exported, EarlyStop: c.stop.proto(), Undefined: c.finalUndefined(final)}, nil
}
