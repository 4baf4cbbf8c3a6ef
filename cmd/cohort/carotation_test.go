package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// peerIssuer opens a TLS connection to addr as certs (verifying the server against
// trust and its role) and returns the authority key id of the server's certificate.
func peerIssuer(addr string, trust *pki.Trust, certs *pki.Reloader, role pki.Role) ([]byte, error) {
	cfg := pki.RoleClientTLSConfigTrust(trust, certs, role)
	cfg.NextProtos = []string{"h2"} // gRPC servers refuse a connection without it
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// TLS 1.3: the server checks the client's certificate after the client's handshake
	// ends; a refusal arrives as an alert on the first read.
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			return nil, err
		}
	}
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].AuthorityKeyId, nil
}

func issueFrom(t *testing.T, ca *pki.CA, id pki.Identity) *pki.Reloader {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueFor(id, []string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r, err := pki.NewReloader(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCARotationWhileTraining rotates the cluster CA of a dev cluster (coordinator, two
// parameter servers, two workers: every connection mutual TLS; gossip on) while a job
// trains, with `cohort operator tls rotate-ca`, and its gossip key (`keyring install`,
// `use`, `remove`), the job still running once both are recorded: the job finishes and its checkpoint verifies;
// the coordinator's, the parameter servers' and the operator's certificates are
// renewed onto the new CA; a client that trusts only the new CA, with a certificate of
// the new CA, reaches the API, the Raft port and a parameter server; certificates of
// the old CA keep working until `rotate-ca --finish --force`, and are refused after it;
// `tls status` shows the CAs at each step.
func TestCARotationWhileTraining(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t),
		Mutate: func(cfg *node.Config) { cfg.Gossip.BindAddr = "127.0.0.1:0" }})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := cohortv1.NewJobServiceClient(conn)
	oldCA := testCA(t)
	firstKeys := c.Node.Gossip().Keys()
	if len(firstKeys) != 1 {
		t.Fatalf("the dev node's gossip keyring has %d keys, want 1", len(firstKeys))
	}
	spec := exampleSpec(t, "epochs: 30", "epochs: 20", "everySteps: 200, keep: 3", "everySteps: 20, keep: 2")
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec, IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJob().GetId()
	stream, err := client.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	for { // training: a checkpoint is committed
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if msg.GetJob().GetCheckpoint() != "" {
			break
		}
	}

	cli := func(args ...string) string {
		t.Helper()
		out, err := execCLI(ctx, append(args, "--address", c.GRPCAddr, "--tls-dir", c.TLSDir, "-o", "json")...)
		if err != nil {
			t.Fatalf("cohort %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	type status struct {
		CAs []struct {
			Hash   string `json:"hash"`
			Active bool   `json:"active"`
		} `json:"cas"`
	}
	parse := func(out string) status {
		var s status
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("tls status -o json: %v\n%s", err, out)
		}
		return s
	}
	if s := parse(cli("operator", "tls", "status")); len(s.CAs) != 1 || s.CAs[0].Hash != oldCA.Hash() || !s.CAs[0].Active {
		t.Fatalf("status before the rotation: %+v, want the test CA alone", s)
	}
	rotated := parse(cli("operator", "tls", "rotate-ca"))
	if job, err := client.GetJob(ctx, &cohortv1.GetJobRequest{Id: id}); err != nil || job.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("the job is not running once the rotation is recorded (%v, %s): it must train through it; give it more epochs", err, stateName(job.GetJob().GetState()))
	}
	if len(rotated.CAs) != 2 || !rotated.CAs[0].Active || rotated.CAs[1].Hash != oldCA.Hash() {
		t.Fatalf("status after rotate-ca: %+v, want the new CA active and the old one trusted", rotated)
	}
	newHash := rotated.CAs[0].Hash

	// The gossip key rotates too, while the job trains: install, use, remove the old.
	type keyring struct {
		Keys []struct {
			Fingerprint string `json:"fingerprint"`
			Primary     bool   `json:"primary"`
		} `json:"keys"`
	}
	var installed keyring
	if err := json.Unmarshal([]byte(cli("operator", "gossip", "keyring", "install")), &installed); err != nil || len(installed.Keys) != 2 {
		t.Fatalf("keyring install: %v %+v", err, installed)
	}
	newKey := installed.Keys[1].Fingerprint
	cli("operator", "gossip", "keyring", "use", newKey)
	cli("operator", "gossip", "keyring", "remove", installed.Keys[0].Fingerprint)
	if job, err := client.GetJob(ctx, &cohortv1.GetJobRequest{Id: id}); err != nil || job.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("the job is not running once both rotations are recorded (%v, %s): give it more epochs", err, stateName(job.GetJob().GetState()))
	}

	// The coordinator switches to the new CA: its directory holds it, and its
	// certificates are reissued by it.
	var newCA *pki.CA
	waitFor(t, "the coordinator to hold the new CA", 20*time.Second, func() error {
		ca, err := pki.LoadCA(c.TLSDir)
		if err == nil && ca.Hash() != newHash {
			err = fmt.Errorf("its CA is %s, not %s", ca.Hash(), newHash)
		}
		newCA = ca
		return err
	})
	newOnly := pki.NewTrust(newCA.Certificate())
	newSKID := newCA.Certificate().SubjectKeyId
	newClient := issueFrom(t, newCA, pki.Identity{Name: "alice", Role: pki.RoleClient, ACLRole: "admin"})
	newAgent := issueFrom(t, newCA, pki.Identity{Name: "probe", Role: pki.RoleAgent, ACLRole: "agent"})
	newCoord := issueFrom(t, newCA, pki.Identity{Name: "c9", Role: pki.RoleCoordinator})
	ports := []struct {
		name  string
		addr  string
		as    *pki.Reloader
		serve pki.Role
	}{
		{"api", c.GRPCAddr, newClient, pki.RoleCoordinator},
		{"raft", c.Node.RaftAddr(), newCoord, pki.RoleCoordinator},
		{"paramserver 1", c.Node.DataAddrs()[0], newAgent, pki.RoleAgent},
		{"paramserver 2", c.Node.DataAddrs()[1], newAgent, pki.RoleAgent},
	}
	for _, p := range ports {
		waitFor(t, p.name+" to present a certificate of the new CA to a client trusting only it", 20*time.Second, func() error {
			issuer, err := peerIssuer(p.addr, newOnly, p.as, p.serve)
			if err == nil && !bytes.Equal(issuer, newSKID) {
				err = fmt.Errorf("issued by %x", issuer)
			}
			return err
		})
	}
	waitFor(t, "the operator's admin.crt to be reissued by the new CA", 20*time.Second, func() error {
		certPEM, keyPEM, err := pki.LoadKeyPair(c.TLSDir+"/"+pki.AdminCertFile, c.TLSDir+"/"+pki.AdminKeyFile)
		if err != nil {
			return err
		}
		admin, err := pki.NewReloader(certPEM, keyPEM, nil)
		if err == nil && !bytes.Equal(admin.Leaf().AuthorityKeyId, newSKID) {
			err = errors.New("still issued by the old CA")
		}
		return err
	})
	// (The CLI reads admin.crt again only now: the coordinator rewrites it, key first.)
	if _, err := execCLI(ctx, "operator", "tls", "rotate-ca", "--address", c.GRPCAddr, "--tls-dir", c.TLSDir); err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Errorf("a second rotate-ca during the rotation: %v, want a refusal naming the rotation in progress", err)
	}
	newConn, err := grpc.NewClient(c.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(pki.RoleClientTLSConfigTrust(newOnly, newClient, pki.RoleCoordinator))))
	if err != nil {
		t.Fatal(err)
	}
	defer newConn.Close()
	if _, err := cohortv1.NewJobServiceClient(newConn).ListJobs(ctx, &cohortv1.ListJobsRequest{}); err != nil {
		t.Fatalf("a client of the new CA only: %v", err)
	}
	// During the overlap the old CA's certificates still work: the test client's
	// (client is its connection) and an agent's.
	oldAgent := issueFrom(t, oldCA, pki.Identity{Name: "probe", Role: pki.RoleAgent, ACLRole: "agent"})
	oldOnly := pki.NewTrust(oldCA.Certificate())
	if _, err := peerIssuer(c.Node.DataAddrs()[0], oldOnly, oldAgent, pki.RoleAgent); err != nil {
		t.Errorf("during the overlap, an agent of the old CA trusting only it: %v", err)
	}

	// The job trains on to the end; its last checkpoint verifies.
	final, err := watchUntilDone(ctx, client, id, nil)
	if err != nil || final.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after the rotation: %v %s %s", err, stateName(final.GetState()), final.GetStatusMessage())
	}
	man, err := storage.ReadManifest(ctx, c.Store, keyOf(t, c, final.GetCheckpoint()))
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.VerifyManifestObjects(ctx, c.Store, man); err != nil {
		t.Fatalf("the job's checkpoint (step %d) does not verify: %v", man.Step, err)
	}

	waitFor(t, "the node's gossip member to use the new key alone", 20*time.Second, func() error {
		if k := c.Node.Gossip().Keys(); len(k) != 1 || api.GossipKeyFingerprint(k[0]) != newKey {
			return fmt.Errorf("%d keys", len(k))
		}
		return nil
	})

	// --finish: only the new CA is trusted; the old CA's certificates are refused.
	done := parse(cli("operator", "tls", "rotate-ca", "--finish", "--force"))
	if len(done.CAs) != 1 || done.CAs[0].Hash != newHash {
		t.Fatalf("status after --finish: %+v, want the new CA alone", done)
	}
	waitFor(t, "the parameter server to refuse an agent of the old CA", 20*time.Second, func() error {
		if _, err := peerIssuer(c.Node.DataAddrs()[0], pki.NewTrust(newCA.Certificate(), oldCA.Certificate()), oldAgent, pki.RoleAgent); err == nil {
			return errors.New("accepted")
		}
		return nil
	})
	oldCreds, err := node.ClientTLSCredentials(testPKI.clientDir)
	if err != nil {
		t.Fatal(err)
	}
	oldConn, err := grpc.NewClient(c.GRPCAddr, grpc.WithTransportCredentials(oldCreds))
	if err != nil {
		t.Fatal(err)
	}
	defer oldConn.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cohortv1.NewJobServiceClient(oldConn).ListJobs(cctx, &cohortv1.ListJobsRequest{}); err == nil {
		t.Error("after --finish, a client certificate of the old CA was accepted")
	}
	if _, err := peerIssuer(c.Node.RaftAddr(), newOnly, issueFrom(t, oldCA, pki.Identity{Name: "c9", Role: pki.RoleCoordinator}), pki.RoleCoordinator); err == nil {
		t.Error("after --finish, the Raft port accepted a coordinator certificate of the old CA")
	}
	if _, err := cohortv1.NewJobServiceClient(newConn).ListJobs(ctx, &cohortv1.ListJobsRequest{}); err != nil {
		t.Errorf("after --finish, a client of the new CA: %v", err)
	}
}
