package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/clustertest"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/coordinator/state"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestCertificateACLOverGRPC runs two coordinators without ACL tokens, over mutual TLS,
// and calls both with client certificates: each acts with its ACL role and namespaces
// as a token would, also when a follower forwards the call to the leader. A read
// certificate limited to team-a lists and gets team-a jobs only and cannot submit or
// cancel; a submit certificate limited to team-a submits and cancels there only; the
// admin certificate does everything; a client cannot pass itself off as another by
// sending the header coordinators forward with.
func TestCertificateACLOverGRPC(t *testing.T) {
	c := clustertest.TestCluster(t, 2, clustertest.Options{
		ServerOptions: func(s *server.Server) []grpc.ServerOption {
			return api.NewACL(api.ACLConfig{TokensOff: true, ParseSpec: clustertest.ParseSpec, State: func() *state.Store { return s.State() }}).ServerOptions()
		},
	})
	leader := c.WaitForLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dial := func(t *testing.T, n *clustertest.Node, opts []grpc.DialOption) cohortv1.JobServiceClient {
		t.Helper()
		conn, err := grpc.NewClient(n.GRPCAddr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return cohortv1.NewJobServiceClient(conn)
	}
	readOpts := c.IssueDialOptions(t, pki.Identity{Name: "viewer", Role: pki.RoleClient, ACLRole: "read", Namespaces: []string{"team-a"}})
	teamOpts := c.IssueDialOptions(t, pki.Identity{Name: "team-a-ci", Role: pki.RoleClient, ACLRole: "submit", Namespaces: []string{"team-a"}})
	code := func(err error) codes.Code { return status.Code(err) }

	for _, n := range c.Nodes {
		role := "follower"
		if n == leader {
			role = "leader"
		}
		t.Run(role, func(t *testing.T) {
			admin, reader, team := dial(t, n, c.DialOptions()), dial(t, n, readOpts), dial(t, n, teamOpts)
			b, err := admin.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: b-" + role + "\nnamespace: team-b"), WaitForCapacity: true})
			if err != nil {
				t.Fatalf("SubmitJob in team-b with the admin certificate: %v", err)
			}
			a, err := team.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: a-" + role + "\nnamespace: team-a"), WaitForCapacity: true})
			if err != nil {
				t.Fatalf("SubmitJob in team-a with the team-a submit certificate: %v", err)
			}
			if _, err := team.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: x\nnamespace: team-b"), WaitForCapacity: true}); code(err) != codes.PermissionDenied ||
				!strings.Contains(err.Error(), "team-a-ci") || !strings.Contains(err.Error(), `not "team-b"`) {
				t.Fatalf("SubmitJob in team-b with the team-a certificate: %v, want PermissionDenied naming the certificate and the namespace", err)
			}
			if _, err := team.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: b.GetJob().GetId()}); code(err) != codes.PermissionDenied {
				t.Fatalf("CancelJob of a team-b job with the team-a certificate: %v, want PermissionDenied", err)
			}
			if _, err := team.SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "team-a"}}); code(err) != codes.PermissionDenied ||
				!strings.Contains(err.Error(), "role submit") || !strings.Contains(err.Error(), "admin") {
				t.Fatalf("SetQuota with a submit certificate: %v, want PermissionDenied naming the roles", err)
			}

			// The read certificate: reads team-a, nothing of team-b, writes nothing.
			_, err = reader.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: r\nnamespace: team-a"), WaitForCapacity: true})
			if code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "SubmitJob") || !strings.Contains(err.Error(), "the certificate of viewer has role read") {
				t.Fatalf("SubmitJob with a read certificate: %v, want PermissionDenied naming the RPC and the role", err)
			}
			if _, err := reader.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: a.GetJob().GetId()}); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "role read") {
				t.Fatalf("CancelJob with a read certificate: %v, want PermissionDenied naming the role", err)
			}
			if _, err := reader.GetJob(ctx, &cohortv1.GetJobRequest{Id: a.GetJob().GetId()}); err != nil {
				t.Fatalf("GetJob of a team-a job with the team-a read certificate: %v", err)
			}
			if _, err := reader.GetJob(ctx, &cohortv1.GetJobRequest{Id: b.GetJob().GetId()}); code(err) != codes.PermissionDenied {
				t.Fatalf("GetJob of a team-b job with the team-a read certificate: %v, want PermissionDenied", err)
			}
			list, err := reader.ListJobs(ctx, &cohortv1.ListJobsRequest{})
			if err != nil {
				t.Fatalf("ListJobs with the read certificate: %v", err)
			}
			var sawA bool
			for _, j := range list.GetJobs() {
				if j.GetNamespace() != "team-a" {
					t.Errorf("ListJobs with a team-a read certificate shows %s in %q", j.GetId(), j.GetNamespace())
				}
				sawA = sawA || j.GetId() == a.GetJob().GetId()
			}
			if !sawA {
				t.Errorf("ListJobs with the team-a read certificate misses team-a job %s", a.GetJob().GetId())
			}
			if _, err := reader.ListJobs(ctx, &cohortv1.ListJobsRequest{Namespace: "team-b"}); code(err) != codes.PermissionDenied {
				t.Errorf("ListJobs of team-b with the team-a read certificate: %v, want PermissionDenied", err)
			}
			// The forwarding header is believed from coordinators only.
			forged := metadata.AppendToOutgoingContext(ctx, "cohort-on-behalf-of", "root;admin;")
			if _, err := reader.SetQuota(forged, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "team-a"}}); code(err) != codes.PermissionDenied {
				t.Fatalf("SetQuota with a read certificate claiming to forward for an admin: %v, want PermissionDenied", err)
			}

			if _, err := team.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: a.GetJob().GetId()}); err != nil {
				t.Fatalf("CancelJob of its own team-a job with the team-a certificate: %v", err)
			}
			if _, err := admin.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: b.GetJob().GetId()}); err != nil {
				t.Fatalf("CancelJob of a team-b job with the admin certificate: %v", err)
			}
			if _, err := admin.SetQuota(ctx, &cohortv1.SetQuotaRequest{Quota: &cohortv1.Quota{Namespace: "team-a", Limit: &cohortv1.Resources{Gpus: 4}}}); err != nil {
				t.Fatalf("SetQuota with the admin certificate: %v", err)
			}
		})
	}
}
