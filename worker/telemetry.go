package worker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohort-dev/cohort/internal/tfevents"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Metrics are a worker node's Prometheus metrics, shared by all its training tasks.
// A nil *Metrics records nothing.
type Metrics struct {
	stepSeconds      prometheus.Histogram
	samples          prometheus.Counter
	loss             *prometheus.GaugeVec
	samplesPerSecond *prometheus.GaugeVec
	// membershipChanges counts the membership generations training tasks moved to
	// without a restart.
	membershipChanges prometheus.Counter
	// step and intervalLoss follow the chief's in-epoch progress reports.
	step         *prometheus.GaugeVec
	intervalLoss *prometheus.GaugeVec
	// traffic counts tensor bytes before and after compression (compression.go).
	traffic *trafficMetrics
}

// NewMetrics creates the worker metrics and registers them on reg (nil: unregistered):
//
//	cohort_worker_step_seconds        histogram of one training step (pull, gradient, push)
//	cohort_worker_samples_total       training rows this node has computed gradients on
//	cohort_job_loss{job}              the chief's mean training loss of the last epoch
//	cohort_job_samples_per_second{job} the chief's training rows per second of the last epoch
//	cohort_worker_membership_changes_total membership generations a running task moved to
//	cohort_job_step{job}              the chief's global steps done, at its last progress report
//	cohort_job_interval_loss{job}     the chief's mean training loss since its previous progress report
//	cohort_worker_tensor_bytes_total{direction,form}, cohort_job_bytes_per_step{job,direction,form}
//	                                  tensor traffic before and after compression (compression.go)
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		stepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cohort_worker_step_seconds",
			Help:    "Duration of one training step on this worker: pull parameters, forward and backward pass, push gradient.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_worker_samples_total",
			Help: "Training rows this worker node has computed gradients on.",
		}),
		loss: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cohort_job_loss",
			Help: "Mean training loss of the job's last completed epoch (reported by its chief worker).",
		}, []string{"job"}),
		samplesPerSecond: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cohort_job_samples_per_second",
			Help: "Training rows per second of the job's last completed epoch (reported by its chief worker).",
		}, []string{"job"}),
		membershipChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_worker_membership_changes_total",
			Help: "Membership generations this node's training tasks moved to without a restart (a worker lost, added or removed).",
		}),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cohort_job_step",
			Help: "Global training steps done, at the job chief's last progress report (every few seconds).",
		}, []string{"job"}),
		intervalLoss: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cohort_job_interval_loss",
			Help: "Mean training loss of the steps between the job chief's last two progress reports.",
		}, []string{"job"}),
		traffic: newTrafficMetrics(),
	}
	if reg != nil {
		for _, c := range append([]prometheus.Collector{m.stepSeconds, m.samples, m.loss, m.samplesPerSecond, m.membershipChanges, m.step, m.intervalLoss}, m.traffic.collectors()...) {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("worker: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// observeStep records one training step of any rank.
func (m *Metrics) observeStep(d time.Duration, rows int) {
	if m == nil {
		return
	}
	m.stepSeconds.Observe(d.Seconds())
	m.samples.Add(float64(rows))
}

func (m *Metrics) observeEpoch(job string, loss, samplesPerSecond float64) {
	if m == nil {
		return
	}
	m.loss.WithLabelValues(job).Set(loss)
	m.samplesPerSecond.WithLabelValues(job).Set(samplesPerSecond)
}

// forgetJob drops a job's series once its chief has finished.
func (m *Metrics) forgetJob(job string) {
	if m == nil {
		return
	}
	m.loss.DeleteLabelValues(job)
	m.samplesPerSecond.DeleteLabelValues(job)
	m.step.DeleteLabelValues(job)
	m.intervalLoss.DeleteLabelValues(job)
	m.forgetTraffic(job)
}

// observeInterim records an in-epoch progress report of the chief.
func (m *Metrics) observeInterim(job string, p *cohortv1.JobProgress) {
	if m == nil {
		return
	}
	m.step.WithLabelValues(job).Set(float64(p.GetStep()))
	if p.GetIntervalRows() > 0 {
		m.intervalLoss.WithLabelValues(job).Set(p.GetIntervalLoss())
	}
}

// TensorBoardPrefix is the key prefix of a job's TensorBoard event files:
// "jobs/<jobID>/tensorboard/". Point `tensorboard --logdir` at it.
func TensorBoardPrefix(jobID string) string { return "jobs/" + jobID + "/tensorboard/" }

// jobTelemetry is the chief's TensorBoard event file: one per run of a job (a resumed
// run starts a new file, which TensorBoard merges with the earlier ones), rewritten
// whole after every epoch so readers always see a complete file.
type jobTelemetry struct {
	key string
	buf bytes.Buffer
	w   *tfevents.Writer
	// train is the in-epoch event file, in the run directory "train/" (TensorBoard
	// shows it as its own run, at the global step; the dashboard's epoch reader does
	// not read it).
	train jobEventFile
}

// jobEventFile is one event file kept whole in memory and stored whole.
type jobEventFile struct {
	key string
	buf bytes.Buffer
	w   *tfevents.Writer
}

// TensorBoardTrainRun is the run directory, under TensorBoardPrefix, of the chief's
// in-epoch points (interval_loss, samples_per_second at the global step).
const TensorBoardTrainRun = "train/"

// openTelemetry starts the chief's event file, once the trainer is rank 0.
func (c *chief) openTelemetry(context.Context) error {
	if !c.t.chief || c.telemetry != nil {
		return nil
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	now := time.Now()
	tel := &jobTelemetry{key: TensorBoardPrefix(c.t.job.GetId()) + tfevents.FileName(now, host+"."+c.t.cfg.Assignment.GetAllocation().GetId())}
	if tel.w, err = tfevents.NewWriter(&tel.buf, nil); err != nil {
		return fmt.Errorf("worker: tensorboard events: %w", err)
	}
	tel.train.key = TensorBoardPrefix(c.t.job.GetId()) + TensorBoardTrainRun + tfevents.FileName(now, host+"."+c.t.cfg.Assignment.GetAllocation().GetId())
	if tel.train.w, err = tfevents.NewWriter(&tel.train.buf, nil); err != nil {
		return fmt.Errorf("worker: tensorboard events: %w", err)
	}
	c.telemetry = tel
	return nil
}

// recordEpoch writes an epoch's scalars (training loss, validation metrics, learning
// rate, samples per second) at step = the epoch number, stores the event file, and
// updates the job gauges.
func (c *chief) recordEpoch(ctx context.Context, trainLoss float64, vm map[string]float64) error {
	t := c.t
	t.cfg.Metrics.observeEpoch(t.job.GetId(), trainLoss, c.progress.GetSamplesPerSecond())
	tel := c.telemetry
	if tel == nil {
		return nil
	}
	step := int64(c.progress.GetEpoch())
	scalars := map[string]float64{
		"loss":               trainLoss,
		"learning_rate":      t.spec.Spec.Training.Optimizer.LearningRate,
		"samples_per_second": c.progress.GetSamplesPerSecond(),
		"global_step":        float64(c.progress.GetStep()),
	}
	for k, v := range vm {
		scalars[k] = v
	}
	for _, k := range sortedKeys(scalars) {
		if err := tel.w.Scalar(k, step, scalars[k]); err != nil {
			return fmt.Errorf("worker: tensorboard events: %w", err)
		}
	}
	if err := tel.w.Flush(); err != nil {
		return fmt.Errorf("worker: tensorboard events: %w", err)
	}
	if err := t.cfg.Store.Put(ctx, tel.key, bytes.NewReader(tel.buf.Bytes()), int64(tel.buf.Len())); err != nil {
		return fmt.Errorf("worker: store tensorboard events %s: %w", tel.key, err)
	}
	if err := tel.train.w.Flush(); err != nil {
		return fmt.Errorf("worker: tensorboard events: %w", err)
	}
	if err := t.cfg.Store.Put(ctx, tel.train.key, bytes.NewReader(tel.train.buf.Bytes()), int64(tel.train.buf.Len())); err != nil {
		return fmt.Errorf("worker: store tensorboard events %s: %w", tel.train.key, err)
	}
	return nil
}

// recordInterim adds an in-epoch progress report's points to the "train" run's event
// file, at the global step: interval_loss (the mean training loss since the previous
// report) and samples_per_second. They are stored with the next epoch's write, not at
// every report, to keep storage writes off the step path.
func (c *chief) recordInterim(p *cohortv1.JobProgress) {
	tel := c.telemetry
	if tel == nil {
		return
	}
	if p.GetIntervalRows() > 0 {
		if err := tel.train.w.Scalar("interval_loss", p.GetStep(), p.GetIntervalLoss()); err != nil {
			c.t.log.Warn("tensorboard events: in-epoch loss not recorded", "err", err)
			return
		}
	}
	if err := tel.train.w.Scalar("samples_per_second", p.GetStep(), p.GetSamplesPerSecond()); err != nil {
		c.t.log.Warn("tensorboard events: in-epoch samples per second not recorded", "err", err)
	}
}

// closeTelemetry drops the job's gauges when the chief's run ends.
func (c *chief) closeTelemetry() {
	if c.t.chief {
		c.t.cfg.Metrics.forgetJob(c.t.job.GetId())
	}
}
