package fsm

import (
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Elastic membership. A running job's worker membership changes without restarting
// its surviving tasks: resizeJob stops the workers that leave, adds the ones that join,
// bumps the job's generation, renumbers the live workers 0..n-1 (survivors keep their
// relative order, newcomers come last) and moves every live allocation, parameter-server
// shards included, to the new generation. The agents see the changed allocations on
// their assignment streams: shards install the new generation (their sync barrier
// shrinks or grows at once) and workers carry on at the shards' current step under the
// new rank and world size. Only a job that would fall below workers.min, or that lost a
// parameter-server shard, is sent back to pending to resume from its checkpoint.

// MinWorkers returns the fewest workers job keeps running with (workers.min; the
// worker count when unset).
func MinWorkers(job *cohortv1.Job) int32 {
	if m := job.GetMinWorkers(); m > 0 && m < job.GetWorkerCount() {
		return m
	}
	return job.GetWorkerCount()
}

// MaxWorkers returns the most workers job may grow to (workers.max; the worker count
// when unset).
func MaxWorkers(job *cohortv1.Job) int32 {
	return max(job.GetMaxWorkers(), job.GetWorkerCount())
}

// ActiveWorkers returns the number of worker ranks in job's current membership.
func ActiveWorkers(job *cohortv1.Job) int32 {
	if n := job.GetActiveWorkers(); n > 0 {
		return n
	}
	return job.GetWorkerCount()
}

// Elastic reports whether job's worker membership may change while it runs.
func Elastic(job *cohortv1.Job) bool {
	return MinWorkers(job) < job.GetWorkerCount() || MaxWorkers(job) > job.GetWorkerCount()
}

// liveWorkers returns job's live worker allocations in rank order.
func liveWorkers(allocs []*cohortv1.Allocation) []*cohortv1.Allocation {
	var out []*cohortv1.Allocation
	for _, a := range allocs {
		if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER && !state.TaskTerminal(a.State) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b *cohortv1.Allocation) int {
		return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Id, b.Id))
	})
	return out
}

// resizeJob changes a running job's worker membership: the live allocations in remove
// are stopped with reason, add are placed as new workers, and the job moves to the
// next generation with its live workers renumbered (see the comment at the top of this
// file). It refuses (ErrInvalidCommand) a change that leaves fewer than MinWorkers or
// more than MaxWorkers workers. It returns the job as stored.
func resizeJob(txn *state.Txn, stored *cohortv1.Job, remove map[string]bool, add []*cohortv1.Allocation, reason string) (*cohortv1.Job, error) {
	if stored.State != cohortv1.JobState_JOB_STATE_RUNNING {
		return nil, fmt.Errorf("resize job: %w: job %q is %s, not running", ErrInvalidCommand, stored.Id, stored.State)
	}
	allocs, err := txn.AllocsByJob(nil, stored.Id)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*cohortv1.Allocation, len(allocs))
	for _, a := range allocs {
		byID[a.Id] = a
	}
	for id := range remove {
		a := byID[id]
		if a == nil || a.Kind != cohortv1.TaskKind_TASK_KIND_WORKER {
			return nil, fmt.Errorf("resize job: %w: %q is not a worker allocation of job %q", ErrInvalidCommand, id, stored.Id)
		}
	}
	live := liveWorkers(allocs)
	if len(add) > 0 && int32(len(live)) < ActiveWorkers(stored) {
		// A worker ended without a membership change: it finished its steps, and so
		// does the job; a newcomer would have none to train.
		return nil, fmt.Errorf("resize job: %w: job %q is finishing (%d of its %d workers live)",
			ErrInvalidCommand, stored.Id, len(live), ActiveWorkers(stored))
	}
	var keep []*cohortv1.Allocation
	for _, a := range live {
		if !remove[a.Id] {
			keep = append(keep, a)
		}
	}
	n := int32(len(keep) + len(add))
	if n < MinWorkers(stored) || n > MaxWorkers(stored) || n < 1 {
		return nil, fmt.Errorf("resize job: %w: job %q would have %d workers, outside [%d,%d]",
			ErrInvalidCommand, stored.Id, n, MinWorkers(stored), MaxWorkers(stored))
	}
	job := proto.Clone(stored).(*cohortv1.Job)
	job.Generation = max(job.Generation, 1) + 1
	job.ActiveWorkers = n
	job.StatusMessage = fmt.Sprintf("%s; %d workers in generation %d", reason, n, job.Generation)
	if err := txn.UpsertJob(job); err != nil {
		return nil, err
	}
	for id := range remove {
		a := byID[id]
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
	for i, a := range keep {
		moved := proto.Clone(a).(*cohortv1.Allocation)
		moved.Index, moved.Generation = int32(i), job.Generation
		if err := txn.UpsertAlloc(moved); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for i, in := range add {
		if in.GetId() == "" || in.JobId != job.Id || in.NodeId == "" || in.Kind != cohortv1.TaskKind_TASK_KIND_WORKER || seen[in.Id] || byID[in.Id] != nil {
			return nil, fmt.Errorf("resize job: %w: new worker allocation %q (job %q, node %q) is malformed, repeated or exists",
				ErrInvalidCommand, in.GetId(), in.GetJobId(), in.GetNodeId())
		}
		seen[in.Id] = true
		alloc := proto.Clone(in).(*cohortv1.Allocation)
		alloc.State = cohortv1.TaskState_TASK_STATE_PENDING
		alloc.Index, alloc.Generation = int32(len(keep)+i), job.Generation
		if err := txn.UpsertAlloc(alloc); err != nil {
			return nil, err
		}
	}
	for _, a := range allocs {
		if a.Kind != cohortv1.TaskKind_TASK_KIND_PS_SHARD || state.TaskTerminal(a.State) {
			continue
		}
		moved := proto.Clone(a).(*cohortv1.Allocation)
		moved.Generation = job.Generation
		if err := txn.UpsertAlloc(moved); err != nil {
			return nil, err
		}
	}
	return job, nil
}

// loseTasks handles the loss of some of a running job's live allocations (their node
// went down, or a worker task failed): an elastic job that keeps at least MinWorkers
// workers and every shard continues with the survivors (resizeJob); any other job is
// requeued from its checkpoint, spending a restart when restart is set. lost holds
// allocation IDs.
func loseTasks(txn *state.Txn, job *cohortv1.Job, lost map[string]bool, reason string, restart bool, at int64) (*cohortv1.Job, error) {
	allocs, err := txn.AllocsByJob(nil, job.Id)
	if err != nil {
		return nil, err
	}
	shardLost, survivors := false, int32(0)
	for _, a := range allocs {
		switch {
		case !lost[a.Id]:
			if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER && !state.TaskTerminal(a.State) {
				survivors++
			}
		case a.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD:
			shardLost = true
		}
	}
	if !shardLost && survivors >= 1 && survivors >= MinWorkers(job) && Elastic(job) {
		return resizeJob(txn, job, lost, nil, reason)
	}
	if shardLost {
		if out, ok, err := promoteBackups(txn, job, lost, reason); err != nil || ok {
			return out, err
		}
	}
	return requeueJob(txn, job, reason, restart, at)
}

// applyResizeJob applies a membership change the leader planned (growth into free
// capacity, or a shrink that makes room for a higher-priority job). Response: the
// job as stored.
func applyResizeJob(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	return resizeFromCommand(txn, cmd.GetResizeJob())
}

// resizeFromCommand applies one ResizeJobCommand (alone or in a plan) and returns the
// job as stored.
func resizeFromCommand(txn *state.Txn, c *cohortv1.ResizeJobCommand) (*cohortv1.Job, error) {
	stored, err := txn.JobByID(nil, c.GetJobId())
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("resize job: %w: job %q", ErrNotFound, c.GetJobId())
	}
	if len(c.GetAdd()) == 0 && len(c.GetRemoveAllocationIds()) == 0 {
		return nil, fmt.Errorf("resize job: %w: nothing to add or remove", ErrInvalidCommand)
	}
	if c.GetGeneration() != 0 && c.GetGeneration() != stored.Generation {
		return nil, fmt.Errorf("resize job: %w: job %q is at generation %d, the change was planned at %d",
			ErrStaleGeneration, stored.Id, stored.Generation, c.GetGeneration())
	}
	remove := map[string]bool{}
	for _, id := range c.GetRemoveAllocationIds() {
		remove[id] = true
	}
	reason := c.GetReason()
	if reason == "" {
		reason = "membership changed"
	}
	return resizeJob(txn, stored, remove, c.GetAdd(), reason)
}

// canShrinkWithout reports whether elastic job keeps at least MinWorkers live workers
// (and at least one) without allocation id.
func canShrinkWithout(txn *state.Txn, job *cohortv1.Job, id string) bool {
	if !Elastic(job) {
		return false
	}
	allocs, err := txn.AllocsByJob(nil, job.Id)
	if err != nil {
		return false
	}
	n := int32(0)
	for _, a := range liveWorkers(allocs) {
		if a.Id != id {
			n++
		}
	}
	return n >= 1 && n >= MinWorkers(job)
}
