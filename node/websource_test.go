package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/internal/tfevents"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/web"
	"github.com/cohort-dev/cohort/worker"
)

func put(t *testing.T, b storage.Blob, key string, data []byte) {
	t.Helper()
	if err := b.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

// eventFile is a TensorBoard event file with the scalars of each epoch at step = epoch.
func eventFile(t *testing.T, at time.Time, epochs map[int64]map[string]float64) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := tfevents.NewWriter(&buf, func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	for e := int64(1); e <= 100; e++ {
		for k, v := range epochs[e] {
			if err := w.Scalar(k, e, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWebSourceEpochs(t *testing.T) {
	ctx := context.Background()
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &webSource{store: store}
	if recs, err := s.JobEpochs(ctx, "j1"); err != nil || len(recs) != 0 {
		t.Fatalf("no event files: %v, %v", recs, err)
	}
	prefix := worker.TensorBoardPrefix("j1")
	t1 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	first := eventFile(t, t1, map[int64]map[string]float64{
		1: {"loss": 0.7, "val_auc": 0.6, "global_step": 100},
		2: {"loss": 0.6, "val_auc": 0.7, "global_step": 200},
		3: {"loss": 0.55, "val_auc": 0.72, "global_step": 300},
	})
	put(t, store, prefix+tfevents.FileName(t1, "host.a1"), first)
	// The resumed run's file: epoch 3 again (after a rollback), then 4, cut short in
	// its last record.
	t2 := t1.Add(time.Minute)
	second := eventFile(t, t2, map[int64]map[string]float64{
		3: {"loss": 0.5, "val_auc": 0.74, "global_step": 300},
		4: {"loss": 0.45, "val_auc": 0.75, "global_step": 400},
		5: {"loss": 0.4},
	})
	put(t, store, prefix+tfevents.FileName(t2, "host.a2"), second[:len(second)-3])
	put(t, store, prefix+"notes.txt", []byte("not an event file"))

	recs, err := s.JobEpochs(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%d:%g/%g/%g", r.Epoch, r.Scalars["loss"], r.Scalars["val_auc"], r.Scalars["global_step"]))
	}
	if want := "[1:0.7/0.6/100 2:0.6/0.7/200 3:0.5/0.74/300 4:0.45/0.75/400]"; fmt.Sprint(got) != want {
		t.Errorf("epochs %v, want %s (the resumed run's epoch 3, the cut record left out)", got, want)
	}
	if !recs[0].Time.Equal(t1) || !recs[3].Time.Equal(t2) {
		t.Errorf("times %v, %v", recs[0].Time, recs[3].Time)
	}
	if _, err := s.JobEpochs(ctx, "../x"); !errors.Is(err, web.ErrNotFound) {
		t.Errorf("a job id with a slash: %v", err)
	}
	none := &webSource{}
	if _, err := none.JobEpochs(ctx, "j1"); !errors.Is(err, web.ErrUnavailable) {
		t.Errorf("without storage: %v, want ErrUnavailable", err)
	}
	if _, err := none.JobCheckpoints(ctx, &cohortv1.Job{Id: "j1"}); !errors.Is(err, web.ErrUnavailable) {
		t.Errorf("checkpoints without storage: %v, want ErrUnavailable", err)
	}
}

func TestWebSourceCheckpoints(t *testing.T) {
	ctx := context.Background()
	store, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &webSource{store: store}
	created := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	manifest := func(step int64, epoch int, extra map[string]any) []byte {
		m := map[string]any{"formatVersion": 1, "jobId": "j1", "step": step, "epoch": epoch, "generation": 1,
			"layoutHash": "h", "totalParams": 10, "seed": 42, "createdUnixNano": created.Add(time.Duration(step) * time.Second).UnixNano(),
			"objects": []map[string]any{{"shard": 0, "key": "k0", "size": 1000}, {"shard": 1, "key": "k1", "size": 24}},
			"metrics": map[string]float64{"val_auc": float64(step) / 1000}}
		for k, v := range extra {
			m[k] = v
		}
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, step := range []int64{100, 200, 300, 400} {
		put(t, store, storage.CheckpointPrefix("j1", step)+"shard-0.bin", make([]byte, 1000))
	}
	put(t, store, storage.ManifestKey("j1", 100), manifest(100, 1, nil))
	put(t, store, storage.ManifestKey("j1", 200), manifest(200, 2, map[string]any{"score": 0.81, "scoreMetric": "val_auc", "scoreMode": "max"}))
	put(t, store, storage.ManifestKey("j1", 300), manifest(300, 3, map[string]any{"score": map[string]any{"value": 0.79, "metric": "val_auc", "mode": "max"}}))
	// Step 400 has no manifest: not committed. Step 500's manifest is corrupt.
	put(t, store, storage.ManifestKey("j1", 500), []byte(`{"step": 5`))
	job := &cohortv1.Job{Id: "j1", Checkpoint: "file:///elsewhere/" + storage.ManifestKey("j1", 300)}

	recs, err := s.JobCheckpoints(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		score := "-"
		if r.Score != nil {
			score = fmt.Sprintf("%g %s %s", *r.Score, r.ScoreMetric, r.ScoreMode)
		}
		got = append(got, fmt.Sprintf("%d/%d latest=%v score=%s err=%v", r.Step, r.Epoch, r.Latest, score, r.Error != ""))
	}
	want := []string{"100/1 latest=false score=- err=false", "200/2 latest=false score=0.81 val_auc max err=false",
		"300/3 latest=true score=0.79 val_auc max err=false", "500/0 latest=false score=- err=true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("checkpoints\n%q\nwant\n%q", got, want)
	}
	r := recs[1]
	if r.Objects != 2 || r.SizeBytes < 1024 || r.Metrics["val_auc"] != 0.2 || !r.Created.Equal(created.Add(200*time.Second)) ||
		!strings.HasSuffix(r.URI, storage.ManifestKey("j1", 200)) {
		t.Errorf("step 200: %+v", r)
	}
}

func TestManifestScoreForms(t *testing.T) {
	for _, tc := range []struct {
		json, want string
	}{
		{`{}`, "none"},
		{`{"score": 0.5}`, "0.5  "},
		{`{"score": 0.5, "scoreBy": "val_loss"}`, "0.5 val_loss "},
		{`{"score": 0.5, "scoreBy": {"metric": "val_loss", "mode": "min"}}`, "0.5 val_loss min"},
		{`{"score": {"score": 2, "metric": "val_rmse", "mode": "min"}}`, "2 val_rmse min"},
		{`{"score": "high", "scoreMode": "sideways"}`, "none"},
	} {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal([]byte(tc.json), &fields); err != nil {
			t.Fatal(err)
		}
		score, metric, mode := manifestScore(fields)
		got := "none"
		if score != nil {
			got = fmt.Sprintf("%g %s %s", *score, metric, mode)
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.json, got, tc.want)
		}
	}
}

// logsClient is a JobServiceClient whose JobLogs answers from a list of responses.
type logsClient struct {
	cohortv1.JobServiceClient
	resps []*cohortv1.JobLogsResponse
	err   error
	req   *cohortv1.JobLogsRequest
}

func (c *logsClient) JobLogs(_ context.Context, req *cohortv1.JobLogsRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[cohortv1.JobLogsResponse], error) {
	c.req = req
	if c.err != nil {
		return nil, c.err
	}
	return &logsStream{resps: c.resps}, nil
}

type logsStream struct {
	grpc.ClientStream
	resps []*cohortv1.JobLogsResponse
}

func (s *logsStream) Recv() (*cohortv1.JobLogsResponse, error) {
	if len(s.resps) == 0 {
		return nil, io.EOF
	}
	r := s.resps[0]
	s.resps = s.resps[1:]
	return r, nil
}

func TestWebSourceLogs(t *testing.T) {
	c := &logsClient{resps: []*cohortv1.JobLogsResponse{
		{Lines: []*cohortv1.LogLine{{Task: "worker-0", Text: "a", Generation: 1}}},
		{Lines: []*cohortv1.LogLine{{Task: "ps-0", Text: "b", Generation: 1}, {Task: "worker-0", Text: "c", Generation: 2}}},
	}}
	s := &webSource{jobs: c}
	var got []string
	err := s.JobLogs(context.Background(), web.LogRequest{ID: "j1", Task: "worker-0", Tail: 50, Follow: true}, func(lines []web.LogLine) error {
		for _, l := range lines {
			got = append(got, fmt.Sprintf("%s/%d/%s", l.Task, l.Generation, l.Text))
		}
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[worker-0/1/a ps-0/1/b worker-0/2/c]" {
		t.Errorf("lines %v, %v", got, err)
	}
	if c.req.GetId() != "j1" || c.req.GetTask() != "worker-0" || c.req.GetTail() != 50 || !c.req.GetFollow() {
		t.Errorf("request %v", c.req)
	}
	c.err = status.Error(codes.NotFound, "job j9 not found")
	if err := s.JobLogs(context.Background(), web.LogRequest{ID: "j9"}, nil); !errors.Is(err, web.ErrNotFound) {
		t.Errorf("unknown job: %v, want ErrNotFound", err)
	}
	c.err = status.Error(codes.Internal, "this coordinator has no storage to read task logs from")
	if err := s.JobLogs(context.Background(), web.LogRequest{ID: "j1"}, nil); err == nil || !strings.Contains(err.Error(), "no storage") {
		t.Errorf("no storage: %v", err)
	}
}
