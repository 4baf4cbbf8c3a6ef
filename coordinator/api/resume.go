package api

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ResumeJob sends a cancelled or failed job back to pending, to continue from its last
// committed checkpoint at a new generation once placed. A job that is pending, running
// or succeeded, or that has no checkpoint, is FailedPrecondition; an unknown one is
// NotFound.
func (s *jobService) ResumeJob(ctx context.Context, req *cohortv1.ResumeJobRequest) (*cohortv1.ResumeJobResponse, error) {
	if err := checkID("id", req.Id); err != nil {
		return nil, toStatus(err)
	}
	if len(req.Reason) > maxReasonLen {
		return nil, toStatus(fmt.Errorf("%w: reason is longer than %d bytes", ErrInvalidArgument, maxReasonLen))
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.ResumeJobResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_ResumeJob{
			ResumeJob: &cohortv1.ResumeJobCommand{JobId: req.Id, Reason: req.Reason},
		}})
		if err != nil {
			return nil, err
		}
		job, ok := out.(*cohortv1.Job)
		if !ok {
			return nil, fmt.Errorf("api: resume job: unexpected response %T", out)
		}
		s.logger.Info("job resumed", "job", job.Id, "generation", job.Generation, "checkpoint", job.Checkpoint)
		return &cohortv1.ResumeJobResponse{Job: job}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ResumeJobResponse, error) {
		return cohortv1.NewJobServiceClient(c).ResumeJob(ctx, req)
	})
}

// resumeNamespace is the namespace of the job a resume names, from local state (an ACL
// rule's namespace function, as for a cancel).
func resumeNamespace(a *ACL, req any) (string, bool) {
	r, ok := req.(*cohortv1.ResumeJobRequest)
	if !ok || a.cfg.State == nil {
		return "", false
	}
	store := a.cfg.State()
	if store == nil {
		return "", false
	}
	job, err := store.JobByID(nil, r.Id)
	if err != nil || job == nil {
		return "", false
	}
	return job.Namespace, true
}
