package paramserver

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Server's Prometheus collectors. Labels stay low-cardinality (no job
// or shard labels).
type metrics struct {
	applySeconds       *prometheus.HistogramVec
	bytesReceived      *prometheus.CounterVec
	bytesSent          prometheus.Counter
	pushes             *prometheus.CounterVec
	steps              *prometheus.CounterVec
	pullWaitSeconds    prometheus.Histogram
	checkpointSecond   prometheus.Histogram
	checkpointBytes    prometheus.Counter
	checkpointFailures *prometheus.CounterVec
	shards             prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		applySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cohort_ps_apply_seconds",
			Help:    "Time to apply one optimizer step to one shard.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 10),
		}, []string{"optimizer"}),
		bytesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_ps_bytes_received_total",
			Help: "Tensor bytes received by parameter-server shards, by RPC.",
		}, []string{"rpc"}),
		bytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_ps_bytes_sent_total",
			Help: "Tensor bytes sent by parameter-server shards in Pull responses.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_ps_pushes_total",
			Help: "Gradient pushes by result (accepted, duplicate, refused).",
		}, []string{"result"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_ps_steps_total",
			Help: "Shard versions completed, by consistency mode.",
		}, []string{"mode"}),
		pullWaitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cohort_ps_pull_wait_seconds",
			Help:    "Time a Pull waited for the shard to reach the requested step.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 12),
		}),
		checkpointSecond: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cohort_ps_checkpoint_seconds",
			Help:    "Time to encode and store one shard checkpoint.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10),
		}),
		checkpointBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_ps_checkpoint_bytes_total",
			Help: "Bytes of shard checkpoints written to storage.",
		}),
		checkpointFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_ps_checkpoint_failures_total",
			Help: "Shard checkpoint writes that failed, by reason (storage_full: no space left; error: anything else).",
		}, []string{"reason"}),
		shards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cohort_ps_shards",
			Help: "Shards hosted by this server.",
		}),
	}
	if reg == nil {
		return m
	}
	m.applySeconds = register(reg, m.applySeconds)
	m.bytesReceived = register(reg, m.bytesReceived)
	m.bytesSent = register(reg, m.bytesSent)
	m.pushes = register(reg, m.pushes)
	m.steps = register(reg, m.steps)
	m.pullWaitSeconds = register(reg, m.pullWaitSeconds)
	m.checkpointSecond = register(reg, m.checkpointSecond)
	m.checkpointBytes = register(reg, m.checkpointBytes)
	m.checkpointFailures = register(reg, m.checkpointFailures)
	m.shards = register(reg, m.shards)
	return m
}

// register registers c, or returns the identical collector already registered (several
// Servers in one process, as in `cohort dev` or tests, share the series). It panics on
// any other registration error, a programming error in the metric definitions.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
