package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// fakeSource is an in-memory Source and ReportSource.
type fakeSource struct {
	mu      sync.Mutex
	jobs    map[string]*cohortv1.Job
	reports map[string][]byte
	nodes   []*cohortv1.Node
	peers   []*cohortv1.Peer
	// listed, when set, receives a value as each ListJobs call starts (before it reads
	// the jobs), unless ctx ends.
	listed chan struct{}
	ctx    context.Context
}

func newFake() *fakeSource {
	return &fakeSource{jobs: map[string]*cohortv1.Job{}, reports: map[string][]byte{}}
}

func (f *fakeSource) putReport(id string, report []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports[id] = report
}

func (f *fakeSource) JobReport(_ context.Context, id string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.jobs[id]; !ok {
		return nil, fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	r, ok := f.reports[id]
	if !ok {
		return nil, fmt.Errorf("job %q has no report: %w", id, ErrNotFound)
	}
	return r, nil
}

func (f *fakeSource) put(j *cohortv1.Job) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs[j.GetId()] = proto.Clone(j).(*cohortv1.Job)
}

func (f *fakeSource) ListJobs(context.Context) ([]*cohortv1.Job, error) {
	if f.listed != nil {
		select {
		case f.listed <- struct{}{}:
		case <-f.ctx.Done():
			return nil, f.ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*cohortv1.Job
	for _, j := range f.jobs {
		out = append(out, proto.Clone(j).(*cohortv1.Job))
	}
	return out, nil
}

func (f *fakeSource) GetJob(_ context.Context, id string) (*cohortv1.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return nil, fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	return proto.Clone(j).(*cohortv1.Job), nil
}

func (f *fakeSource) ListNodes(context.Context) ([]*cohortv1.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes, nil
}

func (f *fakeSource) Peers(context.Context) ([]*cohortv1.Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers, nil
}

const evil = "<script>alert(1)</script>"

func runningJob(id string, epoch int32, loss float64) *cohortv1.Job {
	return &cohortv1.Job{
		Id: id, Namespace: "default", Name: "mlp", State: cohortv1.JobState_JOB_STATE_RUNNING,
		SubmitTimeUnixNano: time.Now().UnixNano(), ModifyIndex: uint64(10 + epoch),
		Progress: &cohortv1.JobProgress{Epoch: epoch, TotalEpochs: 10, Step: int64(epoch) * 100, TotalSteps: 1000, Loss: loss},
		Metrics:  map[string]float64{"val_loss": loss + 0.1, "val_accuracy": 0.5},
	}
}

// finishedJob is a job that succeeded after 10 epochs.
func finishedJob(id, name string) *cohortv1.Job {
	j := runningJob(id, 10, 0.3)
	j.Name, j.State, j.ModifyIndex = name, cohortv1.JobState_JOB_STATE_SUCCEEDED, 100
	j.Checkpoint = "file:///ckpt/" + id
	return j
}

func newServer(t *testing.T, src Source) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(Config{Source: src, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), PollInterval: 10 * time.Millisecond}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func TestUserStringsAreEscaped(t *testing.T) {
	f := newFake()
	j := runningJob("j1", 1, 0.5)
	j.State = cohortv1.JobState_JOB_STATE_FAILED // terminal: its event stream ends after one event
	j.Name, j.Namespace, j.StatusMessage = evil, evil, evil
	j.PendingReasons = []string{evil}
	j.Exports = []string{evil}
	j.Checkpoint = evil
	j.Metrics[evil] = 1
	f.put(j)
	f.nodes = []*cohortv1.Node{{Id: "n1", Name: evil, Status: cohortv1.NodeStatus_NODE_STATUS_READY}}
	f.peers = []*cohortv1.Peer{{Id: evil, Address: evil, Leader: true, Voter: true}}
	srv := newServer(t, f)

	for _, path := range []string{"/", "/jobs", "/jobs/j1"} {
		code, hd, body := get(t, srv.URL+path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		if !strings.HasPrefix(hd.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: content type %q", path, hd.Get("Content-Type"))
		}
		if strings.Contains(body, evil) {
			t.Errorf("GET %s: the job name comes out unescaped:\n%s", path, body)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("GET %s: the escaped name is missing:\n%s", path, body)
		}
		if !strings.Contains(hd.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", path, hd.Get("Content-Security-Policy"))
		}
	}
	for _, path := range []string{"/api/jobs", "/api/jobs/j1", "/api/nodes", "/api/peers", "/api/jobs/j1/events"} {
		code, _, body := get(t, srv.URL+path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		if strings.Contains(body, "<") || strings.Contains(body, ">") {
			t.Errorf("GET %s: JSON holds a raw angle bracket:\n%s", path, body)
		}
		if !strings.Contains(body, `\u003cscript\u003ealert(1)\u003c/script\u003e`) {
			t.Errorf("GET %s: escaped name missing:\n%s", path, body)
		}
	}
	// The escaping is JSON's: a client decodes the original string.
	_, _, body := get(t, srv.URL+"/api/jobs")
	var resp struct {
		Jobs []JobView `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Jobs) != 1 || resp.Jobs[0].Name != evil || resp.Jobs[0].PendingReasons[0] != evil {
		t.Errorf("decoded jobs = %+v", resp.Jobs)
	}
}

func TestNotFound(t *testing.T) {
	srv := newServer(t, newFake())
	for path, want := range map[string]string{
		"/jobs/nope": "text/html", "/api/jobs/nope": "application/json",
		"/api/jobs/nope/events": "application/json", "/no/such/page": "text/html", "/api/nothing": "application/json",
	} {
		code, hd, body := get(t, srv.URL+path)
		if code != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404: %s", path, code, body)
		}
		if !strings.HasPrefix(hd.Get("Content-Type"), want) {
			t.Errorf("GET %s: content type %q, want %s", path, hd.Get("Content-Type"), want)
		}
	}
}

func TestOverviewAndAPIs(t *testing.T) {
	f := newFake()
	hb := time.Now().Add(-3 * time.Second).UnixNano()
	f.nodes = []*cohortv1.Node{
		{Id: "w1", Name: "worker-1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER}, Status: cohortv1.NodeStatus_NODE_STATUS_READY,
			Capacity: &cohortv1.Resources{CpuMillis: 4000, MemoryBytes: 8 << 30, Gpus: 2, GpuModel: "NVIDIA H200"}, LastHeartbeatUnixNano: hb},
		{Id: "p1", Name: "ps-1", Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_PARAMSERVER}, Status: cohortv1.NodeStatus_NODE_STATUS_DOWN},
	}
	f.peers = []*cohortv1.Peer{{Id: "c1", Address: "10.0.0.1:7000", Voter: true}, {Id: "c2", Address: "10.0.0.2:7000", Leader: true, Voter: true}}
	pending := &cohortv1.Job{Id: "j2", Name: "big", State: cohortv1.JobState_JOB_STATE_PENDING, PendingReasons: []string{"needs 8 GPUs, 2 free"}}
	f.put(pending)
	f.put(runningJob("j1", 3, 0.25))
	srv := newServer(t, f)

	_, _, body := get(t, srv.URL+"/")
	for _, want := range []string{"worker-1", "ps-1", "NVIDIA H200", "down", "3s ago", "never", "<td>c2</td>", "<strong>leader</strong>"} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q:\n%s", want, body)
		}
	}
	_, _, body = get(t, srv.URL+"/jobs")
	for _, want := range []string{"needs 8 GPUs, 2 free", `href="/jobs/j1"`, "epoch 3/10 (30%)", "0.2500"} {
		if !strings.Contains(body, want) {
			t.Errorf("jobs page lacks %q:\n%s", want, body)
		}
	}
	var jobs struct {
		Jobs   []JobView      `json:"jobs"`
		Counts map[string]int `json:"counts"`
	}
	_, _, body = get(t, srv.URL+"/api/jobs")
	if err := json.Unmarshal([]byte(body), &jobs); err != nil {
		t.Fatal(err)
	}
	if jobs.Counts["pending"] != 1 || jobs.Counts["running"] != 1 || jobs.Counts["failed"] != 0 {
		t.Errorf("counts = %v", jobs.Counts)
	}
	var peers struct {
		Peers []PeerView `json:"peers"`
	}
	_, _, body = get(t, srv.URL+"/api/peers")
	if err := json.Unmarshal([]byte(body), &peers); err != nil {
		t.Fatal(err)
	}
	if len(peers.Peers) != 2 || !peers.Peers[1].Leader || peers.Peers[1].ID != "c2" {
		t.Errorf("peers = %+v", peers.Peers)
	}
	code, hd, body := get(t, srv.URL+"/static/app.js")
	if code != http.StatusOK || !strings.Contains(body, "EventSource") || !strings.Contains(hd.Get("Content-Type"), "javascript") {
		t.Errorf("app.js: %d %q", code, hd.Get("Content-Type"))
	}
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name string
	data string
}

func readEvents(t *testing.T, body io.Reader) <-chan sseEvent {
	t.Helper()
	ch := make(chan sseEvent)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return ch
}

func nextEvent(t *testing.T, ch <-chan sseEvent) (string, jobEvent) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event stream ended early")
		}
		var je jobEvent
		if ev.name == "job" {
			if err := json.Unmarshal([]byte(ev.data), &je); err != nil {
				t.Fatalf("event %q: %v", ev.data, err)
			}
		}
		return ev.name, je
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return "", jobEvent{}
}

func TestEventsStreamProgressWithHistory(t *testing.T) {
	f := newFake()
	f.put(runningJob("j1", 1, 0.9))
	srv := newServer(t, f)
	// The dashboard sees epochs 1 and 2 before the page opens.
	get(t, srv.URL+"/api/jobs/j1")
	f.put(runningJob("j1", 2, 0.7))
	get(t, srv.URL+"/api/jobs")

	resp, err := http.Get(srv.URL + "/api/jobs/j1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	ch := readEvents(t, resp.Body)
	name, ev := nextEvent(t, ch)
	if name != "job" || len(ev.Points) != 2 || ev.Points[0].Epoch != 1 || ev.Points[1].Epoch != 2 || float64(ev.Points[1].Loss) != 0.7 {
		t.Fatalf("first event %s = %+v, want the history of epochs 1 and 2", name, ev.Points)
	}
	if got := float64(ev.Points[1].Metrics["val_loss"]); math.Abs(got-0.8) > 1e-9 {
		t.Errorf("point metrics = %v", ev.Points[1].Metrics)
	}

	f.put(runningJob("j1", 3, 0.5))
	name, ev = nextEvent(t, ch)
	if name != "job" || len(ev.Points) != 1 || ev.Points[0].Epoch != 3 || ev.Points[0].Seq != 3 || ev.Job.Progress.Epoch != 3 {
		t.Fatalf("second event %s = %+v, want only epoch 3", name, ev)
	}

	done := runningJob("j1", 3, 0.5)
	done.State, done.ModifyIndex = cohortv1.JobState_JOB_STATE_SUCCEEDED, 99
	done.Checkpoint = "file:///ckpt/3"
	f.put(done)
	name, ev = nextEvent(t, ch)
	if name != "job" || ev.Job.State != "succeeded" || !ev.Job.Terminal || len(ev.Points) != 0 || ev.Job.Checkpoint != "file:///ckpt/3" {
		t.Fatalf("third event %s = %+v, want the terminal state without new points", name, ev)
	}
	if name, _ = nextEvent(t, ch); name != "end" {
		t.Fatalf("event %q after a terminal state, want end", name)
	}
	if _, ok := <-ch; ok {
		t.Error("the stream goes on after the end event")
	}
}

func TestHistoryBounds(t *testing.T) {
	h := newHistory(2, 3)
	now := time.Now()
	for e := int32(1); e <= 5; e++ {
		h.record(runningJob("a", e, 1), now)
		h.record(runningJob("a", e, 1), now) // unchanged progress adds nothing
	}
	pts := h.since("a", 0)
	if len(pts) != 3 || pts[0].Epoch != 3 || pts[2].Epoch != 5 || pts[2].Seq != 5 {
		t.Fatalf("points = %+v, want epochs 3..5", pts)
	}
	if got := h.since("a", 4); len(got) != 1 || got[0].Epoch != 5 {
		t.Errorf("since(4) = %+v", got)
	}
	h.record(runningJob("b", 1, 1), now)
	h.record(runningJob("a", 6, 1), now) // a is now more recent than b
	h.record(runningJob("c", 1, 1), now) // evicts b
	if len(h.since("b", 0)) != 0 || len(h.since("a", 0)) != 3 || len(h.since("c", 0)) != 1 {
		t.Errorf("eviction kept a=%d b=%d c=%d points", len(h.since("a", 0)), len(h.since("b", 0)), len(h.since("c", 0)))
	}
	h.record(&cohortv1.Job{Id: "d", Progress: &cohortv1.JobProgress{}}, now)
	if len(h.since("d", 0)) != 0 {
		t.Error("a job without progress recorded a point")
	}
}

func TestRecorderKeepsEpochsNobodyWatched(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := newFake()
	f.listed, f.ctx = make(chan struct{}), ctx
	srv := httptest.NewServer(New(Config{
		Source: f, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Context: ctx, RecordInterval: time.Millisecond,
	}))
	t.Cleanup(srv.Close)
	waitRecorded := func() {
		t.Helper()
		// The first call to start after this point reads the new state; the recorder's
		// next call starts only after the first one recorded it.
		for range 2 {
			select {
			case <-f.listed:
			case <-time.After(5 * time.Second):
				t.Fatal("the recorder does not poll ListJobs")
			}
		}
	}
	f.put(runningJob("j1", 1, 0.9))
	waitRecorded()
	f.put(runningJob("j1", 2, 0.8))
	waitRecorded()
	f.put(runningJob("j1", 3, 0.7))

	_, _, body := get(t, srv.URL+"/api/jobs/j1")
	var ev jobEvent
	if err := json.Unmarshal([]byte(body), &ev); err != nil {
		t.Fatal(err)
	}
	var epochs []int32
	for _, p := range ev.Points {
		epochs = append(epochs, p.Epoch)
	}
	if fmt.Sprint(epochs) != "[1 2 3]" {
		t.Errorf("curve epochs = %v, want [1 2 3] (1 and 2 recorded with no page open)", epochs)
	}
}

func TestJobReport(t *testing.T) {
	fixture, err := os.ReadFile("testdata/report_binary.json")
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	f.put(finishedJob("done", "attrition-mlp"))
	f.putReport("done", fixture)
	f.put(finishedJob("noreport", "mlp"))
	f.put(finishedJob("broken", "mlp"))
	f.putReport("broken", []byte(`{"format_version": 1, "metrics": {`))
	f.put(finishedJob("huge", "mlp"))
	f.putReport("huge", []byte(`"`+strings.Repeat("x", maxReportBytes)+`"`))
	srv := newServer(t, f)
	plain := newServer(t, struct{ Source }{f}) // a Source that cannot read reports

	for _, tc := range []struct {
		name, url string
		code      int
	}{
		{"found", srv.URL + "/api/jobs/done/report", http.StatusOK},
		{"job without a report", srv.URL + "/api/jobs/noreport/report", http.StatusNotFound},
		{"no such job", srv.URL + "/api/jobs/nope/report", http.StatusNotFound},
		{"invalid JSON", srv.URL + "/api/jobs/broken/report", http.StatusBadGateway},
		{"too large", srv.URL + "/api/jobs/huge/report", http.StatusBadGateway},
		{"not a ReportSource", plain.URL + "/api/jobs/done/report", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hd, body := get(t, tc.url)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %.200s", code, tc.code, body)
			}
			if ct := hd.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("content type %q", ct)
			}
			if !json.Valid([]byte(body)) {
				t.Fatalf("body is not JSON: %.200s", body)
			}
			if code != http.StatusOK {
				var e struct{ Error string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
					t.Errorf("error body %.200s, want {\"error\": ...}", body)
				}
				return
			}
			// The report comes through as the Source stores it, up to JSON's own
			// escaping of <, > and &, which decodes to the same strings.
			var got, want any
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(fixture, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded report differs from the fixture:\n%s", body)
			}
			if strings.ContainsAny(body, "<>") {
				t.Errorf("report JSON holds a raw angle bracket")
			}
			if !strings.Contains(body, `\u003cimg src=x onerror=alert(1)\u003e`) {
				t.Errorf("the hostile category is not in the report")
			}
		})
	}
}
