package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/serve"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker/data"
	"github.com/cohort-dev/cohort/worker/model"
)

// benchServeExamples are the example models `cohort bench serve --example` builds:
// the architectures of jobs/examples/{attrition-mlp,fashion-cnn,performance-lstm}.yaml
// with random weights (speed does not depend on their values) and the preprocessing
// fitted on the sample data where the repository has it.
var benchServeExamples = []string{"attrition-mlp", "fashion-cnn", "performance-lstm"}

// benchLatency is one line of the latency table.
type benchLatency struct {
	Model     string  `json:"model"`
	Rows      int     `json:"rows"`
	Runtime   string  `json:"runtime"` // "cohort-json", "cohort-binary" or "onnxruntime"
	Requests  int     `json:"requests"`
	RowsPerS  float64 `json:"rows_per_s"` // median over rounds
	BestRowsS float64 `json:"best_rows_per_s"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
}

// benchLoad is one line of the load table.
type benchLoad struct {
	Model     string  `json:"model"`
	Clients   int     `json:"clients"`
	Batching  bool    `json:"batching"`
	Requests  int     `json:"requests"`
	Rejected  int     `json:"rejected"`
	ReqPerS   float64 `json:"requests_per_s"` // median over rounds
	BestReqS  float64 `json:"best_requests_per_s"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MeanBatch float64 `json:"mean_batch_rows,omitempty"`
}

type benchServeOptions struct {
	example, model, dataFile string
	mode                     string
	rows, clients            []int
	rounds                   int
	roundTime                time.Duration
	cpu                      string
	procs                    int
	binary, onnx             bool
	window                   time.Duration
	keep                     string
}

func newBenchServeCmd(g *globalFlags) *cobra.Command {
	o := benchServeOptions{rows: []int{1, 64, 1024}, clients: []int{1, 16, 64}}
	cmd := &cobra.Command{
		Use:   "serve --example NAME | --model DIR",
		Short: "Measure `cohort serve` against onnxruntime, and under concurrent load",
		Long: `Starts "cohort serve" (this binary) as a separate process on loopback, with GOMAXPROCS
--procs and, with --cpu, pinned by taskset, and measures it from this process:

  latency: sequential requests of each --rows size, as JSON (and with --binary through
           the binary tensor data extension), against onnxruntime-node's session.run
           on the same export's ONNX model and rows (one intra-op and one inter-op
           thread, pinned to the same --cpu), interleaved in --rounds rounds of
           --round-time each: rows/s (median and best round) and p50/p99 latency.
  load:    --clients concurrent clients sending one-row requests, with server-side
           batching off and on (two servers, interleaved): requests/s and p50/p99.

--example builds one of the example models (attrition-mlp, fashion-cnn,
performance-lstm: the example jobs' architectures with random weights, the
preprocessing fitted on jobs/data where the sample exists) into a temporary directory;
--model benches an export directory (model.safetensors and the ONNX repository).
Row values come from --data (a CSV with the model's columns) or are random.`,
		Example: `  # run it pinned to the core it gives the server (taskset -c 0 cohort bench serve ...)
  cohort bench serve --example attrition-mlp --cpu 1 --binary
  cohort bench serve --example fashion-cnn --mode latency --rows 1,64,1024 --cpu 1
  cohort bench serve --example attrition-mlp --mode load --clients 1,16,64 --cpu 1 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (o.example == "") == (o.model == "") {
				return usageErr("give one of --example (%s) and --model", strings.Join(benchServeExamples, ", "))
			}
			if o.example != "" && !slices.Contains(benchServeExamples, o.example) {
				return usageErr("--example %q: want one of %s", o.example, strings.Join(benchServeExamples, ", "))
			}
			if !slices.Contains([]string{"latency", "load", "all"}, o.mode) {
				return usageErr("--mode %q: want latency, load or all", o.mode)
			}
			if o.rounds < 1 || o.roundTime <= 0 || o.procs < 1 {
				return usageErr("--rounds, --round-time and --procs must be positive")
			}
			lat, load, err := runBenchServe(cmd.Context(), o)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(stdout, map[string]any{"latency": lat, "load": load})
			}
			return printBenchServe(stdout, o, lat, load)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.example, "example", "", "build and bench an example model: "+strings.Join(benchServeExamples, ", "))
	f.StringVar(&o.model, "model", "", "bench this export directory")
	f.StringVar(&o.dataFile, "data", "", "CSV file whose columns give the rows' values (default: the example's sample data, else random)")
	f.StringVar(&o.mode, "mode", "all", "latency, load or all")
	f.IntSliceVar(&o.rows, "rows", o.rows, "rows per request in the latency runs")
	f.IntSliceVar(&o.clients, "clients", o.clients, "concurrent clients in the load runs")
	f.IntVar(&o.rounds, "rounds", 5, "interleaved rounds per measurement")
	f.DurationVar(&o.roundTime, "round-time", time.Second, "length of one round of one runtime")
	f.StringVar(&o.cpu, "cpu", "", "taskset CPU list for the server and onnxruntime (default: not pinned)")
	f.IntVar(&o.procs, "procs", 1, "GOMAXPROCS of the server")
	f.BoolVar(&o.binary, "binary", false, "also send the latency requests through the binary tensor data extension")
	f.BoolVar(&o.onnx, "onnxruntime", true, "compare with onnxruntime-node in the latency runs")
	f.DurationVar(&o.window, "batch-window", 2*time.Millisecond, "the batching server's --batch-window in the load runs")
	f.StringVar(&o.keep, "keep", "", "write the example export here and keep it (default: a temporary directory)")
	return cmd
}

func runBenchServe(ctx context.Context, o benchServeOptions) ([]benchLatency, []benchLoad, error) {
	dir := o.model
	var tbl *data.Table
	if o.example != "" {
		dir = o.keep
		if dir == "" {
			tmp, err := os.MkdirTemp("", "cohort-bench-serve-")
			if err != nil {
				return nil, nil, err
			}
			defer os.RemoveAll(tmp)
			dir = tmp
		}
		var err error
		if tbl, err = writeBenchExample(o.example, dir); err != nil {
			return nil, nil, fmt.Errorf("bench serve: example %s: %w", o.example, err)
		}
	}
	if o.dataFile != "" {
		fh, err := os.Open(o.dataFile)
		if err != nil {
			return nil, nil, usageErr("--data: %v", err)
		}
		tbl, err = data.ReadCSV(fh)
		fh.Close()
		if err != nil {
			return nil, nil, usageErr("--data: %v", err)
		}
	}
	m, err := serve.Load(ctx, dir, storage.S3Config{})
	if err != nil {
		return nil, nil, usageErr("--model: %v", err)
	}
	name := m.Name()
	meta := m.Metadata()
	onnxPath := filepath.Join(dir, name, filepath.FromSlash(export.ONNXFile))
	var lat []benchLatency
	var load []benchLoad
	if o.mode != "load" {
		srv, err := startBenchServer(ctx, o, dir, "--batching=false")
		if err != nil {
			return nil, nil, err
		}
		defer srv.stop()
		var ort *ortBench
		if o.onnx {
			if _, err := os.Stat(onnxPath); err != nil {
				return nil, nil, fmt.Errorf("bench serve: --onnxruntime needs the ONNX export: %w", err)
			}
			if ort, err = startORTBench(o.cpu); err != nil {
				return nil, nil, err
			}
			defer ort.stop()
		}
		for _, n := range o.rows {
			ins := benchInputs(meta, n, tbl, rand.New(rand.NewPCG(uint64(n), 7)))
			jsonBody := benchJSONBody(ins)
			binBody, binLen := benchBinaryBody(ins)
			url := srv.url + "/v2/models/" + name + "/infer"
			type series struct {
				runtime string
				lat     []time.Duration
				rates   []float64
			}
			runs := []*series{{runtime: "cohort-json"}}
			if o.binary {
				runs = append(runs, &series{runtime: "cohort-binary"})
			}
			if ort != nil {
				runs = append(runs, &series{runtime: "onnxruntime"})
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
			for round := range o.rounds {
				for _, s := range runs {
					var l []time.Duration
					var err error
					switch s.runtime {
					case "cohort-json":
						l, err = benchSequential(ctx, client, url, jsonBody, 0, o.roundTime, round == 0)
					case "cohort-binary":
						l, err = benchSequential(ctx, client, url, binBody, binLen, o.roundTime, round == 0)
					default:
						l, err = ort.run(onnxPath, benchORTFeeds(ins), o.roundTime)
					}
					if err != nil {
						return nil, nil, fmt.Errorf("bench serve: %s, %d rows: %w", s.runtime, n, err)
					}
					var total time.Duration
					for _, d := range l {
						total += d
					}
					s.lat = append(s.lat, l...)
					s.rates = append(s.rates, float64(n*len(l))/total.Seconds())
				}
			}
			for _, s := range runs {
				p50, p99 := percentiles(s.lat)
				med, best := medianMax(s.rates)
				lat = append(lat, benchLatency{Model: name, Rows: n, Runtime: s.runtime, Requests: len(s.lat),
					RowsPerS: med, BestRowsS: best, P50Ms: p50, P99Ms: p99})
			}
		}
	}
	if o.mode != "latency" {
		off, err := startBenchServer(ctx, o, dir, "--batching=false")
		if err != nil {
			return nil, nil, err
		}
		defer off.stop()
		on, err := startBenchServer(ctx, o, dir, "--batching=true", "--batch-window="+o.window.String())
		if err != nil {
			return nil, nil, err
		}
		defer on.stop()
		// Distinct one-row bodies, cycled by the clients.
		var bodies [][]byte
		for i := range 64 {
			bodies = append(bodies, benchJSONBody(benchInputs(meta, 1, tbl, rand.New(rand.NewPCG(uint64(i), 11)))))
		}
		for _, c := range o.clients {
			type series struct {
				srv      *benchServer
				lat      []time.Duration
				rates    []float64
				rejected int
				batches  [2]float64 // histogram count, sum at the start
			}
			runs := []*series{{srv: off}, {srv: on}}
			for _, s := range runs {
				s.batches = batchStats(s.srv.url)
			}
			for round := range o.rounds {
				for _, s := range runs {
					l, rej, elapsed, err := benchConcurrent(ctx, s.srv.url+"/v2/models/"+name+"/infer", bodies, c, o.roundTime, round == 0)
					if err != nil {
						return nil, nil, fmt.Errorf("bench serve: %d clients: %w", c, err)
					}
					s.lat = append(s.lat, l...)
					s.rejected += rej
					s.rates = append(s.rates, float64(len(l))/elapsed.Seconds())
				}
			}
			for _, s := range runs {
				p50, p99 := percentiles(s.lat)
				med, best := medianMax(s.rates)
				r := benchLoad{Model: name, Clients: c, Batching: s.srv == on, Requests: len(s.lat), Rejected: s.rejected,
					ReqPerS: med, BestReqS: best, P50Ms: p50, P99Ms: p99}
				if end := batchStats(s.srv.url); end[0] > s.batches[0] {
					r.MeanBatch = (end[1] - s.batches[1]) / (end[0] - s.batches[0])
				}
				load = append(load, r)
			}
		}
	}
	return lat, load, nil
}

// writeBenchExample writes the example's export (safetensors and ONNX) under dir and
// returns its sample table, if any; the sample data is read from jobs/data under the
// working directory.
func writeBenchExample(name, dir string) (*data.Table, error) {
	return writeBenchExampleFrom(name, dir, ".")
}

func writeBenchExampleFrom(name, dir, root string) (*data.Table, error) {
	readSample := func(file string) (*data.Table, error) {
		fh, err := os.Open(filepath.Join(root, "jobs", "data", file))
		if err != nil {
			return nil, fmt.Errorf("%w (run from the repository root)", err)
		}
		defer fh.Close()
		return data.ReadCSV(fh)
	}
	var a export.Architecture
	meta := map[string]string{}
	var tbl *data.Table
	var pre any
	switch name {
	case "attrition-mlp":
		t, err := readSample("attrition-sample.csv")
		if err != nil {
			return nil, err
		}
		rows := make([]int, len(t.Rows))
		for i := range rows {
			rows[i] = i
		}
		p, err := data.FitPreprocessor(t, rows, data.TabularConfig{Label: "Attrition", Positive: "Yes", Task: export.TaskBinary,
			Exclude: []string{"Gender", "MaritalStatus"}})
		if err != nil {
			return nil, err
		}
		a = export.Architecture{Kind: export.KindMLP, Task: export.TaskBinary, Inputs: p.Dim, Outputs: 1, Activation: export.ActReLU, Hidden: []int{64, 32}}
		meta[export.MetaDataFormat], pre, tbl = export.DataCSV, p, t
	case "fashion-cnn":
		a = export.Architecture{Kind: export.KindCNN, Task: export.TaskMulticlass, Inputs: 28 * 28, Outputs: 10, Activation: export.ActReLU,
			Channels: 1, Height: 28, Width: 28, Pool: 2, Dense: []int{128},
			Conv: []export.Conv{{Filters: 32, Kernel: 3, Stride: 1}, {Filters: 64, Kernel: 3, Stride: 1}}}
		meta[export.MetaDataFormat] = export.DataIDX
		pre = export.ImagePreprocessing{Channels: 1, Height: 28, Width: 28, Scale: 1.0 / 255, Classes: 10, Layout: "NCHW"}
	case "performance-lstm":
		t, err := readSample("performance-sample.csv")
		if err != nil {
			return nil, err
		}
		features := []string{"HoursWorked", "OvertimeHours", "ProjectsActive", "TrainingHours", "AbsenceDays", "PeerFeedback", "PerformanceScore"}
		seq, err := data.LoadSequences(t, data.SequenceConfig{Lookback: 12, Horizon: 3, Target: "PerformanceScore", Features: features,
			Group: "EmployeeID", Time: "Month", Task: export.TaskRegression, ValidationFraction: 0.2}, "performance-sample.csv")
		if err != nil {
			return nil, err
		}
		a = export.Architecture{Kind: export.KindLSTM, Task: export.TaskRegression, Inputs: 12 * len(features), Outputs: 1, Hidden: []int{32},
			Steps: 12, Features: len(features), LabelMean: seq.Scaler.TargetMean, LabelStd: seq.Scaler.TargetStd}
		meta[export.MetaDataFormat], pre, tbl = export.DataSequenceCSV, seq.Scaler, t
	}
	raw, err := json.Marshal(pre)
	if err != nil {
		return nil, err
	}
	meta[export.MetaPreprocessing] = string(raw)
	m, err := model.New(a, model.Options{BatchSize: 1})
	if err != nil {
		return nil, err
	}
	params := m.InitParams(1)
	var tensors []export.Tensor
	for _, t := range m.Layout() {
		tensors = append(tensors, export.Tensor{Name: t.Name, Shape: t.Shape, Data: params[t.Offset : t.Offset+t.Size]})
	}
	b := &export.Bundle{Name: name, Arch: a, Tensors: tensors, Metadata: meta}
	files, err := b.Files([]string{export.FormatONNX, export.FormatSafetensors})
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return nil, err
		}
	}
	return tbl, nil
}

// benchInput is one input tensor of a generated request.
type benchInput struct {
	name, datatype string
	shape          []int
	numbers        []float64
	strings        []string
}

// benchInputs generates n rows for the model's inputs: a column of tbl of the input's
// name gives the values (cycled), else random ones.
func benchInputs(meta serve.ModelMetadata, n int, tbl *data.Table, rng *rand.Rand) []benchInput {
	var out []benchInput
	for _, in := range meta.Inputs {
		shape := []int{n}
		size := n
		for _, d := range in.Shape[1:] {
			shape = append(shape, int(d))
			size *= int(d)
		}
		bi := benchInput{name: in.Name, datatype: in.Datatype, shape: shape}
		col := -1
		if tbl != nil {
			col = tbl.ColumnIndex(in.Name)
		}
		start := rng.IntN(1 << 20)
		for i := range size {
			var cell string
			if col >= 0 {
				cell = strings.TrimSpace(tbl.Rows[(start+i)%len(tbl.Rows)][col])
			}
			switch in.Datatype {
			case serve.TypeBytes:
				if col < 0 {
					cell = "v" + strconv.Itoa(rng.IntN(5))
				}
				bi.strings = append(bi.strings, cell)
			case serve.TypeUINT8:
				bi.numbers = append(bi.numbers, float64(rng.IntN(256)))
			default:
				v, err := strconv.ParseFloat(cell, 64)
				if col < 0 || err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
					v = math.Round(rng.NormFloat64()*1000) / 100
				}
				bi.numbers = append(bi.numbers, v)
			}
		}
		out = append(out, bi)
	}
	return out
}

func benchJSONBody(ins []benchInput) []byte {
	var inputs []map[string]any
	for _, in := range ins {
		var d any = in.numbers
		if in.datatype == serve.TypeBytes {
			d = in.strings
		}
		inputs = append(inputs, map[string]any{"name": in.name, "shape": in.shape, "datatype": in.datatype, "data": d})
	}
	b, _ := json.Marshal(map[string]any{"inputs": inputs})
	return b
}

// benchBinaryBody is the request in the binary tensor data extension: every input's
// data binary (FP64 as 8 bytes, UINT8 as 1, BYTES length-prefixed), outputs in JSON.
func benchBinaryBody(ins []benchInput) ([]byte, int) {
	var inputs []map[string]any
	var raw []byte
	le := binary.LittleEndian
	for _, in := range ins {
		start := len(raw)
		switch in.datatype {
		case serve.TypeBytes:
			for _, s := range in.strings {
				raw = le.AppendUint32(raw, uint32(len(s)))
				raw = append(raw, s...)
			}
		case serve.TypeUINT8:
			for _, v := range in.numbers {
				raw = append(raw, byte(v))
			}
		default:
			for _, v := range in.numbers {
				raw = le.AppendUint64(raw, math.Float64bits(v))
			}
		}
		inputs = append(inputs, map[string]any{"name": in.name, "shape": in.shape, "datatype": in.datatype,
			"parameters": map[string]any{serve.ParamBinaryDataSize: len(raw) - start}})
	}
	head, _ := json.Marshal(map[string]any{"inputs": inputs})
	return append(head, raw...), len(head)
}

// benchORTFeeds are the same rows as onnxruntime feeds of the embedded export: a
// tabular column [N, 1], FP64 as float32.
func benchORTFeeds(ins []benchInput) map[string]any {
	feeds := map[string]any{}
	for _, in := range ins {
		dims := in.shape
		if len(dims) == 1 {
			dims = []int{dims[0], 1}
		}
		switch in.datatype {
		case serve.TypeBytes:
			feeds[in.name] = map[string]any{"type": "string", "dims": dims, "data": in.strings}
		case serve.TypeUINT8:
			feeds[in.name] = map[string]any{"type": "uint8", "dims": dims, "data": in.numbers}
		default:
			feeds[in.name] = map[string]any{"type": "float32", "dims": dims, "data": in.numbers}
		}
	}
	return feeds
}

// benchServer is a `cohort serve` child process.
type benchServer struct {
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *benchServer) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// startBenchServer starts this binary's `serve` on a free loopback port, pinned to
// o.cpu with taskset when set, with GOMAXPROCS o.procs, and waits until it is ready.
func startBenchServer(ctx context.Context, o benchServeOptions, dir string, args ...string) (*benchServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	argv := append([]string{self, "serve", "--model", dir, "--addr", addr}, args...)
	if o.cpu != "" {
		argv = append([]string{"taskset", "-c", o.cpu}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(o.procs))
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench serve: start %s: %w", strings.Join(argv, " "), err)
	}
	s := &benchServer{url: "http://" + addr, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.url + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("bench serve: %s exited: %s", strings.Join(argv, " "), strings.TrimSpace(logs.String()))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("bench serve: %s not ready after 60 s", strings.Join(argv, " "))
		}
	}
}

// benchPost sends one request and drains the answer; a non-200 answer is an error,
// except 429, reported as rejected.
func benchPost(ctx context.Context, client *http.Client, url string, body []byte, jsonLen int) (rejected bool, err error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	if jsonLen > 0 {
		req.Header.Set(serve.HeaderInferenceContentLength, strconv.Itoa(jsonLen))
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case 200:
		return false, nil
	case http.StatusTooManyRequests:
		return true, nil
	}
	return false, fmt.Errorf("answer %d: %.300s", resp.StatusCode, b)
}

// benchSequential sends the body again and again for d (at least 5 times) and returns
// each request's latency; warm first sends 5 untimed requests.
func benchSequential(ctx context.Context, client *http.Client, url string, body []byte, jsonLen int, d time.Duration, warm bool) ([]time.Duration, error) {
	if warm {
		for range 5 {
			if _, err := benchPost(ctx, client, url, body, jsonLen); err != nil {
				return nil, err
			}
		}
	}
	var lat []time.Duration
	end := time.Now().Add(d)
	for len(lat) < 5 || time.Now().Before(end) {
		t0 := time.Now()
		if _, err := benchPost(ctx, client, url, body, jsonLen); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// benchConcurrent runs c clients, each sending the bodies in turn for d, and returns
// the latencies of the answered requests, the number rejected with 429 and the time
// taken.
func benchConcurrent(ctx context.Context, url string, bodies [][]byte, c int, d time.Duration, warm bool) ([]time.Duration, int, time.Duration, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c + 1, MaxConnsPerHost: c + 1, DisableCompression: true}}
	defer client.CloseIdleConnections()
	if warm {
		for i := range 5 {
			if _, err := benchPost(ctx, client, url, bodies[i%len(bodies)], 0); err != nil {
				return nil, 0, 0, err
			}
		}
	}
	var mu sync.Mutex
	var all []time.Duration
	rejected := 0
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for k := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			rej := 0
			for i := k; time.Now().Before(end); i++ {
				t0 := time.Now()
				r, err := benchPost(ctx, client, url, bodies[i%len(bodies)], 0)
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				if r {
					rej++
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			rejected += rej
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, rejected, time.Since(start), firstErr
}

// batchStats reads the count and sum of cohort_serve_batch_size_rows from /metrics.
func batchStats(base string) (out [2]float64) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		for i, suffix := range []string{"_count ", "_sum "} {
			if rest, ok := strings.CutPrefix(line, "cohort_serve_batch_size_rows"+suffix); ok {
				out[i], _ = strconv.ParseFloat(strings.TrimSpace(rest), 64)
			}
		}
	}
	return out
}

// percentiles returns the p50 and p99 of the latencies, in milliseconds.
func percentiles(l []time.Duration) (p50, p99 float64) {
	if len(l) == 0 {
		return 0, 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return float64(s[max(0, min(i, len(s)-1))].Microseconds()) / 1000
	}
	return at(0.50), at(0.99)
}

func medianMax(v []float64) (median, best float64) {
	if len(v) == 0 {
		return 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		median = s[len(s)/2]
	} else {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return median, s[len(s)-1]
}

// ortBench is a Node process running bench/serve/ort_bench.mjs.
type ortBench struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startORTBench(cpu string) (*ortBench, error) {
	script := filepath.Join("bench", "serve", "ort_bench.mjs")
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("bench serve: %w (run from the repository root, or --onnxruntime=false)", err)
	}
	argv := []string{"node", script}
	if cpu != "" {
		argv = append([]string{"taskset", "-c", cpu}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench serve: start onnxruntime: %w", err)
	}
	return &ortBench{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20)}, nil
}

func (o *ortBench) run(model string, feeds map[string]any, d time.Duration) ([]time.Duration, error) {
	line, err := json.Marshal(map[string]any{"model": model, "feeds": feeds, "seconds": d.Seconds(), "min": 5, "warmup": 3})
	if err != nil {
		return nil, err
	}
	if _, err := o.in.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("onnxruntime: %w", err)
	}
	answer, err := o.out.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("onnxruntime: %w", err)
	}
	var resp struct {
		Error     string  `json:"error"`
		Latencies []int64 `json:"latencies_ns"`
	}
	if err := json.Unmarshal(answer, &resp); err != nil {
		return nil, fmt.Errorf("onnxruntime answer %.200q: %w", answer, err)
	}
	if resp.Error != "" {
		return nil, errors.New("onnxruntime: " + resp.Error)
	}
	l := make([]time.Duration, len(resp.Latencies))
	for i, ns := range resp.Latencies {
		l[i] = time.Duration(ns)
	}
	return l, nil
}

func (o *ortBench) stop() {
	o.in.Close()
	_ = o.cmd.Wait()
}

func printBenchServe(w io.Writer, o benchServeOptions, lat []benchLatency, load []benchLoad) error {
	var b strings.Builder
	if len(lat) > 0 {
		fmt.Fprintf(&b, "| model | rows | runtime | rows/s (median) | rows/s (best) | p50 ms | p99 ms | requests |\n|---|---|---|---|---|---|---|---|\n")
		for _, l := range lat {
			fmt.Fprintf(&b, "| %s | %d | %s | %.0f | %.0f | %.3f | %.3f | %d |\n", l.Model, l.Rows, l.Runtime, l.RowsPerS, l.BestRowsS, l.P50Ms, l.P99Ms, l.Requests)
		}
	}
	if len(load) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "| model | clients | batching | requests/s (median) | requests/s (best) | p50 ms | p99 ms | mean batch rows | 429s |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range load {
			on := "off"
			if l.Batching {
				on = "on (" + o.window.String() + ")"
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %.0f | %.0f | %.3f | %.3f | %.1f | %d |\n", l.Model, l.Clients, on, l.ReqPerS, l.BestReqS, l.P50Ms, l.P99Ms, l.MeanBatch, l.Rejected)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
