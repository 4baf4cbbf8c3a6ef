package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrNotCoordinator marks a --join address that answers but is not a cohort coordinator.
var ErrNotCoordinator = errors.New("not a cohort coordinator")

// joinAttemptTimeout bounds one Join call to one address.
const joinAttemptTimeout = 20 * time.Second

// JoinCluster asks the coordinators at addrs (their gRPC addresses), in order, to add
// req's coordinator as a voter, and returns the first answer. An address that is
// unreachable, is not a coordinator (wrapping ErrNotCoordinator), or has no leader is
// skipped; a refusal by a coordinator (a duplicate ID, bad input) is returned at once.
// The error names every address and why it failed.
func JoinCluster(ctx context.Context, addrs []string, req *cohortv1.JoinRequest, opts ...grpc.DialOption) (*cohortv1.JoinResponse, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("api: join: %w: no coordinator address", ErrInvalidArgument)
	}
	var errs []error
	for _, addr := range addrs {
		resp, err := joinOne(ctx, addr, req, opts)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
		switch status.Code(err) {
		case codes.AlreadyExists, codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied:
			return nil, err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("api: join: no coordinator accepted the join: %w", errors.Join(errs...))
}

func joinOne(ctx context.Context, addr string, req *cohortv1.JoinRequest, opts []grpc.DialOption) (*cohortv1.JoinResponse, error) {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, joinAttemptTimeout)
	defer cancel()
	resp, err := cohortv1.NewClusterServiceClient(conn).Join(cctx, req)
	if err == nil {
		return resp, nil
	}
	st, _ := status.FromError(err)
	switch {
	case st.Code() == codes.Unimplemented:
		return nil, fmt.Errorf("%s: %w (it does not serve cohort.v1.ClusterService): %w", addr, ErrNotCoordinator, err)
	case strings.Contains(st.Message(), "HTTP/1"):
		return nil, fmt.Errorf("%s: %w (it speaks HTTP/1, not gRPC; is this an --http-addr?): %w", addr, ErrNotCoordinator, err)
	case st.Code() == codes.Unavailable, st.Code() == codes.Internal, st.Code() == codes.Unknown:
		return nil, fmt.Errorf("%s: unreachable or without a leader: %w", addr, err)
	}
	return nil, fmt.Errorf("%s: join refused: %w", addr, err)
}
