package fsm

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// applySubmitJob inserts a pending job, or returns the existing job with the same
// idempotency key. Response: *SubmitJobResult.
func applySubmitJob(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	in := cmd.GetSubmitJob().GetJob()
	if in.GetId() == "" {
		return nil, fmt.Errorf("submit job: %w: job id is required", ErrInvalidCommand)
	}
	if existing, err := txn.JobByIdempotencyKey(nil, in.IdempotencyKey); err != nil {
		return nil, err
	} else if existing != nil {
		return &SubmitJobResult{Job: existing, Created: false}, nil
	}
	if existing, err := txn.JobByID(nil, in.Id); err != nil {
		return nil, err
	} else if existing != nil {
		return nil, fmt.Errorf("submit job: %w: job %q already exists", ErrInvalidCommand, in.Id)
	}
	job := proto.Clone(in).(*cohortv1.Job)
	job.State = cohortv1.JobState_JOB_STATE_PENDING
	job.StartTimeUnixNano, job.EndTimeUnixNano = 0, 0
	if job.SubmitTimeUnixNano == 0 {
		job.SubmitTimeUnixNano = cmd.TimeUnixNano
	}
	if err := txn.UpsertJob(job); err != nil {
		return nil, err
	}
	return &SubmitJobResult{Job: job, Created: true}, nil
}

// applyCancelJob cancels a non-terminal job and stops its live allocations. A terminal
// job is left as it is. Response: *CancelJobResult.
func applyCancelJob(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetCancelJob()
	stored, err := txn.JobByID(nil, c.GetJobId())
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("cancel job: %w: job %q", ErrNotFound, c.GetJobId())
	}
	if state.JobTerminal(stored.State) {
		return &CancelJobResult{Job: stored}, nil
	}
	msg := "cancelled"
	if c.Reason != "" {
		msg = "cancelled: " + c.Reason
	}
	job, err := endJob(txn, stored, cohortv1.JobState_JOB_STATE_CANCELLED, msg, cmd.TimeUnixNano, "")
	if err != nil {
		return nil, err
	}
	return &CancelJobResult{Job: job, Cancelled: true}, nil
}

// endJob moves a job to a terminal state and stops every live allocation of it except
// the one with ID keep. It returns the stored job.
func endJob(txn *state.Txn, stored *cohortv1.Job, to cohortv1.JobState, msg string, at int64, keep string) (*cohortv1.Job, error) {
	job := proto.Clone(stored).(*cohortv1.Job)
	job.State = to
	job.StatusMessage = msg
	job.EndTimeUnixNano = at
	job.PendingReasons = nil
	if err := txn.UpsertJob(job); err != nil {
		return nil, err
	}
	allocs, err := txn.AllocsByJob(nil, job.Id)
	if err != nil {
		return nil, err
	}
	for _, a := range allocs {
		if a.Id == keep || state.TaskTerminal(a.State) {
			continue
		}
		stopped := proto.Clone(a).(*cohortv1.Allocation)
		stopped.State = cohortv1.TaskState_TASK_STATE_STOPPED
		stopped.Message = "job " + strings.TrimPrefix(strings.ToLower(to.String()), "job_state_")
		if err := txn.UpsertAlloc(stopped); err != nil {
			return nil, err
		}
	}
	return job, nil
}

// applyRegisterNode upserts a node as READY with the next registration generation.
// Response: the stored *cohortv1.Node.
func applyRegisterNode(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	in := cmd.GetRegisterNode().GetNode()
	if in.GetId() == "" {
		return nil, fmt.Errorf("register node: %w: node id is required", ErrInvalidCommand)
	}
	prev, err := txn.NodeByID(nil, in.Id)
	if err != nil {
		return nil, err
	}
	node := proto.Clone(in).(*cohortv1.Node)
	node.RegistrationGeneration = 1
	if prev != nil {
		node.RegistrationGeneration = prev.RegistrationGeneration + 1
	}
	node.Status = cohortv1.NodeStatus_NODE_STATUS_READY
	if prev != nil {
		// An admin's drain and eligibility outlive a re-registration.
		node.SchedulingIneligible = prev.SchedulingIneligible
		if prev.Status == cohortv1.NodeStatus_NODE_STATUS_DRAINING {
			node.Status, node.DrainDeadlineUnixNano = prev.Status, prev.DrainDeadlineUnixNano
		}
	}
	node.LastHeartbeatUnixNano = cmd.TimeUnixNano
	if err := txn.UpsertNode(node); err != nil {
		return nil, err
	}
	return node, nil
}

// applyCommitPlan places a pending job (all of its allocations) or, with no
// allocations, records why it stays pending. Response: the stored *cohortv1.Job.
func applyCommitPlan(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	return commitPlacement(txn, cmd.GetCommitPlan(), cmd.TimeUnixNano, false)
}

// commitPlacement applies one placement (a CommitPlanCommand, alone or in a plan) and
// returns the job as stored. With checkGeneration (apply_plan only: commit_plan entries
// in existing logs must apply as they always did), an allocation planned for another
// generation than the job's is refused.
func commitPlacement(txn *state.Txn, p *cohortv1.CommitPlanCommand, at int64, checkGeneration bool) (*cohortv1.Job, error) {
	stored, err := txn.JobByID(nil, p.GetJobId())
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("commit plan: %w: job %q", ErrNotFound, p.GetJobId())
	}
	if len(p.Allocations) == 0 {
		if stored.State != cohortv1.JobState_JOB_STATE_PENDING || slices.Equal(stored.PendingReasons, p.PendingReasons) {
			return stored, nil
		}
		job := proto.Clone(stored).(*cohortv1.Job)
		job.PendingReasons = slices.Clone(p.PendingReasons)
		if err := txn.UpsertJob(job); err != nil {
			return nil, err
		}
		return job, nil
	}
	if stored.State != cohortv1.JobState_JOB_STATE_PENDING {
		return nil, fmt.Errorf("commit plan: %w: job %q is %s", ErrNotPending, stored.Id, stored.State)
	}
	job := proto.Clone(stored).(*cohortv1.Job)
	if job.Generation == 0 {
		job.Generation = 1
	}
	seen := map[string]bool{}
	for _, in := range p.Allocations {
		if in.GetId() == "" || in.JobId != job.Id || in.NodeId == "" || seen[in.Id] {
			return nil, fmt.Errorf("commit plan: %w: allocation %q (job %q, node %q) is malformed or repeated",
				ErrInvalidCommand, in.GetId(), in.GetJobId(), in.GetNodeId())
		}
		if checkGeneration && in.Generation != 0 && in.Generation != job.Generation {
			return nil, fmt.Errorf("commit plan: %w: allocation %q was planned for generation %d, job %q is at %d",
				ErrStaleGeneration, in.Id, in.Generation, job.Id, job.Generation)
		}
		seen[in.Id] = true
		if existing, err := txn.AllocByID(nil, in.Id); err != nil {
			return nil, err
		} else if existing != nil {
			return nil, fmt.Errorf("commit plan: %w: allocation %q already exists", ErrInvalidCommand, in.Id)
		}
		alloc := proto.Clone(in).(*cohortv1.Allocation)
		alloc.State = cohortv1.TaskState_TASK_STATE_PENDING
		if alloc.Generation == 0 {
			alloc.Generation = job.Generation
		}
		if err := txn.UpsertAlloc(alloc); err != nil {
			return nil, err
		}
	}
	job.State = cohortv1.JobState_JOB_STATE_RUNNING
	job.ActiveWorkers = 0 // every worker of the spec is placed
	job.StartTimeUnixNano = at
	job.PendingReasons = nil
	job.StatusMessage = fmt.Sprintf("placed %d allocations", len(p.Allocations))
	if err := txn.UpsertJob(job); err != nil {
		return nil, err
	}
	return job, nil
}

// applyUpdateTasks applies a batch of task reports in order. Reports about unknown or
// terminal allocations are ignored; terminal jobs never change; a checkpoint pointer
// reported from another generation than the job's is refused (the rest of its report
// applies). Response: *UpdateTasksResult.
func applyUpdateTasks(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	res := &UpdateTasksResult{}
	for _, r := range cmd.GetUpdateTasks().GetReports() {
		if err := applyTaskReport(txn, r, cmd.TimeUnixNano, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func applyTaskReport(txn *state.Txn, r *cohortv1.TaskReport, at int64, res *UpdateTasksResult) error {
	stored, err := txn.AllocByID(nil, r.GetAllocationId())
	if err != nil {
		return err
	}
	if stored == nil || state.TaskTerminal(stored.State) || (r.JobId != "" && r.JobId != stored.JobId) {
		return nil
	}
	storedJob, err := txn.JobByID(nil, stored.JobId)
	if err != nil {
		return err
	}
	if storedJob == nil {
		return nil
	}

	if r.State != cohortv1.TaskState_TASK_STATE_UNSPECIFIED || r.Message != "" {
		alloc := proto.Clone(stored).(*cohortv1.Allocation)
		if r.State != cohortv1.TaskState_TASK_STATE_UNSPECIFIED {
			alloc.State = r.State
		}
		alloc.Message = r.Message
		if !proto.Equal(alloc, stored) {
			if err := txn.UpsertAlloc(alloc); err != nil {
				return err
			}
		}
	}
	if state.JobTerminal(storedJob.State) {
		return nil
	}

	job := proto.Clone(storedJob).(*cohortv1.Job)
	if r.Progress != nil {
		job.Progress = proto.Clone(r.Progress).(*cohortv1.JobProgress)
	}
	switch {
	case r.ExportedFrom != nil:
		// The final report's metrics are those of the exported checkpoint: they replace
		// the last epoch's rather than merge with them.
		job.Metrics = maps.Clone(r.Metrics)
		job.ExportedFrom = proto.Clone(r.ExportedFrom).(*cohortv1.ExportedFrom)
	case len(r.Metrics) > 0:
		if job.Metrics == nil {
			job.Metrics = map[string]float64{}
		}
		maps.Copy(job.Metrics, r.Metrics)
	}
	if r.EarlyStop != nil {
		job.EarlyStop = proto.Clone(r.EarlyStop).(*cohortv1.EarlyStop)
		job.StatusMessage = "stopping early: " + earlyStopMessage(job.EarlyStop)
	}
	if r.Checkpoint != "" {
		// Only the current generation moves the checkpoint pointer: a task of an older
		// membership (its report delayed past a change) must not. A report that does not
		// say its generation (0, an older agent) is taken as current.
		if r.Generation != 0 && r.Generation != job.Generation {
			res.StaleCheckpoints = append(res.StaleCheckpoints, StaleCheckpoint{JobID: job.Id, AllocationID: stored.Id,
				Generation: r.Generation, JobGeneration: job.Generation, Checkpoint: r.Checkpoint})
		} else {
			job.Checkpoint = r.Checkpoint
		}
	}
	if len(r.Exports) > 0 {
		job.Exports = slices.Clone(r.Exports)
	}
	if r.Report != "" {
		job.Report = r.Report
	}
	if r.Gate != nil {
		job.Gate = proto.Clone(r.Gate).(*cohortv1.GateResult)
	}
	if !proto.Equal(job, storedJob) {
		if err := txn.UpsertJob(job); err != nil {
			return err
		}
	}
	if err := recordSearchEpoch(txn, job, r); err != nil {
		return err
	}
	if r.State == cohortv1.TaskState_TASK_STATE_FAILED && !r.Permanent && stored.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD &&
		job.State == cohortv1.JobState_JOB_STATE_RUNNING {
		// A replicated shard's copy failed: its other copy carries on (replicas.go).
		msg := fmt.Sprintf("%s %d failed: %s", taskNoun(stored.Kind), stored.Index, r.Message)
		if _, ok, err := promoteBackups(txn, job, map[string]bool{stored.Id: true}, msg); err != nil || ok {
			return err
		}
		if job.GetShardReplicas() >= 2 {
			// No live copy of the shard is left: back to the checkpoint, as for a lost
			// node, rather than failing the job.
			_, err := requeueJob(txn, job, msg, true, at)
			return err
		}
	}

	switch {
	case r.State == cohortv1.TaskState_TASK_STATE_SUCCEEDED &&
		stored.Kind == cohortv1.TaskKind_TASK_KIND_WORKER && stored.Index == 0:
		_, err = endJob(txn, job, cohortv1.JobState_JOB_STATE_SUCCEEDED, succeededMessage(job), at, stored.Id)
	case r.State == cohortv1.TaskState_TASK_STATE_FAILED && r.Permanent &&
		(stored.Kind == cohortv1.TaskKind_TASK_KIND_WORKER || stored.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD):
		// No other worker, restart or replacement can cure it (missing data, a label not
		// in the data): the job fails at once with the task's message, without shrinking.
		msg := fmt.Sprintf("%s %d failed: %s", taskNoun(stored.Kind), stored.Index, r.Message)
		_, err = endJob(txn, job, cohortv1.JobState_JOB_STATE_FAILED, msg, at, stored.Id)
	case r.State == cohortv1.TaskState_TASK_STATE_FAILED && stored.Kind == cohortv1.TaskKind_TASK_KIND_WORKER &&
		job.State == cohortv1.JobState_JOB_STATE_RUNNING && canShrinkWithout(txn, job, stored.Id):
		// An elastic job goes on with the other workers.
		msg := fmt.Sprintf("worker %d failed: %s", stored.Index, r.Message)
		_, err = resizeJob(txn, job, map[string]bool{stored.Id: true}, nil, msg)
	case r.State == cohortv1.TaskState_TASK_STATE_FAILED &&
		(stored.Kind == cohortv1.TaskKind_TASK_KIND_WORKER || stored.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD):
		msg := fmt.Sprintf("%s %d failed: %s", taskNoun(stored.Kind), stored.Index, r.Message)
		_, err = endJob(txn, job, cohortv1.JobState_JOB_STATE_FAILED, msg, at, stored.Id)
	}
	return err
}

// succeededMessage is a succeeded job's status: "succeeded", with "; stopped early
// after epoch E (step S): <why>" when early stopping ended training and "; exported the
// best checkpoint, step S (epoch E, val_auc 0.8321)" when the export is not the last
// step's, and with a failed export gate "; export blocked: <each failing figure>".
func succeededMessage(job *cohortv1.Job) string {
	msg := "succeeded"
	if es := job.GetEarlyStop(); es != nil {
		msg += "; stopped early " + earlyStopMessage(es)
	}
	if e := job.GetExportedFrom(); e != nil && e.Metric != "" && (job.GetEarlyStop() != nil || e.Step != job.GetProgress().GetTotalSteps()) {
		msg += fmt.Sprintf("; exported the best checkpoint, step %d (epoch %d, %s %s)", e.Step, e.Epoch, e.Metric,
			strconv.FormatFloat(e.Score, 'f', 4, 64))
	}
	if g := job.GetGate(); g != nil && !g.Passed {
		msg += "; export blocked: " + strings.Join(g.Reasons, "; ")
	}
	return msg
}

// earlyStopMessage says where and why early stopping ended a job's training: "after
// epoch E (step S): <reason>".
func earlyStopMessage(es *cohortv1.EarlyStop) string {
	return fmt.Sprintf("after epoch %d (step %d): %s", es.Epoch, es.Step, es.Reason)
}

// applyOverrideGate records an export of a succeeded job whose gate failed: who, why
// and when (the proposer's time). Response: the stored *cohortv1.Job.
func applyOverrideGate(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetOverrideGate()
	o := c.GetOverride()
	switch {
	case c.GetJobId() == "":
		return nil, fmt.Errorf("override gate: %w: job id is required", ErrInvalidCommand)
	case o == nil || o.Reason == "" || o.By == "":
		return nil, fmt.Errorf("override gate: %w: an override needs who and why", ErrInvalidCommand)
	}
	stored, err := txn.JobByID(nil, c.GetJobId())
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("override gate: %w: job %q", ErrNotFound, c.GetJobId())
	}
	if k := o.GetRequestKey(); k != "" {
		for _, prev := range stored.GetGate().GetOverrides() {
			if prev.GetRequestKey() == k {
				// The same override applied again (a retry whose first try committed).
				return stored, nil
			}
		}
	}
	switch {
	case stored.State != cohortv1.JobState_JOB_STATE_SUCCEEDED:
		return nil, fmt.Errorf("override gate: %w: job %q is %s; only a succeeded job's gate can be overridden",
			ErrGateNotOverridable, stored.Id, jobStateWord(stored.State))
	case stored.Gate == nil || stored.Gate.Passed:
		return nil, fmt.Errorf("override gate: %w: job %q has no failed export gate to override",
			ErrGateNotOverridable, stored.Id)
	}
	job := proto.Clone(stored).(*cohortv1.Job)
	rec := proto.Clone(o).(*cohortv1.GateOverride)
	rec.TimeUnixNano = cmd.GetTimeUnixNano()
	job.Gate.Overrides = append(job.Gate.Overrides, rec)
	if err := txn.UpsertJob(job); err != nil {
		return nil, err
	}
	return job, nil
}

// taskNoun names a task kind in messages.
func taskNoun(k cohortv1.TaskKind) string {
	if k == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
		return "parameter-server shard"
	}
	return "worker"
}

// applyNodeStatus sets a node's status and, when given, its heartbeat time.
// Response: the stored *cohortv1.Node.
func applyNodeStatus(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetNodeStatus()
	stored, err := txn.NodeByID(nil, c.GetNodeId())
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, fmt.Errorf("node status: %w: node %q", ErrNotFound, c.GetNodeId())
	}
	if c.Status == cohortv1.NodeStatus_NODE_STATUS_UNSPECIFIED {
		return nil, fmt.Errorf("node status: %w: status is required", ErrInvalidCommand)
	}
	node := proto.Clone(stored).(*cohortv1.Node)
	node.Status = c.Status
	if stored.Status == cohortv1.NodeStatus_NODE_STATUS_DRAINING && c.Status == cohortv1.NodeStatus_NODE_STATUS_READY {
		node.Status = stored.Status // a heartbeat does not end a drain
	}
	if c.HeartbeatUnixNano != 0 {
		node.LastHeartbeatUnixNano = c.HeartbeatUnixNano
	}
	if proto.Equal(node, stored) {
		return stored, nil
	}
	if err := txn.UpsertNode(node); err != nil {
		return nil, err
	}
	if node.Status == cohortv1.NodeStatus_NODE_STATUS_DOWN && stored.Status != cohortv1.NodeStatus_NODE_STATUS_DOWN {
		// The node's tasks are lost: their jobs are placed again from their last
		// checkpoint, within their restart budget.
		if err := requeueJobsOnNode(txn, node.Id, "node "+node.Id+" went down", true, cmd.TimeUnixNano); err != nil {
			return nil, err
		}
	}
	return node, nil
}

// applyRegisterCoordinator records a coordinator voter's Raft and gRPC addresses. A
// record equal to the stored one changes nothing.
func applyRegisterCoordinator(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetRegisterCoordinator().GetCoordinator()
	if c.GetId() == "" || c.GetGrpcAddress() == "" {
		return nil, fmt.Errorf("register coordinator: %w: id and grpc_address are required", ErrInvalidCommand)
	}
	stored, err := txn.CoordinatorByID(nil, c.Id)
	if err != nil {
		return nil, err
	}
	if stored != nil && proto.Equal(stored, c) {
		return stored, nil
	}
	c = proto.Clone(c).(*cohortv1.Coordinator)
	if err := txn.UpsertCoordinator(c); err != nil {
		return nil, err
	}
	return c, nil
}
