package api

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// finishedJob submits a job, places its worker and reports it succeeded with a report
// URI and gate, and returns its id.
func finishedJob(t *testing.T, b *fsmBackend, s cohortv1.JobServiceServer, gate *cohortv1.GateResult) string {
	t.Helper()
	ctx := context.Background()
	sub, err := s.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("j")})
	if err != nil {
		t.Fatal(err)
	}
	id := sub.GetJob().GetId()
	for _, cmd := range []*cohortv1.Command{
		{Kind: &cohortv1.Command_CommitPlan{CommitPlan: &cohortv1.CommitPlanCommand{JobId: id, Allocations: []*cohortv1.Allocation{
			{Id: id + "-w0", JobId: id, NodeId: "n1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER}}}}},
		{Kind: &cohortv1.Command_UpdateTasks{UpdateTasks: &cohortv1.UpdateTasksCommand{Reports: []*cohortv1.TaskReport{{
			AllocationId: id + "-w0", State: cohortv1.TaskState_TASK_STATE_SUCCEEDED, Report: "file:///r/" + storage.ReportKey(id), Gate: gate}}}}},
	} {
		if _, err := b.Apply(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// TestGetJobReportAndOverride: the report is read from storage with the job record's
// overrides merged in; the override records the ACL caller, else the unverified name;
// refusals carry their codes.
func TestGetJobReportAndOverride(t *testing.T) {
	b := newBackend(t)
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewJobService(b, Config{ParseSpec: parseOK, Logs: store, FollowerWait: 1})
	ctx := context.Background()
	id := finishedJob(t, b, s, &cohortv1.GateResult{Reasons: []string{"impact ratio 0.5 for Gender=Male < 0.8"}})
	passed := finishedJob(t, b, s, &cohortv1.GateResult{Passed: true})

	_, err = s.GetJobReport(ctx, &cohortv1.GetJobReportRequest{Id: id})
	wantCode(t, "report not in storage", err, codes.FailedPrecondition)
	report := `{"format_version": 1, "metrics": {"val_auc": {"value": 0.8123456789012345, "ci95": [0.7, 0.9]}},
	  "audit": {"gate": {"passed": false, "reasons": ["impact ratio 0.5 for Gender=Male < 0.8"]}}}`
	if err := store.Put(ctx, storage.ReportKey(id), strings.NewReader(report), int64(len(report))); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetJobReport(ctx, &cohortv1.GetJobReportRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.GetReportJson(), []byte(report)) || got.GetUri() != "file:///r/"+storage.ReportKey(id) {
		t.Errorf("report without override changed: %s", got.GetReportJson())
	}

	// Without ACLs the caller is the unverified name; with them, the token's name.
	if _, err := s.OverrideGate(ctx, &cohortv1.OverrideGateRequest{Id: id, Reason: "legal review", RequestedBy: "bob"}); err != nil {
		t.Fatal(err)
	}
	acl := testACL(t)
	_, err = acl.UnaryServerInterceptor()(withToken(adminSecret), &cohortv1.OverrideGateRequest{Id: id, Reason: "second look", RequestedBy: "mallory"},
		&grpc.UnaryServerInfo{FullMethod: cohortv1.JobService_OverrideGate_FullMethodName},
		func(ctx context.Context, req any) (any, error) {
			return s.OverrideGate(ctx, req.(*cohortv1.OverrideGateRequest))
		})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.GetJobReport(ctx, &cohortv1.GetJobReportRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	var merged struct {
		Metrics map[string]struct{ Value json.Number }
		Audit   struct {
			Gate struct {
				Passed    bool
				Reasons   []string
				Override  struct{ By, Reason, Time string }
				Overrides []struct{ By, Reason string }
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(got.GetReportJson()))
	dec.UseNumber()
	if err := dec.Decode(&merged); err != nil {
		t.Fatal(err)
	}
	g := merged.Audit.Gate
	if g.Passed || len(g.Reasons) != 1 || len(g.Overrides) != 2 || g.Overrides[0].By != "unverified:bob" ||
		g.Override.By != "root" || g.Override.Reason != "second look" || g.Override.Time == "" {
		t.Errorf("merged gate %+v", g)
	}
	if v := merged.Metrics["val_auc"].Value; v != "0.8123456789012345" {
		t.Errorf("val_auc became %s: numbers must pass unchanged", v)
	}

	for _, tc := range []struct {
		name string
		req  *cohortv1.OverrideGateRequest
		code codes.Code
	}{
		{"no reason", &cohortv1.OverrideGateRequest{Id: id, Reason: "  "}, codes.InvalidArgument},
		{"reason too long", &cohortv1.OverrideGateRequest{Id: id, Reason: strings.Repeat("x", maxReasonLen+1)}, codes.InvalidArgument},
		{"passed gate", &cohortv1.OverrideGateRequest{Id: passed, Reason: "x"}, codes.FailedPrecondition},
		{"unknown job", &cohortv1.OverrideGateRequest{Id: "nope", Reason: "x"}, codes.NotFound},
	} {
		_, err := s.OverrideGate(ctx, tc.req)
		wantCode(t, tc.name, err, tc.code)
	}
	_, err = s.GetJobReport(ctx, &cohortv1.GetJobReportRequest{Id: "nope"})
	wantCode(t, "unknown job", err, codes.NotFound)
	sub, err := s.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("j2"), IdempotencyKey: "other"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.GetJobReport(ctx, &cohortv1.GetJobReportRequest{Id: sub.GetJob().GetId()})
	if wantCode(t, "pending job", err, codes.FailedPrecondition); !strings.Contains(status.Convert(err).Message(), "no report yet") {
		t.Errorf("pending job: %v", err)
	}
	_, err = NewJobService(b, Config{ParseSpec: parseOK}).GetJobReport(ctx, &cohortv1.GetJobReportRequest{Id: id})
	wantCode(t, "no storage", err, codes.FailedPrecondition)
}

// FuzzMergeOverride: whatever bytes storage holds, merging a job's overrides into them
// never panics, refuses what is not one JSON object, and gives back valid JSON that
// carries the latest override.
func FuzzMergeOverride(f *testing.F) {
	f.Add([]byte(`{"audit": {"gate": {"passed": false, "reasons": ["x"]}}}`))
	f.Add([]byte(`{"audit": {}}`))
	f.Add([]byte(`{"audit": null, "x": 1e999}`))
	f.Add([]byte(`[1, 2]`))
	f.Add([]byte(`{"a": 1} {"b": 2}`))
	gate := &cohortv1.GateResult{Reasons: []string{"r"}, Overrides: []*cohortv1.GateOverride{{By: "alice", Reason: "why", TimeUnixNano: 1}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := mergeOverride(data, gate)
		if err != nil {
			return
		}
		var v struct {
			Audit struct {
				Gate struct {
					Override struct{ By string }
				}
			}
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("merged report is not JSON: %v\n%s", err, out)
		}
		if v.Audit.Gate.Override.By != "alice" {
			t.Fatalf("override lost: %s", out)
		}
		if _, err := mergeOverride(data, nil); err != nil {
			t.Fatalf("no overrides: %v", err)
		}
	})
}
