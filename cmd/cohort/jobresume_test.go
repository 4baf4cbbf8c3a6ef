package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/node/nodetest"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// reportLog keeps the task reports a dev cluster's workers send.
type reportLog struct {
	mu      sync.Mutex
	reports []*cohortv1.TaskReport
}

func (l *reportLog) add(r *cohortv1.TaskReport) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reports = append(l.reports, r)
}

// ofGeneration returns the reports sent under generation gen, in order.
func (l *reportLog) ofGeneration(gen uint64) []*cohortv1.TaskReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*cohortv1.TaskReport
	for _, r := range l.reports {
		if r.GetGeneration() == gen {
			out = append(out, r)
		}
	}
	return out
}

// wantExit2 asserts a CLI error is bad input (exit status 2) mentioning every word.
func wantExit2(t *testing.T, what string, err error, words ...string) {
	t.Helper()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("%s: err %v, want exit status 2", what, err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: message %q does not mention %q", what, err, w)
		}
	}
}

// TestJobResumeContinuesFromCheckpoint cancels a job of a dev cluster once it has
// committed a checkpoint, resumes it with `cohort job resume`, and checks that the
// resumed run (a new generation) continues at the saved step: its first checkpoint is
// the one after the saved step (periodic or at an epoch end), not the first of the job,
// and it runs to the end. The
// verb refuses a running job, an unknown job, a job cancelled before its first
// checkpoint and a job that succeeded, each with exit status 2 and a message saying why.
func TestJobResumeContinuesFromCheckpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	reports := &reportLog{}
	c := nodetest.Dev(t, ctx, nodetest.Options{CADir: testCADir(t), Workers: 2, PS: 2, Logger: testLogger(t), Observer: reports.add})
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := cohortv1.NewJobServiceClient(conn)
	cli := func(args ...string) (string, error) {
		return runCLI(t, append(args, "--address", c.GRPCAddr)...)
	}

	const everySteps, stepsPerEpoch, totalSteps = 20, 38, 4 * 38
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: resumeTestSpec(t), IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJob().GetId()
	_, err = cli("job", "resume", id)
	wantExit2(t, "resume of a live job", err, id, "only a cancelled or failed job")

	cancelled := cancelAfterFirstCheckpoint(ctx, t, client, id)
	saved, err := storage.ReadManifest(ctx, c.Store, keyOf(t, c, cancelled.GetCheckpoint()))
	if err != nil {
		t.Fatal(err)
	}
	if saved.Step <= 0 || saved.Step >= totalSteps {
		t.Fatalf("cancelled at checkpoint step %d, want one inside the job", saved.Step)
	}
	t.Logf("cancelled at the checkpoint of step %d (generation %d)", saved.Step, cancelled.GetGeneration())

	// Resumed and followed to the end, as a user runs it: the last stdout line is the
	// result object.
	out, err := cli("job", "resume", id, "--reason", "test", "--wait", "-o", "json")
	if err != nil {
		t.Fatalf("job resume --wait: %v\n%s", err, out)
	}
	var res jobResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("job resume --wait -o json: %v\n%s", err, out)
	}
	got, err := client.GetJob(ctx, &cohortv1.GetJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	final := got.GetJob()
	if res.JobID != id || res.Status != "succeeded" || final.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED ||
		final.GetProgress().GetStep() != totalSteps {
		t.Fatalf("resumed job: result %+v, record %s at step %d: %s", res, stateName(final.GetState()),
			final.GetProgress().GetStep(), final.GetStatusMessage())
	}
	if final.GetGeneration() != cancelled.GetGeneration()+1 || final.GetRestarts() != 0 {
		t.Fatalf("resumed job at generation %d (restarts %d), cancelled at %d", final.GetGeneration(), final.GetRestarts(), cancelled.GetGeneration())
	}
	resumed := struct{ Generation uint64 }{final.GetGeneration()}
	var firstStep int64
	for _, r := range reports.ofGeneration(resumed.Generation) {
		if r.GetCheckpoint() == "" {
			continue
		}
		// The step is in the manifest's key; retention may have deleted it since.
		dir := path.Base(path.Dir(r.GetCheckpoint()))
		if firstStep, err = strconv.ParseInt(dir, 10, 64); err != nil {
			t.Fatalf("checkpoint %s: no step in its key: %v", r.GetCheckpoint(), err)
		}
		break
	}
	// The next periodic checkpoint, or the scored one of the next epoch end (38 steps an
	// epoch) when that comes first.
	next := min((saved.Step/everySteps+1)*everySteps, (saved.Step/stepsPerEpoch+1)*stepsPerEpoch)
	if firstStep != next {
		t.Fatalf("the resumed run's first checkpoint is at step %d, want %d (the one after the saved step %d)",
			firstStep, next, saved.Step)
	}

	// The chief's log shows both runs, the second one starting at the saved step.
	logs, err := cli("job", "logs", id, "--task", "worker-0")
	if err != nil {
		t.Fatalf("job logs: %v", err)
	}
	_, second, ok := strings.Cut(logs, fmt.Sprintf("--- generation %d ---", resumed.Generation))
	for _, want := range []string{"INFO resuming from checkpoint ", "checkpoint=" + cancelled.GetCheckpoint() + " ",
		fmt.Sprintf(" start_step=%d ", saved.Step)} {
		if !ok || !strings.Contains(second, want) {
			t.Errorf("worker-0's log lacks the new generation resuming at step %d (%q):\n%s", saved.Step, want, logs)
		}
	}

	_, err = cli("job", "resume", id)
	wantExit2(t, "resume of a succeeded job", err, "succeeded")
	_, err = cli("job", "resume", "no-such-job-1234")
	wantExit2(t, "resume of an unknown job", err, "no-such-job-1234")

	// A job cancelled before its first checkpoint (here: still pending, waiting for a
	// GPU no node has) has nothing to resume from.
	resp, err = client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: exampleSpec(t, "gpus: 0", "gpus: 1"),
		IdempotencyKey: newIdempotencyKey(), WaitForCapacity: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: resp.GetJob().GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err = cli("job", "resume", resp.GetJob().GetId())
	wantExit2(t, "resume without a checkpoint", err, "no committed checkpoint", "submit its spec again")
}
