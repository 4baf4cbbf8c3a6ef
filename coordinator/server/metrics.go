package server

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors. They always exist (so code never
// checks for nil) and are registered only when a Registerer is configured.
type metrics struct {
	leader            prometheus.Gauge
	inflight          prometheus.Gauge
	applyDuration     *prometheus.HistogramVec
	plans             *prometheus.CounterVec
	preemptedJobs     prometheus.Counter
	resizes           *prometheus.CounterVec
	pendingJobs       prometheus.Gauge
	heartbeatExpiries prometheus.Counter
	readIndexDuration prometheus.Histogram
	readBarriers      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cohort_coordinator_leader",
			Help: "1 while this coordinator runs the leader machinery, else 0.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cohort_raft_applies_inflight",
			Help: "Raft proposals accepted by raft and not yet applied.",
		}),
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cohort_raft_apply_duration_seconds",
			Help:    "Time from proposing a command to its local apply, by command kind and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"kind", "outcome"}),
		plans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_scheduler_plans_total",
			Help: "Placement plans by result: placed, pending (reasons committed), unchanged, rejected (stale), error.",
		}, []string{"result"}),
		preemptedJobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_scheduler_preempted_jobs_total",
			Help: "Running jobs evicted (sent back to pending) for a higher-priority job.",
		}),
		resizes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_scheduler_job_resizes_total",
			Help: "Membership changes of running elastic jobs committed by the scheduler, by kind: grow (into free capacity) or shrink (to make room for a higher-priority job).",
		}, []string{"kind"}),
		pendingJobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cohort_scheduler_pending_jobs",
			Help: "Pending jobs seen by the last scheduling pass.",
		}),
		heartbeatExpiries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_node_heartbeat_expiries_total",
			Help: "Nodes marked down because their heartbeat TTL expired.",
		}),
		readIndexDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cohort_consistent_read_duration_seconds",
			Help:    "Time a consistent read waits for the leader to confirm leadership and catch up.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		readBarriers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_consistent_read_barriers_total",
			Help: "Consistent reads that needed a raft barrier to catch the local state up.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.leader, m.inflight, m.applyDuration, m.plans, m.preemptedJobs, m.resizes, m.pendingJobs, m.heartbeatExpiries,
		m.readIndexDuration, m.readBarriers} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("server: register metrics: %w", err)
		}
	}
	return m, nil
}
