package main

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// jobCall is the preamble of a verb that makes one JobService call: check -o, dial the
// coordinators named by --address, call rpc (a method expression such as
// cohortv1.JobServiceClient.ListJobs) with req, close the connection, and map an error
// through rpcErr, which names what.
func jobCall[Req, Resp any](ctx context.Context, g *globalFlags, what string,
	rpc func(cohortv1.JobServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	return callJobService(ctx, g, rpc, req, func(err error) error { return rpcErr(what, err) })
}

// jobCallPrecondition is jobCall where a FailedPrecondition answer (a job without a
// report, a gate that cannot be overridden) is bad input: exit status 2 with the
// coordinator's message.
func jobCallPrecondition[Req, Resp any](ctx context.Context, g *globalFlags, what string,
	rpc func(cohortv1.JobServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	return callJobService(ctx, g, rpc, req, func(err error) error {
		if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
			return usageErr("%s", st.Message())
		}
		return rpcErr(what, err)
	})
}

// callJobService dials, makes the call, closes the connection and maps a call error.
func callJobService[Req, Resp any](ctx context.Context, g *globalFlags,
	rpc func(cohortv1.JobServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req, mapErr func(error) error) (Resp, error) {
	var zero Resp
	conn, err := connect(g)
	if err != nil {
		return zero, err
	}
	defer conn.Close()
	resp, err := rpc(cohortv1.NewJobServiceClient(conn), ctx, req)
	if err != nil {
		return zero, mapErr(err)
	}
	return resp, nil
}
