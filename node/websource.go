package node

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/web"
)

// webSource backs the dashboard with the coordinator's gRPC API, like any other API
// client: whichever coordinator serves the dashboard forwards to the leader as needed.
type webSource struct {
	jobs    cohortv1.JobServiceClient
	cluster cohortv1.ClusterServiceClient
	// stale makes every read a local read of the coordinator's replicated state
	// (api.StaleReadHeader), never forwarded to the leader.
	stale bool
}

// callCtx marks ctx's calls as stale reads when s.stale is set.
func (s *webSource) callCtx(ctx context.Context) context.Context {
	if !s.stale {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, api.StaleReadHeader, "true")
}

var _ web.Source = (*webSource)(nil)

// newWebSource returns a dashboard Source over conn.
func newWebSource(conn grpc.ClientConnInterface) *webSource {
	return &webSource{jobs: cohortv1.NewJobServiceClient(conn), cluster: cohortv1.NewClusterServiceClient(conn)}
}

// ListJobs implements web.Source.
func (s *webSource) ListJobs(ctx context.Context) ([]*cohortv1.Job, error) {
	resp, err := s.jobs.ListJobs(s.callCtx(ctx), &cohortv1.ListJobsRequest{})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return resp.GetJobs(), nil
}

// GetJob implements web.Source; an unknown job is web.ErrNotFound.
func (s *webSource) GetJob(ctx context.Context, id string) (*cohortv1.Job, error) {
	resp, err := s.jobs.GetJob(s.callCtx(ctx), &cohortv1.GetJobRequest{Id: id})
	if err != nil {
		switch status.Code(err) {
		case codes.NotFound:
			return nil, web.ErrNotFound // the caller names the job
		case codes.InvalidArgument: // not a job ID
			return nil, fmt.Errorf("%s: %w", status.Convert(err).Message(), web.ErrNotFound)
		}
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return resp.GetJob(), nil
}

// ListNodes implements web.Source.
func (s *webSource) ListNodes(ctx context.Context) ([]*cohortv1.Node, error) {
	resp, err := s.jobs.ListNodes(s.callCtx(ctx), &cohortv1.ListNodesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return resp.GetNodes(), nil
}

// Peers implements web.Source.
func (s *webSource) Peers(ctx context.Context) ([]*cohortv1.Peer, error) {
	resp, err := s.cluster.ListPeers(s.callCtx(ctx), &cohortv1.ListPeersRequest{})
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	return resp.GetPeers(), nil
}

var _ web.ReportSource = (*webSource)(nil)

// JobReport implements web.ReportSource: the job's report.json through GetJobReport; a
// job without a report (or an unknown one) is web.ErrNotFound.
func (s *webSource) JobReport(ctx context.Context, id string) ([]byte, error) {
	resp, err := s.jobs.GetJobReport(s.callCtx(ctx), &cohortv1.GetJobReportRequest{Id: id})
	if err != nil {
		if c := status.Code(err); c == codes.NotFound || c == codes.FailedPrecondition {
			return nil, fmt.Errorf("job %q report: %s: %w", id, status.Convert(err).Message(), web.ErrNotFound)
		}
		return nil, fmt.Errorf("job %q report: %w", id, err)
	}
	return resp.GetReportJson(), nil
}
