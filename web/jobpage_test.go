package web

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// detailSource is a fakeSource that also serves epochs, checkpoints and task logs.
type detailSource struct {
	*fakeSource
	dmu         sync.Mutex
	epochs      map[string][]EpochRecord
	checkpoints map[string][]CheckpointRecord
	logs        map[string][]LogLine
	// storeErr, when set, is what JobEpochs and JobCheckpoints return.
	storeErr error
}

func newDetailSource() *detailSource {
	return &detailSource{fakeSource: newFake(), epochs: map[string][]EpochRecord{},
		checkpoints: map[string][]CheckpointRecord{}, logs: map[string][]LogLine{}}
}

func (d *detailSource) putEpochs(id string, recs ...EpochRecord) {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	d.epochs[id] = append(d.epochs[id], recs...)
}

func (d *detailSource) putCheckpoints(id string, recs ...CheckpointRecord) {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	d.checkpoints[id] = recs
}

func (d *detailSource) putLogs(id string, lines ...LogLine) {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	d.logs[id] = append(d.logs[id], lines...)
}

func (d *detailSource) JobEpochs(_ context.Context, id string) ([]EpochRecord, error) {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	if d.storeErr != nil {
		return nil, d.storeErr
	}
	return slices.Clone(d.epochs[id]), nil
}

func (d *detailSource) JobCheckpoints(_ context.Context, j *cohortv1.Job) ([]CheckpointRecord, error) {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	if d.storeErr != nil {
		return nil, d.storeErr
	}
	return slices.Clone(d.checkpoints[j.GetId()]), nil
}

// JobLogs sends the lines of req.Task (all tasks when empty), the last req.Tail of
// each task first; with Follow it goes on sending new lines every 10 ms until the job
// is terminal.
func (d *detailSource) JobLogs(ctx context.Context, req LogRequest, emit func([]LogLine) error) error {
	if _, err := d.GetJob(ctx, req.ID); err != nil {
		return err
	}
	sent := 0
	first := true
	for {
		j, err := d.GetJob(ctx, req.ID)
		if err != nil {
			return err
		}
		d.dmu.Lock()
		all := slices.Clone(d.logs[req.ID])
		d.dmu.Unlock()
		var batch []LogLine
		for _, l := range all[sent:] {
			if req.Task == "" || l.Task == req.Task {
				batch = append(batch, l)
			}
		}
		if first && req.Tail > 0 {
			perTask := map[string]int{}
			var kept []LogLine
			for i := len(batch) - 1; i >= 0; i-- {
				if perTask[batch[i].Task] < req.Tail {
					perTask[batch[i].Task]++
					kept = append([]LogLine{batch[i]}, kept...)
				}
			}
			batch = kept
		}
		first = false
		sent = len(all)
		if len(batch) > 0 {
			if err := emit(batch); err != nil {
				return err
			}
		}
		if !req.Follow || isTerminal(j.GetState()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// attritionSpec is the spec of the fixtures' jobs.
const attritionSpec = `apiVersion: cohort.dev/v1
kind: TrainingJob
metadata: {name: attrition-mlp, namespace: hr}
spec:
  priority: 50
  task: binary_classification
  model:
    mlp: {hidden: [64, 32], activation: relu, dropout: 0.1}
  data:
    format: csv
    train: file:///data/attrition.csv
    validation: {fraction: 0.2, seed: 42, stratify: true}
    label: Attrition
    positive: "Yes"
  training:
    epochs: 10
    batchSize: 32
    optimizer: {name: adam, learningRate: 0.001}
    consistency: {mode: bounded, staleness: 2}
    seed: 42
  resources:
    workers: {count: 2, cpu: "1", memory: 1Gi}
    parameterServers: {shards: 2}
  checkpoint: {everySteps: 200, keep: 3}
  export: {formats: [onnx, safetensors]}
`

// specJob is a job record with attritionSpec.
func specJob(id string, state cohortv1.JobState) *cohortv1.Job {
	start := time.Date(2026, 3, 2, 9, 0, 5, 0, time.UTC)
	return &cohortv1.Job{
		Id: id, Namespace: "hr", Name: "attrition-mlp", State: state, SpecYaml: []byte(attritionSpec),
		Priority: 50, Queue: "default", WorkerCount: 2, ShardCount: 2,
		WorkerResources:    &cohortv1.Resources{CpuMillis: 1000, MemoryBytes: 1 << 30},
		ShardResources:     &cohortv1.Resources{CpuMillis: 500, MemoryBytes: 512 << 20},
		SubmitTimeUnixNano: start.Add(-3 * time.Second).UnixNano(), StartTimeUnixNano: start.UnixNano(),
		Metrics: map[string]float64{}, Generation: 1, ModifyIndex: 10,
	}
}

// attritionEpoch is a plausible epoch record of the attrition job: 100 steps an epoch.
func attritionEpoch(e int) EpochRecord {
	f := float64(e)
	return EpochRecord{
		Epoch: int32(e), Time: time.Date(2026, 3, 2, 9, 0, 5+4*e, 0, time.UTC),
		Scalars: map[string]float64{
			"loss": 0.62*math.Exp(-f/3.5) + 0.28, "val_loss": 0.6*math.Exp(-f/4) + 0.33 + 0.004*f,
			"val_auc": 0.84 - 0.2*math.Exp(-f/2.5) - 0.002*math.Max(0, f-7), "val_accuracy": 0.87 - 0.08*math.Exp(-f/3),
			"samples_per_second": 5200 + 30*f, "learning_rate": 0.001, "global_step": 100 * f,
		},
	}
}

func TestJobsListFiltersAndSorts(t *testing.T) {
	f := newFake()
	base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	add := func(id, ns, name string, state cohortv1.JobState, submitMin, runMin int) {
		j := &cohortv1.Job{Id: id, Namespace: ns, Name: name, State: state,
			SubmitTimeUnixNano: base.Add(time.Duration(submitMin) * time.Minute).UnixNano()}
		if runMin > 0 {
			j.StartTimeUnixNano = j.SubmitTimeUnixNano + int64(time.Second)
			j.EndTimeUnixNano = j.StartTimeUnixNano + int64(time.Duration(runMin)*time.Minute)
		}
		f.put(j)
	}
	add("a", "hr", "zeta", cohortv1.JobState_JOB_STATE_SUCCEEDED, 1, 5)
	add("b", "hr", "alpha", cohortv1.JobState_JOB_STATE_FAILED, 2, 1)
	add("c", "ml", "mid", cohortv1.JobState_JOB_STATE_SUCCEEDED, 3, 30)
	add("d", "ml", "beta", cohortv1.JobState_JOB_STATE_PENDING, 4, 0)
	srv := newServer(t, f)

	ids := func(query string) []string {
		t.Helper()
		code, _, body := get(t, srv.URL+"/api/jobs"+query)
		if code != http.StatusOK {
			t.Fatalf("GET /api/jobs%s: %d %s", query, code, body)
		}
		var resp struct {
			Jobs       []JobView `json:"jobs"`
			Namespaces []string  `json:"namespaces"`
		}
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(resp.Namespaces, []string{"hr", "ml"}) {
			t.Errorf("namespaces %q", resp.Namespaces)
		}
		var out []string
		for _, j := range resp.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	for _, tc := range []struct{ query, want string }{
		{"", "[d c b a]"},
		{"?sort=submitted&order=asc", "[a b c d]"},
		{"?sort=name", "[b d c a]"},
		{"?sort=name&order=desc", "[a c d b]"},
		{"?sort=state", "[d c a b]"}, // pending, succeeded (newest first), failed
		{"?sort=duration", "[c a b d]"},
		{"?state=succeeded", "[c a]"},
		{"?namespace=hr", "[b a]"},
		{"?state=succeeded&namespace=ml", "[c]"},
		{"?state=cancelled", "[]"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			if got := fmt.Sprint(ids(tc.query)); got != tc.want {
				t.Errorf("jobs %s, want %s", got, tc.want)
			}
		})
	}
	for _, q := range []string{"?state=done", "?sort=size", "?order=up"} {
		if code, _, body := get(t, srv.URL+"/api/jobs"+q); code != http.StatusBadRequest || !strings.Contains(body, "error") {
			t.Errorf("GET /api/jobs%s: %d %s, want 400", q, code, body)
		}
		if code, _, _ := get(t, srv.URL+"/jobs"+q); code != http.StatusBadRequest {
			t.Errorf("GET /jobs%s: %d, want 400", q, code)
		}
	}

	_, _, body := get(t, srv.URL+"/jobs?state=succeeded&sort=name")
	for _, want := range []string{`<option value="succeeded" selected>succeeded (2)</option>`, "30m 00s", "5m 00s",
		`href="/jobs?order=desc&amp;sort=name&amp;state=succeeded"`, "2 of 4 jobs", "2026-03-02 09:03:00 UTC"} {
		if !strings.Contains(body, want) {
			t.Errorf("the jobs page lacks %q", want)
		}
	}
	if strings.Contains(body, `href="/jobs/b"`) {
		t.Error("the jobs page filtered by state shows a failed job")
	}
	// A pending job has no progress: no zeros in its row.
	_, _, body = get(t, srv.URL+"/jobs?state=pending")
	if strings.Contains(body, "0.0000") || strings.Contains(body, "epoch 0/0") {
		t.Errorf("a pending job's row shows zero progress:\n%s", body)
	}
}

func TestEpochRowsMergeRecordsAndHistory(t *testing.T) {
	recs := []EpochRecord{attritionEpoch(1), attritionEpoch(3)}
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	pts := []Point{
		{Seq: 1, Time: t0, Epoch: 1, Step: 100, Loss: 9, Metrics: map[string]Number{"val_auc": 9}},
		{Seq: 2, Time: t0.Add(time.Second), Epoch: 2, Step: 200, Loss: 0.5, Metrics: map[string]Number{"val_auc": 0.7}},
		{Seq: 3, Time: t0.Add(2 * time.Second), Epoch: 2, Step: 250, Loss: 0.45, Metrics: map[string]Number{"val_auc": 0.7}}, // within epoch 3
	}
	rows := epochRows(recs, pts)
	if len(rows) != 3 {
		t.Fatalf("%d rows, want epochs 1, 2 and 3", len(rows))
	}
	if rows[0].Source != "tensorboard" || float64(rows[0].Metrics["val_auc"]) == 9 || rows[0].Step != 100 {
		t.Errorf("epoch 1 = %+v, want the record's", rows[0])
	}
	if rows[1].Source != "dashboard" || rows[1].Step != 200 || float64(rows[1].Loss) != 0.5 || !math.IsNaN(float64(rows[1].LearningRate)) {
		t.Errorf("epoch 2 = %+v, want the first point of epoch 2", rows[1])
	}
	if cols := metricColumns(rows[0].Metrics, rows[1].Metrics); !slices.Equal(cols, []string{"val_loss", "val_accuracy", "val_auc"}) {
		t.Errorf("metric columns %q", cols)
	}
}

func TestCheckpointRowsMarkBestAndLatest(t *testing.T) {
	score := func(f float64) *float64 { return &f }
	recs := []CheckpointRecord{
		{Step: 100, Score: score(0.3), ScoreMetric: "val_loss"},
		{Step: 200, Score: score(0.25)},
		{Step: 300, Score: score(0.28), Latest: true},
		{Step: 400, Error: "decode manifest: unexpected EOF", Score: score(0.1)},
	}
	resp := checkpointRows(recs, SpecView{}, 200)
	var marks []string
	for _, c := range resp.Checkpoints {
		marks = append(marks, fmt.Sprintf("%d:%v/%v/%v", c.Step, c.Latest, c.Best, c.Exported))
	}
	if want := "[100:false/false/false 200:false/true/true 300:true/false/false 400:false/false/false]"; fmt.Sprint(marks) != want {
		t.Errorf("marks (latest/best/exported) %v, want %s", marks, want)
	}
	if resp.ScoreMetric != "val_loss" || resp.ScoreMode != "min" {
		t.Errorf("score %s %s, want val_loss min (from the metric)", resp.ScoreMetric, resp.ScoreMode)
	}
	// The spec's direction wins over the metric's name; the manifest's over the spec's.
	resp = checkpointRows([]CheckpointRecord{{Step: 1, Score: score(1)}, {Step: 2, Score: score(2)}}, SpecView{ScoreMetric: "val_auc"}, 0)
	if !resp.Checkpoints[1].Best || resp.ScoreMode != "max" {
		t.Errorf("val_auc: best %+v mode %s", resp.Checkpoints, resp.ScoreMode)
	}
	resp = checkpointRows([]CheckpointRecord{{Step: 1, Score: score(1), ScoreMode: "min"}, {Step: 2, Score: score(2)}}, SpecView{ScoreMode: "max"}, 0)
	if !resp.Checkpoints[0].Best {
		t.Errorf("manifest mode min: best %+v", resp.Checkpoints)
	}
	// Without scores nothing is BEST and no score column is named.
	resp = checkpointRows([]CheckpointRecord{{Step: 1, Latest: true}}, SpecView{ScoreMetric: "val_auc"}, 0)
	if resp.Checkpoints[0].Best || resp.ScoreMetric != "" {
		t.Errorf("no scores: %+v, metric %q", resp.Checkpoints, resp.ScoreMetric)
	}
}

func TestSpecView(t *testing.T) {
	j := specJob("s1", cohortv1.JobState_JOB_STATE_RUNNING)
	v := specView(j)
	if v.Error != "" {
		t.Fatalf("spec error: %s", v.Error)
	}
	var got []string
	for _, r := range v.Rows {
		got = append(got, r.Name+"="+r.Value)
	}
	want := []string{"Task=binary classification", "Model=MLP, hidden 64-32, relu, dropout 0.1", "Optimizer=adam (β1 0.9, β2 0.999, ε 1e-08)",
		"Learning rate=0.001", "Batch size=32 per worker", "Epochs=10", "Consistency=bounded, staleness 2", "Seed=42",
		"Workers=2 × 1 CPU, 1.0 GiB", "Parameter servers=2 shards × 0.50 CPU, 512.0 MiB", "Namespace / queue=hr / default, priority 50",
		"Format=csv", "Train=file:///data/attrition.csv", "Validation=20% of train, seed 42, stratified",
		"Label=Attrition (positive: Yes)", "Checkpoints=every 200 steps, keep 3", "Export=onnx, safetensors"}
	if !slices.Equal(got, want) {
		t.Errorf("rows\n%q\nwant\n%q", got, want)
	}

	// Fields the spec types may not have yet are read from the YAML.
	j.SpecYaml = []byte(strings.Replace(attritionSpec, "checkpoint: {everySteps: 200, keep: 3}",
		"checkpoint: {everySteps: 200, keep: 3, scoreBy: {metric: val_auc, mode: max}, keepBest: 2}", 1))
	if v := specView(j); v.ScoreMetric != "val_auc" || v.ScoreMode != "max" {
		t.Errorf("scoreBy %q %q (error %q)", v.ScoreMetric, v.ScoreMode, v.Error)
	}

	// A spec that does not parse keeps its YAML and the job record's resources.
	bad := proto.Clone(j).(*cohortv1.Job)
	bad.SpecYaml = []byte("spec: [")
	v = specView(bad)
	if v.Error == "" || v.YAML != "spec: [" || len(v.Rows) == 0 || v.Rows[0].Name != "Workers" {
		t.Errorf("unparsable spec: %+v", v)
	}
}

func TestJobDetailAPIs(t *testing.T) {
	d := newDetailSource()
	j := specJob("j1", cohortv1.JobState_JOB_STATE_RUNNING)
	j.Progress = &cohortv1.JobProgress{Epoch: 2, TotalEpochs: 10, Step: 200, TotalSteps: 1000, Loss: 0.5}
	d.put(j)
	d.putEpochs("j1", attritionEpoch(1), attritionEpoch(2))
	d.putLogs("j1", LogLine{Task: "worker-0", Text: `{"msg":"a"}`}, LogLine{Task: "ps-0", Text: "b"}, LogLine{Task: "worker-0", Text: "c"})
	srv := newServer(t, d)

	var ep epochsResponse
	_, _, body := get(t, srv.URL+"/api/jobs/j1/epochs")
	if err := json.Unmarshal([]byte(body), &ep); err != nil {
		t.Fatal(err)
	}
	if len(ep.Epochs) != 2 || ep.Epochs[1].Step != 200 || ep.Note != "" || !slices.Contains(ep.Metrics, "val_auc") {
		t.Errorf("epochs = %s", body)
	}

	// Without storage, the page says so and shows what the dashboard saw.
	d.dmu.Lock()
	d.storeErr = fmt.Errorf("this coordinator has no storage: %w", ErrUnavailable)
	d.dmu.Unlock()
	_, _, body = get(t, srv.URL+"/api/jobs/j1/epochs")
	if err := json.Unmarshal([]byte(body), &ep); err != nil {
		t.Fatal(err)
	}
	if len(ep.Epochs) != 1 || ep.Epochs[0].Source != "dashboard" || !strings.Contains(ep.Note, "no storage") {
		t.Errorf("epochs without storage = %s", body)
	}
	_, _, body = get(t, srv.URL+"/api/jobs/j1/checkpoints")
	if !strings.Contains(body, `"checkpoints":[]`) || !strings.Contains(body, "no storage") {
		t.Errorf("checkpoints without storage = %s", body)
	}

	_, _, body = get(t, srv.URL+"/api/jobs/j1/logs?task=worker-0")
	var logs struct {
		Lines []LogLine `json:"lines"`
	}
	if err := json.Unmarshal([]byte(body), &logs); err != nil {
		t.Fatal(err)
	}
	if len(logs.Lines) != 2 || logs.Lines[1].Text != "c" {
		t.Errorf("worker-0 logs = %s", body)
	}
	for _, q := range []string{"?task=chief", "?tail=-1", "?tail=x"} {
		if code, _, _ := get(t, srv.URL+"/api/jobs/j1/logs"+q); code != http.StatusBadRequest {
			t.Errorf("GET logs%s: %d, want 400", q, code)
		}
	}
	if code, _, _ := get(t, srv.URL+"/api/jobs/nope/logs/events"); code != http.StatusNotFound {
		t.Errorf("log events of an unknown job: %d, want 404", code)
	}
	plain := newServer(t, struct{ Source }{d})
	if code, _, _ := get(t, plain.URL+"/api/jobs/j1/logs"); code != http.StatusNotFound {
		t.Errorf("logs from a Source without logs: %d, want 404", code)
	}

	// The event stream sends the tail, then lines as they come, then ends with the job.
	resp, err := http.Get(srv.URL + "/api/jobs/j1/logs/events?tail=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ch := readEvents(t, resp.Body)
	next := func() sseEvent {
		t.Helper()
		select {
		case ev := <-ch:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
		}
		return sseEvent{}
	}
	if ev := next(); ev.name != "lines" || !strings.Contains(ev.data, `"text":"b"`) || !strings.Contains(ev.data, `"text":"c"`) || strings.Contains(ev.data, `\"a\"`) {
		t.Errorf("first event %s %s, want the last line of each task", ev.name, ev.data)
	}
	d.putLogs("j1", LogLine{Task: "worker-1", Text: "d"})
	if ev := next(); ev.name != "lines" || !strings.Contains(ev.data, `"text":"d"`) {
		t.Errorf("second event %s %s, want the new line", ev.name, ev.data)
	}
	done := proto.Clone(j).(*cohortv1.Job)
	done.State = cohortv1.JobState_JOB_STATE_SUCCEEDED
	d.put(done)
	if ev := next(); ev.name != "end" {
		t.Errorf("event %s %s after the job ended, want end", ev.name, ev.data)
	}
}

func TestFailedJobViewHasNoZeros(t *testing.T) {
	j := specJob("f1", cohortv1.JobState_JOB_STATE_FAILED)
	j.StatusMessage = `worker-0: data: label "attrition" not found (did you mean "Attrition"?)`
	j.EndTimeUnixNano = j.StartTimeUnixNano + int64(2*time.Second)
	v := jobView(j, time.Now())
	if v.HasProgress || v.Duration != "2s" || !strings.Contains(v.ProgressNote, "failed before its first progress report") ||
		v.FailedWhen != "before its first progress report, after 2s" {
		t.Errorf("failed job view: %+v", v)
	}
	j.Progress = &cohortv1.JobProgress{Epoch: 2, TotalEpochs: 10, Step: 180, TotalSteps: 900, Loss: 0.4}
	if v := jobView(j, time.Now()); v.FailedWhen != "at epoch 3 of 10 (step 180), after 2s" || v.ProgressNote != "" {
		t.Errorf("failed job with progress: %q %q", v.FailedWhen, v.ProgressNote)
	}

	d := newDetailSource()
	j.Progress = nil
	d.put(j)
	srv := newServer(t, d)
	_, _, body := get(t, srv.URL+"/jobs/f1")
	for _, bad := range []string{"0.0000", "waiting for the first epoch"} {
		if strings.Contains(body, bad) {
			t.Errorf("the failed job's page holds %q", bad)
		}
	}
	for _, want := range []string{"label &#34;attrition&#34; not found", "before its first progress report", `id="spec-yaml"`, "Learning rate"} {
		if !strings.Contains(body, want) {
			t.Errorf("the failed job's page lacks %q", want)
		}
	}
}

func TestNumberStringKeepsSmallValues(t *testing.T) {
	for v, want := range map[float64]string{0: "0.0000", 0.31559: "0.3156", 5.2613e-6: "5.261e-06", -2e-9: "-2.000e-09", math.NaN(): "—"} {
		if got := Number(v).String(); got != want {
			t.Errorf("Number(%g) = %q, want %q", v, got, want)
		}
	}
}
