package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// taskFake is fakeSource with tasks.
type taskFake struct {
	*fakeSource
	tasks map[string][]*cohortv1.Allocation
}

func (f *taskFake) JobTasks(_ context.Context, id string) ([]*cohortv1.Allocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.jobs[id]; !ok {
		return nil, fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	return f.tasks[id], nil
}

// TestTaskAndNodeUsage: /api/jobs/{id}/tasks lists the tasks with their usage in
// human units (workers first, ended tasks last, "—"-able nil usage), an unknown job is a
// 404, a source without tasks answers 404 with a reason, and /api/nodes carries the
// nodes' usage.
func TestTaskAndNodeUsage(t *testing.T) {
	f := &taskFake{fakeSource: newFake(), tasks: map[string][]*cohortv1.Allocation{}}
	f.put(runningJob("j1", 1, 0.5))
	f.tasks["j1"] = []*cohortv1.Allocation{
		{Id: "j1-ps-0", Kind: cohortv1.TaskKind_TASK_KIND_PS_SHARD, Index: 0, NodeId: "p1", State: cohortv1.TaskState_TASK_STATE_RUNNING,
			Usage: &cohortv1.Usage{CpuCores: 0.25, MemoryBytes: 3 << 20}},
		{Id: "j1-w-0-g1", Kind: cohortv1.TaskKind_TASK_KIND_WORKER, Index: 0, NodeId: "w1", State: cohortv1.TaskState_TASK_STATE_STOPPED},
		{Id: "j1-w-0", Kind: cohortv1.TaskKind_TASK_KIND_WORKER, Index: 0, NodeId: "w2", State: cohortv1.TaskState_TASK_STATE_RUNNING,
			Usage: &cohortv1.Usage{CpuCores: 1.5, MemoryBytes: 1536 << 20, SharedProcess: true}},
	}
	f.nodes = []*cohortv1.Node{{Id: "w2", Name: "w2", Status: cohortv1.NodeStatus_NODE_STATUS_READY, Capacity: &cohortv1.Resources{CpuMillis: 4000, MemoryBytes: 8 << 30},
		Usage: &cohortv1.Usage{CpuCores: 2, MemoryBytes: 2 << 30, MemoryTotalBytes: 8 << 30, GpuPresent: true, GpuMemoryBytes: 1 << 30, GpuUtilization: 0.5}}}
	srv := newServer(t, f)

	code, _, body := get(t, srv.URL+"/api/jobs/j1/tasks")
	if code != http.StatusOK {
		t.Fatalf("tasks: %d %s", code, body)
	}
	var resp struct {
		Tasks []TaskView `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, tv := range resp.Tasks {
		order = append(order, tv.Task+"@"+tv.Node)
	}
	if strings.Join(order, ",") != "worker 0@w2,ps 0@p1,worker 0@w1" {
		t.Fatalf("task order %v", order)
	}
	w := resp.Tasks[0].Usage
	if w == nil || w.CPU != "1.50 cores" || w.Memory != "1.5 GiB" || !w.SharedProcess || resp.Tasks[2].Usage != nil {
		t.Fatalf("usage %+v, stopped task %+v", w, resp.Tasks[2])
	}
	if code, _, body := get(t, srv.URL+"/api/jobs/nope/tasks"); code != http.StatusNotFound {
		t.Fatalf("unknown job: %d %s", code, body)
	}
	if code, _, body := get(t, newServer(t, newFake()).URL+"/api/jobs/j1/tasks"); code != http.StatusNotFound || !strings.Contains(body, "not available") {
		t.Fatalf("source without tasks: %d %s", code, body)
	}

	code, _, body = get(t, srv.URL+"/api/nodes")
	if code != http.StatusOK || !strings.Contains(body, `"cpu":"2.00 cores"`) || !strings.Contains(body, `"memory":"2.0 GiB"`) ||
		!strings.Contains(body, `"gpu":"1.0 GiB, 50% busy"`) {
		t.Fatalf("nodes: %d %s", code, body)
	}
	code, _, body = get(t, srv.URL+"/")
	if code != http.StatusOK || !strings.Contains(body, `<td class="n node-cpu">2.00 cores</td>`) {
		t.Fatalf("cluster page: %d %s", code, body)
	}
}

// TestIntervalPointsAreNotEpochs: in-epoch points keep their interval loss, and never
// stand for an epoch in the per-epoch table (an epoch's row comes from its end report).
func TestIntervalPointsAreNotEpochs(t *testing.T) {
	h := newHistory(4, 100)
	j := runningJob("j", 0, 0.6)
	report := func(epoch int32, step int64, intervalLoss float64, rows int64) {
		j.Progress.Epoch, j.Progress.Step, j.Progress.IntervalLoss, j.Progress.IntervalRows = epoch, step, intervalLoss, rows
		h.record(j, time.Now())
	}
	report(0, 10, 0.7, 80)
	report(0, 20, 0.6, 80)
	report(1, 110, 0.5, 80) // within epoch 2: the end report of epoch 1 was not seen
	report(2, 200, 0, 0)    // the end report of epoch 2
	pts := h.since("j", 0)
	if len(pts) != 4 || pts[1].IntervalLoss != 0.6 || pts[1].IntervalRows != 80 {
		t.Fatalf("points %+v", pts)
	}
	rows := epochRows(nil, pts)
	if len(rows) != 1 || rows[0].Epoch != 2 || rows[0].Step != 200 {
		t.Fatalf("epoch rows %+v, want only epoch 2", rows)
	}
}
