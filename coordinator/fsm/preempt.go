package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// applyPreemptJobs sends every victim (it must be running) back to pending: its live
// allocations are stopped, its generation is bumped, its checkpoint pointer is kept so
// it resumes from there when placed again; no restart is spent. Response: the victims
// as stored.
func applyPreemptJobs(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetPreemptJobs()
	if len(c.GetVictimJobIds()) == 0 {
		return nil, fmt.Errorf("preempt jobs: %w: no victims", ErrInvalidCommand)
	}
	reason := c.GetReason()
	if reason == "" {
		reason = "preempted by job " + c.GetPreemptorJobId()
	}
	var out []*cohortv1.Job
	for _, id := range c.GetVictimJobIds() {
		job, err := evictJob(txn, id, 0, reason, cmd.TimeUnixNano)
		if err != nil {
			return nil, err
		}
		out = append(out, job)
	}
	return out, nil
}

// evictJob sends running job id back to pending (requeueJob, spending no restart) and
// returns it as stored. With gen set, a job at another generation is refused.
func evictJob(txn *state.Txn, id string, gen uint64, reason string, at int64) (*cohortv1.Job, error) {
	stored, err := txn.JobByID(nil, id)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("preempt jobs: %w: job %q", ErrNotFound, id)
	}
	if stored.State != cohortv1.JobState_JOB_STATE_RUNNING {
		return nil, fmt.Errorf("preempt jobs: %w: job %q is %s, not running", ErrInvalidCommand, id, stored.State)
	}
	if gen != 0 && stored.Generation != gen {
		return nil, fmt.Errorf("preempt jobs: %w: job %q is at generation %d, the eviction was planned at %d",
			ErrStaleGeneration, id, stored.Generation, gen)
	}
	return requeueJob(txn, stored, reason, false, at)
}

// requeueJob sends a running job back to pending to be placed again: every live
// allocation of it is stopped with reason, its generation is bumped (so its old tasks'
// writes are refused) and its checkpoint pointer is kept, so it resumes from there.
// restart says whether this spends one of its restart budget: when the budget is
// spent, the job fails instead. It returns the job as stored.
func requeueJob(txn *state.Txn, stored *cohortv1.Job, reason string, restart bool, at int64) (*cohortv1.Job, error) {
	if restart && stored.Restarts >= stored.MaxRestarts {
		return endJob(txn, stored, cohortv1.JobState_JOB_STATE_FAILED,
			fmt.Sprintf("%s; restart budget of %d spent", reason, stored.MaxRestarts), at, "")
	}
	job := proto.Clone(stored).(*cohortv1.Job)
	job.State = cohortv1.JobState_JOB_STATE_PENDING
	job.Generation = max(job.Generation, 1) + 1
	job.ActiveWorkers = 0 // placed again with workers.count workers
	job.StatusMessage = reason
	job.PendingReasons = []string{reason}
	if restart {
		job.Restarts++
	}
	if err := txn.UpsertJob(job); err != nil {
		return nil, err
	}
	allocs, err := txn.AllocsByJob(nil, job.Id)
	if err != nil {
		return nil, err
	}
	for _, a := range allocs {
		if state.TaskTerminal(a.State) {
			continue
		}
		stopped := proto.Clone(a).(*cohortv1.Allocation)
		stopped.State = cohortv1.TaskState_TASK_STATE_STOPPED
		stopped.Message = reason
		if err := txn.UpsertAlloc(stopped); err != nil {
			return nil, err
		}
	}
	return job, nil
}

// requeueJobsOnNode moves every running job off node: an elastic job that keeps enough
// workers and all of its shards goes on with its survivors (loseTasks), any other job
// is requeued from its checkpoint. With lost set (the node went down) a requeued job
// spends a restart; a drain (lost false) spends none.
func requeueJobsOnNode(txn *state.Txn, nodeID, reason string, lost bool, at int64) error {
	allocs, err := txn.AllocsByNode(nil, nodeID)
	if err != nil {
		return err
	}
	onNode := map[string]map[string]bool{} // job ID -> live allocation IDs on the node
	var order []string
	for _, a := range allocs {
		if state.TaskTerminal(a.State) {
			continue
		}
		if onNode[a.JobId] == nil {
			onNode[a.JobId] = map[string]bool{}
			order = append(order, a.JobId)
		}
		onNode[a.JobId][a.Id] = true
	}
	for _, id := range order {
		job, err := txn.JobByID(nil, id)
		if err != nil {
			return err
		}
		if job == nil || job.State != cohortv1.JobState_JOB_STATE_RUNNING {
			continue
		}
		// A drain (lost false) moves work off as a loss does, without spending a restart:
		// an elastic job that keeps enough workers and its shards goes on without the
		// node's workers (and may grow again on other nodes); others are requeued.
		if _, err = loseTasks(txn, job, onNode[id], reason, lost, at); err != nil {
			return err
		}
	}
	return nil
}

// applyDrainNode starts or cancels a node's drain. Response: the stored *Node.
func applyDrainNode(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetDrainNode()
	stored, err := txn.NodeByID(nil, c.GetNodeId())
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("drain node: %w: node %q", ErrNotFound, c.GetNodeId())
	}
	node := proto.Clone(stored).(*cohortv1.Node)
	switch {
	case c.GetCancel():
		if node.Status == cohortv1.NodeStatus_NODE_STATUS_DRAINING {
			node.Status = cohortv1.NodeStatus_NODE_STATUS_READY
		}
		node.DrainDeadlineUnixNano = 0
	case node.Status == cohortv1.NodeStatus_NODE_STATUS_DOWN:
		return nil, fmt.Errorf("drain node: %w: node %q is down", ErrInvalidCommand, node.Id)
	default:
		node.Status = cohortv1.NodeStatus_NODE_STATUS_DRAINING
		node.DrainDeadlineUnixNano = c.GetDeadlineUnixNano()
	}
	if !proto.Equal(node, stored) {
		if err := txn.UpsertNode(node); err != nil {
			return nil, err
		}
	}
	if !c.GetCancel() && c.GetDeadlineUnixNano() <= cmd.TimeUnixNano {
		if err := requeueJobsOnNode(txn, node.Id, "node "+node.Id+" drained", false, cmd.TimeUnixNano); err != nil {
			return nil, err
		}
	}
	return node, nil
}

// applySetNodeEligibility marks a node eligible or ineligible for new tasks.
// Response: the stored *Node.
func applySetNodeEligibility(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetSetNodeEligibility()
	stored, err := txn.NodeByID(nil, c.GetNodeId())
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("node eligibility: %w: node %q", ErrNotFound, c.GetNodeId())
	}
	if stored.SchedulingIneligible == !c.GetEligible() {
		return stored, nil
	}
	node := proto.Clone(stored).(*cohortv1.Node)
	node.SchedulingIneligible = !c.GetEligible()
	if err := txn.UpsertNode(node); err != nil {
		return nil, err
	}
	return node, nil
}
