package api

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ResumeJob sends a cancelled or failed job back to pending, to continue from its last
// committed checkpoint at a new generation once placed. A job that is pending, running
// or succeeded, or that has no checkpoint, is FailedPrecondition; an unknown one is
// NotFound.
//
// A resume carries an idempotency key (the caller's, or one minted here before the
// call is forwarded): a retry whose first try committed (its answer lost to a timeout
// or a leader change) finds its key on the job and gets the job as it is, instead of
// FailedPrecondition for a job that is pending again.
func (s *jobService) ResumeJob(ctx context.Context, req *cohortv1.ResumeJobRequest) (*cohortv1.ResumeJobResponse, error) {
	if err := checkID("id", req.Id); err != nil {
		return nil, toStatus(err)
	}
	if len(req.Reason) > maxReasonLen {
		return nil, toStatus(fmt.Errorf("%w: reason is longer than %d bytes", ErrInvalidArgument, maxReasonLen))
	}
	if len(req.IdempotencyKey) > maxIdempotencyKeyLen {
		return nil, toStatus(fmt.Errorf("%w: idempotency_key is longer than %d bytes", ErrInvalidArgument, maxIdempotencyKeyLen))
	}
	key := req.IdempotencyKey
	if key == "" {
		key = "auto-" + randomHex(16)
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.ResumeJobResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_ResumeJob{
			ResumeJob: &cohortv1.ResumeJobCommand{JobId: req.Id, Reason: req.Reason, IdempotencyKey: key},
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
		fwd := proto.Clone(req).(*cohortv1.ResumeJobRequest)
		fwd.IdempotencyKey = key
		return cohortv1.NewJobServiceClient(c).ResumeJob(ctx, fwd)
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
