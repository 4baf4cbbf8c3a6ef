package web

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Number is a float64 that encodes NaN and ±Inf as JSON null (a training loss is NaN
// when an epoch saw no rows, or diverged).
type Number float64

// MarshalJSON implements json.Marshaler.
func (n Number) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64), nil
}

// String formats n for people: four significant decimals, "—" when not finite.
func (n Number) String() string {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "—"
	}
	return strconv.FormatFloat(f, 'f', 4, 64)
}

// ResourcesView is an amount of compute.
type ResourcesView struct {
	CPUMillis   int64  `json:"cpu_millis"`
	MemoryBytes int64  `json:"memory_bytes"`
	GPUs        int32  `json:"gpus"`
	GPUModel    string `json:"gpu_model,omitempty"`
}

// String formats r as "4 CPU, 2.0 GiB, 1 GPU".
func (r ResourcesView) String() string {
	s := formatCPU(r.CPUMillis) + " CPU, " + formatBytes(r.MemoryBytes)
	if r.GPUs > 0 {
		s += ", " + strconv.Itoa(int(r.GPUs)) + " GPU"
		if r.GPUModel != "" {
			s += " (" + r.GPUModel + ")"
		}
	}
	return s
}

// NodeView is a registered node as the dashboard shows it.
type NodeView struct {
	ID            string            `json:"id"`
	Name          string            `json:"name"`
	Roles         []string          `json:"roles"`
	Status        string            `json:"status"`
	Capacity      ResourcesView     `json:"capacity"`
	DataAddress   string            `json:"data_address,omitempty"`
	LastHeartbeat *time.Time        `json:"last_heartbeat,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	// Heartbeat is LastHeartbeat formatted for people ("4s ago"), as of the response.
	Heartbeat string `json:"heartbeat"`
}

// PeerView is one member of the coordinators' Raft configuration.
type PeerView struct {
	ID          string `json:"id"`
	Address     string `json:"address"`
	GRPCAddress string `json:"grpc_address,omitempty"`
	Leader      bool   `json:"leader"`
	Voter       bool   `json:"voter"`
}

func peerView(p *cohortv1.Peer) PeerView {
	return PeerView{ID: p.GetId(), Address: p.GetAddress(), GRPCAddress: p.GetGrpcAddress(), Leader: p.GetLeader(), Voter: p.GetVoter()}
}

// ProgressView is a job's latest progress.
type ProgressView struct {
	Epoch            int32  `json:"epoch"`
	TotalEpochs      int32  `json:"total_epochs"`
	Step             int64  `json:"step"`
	TotalSteps       int64  `json:"total_steps"`
	SamplesPerSecond Number `json:"samples_per_second"`
	Loss             Number `json:"loss"`
}

// Percent is the share of steps done, 0 to 100.
func (p ProgressView) Percent() float64 {
	if p.TotalSteps <= 0 {
		return 0
	}
	return math.Min(100, 100*float64(p.Step)/float64(p.TotalSteps))
}

// JobView is a job as the dashboard shows it. It is also the payload of one
// server-sent event on /api/jobs/{id}/events.
type JobView struct {
	ID              string            `json:"id"`
	Namespace       string            `json:"namespace"`
	Name            string            `json:"name"`
	State           string            `json:"state"`
	Terminal        bool              `json:"terminal"`
	StatusMessage   string            `json:"status_message,omitempty"`
	Priority        int32             `json:"priority"`
	Queue           string            `json:"queue"`
	Workers         int32             `json:"workers"`
	Shards          int32             `json:"shards"`
	WorkerResources ResourcesView     `json:"worker_resources"`
	ShardResources  ResourcesView     `json:"shard_resources"`
	Generation      uint64            `json:"generation"`
	SubmitTime      *time.Time        `json:"submit_time,omitempty"`
	StartTime       *time.Time        `json:"start_time,omitempty"`
	EndTime         *time.Time        `json:"end_time,omitempty"`
	Progress        ProgressView      `json:"progress"`
	Metrics         map[string]Number `json:"metrics"`
	PendingReasons  []string          `json:"pending_reasons"`
	Checkpoint      string            `json:"checkpoint,omitempty"`
	Exports         []string          `json:"exports"`
	ModifyIndex     uint64            `json:"modify_index"`
	// Epoch, Step and Loss repeat the progress fields at the top level, so that an
	// event consumer reads one flat object per update.
	Epoch int32  `json:"epoch"`
	Step  int64  `json:"step"`
	Loss  Number `json:"loss"`
}

// MetricNames returns the metric keys in sorted order.
func (j JobView) MetricNames() []string {
	keys := make([]string, 0, len(j.Metrics))
	for k := range j.Metrics {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// enumName turns "JOB_STATE_RUNNING" with prefix "JOB_STATE_" into "running".
func enumName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func unixNano(ns int64) *time.Time {
	if ns <= 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

func resourcesView(r *cohortv1.Resources) ResourcesView {
	return ResourcesView{CPUMillis: r.GetCpuMillis(), MemoryBytes: r.GetMemoryBytes(), GPUs: r.GetGpus(), GPUModel: r.GetGpuModel()}
}

// isTerminal reports whether a job state never changes again.
func isTerminal(s cohortv1.JobState) bool {
	switch s {
	case cohortv1.JobState_JOB_STATE_SUCCEEDED, cohortv1.JobState_JOB_STATE_FAILED, cohortv1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

func nodeView(n *cohortv1.Node, now time.Time) NodeView {
	v := NodeView{
		ID: n.GetId(), Name: n.GetName(), Status: enumName(n.GetStatus().String(), "NODE_STATUS_"),
		Capacity: resourcesView(n.GetCapacity()), DataAddress: n.GetDataAddress(),
		LastHeartbeat: unixNano(n.GetLastHeartbeatUnixNano()), Labels: n.GetLabels(),
		Roles: []string{},
	}
	v.Heartbeat = formatAgo(v.LastHeartbeat, now)
	for _, r := range n.GetRoles() {
		v.Roles = append(v.Roles, enumName(r.String(), "NODE_ROLE_"))
	}
	return v
}

func jobView(j *cohortv1.Job) JobView {
	p := j.GetProgress()
	v := JobView{
		ID: j.GetId(), Namespace: j.GetNamespace(), Name: j.GetName(),
		State: enumName(j.GetState().String(), "JOB_STATE_"), Terminal: isTerminal(j.GetState()),
		StatusMessage: j.GetStatusMessage(), Priority: j.GetPriority(), Queue: j.GetQueue(),
		Workers: j.GetWorkerCount(), Shards: j.GetShardCount(),
		WorkerResources: resourcesView(j.GetWorkerResources()), ShardResources: resourcesView(j.GetShardResources()),
		Generation: j.GetGeneration(),
		SubmitTime: unixNano(j.GetSubmitTimeUnixNano()), StartTime: unixNano(j.GetStartTimeUnixNano()),
		EndTime: unixNano(j.GetEndTimeUnixNano()),
		Progress: ProgressView{
			Epoch: p.GetEpoch(), TotalEpochs: p.GetTotalEpochs(), Step: p.GetStep(), TotalSteps: p.GetTotalSteps(),
			SamplesPerSecond: Number(p.GetSamplesPerSecond()), Loss: Number(p.GetLoss()),
		},
		Metrics:        make(map[string]Number, len(j.GetMetrics())),
		PendingReasons: append([]string{}, j.GetPendingReasons()...),
		Checkpoint:     j.GetCheckpoint(),
		Exports:        append([]string{}, j.GetExports()...),
		ModifyIndex:    j.GetModifyIndex(),
		Epoch:          p.GetEpoch(), Step: p.GetStep(), Loss: Number(p.GetLoss()),
	}
	for k, m := range j.GetMetrics() {
		v.Metrics[k] = Number(m)
	}
	return v
}

// jobStates lists every job state in lifecycle order, for the counts table.
var jobStates = []string{"pending", "running", "succeeded", "failed", "cancelled"}

// countByState counts jobs per state; every state in jobStates is present.
func countByState(jobs []JobView) map[string]int {
	counts := make(map[string]int, len(jobStates))
	for _, s := range jobStates {
		counts[s] = 0
	}
	for _, j := range jobs {
		counts[j.State]++
	}
	return counts
}

func formatCPU(millis int64) string {
	if millis%1000 == 0 {
		return strconv.FormatInt(millis/1000, 10)
	}
	return strconv.FormatFloat(float64(millis)/1000, 'f', 2, 64)
}

func formatBytes(b int64) string {
	const unit = 1024
	if b < unit {
		return strconv.FormatInt(b, 10) + " B"
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(b)/float64(div), 'f', 1, 64) + " " + string("KMGTP"[exp]) + "iB"
}

// formatAgo formats the time since t for people ("4s ago", "3m ago").
func formatAgo(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	d := now.Sub(*t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h ago"
	}
	return t.Format("2006-01-02 15:04")
}
