package fsm

import (
	"fmt"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ApplyPlanResult is the response value of an ApplyPlan command: the jobs it changed,
// as stored after it, by part of the plan.
type ApplyPlanResult struct {
	Shrunk, Evicted, Placed, Grown []*cohortv1.Job
}

// applyApplyPlan applies one scheduling decision of the leader in the command's one
// transaction: the shrinks, then the evictions, then the placements, then the growth.
// Any part refused refuses the whole plan (the transaction is aborted, nothing
// changes). Response: *ApplyPlanResult.
func applyApplyPlan(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetApplyPlan()
	if len(c.GetShrinks())+len(c.GetEvictions())+len(c.GetPlacements())+len(c.GetGrowth()) == 0 {
		return nil, fmt.Errorf("apply plan: %w: empty plan", ErrInvalidCommand)
	}
	res := &ApplyPlanResult{}
	for _, rs := range c.GetShrinks() {
		if len(rs.GetAdd()) > 0 || len(rs.GetRemoveAllocationIds()) == 0 {
			return nil, fmt.Errorf("apply plan: %w: a shrink of job %q must only remove workers", ErrInvalidCommand, rs.GetJobId())
		}
		job, err := resizeFromCommand(txn, rs)
		if err != nil {
			return nil, fmt.Errorf("apply plan: %w", err)
		}
		res.Shrunk = append(res.Shrunk, job)
	}
	for _, ev := range c.GetEvictions() {
		reason := ev.GetReason()
		if reason == "" {
			reason = "preempted by job " + c.GetPreemptorJobId()
		}
		job, err := evictJob(txn, ev.GetJobId(), ev.GetGeneration(), reason, cmd.TimeUnixNano)
		if err != nil {
			return nil, fmt.Errorf("apply plan: %w", err)
		}
		res.Evicted = append(res.Evicted, job)
	}
	for _, p := range c.GetPlacements() {
		job, err := commitPlacement(txn, p, cmd.TimeUnixNano, true)
		if err != nil {
			return nil, fmt.Errorf("apply plan: %w", err)
		}
		res.Placed = append(res.Placed, job)
	}
	for _, rs := range c.GetGrowth() {
		if len(rs.GetRemoveAllocationIds()) > 0 || len(rs.GetAdd()) == 0 {
			return nil, fmt.Errorf("apply plan: %w: growth of job %q must only add workers", ErrInvalidCommand, rs.GetJobId())
		}
		job, err := resizeFromCommand(txn, rs)
		if err != nil {
			return nil, fmt.Errorf("apply plan: %w", err)
		}
		res.Grown = append(res.Grown, job)
	}
	return res, nil
}
