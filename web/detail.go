package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cohort-dev/cohort/internal/tasklog"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrUnavailable is what an optional Source method returns (possibly wrapped) when it
// cannot supply the data at all, for example a coordinator without storage: the page
// says so instead of showing an error.
var ErrUnavailable = errors.New("not available")

// EpochRecord is what a job's chief recorded at the end of one epoch: the scalars of
// its TensorBoard event files at that epoch.
type EpochRecord struct {
	// Epoch is the number of epochs completed (1 for the first).
	Epoch int32
	// Time is when the chief recorded it (zero: unknown).
	Time time.Time
	// Scalars maps a tag to its value: "loss" (the epoch's mean training loss),
	// "learning_rate", "samples_per_second", "global_step" and the validation metrics
	// ("val_loss", "val_auc", …). Any other tag is shown as a metric.
	Scalars map[string]float64
}

// EpochSource is a Source that can also read a job's per-epoch record.
type EpochSource interface {
	// JobEpochs returns the job's epochs, oldest first; none when its chief has
	// recorded none yet. An error wrapping ErrUnavailable says that the source cannot
	// read them at all.
	JobEpochs(ctx context.Context, id string) ([]EpochRecord, error)
}

// CheckpointRecord is one committed checkpoint of a job, as its manifest describes it.
type CheckpointRecord struct {
	// URI names the manifest.
	URI         string
	Step        int64
	Epoch       int32
	StepInEpoch int64
	Generation  uint64
	// Created is when the manifest was written.
	Created time.Time
	// SizeBytes is the size of the manifest and every object it lists; Objects counts
	// those objects.
	SizeBytes int64
	Objects   int
	// Metrics are the validation metrics the manifest records (those of the last
	// evaluation before the checkpoint).
	Metrics map[string]float64
	// Score is the manifest's score (nil: it has none); ScoreMetric and ScoreMode name
	// what it ranks by and in which direction ("max", "min") when the manifest says.
	Score       *float64
	ScoreMetric string
	ScoreMode   string
	// Latest marks the checkpoint the job record points at.
	Latest bool
	// Error is set when the manifest cannot be read (the fields above then come from
	// the listing only).
	Error string
}

// CheckpointSource is a Source that can also list a job's committed checkpoints.
type CheckpointSource interface {
	// JobCheckpoints returns the committed checkpoints of j, oldest first, with Latest
	// set on the one j.Checkpoint names. An error wrapping ErrUnavailable says that
	// the source cannot list them at all.
	JobCheckpoints(ctx context.Context, j *cohortv1.Job) ([]CheckpointRecord, error)
}

// LogLine is one line a job's task wrote.
type LogLine struct {
	// Task is "worker-0", "ps-1", …
	Task string `json:"task"`
	// Generation is the membership generation the task ran in (0: not said).
	Generation uint64 `json:"generation,omitempty"`
	// Text is the line: usually one JSON log record.
	Text string `json:"text"`
}

// LogRequest asks for a job's task log lines, as `cohort job logs` does.
type LogRequest struct {
	ID string
	// Task limits the lines to one task ("" every task).
	Task string
	// Tail, when positive, starts with only the last Tail lines of each task.
	Tail int
	// Follow goes on with new lines until the job has ended and its tasks have
	// written their last lines.
	Follow bool
}

// LogSource is a Source that can also read a job's task logs.
type LogSource interface {
	// JobLogs calls emit with each batch of lines, in order, until they are all sent
	// (with Follow: until the job's tasks have written their last lines), ctx ends or
	// emit fails. An unknown job is an error wrapping ErrNotFound.
	JobLogs(ctx context.Context, req LogRequest, emit func([]LogLine) error) error
}

// Limits of the job page's data.
const (
	// defaultLogTail is how many lines of each task a log view starts with.
	defaultLogTail = 500
	maxLogTail     = 10_000
	// maxLogLines bounds the lines one JSON answer of /api/jobs/{id}/logs holds.
	maxLogLines = 20_000
	// maxLogLinesPerEvent bounds the lines of one server-sent event.
	maxLogLinesPerEvent = 500
	// maxTasksListed bounds the task names the log filter offers per kind.
	maxTasksListed = 256
)

// EpochView is one row of the job page's per-epoch table. Missing values are NaN,
// which encode as null.
type EpochView struct {
	Epoch            int32             `json:"epoch"`
	Step             int64             `json:"step"`
	Time             *time.Time        `json:"time,omitempty"`
	Loss             Number            `json:"loss"`
	SamplesPerSecond Number            `json:"samples_per_second"`
	LearningRate     Number            `json:"learning_rate"`
	Metrics          map[string]Number `json:"metrics"`
	// Source is where the row comes from: "tensorboard" (the chief's event files) or
	// "dashboard" (the progress this dashboard saw, when the event files lack it).
	Source string `json:"source"`
}

// epochsResponse is the answer of /api/jobs/{id}/epochs.
type epochsResponse struct {
	Epochs []EpochView `json:"epochs"`
	// Metrics names the metric columns, in display order.
	Metrics []string `json:"metrics"`
	// Note explains missing data ("" when there is none to explain).
	Note string `json:"note,omitempty"`
}

// CheckpointView is one row of the job page's checkpoint table.
type CheckpointView struct {
	Step        int64             `json:"step"`
	Epoch       int32             `json:"epoch"`
	StepInEpoch int64             `json:"step_in_epoch"`
	Generation  uint64            `json:"generation"`
	Created     *time.Time        `json:"created,omitempty"`
	SizeBytes   int64             `json:"size_bytes"`
	Size        string            `json:"size"`
	Objects     int               `json:"objects"`
	URI         string            `json:"uri"`
	Metrics     map[string]Number `json:"metrics"`
	Score       *Number           `json:"score,omitempty"`
	Latest      bool              `json:"latest"`
	// Best marks the best score among the job's checkpoints (in ScoreMode's
	// direction); Exported the one the job exported, when its record says.
	Best     bool   `json:"best"`
	Exported bool   `json:"exported"`
	Error    string `json:"error,omitempty"`
}

// checkpointsResponse is the answer of /api/jobs/{id}/checkpoints.
type checkpointsResponse struct {
	Checkpoints []CheckpointView `json:"checkpoints"`
	Metrics     []string         `json:"metrics"`
	// ScoreMetric and ScoreMode are what the scores rank by ("" when no checkpoint
	// has a score).
	ScoreMetric string `json:"score_metric,omitempty"`
	ScoreMode   string `json:"score_mode,omitempty"`
	Note        string `json:"note,omitempty"`
}

// jobPageData is what the job page renders.
type jobPageData struct {
	JobView
	Spec SpecView
	// Tasks are the task names the log filter offers.
	Tasks []string
	// HasLogs, HasEpochs and HasCheckpoints say which optional sources the page can
	// read.
	HasLogs, HasEpochs, HasCheckpoints bool
	// HasTasks says whether the page can read its tasks' usage (TaskSource).
	HasTasks bool
}

// taskNames lists the log task names of j: its worker ranks (up to its elastic
// maximum) and parameter-server shards.
func taskNames(j *cohortv1.Job) []string {
	var out []string
	for i := range min(max(j.GetWorkerCount(), j.GetMaxWorkers()), maxTasksListed) {
		out = append(out, tasklog.TaskName(cohortv1.TaskKind_TASK_KIND_WORKER, i))
	}
	for i := range min(j.GetShardCount(), maxTasksListed) {
		out = append(out, tasklog.TaskName(cohortv1.TaskKind_TASK_KIND_PS_SHARD, i))
	}
	return out
}

// epochRows merges the chief's epoch records with the epochs the dashboard saw
// itself: a record wins, the dashboard's own points fill the epochs the records lack
// (a coordinator without storage, or an event file not written yet).
func epochRows(records []EpochRecord, points []Point) []EpochView {
	byEpoch := map[int32]EpochView{}
	nan := Number(math.NaN())
	for _, r := range records {
		if r.Epoch <= 0 {
			continue
		}
		v := EpochView{Epoch: r.Epoch, Loss: nan, SamplesPerSecond: nan, LearningRate: nan, Metrics: map[string]Number{}, Source: "tensorboard"}
		if !r.Time.IsZero() {
			t := r.Time.UTC()
			v.Time = &t
		}
		for k, x := range r.Scalars {
			switch k {
			case "loss":
				v.Loss = Number(x)
			case "samples_per_second":
				v.SamplesPerSecond = Number(x)
			case "learning_rate":
				v.LearningRate = Number(x)
			case "global_step":
				v.Step = int64(x)
			default:
				v.Metrics[k] = Number(x)
			}
		}
		byEpoch[r.Epoch] = v
	}
	// The first point of an epoch is the report made as it ended: later points of the
	// same epoch count are progress within the next one. In-epoch reports (with an
	// interval loss) never stand for an epoch.
	for _, p := range points {
		if _, ok := byEpoch[p.Epoch]; ok || p.Epoch <= 0 || p.IntervalRows > 0 {
			continue
		}
		t := p.Time
		v := EpochView{Epoch: p.Epoch, Step: p.Step, Time: &t, Loss: p.Loss, SamplesPerSecond: p.SamplesPerSecond,
			LearningRate: nan, Metrics: map[string]Number{}, Source: "dashboard"}
		for k, x := range p.Metrics {
			v.Metrics[k] = x
		}
		byEpoch[p.Epoch] = v
	}
	out := make([]EpochView, 0, len(byEpoch))
	for _, v := range byEpoch {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b EpochView) int { return int(a.Epoch) - int(b.Epoch) })
	return out
}

// metricColumns returns the metric names of maps in display order: val_loss first,
// then the other validation metrics, then the rest, each alphabetically.
func metricColumns(maps ...map[string]Number) []string {
	seen := map[string]bool{}
	for _, m := range maps {
		for k := range m {
			seen[k] = true
		}
	}
	names := sortedKeys(seen)
	rank := func(n string) int {
		switch {
		case n == "val_loss":
			return 0
		case strings.HasPrefix(n, "val_"):
			return 1
		}
		return 2
	}
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	return names
}

// metricMode is the direction in which a metric improves: "min" for losses and
// errors, "max" otherwise.
func metricMode(name string) string {
	for _, s := range []string{"loss", "rmse", "mae", "mape", "error", "mse"} {
		if strings.Contains(name, s) {
			return "min"
		}
	}
	return "max"
}

// checkpointRows converts the records and marks the best score and the exported
// checkpoint. The score's direction is the manifests' own, else the spec's
// checkpoint.scoreBy, else the metric's.
func checkpointRows(records []CheckpointRecord, spec SpecView, exportedStep int64) checkpointsResponse {
	resp := checkpointsResponse{Checkpoints: []CheckpointView{}}
	for _, r := range records {
		if resp.ScoreMetric == "" {
			resp.ScoreMetric = r.ScoreMetric
		}
		if resp.ScoreMode == "" {
			resp.ScoreMode = r.ScoreMode
		}
	}
	for _, r := range records {
		v := CheckpointView{Step: r.Step, Epoch: r.Epoch, StepInEpoch: r.StepInEpoch, Generation: r.Generation,
			SizeBytes: r.SizeBytes, Size: formatBytes(r.SizeBytes), Objects: r.Objects, URI: r.URI,
			Metrics: map[string]Number{}, Latest: r.Latest, Error: r.Error,
			Exported: exportedStep > 0 && r.Step == exportedStep && r.Error == ""}
		if !r.Created.IsZero() {
			t := r.Created.UTC()
			v.Created = &t
		}
		for k, x := range r.Metrics {
			v.Metrics[k] = Number(x)
		}
		if r.Score != nil && r.Error == "" {
			s := Number(*r.Score)
			v.Score = &s
		}
		resp.Checkpoints = append(resp.Checkpoints, v)
	}
	if resp.ScoreMetric == "" {
		resp.ScoreMetric = spec.ScoreMetric
	}
	if resp.ScoreMode == "" {
		resp.ScoreMode = spec.ScoreMode
	}
	best := -1
	for i, v := range resp.Checkpoints {
		if v.Score == nil || math.IsNaN(float64(*v.Score)) || math.IsInf(float64(*v.Score), 0) {
			continue
		}
		if resp.ScoreMode == "" {
			resp.ScoreMode = metricMode(resp.ScoreMetric)
		}
		if best < 0 {
			best = i
			continue
		}
		b, s := float64(*resp.Checkpoints[best].Score), float64(*v.Score)
		if (resp.ScoreMode == "min" && s < b) || (resp.ScoreMode != "min" && s > b) {
			best = i
		}
	}
	if best >= 0 {
		resp.Checkpoints[best].Best = true
	} else {
		resp.ScoreMetric, resp.ScoreMode = "", "" // no score to rank by
	}
	maps := make([]map[string]Number, len(resp.Checkpoints))
	for i, v := range resp.Checkpoints {
		maps[i] = v.Metrics
	}
	resp.Metrics = metricColumns(maps...)
	return resp
}

// unavailableNote turns a failed optional Source call into the note the page shows.
func unavailableNote(what string, err error) string {
	if errors.Is(err, ErrUnavailable) {
		return fmt.Sprintf("%s are not available: %v", what, err)
	}
	return fmt.Sprintf("Cannot read the %s: %v", strings.ToLower(what), err)
}

func (h *handler) apiJobEpochs(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	id := r.PathValue("id")
	if _, err := h.getJob(ctx, id); err != nil {
		writeJSONError(w, h.sourceError(r, "GetJob", err), err.Error())
		return
	}
	var resp epochsResponse
	var records []EpochRecord
	if es, ok := h.src.(EpochSource); ok {
		var err error
		if records, err = es.JobEpochs(ctx, id); err != nil {
			if !errors.Is(err, ErrUnavailable) {
				h.sourceError(r, "JobEpochs", err)
			}
			resp.Note = unavailableNote("Epoch records", err) + "; the table shows the epochs this dashboard saw."
		}
	} else {
		resp.Note = "This dashboard's source keeps no epoch records; the table shows the epochs this dashboard saw."
	}
	resp.Epochs = epochRows(records, h.hist.since(id, 0))
	maps := make([]map[string]Number, len(resp.Epochs))
	for i, e := range resp.Epochs {
		maps[i] = e.Metrics
	}
	resp.Metrics = metricColumns(maps...)
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) apiJobCheckpoints(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	id := r.PathValue("id")
	j, err := h.src.GetJob(ctx, id)
	if err != nil {
		writeJSONError(w, h.sourceError(r, "GetJob", err), fmt.Sprintf("get job %s: %v", id, err))
		return
	}
	cs, ok := h.src.(CheckpointSource)
	if !ok {
		writeJSON(w, http.StatusOK, checkpointsResponse{Checkpoints: []CheckpointView{}, Metrics: []string{},
			Note: "This dashboard's source cannot list checkpoints."})
		return
	}
	records, err := cs.JobCheckpoints(ctx, j)
	resp := checkpointRows(records, specView(j), exportedStep(j))
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			h.sourceError(r, "JobCheckpoints", err)
		}
		resp.Note = unavailableNote("Checkpoint listings", err)
	}
	writeJSON(w, http.StatusOK, resp)
}

// logRequest reads a log request's query: task and tail.
func logRequest(r *http.Request) (LogRequest, error) {
	q := r.URL.Query()
	req := LogRequest{ID: r.PathValue("id"), Task: q.Get("task"), Tail: defaultLogTail}
	if req.Task != "" && !tasklog.ValidTask(req.Task) {
		return req, fmt.Errorf("task %q is not a task name (worker-N or ps-N)", req.Task)
	}
	if s := q.Get("tail"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxLogTail {
			return req, fmt.Errorf("tail %q is not a number from 0 to %d", s, maxLogTail)
		}
		req.Tail = n
	}
	return req, nil
}

// apiJobLogs answers the job's log lines as JSON ({"lines": [...], "truncated": bool}),
// at most maxLogLines of them.
func (h *handler) apiJobLogs(w http.ResponseWriter, r *http.Request) {
	ls, ok := h.src.(LogSource)
	if !ok {
		writeJSONError(w, http.StatusNotFound, "task logs are not available from this dashboard's source")
		return
	}
	req, err := logRequest(r)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	lines := []LogLine{}
	errFull := errors.New("full")
	err = ls.JobLogs(ctx, req, func(batch []LogLine) error {
		lines = append(lines, batch...)
		if len(lines) >= maxLogLines {
			return errFull
		}
		return nil
	})
	truncated := errors.Is(err, errFull)
	if err != nil && !truncated {
		writeJSONError(w, h.sourceError(r, "JobLogs", err), fmt.Sprintf("logs of job %s: %v", req.ID, err))
		return
	}
	if len(lines) > maxLogLines {
		lines = lines[:maxLogLines]
	}
	writeJSON(w, http.StatusOK, map[string]any{"lines": lines, "truncated": truncated})
}

// jobLogEvents streams the job's log lines as server-sent events: "lines" events of
// {"lines": [...]} (the tail of each task first, then new lines as the tasks write
// them), then "end" once the job's tasks have written their last lines, or "problem"
// with {"error": "..."} when the source fails.
func (h *handler) jobLogEvents(w http.ResponseWriter, r *http.Request) {
	ls, ok := h.src.(LogSource)
	if !ok {
		writeJSONError(w, http.StatusNotFound, "task logs are not available from this dashboard's source")
		return
	}
	req, err := logRequest(r)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	req.Follow = true
	fl, ok := w.(http.Flusher)
	if !ok {
		writeJSONError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	if _, err := h.pollJob(r.Context(), req.ID); err != nil {
		writeJSONError(w, h.sourceError(r, "GetJob", err), err.Error())
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fl.Flush()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	batches := make(chan []LogLine)
	done := make(chan error, 1)
	go func() {
		done <- ls.JobLogs(ctx, req, func(lines []LogLine) error {
			select {
			case batches <- lines:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	event := func(name string, v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
			return fmt.Errorf("write event: %w", err)
		}
		fl.Flush()
		return nil
	}
	keepAlive := time.NewTicker(keepAliveInterval)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case lines := <-batches:
			for len(lines) > 0 {
				n := min(len(lines), maxLogLinesPerEvent)
				if err := event("lines", map[string]any{"lines": lines[:n]}); err != nil {
					return
				}
				lines = lines[n:]
			}
		case err := <-done:
			if err != nil && r.Context().Err() == nil {
				h.sourceError(r, "JobLogs", err)
				_ = event("problem", map[string]string{"error": err.Error()})
				return
			}
			_ = event("end", map[string]string{})
			return
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
