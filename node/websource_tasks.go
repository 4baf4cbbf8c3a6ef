package node

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/web"
)

var _ web.TaskSource = (*webSource)(nil)

// JobTasks implements web.TaskSource: the job's allocations from GetJob, with the
// usage the leader last heard from their nodes.
func (s *webSource) JobTasks(ctx context.Context, id string) ([]*cohortv1.Allocation, error) {
	resp, err := s.jobs.GetJob(s.callCtx(ctx), &cohortv1.GetJobRequest{Id: id})
	if err != nil {
		if c := status.Code(err); c == codes.NotFound || c == codes.InvalidArgument {
			return nil, fmt.Errorf("%s: %w", status.Convert(err).Message(), web.ErrNotFound)
		}
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return resp.GetAllocations(), nil
}
