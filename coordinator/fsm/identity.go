package fsm

import (
	"errors"
	"fmt"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrClusterIDSet means a set_cluster_id names an ID other than the one recorded: the
// cluster's identity never changes.
var ErrClusterIDSet = errors.New("fsm: the cluster ID is already set")

// applySetClusterID records the cluster ID the proposer made. It applies once: the same
// ID again changes nothing (two leaders of a new cluster may both propose one), another
// ID is refused. Response: the stored *ClusterIdentity.
func applySetClusterID(txn *state.Txn, cmd *cohortv1.Command) (any, error) {
	id := cmd.GetSetClusterId().GetClusterId()
	if err := state.CheckClusterID(id); err != nil {
		return nil, fmt.Errorf("fsm: set cluster ID: %w", err)
	}
	cur, err := txn.ClusterIdentity(nil)
	if err != nil {
		return nil, err
	}
	if cur != nil {
		if cur.GetId() != id {
			return nil, fmt.Errorf("%w: it is %q, not %q", ErrClusterIDSet, cur.GetId(), id)
		}
		return cur, nil
	}
	stored := &cohortv1.ClusterIdentity{Id: id, CreatedUnixNano: cmd.GetTimeUnixNano()}
	if err := txn.SetClusterIdentity(stored); err != nil {
		return nil, err
	}
	return stored, nil
}
