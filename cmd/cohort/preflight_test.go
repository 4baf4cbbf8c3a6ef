package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/node"
	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage/s3test"
)

// wantBadInput fails unless err is a bad-input error (exit status 2) whose message is
// exactly want.
func wantBadInput(t *testing.T, what string, err error, want string) {
	t.Helper()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || err.Error() != want {
		t.Errorf("%s: error %v (exit %v), want exit 2 with\n%s", what, err, exitCodeOf(err), want)
	}
}

func exitCodeOf(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return 1
	}
	return 0
}

// writeSpec writes spec to a file of the test's and returns its path.
func writeSpec(t *testing.T, name string, spec []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, spec, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPreflightAndJobIDs runs a real dev cluster (coordinator, a worker and a
// parameter server over gRPC with mutual TLS) and drives it with the CLI:
//   - job submit and job plan refuse a label that is not in the data (a case-only
//     difference included) and a data path that does not exist, with exit status 2 and
//     a did-you-mean naming the spec field; nothing is submitted;
//   - data the coordinator cannot read (s3:// without an S3 endpoint) is a warning,
//     and the job is accepted;
//   - job verbs resolve names, unique ID prefixes and --latest, list the candidates of
//     an ambiguous one, and suggest the closest job for an unknown one;
//   - completion lists the job IDs.
func TestPreflightAndJobIDs(t *testing.T) {
	c, client, ctx := startCluster(t, 1, 1)
	addr := c.GRPCAddr

	badLabel := writeSpec(t, "label.yaml", exampleSpec(t, "label: Attrition", "label: attrition"))
	sample := "file://" + repoPath(t, "jobs/data/attrition-sample.csv")
	typo := "file://" + repoPath(t, "jobs/data/attrition-sampel.csv")
	badPath := writeSpec(t, "path.yaml", exampleSpec(t, sample, typo))
	for _, verb := range []string{"submit", "plan"} {
		_, err := runCLI(t, "job", verb, badLabel, "--address", addr)
		wantBadInput(t, verb+" with a wrong label", err,
			`spec.data.label: column "attrition" not in data.train (did you mean "Attrition"?)`)
		_, err = runCLI(t, "job", verb, badPath, "--address", addr, "-o", "json")
		wantBadInput(t, verb+" with a wrong data path", err,
			`spec.data.train: `+typo+` does not exist (did you mean "`+sample+`"?)`)
	}
	list, err := client.ListJobs(ctx, &cohortv1.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetJobs()) != 0 {
		t.Fatalf("refused submissions left jobs: %v", list.GetJobs())
	}

	// Data the coordinator cannot read: a warning, and the job is accepted. Its workers
	// would need 64 CPUs, so it waits (for capacity) and never runs.
	unreadable := exampleSpec(t, sample, "s3://hr-data/attrition.csv", `cpu: "1"`, `cpu: "64"`)
	plan, err := client.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: unreadable})
	if err != nil {
		t.Fatalf("plan with s3:// data: %v", err)
	}
	wantWarning := "spec.data.train: s3://hr-data/attrition.csv not checked: the coordinator has no S3 endpoint configured; the job's first step checks it"
	if !slices.Contains(plan.GetWarnings(), wantWarning) {
		t.Errorf("plan warnings %q, want %q", plan.GetWarnings(), wantWarning)
	}
	sub, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: unreadable, WaitForCapacity: true})
	if err != nil {
		t.Fatalf("submit with s3:// data: %v", err)
	}
	if !slices.Contains(sub.GetWarnings(), wantWarning) {
		t.Errorf("submit warnings %q, want %q", sub.GetWarnings(), wantWarning)
	}

	// Two more jobs of one name, and one of another; all wait for capacity.
	big := exampleSpec(t, `cpu: "1"`, `cpu: "64"`)
	var ids []string
	for _, spec := range [][]byte{big, big, []byte(strings.Replace(string(big), "name: attrition-mlp,", "name: churn-mlp,", 1))} {
		out, err := runCLI(t, "job", "submit", writeSpec(t, "big.yaml", spec), "--wait-for-capacity", "-o", "json", "--address", addr)
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		ids = append(ids, submittedID(t, []byte(out)))
	}
	first, second, churn := sub.GetJob().GetId(), ids[1], ids[2]
	if !strings.HasPrefix(churn, "churn-mlp-") {
		t.Fatalf("churn job ID %q", churn)
	}

	status := func(args ...string) (string, error) {
		out, err := runCLI(t, append(append([]string{"job", "status"}, args...), "--address", addr)...)
		return out, err
	}
	// A unique name, a unique ID prefix, --latest and a name with --latest.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"churn-mlp"}, churn},
		{[]string{churn[:len("churn-")]}, churn},
		{[]string{second}, second},
		{[]string{"--latest"}, churn},
		{[]string{"attrition-mlp", "--latest"}, second},
	} {
		out, err := status(tc.args...)
		if err != nil || !strings.HasPrefix(out, "job "+tc.want+" ") {
			t.Errorf("job status %v: %v\n%s\nwant job %s", tc.args, err, out, tc.want)
		}
	}
	// Ambiguous: the candidates, oldest first, and what to do.
	_, err = status("attrition-mlp")
	if exitCodeOf(err) != 2 || err == nil || !strings.HasPrefix(err.Error(), `job name "attrition-mlp" matches 3 jobs:`) ||
		!strings.Contains(err.Error(), "--latest for the newest") ||
		strings.Index(err.Error(), first) > strings.Index(err.Error(), ids[0]) || !strings.Contains(err.Error(), second) {
		t.Errorf("job status NAME of three jobs: %v (exit %d)", err, exitCodeOf(err))
	}
	_, err = status("attrition-mlp-")
	if exitCodeOf(err) != 2 || err == nil || !strings.HasPrefix(err.Error(), `job ID prefix "attrition-mlp-" is ambiguous, it matches 3 jobs:`) {
		t.Errorf("job status with an ambiguous prefix: %v", err)
	}
	// A wrong job ID: not found, with the closest ID.
	typoID := second[:len(second)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", second[len(second)-1])+1)%16])
	_, err = status(typoID)
	wantBadInput(t, "job status with a mistyped ID", err,
		`job "`+typoID+`" not found (did you mean "`+second+`"?); `+"`cohort job list` shows the jobs")
	_, err = runCLI(t, "job", "cancel", "--address", addr)
	wantBadInput(t, "job cancel without JOB_ID", err, "cohort job cancel needs a JOB_ID (an ID, a unique ID prefix or a job name) or --latest")

	// cancel by name.
	out, err := runCLI(t, "job", "cancel", "churn-mlp", "--address", addr)
	if err != nil || out != "job "+churn+" cancelled\n" {
		t.Errorf("job cancel churn-mlp: %v %q", err, out)
	}

	// Completion of job IDs, newest first, described by name and state.
	out, err = runCompletion(t, "job", "watch", "--address", addr, "churn")
	if err != nil || !strings.HasPrefix(out, churn+"\tchurn-mlp, cancelled\n") {
		t.Errorf("completion of job watch churn: %v\n%s", err, out)
	}
}

// runCompletion runs the hidden command the shell completion scripts run and returns
// what it prints.
func runCompletion(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(io.Discard)
	root.SetArgs(append([]string{"__complete"}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// TestConnectionErrorHints: with no coordinator at the address, a verb says which
// address it tried and how to get one; with credentials from another cluster's CA, it
// says to point COHORT_TLS_DIR at the cluster's.
func TestConnectionErrorHints(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close() // nothing listens there now

	start := time.Now()
	_, err = runCLI(t, "job", "list", "--address", closed)
	want := "list jobs: no coordinator at " + closed + " (connection refused): start one with `cohort dev`, " +
		"or point COHORT_ADDR (or --address) at a running coordinator"
	if err == nil || err.Error() != want {
		t.Errorf("job list without a coordinator: %v\nwant %s", err, want)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the refused connection took %v", d)
	}

	c, _, _ := startCluster(t, 1, 1)
	dir := t.TempDir()
	ca, err := pki.NewCA("another CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	if _, err := node.IssueFiles(filepath.Join(dir, "ca"), filepath.Join(dir, "client"), node.AdminIdentity, nil, 0); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COHORT_TLS_DIR", filepath.Join(dir, "client"))
	_, err = runCLI(t, "job", "list", "--address", c.GRPCAddr)
	if err == nil || !strings.HasPrefix(err.Error(), "list jobs: TLS with the coordinator at "+c.GRPCAddr+" failed (x509: ") ||
		!strings.Contains(err.Error(), "point COHORT_TLS_DIR (or --tls-dir) at the cluster's client credentials") {
		t.Errorf("job list with another CA's credentials: %v", err)
	}
}

// TestPreflightOnS3: with an S3 endpoint (a real S3 server), the coordinator reads s3://
// data too: a missing object and a label not in the object are refused at submit with
// exit status 2, and nothing is submitted.
func TestPreflightOnS3(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 1, PS: 1, Logger: testLogger(t), S3: &cfg})
	csv, err := os.ReadFile(repoPath(t, "jobs/data/attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Store.Put(ctx, "datasets/attrition.csv", bytes.NewReader(csv), int64(len(csv))); err != nil {
		t.Fatal(err)
	}
	dataURI := c.Store.URI("datasets/attrition.csv")
	missing := c.Store.URI("datasets/attrition-2024.csv")
	sample := "file://" + repoPath(t, "jobs/data/attrition-sample.csv")

	_, err = runCLI(t, "job", "submit", writeSpec(t, "s3label.yaml", exampleSpec(t, sample, dataURI, "label: Attrition", "label: ATTRITION")),
		"--address", c.GRPCAddr)
	wantBadInput(t, "submit with a wrong label on S3", err, `spec.data.label: column "ATTRITION" not in data.train (did you mean "Attrition"?)`)
	_, err = runCLI(t, "job", "plan", writeSpec(t, "s3missing.yaml", exampleSpec(t, sample, missing)), "--address", c.GRPCAddr)
	wantBadInput(t, "plan with a missing S3 object", err, `spec.data.train: `+missing+` does not exist`)
	out, err := runCLI(t, "job", "plan", writeSpec(t, "s3ok.yaml", exampleSpec(t, sample, dataURI)), "--address", c.GRPCAddr, "-o", "json")
	if err != nil || !strings.Contains(out, `"feasible":true`) {
		t.Errorf("plan with good S3 data: %v\n%s", err, out)
	}
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	list, err := cohortv1.NewJobServiceClient(conn).ListJobs(ctx, &cohortv1.ListJobsRequest{})
	if err != nil || len(list.GetJobs()) != 0 {
		t.Errorf("refused submissions left jobs: %v %v", list.GetJobs(), err)
	}
}

// TestSubmitWithoutNodes runs a real `cohort coordinator` with no node agent: a submit
// is refused (exit status 2) saying that no node has registered and how to queue the job
// anyway, plan says it can never fit, and --wait-for-capacity accepts it as pending.
func TestSubmitWithoutNodes(t *testing.T) {
	dir := t.TempDir()
	withTestCA(t, filepath.Join(dir, "c1"))
	grpcAddr, httpAddr := freePort(t), freePort(t)
	root := newRootCmd()
	root.SetArgs([]string{"coordinator", "--node-id", "c1", "--data-dir", filepath.Join(dir, "c1"),
		"--raft-addr", freePort(t), "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--bootstrap", "--log-level", "error"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	healthWaitStatus(t, "http://"+httpAddr+"/healthz", 200, 30*time.Second)

	spec := writeSpec(t, "job.yaml", exampleSpec(t))
	_, err := runCLI(t, "job", "submit", spec, "--address", grpcAddr)
	wantBadInput(t, "submit with no node", err, `invalid argument: job "attrition-mlp" can never run now: no node has registered `+
		"with the cluster (start `cohort worker` and `cohort paramserver` nodes with --join, or use `cohort dev`); "+
		"submit with --wait-for-capacity to queue it until nodes join")
	out, err := runCLI(t, "job", "plan", spec, "--address", grpcAddr, "-o", "json")
	if err != nil || !strings.Contains(out, `"feasible":false`) || !strings.Contains(out, `"never_fits":true`) ||
		!strings.Contains(out, "no node has registered") {
		t.Errorf("plan with no node: %v\n%s", err, out)
	}
	out, err = runCLI(t, "job", "submit", spec, "--wait-for-capacity", "--address", grpcAddr)
	if err != nil || !strings.HasPrefix(out, "submitted job attrition-mlp-") || !strings.HasSuffix(out, " (pending)\n") {
		t.Errorf("submit --wait-for-capacity with no node: %v %q", err, out)
	}
}
