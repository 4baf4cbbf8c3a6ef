package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// replicatedSpec is a one-worker, one-shard attrition MLP with a backup for its shard
// (parameterServers.replicas: 2), checkpointing only at the end.
func replicatedSpec(t *testing.T, name, mode string) string {
	return fmt.Sprintf(`apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: %s}
spec:
  task: binary_classification
  model: {mlp: {hidden: [32, 16]}}
  data:
    format: csv
    train: file://%s
    validation: {fraction: 0.2, seed: 42, stratify: true}
    label: Attrition
    positive: "Yes"
  training: {epochs: 90, batchSize: 16, optimizer: {name: adam, learningRate: 0.001}, seed: 7, consistency: {mode: %s}}
  resources:
    workers: {count: 1, cpu: "1", memory: 1Gi}
    parameterServers: {shards: 1, replicas: 2}
  checkpoint: {everySteps: 0, keep: 2}
  export: {formats: [safetensors]}
`, name, repoPath(t, "jobs/data/attrition-sample.csv"), mode)
}

// TestReplicatedPrimaryKilledJobContinues: real processes (a coordinator with a 6 s
// node heartbeat TTL, four parameter-server nodes, one worker) on local storage. A
// sync job with parameterServers.replicas: 2 trains undisturbed; the same job is
// trained again and the process hosting its shard's primary is SIGKILLed mid-training.
// The worker, its calls to the primary failing, reports the shard unreachable; the
// leader, unable to connect to the node either, marks it down and, in that Raft
// entry, promotes the backup (without the report, the heartbeat TTL would);
// the worker follows the shard to the backup's node; a new backup is placed on a
// third node and receives the shard's state while training goes on. That backup's
// process is SIGKILLed in turn: training goes on at the same generation and another
// backup is placed on the fourth node. The job succeeds with no restart
// spent and no checkpoint restore (no parameter server logs a shard restored from
// storage, though the job had epoch checkpoints), its progress never went backwards,
// and its final parameters and Adam moments are bit-identical to the undisturbed
// run's.
func TestReplicatedPrimaryKilledJobContinues(t *testing.T) {
	t.Parallel() // independent: its own processes, free ports, temporary directories
	bin := buildBinary(t)
	dir := t.TempDir()
	cl := startShardCluster(t, bin, dir, "info", "ps-a", "ps-b", "ps-c", "ps-d")
	coord, ps, storeDir := cl.coord, cl.ps, cl.storeDir
	dump := func() {
		if os.Getenv("COHORT_DUMP") == "" && !t.Failed() {
			return
		}
		for _, f := range []string{"worker.log", "ps-a.log", "ps-b.log", "ps-c.log", "ps-d.log", "c1.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("%s:\n%s", f, b)
		}
	}
	defer dump()

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, err := dial(coord.grpc, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	jobs := cohortv1.NewJobServiceClient(c)
	submit := func(name string) string {
		var id string
		waitFor(t, "job "+name+" to be accepted", time.Minute, func() error {
			// 200 epochs: after the second kill the job must outlast the node TTL (6 s),
			// after which another backup is placed; 90 ended first on an idle machine.
			spec := strings.Replace(replicatedSpec(t, name, "sync"), "epochs: 90", "epochs: 200", 1)
			resp, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(spec), IdempotencyKey: name})
			if err != nil {
				return err
			}
			id = resp.GetJob().GetId()
			return nil
		})
		return id
	}

	// The undisturbed run.
	straightID := submit("straight")
	straight, err := watchUntilDone(ctx, jobs, straightID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if straight.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("undisturbed job %s: %s", stateName(straight.GetState()), straight.GetStatusMessage())
	}

	// The same job, its primary killed once it is a fifth of the way.
	id := submit("killed")
	var (
		primary, backup   string
		before            *cohortv1.Job
		last              int64 // progress seen so far: it never goes backwards
		killedAt          time.Time
		promoted, resumed time.Duration // from the kill to the promotion, to progress past the kill's step
	)
	get := func() (*cohortv1.GetJobResponse, error) {
		r, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
		if err != nil {
			return nil, err
		}
		if step := r.GetJob().GetProgress().GetStep(); step < last {
			t.Fatalf("progress went backwards: step %d after %d", step, last)
		} else {
			last = step
		}
		if !killedAt.IsZero() {
			if promoted == 0 && r.GetJob().GetGeneration() > before.GetGeneration() {
				promoted = time.Since(killedAt)
			}
			if promoted > 0 && resumed == 0 && r.GetJob().GetProgress().GetStep() > before.GetProgress().GetStep() {
				resumed = time.Since(killedAt)
			}
		}
		return r, nil
	}
	waitFor(t, "the job a fifth of the way", 3*time.Minute, func() error {
		r, err := get()
		if err != nil {
			return err
		}
		p := r.GetJob().GetProgress()
		if r.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING || p.GetTotalSteps() == 0 || p.GetStep() < p.GetTotalSteps()/5 {
			return fmt.Errorf("state %s step %d of %d", stateName(r.GetJob().GetState()), p.GetStep(), p.GetTotalSteps())
		}
		for _, a := range r.GetAllocations() {
			if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD && a.GetReplica() == 0 {
				primary = a.GetNodeId()
			}
			if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD && a.GetReplica() == 1 {
				backup = a.GetNodeId()
			}
		}
		before = r.GetJob()
		return nil
	})
	if primary == "" || backup == "" || primary == backup {
		t.Fatalf("shard placed with its primary on %q and its backup on %q", primary, backup)
	}
	p, ok := ps[primary]
	if !ok {
		t.Fatalf("primary on %q, not a parameter-server process of the test", primary)
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	killedAt = time.Now()

	// The backup is promoted, and a new backup is placed on another node and brought
	// up to date while training goes on.
	var newBackup *cohortv1.Allocation
	backupOf := func(r *cohortv1.GetJobResponse, not string) *cohortv1.Allocation {
		for _, a := range r.GetAllocations() {
			if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD && a.GetReplica() == 1 && a.GetId() != not &&
				a.GetState() == cohortv1.TaskState_TASK_STATE_RUNNING {
				return a
			}
		}
		return nil
	}
	installed := func(node string) error {
		b, _ := os.ReadFile(filepath.Join(dir, node+".log"))
		if !strings.Contains(string(b), "backup installed from its primary") || !strings.Contains(string(b), id) {
			return fmt.Errorf("%s has not installed the shard's state", node)
		}
		return nil
	}
	waitFor(t, "the backup promoted and a new backup placed", 2*time.Minute, func() error {
		r, err := get()
		if err != nil {
			return err
		}
		if newBackup = backupOf(r, ""); newBackup == nil || newBackup.GetGeneration() != before.GetGeneration()+1 || r.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING {
			return fmt.Errorf("no new backup running yet (generation %d, state %s)", r.GetJob().GetGeneration(), stateName(r.GetJob().GetState()))
		}
		return installed(newBackup.GetNodeId())
	})
	if newBackup.GetNodeId() == primary || newBackup.GetNodeId() == backup {
		t.Fatalf("new backup placed on %s (dead primary %s, promoted %s)", newBackup.GetNodeId(), primary, backup)
	}

	// Kill the new backup: training goes on without a generation change, and another
	// backup is placed on the last parameter-server node.
	_ = ps[newBackup.GetNodeId()].cmd.Process.Signal(syscall.SIGKILL)
	_ = ps[newBackup.GetNodeId()].cmd.Wait()
	var third *cohortv1.Allocation
	waitFor(t, "another backup after the backup was killed", 2*time.Minute, func() error {
		r, err := get()
		if err != nil {
			return err
		}
		if g := r.GetJob().GetGeneration(); g != before.GetGeneration()+1 {
			t.Fatalf("losing the backup moved the job to generation %d, state %s", g, stateName(r.GetJob().GetState()))
		}
		if st := r.GetJob().GetState(); st != cohortv1.JobState_JOB_STATE_RUNNING {
			t.Fatalf("the job is %s before another backup was placed: give it more epochs", stateName(st))
		}
		if third = backupOf(r, newBackup.GetId()); third == nil {
			return fmt.Errorf("no other backup running yet")
		}
		return installed(third.GetNodeId())
	})

	// Watch to the end: progress never goes backwards.
	job := watchForwardToEnd(ctx, t, jobs, id, last)
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s after its primary was killed: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	if job.GetRestarts() != 0 || job.GetGeneration() != before.GetGeneration()+1 {
		t.Errorf("restarts %d, generation %d -> %d: want no restart and one promotion", job.GetRestarts(), before.GetGeneration(), job.GetGeneration())
	}
	noShardRestored(t, dir, ps)
	if b, _ := os.ReadFile(filepath.Join(dir, backup+".log")); !strings.Contains(string(b), "backup shard promoted to primary") {
		t.Errorf("%s does not log the promotion of its backup shard", backup)
	}
	requireSameFinalState(t, storeDir, straight, job)
	t.Logf("primary on %s killed at step %d of %d; backup on %s promoted %v after the kill (worker report confirmed by the leader; heartbeat TTL 6 s), progress reported past the step of the kill %v after it (0: not seen before the next wait); new backup on %s, killed, another on %s",
		primary, before.GetProgress().GetStep(), before.GetProgress().GetTotalSteps(), backup, promoted.Round(time.Millisecond), resumed.Round(time.Millisecond),
		newBackup.GetNodeId(), third.GetNodeId())
}

// TestReplicatedPrimaryKilledAsyncAndBounded: as TestReplicatedPrimaryKilledJobContinues
// for the async and bounded (staleness 2) modes, with real processes: the primary is
// SIGKILLed a fifth of the way, the backup is promoted, and the job finishes with no
// restart and no checkpoint restore, its progress never going backwards. (The final
// values of these modes depend on timing, so they are not compared with another run;
// paramserver's TestReplicatedShardSurvivesPrimaryLoss checks that every push is
// applied exactly once across the promotion.)
func TestReplicatedPrimaryKilledAsyncAndBounded(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	for _, mode := range []string{"async", "bounded, staleness: 2"} {
		t.Run(strings.TrimSuffix(strings.Fields(mode)[0], ","), func(t *testing.T) {
			dir := t.TempDir()
			cl := startShardCluster(t, bin, dir, "info", "ps-a", "ps-b")
			coord, ps := cl.coord, cl.ps
			defer func() {
				if t.Failed() {
					for _, f := range []string{"worker.log", "ps-a.log", "ps-b.log", "c1.log"} {
						b, _ := os.ReadFile(filepath.Join(dir, f))
						t.Logf("%s:\n%s", f, b[max(0, len(b)-8000):])
					}
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			c, err := dial(coord.grpc, testCreds(t))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			jobs := cohortv1.NewJobServiceClient(c)
			spec := strings.Replace(replicatedSpec(t, "killed", mode), "epochs: 90", "epochs: 40", 1)
			var id string
			waitFor(t, "the job to be accepted", time.Minute, func() error {
				resp, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(spec), IdempotencyKey: "killed"})
				if err != nil {
					return err
				}
				id = resp.GetJob().GetId()
				return nil
			})
			var (
				primary string
				before  *cohortv1.Job
			)
			waitFor(t, "the job a fifth of the way", 3*time.Minute, func() error {
				r, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
				if err != nil {
					return err
				}
				p := r.GetJob().GetProgress()
				if r.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING || p.GetTotalSteps() == 0 || p.GetStep() < p.GetTotalSteps()/5 {
					return fmt.Errorf("state %s step %d of %d", stateName(r.GetJob().GetState()), p.GetStep(), p.GetTotalSteps())
				}
				for _, a := range r.GetAllocations() {
					if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD && a.GetReplica() == 0 {
						primary = a.GetNodeId()
					}
				}
				before = r.GetJob()
				return nil
			})
			_ = ps[primary].cmd.Process.Signal(syscall.SIGKILL)
			_ = ps[primary].cmd.Wait()
			job := watchForwardToEnd(ctx, t, jobs, id, before.GetProgress().GetStep())
			if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job %s after its primary was killed: %s", stateName(job.GetState()), job.GetStatusMessage())
			}
			if job.GetRestarts() != 0 || job.GetGeneration() != before.GetGeneration()+1 || job.GetProgress().GetStep() != job.GetProgress().GetTotalSteps() {
				t.Errorf("restarts %d, generation %d -> %d, step %d of %d: want no restart, one promotion, every step",
					job.GetRestarts(), before.GetGeneration(), job.GetGeneration(), job.GetProgress().GetStep(), job.GetProgress().GetTotalSteps())
			}
			noShardRestored(t, dir, ps)
		})
	}
}

// TestReplicatedTwoShardsPrimaryKilled: two workers and two replicated shards on four
// parameter-server processes; the process holding shard 0's primary (and possibly
// shard 1's backup) is SIGKILLed mid-training. The job finishes with one promotion,
// no restart and no restore, and its final parameters and Adam moments are
// bit-identical to an undisturbed run's: the shards' versions may differ at the kill
// (one shard past the step in progress), which the workers settle as for a membership
// change.
func TestReplicatedTwoShardsPrimaryKilled(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	cl := startShardCluster(t, bin, dir, "info", "ps-a", "ps-b", "ps-c", "ps-d")
	coord, ps, storeDir := cl.coord, cl.ps, cl.storeDir
	defer func() {
		if t.Failed() {
			for _, f := range []string{"worker.log", "ps-a.log", "ps-b.log", "ps-c.log", "ps-d.log", "c1.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("%s:\n%s", f, b[max(0, len(b)-6000):])
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, err := dial(coord.grpc, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	jobs := cohortv1.NewJobServiceClient(c)
	spec := func(name string) []byte {
		s := strings.Replace(replicatedSpec(t, name, "sync"), "workers: {count: 1,", "workers: {count: 2,", 1)
		s = strings.Replace(s, "epochs: 90", "epochs: 40", 1)
		return []byte(strings.Replace(s, "parameterServers: {shards: 1, replicas: 2}", "parameterServers: {shards: 2, replicas: 2}", 1))
	}
	run := func(name string, kill bool) *cohortv1.Job {
		var id string
		waitFor(t, "job "+name+" to be accepted", time.Minute, func() error {
			resp, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: spec(name), IdempotencyKey: name})
			if err != nil {
				return err
			}
			id = resp.GetJob().GetId()
			return nil
		})
		var before *cohortv1.Job
		if kill {
			var victim string
			waitFor(t, "the job a fifth of the way", 3*time.Minute, func() error {
				r, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
				if err != nil {
					return err
				}
				p := r.GetJob().GetProgress()
				if r.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING || p.GetTotalSteps() == 0 || p.GetStep() < p.GetTotalSteps()/5 {
					return fmt.Errorf("state %s step %d of %d", stateName(r.GetJob().GetState()), p.GetStep(), p.GetTotalSteps())
				}
				for _, a := range r.GetAllocations() {
					if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD && a.GetReplica() == 0 && a.GetIndex() == 0 {
						victim = a.GetNodeId()
					}
				}
				before = r.GetJob()
				return nil
			})
			_ = ps[victim].cmd.Process.Signal(syscall.SIGKILL)
			_ = ps[victim].cmd.Wait()
		}
		job, err := watchUntilDone(ctx, jobs, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
			t.Fatalf("job %s: %s %s", name, stateName(job.GetState()), job.GetStatusMessage())
		}
		if kill && (job.GetRestarts() != 0 || job.GetGeneration() != before.GetGeneration()+1) {
			t.Errorf("restarts %d, generation %d -> %d: want no restart and one promotion", job.GetRestarts(), before.GetGeneration(), job.GetGeneration())
		}
		return job
	}
	straight := run("straight", false)
	killed := run("killed", true)
	noShardRestored(t, dir, ps)
	requireSameFinalState(t, storeDir, straight, killed)
}

// watchForwardToEnd watches job id until it ends (watching again when a stream breaks)
// and fails t if its progress ever goes below last or below a step seen before.
func watchForwardToEnd(ctx context.Context, t *testing.T, jobs cohortv1.JobServiceClient, id string, last int64) *cohortv1.Job {
	t.Helper()
	for {
		stream, err := jobs.WatchJob(ctx, &cohortv1.WatchJobRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil {
					t.Fatal(ctx.Err())
				}
				break
			}
			j := resp.GetJob()
			step := j.GetProgress().GetStep()
			if step < last {
				t.Fatalf("progress went backwards: step %d after %d", step, last)
			}
			last = step
			if terminal(j.GetState()) {
				return j
			}
		}
	}
}

// TestReplicatedBothCopiesKilledFallsBackToCheckpoint: real processes (a coordinator
// with a 6 s node heartbeat TTL, four parameter-server nodes, one worker). A sync job
// with parameterServers.replicas: 2 commits an epoch checkpoint; then the processes of
// its shard's primary and backup are both SIGKILLed. With no copy left there is nothing
// to promote: the job falls back to the checkpoint requeue, as without replicas (placed
// again at a new generation, the shard restored from the checkpoint by the new primary
// on a surviving node, its new backup given the state by it), and finishes every step.
func TestReplicatedBothCopiesKilledFallsBackToCheckpoint(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	ids := []string{"ps-a", "ps-b", "ps-c", "ps-d"}
	cl := startShardCluster(t, bin, dir, "info", ids...)
	coord, ps := cl.coord, cl.ps
	defer func() {
		if t.Failed() {
			for _, f := range append(slices.Clone(ids), "worker", "c1") {
				b, _ := os.ReadFile(filepath.Join(dir, f+".log"))
				t.Logf("%s.log:\n%s", f, b[max(0, len(b)-8000):])
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := dial(coord.grpc, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	jobs := cohortv1.NewJobServiceClient(c)
	spec := strings.Replace(replicatedSpec(t, "both", "sync"), "epochs: 90", "epochs: 40", 1)
	var id string
	waitFor(t, "the job to be accepted", time.Minute, func() error {
		resp, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(spec), IdempotencyKey: "both"})
		if err != nil {
			return err
		}
		id = resp.GetJob().GetId()
		return nil
	})
	var copies []string // the nodes of the shard's primary and backup
	var before *cohortv1.Job
	waitFor(t, "a committed checkpoint, a fifth of the way", 3*time.Minute, func() error {
		r, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
		if err != nil {
			return err
		}
		p := r.GetJob().GetProgress()
		if r.GetJob().GetState() != cohortv1.JobState_JOB_STATE_RUNNING || r.GetJob().GetCheckpoint() == "" || p.GetTotalSteps() == 0 || p.GetStep() < p.GetTotalSteps()/5 {
			return fmt.Errorf("state %s, checkpoint %q, step %d of %d", stateName(r.GetJob().GetState()), r.GetJob().GetCheckpoint(), p.GetStep(), p.GetTotalSteps())
		}
		copies = copies[:0]
		for _, a := range r.GetAllocations() {
			if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD && a.GetState() == cohortv1.TaskState_TASK_STATE_RUNNING {
				copies = append(copies, a.GetNodeId())
			}
		}
		if len(copies) != 2 || copies[0] == copies[1] {
			return fmt.Errorf("shard copies on %v, want a primary and a backup on two nodes", copies)
		}
		before = r.GetJob()
		return nil
	})
	for _, n := range copies {
		_ = ps[n].cmd.Process.Signal(syscall.SIGKILL)
	}
	for _, n := range copies {
		_ = ps[n].cmd.Wait()
	}
	job, err := watchUntilDone(ctx, jobs, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s after both copies of its shard were killed: %s", stateName(job.GetState()), job.GetStatusMessage())
	}
	if job.GetGeneration() <= before.GetGeneration() || job.GetProgress().GetStep() != job.GetProgress().GetTotalSteps() {
		t.Errorf("generation %d -> %d, step %d of %d: want the job placed again and every step", before.GetGeneration(), job.GetGeneration(),
			job.GetProgress().GetStep(), job.GetProgress().GetTotalSteps())
	}
	restored := 0
	for _, n := range ids {
		if slices.Contains(copies, n) {
			continue
		}
		if b, _ := os.ReadFile(filepath.Join(dir, n+".log")); strings.Contains(string(b), "restored from checkpoint") {
			restored++
		}
	}
	// The new primary restores the shard from the checkpoint; its new backup receives
	// the state from it.
	if restored != 1 {
		t.Errorf("%d surviving parameter-server nodes restored the shard from the checkpoint, want 1 (the new primary)", restored)
	}
}

// noShardRestored fails t if a parameter-server process of ps (its log in dir) restored
// a shard from a checkpoint.
func noShardRestored(t *testing.T, dir string, ps map[string]*agentProc) {
	t.Helper()
	for id := range ps {
		if b, _ := os.ReadFile(filepath.Join(dir, id+".log")); strings.Contains(string(b), "restored from checkpoint") {
			t.Errorf("%s restored a shard from a checkpoint", id)
		}
	}
}

// requireSameFinalState fails t unless the final checkpoints of the undisturbed and the
// killed runs (in the local storage storeDir) hold bit-identical parameters and Adam
// moments at the same step.
func requireSameFinalState(t *testing.T, storeDir string, straight, killed *cohortv1.Job) {
	t.Helper()
	store, err := storage.NewLocal(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	want, got := fullState(t, store, straight.GetCheckpoint()), fullState(t, store, killed.GetCheckpoint())
	if got.Step != want.Step || got.OptimizerStep != want.OptimizerStep {
		t.Fatalf("killed run ends at step %d (optimizer %d), undisturbed at %d (%d)", got.Step, got.OptimizerStep, want.Step, want.OptimizerStep)
	}
	vecs := [][2][]float32{{want.Params, got.Params}, {want.State[0], got.State[0]}, {want.State[1], got.State[1]}}
	for v, p := range vecs {
		for i := range p[0] {
			if math.Float32bits(p[0][i]) != math.Float32bits(p[1][i]) {
				t.Fatalf("vector %d (0 parameters, 1-2 Adam moments) differs at %d: undisturbed %v, primary killed %v", v, i, p[0][i], p[1][i])
			}
		}
	}
}
