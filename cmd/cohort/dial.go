package main

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/node"
)

// dialFailover opens the CLI's connection over several coordinators (`--address
// a,b,c`): each call goes to the coordinator that answered last or that another named
// as the leader, with a per-attempt deadline, and moves on when one is unavailable or
// silent (node.DialFailover), instead of sticking to the first that answers.
func dialFailover(addrs []string, creds credentials.TransportCredentials, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	return node.DialFailover(addrs, creds, extra...)
}
