package scheduler

import (
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestShardsSpreadOverParameterServerNodes: a job's shards go to the parameter-server
// node holding the fewest of them first (bin packing alone put both on the fuller
// node while the other sat idle), then by the ranking; with fewer nodes than shards
// they are shared evenly; a node without room is passed over; and the plan's notes
// say so.
func TestShardsSpreadOverParameterServerNodes(t *testing.T) {
	workers := []*cohortv1.Node{worker("w1", 4000, 8*gib)}
	tests := []struct {
		name   string
		nodes  []*cohortv1.Node
		allocs []*cohortv1.Allocation
		shards int32
		spread bool
		want   map[string]string // shard allocation ID -> node
		note   string
	}{
		{name: "two shards, two idle nodes",
			nodes:  []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib)},
			shards: 2, want: map[string]string{"j-ps-0": "p1", "j-ps-1": "p2"},
			note: "parameter-server shards spread over 2 nodes, one each"},
		{name: "two shards, one node busier: bin packing would put both there",
			nodes:  []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib)},
			allocs: []*cohortv1.Allocation{used("p2", 1000, gib, cohortv1.TaskState_TASK_STATE_RUNNING)},
			shards: 2, want: map[string]string{"j-ps-0": "p2", "j-ps-1": "p1"},
			note: "spread over 2 nodes"},
		{name: "spread job",
			nodes:  []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 2000, 4*gib), ps("p3", 3000, 4*gib)},
			shards: 3, spread: true, want: map[string]string{"j-ps-0": "p1", "j-ps-1": "p3", "j-ps-2": "p2"},
			note: "spread over 3 nodes"},
		{name: "four shards on two nodes: two each",
			nodes:  []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib)},
			allocs: []*cohortv1.Allocation{used("p2", 1000, gib, cohortv1.TaskState_TASK_STATE_RUNNING)},
			shards: 4, want: map[string]string{"j-ps-0": "p2", "j-ps-1": "p1", "j-ps-2": "p2", "j-ps-3": "p1"},
			note: "4 parameter-server shards on 2 nodes: every eligible parameter-server node holds some"},
		{name: "a full node is passed over",
			nodes:  []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib)},
			allocs: []*cohortv1.Allocation{used("p2", 3800, gib, cohortv1.TaskState_TASK_STATE_RUNNING)},
			shards: 2, want: map[string]string{"j-ps-0": "p1", "j-ps-1": "p1"},
			note: "2 parameter-server shards on 1 of 2 eligible nodes (p1): the others had no room"},
		{name: "one shard: no note",
			nodes:  []*cohortv1.Node{ps("p1", 4000, 4*gib), ps("p2", 4000, 4*gib)},
			shards: 1, want: map[string]string{"j-ps-0": "p1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &harness{nodes: append(append([]*cohortv1.Node{}, workers...), tt.nodes...), allocs: tt.allocs}
			job := testJob(1, tt.shards)
			job.Spread = tt.spread
			plan := Place(h, job)
			if !plan.Feasible() {
				t.Fatalf("infeasible: %v", plan.Reasons)
			}
			got := map[string]string{}
			for _, a := range plan.Allocations {
				if a.Kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
					got[shardKey(a)] = a.NodeId
				}
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("shards placed %v, want %v", got, tt.want)
				}
			}
			switch {
			case tt.note == "" && len(plan.Notes) != 0:
				t.Fatalf("notes %q, want none", plan.Notes)
			case tt.note != "" && (len(plan.Notes) != 1 || !strings.Contains(plan.Notes[0], tt.note)):
				t.Fatalf("notes %q, want one containing %q", plan.Notes, tt.note)
			}
		})
	}
}

// shardKey names a shard allocation "j-ps-N" whatever the allocation ID scheme.
func shardKey(a *cohortv1.Allocation) string {
	return a.JobId + "-ps-" + string(rune('0'+a.Index))
}
