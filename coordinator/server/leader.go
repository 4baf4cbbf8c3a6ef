package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/scheduler"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// monitorLeadership starts the leader machinery when this voter wins leadership and
// stops it when leadership is lost or the server shuts down.
func (s *Server) monitorLeadership() {
	defer s.wg.Done()
	var term *leaderTerm
	stop := func() {
		if term != nil {
			term.stop()
			term = nil
		}
	}
	for {
		select {
		case isLeader := <-s.leaderNotify:
			switch {
			case isLeader && term == nil:
				term = s.startLeaderTerm()
			case !isLeader:
				stop()
			}
		case <-s.shutdownCh:
			stop()
			return
		}
	}
}

// leaderTerm is one running instance of the leader machinery.
type leaderTerm struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *Server) startLeaderTerm() *leaderTerm {
	ctx, cancel := context.WithCancel(context.Background())
	t := &leaderTerm{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		s.leaderLoop(ctx)
	}()
	return t
}

// stop ends the term and waits until its machinery has stopped.
func (t *leaderTerm) stop() {
	t.cancel()
	<-t.done
}

// leaderLoop runs the leader machinery for one term of leadership: it establishes it,
// waits for ctx to end, and revokes it.
func (s *Server) leaderLoop(ctx context.Context) {
	s.logger.Info("leadership won; starting leader machinery")
	stopped, err := s.establishLeadership(ctx)
	if err != nil {
		s.logger.Info("leader machinery not started", "err", err)
		return
	}
	<-ctx.Done()
	s.revokeLeadership(stopped)
	s.logger.Info("leadership lost; leader machinery stopped")
}

// establishLeadership waits until every committed entry is applied locally (so the
// state is current), then starts the heartbeat TTL timers and the scheduling loop. It
// returns a channel that is closed when the scheduling loop has exited.
func (s *Server) establishLeadership(ctx context.Context) (<-chan struct{}, error) {
	for {
		err := s.waitFuture(ctx, s.raft.Barrier(s.config.ApplyEnqueueTimeout))
		if err == nil {
			break
		}
		if ctx.Err() != nil || errors.Is(err, ErrShutdown) {
			return nil, err
		}
		s.logger.Warn("leader barrier failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(s.config.SchedulerRetryInterval):
		}
	}
	nodes, err := s.State().Nodes(nil)
	if err != nil {
		return nil, err
	}
	var live []string
	for _, n := range nodes {
		if n.Status != cohortv1.NodeStatus_NODE_STATUS_DOWN {
			live = append(live, n.Id)
		}
	}
	s.heartbeats.start(live)
	s.leaderReady.Store(true)
	if err := s.registerSelf(ctx); err != nil {
		// Followers cannot forward to this leader until it is recorded; the next term
		// (or a later join) retries.
		s.logger.Warn("could not record this coordinator's gRPC address", "err", err)
	}
	if err := s.ensureClusterID(ctx); err != nil {
		// Agents register without a cluster ID until it is recorded; the next term
		// retries.
		s.logger.Warn("could not record the cluster ID", "err", err)
	}

	stopped := make(chan struct{})
	searchStopped := s.startSearchLoop(ctx)
	go func() {
		defer close(stopped)
		s.schedulingLoop(ctx)
		<-searchStopped
	}()
	s.metrics.leader.Set(1)
	return stopped, nil
}

// revokeLeadership stops everything establishLeadership started.
func (s *Server) revokeLeadership(schedulerStopped <-chan struct{}) {
	s.leaderReady.Store(false)
	s.metrics.leader.Set(0)
	s.heartbeats.stop()
	s.live.reset()
	<-schedulerStopped
}

// expireNode marks a node whose heartbeat TTL ran out DOWN.
func (s *Server) expireNode(nodeID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		select {
		case <-s.shutdownCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_NodeStatus{NodeStatus: &cohortv1.NodeStatusCommand{
		NodeId: nodeID, Status: cohortv1.NodeStatus_NODE_STATUS_DOWN,
	}}})
	if err != nil {
		s.logger.Warn("could not mark node down after missed heartbeats", "node", nodeID, "err", err)
		return
	}
	s.metrics.heartbeatExpiries.Inc()
	s.logger.Warn("node marked down: heartbeat TTL expired", "node", nodeID, "ttl", s.config.HeartbeatTTL)
}

// schedulingLoop places pending jobs until ctx ends. Each pass reads the pending jobs
// and watches the jobs, nodes and allocations it depends on; it runs again when any of
// them changes, when the next drain deadline comes (on the server's Clock), or after
// SchedulerRetryInterval (real time) when a pass failed.
func (s *Server) schedulingLoop(ctx context.Context) {
	for {
		ws := memdb.NewWatchSet()
		failed := s.schedulePass(ctx, ws)
		next, drainFailed := s.enforceDrainDeadlines(ctx)
		if ctx.Err() != nil {
			return
		}
		var (
			wake <-chan time.Time
			stop = func() bool { return false }
		)
		switch {
		case failed || drainFailed:
			t := time.NewTimer(s.config.SchedulerRetryInterval)
			wake, stop = t.C, t.Stop
		case !next.IsZero():
			t := s.config.Clock.NewTimer(next.Sub(s.Now()))
			wake, stop = t.C(), t.Stop
		}
		if !waitForChange(ctx, ws, wake, stop) {
			return
		}
	}
}

// waitForChange blocks until something in ws changes, wake fires or ctx ends, then
// calls stop (the wake timer's); it reports whether ctx is still live.
func waitForChange(ctx context.Context, ws memdb.WatchSet, wake <-chan time.Time, stop func() bool) bool {
	wctx, cancel := context.WithCancel(ctx)
	select {
	case <-ws.WatchCh(wctx):
	case <-wake:
	case <-ctx.Done():
	}
	cancel()
	stop()
	return ctx.Err() == nil
}

// schedulePass runs the scheduler once over every pending job, in the order
// scheduler.Cluster.Order gives (queues by weighted fair share; in a queue, highest
// priority first, then oldest). Each decision is one scheduler.PlanResult, committed
// by the plan applier in one Raft entry. It reports whether any plan failed to commit.
func (s *Server) schedulePass(ctx context.Context, ws memdb.WatchSet) (failed bool) {
	snap := s.State().Snapshot()
	pending, err := snap.JobsByState(ws, cohortv1.JobState_JOB_STATE_PENDING)
	if err == nil {
		err = errors.Join(snap.WatchTable(ws, state.TableNodes), snap.WatchTable(ws, state.TableAllocations),
			snap.WatchTable(ws, state.TableQuotas), snap.WatchTable(ws, state.TableQueues))
	}
	if err != nil {
		s.logger.Error("scheduling pass: read state", "err", err)
		return true
	}
	s.metrics.pendingJobs.Set(float64(len(pending)))
	// One working view per pass: each placed plan reserves its capacity in it, so later
	// jobs of the pass see it taken even before the plan is committed. A plan the
	// applier rejects leaves its reservation behind until the next pass, which errs on
	// the side of placing less.
	cluster := scheduler.NewCluster(snap)
	// The running jobs (preemption candidates) are read only when a job does not fit.
	var running []scheduler.Running
	runningRead := false
	readRunning := func() ([]scheduler.Running, error) {
		if !runningRead {
			rs, err := scheduler.RunningJobs(snap)
			if err != nil {
				return nil, err
			}
			running, runningRead = rs, true
		}
		return running, nil
	}
	// waiting is the highest priority of a pending job left unplaced by this pass: no
	// running job of that priority or lower grows into capacity it waits for.
	waiting := int32(math.MinInt32)
	for _, job := range cluster.Order(pending) {
		if ctx.Err() != nil {
			return false
		}
		pr, err := cluster.Schedule(job, readRunning)
		if err != nil {
			s.logger.Error("scheduling pass: read running jobs", "err", err)
			return true
		}
		if pr.Preempts() {
			// Shrinks or evictions and the preemptor's placement commit together, on the
			// newest state, before any other job can take the freed capacity. The next
			// pass (woken by the write) goes on with the rest. A plan the applier
			// rejects changes nothing: the job waits, and this pass goes on.
			committed, err := s.applyPlanResult(ctx, job, pr)
			if err != nil {
				if ctx.Err() == nil {
					s.logger.Warn("preemption plan not committed", "job", job.Id, "err", err)
				}
				s.metrics.plans.WithLabelValues("error").Inc()
				return true
			}
			if committed {
				return false
			}
			waiting = max(waiting, job.Priority)
			continue
		}
		placement := pr.Placement
		if !placement.Feasible() {
			waiting = max(waiting, job.Priority)
		}
		if _, err := s.applyPlanResult(ctx, job, pr); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("plan not committed", "job", job.Id, "err", err)
			}
			s.metrics.plans.WithLabelValues("error").Inc()
			failed = true
		} else if placement.Feasible() && runningRead {
			// Jobs placed earlier in the pass are preemption candidates too, as the
			// FSM stores them once placed.
			placed := proto.Clone(job).(*cohortv1.Job)
			placed.State, placed.Generation, placed.ActiveWorkers = cohortv1.JobState_JOB_STATE_RUNNING, max(placed.Generation, 1), 0
			running = append(running, scheduler.Running{Job: placed, Allocs: placement.Allocations})
		}
	}
	if failed || ctx.Err() != nil {
		return failed
	}
	if s.growPass(ctx, snap, cluster, waiting) {
		return true
	}
	return s.backupPass(ctx, snap, cluster)
}

// growPass grows running elastic jobs toward workers.max into the capacity this pass
// left free (a lost worker's replacement is such growth), the highest priority first;
// a job grows only when no pending job of its priority or higher is left waiting. It
// reports whether a change failed to commit.
func (s *Server) growPass(ctx context.Context, snap *state.StateSnapshot, cluster *scheduler.Cluster, waiting int32) (failed bool) {
	running, err := scheduler.RunningJobs(snap)
	if err != nil {
		s.logger.Error("scheduling pass: read running jobs", "err", err)
		return true
	}
	slices.SortFunc(running, func(a, b scheduler.Running) int {
		return cmp.Or(cmp.Compare(b.Job.Priority, a.Job.Priority), cmp.Compare(a.Job.Id, b.Job.Id))
	})
	for _, r := range running {
		if r.Job.Priority <= waiting {
			continue
		}
		pr, ok := cluster.GrowPlan(r)
		if !ok {
			continue
		}
		if _, err := s.applyPlanResult(ctx, nil, pr); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("growth not committed", "job", r.Job.Id, "err", err)
			}
			failed = true
		}
	}
	return failed
}

// applyPlanResult is the plan applier, the only committer of scheduling decisions
// (nomad's plan_apply): it re-checks pr against the newest state (scheduler.Recheck:
// every shrunk, evicted or grown job still running at the generation planned against,
// the placed job still pending, every new allocation fitting once the shrinks and
// evictions have freed their capacity) and commits the whole decision as one
// ApplyPlanCommand, which the FSM applies all or nothing. job is the job the placement
// (and any preemption) is for; nil for growth. An infeasible placement commits its
// reasons only when they changed. A plan the state moved under, or that the FSM
// refuses, changes nothing and is dropped without error (the next pass plans again).
// committed reports whether the plan was committed.
func (s *Server) applyPlanResult(ctx context.Context, job *cohortv1.Job, pr scheduler.PlanResult) (committed bool, err error) {
	placement := pr.Placement
	reasonsOnly := !placement.Feasible() && !pr.Preempts() && len(pr.Growth) == 0
	switch {
	case pr.Empty():
		return false, nil
	case reasonsOnly && job != nil && slices.Equal(job.PendingReasons, placement.Reasons):
		s.metrics.plans.WithLabelValues("unchanged").Inc()
		return false, nil
	case !reasonsOnly:
		if err := scheduler.Recheck(s.State().Snapshot(), pr); err != nil {
			if !errors.Is(err, scheduler.ErrStalePlan) && !errors.Is(err, scheduler.ErrDoesNotFit) {
				return false, err
			}
			// The state moved under the plan; the change wakes the next pass.
			s.logger.Debug("plan rejected by the plan applier", "job", planSubject(job, pr), "err", err)
			s.metrics.plans.WithLabelValues("rejected").Inc()
			return false, nil
		}
	}
	cmd := planCommand(job, pr)
	_, err = s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_ApplyPlan{ApplyPlan: cmd}})
	switch {
	case errors.Is(err, fsm.ErrStaleGeneration), errors.Is(err, fsm.ErrNotFound),
		errors.Is(err, fsm.ErrNotPending), errors.Is(err, fsm.ErrInvalidCommand):
		s.logger.Debug("plan refused", "job", planSubject(job, pr), "err", err)
		s.metrics.plans.WithLabelValues("rejected").Inc()
		return false, nil
	case err != nil:
		return false, err
	}
	for _, rs := range cmd.Shrinks {
		s.metrics.resizes.WithLabelValues("shrink").Inc()
		s.logger.Info("job membership changed", "job", rs.JobId, "kind", "shrink", "added", 0, "removed", len(rs.RemoveAllocationIds), "reason", rs.Reason)
	}
	if len(cmd.Evictions) > 0 {
		victims := make([]string, len(cmd.Evictions))
		for i, ev := range cmd.Evictions {
			victims[i] = ev.JobId
		}
		s.metrics.preemptedJobs.Add(float64(len(victims)))
		s.logger.Info("jobs preempted", "for", job.GetId(), "priority", job.GetPriority(), "victims", victims)
	}
	switch {
	case placement.Feasible():
		s.metrics.plans.WithLabelValues("placed").Inc()
		s.logger.Info("job placed", "job", placement.JobID, "allocations", len(placement.Allocations))
	case placement.JobID != "":
		s.metrics.plans.WithLabelValues("pending").Inc()
		s.logger.Info("job pending", "job", placement.JobID, "reasons", placement.Reasons)
	}
	for _, rs := range cmd.Growth {
		s.metrics.resizes.WithLabelValues("grow").Inc()
		s.logger.Info("job membership changed", "job", rs.JobId, "kind", "grow", "added", len(rs.Add), "removed", 0, "reason", rs.Reason)
	}
	return true, nil
}

// planCommand is the Raft command of a decision; job is the job placed (nil for growth).
func planCommand(job *cohortv1.Job, pr scheduler.PlanResult) *cohortv1.ApplyPlanCommand {
	cmd := &cohortv1.ApplyPlanCommand{}
	if pr.Preempts() {
		cmd.PreemptorJobId = job.GetId()
	}
	for _, rs := range pr.Shrinks {
		cmd.Shrinks = append(cmd.Shrinks, &cohortv1.ResizeJobCommand{JobId: rs.JobID, Generation: rs.Generation,
			RemoveAllocationIds: rs.Remove, Reason: fmt.Sprintf("shrunk for job %s (priority %d)", job.GetId(), job.GetPriority())})
	}
	for _, ev := range pr.Evictions {
		cmd.Evictions = append(cmd.Evictions, &cohortv1.PlanEviction{JobId: ev.JobID, Generation: ev.Generation,
			Reason: fmt.Sprintf("preempted by job %s (priority %d)", job.GetId(), job.GetPriority())})
	}
	if p := pr.Placement; p.JobID != "" {
		c := &cohortv1.CommitPlanCommand{JobId: p.JobID}
		if p.Feasible() {
			c.Allocations = p.Allocations
		} else {
			c.PendingReasons = p.Reasons
		}
		cmd.Placements = append(cmd.Placements, c)
	}
	for _, rs := range pr.Growth {
		cmd.Growth = append(cmd.Growth, &cohortv1.ResizeJobCommand{JobId: rs.JobID, Generation: rs.Generation,
			Add: rs.Add, Reason: fmt.Sprintf("grew by %d workers", len(rs.Add))})
	}
	return cmd
}

// planSubject names the job a decision is about, for logs.
func planSubject(job *cohortv1.Job, pr scheduler.PlanResult) string {
	if job != nil {
		return job.Id
	}
	if len(pr.Growth) > 0 {
		return pr.Growth[0].JobID
	}
	return ""
}

// enforceDrainDeadlines moves the jobs off every draining node whose deadline has
// passed and that still runs tasks. It returns the next deadline still to come (zero
// when none) and whether a command failed.
func (s *Server) enforceDrainDeadlines(ctx context.Context) (next time.Time, failed bool) {
	snap := s.State().Snapshot()
	nodes, err := snap.Nodes(nil)
	if err != nil {
		return time.Time{}, true
	}
	now := s.Now()
	for _, n := range nodes {
		if n.Status != cohortv1.NodeStatus_NODE_STATUS_DRAINING || n.DrainDeadlineUnixNano == 0 {
			continue
		}
		allocs, err := snap.AllocsByNode(nil, n.Id)
		if err != nil {
			return time.Time{}, true
		}
		if !slices.ContainsFunc(allocs, func(a *cohortv1.Allocation) bool { return !state.TaskTerminal(a.State) }) {
			continue
		}
		deadline := time.Unix(0, n.DrainDeadlineUnixNano)
		if deadline.After(now) {
			if next.IsZero() || deadline.Before(next) {
				next = deadline
			}
			continue
		}
		_, err = s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_DrainNode{DrainNode: &cohortv1.DrainNodeCommand{
			NodeId: n.Id, DeadlineUnixNano: n.DrainDeadlineUnixNano}}})
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("drain deadline: could not move jobs off the node", "node", n.Id, "err", err)
			}
			failed = true
			continue
		}
		s.logger.Info("drain deadline reached: jobs moved off the node", "node", n.Id)
	}
	return next, failed
}
