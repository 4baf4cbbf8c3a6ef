package node

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

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

// clientOptions are the options of every connection the node opens to a coordinator:
// creds (nil: plaintext) and, when set, token sent with every call.
func clientOptions(creds credentials.TransportCredentials, token string) []grpc.DialOption {
	opts := append(transportOptions(creds), KeepaliveDialOption(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)))
	return append(opts, tokenOptions(token)...)
}

// dial opens one connection over the coordinators at addrs (DialCoordinators, or
// DialFailover for several) with creds
// and the node's token.
func dial(addrs []string, creds credentials.TransportCredentials, token string) (*grpc.ClientConn, error) {
	dialer := DialCoordinators
	if len(addrs) > 1 {
		dialer = DialFailover // a coordinator cut off from the majority is left for another
	}
	conn, err := dialer(addrs, creds, tokenOptions(token)...)
	if err != nil {
		return nil, fmt.Errorf("node: dial %v: %w", addrs, err)
	}
	return conn, nil
}

// tokenOptions send token with every call; none when token is empty.
func tokenOptions(token string) []grpc.DialOption {
	if token == "" {
		return nil
	}
	return []grpc.DialOption{grpc.WithPerRPCCredentials(api.BearerToken(token))}
}

// DialCoordinators opens one client connection over the coordinators at addrs, as every
// role and the CLI do: it uses the first one that answers and moves to another when it
// fails, calls retry while no coordinator is available (retryServiceConfig), and
// messages are bounded by MaxMessageBytes. creds are the transport credentials (see
// ClientTLSCredentials); nil is plaintext, whose calls to a coordinator that requires
// TLS fail with an error that says so. extra adds dial options (an ACL token).
func DialCoordinators(addrs []string, creds credentials.TransportCredentials, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no coordinator address")
	}
	opts := append(append(clientOptions(creds, ""), grpc.WithDefaultServiceConfig(retryServiceConfig)), extra...)
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

// plaintextOptions are the dial options of a connection without TLS: insecure
// credentials, and interceptors that explain the error of a call to a server that
// requires TLS (it closes the connection at once, and gRPC says only "error reading
// server preface").
func plaintextOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return explainPlaintext(invoker(ctx, method, req, reply, cc, opts...))
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			return s, explainPlaintext(err)
		}),
	}
}

// ServerRequiresTLSMessage is the message of a plaintext call to a server that requires TLS.
const ServerRequiresTLSMessage = "the server closed the connection before speaking gRPC: it most likely requires TLS, " +
	"and this client connects without (give it a TLS directory: --tls-dir or COHORT_TLS_DIR for the CLI, " +
	"--tls-dir for a node)"

// explainPlaintext rewrites the error of a plaintext call that a TLS server refused.
func explainPlaintext(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "error reading server preface") {
		return err
	}
	return status.Errorf(codes.Unavailable, "%s (%s)", ServerRequiresTLSMessage, st.Message())
}
