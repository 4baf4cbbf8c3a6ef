package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// clientCompression is spec.training.compression as the parameter-server client's
// setting (the zero value: none).
func clientCompression(c *jobs.Compression) paramserver.Compression {
	if c == nil {
		return paramserver.Compression{}
	}
	return paramserver.Compression{FP16: c.FP16, TopK: c.TopK, ErrorFeedback: c.ErrorFeedback}
}

// trafficMetrics are the worker metrics of tensor traffic:
//
//	cohort_worker_tensor_bytes_total{direction,form}   bytes this node's training tasks sent
//	    (direction="sent": gradient pushes) and received ("received": parameter pulls),
//	    on the wire after compression (form="compressed") and as float32 before it
//	    (form="uncompressed"); the same when the job has no compression
//	cohort_job_bytes_per_step{job,direction,form}      the same per training step of the
//	    job's chief worker, averaged between its last two progress reports
type trafficMetrics struct {
	bytes   *prometheus.CounterVec
	perStep *prometheus.GaugeVec
}

func newTrafficMetrics() *trafficMetrics {
	return &trafficMetrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_worker_tensor_bytes_total",
			Help: "Tensor bytes this node's training tasks sent (gradient pushes) and received (parameter pulls), on the wire after training.compression (form=compressed) and as float32 before it (form=uncompressed).",
		}, []string{"direction", "form"}),
		perStep: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cohort_job_bytes_per_step",
			Help: "Tensor bytes per training step of the job's chief worker, sent (pushes) and received (pulls), compressed and uncompressed, averaged between its last two progress reports.",
		}, []string{"job", "direction", "form"}),
	}
}

func (m *trafficMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.bytes, m.perStep}
}

// observeTraffic adds the traffic of one or more steps (a Client's reading minus the
// previous one) to the node's counters.
func (m *Metrics) observeTraffic(d paramserver.Traffic) {
	if m == nil || m.traffic == nil {
		return
	}
	b := m.traffic.bytes
	b.WithLabelValues("sent", "compressed").Add(float64(d.PushBytes))
	b.WithLabelValues("sent", "uncompressed").Add(float64(d.PushDenseBytes))
	b.WithLabelValues("received", "compressed").Add(float64(d.PullBytes))
	b.WithLabelValues("received", "uncompressed").Add(float64(d.PullDenseBytes))
}

// observeBytesPerStep records the chief's per-step figures of a progress report.
func (m *Metrics) observeBytesPerStep(job string, p *cohortv1.JobProgress) {
	if m == nil || m.traffic == nil {
		return
	}
	g := m.traffic.perStep
	g.WithLabelValues(job, "sent", "compressed").Set(p.GetPushBytesPerStep())
	g.WithLabelValues(job, "sent", "uncompressed").Set(p.GetPushDenseBytesPerStep())
	g.WithLabelValues(job, "received", "compressed").Set(p.GetPullBytesPerStep())
	g.WithLabelValues(job, "received", "uncompressed").Set(p.GetPullDenseBytesPerStep())
}

// forgetTraffic drops a job's per-step series.
func (m *Metrics) forgetTraffic(job string) {
	if m == nil || m.traffic == nil {
		return
	}
	m.traffic.perStep.DeletePartialMatch(prometheus.Labels{"job": job})
}

// countTraffic adds the loop's traffic since its last step to the node's counters.
func (l *loopState) countTraffic() {
	now := l.client.Traffic()
	l.t.cfg.Metrics.observeTraffic(now.Sub(l.traffic))
	l.traffic = now
}

// trafficMark is the chief's traffic reading at its last progress report and the
// per-step figures it reported then.
type trafficMark struct {
	at      paramserver.Traffic
	perStep [4]float64
}

// markTraffic fills p's bytes per step: the chief's client traffic since the previous
// report over the steps trained since (steps), or the previous figures when no step
// was trained since.
func (c *chief) markTraffic(p *cohortv1.JobProgress, steps int64) {
	if c.client == nil {
		return
	}
	now := c.client.Traffic()
	if steps > 0 {
		d := now.Sub(c.traffic.at)
		s := float64(steps)
		c.traffic.perStep = [4]float64{float64(d.PushBytes) / s, float64(d.PushDenseBytes) / s, float64(d.PullBytes) / s, float64(d.PullDenseBytes) / s}
		c.traffic.at = now
	}
	ps := c.traffic.perStep
	p.PushBytesPerStep, p.PushDenseBytesPerStep, p.PullBytesPerStep, p.PullDenseBytesPerStep = ps[0], ps[1], ps[2], ps[3]
	if c.t.chief {
		c.t.cfg.Metrics.observeBytesPerStep(c.t.job.GetId(), p)
	}
}
