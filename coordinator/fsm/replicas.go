package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Replicated shards (spec.resources.parameterServers.replicas: 2, issue 18).
//
// A job whose shards have backups loses no acknowledged step when a parameter-server
// copy is lost (its node went down or was drained, or its task failed): in the same
// Raft entry that records the loss, each lost primary's live backup is promoted
// (its allocation becomes replica 0) and the job's generation is bumped, so every
// shard and worker moves to the new membership at once and the workers follow the
// shard to the backup's node, continuing at the step the backup holds, which is at
// least the last acknowledged one. No checkpoint is restored and no restart is spent.
// A lost backup is only stopped: its primary goes on alone (it detaches a backup it
// cannot reach by itself). When a lost primary has no live backup (both copies
// lost), or workers were lost too, the job falls back to the checkpoint requeue.

// promoteBackups handles the loss of the allocations in lost, all of job's, when the
// job has replicated shards and every lost copy is a shard whose other copy survives.
// It reports false, changing nothing, when it cannot; the caller then requeues.
func promoteBackups(txn *state.Txn, job *cohortv1.Job, lost map[string]bool, reason string) (*cohortv1.Job, bool, error) {
	if job.GetShardReplicas() < 2 {
		return nil, false, nil
	}
	allocs, err := txn.AllocsByJob(nil, job.Id)
	if err != nil {
		return nil, false, err
	}
	type copies struct{ primary, backup *cohortv1.Allocation }
	byIndex := map[int32]*copies{}
	for _, a := range allocs {
		if a.Kind != cohortv1.TaskKind_TASK_KIND_PS_SHARD || (state.TaskTerminal(a.State) && !lost[a.Id]) {
			continue
		}
		c := byIndex[a.Index]
		if c == nil {
			c = &copies{}
			byIndex[a.Index] = c
		}
		if a.Replica == 0 {
			c.primary = a
		} else {
			c.backup = a
		}
	}
	promote := map[string]bool{} // backup allocation IDs to promote
	for _, a := range allocs {
		if !lost[a.Id] {
			continue
		}
		if a.Kind != cohortv1.TaskKind_TASK_KIND_PS_SHARD {
			return nil, false, nil // a worker too: the usual path decides
		}
		if a.Replica != 0 {
			continue
		}
		b := byIndex[a.Index].backup
		if b == nil || lost[b.Id] {
			return nil, false, nil // both copies lost: back to the checkpoint
		}
		promote[b.Id] = true
	}
	gen := job.Generation
	if len(promote) > 0 {
		gen++
	}
	for _, a := range allocs {
		if state.TaskTerminal(a.State) && !lost[a.Id] {
			continue
		}
		next := proto.Clone(a).(*cohortv1.Allocation)
		switch {
		case lost[a.Id]:
			if !state.TaskTerminal(next.State) {
				next.State = cohortv1.TaskState_TASK_STATE_STOPPED
			}
			if a.Replica == 0 {
				next.Message = fmt.Sprintf("primary lost (%s): its backup on node %s was promoted", reason, byIndex[a.Index].backup.NodeId)
			} else {
				next.Message = fmt.Sprintf("backup lost (%s): the primary goes on alone", reason)
			}
		case promote[a.Id]:
			next.Replica = 0
			next.Generation = gen
		default:
			next.Generation = gen
		}
		if !proto.Equal(next, a) {
			if err := txn.UpsertAlloc(next); err != nil {
				return nil, false, err
			}
		}
	}
	if len(promote) == 0 {
		return job, true, nil
	}
	out := proto.Clone(job).(*cohortv1.Job)
	out.Generation = gen
	out.StatusMessage = fmt.Sprintf("running; %d shard backup(s) promoted at generation %d: %s", len(promote), gen, reason)
	if err := txn.UpsertJob(out); err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// applyPlaceBackups adds new backups to a running job's replicated shards (see
// PlaceBackupsCommand). Response: the job as stored.
func applyPlaceBackups(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	c := cmd.GetPlaceBackups()
	job, err := txn.JobByID(nil, c.GetJobId())
	if err != nil {
		return nil, err
	}
	switch {
	case job == nil:
		return nil, fmt.Errorf("place backups: %w: job %q", ErrNotFound, c.GetJobId())
	case job.State != cohortv1.JobState_JOB_STATE_RUNNING || job.Generation != c.GetGeneration():
		return nil, fmt.Errorf("place backups: %w: job %q is %s at generation %d, the backups were planned at %d",
			ErrStaleGeneration, job.Id, jobStateWord(job.State), job.Generation, c.GetGeneration())
	case job.GetShardReplicas() < 2 || len(c.GetAdd()) == 0:
		return nil, fmt.Errorf("place backups: %w: job %q has %d replicas per shard, %d backups to add",
			ErrInvalidCommand, job.Id, job.GetShardReplicas(), len(c.GetAdd()))
	}
	allocs, err := txn.AllocsByJob(nil, job.Id)
	if err != nil {
		return nil, err
	}
	primary, hasBackup, ids := map[int32]string{}, map[int32]bool{}, map[string]bool{}
	for _, a := range allocs {
		ids[a.Id] = true
		if a.Kind != cohortv1.TaskKind_TASK_KIND_PS_SHARD || state.TaskTerminal(a.State) {
			continue
		}
		if a.Replica == 0 {
			primary[a.Index] = a.NodeId
		} else {
			hasBackup[a.Index] = true
		}
	}
	for _, in := range c.GetAdd() {
		node, ok := primary[in.GetIndex()]
		switch {
		case in.GetId() == "" || ids[in.GetId()] || in.GetJobId() != job.Id || in.GetKind() != cohortv1.TaskKind_TASK_KIND_PS_SHARD ||
			in.GetReplica() != 1 || in.GetNodeId() == "":
			return nil, fmt.Errorf("place backups: %w: allocation %q (job %q, kind %s, replica %d, node %q) is malformed or exists",
				ErrInvalidCommand, in.GetId(), in.GetJobId(), in.GetKind(), in.GetReplica(), in.GetNodeId())
		case !ok || hasBackup[in.GetIndex()]:
			return nil, fmt.Errorf("place backups: %w: shard %d of job %q has no live primary or already a live backup",
				ErrInvalidCommand, in.GetIndex(), job.Id)
		case node == in.GetNodeId():
			return nil, fmt.Errorf("place backups: %w: the backup of shard %d on its primary's node %s", ErrInvalidCommand, in.GetIndex(), node)
		}
		ids[in.GetId()], hasBackup[in.GetIndex()] = true, true
		a := proto.Clone(in).(*cohortv1.Allocation)
		a.State, a.Generation = cohortv1.TaskState_TASK_STATE_PENDING, job.Generation
		if err := txn.UpsertAlloc(a); err != nil {
			return nil, err
		}
	}
	return job, nil
}
