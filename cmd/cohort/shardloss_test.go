package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// TestShardNodeKilledJobResumesFromCheckpoint: real processes (a coordinator with a
// 6 s node heartbeat TTL (agents heartbeat every 2 s), two parameter-server nodes, one worker) on local storage.
// The parameter-server process hosting the job's shard is SIGKILLed mid-training. The
// coordinator marks the node down, requeues the job at a new generation with its
// checkpoint pointer, places the shard on the other node, and the job resumes from
// that checkpoint and finishes: the bound on lost work is the steps since the last
// checkpoint.
func TestShardNodeKilledJobResumesFromCheckpoint(t *testing.T) {
	t.Parallel() // independent: its own processes or cluster, free ports, temporary directories
	bin := buildBinary(t)
	dir := t.TempDir()
	cl := startShardCluster(t, bin, dir, "warn", "ps-a", "ps-b")
	coord, ps, storeDir := cl.coord, cl.ps, cl.storeDir

	spec := fmt.Sprintf(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: shard-loss}
spec:
  task: binary_classification
  model: {mlp: {hidden: [32, 16]}}
  data:
    format: csv
    train: file://%s
    validation: {fraction: 0.2, seed: 42, stratify: true}
    label: Attrition
    positive: "Yes"
  training: {epochs: 40, batchSize: 16, optimizer: {name: adam, learningRate: 0.001}, seed: 7}
  resources:
    workers: {count: 1, cpu: "1", memory: 1Gi}
    parameterServers: {shards: 1}
  checkpoint: {everySteps: 300, keep: 2}
  export: {formats: [safetensors]}
`, repoPath(t, "jobs/data/attrition-sample.csv"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := dial(coord.grpc, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	jobs := cohortv1.NewJobServiceClient(c)
	var id string
	waitFor(t, "the job to be accepted", time.Minute, func() error {
		resp, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(spec), IdempotencyKey: "shard-loss"})
		if err != nil {
			return err
		}
		id = resp.GetJob().GetId()
		return nil
	})

	// Wait for a committed checkpoint, then kill the shard's node.
	var victim string
	var before *cohortv1.Job
	waitFor(t, "a committed checkpoint", 2*time.Minute, func() error {
		r, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
		if err != nil {
			return err
		}
		if r.GetJob().GetCheckpoint() == "" || r.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING {
			return fmt.Errorf("state %s checkpoint %q", stateName(r.GetJob().GetState()), r.GetJob().GetCheckpoint())
		}
		for _, a := range r.GetAllocations() {
			if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
				victim = a.GetNodeId()
			}
		}
		before = r.GetJob()
		return nil
	})
	p, ok := ps[victim]
	if !ok {
		t.Fatalf("shard placed on %q, not a parameter-server process of the test", victim)
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	killedAt := before.GetProgress().GetStep()

	job, err := watchUntilDone(ctx, jobs, id, nil)
	if os.Getenv("COHORT_DUMP") != "" {
		for _, f := range []string{"worker.log", "ps-a.log", "ps-b.log", "c1.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			t.Logf("%s:\n%s", f, b)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s after its shard node was killed: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	if job.GetGeneration() <= before.GetGeneration() {
		t.Errorf("generation %d -> %d: the job was not placed again", before.GetGeneration(), job.GetGeneration())
	}
	if job.GetProgress().GetStep() != job.GetProgress().GetTotalSteps() {
		t.Errorf("final step %d of %d", job.GetProgress().GetStep(), job.GetProgress().GetTotalSteps())
	}
	store, err := storage.NewLocal(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimPrefix(strings.TrimPrefix(job.GetCheckpoint(), store.URI("")), "/")
	man, err := storage.ReadManifest(ctx, store, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.VerifyManifestObjects(ctx, store, man); err != nil {
		t.Fatalf("final checkpoint does not verify: %v", err)
	}
	t.Logf("shard node %s killed near step %d (checkpoint %s); job finished at generation %d",
		victim, killedAt, before.GetCheckpoint(), job.GetGeneration())
}

// shardCluster is the cluster of the shard-loss tests: one coordinator (c1, a 6 s node
// heartbeat TTL), a parameter-server node per id in psIDs and one worker node (w-1,
// jobs/ as its data root), each its own process, with storage in storeDir and logs in
// dir (ID.log, worker.log), at logLevel.
type shardCluster struct {
	coord    *coordProc
	ps       map[string]*agentProc
	storeDir string
}

func startShardCluster(t *testing.T, bin, dir, logLevel string, psIDs ...string) *shardCluster {
	t.Helper()
	c := &shardCluster{storeDir: filepath.Join(dir, "storage"), ps: map[string]*agentProc{},
		coord: &coordProc{id: "c1", dir: filepath.Join(dir, "c1"), raft: freePort(t), grpc: freePort(t), http: freePort(t)}}
	t.Cleanup(c.coord.kill)
	c.coord.start(t, bin, "--bootstrap", "--node-heartbeat-ttl", "6s")
	common := []string{"--join", c.coord.grpc, "--storage-dir", c.storeDir, "--cpu-millis", "2000",
		"--memory-bytes", fmt.Sprint(4 << 30), "--log-level", logLevel}
	for _, id := range psIDs {
		c.ps[id] = startAgentProc(t, bin, filepath.Join(dir, id+".log"), nil,
			append([]string{"paramserver", "--node-id", id, "--data-addr", freePort(t)}, common...)...)
	}
	startAgentProc(t, bin, filepath.Join(dir, "worker.log"), nil, append([]string{"worker", "--node-id", "w-1", "--data-root", repoPath(t, "jobs")}, common...)...)
	return c
}
