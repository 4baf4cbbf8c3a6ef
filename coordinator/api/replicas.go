package api

import (
	"github.com/hashicorp/go-memdb"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// peerAddress returns, for a PS_SHARD allocation of a job with replicated shards, the
// data address of the node of the live other copy of the same shard (the backup for
// the primary, the primary for the backup), or "" when there is none.
func peerAddress(snap *state.StateSnapshot, ws memdb.WatchSet, a *cohortv1.Allocation) (addr, nodeID string, err error) {
	allocs, err := snap.AllocsByJob(ws, a.JobId)
	if err != nil {
		return "", "", err
	}
	for _, o := range allocs {
		if o.Id == a.Id || o.Kind != cohortv1.TaskKind_TASK_KIND_PS_SHARD || o.Index != a.Index ||
			o.Replica == a.Replica || state.TaskTerminal(o.State) {
			continue
		}
		n, err := snap.NodeByID(ws, o.NodeId)
		if err != nil || n == nil {
			return "", "", err
		}
		return n.DataAddress, o.NodeId, nil
	}
	return "", "", nil
}
