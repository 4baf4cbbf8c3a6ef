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

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.schedulingLoop(ctx)
	}()
	s.metrics.leader.Set(1)
	return stopped, nil
}

// revokeLeadership stops everything establishLeadership started.
func (s *Server) revokeLeadership(schedulerStopped <-chan struct{}) {
	s.leaderReady.Store(false)
	s.metrics.leader.Set(0)
	s.heartbeats.stop()
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
// them changes (or after SchedulerRetryInterval when a pass failed).
func (s *Server) schedulingLoop(ctx context.Context) {
	for {
		ws := memdb.NewWatchSet()
		failed := s.schedulePass(ctx, ws)
		next, drainFailed := s.enforceDrainDeadlines(ctx)
		if ctx.Err() != nil {
			return
		}
		wctx, cancel := ctx, context.CancelFunc(func() {})
		switch {
		case failed || drainFailed:
			wctx, cancel = context.WithTimeout(ctx, s.config.SchedulerRetryInterval)
		case !next.IsZero():
			wctx, cancel = context.WithDeadline(ctx, next)
		}
		_ = ws.WatchCtx(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

// schedulePass runs the scheduler once over every pending job, in the order
// scheduler.Cluster.Order gives (queues by weighted fair share; in a queue, highest
// priority first, then oldest). It reports whether any plan failed to commit.
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
	var running []scheduler.Running
	runningRead := false
	// waiting is the highest priority of a pending job left unplaced by this pass: no
	// running job of that priority or lower grows into capacity it waits for.
	waiting := int32(math.MinInt32)
	for _, job := range cluster.Order(pending) {
		if ctx.Err() != nil {
			return false
		}
		plan := cluster.Place(job)
		if !plan.Feasible() {
			if !runningRead {
				running, err = scheduler.RunningJobs(snap)
				if err != nil {
					s.logger.Error("scheduling pass: read running jobs", "err", err)
					return true
				}
				runningRead = true
			}
			if shrinks, victims, _, ok := cluster.PreemptElastic(job, running); ok {
				// Shrink elastic jobs (or, when that cannot make room, evict whole
				// gangs), then place the preemptor at once on the newest state, before
				// any other job can take the freed capacity. The next pass (woken by
				// these writes) goes on with the rest.
				for _, rs := range shrinks {
					if err := s.applyResize(ctx, rs, fmt.Sprintf("shrunk for job %s (priority %d)", job.Id, job.Priority)); err != nil {
						if ctx.Err() == nil {
							s.logger.Warn("shrink not committed", "job", rs.JobID, "for", job.Id, "err", err)
						}
						return true
					}
				}
				if len(victims) > 0 {
					if err := s.preempt(ctx, job, victims); err != nil {
						if ctx.Err() == nil {
							s.logger.Warn("preemption not committed", "job", job.Id, "err", err)
						}
						return true
					}
				}
				plan = scheduler.NewCluster(s.State().Snapshot()).Place(job)
				if err := s.applyPlan(ctx, job, plan); err != nil {
					s.metrics.plans.WithLabelValues("error").Inc()
					return true
				}
				return false
			}
		}
		if !plan.Feasible() {
			waiting = max(waiting, job.Priority)
		}
		if err := s.applyPlan(ctx, job, plan); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("plan not committed", "job", job.Id, "err", err)
			}
			s.metrics.plans.WithLabelValues("error").Inc()
			failed = true
		} else if plan.Feasible() && runningRead {
			// Jobs placed earlier in the pass are preemption candidates too.
			running = append(running, scheduler.Running{Job: job, Allocs: plan.Allocations})
		}
	}
	if failed || ctx.Err() != nil {
		return failed
	}
	return s.growPass(ctx, snap, cluster, waiting)
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
		rs, ok := cluster.Grow(r)
		if !ok {
			continue
		}
		if err := s.applyResize(ctx, rs, fmt.Sprintf("grew by %d workers", len(rs.Add))); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("growth not committed", "job", rs.JobID, "err", err)
			}
			failed = true
		}
	}
	return failed
}

// applyResize is the plan applier for membership changes: it re-checks rs against the
// newest state (the job still running at the generation planned against, new workers
// still fitting) and commits it. A change the state moved under is dropped (the next
// pass plans again) without error.
func (s *Server) applyResize(ctx context.Context, rs scheduler.Resize, reason string) error {
	kind := "grow"
	if len(rs.Remove) > 0 {
		kind = "shrink"
	}
	newest := s.State().Snapshot()
	cur, err := newest.JobByID(nil, rs.JobID)
	if err != nil {
		return err
	}
	if cur == nil || cur.State != cohortv1.JobState_JOB_STATE_RUNNING || cur.Generation != rs.Generation {
		s.metrics.plans.WithLabelValues("rejected").Inc()
		return nil
	}
	if len(rs.Add) > 0 {
		if err := scheduler.Fits(newest, rs.Plan()); err != nil {
			s.logger.Debug("membership change rejected by the plan applier", "job", rs.JobID, "err", err)
			s.metrics.plans.WithLabelValues("rejected").Inc()
			return nil
		}
	}
	_, err = s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_ResizeJob{ResizeJob: &cohortv1.ResizeJobCommand{
		JobId: rs.JobID, Generation: rs.Generation, Add: rs.Add, RemoveAllocationIds: rs.Remove, Reason: reason,
	}}})
	switch {
	case errors.Is(err, fsm.ErrStaleGeneration), errors.Is(err, fsm.ErrNotFound), errors.Is(err, fsm.ErrInvalidCommand):
		s.logger.Debug("membership change refused", "job", rs.JobID, "err", err)
		s.metrics.plans.WithLabelValues("rejected").Inc()
		return nil
	case err != nil:
		return err
	}
	s.metrics.resizes.WithLabelValues(kind).Inc()
	s.logger.Info("job membership changed", "job", rs.JobID, "kind", kind, "added", len(rs.Add), "removed", len(rs.Remove), "reason", reason)
	return nil
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
	now := time.Now()
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

// preempt commits the eviction of victims (whole gangs) for job.
func (s *Server) preempt(ctx context.Context, job *cohortv1.Job, victims []string) error {
	reason := fmt.Sprintf("preempted by job %s (priority %d)", job.Id, job.Priority)
	_, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_PreemptJobs{PreemptJobs: &cohortv1.PreemptJobsCommand{
		PreemptorJobId: job.Id, VictimJobIds: victims, Reason: reason,
	}}})
	if err != nil {
		return err
	}
	s.metrics.preemptedJobs.Add(float64(len(victims)))
	s.logger.Info("jobs preempted", "for", job.Id, "priority", job.Priority, "victims", victims)
	return nil
}

// applyPlan is the plan applier: the only committer of plans. It re-checks a feasible
// plan against the newest state (the job still pending, every allocation still fitting)
// and commits it; for an infeasible plan it commits the reasons only when they changed.
func (s *Server) applyPlan(ctx context.Context, job *cohortv1.Job, plan scheduler.Plan) error {
	cmd := &cohortv1.CommitPlanCommand{JobId: job.Id}
	if !plan.Feasible() {
		if slices.Equal(job.PendingReasons, plan.Reasons) {
			s.metrics.plans.WithLabelValues("unchanged").Inc()
			return nil
		}
		cmd.PendingReasons = plan.Reasons
	} else {
		newest := s.State().Snapshot()
		cur, err := newest.JobByID(nil, job.Id)
		if err != nil {
			return err
		}
		if cur == nil || cur.State != cohortv1.JobState_JOB_STATE_PENDING {
			s.metrics.plans.WithLabelValues("rejected").Inc()
			return nil
		}
		if err := scheduler.Fits(newest, plan); err != nil {
			// The state moved under the plan; the change wakes the next pass.
			s.logger.Debug("plan rejected by the plan applier", "job", job.Id, "err", err)
			s.metrics.plans.WithLabelValues("rejected").Inc()
			return nil
		}
		cmd.Allocations = plan.Allocations
	}
	_, err := s.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_CommitPlan{CommitPlan: cmd}})
	switch {
	case errors.Is(err, fsm.ErrNotPending), errors.Is(err, fsm.ErrNotFound):
		s.metrics.plans.WithLabelValues("rejected").Inc()
		return nil
	case err != nil:
		return err
	}
	if plan.Feasible() {
		s.metrics.plans.WithLabelValues("placed").Inc()
		s.logger.Info("job placed", "job", job.Id, "allocations", len(plan.Allocations))
	} else {
		s.metrics.plans.WithLabelValues("pending").Inc()
		s.logger.Info("job pending", "job", job.Id, "reasons", plan.Reasons)
	}
	return nil
}
