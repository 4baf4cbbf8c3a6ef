package api

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ClusterMismatchPrefix begins the message of the FailedPrecondition error a coordinator
// answers an agent that names another cluster's ID: the agent joined another cluster,
// and a multi-address connection tries its next coordinator (node.DialFailover).
const ClusterMismatchPrefix = "cluster mismatch"

// IsClusterMismatch reports whether err is (or wraps) a coordinator's refusal of an
// agent of another cluster.
func IsClusterMismatch(err error) bool {
	st, ok := status.FromError(err) // a wrapped status keeps its code, in the whole message
	return ok && st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), ClusterMismatchPrefix+":")
}

// checkClusterID refuses a node agent that joined another cluster than this
// coordinator's. An agent that names none (its first registration) and a coordinator
// that has none yet (the first leader has not recorded it) are let through.
func (s *agentService) checkClusterID(nodeID, agentCluster string) error {
	own := s.b.State().ClusterID()
	if agentCluster == "" || own == "" || agentCluster == own {
		return nil
	}
	s.logger.Warn("node agent of another cluster refused", "node", nodeID, "agent_cluster_id", agentCluster, "cluster_id", own)
	return status.Error(codes.FailedPrecondition, fmt.Sprintf(
		"%s: node %q joined cluster %s, but this coordinator belongs to cluster %s", ClusterMismatchPrefix, nodeID, agentCluster, own))
}
