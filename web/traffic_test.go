package web

import (
	"strings"
	"testing"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestJobPageShowsTraffic: a job whose progress carries bytes per step shows them on its
// page (rendered by the server) and in its JSON view; a job without has the row hidden.
func TestJobPageShowsTraffic(t *testing.T) {
	j := specJob("c1", cohortv1.JobState_JOB_STATE_RUNNING)
	j.Progress = &cohortv1.JobProgress{Epoch: 1, TotalEpochs: 3, Step: 40, TotalSteps: 120, Loss: 0.5,
		PushBytesPerStep: 408, PushDenseBytesPerStep: 19716, PullBytesPerStep: 19716, PullDenseBytesPerStep: 19716}
	const want = "sent 408 B of 19.3 KiB, received 19.3 KiB"
	if got := jobView(j, time.Now()).Progress.Traffic; got != want {
		t.Fatalf("traffic %q, want %q", got, want)
	}
	d := newDetailSource()
	d.put(j)
	plain := specJob("c2", cohortv1.JobState_JOB_STATE_RUNNING)
	plain.Progress = &cohortv1.JobProgress{Epoch: 1, TotalEpochs: 3, Step: 40, TotalSteps: 120}
	d.put(plain)
	srv := newServer(t, d)
	_, _, body := get(t, srv.URL+"/jobs/c1")
	if !strings.Contains(body, `<tr id="row-traffic"><th>Bytes/step</th><td id="job-traffic">`+want) {
		t.Errorf("the job page does not show %q", want)
	}
	_, _, body = get(t, srv.URL+"/jobs/c2")
	if !strings.Contains(body, `<tr id="row-traffic" hidden>`) {
		t.Error("a job without traffic figures shows the row")
	}
}
