package node

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Keepalives on every Cohort connection: a peer that went silent (a host cut off, a
// paused or killed process whose TCP connection was not reset) is noticed by a missing
// ping answer rather than by a call or a stream that hangs until something else resets
// it. grpc-go pings at most every 10 s from a client; the server side pings idle
// clients as often and permits clients to ping every 5 s, with or without open calls.
const (
	// KeepaliveTime is how long a connection may be idle before a ping.
	KeepaliveTime = 10 * time.Second
	// KeepaliveTimeout is how long a ping may go unanswered before the connection is
	// closed (its calls fail Unavailable, its streams end).
	KeepaliveTimeout = 3 * time.Second
	// keepaliveMinClientTime is the most often a server lets a client ping.
	keepaliveMinClientTime = 5 * time.Second
)

// KeepaliveDialOption is the client keepalive of every connection a node or the CLI
// opens (to coordinators, between coordinators, to parameter-server shards).
func KeepaliveDialOption() grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time: KeepaliveTime, Timeout: KeepaliveTimeout, PermitWithoutStream: true})
}

// KeepaliveServerOptions are the keepalive options of every gRPC server of a node
// (the coordinator API, parameter-server shards): they ping idle clients and accept
// the clients' pings (KeepaliveDialOption).
func KeepaliveServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: keepaliveMinClientTime, PermitWithoutStream: true}),
	}
}
