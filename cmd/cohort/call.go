package main

import (
	"context"

	"google.golang.org/grpc"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// jobCall is the preamble of a verb that makes one JobService call: check -o, dial the
// coordinators named by --address, call rpc (a method expression such as
// cohortv1.JobServiceClient.ListJobs) with req, close the connection, and map an error
// through rpcErr, which names what.
func jobCall[Req, Resp any](ctx context.Context, g *globalFlags, what string,
	rpc func(cohortv1.JobServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var zero Resp
	conn, err := connect(g)
	if err != nil {
		return zero, err
	}
	defer conn.Close()
	resp, err := rpc(cohortv1.NewJobServiceClient(conn), ctx, req)
	if err != nil {
		return zero, rpcErr(what, err)
	}
	return resp, nil
}
