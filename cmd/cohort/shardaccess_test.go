package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestShardServesOnlyItsJobsWorkers: on a TLS dev cluster a job trains (its worker is
// among the shard's allowed workers), while an agent certificate of the same CA that
// is not one of the job's workers (another job's worker) is refused, naming why, on
// pull, push and checkpoint of the job's shard.
func TestShardServesOnlyItsJobsWorkers(t *testing.T) {
	c, client, ctx := startCluster(t, 1, 1)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: exampleSpec(t, "epochs: 30", "epochs: 100000")})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	id := resp.GetJob().GetId()
	defer func() { _, _ = client.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: id, Reason: "test over"}) }()
	stream, err := client.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	var job *cohortv1.Job
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if job = msg.GetJob(); job.GetProgress().GetEpoch() >= 1 {
			break // the job's own worker pulled and pushed through an epoch
		}
	}
	ca, err := pki.LoadCA(c.TLSDir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueFor(pki.Identity{Name: "other-jobs-worker", Role: pki.RoleAgent, ACLRole: "agent"}, []string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.NewReloader(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.Node.DataAddrs()[0], grpc.WithTransportCredentials(credentials.NewTLS(pki.RoleClientTLSConfig(ca.Pool(), certs, pki.RoleAgent))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ps := cohortv1.NewParameterServiceClient(conn)
	ref := &cohortv1.ShardRef{JobId: id, Shard: 0, Generation: job.GetGeneration()}
	check := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "other-jobs-worker is not among the workers of job") {
			t.Errorf("%s by another job's worker: %v, want PermissionDenied naming it", what, err)
		}
	}
	pull, err := ps.Pull(ctx, &cohortv1.PullRequest{Ref: ref})
	if err == nil {
		_, err = pull.Recv()
	}
	check("pull", err)
	push, err := ps.Push(ctx)
	if err == nil {
		_ = push.Send(&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Header{Header: &cohortv1.PushHeader{Ref: ref, Step: 0}}})
		_, err = push.CloseAndRecv()
	}
	check("push", err)
	_, err = ps.Checkpoint(ctx, &cohortv1.CheckpointRequest{Ref: ref, Step: 0, KeyPrefix: "jobs/" + id + "/checkpoints/x"})
	check("checkpoint", err)
}
