package api

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// liveBackend is a Backend that keeps the leader's memory of high-rate reports:
// in-epoch progress, heartbeat times and usage (*server.Server; see its live.go for
// what belongs there rather than in Raft, and what survives a leader change).
type liveBackend interface {
	IsLeader() bool
	ReportProgress(reports []*cohortv1.TaskReport) error
	HeartbeatWithUsage(nodeID string, gen uint64, usage *cohortv1.Usage, tasks []*cohortv1.TaskUsage) error
	LiveChanged() <-chan struct{}
	LiveJob(job *cohortv1.Job) *cohortv1.Job
	LiveNode(n *cohortv1.Node) *cohortv1.Node
	LiveAllocs(allocs []*cohortv1.Allocation) []*cohortv1.Allocation
}

// liveOf returns b's leader memory, or nil when b keeps none.
func liveOf(b Backend) liveBackend {
	l, _ := b.(liveBackend)
	return l
}

func liveJob(b Backend, j *cohortv1.Job) *cohortv1.Job {
	if l := liveOf(b); l != nil {
		return l.LiveJob(j)
	}
	return j
}

func liveNodes(b Backend, nodes []*cohortv1.Node) []*cohortv1.Node {
	l := liveOf(b)
	if l == nil {
		return nodes
	}
	out := make([]*cohortv1.Node, len(nodes))
	for i, n := range nodes {
		out[i] = l.LiveNode(n)
	}
	return out
}

func liveAllocs(b Backend, allocs []*cohortv1.Allocation) []*cohortv1.Allocation {
	if l := liveOf(b); l != nil {
		return l.LiveAllocs(allocs)
	}
	return allocs
}

// watchLive adds the leader memory's change channel to ws (a follower's memory stays
// empty, so its channel never fires).
func watchLive(b Backend, ws memdb.WatchSet) {
	if l := liveOf(b); l != nil {
		ws.Add(l.LiveChanged())
	}
}

// splitInterim separates in-epoch progress reports (kept in the leader's memory) from
// the reports that go through Raft. Without a leader memory every report goes through
// Raft, its interim mark cleared.
func splitInterim(b Backend, reports []*cohortv1.TaskReport) (interim, durable []*cohortv1.TaskReport) {
	if liveOf(b) == nil {
		return nil, reports
	}
	for _, r := range reports {
		if r.GetInterim() {
			interim = append(interim, r)
		} else {
			durable = append(durable, r)
		}
	}
	return interim, durable
}

// reportInterim hands interim reports to the leader's memory, forwarding them from a
// follower.
func (s *agentService) reportInterim(ctx context.Context, reports []*cohortv1.TaskReport) error {
	for i, r := range reports {
		if r.GetProgress() == nil {
			return toStatus(fmt.Errorf("%w: reports[%d] is interim but has no progress", ErrInvalidArgument, i))
		}
	}
	_, err := leaderCall(ctx, s.cfg, func(context.Context) (*cohortv1.ReportTasksResponse, error) {
		if err := liveOf(s.b).ReportProgress(reports); err != nil {
			return nil, err
		}
		return &cohortv1.ReportTasksResponse{}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ReportTasksResponse, error) {
		return cohortv1.NewAgentServiceClient(c).ReportTasks(ctx, &cohortv1.ReportTasksRequest{Reports: reports})
	})
	return err
}

// progressKey identifies a job's progress, so that WatchJob resends the job when only
// its in-epoch progress moved.
func progressKey(j *cohortv1.Job) [2]int64 {
	return [2]int64{j.GetProgress().GetStep(), j.GetProgress().GetTimeUnixNano()}
}

// followerPoll is how often a follower's WatchJob asks the leader for a running job's
// in-epoch progress (a follower's own memory holds none).
const followerPoll = time.Second

// followerWatch reports whether a WatchJob stream on this coordinator must read a
// running job's in-epoch progress from the leader: it is a follower that can forward.
func (s *jobService) followerWatch(job *cohortv1.Job) bool {
	l := liveOf(s.b)
	return l != nil && !l.IsLeader() && s.cfg.Forwarder != nil && !state.JobTerminal(job.GetState())
}

// leaderProgress returns job with the leader's progress when it is ahead of job's (a
// copy), read with a forwarded GetJob; job itself when it is not, or on any error.
func (s *jobService) leaderProgress(ctx context.Context, job *cohortv1.Job) *cohortv1.Job {
	conn, err := s.cfg.Forwarder.LeaderConn()
	if err != nil {
		return job
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := cohortv1.NewJobServiceClient(conn).GetJob(forwardContext(cctx), &cohortv1.GetJobRequest{Id: job.GetId()})
	p := resp.GetJob().GetProgress()
	if err != nil || p == nil || p.GetStep() <= job.GetProgress().GetStep() {
		return job
	}
	out := proto.Clone(job).(*cohortv1.Job)
	out.Progress = p
	return out
}

// pollSoon adds to ws a channel closed after d.
func pollSoon(ws memdb.WatchSet, d time.Duration) {
	ch := make(chan struct{})
	time.AfterFunc(d, func() { close(ch) })
	ws.Add(ch)
}

// checkUsage refuses a usage with a negative or non-finite figure, naming the field.
func checkUsage(field string, u *cohortv1.Usage) error {
	if u == nil {
		return nil
	}
	for name, v := range map[string]float64{"cpu_cores": u.GetCpuCores(), "gpu_utilization": u.GetGpuUtilization(),
		"memory_bytes": float64(u.GetMemoryBytes()), "memory_total_bytes": float64(u.GetMemoryTotalBytes()), "gpu_memory_bytes": float64(u.GetGpuMemoryBytes())} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: %s.%s is %v; want a finite number >= 0", ErrInvalidArgument, field, name, v)
		}
	}
	return nil
}

// checkHeartbeatUsage checks a heartbeat's node and task usages.
func checkHeartbeatUsage(req *cohortv1.HeartbeatRequest) error {
	if len(req.GetTasks()) > maxReportsPerCall {
		return fmt.Errorf("%w: tasks has %d usages, limit %d per heartbeat", ErrInvalidArgument, len(req.GetTasks()), maxReportsPerCall)
	}
	if err := checkUsage("usage", req.GetUsage()); err != nil {
		return err
	}
	for i, t := range req.GetTasks() {
		if err := checkID(fmt.Sprintf("tasks[%d].allocation_id", i), t.GetAllocationId()); err != nil {
			return err
		}
		if err := checkUsage(fmt.Sprintf("tasks[%d].usage", i), t.GetUsage()); err != nil {
			return err
		}
	}
	return nil
}
