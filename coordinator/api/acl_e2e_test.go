package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/clustertest"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/coordinator/state"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestACLOverGRPC runs two coordinators with ACLs on and calls both, so that calls to
// the follower are forwarded to the leader with the caller's token: an unknown token is
// Unauthenticated, a read token lists but cannot submit, a submit token limited to a
// namespace submits and cancels there only, a call without a token is authorized by its
// client certificate, an admin sets quotas and joins coordinators,
// and an agent token registers and heartbeats a node but reads nothing.
func TestACLOverGRPC(t *testing.T) {
	const (
		readSecret  = "e2e-read-secret-0123456789"
		teamSecret  = "e2e-team-a-secret-0123456789"
		adminSecret = "e2e-admin-secret-0123456789"
		agentSecret = "e2e-agent-secret-0123456789"
	)
	tokens := []api.Token{
		api.NewToken("viewer", api.RoleRead, readSecret),
		api.NewToken("team-a-ci", api.RoleSubmit, teamSecret, "team-a"),
		api.NewToken("ops", api.RoleAdmin, adminSecret),
		api.NewToken("agents", api.RoleAgent, agentSecret),
	}
	c := clustertest.TestCluster(t, 2, clustertest.Options{
		ServerOptions: func(s *server.Server) []grpc.ServerOption {
			acl := api.NewACL(api.ACLConfig{Tokens: tokens, ParseSpec: clustertest.ParseSpec, State: func() *state.Store { return s.State() }})
			return acl.ServerOptions()
		},
		// The second coordinator joins with the admin token.
		ClientOptions: []grpc.DialOption{grpc.WithPerRPCCredentials(api.BearerToken(adminSecret))},
	})
	leader := c.WaitForLeader(t)
	var follower *clustertest.Node
	for _, n := range c.Nodes {
		if n != leader {
			follower = n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dialAs := func(t *testing.T, n *clustertest.Node, opts []grpc.DialOption, secret string) *grpc.ClientConn {
		t.Helper()
		if secret != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(api.BearerToken(secret)))
		}
		conn, err := grpc.NewClient(n.GRPCAddr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	// dial calls as a client (people, tools); agents call with an agent certificate.
	dial := func(t *testing.T, n *clustertest.Node, secret string) *grpc.ClientConn {
		t.Helper()
		return dialAs(t, n, c.DialOptions(), secret)
	}
	code := func(err error) codes.Code { return status.Code(err) }

	for _, n := range []*clustertest.Node{leader, follower} {
		role := "leader"
		if n == follower {
			role = "follower"
		}
		t.Run(role, func(t *testing.T) {
			// Without a token the client certificate is the credential (ACL role admin).
			anon := cohortv1.NewJobServiceClient(dial(t, n, ""))
			if _, err := anon.SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "team-c", Limit: &cohortv1.Resources{Gpus: 1}}}); err != nil {
				t.Fatalf("SetQuota without a token, with the admin certificate: %v", err)
			}
			// A bearer token, when sent, is the credential: a read token cannot do what
			// the admin certificate it rides on could.
			if _, err := cohortv1.NewJobServiceClient(dial(t, n, readSecret)).SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "team-c"}}); code(err) != codes.PermissionDenied {
				t.Fatalf("SetQuota with a read token over the admin certificate: %v, want PermissionDenied", err)
			}
			bogus := cohortv1.NewJobServiceClient(dial(t, n, "not-a-valid-token-0123456789"))
			if _, err := bogus.ListJobs(ctx, &cohortv1.ListJobsRequest{}); code(err) != codes.Unauthenticated {
				t.Fatalf("ListJobs with an unknown token: %v, want Unauthenticated", err)
			}

			reader := cohortv1.NewJobServiceClient(dial(t, n, readSecret))
			if _, err := reader.ListJobs(ctx, &cohortv1.ListJobsRequest{}); err != nil {
				t.Fatalf("ListJobs with a read token: %v", err)
			}
			_, err := reader.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: r\nnamespace: team-a"), WaitForCapacity: true})
			if code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "SubmitJob") || !strings.Contains(err.Error(), "submit or admin") {
				t.Fatalf("SubmitJob with a read token: %v, want PermissionDenied naming the RPC and the role", err)
			}

			team := cohortv1.NewJobServiceClient(dial(t, n, teamSecret))
			sub, err := team.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: a-" + role + "\nnamespace: team-a"), WaitForCapacity: true})
			if err != nil {
				t.Fatalf("SubmitJob in team-a with the team-a token: %v", err)
			}
			if _, err := team.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: b\nnamespace: team-b"), WaitForCapacity: true}); code(err) != codes.PermissionDenied {
				t.Fatalf("SubmitJob in team-b with the team-a token: %v, want PermissionDenied", err)
			}
			if _, err := team.SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "team-a", Limit: &cohortv1.Resources{Gpus: 1}}}); code(err) != codes.PermissionDenied {
				t.Fatalf("SetQuota with a submit token: %v, want PermissionDenied", err)
			}

			admin := cohortv1.NewJobServiceClient(dial(t, n, adminSecret))
			other, err := admin.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: b-" + role + "\nnamespace: team-b"), WaitForCapacity: true})
			if err != nil {
				t.Fatalf("SubmitJob in team-b with the admin token: %v", err)
			}
			if _, err := team.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: other.GetJob().GetId()}); code(err) != codes.PermissionDenied {
				t.Fatalf("CancelJob of a team-b job with the team-a token: %v, want PermissionDenied", err)
			}
			if _, err := team.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: sub.GetJob().GetId()}); err != nil {
				t.Fatalf("CancelJob of its own team-a job: %v", err)
			}
			if _, err := admin.SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "team-a", Limit: &cohortv1.Resources{Gpus: 4}}}); err != nil {
				t.Fatalf("SetQuota with the admin token: %v", err)
			}
			if _, err := cohortv1.NewClusterServiceClient(dial(t, n, readSecret)).ListPeers(ctx, &cohortv1.ListPeersRequest{}); err != nil {
				t.Fatalf("ListPeers with a read token: %v", err)
			}
			if _, err := cohortv1.NewClusterServiceClient(dial(t, n, teamSecret)).TransferLeadership(ctx, &cohortv1.TransferLeadershipRequest{}); code(err) != codes.PermissionDenied {
				t.Fatalf("TransferLeadership with a submit token: %v, want PermissionDenied", err)
			}

			agentConn := dialAs(t, n, c.AgentDialOptions(), agentSecret)
			agentClient := cohortv1.NewAgentServiceClient(agentConn)
			reg, err := agentClient.RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: &cohortv1.Node{
				Id: "w-" + role, Name: "w-" + role, Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER},
				Capacity: &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 1 << 30},
			}})
			if err != nil {
				t.Fatalf("RegisterNode with the agent token: %v", err)
			}
			if _, err := agentClient.Heartbeat(ctx, &cohortv1.HeartbeatRequest{NodeId: reg.GetNode().GetId(), RegistrationGeneration: reg.GetNode().GetRegistrationGeneration()}); err != nil {
				t.Fatalf("Heartbeat with the agent token: %v", err)
			}
			if _, err := cohortv1.NewJobServiceClient(agentConn).ListJobs(ctx, &cohortv1.ListJobsRequest{}); code(err) != codes.PermissionDenied {
				t.Fatalf("ListJobs with the agent token: %v, want PermissionDenied", err)
			}
			if _, err := cohortv1.NewAgentServiceClient(dial(t, n, readSecret)).RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: &cohortv1.Node{Name: "x"}}); code(err) != codes.PermissionDenied {
				t.Fatalf("RegisterNode with a read token: %v, want PermissionDenied", err)
			}
		})
	}

	// A coordinator without the admin token cannot join.
	_, err := api.JoinCluster(ctx, []string{leader.GRPCAddr},
		&cohortv1.JoinRequest{Id: "c9", RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2"},
		append(c.IssueDialOptions(t, pki.Identity{Name: "c9", Role: pki.RoleCoordinator}), grpc.WithPerRPCCredentials(api.BearerToken(readSecret)))...)
	if code(err) != codes.PermissionDenied {
		t.Fatalf("Join with a read token: %v, want PermissionDenied", err)
	}
}
