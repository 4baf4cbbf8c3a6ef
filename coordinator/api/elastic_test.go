package api_test

import (
	"strings"
	"testing"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestElasticPreemptionOverGRPC: a higher-priority job takes its room from a running
// elastic job by shrinking it (one worker fewer, a new generation, no restart, nothing
// evicted), as the plan predicts; when the preemptor ends, the elastic job grows back.
func TestElasticPreemptionOverGRPC(t *testing.T) {
	_, jobs, ctx, waitFor := oneNodeLeader(t, 8)
	low, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte("name: low\nworkers: 4\ngpus: 2\npriority: 10\nmin: 1")})
	if err != nil {
		t.Fatal(err)
	}
	placed := waitFor(low.Job.Id, func(j *cohortv1.Job) bool { return j.State == cohortv1.JobState_JOB_STATE_RUNNING })

	const high = "name: high\nworkers: 1\ngpus: 2\npriority: 90"
	plan, err := jobs.PlanJob(ctx, &cohortv1.PlanJobRequest{SpecYaml: []byte(high)})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Feasible || len(plan.Preemptions) != 0 || len(plan.Shrinks) != 1 || plan.Shrinks[0] != low.Job.Id+": 1 workers" {
		t.Fatalf("plan: %v", plan)
	}
	hi, err := jobs.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: []byte(high)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(hi.Job.Id, func(j *cohortv1.Job) bool { return j.State == cohortv1.JobState_JOB_STATE_RUNNING })
	got, err := jobs.GetJob(ctx, &cohortv1.GetJobRequest{Id: low.Job.Id})
	if err != nil {
		t.Fatal(err)
	}
	j := got.Job
	if j.State != cohortv1.JobState_JOB_STATE_RUNNING || j.ActiveWorkers != 3 || j.Generation != placed.Generation+1 || j.Restarts != 0 {
		t.Fatalf("elastic job after the preemption: state %v, %d active workers, generation %d, restarts %d",
			j.State, j.ActiveWorkers, j.Generation, j.Restarts)
	}
	stopped := 0
	for _, a := range got.Allocations {
		if a.State == cohortv1.TaskState_TASK_STATE_STOPPED {
			stopped++
			if a.Kind != cohortv1.TaskKind_TASK_KIND_WORKER || !strings.Contains(a.Message, "shrunk for job "+hi.Job.Id) {
				t.Fatalf("stopped allocation %v", a)
			}
		}
	}
	if stopped != 1 {
		t.Fatalf("%d allocations stopped, want the one worker given up", stopped)
	}
	// When the preemptor ends, the capacity frees and the elastic job grows back.
	if _, err := jobs.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: hi.Job.Id}); err != nil {
		t.Fatal(err)
	}
	j = waitFor(low.Job.Id, func(j *cohortv1.Job) bool { return j.ActiveWorkers == 4 })
	if j.State != cohortv1.JobState_JOB_STATE_RUNNING || j.Generation != placed.Generation+2 {
		t.Fatalf("elastic job after growing back: state %v generation %d", j.State, j.Generation)
	}
}
