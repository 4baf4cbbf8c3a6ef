package api

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// logStream is a JobLogs server stream that keeps what is sent.
type logStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*cohortv1.JobLogsResponse
}

func (s *logStream) Context() context.Context { return s.ctx }
func (s *logStream) Send(m *cohortv1.JobLogsResponse) error {
	s.sent = append(s.sent, m)
	return nil
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %s", what, err, code)
	}
}

// TestResumeJobCodes: ResumeJob's refusals map to the status codes the CLI relies on.
func TestResumeJobCodes(t *testing.T) {
	b := newBackend(t)
	s := NewJobService(b, Config{ParseSpec: parseOK})
	ctx := context.Background()
	sub, err := s.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("j")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.ResumeJob(ctx, &cohortv1.ResumeJobRequest{Id: sub.GetJob().GetId()})
	wantCode(t, "pending job", err, codes.FailedPrecondition)
	if _, err := s.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: sub.GetJob().GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err = s.ResumeJob(ctx, &cohortv1.ResumeJobRequest{Id: sub.GetJob().GetId()})
	wantCode(t, "job without a checkpoint", err, codes.FailedPrecondition)
	_, err = s.ResumeJob(ctx, &cohortv1.ResumeJobRequest{Id: "nope"})
	wantCode(t, "unknown job", err, codes.NotFound)
	_, err = s.ResumeJob(ctx, &cohortv1.ResumeJobRequest{})
	wantCode(t, "no id", err, codes.InvalidArgument)
}

// TestJobLogsArguments: JobLogs refuses bad arguments, an unknown job and a
// coordinator without log storage, each with its code; a job without logs sends none.
func TestJobLogsArguments(t *testing.T) {
	b := newBackend(t)
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewJobService(b, Config{ParseSpec: parseOK, Logs: store, FollowerWait: 1})
	ctx := context.Background()
	sub, err := s.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("j")})
	if err != nil {
		t.Fatal(err)
	}
	id := sub.GetJob().GetId()
	for _, tc := range []struct {
		req  *cohortv1.JobLogsRequest
		code codes.Code
	}{
		{&cohortv1.JobLogsRequest{}, codes.InvalidArgument},
		{&cohortv1.JobLogsRequest{Id: id, Task: "worker"}, codes.InvalidArgument},
		{&cohortv1.JobLogsRequest{Id: id, Task: "../x"}, codes.InvalidArgument},
		{&cohortv1.JobLogsRequest{Id: id, Tail: -1}, codes.InvalidArgument},
		{&cohortv1.JobLogsRequest{Id: id, Tail: maxLogTail + 1}, codes.InvalidArgument},
		{&cohortv1.JobLogsRequest{Id: "nope"}, codes.NotFound},
		{&cohortv1.JobLogsRequest{Id: id, Task: "ps-0", Tail: 5}, codes.OK},
	} {
		st := &logStream{ctx: ctx}
		wantCode(t, tc.req.String(), s.JobLogs(tc.req, st), tc.code)
		if len(st.sent) != 0 {
			t.Errorf("%v: sent %v", tc.req, st.sent)
		}
	}
	noStore := NewJobService(b, Config{ParseSpec: parseOK})
	err = noStore.JobLogs(&cohortv1.JobLogsRequest{Id: id}, &logStream{ctx: ctx})
	wantCode(t, "no log storage", err, codes.FailedPrecondition)
}
