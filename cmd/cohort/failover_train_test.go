package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/storage/s3test"
)

// agentProc is one `cohort worker` or `cohort paramserver` process.
type agentProc struct {
	cmd *exec.Cmd
	log *os.File
}

func startAgentProc(t *testing.T, bin, logPath string, env []string, args ...string) *agentProc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(args, "--tls-dir") && !slices.Contains(args, "--insecure") {
		if i := slices.Index(args, "--node-id"); i >= 0 && i+1 < len(args) {
			args = append(args, "--tls-dir", agentTLSDir(t, args[i+1])) // an agent certificate from the test CA
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	p := &agentProc{cmd: cmd, log: f}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
		_ = p.log.Close()
	})
	return p
}

// TestLeaderKilledWhileJobTrains: three real coordinator processes, a real
// parameter-server process and a real worker process with all storage on S3
// (versitygw on 127.0.0.1, through the agents' --s3-* flags). The leader is SIGKILLed
// while the job trains. Training traffic does not pass through the coordinator, so
// the job must keep its placement (same generation, same allocations, the worker
// process never restarted), reach the end, and commit its checkpoint to S3 through
// the new leader.
func TestLeaderKilledWhileJobTrains(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	bin := buildBinary(t)
	srv := s3test.Start(t)
	s3cfg := srv.Config()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	store, err := storage.NewS3(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	csv, err := os.ReadFile(repoPath(t, "jobs/data/attrition-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "datasets/attrition.csv", bytes.NewReader(csv), int64(len(csv))); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	procs, addrs := startCoordinatorProcs(t, bin, dir)

	env := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey, "AWS_REGION=" + s3test.Region}
	s3args := []string{"--s3-endpoint", srv.Endpoint, "--s3-bucket", srv.Bucket, "--join", addrs,
		"--cpu-millis", "2000", "--memory-bytes", fmt.Sprint(4 << 30), "--log-level", "warn"}
	startAgentProc(t, bin, filepath.Join(dir, "ps.log"), env,
		append([]string{"paramserver", "--node-id", "ps-1", "--data-addr", freePort(t)}, s3args...)...)
	workerProc := startAgentProc(t, bin, filepath.Join(dir, "worker.log"), env,
		append([]string{"worker", "--node-id", "worker-1"}, s3args...)...)

	spec := fmt.Sprintf(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: failover-train}
spec:
  task: binary_classification
  model: {mlp: {hidden: [32, 16]}}
  data:
    format: csv
    train: %s
    validation: {fraction: 0.2, seed: 42, stratify: true}
    label: Attrition
    positive: "Yes"
  training: {epochs: 30, batchSize: 16, optimizer: {name: adam, learningRate: 0.001}, seed: 7}
  resources:
    workers: {count: 1, cpu: "1", memory: 1Gi}
    parameterServers: {shards: 1}
  checkpoint: {everySteps: 500, keep: 2}
  export: {formats: [safetensors]}
`, store.URI("datasets/attrition.csv"))
	conn, err := dial(addrs, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	jobs := cohortv1.NewJobServiceClient(conn)
	// The agent processes start (and make their TLS connections) while this runs: a job
	// submitted before they registered would never fit.
	waitFor(t, "the node agents to register", time.Minute, func() error {
		r, err := jobs.ListNodes(ctx, &cohortv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		if len(r.GetNodes()) < 2 {
			return fmt.Errorf("%d nodes registered", len(r.GetNodes()))
		}
		return nil
	})
	resp, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(spec), IdempotencyKey: "failover-train"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJob().GetId()

	// Wait until the job trains, then remember its placement.
	var before *cohortv1.Job
	waitFor(t, "the job to report training progress", 2*time.Minute, func() error {
		r, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
		if err != nil {
			return err
		}
		j := r.GetJob()
		if j.GetState() != cohortv1.JobState_JOB_STATE_RUNNING || j.GetProgress().GetStep() == 0 {
			return fmt.Errorf("state %s, step %d: %s", stateName(j.GetState()), j.GetProgress().GetStep(), j.GetStatusMessage())
		}
		before = j
		return nil
	})
	if before.GetProgress().GetStep() >= before.GetProgress().GetTotalSteps() {
		t.Fatalf("job finished before the leader could be killed (step %d of %d): make it longer",
			before.GetProgress().GetStep(), before.GetProgress().GetTotalSteps())
	}

	ps, err := peers(bin, addrs)
	if err != nil {
		t.Fatal(err)
	}
	li := slices.IndexFunc(ps, func(p peer) bool { return p.Leader })
	if li < 0 {
		t.Fatalf("no leader in %+v", ps)
	}
	for _, p := range procs {
		if p.id == ps[li].ID {
			p.kill()
		}
	}
	killedAt := before.GetProgress().GetStep()

	job, err := watchUntilDone(ctx, jobs, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s after the leader was killed: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	if job.GetGeneration() != before.GetGeneration() {
		t.Errorf("job generation %d -> %d: the leader failover restarted the job", before.GetGeneration(), job.GetGeneration())
	}
	if job.GetProgress().GetStep() != job.GetProgress().GetTotalSteps() || job.GetProgress().GetStep() <= killedAt {
		t.Errorf("final step %d of %d (leader killed at step %d)", job.GetProgress().GetStep(), job.GetProgress().GetTotalSteps(), killedAt)
	}
	if workerProc.cmd.ProcessState != nil {
		t.Errorf("worker process exited: %v", workerProc.cmd.ProcessState)
	}
	if !strings.HasPrefix(job.GetCheckpoint(), "s3://"+srv.Bucket+"/") {
		t.Fatalf("checkpoint %q: want an s3:// URI in bucket %s", job.GetCheckpoint(), srv.Bucket)
	}
	key := strings.TrimPrefix(job.GetCheckpoint(), "s3://"+srv.Bucket+"/")
	man, err := storage.ReadManifest(ctx, store, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.VerifyManifestObjects(ctx, store, man); err != nil {
		t.Fatalf("checkpoint committed after the failover does not verify: %v", err)
	}
	t.Logf("leader killed at step %d of %d; job finished at generation %d with checkpoint %s",
		killedAt, job.GetProgress().GetTotalSteps(), job.GetGeneration(), job.GetCheckpoint())
}
