package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// harness applies commands to an FSM at increasing indexes.
type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	f, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, f: f}
}

func (h *harness) apply(cmd *cohortv1.Command) any {
	h.t.Helper()
	data, err := proto.Marshal(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	return h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data})
}

func (h *harness) mustApply(cmd *cohortv1.Command) any {
	h.t.Helper()
	resp := h.apply(cmd)
	if err, ok := resp.(error); ok {
		h.t.Fatalf("apply %s: %v", CommandKind(cmd), err)
	}
	return resp
}

func (h *harness) job(id string) *cohortv1.Job {
	h.t.Helper()
	j, err := h.f.State().JobByID(nil, id)
	if err != nil || j == nil {
		h.t.Fatalf("job %s: %v, %v", id, j, err)
	}
	return j
}

func (h *harness) alloc(id string) *cohortv1.Allocation {
	h.t.Helper()
	a, err := h.f.State().AllocByID(nil, id)
	if err != nil || a == nil {
		h.t.Fatalf("alloc %s: %v, %v", id, a, err)
	}
	return a
}

func submitCmd(id, key string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 100, Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{
		Job: &cohortv1.Job{Id: id, Name: id, Namespace: "default", IdempotencyKey: key, WorkerCount: 2, ShardCount: 1,
			SubmitTimeUnixNano: 50},
	}}}
}

func planCmd(jobID string, allocs ...*cohortv1.Allocation) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 200, Kind: &cohortv1.Command_CommitPlan{CommitPlan: &cohortv1.CommitPlanCommand{
		JobId: jobID, Allocations: allocs,
	}}}
}

func reasonsCmd(jobID string, reasons ...string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 200, Kind: &cohortv1.Command_CommitPlan{CommitPlan: &cohortv1.CommitPlanCommand{
		JobId: jobID, PendingReasons: reasons,
	}}}
}

func alloc(jobID string, kind cohortv1.TaskKind, idx int32, node string) *cohortv1.Allocation {
	suffix := "w"
	if kind == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
		suffix = "ps"
	}
	return &cohortv1.Allocation{Id: jobID + "-" + suffix + string(rune('0'+idx)), JobId: jobID, Kind: kind, Index: idx, NodeId: node,
		Resources: &cohortv1.Resources{CpuMillis: 1000}}
}

func placedJob(h *harness, id string) {
	h.t.Helper()
	h.mustApply(submitCmd(id, "key-"+id))
	h.mustApply(planCmd(id,
		alloc(id, cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1"),
		alloc(id, cohortv1.TaskKind_TASK_KIND_WORKER, 1, "n2"),
		alloc(id, cohortv1.TaskKind_TASK_KIND_PS_SHARD, 0, "p1"),
	))
}

func reportCmd(reports ...*cohortv1.TaskReport) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 300, Kind: &cohortv1.Command_UpdateTasks{UpdateTasks: &cohortv1.UpdateTasksCommand{Reports: reports}}}
}

func cancelCmd(id string) *cohortv1.Command {
	return &cohortv1.Command{TimeUnixNano: 400, Kind: &cohortv1.Command_CancelJob{CancelJob: &cohortv1.CancelJobCommand{JobId: id, Reason: "user"}}}
}

func TestSubmitJob(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(h *harness)
		cmd         *cohortv1.Command
		wantErr     error
		wantCreated bool
		wantID      string
	}{
		{name: "new job is pending", cmd: submitCmd("j1", "k1"), wantCreated: true, wantID: "j1"},
		{name: "same idempotency key returns the first job",
			setup: func(h *harness) { h.mustApply(submitCmd("j1", "k1")) },
			cmd:   submitCmd("j2", "k1"), wantCreated: false, wantID: "j1"},
		{name: "empty keys never collide",
			setup: func(h *harness) { h.mustApply(submitCmd("j1", "")) },
			cmd:   submitCmd("j2", ""), wantCreated: true, wantID: "j2"},
		{name: "duplicate id with another key is refused",
			setup: func(h *harness) { h.mustApply(submitCmd("j1", "k1")) },
			cmd:   submitCmd("j1", "k2"), wantErr: ErrInvalidCommand},
		{name: "missing id is refused", cmd: submitCmd("", "k"), wantErr: ErrInvalidCommand},
		{name: "missing job is refused", cmd: &cohortv1.Command{Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{}}},
			wantErr: ErrInvalidCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(h)
			}
			before := h.f.State().LatestIndex()
			resp := h.apply(tt.cmd)
			if tt.wantErr != nil {
				if err, _ := resp.(error); !errors.Is(err, tt.wantErr) {
					t.Fatalf("response %v, want %v", resp, tt.wantErr)
				}
				if got := h.f.State().LatestIndex(); got != before {
					t.Fatalf("refused command moved the index: %d -> %d", before, got)
				}
				return
			}
			res := resp.(*SubmitJobResult)
			if res.Created != tt.wantCreated || res.Job.Id != tt.wantID {
				t.Fatalf("got created=%v id=%s, want %v %s", res.Created, res.Job.Id, tt.wantCreated, tt.wantID)
			}
			j := h.job(tt.wantID)
			if j.State != cohortv1.JobState_JOB_STATE_PENDING || j.SubmitTimeUnixNano != 50 {
				t.Fatalf("stored job: %v", j)
			}
			if tt.wantCreated && (j.CreateIndex != h.index || j.ModifyIndex != h.index) {
				t.Fatalf("indexes %d/%d, want %d", j.CreateIndex, j.ModifyIndex, h.index)
			}
		})
	}
}

func TestCommitPlan(t *testing.T) {
	w0 := alloc("j1", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1")
	tests := []struct {
		name      string
		setup     func(h *harness)
		cmd       *cohortv1.Command
		wantErr   error
		wantState cohortv1.JobState
		check     func(t *testing.T, h *harness)
	}{
		{name: "places a pending job", cmd: planCmd("j1", w0), wantState: cohortv1.JobState_JOB_STATE_RUNNING,
			check: func(t *testing.T, h *harness) {
				j := h.job("j1")
				if j.StartTimeUnixNano != 200 || j.Generation != 1 || len(j.PendingReasons) != 0 {
					t.Fatalf("job after plan: %v", j)
				}
				a := h.alloc(w0.Id)
				if a.State != cohortv1.TaskState_TASK_STATE_PENDING || a.Generation != 1 || a.CreateIndex != h.index {
					t.Fatalf("alloc after plan: %v", a)
				}
			}},
		{name: "refuses a running job", setup: func(h *harness) { h.mustApply(planCmd("j1", w0)) },
			cmd: planCmd("j1", alloc("j1", cohortv1.TaskKind_TASK_KIND_WORKER, 1, "n1")), wantErr: ErrNotPending},
		{name: "refuses a cancelled job", setup: func(h *harness) { h.mustApply(cancelCmd("j1")) },
			cmd: planCmd("j1", w0), wantErr: ErrNotPending},
		{name: "refuses an unknown job", cmd: planCmd("nope", w0), wantErr: ErrNotFound},
		{name: "refuses an allocation of another job", cmd: planCmd("j1", alloc("j2", cohortv1.TaskKind_TASK_KIND_WORKER, 0, "n1")),
			wantErr: ErrInvalidCommand},
		{name: "records pending reasons", cmd: reasonsCmd("j1", "no ready, eligible node with role worker"),
			wantState: cohortv1.JobState_JOB_STATE_PENDING,
			check: func(t *testing.T, h *harness) {
				if got := h.job("j1").PendingReasons; len(got) != 1 || got[0] != "no ready, eligible node with role worker" {
					t.Fatalf("reasons %q", got)
				}
			}},
		{name: "unchanged reasons do not write", setup: func(h *harness) { h.mustApply(reasonsCmd("j1", "r")) },
			cmd: reasonsCmd("j1", "r"), wantState: cohortv1.JobState_JOB_STATE_PENDING,
			check: func(t *testing.T, h *harness) {
				if j := h.job("j1"); j.ModifyIndex == h.index {
					t.Fatalf("modify index moved to %d", j.ModifyIndex)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.mustApply(submitCmd("j1", "k1"))
			if tt.setup != nil {
				tt.setup(h)
			}
			before := h.job("j1")
			resp := h.apply(tt.cmd)
			if tt.wantErr != nil {
				if err, _ := resp.(error); !errors.Is(err, tt.wantErr) {
					t.Fatalf("response %v, want %v", resp, tt.wantErr)
				}
				if after := h.job("j1"); !proto.Equal(before, after) {
					t.Fatalf("refused plan changed the job: %v -> %v", before, after)
				}
				return
			}
			if got := h.job("j1").State; got != tt.wantState {
				t.Fatalf("state %v, want %v", got, tt.wantState)
			}
			if tt.check != nil {
				tt.check(t, h)
			}
		})
	}
}

func TestCancelJob(t *testing.T) {
	tests := []struct {
		name          string
		setup         func(h *harness)
		wantCancelled bool
		wantState     cohortv1.JobState
		wantAllocs    cohortv1.TaskState
	}{
		{name: "pending job", setup: func(h *harness) { h.mustApply(submitCmd("j1", "k")) },
			wantCancelled: true, wantState: cohortv1.JobState_JOB_STATE_CANCELLED},
		{name: "running job stops its allocations", setup: func(h *harness) { placedJob(h, "j1") },
			wantCancelled: true, wantState: cohortv1.JobState_JOB_STATE_CANCELLED, wantAllocs: cohortv1.TaskState_TASK_STATE_STOPPED},
		{name: "succeeded job is left alone", setup: func(h *harness) {
			placedJob(h, "j1")
			h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j1-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED}))
		}, wantCancelled: false, wantState: cohortv1.JobState_JOB_STATE_SUCCEEDED},
		{name: "cancelled job stays cancelled", setup: func(h *harness) {
			h.mustApply(submitCmd("j1", "k"))
			h.mustApply(cancelCmd("j1"))
		}, wantCancelled: false, wantState: cohortv1.JobState_JOB_STATE_CANCELLED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			res := h.mustApply(cancelCmd("j1")).(*CancelJobResult)
			if res.Cancelled != tt.wantCancelled || res.Job.State != tt.wantState {
				t.Fatalf("got cancelled=%v state=%v", res.Cancelled, res.Job.State)
			}
			j := h.job("j1")
			if tt.wantCancelled && (j.EndTimeUnixNano != 400 || !strings.Contains(j.StatusMessage, "user")) {
				t.Fatalf("cancelled job: %v", j)
			}
			if tt.wantAllocs != cohortv1.TaskState_TASK_STATE_UNSPECIFIED {
				allocs, _ := h.f.State().AllocsByJob(nil, "j1")
				for _, a := range allocs {
					if a.State != tt.wantAllocs {
						t.Fatalf("alloc %s is %v, want %v", a.Id, a.State, tt.wantAllocs)
					}
				}
			}
		})
	}
	t.Run("unknown job", func(t *testing.T) {
		h := newHarness(t)
		if err, _ := h.apply(cancelCmd("nope")).(error); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestUpdateTasks(t *testing.T) {
	type want struct {
		job    cohortv1.JobState
		msg    string
		allocs map[string]cohortv1.TaskState
	}
	const (
		pending   = cohortv1.TaskState_TASK_STATE_PENDING
		running   = cohortv1.TaskState_TASK_STATE_RUNNING
		succeeded = cohortv1.TaskState_TASK_STATE_SUCCEEDED
		failed    = cohortv1.TaskState_TASK_STATE_FAILED
		stopped   = cohortv1.TaskState_TASK_STATE_STOPPED
	)
	tests := []struct {
		name    string
		reports [][]*cohortv1.TaskReport
		want    want
		check   func(t *testing.T, h *harness)
	}{
		{name: "running reports move allocations only",
			reports: [][]*cohortv1.TaskReport{{{AllocationId: "j1-w0", State: running}, {AllocationId: "j1-ps0", State: running}}},
			want: want{job: cohortv1.JobState_JOB_STATE_RUNNING,
				allocs: map[string]cohortv1.TaskState{"j1-w0": running, "j1-w1": pending, "j1-ps0": running}}},
		{name: "chief success ends the job and stops the rest",
			reports: [][]*cohortv1.TaskReport{{{AllocationId: "j1-w1", State: running}},
				{{AllocationId: "j1-w0", State: succeeded, Metrics: map[string]float64{"val_auc": 0.8},
					Checkpoint: "s3://b/ckpt", Exports: []string{"s3://b/model.onnx"}, Progress: &cohortv1.JobProgress{Epoch: 3}}}},
			want: want{job: cohortv1.JobState_JOB_STATE_SUCCEEDED, msg: "succeeded",
				allocs: map[string]cohortv1.TaskState{"j1-w0": succeeded, "j1-w1": stopped, "j1-ps0": stopped}},
			check: func(t *testing.T, h *harness) {
				j := h.job("j1")
				if j.Metrics["val_auc"] != 0.8 || j.Checkpoint != "s3://b/ckpt" || len(j.Exports) != 1 ||
					j.Progress.GetEpoch() != 3 || j.EndTimeUnixNano != 300 {
					t.Fatalf("job: %v", j)
				}
			}},
		{name: "non-chief success does not end the job",
			reports: [][]*cohortv1.TaskReport{{{AllocationId: "j1-w1", State: succeeded}}},
			want: want{job: cohortv1.JobState_JOB_STATE_RUNNING,
				allocs: map[string]cohortv1.TaskState{"j1-w0": pending, "j1-w1": succeeded}}},
		{name: "worker failure fails the job",
			reports: [][]*cohortv1.TaskReport{{{AllocationId: "j1-w1", State: failed, Message: "oom"}}},
			want: want{job: cohortv1.JobState_JOB_STATE_FAILED, msg: "worker 1 failed: oom",
				allocs: map[string]cohortv1.TaskState{"j1-w0": stopped, "j1-w1": failed, "j1-ps0": stopped}}},
		{name: "shard failure fails the job",
			reports: [][]*cohortv1.TaskReport{{{AllocationId: "j1-ps0", State: failed, Message: "disk"}}},
			want: want{job: cohortv1.JobState_JOB_STATE_FAILED, msg: "parameter-server shard 0 failed: disk",
				allocs: map[string]cohortv1.TaskState{"j1-w0": stopped, "j1-ps0": failed}}},
		{name: "terminal allocations never move and terminal jobs never change",
			reports: [][]*cohortv1.TaskReport{
				{{AllocationId: "j1-w0", State: succeeded}},
				{{AllocationId: "j1-w0", State: running}, {AllocationId: "j1-w1", State: failed, Message: "late"},
					{AllocationId: "j1-w0", Metrics: map[string]float64{"val_auc": 0.1}}}},
			want: want{job: cohortv1.JobState_JOB_STATE_SUCCEEDED, msg: "succeeded",
				allocs: map[string]cohortv1.TaskState{"j1-w0": succeeded, "j1-w1": stopped}},
			check: func(t *testing.T, h *harness) {
				if _, ok := h.job("j1").Metrics["val_auc"]; ok {
					t.Fatal("metrics of a terminal job changed")
				}
			}},
		{name: "unknown allocations and mismatched jobs are ignored",
			reports: [][]*cohortv1.TaskReport{{{AllocationId: "nope", State: failed},
				{AllocationId: "j1-w1", JobId: "other", State: failed}}},
			want: want{job: cohortv1.JobState_JOB_STATE_RUNNING,
				allocs: map[string]cohortv1.TaskState{"j1-w1": pending}}},
		{name: "metrics merge across reports",
			reports: [][]*cohortv1.TaskReport{{{AllocationId: "j1-w0", Metrics: map[string]float64{"a": 1}}},
				{{AllocationId: "j1-w0", Metrics: map[string]float64{"b": 2}}}},
			want: want{job: cohortv1.JobState_JOB_STATE_RUNNING},
			check: func(t *testing.T, h *harness) {
				if m := h.job("j1").Metrics; m["a"] != 1 || m["b"] != 2 {
					t.Fatalf("metrics %v", m)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			placedJob(h, "j1")
			for _, batch := range tt.reports {
				h.mustApply(reportCmd(batch...))
			}
			j := h.job("j1")
			if j.State != tt.want.job || (tt.want.msg != "" && j.StatusMessage != tt.want.msg) {
				t.Fatalf("job %v %q, want %v %q", j.State, j.StatusMessage, tt.want.job, tt.want.msg)
			}
			for id, st := range tt.want.allocs {
				if got := h.alloc(id).State; got != st {
					t.Errorf("alloc %s is %v, want %v", id, got, st)
				}
			}
			if tt.check != nil {
				tt.check(t, h)
			}
		})
	}
}

func TestNodes(t *testing.T) {
	register := func(time int64) *cohortv1.Command {
		return &cohortv1.Command{TimeUnixNano: time, Kind: &cohortv1.Command_RegisterNode{RegisterNode: &cohortv1.RegisterNodeCommand{
			Node: &cohortv1.Node{Id: "n1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER}, Status: cohortv1.NodeStatus_NODE_STATUS_DOWN},
		}}}
	}
	status := func(st cohortv1.NodeStatus, hb int64) *cohortv1.Command {
		return &cohortv1.Command{TimeUnixNano: 9, Kind: &cohortv1.Command_NodeStatus{NodeStatus: &cohortv1.NodeStatusCommand{
			NodeId: "n1", Status: st, HeartbeatUnixNano: hb}}}
	}
	tests := []struct {
		name    string
		cmds    []*cohortv1.Command
		wantGen uint64
		wantSt  cohortv1.NodeStatus
		wantHB  int64
	}{
		{name: "register", cmds: []*cohortv1.Command{register(5)}, wantGen: 1, wantSt: cohortv1.NodeStatus_NODE_STATUS_READY, wantHB: 5},
		{name: "re-register bumps generation", cmds: []*cohortv1.Command{register(5), status(cohortv1.NodeStatus_NODE_STATUS_DOWN, 0), register(7)},
			wantGen: 2, wantSt: cohortv1.NodeStatus_NODE_STATUS_READY, wantHB: 7},
		{name: "status down keeps heartbeat", cmds: []*cohortv1.Command{register(5), status(cohortv1.NodeStatus_NODE_STATUS_DOWN, 0)},
			wantGen: 1, wantSt: cohortv1.NodeStatus_NODE_STATUS_DOWN, wantHB: 5},
		{name: "status with heartbeat", cmds: []*cohortv1.Command{register(5), status(cohortv1.NodeStatus_NODE_STATUS_DRAINING, 8)},
			wantGen: 1, wantSt: cohortv1.NodeStatus_NODE_STATUS_DRAINING, wantHB: 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			for _, c := range tt.cmds {
				h.mustApply(c)
			}
			n, _ := h.f.State().NodeByID(nil, "n1")
			if n.RegistrationGeneration != tt.wantGen || n.Status != tt.wantSt || n.LastHeartbeatUnixNano != tt.wantHB || n.CreateIndex != 1 {
				t.Fatalf("node %v", n)
			}
		})
	}
	t.Run("status of unknown node", func(t *testing.T) {
		h := newHarness(t)
		if err, _ := h.apply(status(cohortv1.NodeStatus_NODE_STATUS_DOWN, 0)).(error); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestApplySkipsUndecodableEntry is the regression test of security issue #16: a forged
// or corrupt committed entry made Apply panic, at every restart again. Now it is
// skipped loudly: an ErrInvalidCommand answer, the state unchanged, the index
// remembered and counted, and the next entries apply.
func TestApplySkipsUndecodableEntry(t *testing.T) {
	unknownField := protowire.AppendTag(nil, 999, protowire.BytesType)
	unknownField = protowire.AppendBytes(unknownField, []byte("forged"))
	for name, data := range map[string][]byte{
		"garbage":       {0xff, 0xff, 0xff},
		"no kind":       mustMarshal(t, &cohortv1.Command{TimeUnixNano: 1}),
		"unknown field": unknownField,
	} {
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			f, err := New(Config{Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			h := &harness{t: t, f: f}
			h.mustApply(submitCmd("j1", "k1"))
			before := h.f.State().LatestIndex()
			h.index++
			resp := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data})
			if err, ok := resp.(error); !ok || !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Apply answered %v, want ErrInvalidCommand", resp)
			}
			if h.f.State().LatestIndex() != before || h.f.LastUndecodable() != h.index || h.f.AppliedIndex() != h.index {
				t.Fatalf("state index %d (was %d), last undecodable %d, applied %d at entry %d",
					h.f.State().LatestIndex(), before, h.f.LastUndecodable(), h.f.AppliedIndex(), h.index)
			}
			if got := testutil.ToFloat64(f.skipped); got != 1 {
				t.Fatalf("cohort_fsm_undecodable_entries_total = %v", got)
			}
			h.mustApply(submitCmd("j2", "k2"))
			if h.job("j2") == nil {
				t.Fatal("the entry after the skipped one was not applied")
			}
		})
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func TestSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.mustApply(&cohortv1.Command{TimeUnixNano: 1, Kind: &cohortv1.Command_RegisterNode{RegisterNode: &cohortv1.RegisterNodeCommand{
		Node: &cohortv1.Node{Id: "n1", Labels: map[string]string{"zone": "a"}, Capacity: &cohortv1.Resources{CpuMillis: 4000}}}}})
	placedJob(h, "j1")
	h.mustApply(submitCmd("j2", "k2"))
	h.mustApply(reportCmd(&cohortv1.TaskReport{AllocationId: "j1-w0", State: cohortv1.TaskState_TASK_STATE_RUNNING,
		Metrics: map[string]float64{"loss": 0.5}}))

	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after Snapshot must not leak into the persisted view.
	h.mustApply(submitCmd("j3", "k3"))
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}

	restored := newHarness(t)
	oldStore := restored.f.State()
	if err := restored.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-oldStore.AbandonCh():
	default:
		t.Fatal("old store not abandoned")
	}
	src, dst := h.f.State(), restored.f.State()
	if got, want := dst.LatestIndex(), uint64(5); got != want {
		t.Fatalf("restored latest index %d, want %d", got, want)
	}
	for _, id := range []string{"j1", "j2"} {
		a, _ := src.JobByID(nil, id)
		b, _ := dst.JobByID(nil, id)
		if !proto.Equal(a, b) {
			t.Fatalf("job %s differs:\n%v\n%v", id, a, b)
		}
	}
	if j, _ := dst.JobByID(nil, "j3"); j != nil {
		t.Fatal("job written after Snapshot was persisted")
	}
	if j, _ := dst.JobByIdempotencyKey(nil, "k2"); j.GetId() != "j2" {
		t.Fatalf("idempotency index not rebuilt: %v", j)
	}
	srcAllocs, _ := src.Allocs(nil)
	dstAllocs, _ := dst.AllocsByNode(nil, "n1")
	if len(srcAllocs) != 3 || len(dstAllocs) != 1 || !proto.Equal(dstAllocs[0], mustAlloc(t, src, "j1-w0")) {
		t.Fatalf("allocations: %v / %v", srcAllocs, dstAllocs)
	}
	srcNode, _ := src.NodeByID(nil, "n1")
	dstNode, _ := dst.NodeByID(nil, "n1")
	if !proto.Equal(srcNode, dstNode) {
		t.Fatalf("node differs")
	}
}

func mustAlloc(t *testing.T, s *state.Store, id string) *cohortv1.Allocation {
	t.Helper()
	a, err := s.AllocByID(nil, id)
	if err != nil || a == nil {
		t.Fatalf("alloc %s: %v %v", id, a, err)
	}
	return a
}

func TestReadSnapshotRejectsBadInput(t *testing.T) {
	h := newHarness(t)
	placedJob(h, "j1")
	sink := &memSink{}
	if err := WriteSnapshot(sink, h.f.State().Snapshot()); err != nil {
		t.Fatal(err)
	}
	good := sink.Bytes()
	tests := map[string][]byte{
		"empty":          nil,
		"bad magic":      append([]byte("NOTCOHOR"), good[8:]...),
		"bad version":    append(append([]byte(snapshotMagic), 9), good[9:]...),
		"truncated":      good[:len(good)-1],
		"trailing data":  append(append([]byte{}, good...), 1),
		"unknown record": append(append([]byte(snapshotMagic), snapshotVersion, 7, 0), recordEnd),
		"huge record":    append([]byte(snapshotMagic), snapshotVersion, recordJob, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"job without id": append([]byte(snapshotMagic), snapshotVersion, recordJob, 0, recordEnd),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			f, _ := New(Config{})
			before := f.State()
			err := f.Restore(io.NopCloser(bytes.NewReader(data)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("got %v, want ErrBadSnapshot", err)
			}
			if f.State() != before {
				t.Fatal("failed restore swapped the store")
			}
		})
	}
}
