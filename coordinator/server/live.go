package server

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// live is the leader's memory of the high-rate reports that do not go through Raft:
// in-epoch progress (a chief reports every few seconds), each node's last heartbeat
// time, and node and task usage (every heartbeat). Writing these to Raft would put an
// entry per node every two seconds and one per job every few seconds into the log,
// its snapshots and every follower's FSM, for values that are stale a moment later.
//
// What survives a leader change is what Raft holds: the progress of the last epoch
// end and of the last committed checkpoint (the chief sends both as ordinary reports),
// and the registration time as the last heartbeat. The new leader's memory is empty;
// the next interim report (seconds) and heartbeat (2 s) refill it. API answers overlay
// this memory on the replicated state (progress only when it is ahead of it).
type live struct {
	mu       sync.Mutex
	progress map[string]*cohortv1.JobProgress // job ID -> latest interim progress
	beats    map[string]int64                 // node ID -> last heartbeat (unix nano)
	nodes    map[string]*cohortv1.Usage       // node ID -> usage
	tasks    map[string]map[string]*cohortv1.TaskUsage
	// changed is closed (and replaced) on every interim progress, so that WatchJob
	// streams wake for it.
	changed chan struct{}
}

func newLive() *live {
	l := &live{changed: make(chan struct{})}
	l.resetLocked()
	return l
}

func (l *live) resetLocked() {
	l.progress = map[string]*cohortv1.JobProgress{}
	l.beats = map[string]int64{}
	l.nodes = map[string]*cohortv1.Usage{}
	l.tasks = map[string]map[string]*cohortv1.TaskUsage{}
}

// reset forgets everything (leadership lost: another leader holds the truth now).
func (l *live) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resetLocked()
}

func (l *live) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// maxUsageTasks bounds the task usages one heartbeat may carry.
const maxUsageTasks = 256

// progressAhead reports whether progress a is past b (by step, then by time).
func progressAhead(a, b *cohortv1.JobProgress) bool {
	if b == nil {
		return true
	}
	if a.GetStep() != b.GetStep() {
		return a.GetStep() > b.GetStep()
	}
	return a.GetTimeUnixNano() > b.GetTimeUnixNano()
}

// ReportProgress keeps in-epoch progress reports (TaskReport.interim) in the leader's
// memory. A report must come from a live allocation of a running job, and only the
// newest progress of each job is kept. It returns an error wrapping ErrNotLeader on a
// follower; like the FSM, it drops without error a report of an unknown allocation or
// of a job that is no longer running (it raced with the job's end).
func (s *Server) ReportProgress(reports []*cohortv1.TaskReport) error {
	if !s.IsLeader() || !s.leaderReady.Load() {
		return s.notLeaderError()
	}
	snap := s.State().Snapshot()
	for _, r := range reports {
		if r.GetProgress() == nil {
			continue
		}
		alloc, err := snap.AllocByID(nil, r.GetAllocationId())
		if err != nil {
			return fmt.Errorf("server: progress report: %w", err)
		}
		if alloc == nil || (r.GetJobId() != "" && r.GetJobId() != alloc.JobId) {
			continue // as the FSM does: a report of an unknown allocation is dropped
		}
		job, err := snap.JobByID(nil, alloc.JobId)
		if err != nil {
			return fmt.Errorf("server: progress report: %w", err)
		}
		if job == nil || job.State != cohortv1.JobState_JOB_STATE_RUNNING || state.TaskTerminal(alloc.State) {
			continue
		}
		if !progressAhead(r.GetProgress(), job.GetProgress()) {
			continue
		}
		s.live.mu.Lock()
		if progressAhead(r.GetProgress(), s.live.progress[job.Id]) {
			s.live.progress[job.Id] = proto.Clone(r.GetProgress()).(*cohortv1.JobProgress)
			s.live.notifyLocked()
		}
		s.live.mu.Unlock()
	}
	return nil
}

// recordHeartbeat keeps a node's heartbeat time and usage; a task usage without its
// job ID gets it from the allocation.
func (s *Server) recordHeartbeat(nodeID string, now time.Time, usage *cohortv1.Usage, tasks []*cohortv1.TaskUsage) {
	jobOf := map[string]string{}
	for _, t := range tasks {
		if t.GetJobId() == "" && t.GetAllocationId() != "" {
			if a, err := s.State().AllocByID(nil, t.GetAllocationId()); err == nil && a != nil {
				jobOf[a.Id] = a.JobId
			}
		}
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	s.live.beats[nodeID] = now.UnixNano()
	if usage != nil {
		s.live.nodes[nodeID] = proto.Clone(usage).(*cohortv1.Usage)
	}
	if usage != nil || len(tasks) > 0 {
		m := make(map[string]*cohortv1.TaskUsage, len(tasks))
		for _, t := range tasks[:min(len(tasks), maxUsageTasks)] {
			if t.GetAllocationId() != "" && t.GetUsage() != nil {
				c := proto.Clone(t).(*cohortv1.TaskUsage)
				if c.JobId == "" {
					c.JobId = jobOf[c.AllocationId]
				}
				m[c.AllocationId] = c
			}
		}
		s.live.tasks[nodeID] = m
	}
}

// HeartbeatWithUsage is Heartbeat that also keeps the node's and its tasks' usage
// (nil and empty: none reported) in the leader's memory.
func (s *Server) HeartbeatWithUsage(nodeID string, gen uint64, usage *cohortv1.Usage, tasks []*cohortv1.TaskUsage) error {
	if err := s.Heartbeat(nodeID, gen); err != nil {
		return err
	}
	s.recordHeartbeat(nodeID, s.Now(), usage, tasks)
	return nil
}

// LiveChanged returns a channel closed at the next interim progress report.
func (s *Server) LiveChanged() <-chan struct{} {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	return s.live.changed
}

// LiveJob returns job with the leader's newer in-epoch progress, if any (a copy; job
// itself is not modified). A job that is not running has no live progress.
func (s *Server) LiveJob(job *cohortv1.Job) *cohortv1.Job {
	if job == nil {
		return nil
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	p, ok := s.live.progress[job.Id]
	if ok && job.State != cohortv1.JobState_JOB_STATE_RUNNING {
		delete(s.live.progress, job.Id)
		return job
	}
	if !ok || !progressAhead(p, job.GetProgress()) {
		return job
	}
	out := proto.Clone(job).(*cohortv1.Job)
	out.Progress = proto.Clone(p).(*cohortv1.JobProgress)
	return out
}

// LiveNode returns n with its last heartbeat and usage from the leader's memory (a
// copy when anything changes).
func (s *Server) LiveNode(n *cohortv1.Node) *cohortv1.Node {
	if n == nil {
		return nil
	}
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	beat, okBeat := s.live.beats[n.Id]
	usage, okUsage := s.live.nodes[n.Id]
	if (!okBeat || beat <= n.LastHeartbeatUnixNano) && !okUsage {
		return n
	}
	out := proto.Clone(n).(*cohortv1.Node)
	if okBeat && beat > out.LastHeartbeatUnixNano {
		out.LastHeartbeatUnixNano = beat
	}
	if okUsage && n.Status != cohortv1.NodeStatus_NODE_STATUS_DOWN {
		out.Usage = proto.Clone(usage).(*cohortv1.Usage)
	}
	return out
}

// LiveAllocs returns allocs with the usage their nodes reported for them (copies of
// the allocations that have one).
func (s *Server) LiveAllocs(allocs []*cohortv1.Allocation) []*cohortv1.Allocation {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	out := make([]*cohortv1.Allocation, len(allocs))
	for i, a := range allocs {
		out[i] = a
		if state.TaskTerminal(a.State) {
			continue
		}
		if tu, ok := s.live.tasks[a.NodeId][a.Id]; ok {
			c := proto.Clone(a).(*cohortv1.Allocation)
			c.Usage = proto.Clone(tu.GetUsage()).(*cohortv1.Usage)
			out[i] = c
		}
	}
	return out
}

// usageCollector exports the leader's usage memory as Prometheus gauges at scrape
// time (a follower exports none).
type usageCollector struct {
	s                                          *Server
	nodeCPU, nodeCPURatio, nodeMem, nodeGPUMem *prometheus.Desc
	nodeGPUUtil, taskCPU, taskMem              *prometheus.Desc
	beatAge                                    *prometheus.Desc
}

func newUsageCollector(s *Server) *usageCollector {
	return &usageCollector{s: s,
		nodeCPU:      prometheus.NewDesc("cohort_node_cpu_usage_cores", "CPU cores in use on the node (CPU seconds per second), as its agent last reported.", []string{"node"}, nil),
		nodeCPURatio: prometheus.NewDesc("cohort_node_cpu_usage_ratio", "CPU in use on the node over its registered CPU capacity.", []string{"node"}, nil),
		nodeMem:      prometheus.NewDesc("cohort_node_memory_usage_bytes", "Memory in use on the node, as its agent last reported.", []string{"node"}, nil),
		nodeGPUMem:   prometheus.NewDesc("cohort_node_gpu_memory_usage_bytes", "GPU memory in use on the node (NVML), as its agent last reported.", []string{"node"}, nil),
		nodeGPUUtil:  prometheus.NewDesc("cohort_node_gpu_utilization_ratio", "Busy fraction of the node's GPUs (NVML), as its agent last reported.", []string{"node"}, nil),
		taskCPU:      prometheus.NewDesc("cohort_task_cpu_usage_cores", "CPU cores a task uses (its process's share), as its agent last reported.", []string{"job", "allocation"}, nil),
		taskMem:      prometheus.NewDesc("cohort_task_memory_usage_bytes", "Resident memory of a task (its process's share), as its agent last reported.", []string{"job", "allocation"}, nil),
		beatAge:      prometheus.NewDesc("cohort_node_last_heartbeat_timestamp_seconds", "Unix time of the node's last heartbeat received by this leader.", []string{"node"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodeCPU, c.nodeCPURatio, c.nodeMem, c.nodeGPUMem, c.nodeGPUUtil, c.taskCPU, c.taskMem, c.beatAge} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	capacity := map[string]int64{}
	if nodes, err := c.s.State().Nodes(nil); err == nil {
		for _, n := range nodes {
			capacity[n.Id] = n.GetCapacity().GetCpuMillis()
		}
	}
	l := c.s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, beat := range l.beats {
		ch <- prometheus.MustNewConstMetric(c.beatAge, prometheus.GaugeValue, float64(beat)/1e9, id)
	}
	for id, u := range l.nodes {
		ch <- prometheus.MustNewConstMetric(c.nodeCPU, prometheus.GaugeValue, u.GetCpuCores(), id)
		if m := capacity[id]; m > 0 {
			ch <- prometheus.MustNewConstMetric(c.nodeCPURatio, prometheus.GaugeValue, u.GetCpuCores()*1000/float64(m), id)
		}
		ch <- prometheus.MustNewConstMetric(c.nodeMem, prometheus.GaugeValue, float64(u.GetMemoryBytes()), id)
		if u.GetGpuPresent() {
			ch <- prometheus.MustNewConstMetric(c.nodeGPUMem, prometheus.GaugeValue, float64(u.GetGpuMemoryBytes()), id)
			ch <- prometheus.MustNewConstMetric(c.nodeGPUUtil, prometheus.GaugeValue, u.GetGpuUtilization(), id)
		}
	}
	for _, tasks := range l.tasks {
		for id, t := range tasks {
			ch <- prometheus.MustNewConstMetric(c.taskCPU, prometheus.GaugeValue, t.GetUsage().GetCpuCores(), t.GetJobId(), id)
			ch <- prometheus.MustNewConstMetric(c.taskMem, prometheus.GaugeValue, float64(t.GetUsage().GetMemoryBytes()), t.GetJobId(), id)
		}
	}
}
