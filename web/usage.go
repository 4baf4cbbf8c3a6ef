package web

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TaskSource is a Source that can also list a job's tasks (allocations) with the
// usage their nodes last reported.
type TaskSource interface {
	// JobTasks returns the job's allocations, or an error wrapping ErrNotFound.
	JobTasks(ctx context.Context, id string) ([]*cohortv1.Allocation, error)
}

// UsageView is what a node or task uses now, as its agent last reported it.
type UsageView struct {
	CPUCores         Number `json:"cpu_cores"`
	MemoryBytes      int64  `json:"memory_bytes"`
	MemoryTotalBytes int64  `json:"memory_total_bytes,omitempty"`
	GPUPresent       bool   `json:"gpu_present"`
	GPUMemoryBytes   int64  `json:"gpu_memory_bytes,omitempty"`
	GPUUtilization   Number `json:"gpu_utilization,omitempty"`
	// SharedProcess marks a task's share of a process that runs other tasks too.
	SharedProcess bool `json:"shared_process,omitempty"`
	// CPU, Memory and GPU format the figures for people ("0.8 cores", "1.2 GiB",
	// "3.0 GiB, 45% busy"; GPU empty without GPU figures).
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
	GPU    string `json:"gpu,omitempty"`
}

func usageView(u *cohortv1.Usage) *UsageView {
	if u == nil {
		return nil
	}
	v := &UsageView{CPUCores: Number(u.GetCpuCores()), MemoryBytes: u.GetMemoryBytes(), MemoryTotalBytes: u.GetMemoryTotalBytes(),
		GPUPresent: u.GetGpuPresent(), GPUMemoryBytes: u.GetGpuMemoryBytes(), GPUUtilization: Number(u.GetGpuUtilization()),
		SharedProcess: u.GetSharedProcess()}
	v.CPU = strconv.FormatFloat(u.GetCpuCores(), 'f', 2, 64) + " cores"
	v.Memory = formatBytes(u.GetMemoryBytes())
	if u.GetGpuPresent() {
		v.GPU = fmt.Sprintf("%s, %.0f%% busy", formatBytes(u.GetGpuMemoryBytes()), 100*u.GetGpuUtilization())
	}
	return v
}

// TaskView is one task of a job with its usage.
type TaskView struct {
	Task  string     `json:"task"` // "worker 0", "ps 1"
	ID    string     `json:"id"`
	Node  string     `json:"node"`
	State string     `json:"state"`
	Usage *UsageView `json:"usage,omitempty"`
}

func taskViews(allocs []*cohortv1.Allocation) []TaskView {
	out := make([]TaskView, 0, len(allocs))
	for _, a := range allocs {
		kind := "worker"
		if a.GetKind() == cohortv1.TaskKind_TASK_KIND_PS_SHARD {
			kind = "ps"
		}
		out = append(out, TaskView{Task: fmt.Sprintf("%s %d", kind, a.GetIndex()), ID: a.GetId(), Node: a.GetNodeId(),
			State: enumName(a.GetState().String(), "TASK_STATE_"), Usage: usageView(a.GetUsage())})
	}
	// Live tasks first (workers, then shards, by index), ended ones after.
	live := func(t TaskView) int {
		if t.State == "running" || t.State == "pending" {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(out, func(a, b TaskView) int {
		if d := live(a) - live(b); d != 0 {
			return d
		}
		if a.Task[0] != b.Task[0] {
			return int(b.Task[0]) - int(a.Task[0]) // "worker" before "ps"
		}
		return 0
	})
	return out
}

// apiJobTasks answers a job's tasks with their CPU and memory use.
func (h *handler) apiJobTasks(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ts, ok := h.src.(TaskSource)
	if !ok {
		writeJSONError(w, http.StatusNotFound, "task usage is not available from this dashboard's source")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	allocs, err := ts.JobTasks(ctx, id)
	if err != nil {
		writeJSONError(w, h.sourceError(r, "JobTasks", err), fmt.Sprintf("tasks of job %s: %v", id, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tasks": taskViews(allocs)})
}
