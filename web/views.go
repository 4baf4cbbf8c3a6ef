package web

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

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

// String formats n for people: four decimals, or four significant digits when that
// would round a small non-zero value to zero ("5.261e-06", not "0.0000"); "—" when not
// finite.
func (n Number) String() string {
	f := float64(n)
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return "—"
	case f != 0 && math.Abs(f) < 5e-5:
		return strconv.FormatFloat(f, 'e', 3, 64)
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
	// Usage is what the node uses now (nil: not reported).
	Usage *UsageView `json:"usage,omitempty"`
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
	// Traffic is the chief worker's tensor bytes per step, before and after
	// training.compression ("" before its first report with them; trafficText).
	Traffic string `json:"traffic"`
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
	// HasProgress is whether the job's chief has reported progress at all: without
	// it, Progress holds zeros that are no measurement and are not shown.
	HasProgress bool `json:"has_progress"`
	// DurationSeconds is how long the job has run (start to end, or to the response
	// for a running job; 0 before it starts); Duration formats it for people.
	DurationSeconds float64 `json:"duration_seconds"`
	Duration        string  `json:"duration"`
	// Queued is how long the job waited from submission to start ("" when unknown).
	Queued string `json:"queued,omitempty"`
	// MinWorkers and MaxWorkers are the elastic bounds (0: worker count);
	// ActiveWorkers is the current membership's worker count (0: Workers).
	MinWorkers    int32 `json:"min_workers,omitempty"`
	MaxWorkers    int32 `json:"max_workers,omitempty"`
	ActiveWorkers int32 `json:"active_workers,omitempty"`
	Restarts      int32 `json:"restarts,omitempty"`
	MaxRestarts   int32 `json:"max_restarts,omitempty"`
	// ExportedStep is the step of the checkpoint the job exported (0: not said).
	ExportedStep int64 `json:"exported_step,omitempty"`
	// EarlyStop says why early stopping ended training ("" when it did not).
	EarlyStop string `json:"early_stop,omitempty"`
	// ProgressNote says, for a job without progress, why there is none ("" with
	// progress); FailedWhen says, for a failed job, when in its run it failed.
	ProgressNote string `json:"progress_note,omitempty"`
	FailedWhen   string `json:"failed_when,omitempty"`
}

// Failed reports whether the job ended in failure.
func (j JobView) Failed() bool { return j.State == "failed" }

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
	v.Usage = usageView(n.GetUsage())
	for _, r := range n.GetRoles() {
		v.Roles = append(v.Roles, enumName(r.String(), "NODE_ROLE_"))
	}
	return v
}

// jobView converts a job for the pages and the JSON API; now is the time a running
// job's duration runs to.
func jobView(j *cohortv1.Job, now time.Time) JobView {
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
			Traffic: trafficText(p),
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
	v.HasProgress = p.GetEpoch() > 0 || p.GetStep() > 0
	v.MinWorkers, v.MaxWorkers, v.ActiveWorkers = j.GetMinWorkers(), j.GetMaxWorkers(), j.GetActiveWorkers()
	v.Restarts, v.MaxRestarts = j.GetRestarts(), j.GetMaxRestarts()
	if v.StartTime != nil {
		end := now
		if v.EndTime != nil {
			end = *v.EndTime
		} else if v.Terminal {
			end = *v.StartTime // ended without an end time: no duration to claim
		}
		if d := end.Sub(*v.StartTime); d > 0 {
			v.DurationSeconds = d.Seconds()
			v.Duration = formatDuration(d)
		} else {
			v.Duration = "0s"
		}
		if v.SubmitTime != nil {
			v.Queued = formatDuration(max(0, v.StartTime.Sub(*v.SubmitTime)))
		}
	}
	v.ExportedStep, v.EarlyStop = exportedStep(j), earlyStopReason(j)
	if !v.HasProgress {
		switch v.State {
		case "pending":
			v.ProgressNote = "not started"
		case "running":
			v.ProgressNote = "started; no progress reported yet"
		case "failed":
			v.ProgressNote = "none: the job failed before its first progress report"
		case "cancelled":
			v.ProgressNote = "none: the job was cancelled before its first progress report"
		default:
			v.ProgressNote = "none reported"
		}
	}
	if v.State == "failed" {
		switch {
		case v.HasProgress && p.GetTotalEpochs() > 0 && p.GetEpoch() >= p.GetTotalEpochs():
			v.FailedWhen = fmt.Sprintf("after its last epoch (step %d)", p.GetStep())
		case v.HasProgress && p.GetTotalEpochs() > 0:
			v.FailedWhen = fmt.Sprintf("at epoch %d of %d (step %d)", p.GetEpoch()+1, p.GetTotalEpochs(), p.GetStep())
		case v.HasProgress:
			v.FailedWhen = fmt.Sprintf("at step %d", p.GetStep())
		case v.StartTime != nil:
			v.FailedWhen = "before its first progress report"
		default:
			v.FailedWhen = "before it started"
		}
		if v.StartTime != nil && v.Duration != "" {
			v.FailedWhen += ", after " + v.Duration
		}
	}
	return v
}

// formatDuration formats d for people: "0.4s", "45s", "3m 05s", "2h 07m", "3d 4h".
func formatDuration(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case d < time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case s < 60:
		return strconv.FormatInt(s, 10) + "s"
	case s < 3600:
		return fmt.Sprintf("%dm %02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh %02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd %dh", s/86400, s%86400/3600)
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

// optionalMessage returns the message field name of m when this build's Job message
// has that field and it is set; nil otherwise. The job page reads the fields that
// other parts of the cluster are adding (exported_from, early_stop) through it, so
// that it shows them where the coordinator sets them and builds without them.
func optionalMessage(m protoreflect.Message, name protoreflect.Name) protoreflect.Message {
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() || !m.Has(fd) {
		return nil
	}
	return m.Get(fd).Message()
}

// scalarField returns the scalar field name of m (nil m or an absent field: invalid).
func scalarField(m protoreflect.Message, name protoreflect.Name) protoreflect.Value {
	if m == nil {
		return protoreflect.Value{}
	}
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || fd.IsList() || fd.IsMap() || fd.Kind() == protoreflect.MessageKind {
		return protoreflect.Value{}
	}
	return m.Get(fd)
}

// exportedStep is the step of the checkpoint the job exported (job.exported_from.step),
// 0 when the job record does not say.
func exportedStep(j *cohortv1.Job) int64 {
	v := scalarField(optionalMessage(j.ProtoReflect(), "exported_from"), "step")
	if !v.IsValid() {
		return 0
	}
	switch x := v.Interface().(type) {
	case int64:
		return x
	case int32:
		return int64(x)
	}
	return 0
}

// earlyStopReason is job.early_stop.reason, "" when the job record has none.
func earlyStopReason(j *cohortv1.Job) string {
	v := scalarField(optionalMessage(j.ProtoReflect(), "early_stop"), "reason")
	if s, ok := v.Interface().(string); ok && v.IsValid() {
		return s
	}
	return ""
}

// sortedKeys returns the keys of m in sorted order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
