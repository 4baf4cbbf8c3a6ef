package fsm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// FuzzApplyCommand feeds arbitrary entry data to the FSM. Data that does not decode
// must make DecodeCommand fail (and Apply skip it, see TestApplySkipsUndecodableEntry);
// data that decodes must apply without panicking, and a refused command must leave the
// state untouched and terminal jobs must stay terminal.
func FuzzApplyCommand(f *testing.F) {
	seeds := []*cohortv1.Command{
		submitCmd("j9", "k9"),
		submitCmd("j1", "other"),
		planCmd("j1", alloc("j1", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1")),
		planCmd("j2", alloc("j2", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1")),
		reasonsCmd("j2", "r"),
		cancelCmd("j1"),
		reportCmd(&cohortv1.TaskReport{AllocationId: "j1-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED}),
		reportCmd(&cohortv1.TaskReport{AllocationId: "j1-ps0", State: cohortv1.TaskState_TASK_STATE_FAILED}),
		{Kind: &cohortv1.Command_RegisterNode{RegisterNode: &cohortv1.RegisterNodeCommand{Node: &cohortv1.Node{Id: "n1"}}}},
		{Kind: &cohortv1.Command_NodeStatus{NodeStatus: &cohortv1.NodeStatusCommand{NodeId: "n1", Status: 2}}},
		{Kind: &cohortv1.Command_UpdateTasks{}},
		quotaCmd("default", 4, false),
		quotaCmd("default", 0, true),
		queueCmd("research", 3, false),
		tokenCmd("abc123", "client"),
		revokeCmd("abc123"),
		keyringCmd("sealed", 1),
		drainCmd("n1", 0, false),
		nodeDownCmd("n1"),
		{Kind: &cohortv1.Command_PreemptJobs{PreemptJobs: &cohortv1.PreemptJobsCommand{VictimJobIds: []string{"j1"}}}},
		{Kind: &cohortv1.Command_SetNodeEligibility{SetNodeEligibility: &cohortv1.SetNodeEligibilityCommand{NodeId: "n1"}}},
		resizeCmd("j1", 1, nil, "j1-w1"),
		resizeCmd("j1", 1, []*cohortv1.Allocation{{Id: "j1-w2-g2", JobId: "j1", NodeId: "n3", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}}),
		reportCmd(&cohortv1.TaskReport{AllocationId: "j1-w0", Checkpoint: "s3://b/m", Generation: 7}),
		resumeCmd("j3"),
		resumeCmd("j1"),
		applyPlanCmd(&cohortv1.ApplyPlanCommand{PreemptorJobId: "j2",
			Evictions:  []*cohortv1.PlanEviction{{JobId: "j1", Generation: 1}},
			Placements: []*cohortv1.CommitPlanCommand{{JobId: "j2", Allocations: []*cohortv1.Allocation{alloc("j2", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1")}}}}),
		applyPlanCmd(&cohortv1.ApplyPlanCommand{
			Evictions:  []*cohortv1.PlanEviction{{JobId: "j1"}},
			Placements: []*cohortv1.CommitPlanCommand{{JobId: "j2", Allocations: []*cohortv1.Allocation{alloc("j2", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1")}}},
			Growth:     []*cohortv1.ResizeJobCommand{{JobId: "j1", Generation: 1, Add: []*cohortv1.Allocation{{Id: "j1-w2-g2", JobId: "j1", NodeId: "n3", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}}}}}),
	}
	for _, c := range seeds {
		f.Add(mustMarshal(f, c))
	}
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := DecodeCommand(data)
		if err != nil {
			return
		}
		h := newHarness(t)
		placedJob(h, "j1")                     // running
		h.mustApply(submitCmd("j2", "key-j2")) // pending
		h.mustApply(submitCmd("j3", "key-j3"))
		h.mustApply(cancelCmd("j3")) // terminal
		before := h.f.State().Snapshot()
		h.index++
		resp := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data})
		after := h.f.State()
		if err, ok := resp.(error); ok {
			if after.LatestIndex() != before.LatestIndex() {
				t.Fatalf("refused %s (%v) changed the state", CommandKind(cmd), err)
			}
			return
		}
		j3, _ := after.JobByID(nil, "j3")
		old, _ := before.JobByID(nil, "j3")
		if !proto.Equal(j3, old) {
			t.Fatalf("terminal job changed by %s: %v -> %v", CommandKind(cmd), old, j3)
		}
		allocs, _ := after.Allocs(nil)
		for _, a := range allocs {
			prev, _ := before.AllocByID(nil, a.Id)
			if prev != nil && state.TaskTerminal(prev.State) && !proto.Equal(prev, a) {
				t.Fatalf("terminal allocation %s changed", a.Id)
			}
		}
	})
}

// FuzzReadSnapshot feeds arbitrary bytes to the snapshot decoder: it must return a
// store or an ErrBadSnapshot error, never panic, and a store it returns must persist
// again.
func FuzzReadSnapshot(f *testing.F) {
	h := newHarness(f)
	placedJob(h, "j1")
	h.mustApply(submitCmd("j2", "k2"))
	var good bytes.Buffer
	if err := WriteSnapshot(&good, h.f.State().Snapshot()); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte(snapshotMagic))
	f.Add(append([]byte(snapshotMagic), snapshotVersion, recordEnd))
	f.Add(append([]byte(snapshotMagic), snapshotVersion, recordTableIndex, 2, 5, 'x', recordEnd))
	f.Fuzz(func(t *testing.T, data []byte) {
		store, err := ReadSnapshot(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("error %v does not wrap ErrBadSnapshot", err)
			}
			return
		}
		var again bytes.Buffer
		if err := WriteSnapshot(&again, store.Snapshot()); err != nil {
			t.Fatalf("restored store does not persist: %v", err)
		}
		if _, err := ReadSnapshot(&again); err != nil {
			t.Fatalf("re-persisted snapshot does not restore: %v", err)
		}
	})
}
