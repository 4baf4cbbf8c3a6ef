package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// logLines splits `job logs` table output into task -> its lines, in order.
func logLines(out string) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		task, text, _ := strings.Cut(line, " ")
		m[task] = append(m[task], strings.TrimSpace(text))
	}
	return m
}

// checkFinishedJobLogs checks `cohort job logs` of a job that ran epochs epochs to the
// end on the cluster at addr: every task's lines are there, --task and --tail select,
// and -o json gives each task's own JSON records.
func checkFinishedJobLogs(t *testing.T, addr, id string, epochs int) {
	t.Helper()
	out, err := runCLI(t, "job", "logs", id, "--address", addr)
	if err != nil {
		t.Fatalf("job logs: %v", err)
	}
	tasks := logLines(out)
	for _, task := range []string{"worker-0", "worker-1", "ps-0", "ps-1"} {
		if len(tasks[task]) == 0 {
			t.Errorf("job logs: no lines of %s in:\n%s", task, out)
		}
	}
	if n := strings.Count(strings.Join(tasks["worker-0"], "\n"), "INFO epoch done "); n != epochs {
		t.Errorf("worker-0 logged %d 'epoch done' lines, want %d:\n%s", n, epochs, strings.Join(tasks["worker-0"], "\n"))
	}
	if !strings.Contains(strings.Join(tasks["ps-0"], "\n"), "shard initialised") {
		t.Errorf("ps-0 lines lack the shard's own log (shard initialised):\n%s", strings.Join(tasks["ps-0"], "\n"))
	}

	out, err = runCLI(t, "job", "logs", id, "--task", "worker-0", "--tail", "3", "--address", addr)
	if err != nil {
		t.Fatalf("job logs --tail: %v", err)
	}
	tail := logLines(out)
	all := tasks["worker-0"]
	if len(tail) != 1 || len(tail["worker-0"]) != 3 || tail["worker-0"][2] != all[len(all)-1] || tail["worker-0"][0] != all[len(all)-3] {
		t.Errorf("--task worker-0 --tail 3:\n%s\nwant the last 3 of:\n%s", out, strings.Join(all, "\n"))
	}

	out, err = runCLI(t, "job", "logs", id, "--task", "ps-1", "-o", "json", "--address", addr)
	if err != nil {
		t.Fatalf("job logs -o json: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		var row logLineJSON
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &row); err != nil || row.Task != "ps-1" || row.Generation != 1 ||
			json.Unmarshal([]byte(row.Line), &rec) != nil || rec["msg"] == nil {
			t.Fatalf("job logs -o json line %q: %+v %v", l, row, err)
		}
	}

	_, err = runCLI(t, "job", "logs", id, "--task", "chief-0", "--address", addr)
	wantExit2(t, "--task chief-0", err, "worker-N or ps-N")
	_, err = runCLI(t, "job", "logs", id, "--tail", "-1", "--address", addr)
	wantExit2(t, "--tail -1", err, "--tail")
	_, err = runCLI(t, "job", "logs", "no-such-job-1234", "--address", addr)
	wantExit2(t, "unknown job", err, "no-such-job-1234")
}

// TestJobLogsFollow follows a job's logs from its submission (`job logs -f`): the
// command ends by itself once the job has ended and its tasks have written their last
// segments, having printed every task's lines through the end of the run. The
// finished job's logs are then read again with --task, --tail and -o json.
func TestJobLogsFollow(t *testing.T) {
	c, client, ctx := startCluster(t, 2, 2)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: exampleSpec(t, "epochs: 30", "epochs: 3"),
		IdempotencyKey: newIdempotencyKey()})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJob().GetId()
	type result struct {
		out string
		err error
	}
	followed := make(chan result, 1)
	go func() {
		out, err := runCLI(t, "job", "logs", id, "-f", "--address", c.GRPCAddr)
		followed <- result{out, err}
	}()
	job, err := watchUntilDone(ctx, client, id, nil)
	if err != nil || job.GetState() != cohortv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job: %v %s %s", err, stateName(job.GetState()), job.GetStatusMessage())
	}
	var f result
	select {
	case f = <-followed:
	case <-ctx.Done():
		t.Fatal("job logs -f did not end after the job ended")
	}
	if f.err != nil {
		t.Fatalf("job logs -f: %v", f.err)
	}
	tasks := logLines(f.out)
	w0 := strings.Join(tasks["worker-0"], "\n")
	for _, want := range []string{"INFO training ", " epoch=3 step=", "model exported"} {
		if !strings.Contains(w0, want) {
			t.Errorf("followed worker-0 lines lack %q:\n%s", want, w0)
		}
	}
	if ps := strings.Join(tasks["ps-1"], "\n"); !strings.Contains(ps, "shard removed") {
		t.Errorf("followed ps-1 lines lack its last line (shard removed):\n%s", ps)
	}
	checkFinishedJobLogs(t, c.GRPCAddr, id, 3)
}

// TestJobLogsOfAPendingJob: a job that never ran has no lines; following it ends when
// it is cancelled.
func TestJobLogsOfAPendingJob(t *testing.T) {
	c, client, ctx := startCluster(t, 1, 1)
	resp, err := client.SubmitJob(ctx, &cohortv1.SubmitJobRequest{SpecYaml: exampleSpec(t, "gpus: 0", "gpus: 1"),
		IdempotencyKey: newIdempotencyKey(), WaitForCapacity: true})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetJob().GetId()
	out, err := runCLI(t, "job", "logs", id, "--address", c.GRPCAddr)
	if err != nil || out != "" {
		t.Fatalf("logs of a pending job: %q %v", out, err)
	}
	conn, err := dial(c.GRPCAddr, testCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := cohortv1.NewJobServiceClient(conn).JobLogs(ctx, &cohortv1.JobLogsRequest{Id: id, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	if _, err := client.CancelJob(ctx, &cohortv1.CancelJobRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err.Error() != "EOF" {
			t.Fatalf("follow ended with %v, want the end of the stream", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("following a cancelled pending job did not end")
	}
}

// FuzzFormatLogLine: any line renders as one line of valid UTF-8 without control
// characters, and a JSON record keeps its message.
func FuzzFormatLogLine(f *testing.F) {
	f.Add(`{"time":"2026-11-29T00:41:02.123456Z","level":"INFO","msg":"epoch done","epoch":1,"val":{"auc":0.9}}`)
	f.Add(`{"msg":"a\nb\u001b[31m","k":"x y"}`)
	f.Add(`not json`)
	f.Add(`{"time":"2026-11-29T`)
	f.Add(`{"time":"2026-11-29T00:41:02ZZZZ","msg":1}`)
	f.Fuzz(func(t *testing.T, line string) {
		out := formatLogLine(line)
		if !utf8.ValidString(out) {
			t.Fatalf("%q -> invalid UTF-8 %q", line, out)
		}
		for _, r := range out {
			if r < 0x20 && r != '\t' || r == 0x7f {
				t.Fatalf("%q -> control character in %q", line, out)
			}
		}
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg != "" && utf8.ValidString(rec.Msg) && sanitizeLine(rec.Msg) == rec.Msg &&
			!strings.Contains(out, rec.Msg) {
			t.Fatalf("%q -> %q lost the message %q", line, out, rec.Msg)
		}
	})
}
