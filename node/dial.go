package node

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/cohort-dev/cohort/coordinator/api"
)

// retryServiceConfig makes every coordinator call retry while the coordinator it
// reached is unavailable (down, or without a leader during an election). Retries are
// safe: submissions carry an idempotency key and the other writes are idempotent.
const retryServiceConfig = `{
  "loadBalancingConfig": [{"pick_first": {}}],
  "methodConfig": [{
    "name": [{"service": "cohort.v1.JobService"}, {"service": "cohort.v1.AgentService"}, {"service": "cohort.v1.ClusterService"}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "2s", "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]}
  }]
}`

// clientOptions are the options of every connection the node opens to a coordinator;
// token, when set, is sent with every call.
func clientOptions(token string) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(api.BearerToken(token)))
	}
	return opts
}

// dial opens one connection over the coordinators at addrs (DialCoordinators) with the
// node's token.
func dial(addrs []string, token string) (*grpc.ClientConn, error) {
	conn, err := DialCoordinators(addrs, clientOptions(token)...)
	if err != nil {
		return nil, fmt.Errorf("node: dial %v: %w", addrs, err)
	}
	return conn, nil
}

// DialCoordinators opens one client connection over the coordinators at addrs, as every
// role and the CLI do: it uses the first one that answers and moves to another when it
// fails, calls retry while no coordinator is available (retryServiceConfig), and
// messages are bounded by MaxMessageBytes. extra adds dial options (an ACL token).
func DialCoordinators(addrs []string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no coordinator address")
	}
	opts := append(append(clientOptions(""), grpc.WithDefaultServiceConfig(retryServiceConfig)), extra...)
	target := addrs[0]
	if len(addrs) > 1 {
		r := manual.NewBuilderWithScheme("cohort")
		var st resolver.State
		for _, a := range addrs {
			st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
		}
		r.InitialState(st)
		opts = append(opts, grpc.WithResolvers(r))
		target = "cohort:///coordinators"
	}
	return grpc.NewClient(target, opts...)
}
