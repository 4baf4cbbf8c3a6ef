package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// fsmBackend applies commands straight to an FSM (no raft).
type fsmBackend struct {
	mu    sync.Mutex
	f     *fsm.FSM
	index uint64
	hbErr error
	last  *cohortv1.Command
}

func newBackend(t *testing.T) *fsmBackend {
	t.Helper()
	f, err := fsm.New(fsm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &fsmBackend{f: f}
}

func (b *fsmBackend) Apply(_ context.Context, cmd *cohortv1.Command) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cmd.TimeUnixNano = 1000
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	b.index++
	b.last = cmd
	resp := b.f.Apply(&raft.Log{Index: b.index, Type: raft.LogCommand, Data: data})
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

func (b *fsmBackend) State() *state.Store                  { return b.f.State() }
func (b *fsmBackend) Heartbeat(string, uint64) error       { return b.hbErr }
func (b *fsmBackend) ConsistentRead(context.Context) error { return nil }
func parseOK(spec []byte) (*cohortv1.Job, error) {
	return &cohortv1.Job{Name: string(spec), WorkerCount: 1}, nil
}
func parseFail([]byte) (*cohortv1.Job, error) {
	return nil, errors.New("line 3: spec.model: unknown field\nline 9: spec.data: required")
}
func noParser() func([]byte) (*cohortv1.Job, error) { return nil }

func TestToStatus(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", ErrInvalidArgument), codes.InvalidArgument},
		{&server.SpecError{Err: errors.New("bad")}, codes.InvalidArgument},
		{&server.AdmissionError{Step: "quota", Err: fmt.Errorf("%w: over", server.ErrRefused)}, codes.InvalidArgument},
		{&server.AdmissionError{Step: "parse", Err: errors.New("no parser")}, codes.Internal},
		{fmt.Errorf("x: %w", fsm.ErrNotFound), codes.NotFound},
		{fmt.Errorf("%w; leader is at 10.0.0.1:7000", server.ErrNotLeader), codes.Unavailable},
		{fmt.Errorf("x: %w", fsm.ErrTerminal), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", server.ErrStaleRegistration), codes.FailedPrecondition},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("boom"), codes.Internal},
		{status.Error(codes.Aborted, "kept"), codes.Aborted},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			got := toStatus(tt.err)
			if status.Code(got) != tt.want {
				t.Fatalf("code %v, want %v", status.Code(got), tt.want)
			}
			if !strings.Contains(status.Convert(got).Message(), strings.Split(status.Convert(tt.err).Message(), ";")[0]) {
				t.Fatalf("message %q lost %q", status.Convert(got).Message(), tt.err)
			}
		})
	}
}

func TestSubmitJob(t *testing.T) {
	tests := []struct {
		name     string
		parse    func([]byte) (*cohortv1.Job, error)
		req      *cohortv1.SubmitJobRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{name: "ok", parse: parseOK, req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("Attrition MLP")}},
		{name: "empty spec", parse: parseOK, req: &cohortv1.SubmitJobRequest{}, wantCode: codes.InvalidArgument},
		{name: "spec too large", parse: parseOK, req: &cohortv1.SubmitJobRequest{SpecYaml: make([]byte, DefaultMaxSpecBytes+1)},
			wantCode: codes.InvalidArgument, wantMsg: "limit"},
		{name: "spec error keeps every line", parse: parseFail, req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("x")},
			wantCode: codes.InvalidArgument, wantMsg: "unknown field\nline 9: spec.data: required"},
		{name: "long idempotency key", parse: parseOK,
			req:      &cohortv1.SubmitJobRequest{SpecYaml: []byte("x"), IdempotencyKey: strings.Repeat("k", 300)},
			wantCode: codes.InvalidArgument},
		{name: "no parser configured", parse: noParser(), req: &cohortv1.SubmitJobRequest{SpecYaml: []byte("x")},
			wantCode: codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t)
			svc := NewJobService(b, Config{ParseSpec: tt.parse})
			resp, err := svc.SubmitJob(context.Background(), tt.req)
			if status.Code(err) != tt.wantCode || !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Fatalf("err %v, want %v containing %q", err, tt.wantCode, tt.wantMsg)
			}
			if err != nil {
				return
			}
			j := resp.Job
			if !resp.Created || !strings.HasPrefix(j.Id, "attrition-mlp-") || len(j.Id) != len("attrition-mlp-")+8 ||
				j.Namespace != "default" || j.IdempotencyKey == "" || string(j.SpecYaml) != "Attrition MLP" || j.SubmitTimeUnixNano == 0 {
				t.Fatalf("job %v", j)
			}
		})
	}
}

func TestRegisterNode(t *testing.T) {
	worker := []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER}
	capacity := &cohortv1.Resources{CpuMillis: 1000}
	tests := []struct {
		name     string
		node     *cohortv1.Node
		wantID   string
		wantCode codes.Code
	}{
		{name: "id from name", node: &cohortv1.Node{Name: "GPU Box 7", Roles: worker, Capacity: capacity}, wantID: "gpu-box-7"},
		{name: "explicit id", node: &cohortv1.Node{Id: "n1", Roles: worker, Capacity: capacity}, wantID: "n1"},
		{name: "no node", wantCode: codes.InvalidArgument},
		{name: "no roles", node: &cohortv1.Node{Id: "n1", Capacity: capacity}, wantCode: codes.InvalidArgument},
		{name: "no capacity", node: &cohortv1.Node{Id: "n1", Roles: worker}, wantCode: codes.InvalidArgument},
		{name: "paramserver without data address",
			node:     &cohortv1.Node{Id: "p1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_PARAMSERVER}, Capacity: capacity},
			wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := NewAgentService(newBackend(t), Config{})
			resp, err := svc.RegisterNode(context.Background(), &cohortv1.RegisterNodeRequest{Node: tt.node})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("err %v, want %v", err, tt.wantCode)
			}
			if err == nil && (resp.Node.Id != tt.wantID || resp.Node.RegistrationGeneration != 1 ||
				resp.Node.Status != cohortv1.NodeStatus_NODE_STATUS_READY) {
				t.Fatalf("node %v", resp.Node)
			}
		})
	}
}

func TestCancelAndGetJob(t *testing.T) {
	b := newBackend(t)
	svc := NewJobService(b, Config{ParseSpec: parseOK})
	ctx := context.Background()
	sub, err := svc.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("j")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		id       string
		wantCode codes.Code
	}{
		{name: "cancel", id: sub.Job.Id},
		{name: "cancel again is idempotent", id: sub.Job.Id},
		{name: "unknown job", id: "nope", wantCode: codes.NotFound},
		{name: "missing id", wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := svc.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: tt.id})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("err %v, want %v", err, tt.wantCode)
			}
			if err == nil && resp.Job.State != cohortv1.JobState_JOB_STATE_CANCELLED {
				t.Fatalf("job %v", resp.Job)
			}
		})
	}
	if _, err := svc.GetJob(ctx, &cohortv1.GetJobRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetJob unknown: %v", err)
	}
	list, err := svc.ListJobs(ctx, &cohortv1.ListJobsRequest{Namespace: "other"})
	if err != nil || len(list.Jobs) != 0 {
		t.Fatalf("ListJobs other namespace: %v %v", list, err)
	}
}

func TestReportTasksValidation(t *testing.T) {
	tests := []struct {
		name     string
		reports  []*cohortv1.TaskReport
		wantCode codes.Code
		proposed bool
	}{
		{name: "empty is a no-op"},
		{name: "one report", reports: []*cohortv1.TaskReport{{AllocationId: "a"}}, proposed: true},
		{name: "missing allocation id", reports: []*cohortv1.TaskReport{{}}, wantCode: codes.InvalidArgument},
		{name: "too many", reports: make([]*cohortv1.TaskReport, maxReportsPerCall+1), wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t)
			svc := NewAgentService(b, Config{})
			_, err := svc.ReportTasks(context.Background(), &cohortv1.ReportTasksRequest{Reports: tt.reports})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("err %v, want %v", err, tt.wantCode)
			}
			if (b.last != nil) != tt.proposed {
				t.Fatalf("proposed=%v, want %v", b.last != nil, tt.proposed)
			}
		})
	}
}
