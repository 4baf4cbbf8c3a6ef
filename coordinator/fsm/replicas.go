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
