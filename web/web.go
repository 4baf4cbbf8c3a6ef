// Package web serves the coordinator's dashboard: a cluster overview, the jobs list and
// a page per job in the manner of an experiment tracker (spec and hyperparameters, live
// loss and metric curves, a per-epoch table, the checkpoints, the task logs, the model
// report), plus the JSON endpoints those pages use.
//
// Everything the browser loads is embedded in the binary (html/template pages, one CSS
// file, one small vanilla script that draws the curves as inline SVG); nothing is
// fetched from another host and no build step is needed. The handler reads the cluster
// only through a Source, which package node backs with the coordinator's gRPC API and
// its storage; the job page's optional parts come from the Source's optional
// interfaces (ReportSource, EpochSource, CheckpointSource, LogSource) and say so where
// the Source has none.
//
// Routes:
//
//	GET /                        cluster overview: nodes, Raft peers, job counts by state
//	GET /jobs                    jobs list: state, times, duration, progress, pending reasons;
//	                             ?state=&namespace= filter, ?sort=submitted|name|state|duration
//	                             &order=asc|desc sorts
//	GET /jobs/{id}               one job: its failure, times, spec and hyperparameters, live
//	                             curves, per-epoch metrics, checkpoints, live task logs, and
//	                             once it has ended its model report
//	GET /api/nodes               {"nodes": [...]}
//	GET /api/peers               {"peers": [...]}
//	GET /api/jobs                {"jobs": [...], "counts": {"running": n, ...}, "namespaces": [...]},
//	                             with the query of /jobs
//	GET /api/jobs/{id}           {"job": {...}, "points": [...]}
//	GET /api/jobs/{id}/events    text/event-stream of {"job": {...}, "points": [...]}
//	GET /api/jobs/{id}/epochs    {"epochs": [...], "metrics": [...], "note"}: one row per epoch
//	GET /api/jobs/{id}/checkpoints {"checkpoints": [...], "metrics": [...], "score_metric", ...}
//	GET /api/jobs/{id}/logs      {"lines": [{"task", "generation", "text"}], "truncated"};
//	                             ?task=worker-0 one task, ?tail=N lines of each (default 500)
//	GET /api/jobs/{id}/logs/events text/event-stream: "lines" events, then "end" (or "problem")
//	GET /api/jobs/{id}/report    the job's report.json (metrics with CIs, fairness audit,
//	                             importances, attributions), when the Source is a ReportSource
//	GET /static/...              embedded assets
package web

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrNotFound is what a Source returns (possibly wrapped) for a job that does not exist.
var ErrNotFound = errors.New("not found")

// Source is the dashboard's read-only view of the cluster.
type Source interface {
	// ListJobs returns every job, in any order.
	ListJobs(ctx context.Context) ([]*cohortv1.Job, error)
	// GetJob returns one job, or an error wrapping ErrNotFound.
	GetJob(ctx context.Context, id string) (*cohortv1.Job, error)
	// ListNodes returns every registered node.
	ListNodes(ctx context.Context) ([]*cohortv1.Node, error)
	// Peers returns the coordinators' Raft configuration.
	Peers(ctx context.Context) ([]*cohortv1.Peer, error)
}

// ReportSource is a Source that can also read a job's report (report.json).
type ReportSource interface {
	// JobReport returns the job's report.json bytes, or an error wrapping ErrNotFound
	// when the job has none (yet).
	JobReport(ctx context.Context, id string) ([]byte, error)
}

// Config configures the dashboard handler.
type Config struct {
	// Source reads the cluster. Required.
	Source Source
	// Logger receives request errors (default slog.Default()).
	Logger *slog.Logger
	// PollInterval is how often an event stream polls the Source (default 500 ms).
	PollInterval time.Duration
	// Context, when set, starts a recorder that polls ListJobs every RecordInterval
	// until the context ends, so that a job's curve holds the epochs reported while
	// no page was open. Without it, points are recorded only while the dashboard
	// serves requests about the job.
	Context context.Context
	// RecordInterval is the recorder's polling interval (default 1 s).
	RecordInterval time.Duration
	// HistoryPoints bounds the curve points kept per job (default 2000); HistoryJobs
	// bounds the jobs whose curves are kept (default 256, least recently seen dropped).
	HistoryPoints, HistoryJobs int
}

// Defaults of Config.
const (
	DefaultPollInterval   = 500 * time.Millisecond
	DefaultHistoryPoints  = 2000
	DefaultHistoryJobs    = 256
	DefaultRecordInterval = time.Second
	// keepAliveInterval is how often an idle event stream sends a comment line.
	keepAliveInterval = 15 * time.Second
	// requestTimeout bounds each Source call made for a request.
	requestTimeout = 10 * time.Second
	// maxReportBytes bounds the report.json the dashboard passes on to a browser.
	maxReportBytes = 16 << 20
)

// contentSecurityPolicy allows only the dashboard's own origin: no inline scripts,
// no third-party hosts, no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

//go:embed static
var staticFS embed.FS

type handler struct {
	src   Source
	log   *slog.Logger
	poll  time.Duration
	hist  *history
	pages map[string]*template.Template
	now   func() time.Time
}

// New returns the dashboard's HTTP handler, meant to be mounted at "/". It panics
// when cfg.Source is nil or an embedded template does not parse (both programming
// errors).
func New(cfg Config) http.Handler {
	if cfg.Source == nil {
		panic("web: Config.Source is required")
	}
	h := &handler{src: cfg.Source, log: cfg.Logger, poll: cfg.PollInterval, now: time.Now}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.poll <= 0 {
		h.poll = DefaultPollInterval
	}
	if cfg.HistoryPoints <= 0 {
		cfg.HistoryPoints = DefaultHistoryPoints
	}
	if cfg.HistoryJobs <= 0 {
		cfg.HistoryJobs = DefaultHistoryJobs
	}
	h.hist = newHistory(cfg.HistoryJobs, cfg.HistoryPoints)
	pages, err := parsePages()
	if err != nil {
		panic(err)
	}
	h.pages = pages
	assets, err := fs.Sub(staticFS, "static/assets")
	if err != nil {
		panic(fmt.Errorf("web: static assets: %w", err))
	}

	if cfg.Context != nil {
		if cfg.RecordInterval <= 0 {
			cfg.RecordInterval = DefaultRecordInterval
		}
		go h.record(cfg.Context, cfg.RecordInterval)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.overviewPage)
	mux.HandleFunc("GET /jobs", h.jobsPage)
	mux.HandleFunc("GET /jobs/{$}", h.jobsPage)
	mux.HandleFunc("GET /jobs/{id}", h.jobPage)
	mux.HandleFunc("GET /api/nodes", h.apiNodes)
	mux.HandleFunc("GET /api/peers", h.apiPeers)
	mux.HandleFunc("GET /api/jobs", h.apiJobs)
	mux.HandleFunc("GET /api/jobs/{id}", h.apiJob)
	mux.HandleFunc("GET /api/jobs/{id}/events", h.jobEvents)
	mux.HandleFunc("GET /api/jobs/{id}/report", h.apiJobReport)
	mux.HandleFunc("GET /api/jobs/{id}/epochs", h.apiJobEpochs)
	mux.HandleFunc("GET /api/jobs/{id}/checkpoints", h.apiJobCheckpoints)
	mux.HandleFunc("GET /api/jobs/{id}/logs", h.apiJobLogs)
	mux.HandleFunc("GET /api/jobs/{id}/tasks", h.apiJobTasks)
	mux.HandleFunc("GET /api/jobs/{id}/logs/events", h.jobLogEvents)
	h.registerSearchRoutes(mux)
	mux.Handle("GET /static/", http.StripPrefix("/static/", noCache(http.FileServerFS(assets))))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.errorPage(w, r, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	})
	return securityHeaders(mux)
}

// record adds the progress of every job to the history each interval until ctx ends.
func (h *handler) record(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err := h.listJobs(cctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			h.log.Warn("dashboard: recording job progress failed; retrying", "err", err)
			failing = true
		case err == nil && failing:
			h.log.Info("dashboard: recording job progress again")
			failing = false
		}
	}
}

// securityHeaders sets the headers every response carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// noCache makes browsers revalidate embedded assets, which change with the binary.
func noCache(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// statusOf maps a Source error to an HTTP status code.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// sourceError logs a failed Source call (unless the client went away) and returns
// its status code.
func (h *handler) sourceError(r *http.Request, what string, err error) int {
	code := statusOf(err)
	if r.Context().Err() == nil && code != http.StatusNotFound {
		h.log.Warn("dashboard: source call failed", "call", what, "path", r.URL.Path, "err", err)
	}
	return code
}

// snapshot is what the overview and jobs pages show.
type snapshot struct {
	Jobs    []JobView
	Counts  map[string]int
	States  []string
	Nodes   []NodeView
	Peers   []PeerView
	Leader  string
	PeerErr string
}

// listJobs reads every job, records curve points and sorts the newest first.
func (h *handler) listJobs(ctx context.Context) ([]JobView, error) {
	jobs, err := h.src.ListJobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	now := h.now()
	views := make([]JobView, 0, len(jobs))
	for _, j := range jobs {
		h.hist.record(j, now)
		views = append(views, jobView(j, now))
	}
	slices.SortStableFunc(views, func(a, b JobView) int {
		if c := timeCmp(b.SubmitTime, a.SubmitTime); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return views, nil
}

func timeCmp(a, b *time.Time) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return a.Compare(*b)
}

func (h *handler) listNodes(ctx context.Context) ([]NodeView, error) {
	nodes, err := h.src.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	now := h.now()
	views := make([]NodeView, 0, len(nodes))
	for _, n := range nodes {
		views = append(views, nodeView(n, now))
	}
	slices.SortFunc(views, func(a, b NodeView) int { return strings.Compare(a.Name, b.Name) })
	return views, nil
}

func (h *handler) listPeers(ctx context.Context) ([]PeerView, error) {
	peers, err := h.src.Peers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	views := make([]PeerView, 0, len(peers))
	for _, p := range peers {
		views = append(views, peerView(p))
	}
	slices.SortFunc(views, func(a, b PeerView) int { return strings.Compare(a.ID, b.ID) })
	return views, nil
}

func (h *handler) overviewPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	var s snapshot
	var err error
	if s.Nodes, err = h.listNodes(ctx); err != nil {
		h.errorPage(w, r, h.sourceError(r, "ListNodes", err), "Cannot read the nodes: "+err.Error())
		return
	}
	jobs, err := h.listJobs(ctx)
	if err != nil {
		h.errorPage(w, r, h.sourceError(r, "ListJobs", err), "Cannot read the jobs: "+err.Error())
		return
	}
	s.Counts, s.States = countByState(jobs), jobStates
	if s.Peers, err = h.listPeers(ctx); err != nil {
		h.sourceError(r, "Peers", err)
		s.PeerErr = err.Error() // the overview still shows nodes and jobs
	}
	for _, p := range s.Peers {
		if p.Leader {
			s.Leader = p.ID
		}
	}
	h.render(w, r, "overview", s)
}

func (h *handler) jobsPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	q, err := parseJobsQuery(r.URL.Query())
	if err != nil {
		h.errorPage(w, r, http.StatusBadRequest, "Cannot list the jobs: "+err.Error()+".")
		return
	}
	jobs, err := h.listJobs(ctx)
	if err != nil {
		h.errorPage(w, r, h.sourceError(r, "ListJobs", err), "Cannot read the jobs: "+err.Error())
		return
	}
	h.render(w, r, "jobs", jobsPageData{Jobs: q.apply(jobs), Counts: countByState(jobs), States: jobStates,
		Namespaces: namespacesOf(jobs), Query: q, Sorts: q.sortLinks(), Total: len(jobs)})
}

// getJob reads one job and records its curve point.
func (h *handler) getJob(ctx context.Context, id string) (JobView, error) {
	j, err := h.src.GetJob(ctx, id)
	if err != nil {
		return JobView{}, fmt.Errorf("get job %s: %w", id, err)
	}
	now := h.now()
	h.hist.record(j, now)
	return jobView(j, now), nil
}

func (h *handler) jobPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	id := r.PathValue("id")
	j, err := h.src.GetJob(ctx, id)
	if err != nil {
		h.errorPage(w, r, h.sourceError(r, "GetJob", err), "Cannot read job "+id+": "+err.Error())
		return
	}
	now := h.now()
	h.hist.record(j, now)
	data := jobPageData{JobView: jobView(j, now), Spec: specView(j), Tasks: taskNames(j)}
	_, data.HasLogs = h.src.(LogSource)
	_, data.HasEpochs = h.src.(EpochSource)
	_, data.HasCheckpoints = h.src.(CheckpointSource)
	_, data.HasTasks = h.src.(TaskSource)
	h.render(w, r, "job", data)
}

func (h *handler) apiNodes(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	nodes, err := h.listNodes(ctx)
	if err != nil {
		writeJSONError(w, h.sourceError(r, "ListNodes", err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": nodes})
}

func (h *handler) apiPeers(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	peers, err := h.listPeers(ctx)
	if err != nil {
		writeJSONError(w, h.sourceError(r, "Peers", err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"peers": peers})
}

func (h *handler) apiJobs(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	q, err := parseJobsQuery(r.URL.Query())
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	jobs, err := h.listJobs(ctx)
	if err != nil {
		writeJSONError(w, h.sourceError(r, "ListJobs", err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": q.apply(jobs), "counts": countByState(jobs), "namespaces": namespacesOf(jobs)})
}

func (h *handler) apiJob(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	id := r.PathValue("id")
	j, err := h.getJob(ctx, id)
	if err != nil {
		writeJSONError(w, h.sourceError(r, "GetJob", err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, jobEvent{Job: j, Points: h.hist.since(id, 0)})
}

// apiJobReport answers a job's report.json as the Source stores it, after checking
// that it is JSON of a bounded size. The JSON is passed on, not decoded: the dashboard
// does not depend on the report's Go types, and a newer report version reaches the
// page unchanged. Only <, > and & in its strings are escaped (as \u003c etc.), as in
// every other JSON response.
func (h *handler) apiJobReport(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rs, ok := h.src.(ReportSource)
	if !ok {
		writeJSONError(w, http.StatusNotFound, "job reports are not available from this dashboard's source")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	data, err := rs.JobReport(ctx, id)
	if err != nil {
		writeJSONError(w, h.sourceError(r, "JobReport", err), fmt.Sprintf("report of job %s: %v", id, err))
		return
	}
	if len(data) > maxReportBytes {
		h.log.Warn("dashboard: job report too large", "job", id, "bytes", len(data))
		writeJSONError(w, http.StatusBadGateway, fmt.Sprintf("report of job %s: %d bytes, more than the %d the dashboard serves", id, len(data), maxReportBytes))
		return
	}
	if !json.Valid(data) {
		h.log.Warn("dashboard: job report is not valid JSON", "job", id, "bytes", len(data))
		writeJSONError(w, http.StatusBadGateway, "report of job "+id+" is not valid JSON")
		return
	}
	var b bytes.Buffer
	b.Grow(len(data) + 1)
	json.HTMLEscape(&b, data)
	b.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

// jobEvent is the payload of /api/jobs/{id} and of each server-sent event: the job and
// the curve points the receiver has not seen yet (all of them in the first event).
type jobEvent struct {
	Job    JobView `json:"job"`
	Points []Point `json:"points"`
}

// jobEvents streams a job's updates as server-sent events. It polls the Source every
// PollInterval and sends an event when the job's progress or state changed; the first
// event carries the whole curve history. The stream ends with an "end" event once the
// job is terminal.
func (h *handler) jobEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	fl, ok := w.(http.Flusher)
	if !ok {
		writeJSONError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ctx := r.Context()
	first, err := h.pollJob(ctx, id)
	if err != nil {
		writeJSONError(w, h.sourceError(r, "GetJob", err), err.Error())
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var lastSeq, lastIndex uint64
	var lastState string
	lastWrite := time.Now()
	send := func(j JobView) error {
		pts := h.hist.since(id, lastSeq)
		if len(pts) == 0 && j.State == lastState && j.ModifyIndex == lastIndex && lastState != "" {
			return nil
		}
		if n := len(pts); n > 0 {
			lastSeq = pts[n-1].Seq
		}
		lastState, lastIndex = j.State, j.ModifyIndex
		data, err := json.Marshal(jobEvent{Job: j, Points: pts})
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		if _, err := fmt.Fprintf(w, "event: job\ndata: %s\n\n", data); err != nil {
			return fmt.Errorf("write event: %w", err)
		}
		fl.Flush()
		lastWrite = time.Now()
		return nil
	}
	if err := send(first); err != nil {
		return
	}
	tick := time.NewTicker(h.poll)
	defer tick.Stop()
	j := first
	for !j.Terminal {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		next, err := h.pollJob(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.log.Warn("dashboard: event stream poll failed", "job", id, "err", err)
		} else {
			j = next
			if err := send(j); err != nil {
				return
			}
		}
		if time.Since(lastWrite) >= keepAliveInterval {
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
			lastWrite = time.Now()
		}
	}
	_, _ = fmt.Fprint(w, "event: end\ndata: {}\n\n")
	fl.Flush()
}

// pollJob reads one job for an event stream, bounded by requestTimeout.
func (h *handler) pollJob(ctx context.Context, id string) (JobView, error) {
	cctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return h.getJob(cctx, id)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v) // escapes <, > and & as \u003c etc.
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// parsePages parses each page template together with the shared layout.
func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"pct": func(f float64) string { return fmt.Sprintf("%.0f%%", f) },
		// when formats a time for people, in UTC; "—" for none.
		"when": func(t *time.Time) string {
			if t == nil {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		// unixms is a time in Unix milliseconds for a data attribute ("" for none).
		"unixms": func(t *time.Time) string {
			if t == nil {
				return ""
			}
			return strconv.FormatInt(t.UnixMilli(), 10)
		},
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview", "jobs", "job", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(staticFS,
			"static/templates/layout.html", "static/templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: parse template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// layoutData is what the shared layout executes with: the page's own data (the dot of
// its "title" and "content" templates) and the session's CSRF token, which the layout
// puts in a csrf-token meta tag and the Log out form when the dashboard requires a
// login.
type layoutData struct {
	Page any
	CSRF string
}

// render executes a page into a buffer first, so that a template error becomes a 500
// instead of half a page.
func (h *handler) render(w http.ResponseWriter, r *http.Request, page string, data any) {
	h.renderCode(w, r, http.StatusOK, page, data)
}

func (h *handler) renderCode(w http.ResponseWriter, r *http.Request, code int, page string, data any) {
	var b strings.Builder
	if err := h.pages[page].Execute(&b, layoutData{Page: data, CSRF: csrfToken(r.Context())}); err != nil {
		h.log.Error("dashboard: render page", "page", page, "err", err)
		http.Error(w, "render page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprint(w, b.String())
}

func (h *handler) errorPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h.renderCode(w, r, code, "error", struct {
		Code    int
		Status  string
		Message string
	}{code, http.StatusText(code), msg})
}
