// Package serve is Cohort's inference server: the Open Inference Protocol (KServe v2)
// REST endpoints over a model exported by Cohort (model.safetensors with its
// architecture and fitted preprocessing), evaluated in pure Go. A request carries the
// raw columns of the training data, one tensor each; the server applies the saved
// preprocessing, runs the network and answers probabilities, class labels or
// predictions in target units. The network runs on the training kernels (see engine);
// concurrent small requests are batched server-side (see BatchingConfig), and the
// binary tensor data extension is understood (see HeaderInferenceContentLength).
//
// POST /v2/models/{name}/explain takes the same body and answers infer's outputs plus
// integrated-gradients attributions (see Model.Explain): one FP64
// attribution_<input> tensor per input, shaped as that input, with the explained
// output and its value at an all-zero-feature baseline (explained_output,
// baseline_output), and "parameters": {"method", "baseline", "steps", "output",
// "completeness_gap"}. The request parameter "target_class" picks a classifier's
// explained class by label.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohort-dev/cohort/export"
	"github.com/cohort-dev/cohort/storage"
)

// Config configures a Server.
type Config struct {
	// Model is the model to serve.
	Model *Model
	// MaxRequestBytes bounds a request body; larger requests get 413.
	MaxRequestBytes int64
	// MaxBatchRows bounds the rows of one request.
	MaxBatchRows int
	// Logger receives one log line per request (default slog.Default()).
	Logger *slog.Logger
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Batching merges concurrent small infer requests into server-side batches.
	Batching BatchingConfig
}

// BatchingConfig configures server-side (dynamic) batching: infer requests of fewer
// than MaxRows rows wait in a bounded queue and are run together, up to MaxRows rows
// per batch; a request that finds the queue full gets 429 with Retry-After.
type BatchingConfig struct {
	// Enabled turns batching on.
	Enabled bool
	// Window is the longest a batch waits, after its first request, for requests that
	// have arrived and are still being decoded (0: never wait; a batch takes what is
	// queued). A batch whose requests are all queued runs at once.
	Window time.Duration
	// MaxRows bounds the rows of one batch; requests of at least MaxRows rows are run
	// on their own, outside the queue.
	MaxRows int
	// QueueSize bounds the requests waiting for a batch.
	QueueSize int
	// Executors is the number of batches run at once (0: GOMAXPROCS).
	Executors int
	// RetryAfter is the Retry-After of a 429 answer (rounded up to whole seconds).
	RetryAfter time.Duration
}

// DefaultConfig returns a configuration with 16 MiB requests of up to 65536 rows and
// batching on: a 2 ms window, batches of up to 64 rows, a queue of 256 requests.
func DefaultConfig() Config {
	return Config{MaxRequestBytes: 16 << 20, MaxBatchRows: 1 << 16,
		Batching: BatchingConfig{Enabled: true, Window: 2 * time.Millisecond, MaxRows: 64, QueueSize: 256, RetryAfter: time.Second}}
}

// Server answers the Open Inference Protocol for one model.
type Server struct {
	cfg      Config
	log      *slog.Logger
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	rows     prometheus.Counter
	mux      *http.ServeMux
	batch    *batcher // nil: batching off
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Model == nil {
		return nil, errors.New("serve: Config.Model is required")
	}
	if cfg.MaxRequestBytes <= 0 || cfg.MaxBatchRows <= 0 {
		return nil, fmt.Errorf("serve: MaxRequestBytes %d and MaxBatchRows %d must be positive", cfg.MaxRequestBytes, cfg.MaxBatchRows)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if b := cfg.Batching; b.Enabled && (b.MaxRows <= 0 || b.QueueSize <= 0 || b.Window < 0 || b.Executors < 0) {
		return nil, fmt.Errorf("serve: batching: MaxRows %d and QueueSize %d must be positive, Window %v and Executors %d not negative", b.MaxRows, b.QueueSize, b.Window, b.Executors)
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_serve_requests_total", Help: "Inference-server HTTP requests by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cohort_serve_request_duration_seconds", Help: "Inference-server request latency.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_serve_inferred_rows_total", Help: "Rows answered by successful inference requests.",
		}),
	}
	collectors := []prometheus.Collector{s.requests, s.duration, s.rows}
	if b := cfg.Batching; b.Enabled {
		s.batch = newBatcher(cfg.Model, b.Window, b.MaxRows, b.QueueSize, b.Executors)
		collectors = append(collectors, s.batch.collectors()...)
	}
	if cfg.Registerer != nil {
		for _, c := range collectors {
			if err := cfg.Registerer.Register(c); err != nil {
				s.Close()
				return nil, fmt.Errorf("serve: register metrics: %w", err)
			}
		}
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"live": true})
	})
	m.HandleFunc("GET /v2/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
	})
	m.HandleFunc("GET /v2", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"name": "cohort", "version": "1", "extensions": []string{"binary_tensor_data"}})
	})
	m.HandleFunc("GET /v2/models/{name}", s.withModel(s.metadata))
	m.HandleFunc("GET /v2/models/{name}/versions/{version}", s.withModel(s.metadata))
	m.HandleFunc("GET /v2/models/{name}/ready", s.withModel(s.ready))
	m.HandleFunc("GET /v2/models/{name}/versions/{version}/ready", s.withModel(s.ready))
	m.HandleFunc("POST /v2/models/{name}/infer", s.withModel(s.infer))
	m.HandleFunc("POST /v2/models/{name}/versions/{version}/infer", s.withModel(s.infer))
	m.HandleFunc("POST /v2/models/{name}/explain", s.withModel(s.explain))
	m.HandleFunc("POST /v2/models/{name}/versions/{version}/explain", s.withModel(s.explain))
	s.mux = m
	return s, nil
}

// Close stops the batching executors after answering the queued requests; call it
// after the HTTP server has shut down.
func (s *Server) Close() {
	if s.batch != nil {
		s.batch.close()
		s.batch = nil
	}
}

// statusWriter records the status code of a response.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// ServeHTTP implements http.Handler: it routes the request and records its metrics
// and log line.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	s.mux.ServeHTTP(sw, r)
	d := time.Since(start)
	s.requests.WithLabelValues(strconv.Itoa(sw.code)).Inc()
	s.duration.Observe(d.Seconds())
	level := slog.LevelDebug
	if sw.code >= 400 {
		level = slog.LevelInfo
	}
	s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "code", sw.code,
		"duration_ms", float64(d.Microseconds())/1000, "remote", r.RemoteAddr)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, ErrorResponse{Error: fmt.Sprintf(format, args...)})
}

// withModel answers 404 for another model name or a version other than 1.
func (s *Server) withModel(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if name := r.PathValue("name"); name != s.cfg.Model.Name() {
			writeError(w, http.StatusNotFound, "model %q not found (this server serves %q)", name, s.cfg.Model.Name())
			return
		}
		if v := r.PathValue("version"); v != "" && v != "1" {
			writeError(w, http.StatusNotFound, "model %q has no version %q (only 1)", s.cfg.Model.Name(), v)
			return
		}
		h(w, r)
	}
}

func (s *Server) metadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Model.Metadata())
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"name": s.cfg.Model.Name(), "ready": true})
}

// decodeBody reads and decodes an infer (or explain) request body of at most
// MaxRequestBytes, answering 413 or 400 itself when it cannot.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request) (*InferRequest, []Tensor, bool) {
	req, tensors, _, ok := s.decodeBodyPooled(w, r)
	return req, tensors, ok
}

// bodyBuffers pools request body buffers (*[]byte) of bodies with a Content-Length:
// a large request reads into one allocation, reused, instead of io.ReadAll's growing
// copies.
var bodyBuffers sync.Pool

// readBody reads a request body of at most limit bytes; release hands its buffer back
// for reuse, once nothing refers to the body (the decoded request's raw data).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) (body []byte, release func(), err error) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength <= 0 || r.ContentLength > limit {
		body, err = io.ReadAll(rd)
		return body, func() {}, err
	}
	bp, _ := bodyBuffers.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	if cap(*bp) < int(r.ContentLength) {
		*bp = make([]byte, r.ContentLength)
	}
	body = (*bp)[:r.ContentLength]
	if _, err = io.ReadFull(rd, body); err != nil {
		bodyBuffers.Put(bp)
		return nil, func() {}, err
	}
	return body, func() { bodyBuffers.Put(bp) }, nil
}

// decodeBodyPooled is decodeBody with the body's buffer and the tensors' numbers
// pooled: release (never nil) hands them back once the request and its tensors are no
// longer used.
func (s *Server) decodeBodyPooled(w http.ResponseWriter, r *http.Request) (*InferRequest, []Tensor, func(), bool) {
	body, release, err := readBody(w, r, s.cfg.MaxRequestBytes)
	fail := func() (*InferRequest, []Tensor, func(), bool) {
		release()
		return nil, nil, func() {}, false
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body exceeds the limit of %d bytes", s.cfg.MaxRequestBytes)
			return fail()
		}
		writeError(w, http.StatusBadRequest, "read request body: %v", err)
		return fail()
	}
	maxElements := s.cfg.MaxBatchRows * max(s.cfg.Model.arch.Inputs, 1)
	var req *InferRequest
	var tensors []Tensor
	if h := r.Header.Get(HeaderInferenceContentLength); h != "" {
		jsonLen, perr := strconv.Atoi(h)
		if perr != nil {
			writeError(w, http.StatusBadRequest, "header %s: %q is not a byte count", HeaderInferenceContentLength, h)
			return fail()
		}
		req, tensors, err = DecodeBinaryRequest(body, jsonLen, maxElements)
	} else {
		req, tensors, err = DecodeRequest(body, maxElements)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return fail()
	}
	return req, tensors, func() {
		release()
		for i := range tensors {
			putFloats(tensors[i].Numbers)
		}
	}, true
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	if s.batch != nil {
		s.batch.admit() // the batcher may wait for this request while it is decoded
	}
	admitted := s.batch != nil
	defer func() {
		if admitted {
			s.batch.drop()
		}
	}()
	req, tensors, release, ok := s.decodeBodyPooled(w, r)
	if !ok {
		return
	}
	defer release() // the response copies what it needs of the request (its id)
	m := s.cfg.Model
	x, n, err := m.Features(tensors, s.cfg.MaxBatchRows)
	if err == nil {
		err = m.checkWanted(req.Outputs)
	}
	var bin map[string]bool
	if err == nil {
		if bin, err = binaryOutputs(req, m.Outputs(nil, nil, 0, req.Outputs)); err != nil {
			err = &BadInputError{msg: err.Error()}
		}
	}
	var out []float32
	if err == nil {
		if admitted && n < s.cfg.Batching.MaxRows {
			admitted = false // submit withdraws the admission
			out, err = s.batch.submit(r.Context(), x, n)
		} else {
			// Unbatched: nothing else refers to the features after this request.
			defer putFeatures(x)
			out = make([]float32, n*m.arch.Outputs)
			err = m.Predict(x, n, out)
		}
	}
	if err != nil {
		var bad *BadInputError
		switch {
		case errors.As(err, &bad):
			writeError(w, http.StatusBadRequest, "%v", err)
		case errors.Is(err, errQueueFull):
			secs := max(1, int((s.cfg.Batching.RetryAfter+time.Second-1)/time.Second))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeError(w, http.StatusTooManyRequests, "the batching queue is full (%d requests waiting): retry after %d s", s.cfg.Batching.QueueSize, secs)
		case r.Context().Err() != nil:
			writeError(w, 499, "request canceled: %v", err)
		default:
			s.log.Error("inference failed", "model", m.Name(), "err", err)
			writeError(w, http.StatusInternalServerError, "inference failed: %v", err)
		}
		return
	}
	s.rows.Add(float64(n))
	resp := InferResponse{ModelName: m.Name(), ModelVersion: "1", ID: req.ID, Outputs: m.Outputs(x, out, n, req.Outputs)}
	if len(bin) == 0 {
		writeResponse(w, &resp)
		return
	}
	raw := encodeBinaryOutputs(resp.Outputs, bin)
	head, err := json.Marshal(resp)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(HeaderInferenceContentLength, strconv.Itoa(len(head)))
	w.Header().Set("Content-Length", strconv.Itoa(len(head)+len(raw)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(head)
	_, _ = w.Write(raw)
}

// Load reads an exported model: a directory holding model.safetensors (the export
// directory of `cohort export` or of a job), a .safetensors file, or a file:// or
// s3:// URI of either (an s3:// prefix is read as <prefix>/model.safetensors, with s3's
// endpoint and credentials). A local model that is not a regular file (a FIFO, a
// device) is refused after a stat, without being opened.
func Load(ctx context.Context, location string, s3 storage.S3Config) (*Model, error) {
	var rc io.ReadCloser
	var err error
	where := location
	switch {
	case strings.HasPrefix(location, "s3://"), strings.HasPrefix(location, "file://"):
		if !strings.HasSuffix(location, ".safetensors") {
			where = strings.TrimSuffix(location, "/") + "/" + export.SafetensorsFile
		}
		rc, err = storage.OpenURI(ctx, where, s3)
	default:
		if fi, statErr := os.Stat(location); statErr == nil && fi.IsDir() {
			where = filepath.Join(location, export.SafetensorsFile)
		}
		// Stat before open: a FIFO or device is refused, never opened (an open of a
		// FIFO blocks until a writer comes, and ignored SIGTERM).
		rc, _, err = storage.OpenRegularFile(where)
		if errors.Is(err, storage.ErrNotFound) {
			err = fmt.Errorf("%w (%v)", errNoModel, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("serve: load model %s: %w", location, err)
	}
	defer rc.Close()
	em, err := export.ReadModel(rc)
	if err != nil {
		return nil, fmt.Errorf("serve: load model %s: %w", where, err)
	}
	m, err := NewModel(em)
	if err != nil {
		return nil, fmt.Errorf("serve: load model %s: %w", where, err)
	}
	return m, nil
}
