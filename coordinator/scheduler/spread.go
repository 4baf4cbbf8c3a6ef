package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Shard spreading is a placement preference for a job's parameter-server shards:
// every worker pulls from and pushes to every shard each step, so two shards on one
// node share its network and CPU while another parameter-server node sits idle. The
// shards of a job therefore go first to the eligible node holding the fewest of that
// job's shards so far, and only then by the job's ranking (bin packing or spread).
// It is a preference, not a rule: when only one node has room, every shard goes there.

// spreadShards wraps the ranking less so that nodes holding fewer of the job's shards
// (counted in held) come first.
func spreadShards(held map[*candidate]int, less func(a, b *candidate) bool) func(a, b *candidate) bool {
	return func(a, b *candidate) bool {
		if held[a] != held[b] {
			return held[a] < held[b]
		}
		return less(a, b)
	}
}

// shardNote explains where a placed job's shards went (nil for fewer than two shards):
// over how many parameter-server nodes, and why not more when some share a node.
func shardNote(allocs []*cohortv1.Allocation, eligible int) []string {
	var shards []string
	nodes := map[string]int{}
	for _, a := range allocs {
		if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD && !IsBackup(a) {
			shards = append(shards, fmt.Sprintf("ps %d on %s", a.GetIndex(), a.GetNodeId()))
			nodes[a.GetNodeId()]++
		}
	}
	if len(shards) < 2 {
		return nil
	}
	list := strings.Join(shards, ", ")
	switch {
	case len(nodes) == len(shards):
		return []string{fmt.Sprintf("parameter-server shards spread over %d nodes, one each (a job's shards prefer the node holding the fewest of them): %s", len(nodes), list)}
	case len(nodes) == eligible:
		return []string{fmt.Sprintf("%d parameter-server shards on %s: every eligible parameter-server node holds some (shards prefer the node holding the fewest of them): %s",
			len(shards), plural(len(nodes), "1 node", fmt.Sprintf("%d nodes", len(nodes))), list)}
	}
	ids := slices.Sorted(maps.Keys(nodes))
	return []string{fmt.Sprintf("%d parameter-server shards on %d of %d eligible nodes (%s): the others had no room for a shard: %s",
		len(shards), len(nodes), eligible, strings.Join(ids, ", "), list)}
}
