package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cohort-dev/cohort/worker/data"
)

// withBatching replaces the fixture's server by one with the batching configuration
// and one executor, on a fresh registry.
func withBatching(t *testing.T, f *fixture, b BatchingConfig) {
	t.Helper()
	cfg := f.srv.cfg
	f.srv.Close()
	cfg.Batching = b
	f.reg = prometheus.NewRegistry()
	cfg.Registerer = f.reg
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv // closed by newFixture's cleanup
}

// oneRow is row r of the table as one raw tensor per feature column.
func oneRow(tbl *data.Table, pre *data.Preprocessor, r int) []input {
	var inputs []input
	for _, c := range pre.Columns {
		v := tbl.Rows[r][tbl.ColumnIndex(c.Name)]
		if c.Kind == data.KindCategorical {
			inputs = append(inputs, input{c.Name, []int{1}, TypeBytes, []string{v}})
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		inputs = append(inputs, input{c.Name, []int{1}, TypeFP64, []float64{x}})
	}
	return inputs
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

// post sends one infer request from any goroutine.
func (f *fixture) post(req any) answer {
	raw, err := json.Marshal(req)
	if err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/models/test-model/infer", bytes.NewReader(raw)))
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}
}

// hold takes every run slot of the model's engine, so that a batch taken by the
// executor blocks in Predict until release is called.
func (f *fixture) hold() (release func()) {
	e := f.srv.cfg.Model.eng
	for range cap(e.slots) {
		e.slots <- struct{}{}
	}
	return func() {
		for range cap(e.slots) {
			<-e.slots
		}
	}
}

// waitQueued waits until the batching queue holds n requests (the executor is held).
func (f *fixture) waitQueued(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(f.srv.batch.queue) != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d requests, want %d", len(f.srv.batch.queue), n)
		}
		time.Sleep(time.Millisecond) // polling a condition, not standing in for it
	}
}

// waitTaken waits until the executor has taken a batch and is blocked in Predict.
func (f *fixture) waitTaken(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for histCount(t, f.srv.batch.size) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the executor took no batch")
		}
		time.Sleep(time.Millisecond)
	}
}

func histCount(t *testing.T, h prometheus.Histogram) (count uint64) {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func histSum(t *testing.T, h prometheus.Histogram) float64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleSum()
}

// probabilityOf decodes an answer's probability output.
func probabilityOf(t *testing.T, a answer) []float64 {
	t.Helper()
	if a.code != 200 {
		t.Fatalf("answer %d: %s", a.code, a.body)
	}
	var resp struct {
		Outputs []struct {
			Name string          `json:"name"`
			Data json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	for _, o := range resp.Outputs {
		if o.Name == OutputProbability {
			var v []float64
			if err := json.Unmarshal(o.Data, &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no probability in %s", a.body)
	return nil
}

// TestBatchingAnswersEachRequest queues concurrent requests of 1 to 3 rows while the
// executor is busy, so that they run as one batch, and checks that each gets its own
// rows' answers (equal to the same request run alone), that requests with a bad row
// or a bad output name fail alone with a 400 naming the input, and the batch metrics.
func TestBatchingAnswersEachRequest(t *testing.T) {
	f, tbl, pre := tabularFixture(t, "Attrition", data.TaskBinary)
	withBatching(t, f, BatchingConfig{Enabled: true, Window: time.Millisecond, MaxRows: 64, QueueSize: 64, Executors: 1, RetryAfter: time.Second})
	m := f.srv.cfg.Model

	// Requests: k rows each, rows taken from different places of the table.
	type request struct {
		rows []int
		body inferReq
	}
	var reqs []request
	for i := range 12 {
		var rows []int
		for j := range 1 + i%3 {
			rows = append(rows, 2400+7*i+j)
		}
		var inputs []input
		for _, r := range rows {
			one := oneRow(tbl, pre, r)
			if inputs == nil {
				inputs = one
				continue
			}
			for c := range inputs {
				inputs[c].Shape[0]++
				switch d := inputs[c].Data.(type) {
				case []string:
					inputs[c].Data = append(d, one[c].Data.([]string)...)
				case []float64:
					inputs[c].Data = append(d, one[c].Data.([]float64)...)
				}
			}
		}
		reqs = append(reqs, request{rows, inferReq{Inputs: inputs}})
	}
	// The reference: each request alone, on the model (no server, no batching).
	want := make([][]float64, len(reqs))
	for i, rq := range reqs {
		raw, _ := json.Marshal(rq.body)
		_, tensors, err := DecodeRequest(raw, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		outs, _, err := m.Infer(tensors, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = outs[0].Data.([]float64)
	}
	// A request with a string in a numeric column, and one asking for an unknown output.
	badRow := oneRow(tbl, pre, 5)
	var numeric string
	for i, in := range badRow {
		if in.Datatype == TypeFP64 {
			badRow[i] = input{in.Name, []int{1}, TypeBytes, []string{"lots"}}
			numeric = in.Name
			break
		}
	}
	badOutput := inferReq{Inputs: oneRow(tbl, pre, 6), Outputs: []map[string]any{{"name": "nope"}}}

	release := f.hold()
	first := make(chan answer, 1)
	go func() { first <- f.post(reqs[0].body) }()
	f.waitTaken(t) // the first request's batch is blocked in Predict
	got := make([]answer, len(reqs))
	var wg sync.WaitGroup
	for i := 1; i < len(reqs); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = f.post(reqs[i].body) }()
	}
	f.waitQueued(t, len(reqs)-1)
	bad1, bad2 := f.post(inferReq{Inputs: badRow}), f.post(badOutput) // answered before any batch runs
	release()
	got[0] = <-first
	wg.Wait()

	if bad1.code != 400 || !strings.Contains(string(bad1.body), `\"`+numeric+`\"`) {
		t.Fatalf("bad row: %d %s, want 400 naming %q", bad1.code, bad1.body, numeric)
	}
	if bad2.code != 400 || !strings.Contains(string(bad2.body), `\"nope\"`) {
		t.Fatalf("bad output: %d %s, want 400 naming \"nope\"", bad2.code, bad2.body)
	}
	totalRows := 0
	for i := range reqs {
		p := probabilityOf(t, got[i])
		if len(p) != len(reqs[i].rows) {
			t.Fatalf("request %d: %d probabilities for %d rows", i, len(p), len(reqs[i].rows))
		}
		assertClose(t, p, want[i])
		totalRows += len(reqs[i].rows)
	}
	// Two batches: the first request alone, then the other eleven together.
	if c, s := histCount(t, f.srv.batch.size), histSum(t, f.srv.batch.size); c != 2 || int(s) != totalRows {
		t.Fatalf("batches: %d of %v rows in all, want 2 of %d", c, s, totalRows)
	}
	// Distinct rows give distinct answers: a mix-up of slices would show.
	if fmt.Sprint(want[1]) == fmt.Sprint(want[2]) {
		t.Fatal("the reference answers of two requests are equal; the test cannot see a mix-up")
	}
}

// TestBatchingQueueFull fills a queue of 2 while the executor is busy: the next
// request gets 429 with Retry-After at once and is counted; the queued ones are
// answered once the executor is free, and the server keeps serving.
func TestBatchingQueueFull(t *testing.T) {
	f, tbl, pre := tabularFixture(t, "Attrition", data.TaskBinary)
	withBatching(t, f, BatchingConfig{Enabled: true, Window: time.Millisecond, MaxRows: 64, QueueSize: 2, Executors: 1, RetryAfter: 1500 * time.Millisecond})
	release := f.hold()
	answers := make(chan answer, 3)
	go func() { answers <- f.post(inferReq{Inputs: oneRow(tbl, pre, 1)}) }()
	f.waitTaken(t)
	for r := range 2 {
		go func() { answers <- f.post(inferReq{Inputs: oneRow(tbl, pre, 2+r)}) }()
	}
	f.waitQueued(t, 2)
	full := f.post(inferReq{Inputs: oneRow(tbl, pre, 4)})
	if full.code != http.StatusTooManyRequests || full.header.Get("Retry-After") != "2" || !strings.Contains(string(full.body), "queue is full") {
		t.Fatalf("full queue: %d Retry-After %q %s, want 429 with Retry-After 2", full.code, full.header.Get("Retry-After"), full.body)
	}
	if got := counterValue(t, f.srv.batch.rejected); got != 1 {
		t.Fatalf("rejected total %v, want 1", got)
	}
	release()
	for range 3 {
		probabilityOf(t, <-answers)
	}
	probabilityOf(t, f.post(inferReq{Inputs: oneRow(tbl, pre, 4)}))
	var body strings.Builder
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		body.WriteString(mf.GetName() + "\n")
	}
	for _, name := range []string{"cohort_serve_queue_depth", "cohort_serve_batch_size_rows", "cohort_serve_rejected_requests_total", "cohort_serve_queue_wait_seconds"} {
		if !strings.Contains(body.String(), name+"\n") {
			t.Fatalf("metric %s not registered:\n%s", name, body.String())
		}
	}
}
