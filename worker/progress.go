package worker

import (
	"math"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// DefaultProgressInterval is the default TrainerConfig.ProgressInterval.
const DefaultProgressInterval = 2 * time.Second

// minProgressGap is the least time between two in-epoch reports, whatever
// ProgressEverySteps asks, so that a fast job does not flood the coordinator; only a
// negative ProgressInterval (steps only) goes without it.
const minProgressGap = 100 * time.Millisecond

// interimState is what the chief remembers of its last in-epoch progress report: when
// and at which step it was sent, and the epoch's running loss sum and rows then (the
// next report's interval loss is the difference).
type interimState struct {
	at   time.Time
	step int64
	sum  float64
	rows int
}

// progressDue reports whether an in-epoch report is due after k steps: ProgressInterval
// has passed since the last one, or ProgressEverySteps steps were trained since.
func (c *chief) progressDue(k int64, now time.Time) bool {
	cfg := &c.t.cfg
	interval := cfg.ProgressInterval
	if interval == 0 {
		interval = DefaultProgressInterval
	}
	since := now.Sub(c.interim.at)
	if interval > 0 && since < minProgressGap {
		return false
	}
	if interval > 0 && since >= interval {
		return true
	}
	return cfg.ProgressEverySteps > 0 && k-c.interim.step >= int64(cfg.ProgressEverySteps)
}

// startInterim anchors the in-epoch reports at the run's first step.
func (c *chief) startInterim(step int64, loss *epochLoss) {
	c.interim = interimState{at: time.Now(), step: step, sum: loss.sum, rows: loss.rows}
	if c.client != nil {
		c.traffic.at = c.client.Traffic()
	}
}

// reportInterim sends an in-epoch progress report after k steps when one is due (rank
// 0 only): the step, samples per second and mean training loss since the previous
// report, the epoch's running loss and how far the epoch is. The coordinator keeps it
// in the leader's memory (TaskReport.interim), not in Raft.
func (c *chief) reportInterim(k int64, sched *schedule, loss *epochLoss) {
	now := time.Now()
	if c.interim.at.IsZero() || k >= c.total || !c.progressDue(k, now) {
		return
	}
	p := c.progressAt(k, sched, loss, now)
	c.markInterval(p, loss, now)
	c.t.cfg.Metrics.observeInterim(c.t.job.GetId(), p)
	c.recordInterim(p)
	c.report(&cohortv1.TaskReport{State: cohortv1.TaskState_TASK_STATE_RUNNING, Progress: p, Interim: true})
}

// markInterval fills p (the progress after p.Step steps, measured at now) with the mean
// training loss and samples per second since the chief's previous progress report,
// and makes p the previous report. Every report with progress within an epoch (the
// in-epoch ones and the checkpoints') goes through it, so that each carries the loss of
// its own interval.
func (c *chief) markInterval(p *cohortv1.JobProgress, loss *epochLoss, now time.Time) {
	k := p.GetStep()
	sum, rows := loss.sum-c.interim.sum, loss.rows-c.interim.rows
	if loss.rows < c.interim.rows || rows < 0 {
		// An epoch ended since (its loss was reset): count from the epoch's start.
		sum, rows = loss.sum, loss.rows
	}
	if rows > 0 {
		p.IntervalLoss, p.IntervalRows = sum/float64(rows), int64(rows)
	}
	if d := now.Sub(c.interim.at).Seconds(); d > 0 && k > c.interim.step && !c.interim.at.IsZero() {
		global := int64(c.t.spec.Spec.Training.BatchSize * c.t.base)
		p.SamplesPerSecond = float64((k-c.interim.step)*global) / d
	}
	c.markTraffic(p, k-c.interim.step)
	c.interim = interimState{at: now, step: k, sum: loss.sum, rows: loss.rows}
}

// progressAt is the job's progress after k steps, at the schedule's position: epochs
// completed, the epoch's rows done, the epoch's running training loss (the last
// epoch's mean when none yet), and samples per second since the epoch began.
func (c *chief) progressAt(k int64, sched *schedule, loss *epochLoss, now time.Time) *cohortv1.JobProgress {
	p := &cohortv1.JobProgress{
		Epoch:          int32(sched.epoch),
		TotalEpochs:    int32(c.t.spec.Spec.Training.Epochs),
		Step:           k,
		TotalSteps:     c.total,
		TimeUnixNano:   now.UnixNano(),
		EpochRows:      min(sched.pos+sched.global, sched.n),
		EpochTotalRows: sched.n,
	}
	if m := loss.mean(); !math.IsNaN(m) {
		p.Loss = m
	} else if c.progress != nil {
		p.Loss = c.progress.GetLoss()
	}
	if d := now.Sub(loss.started).Seconds(); d > 0 {
		p.SamplesPerSecond = float64(p.EpochRows) / d
	}
	return p
}

// checkpointProgress is the progress a checkpoint report of step carries, so the job
// never shows a step behind its checkpoint's: step steps done, at position at.
func (c *chief) checkpointProgress(step int64, at position, loss *epochLoss) *cohortv1.JobProgress {
	p := &cohortv1.JobProgress{
		Epoch:          int32(at.epoch),
		TotalEpochs:    int32(c.t.spec.Spec.Training.Epochs),
		Step:           step,
		TotalSteps:     c.total,
		TimeUnixNano:   time.Now().UnixNano(),
		EpochRows:      at.pos,
		EpochTotalRows: int64(c.ds.train.N),
	}
	if loss != nil {
		if m := loss.mean(); !math.IsNaN(m) {
			p.Loss = m
		}
	}
	if p.Loss == 0 && c.progress != nil {
		p.Loss = c.progress.GetLoss()
	}
	if c.progress != nil {
		p.SamplesPerSecond = c.progress.GetSamplesPerSecond()
	}
	if loss != nil {
		c.markInterval(p, loss, time.Unix(0, p.TimeUnixNano))
		if p.IntervalRows == 0 && c.progress != nil && c.progress.GetStep() == step {
			// The epoch end's checkpoint: its report replaces the epoch end's progress,
			// so it carries the interval the epoch end closed.
			p.IntervalLoss, p.IntervalRows = c.progress.GetIntervalLoss(), c.progress.GetIntervalRows()
		} else if p.IntervalRows > 0 {
			c.t.cfg.Metrics.observeInterim(c.t.job.GetId(), p)
			c.recordInterim(p)
		}
	}
	return p
}
