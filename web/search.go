package web

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cohort-dev/cohort/coordinator/search"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// SearchSource is a Source that can also read hyperparameter searches; the dashboard
// serves /searches and /searches/{id} when its Source is one.
type SearchSource interface {
	// ListSearches returns every search the caller may read.
	ListSearches(ctx context.Context) ([]*cohortv1.Search, error)
	// GetSearch returns a search with its trials' jobs, or an error wrapping
	// ErrNotFound.
	GetSearch(ctx context.Context, id string) (*cohortv1.GetSearchResponse, error)
}

// SearchRowView is one search of the searches page.
type SearchRowView struct {
	ID, Name, Namespace, State, Algorithm, Metric, Message string
	Trials, Started                                        int
	SubmitTime                                             *time.Time
}

// TrialView is one row of a search page's trials table.
type TrialView struct {
	Index      int
	JobID      string
	Status     string
	Parameters string
	Epochs     int
	Objective  string
	Best       bool
	Decisions  []string
	Message    string
	// Values are the objective per epoch (1..MaxEpoch; "" where none was reported).
	Values []string
	// Points is the trial's curve in the chart's SVG coordinates; Color its stroke.
	Points string
	Color  string
}

// searchPageData is what the search page renders.
type searchPageData struct {
	ID, Name, Namespace, State, Message, Algorithm, Metric, Mode string
	ASHA                                                         string
	SubmitTime, EndTime                                          *time.Time
	Trials                                                       []TrialView
	Epochs                                                       []int
	Best                                                         *TrialView
	BestValue                                                    string
	ChartMin, ChartMax                                           string
}

var searchPalette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// registerSearchRoutes adds the search pages to mux.
func (h *handler) registerSearchRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /searches", h.searchesPage)
	mux.HandleFunc("GET /searches/{id}", h.searchPage)
	mux.HandleFunc("GET /api/searches/{id}", h.apiSearch)
}

var searchPages = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"when": func(t *time.Time) string {
			if t == nil {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"searches", "search"} {
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(staticFS,
			"static/templates/layout.html", "static/templates/"+name+".html"))
	}
	return out
}()

func (h *handler) searchSource(w http.ResponseWriter, r *http.Request) (SearchSource, bool) {
	ss, ok := h.src.(SearchSource)
	if !ok {
		h.errorPage(w, r, http.StatusNotFound, "This dashboard cannot read searches.")
	}
	return ss, ok
}

func (h *handler) renderSearch(w http.ResponseWriter, r *http.Request, page string, data any) {
	var b strings.Builder
	if err := searchPages[page].Execute(&b, layoutData{Page: data, CSRF: csrfToken(r.Context())}); err != nil {
		h.log.Error("dashboard: render page", "page", page, "err", err)
		http.Error(w, "render page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(b.String()))
}

func unixTime(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns)
	return &t
}

func (h *handler) searchesPage(w http.ResponseWriter, r *http.Request) {
	ss, ok := h.searchSource(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	list, err := ss.ListSearches(ctx)
	if err != nil {
		h.errorPage(w, r, h.sourceError(r, "ListSearches", err), "Cannot list searches: "+err.Error())
		return
	}
	rows := []SearchRowView{}
	for _, s := range list {
		row := SearchRowView{ID: s.Id, Name: s.Name, Namespace: s.Namespace, State: search.StateWord(s.State), Algorithm: s.Algorithm,
			Metric: s.Metric, Message: s.StatusMessage, Trials: len(s.Trials), SubmitTime: unixTime(s.SubmitTimeUnixNano)}
		for _, t := range s.Trials {
			if t.Started {
				row.Started++
			}
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b SearchRowView) int { return cmp.Compare(b.ID, a.ID) })
	h.renderSearch(w, r, "searches", rows)
}

func (h *handler) getSearch(w http.ResponseWriter, r *http.Request) (*cohortv1.GetSearchResponse, bool) {
	ss, ok := h.searchSource(w, r)
	if !ok {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	id := r.PathValue("id")
	resp, err := ss.GetSearch(ctx, id)
	if err != nil {
		h.errorPage(w, r, h.sourceError(r, "GetSearch", err), "Cannot read search "+id+": "+err.Error())
		return nil, false
	}
	return resp, true
}

func (h *handler) searchPage(w http.ResponseWriter, r *http.Request) {
	resp, ok := h.getSearch(w, r)
	if !ok {
		return
	}
	h.renderSearch(w, r, "search", searchView(resp))
}

// apiSearch returns the search page's data as JSON.
func (h *handler) apiSearch(w http.ResponseWriter, r *http.Request) {
	ss, ok := h.src.(SearchSource)
	if !ok {
		writeJSONError(w, http.StatusNotFound, "this dashboard cannot read searches")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	resp, err := ss.GetSearch(ctx, r.PathValue("id"))
	if err != nil {
		writeJSONError(w, h.sourceError(r, "GetSearch", err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, searchView(resp))
}

// chart geometry of the search page's SVG (viewBox 0 0 600 240, 40 px margins).
const (
	chartW, chartH, chartPad = 600.0, 240.0, 40.0
)

func searchView(resp *cohortv1.GetSearchResponse) searchPageData {
	s := resp.GetSearch()
	jobs := map[string]*cohortv1.Job{}
	for _, j := range resp.GetJobs() {
		jobs[j.Id] = j
	}
	mode := "min"
	if s.Maximize {
		mode = "max"
	}
	d := searchPageData{ID: s.Id, Name: s.Name, Namespace: s.Namespace, State: search.StateWord(s.State), Message: s.StatusMessage,
		Algorithm: s.Algorithm, Metric: s.Metric, Mode: mode, SubmitTime: unixTime(s.SubmitTimeUnixNano), EndTime: unixTime(s.EndTimeUnixNano)}
	if s.Algorithm == "asha" {
		d.ASHA = fmt.Sprintf("rungs at epochs %v of %d, reduction factor %d", search.Rungs(int(s.MinEpochs), int(s.MaxEpochs), int(s.ReductionFactor)), s.MaxEpochs, s.ReductionFactor)
	}
	maxEpoch := 0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, t := range s.Trials {
		for _, e := range t.Epochs {
			maxEpoch = max(maxEpoch, int(e.Epoch))
			if v, ok := e.Metrics[s.Metric]; ok && !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if hi < lo {
		lo, hi = 0, 1
	}
	if hi-lo < 1e-9 {
		lo, hi = lo-0.5, hi+0.5
	}
	d.ChartMin, d.ChartMax = strconv.FormatFloat(lo, 'f', 4, 64), strconv.FormatFloat(hi, 'f', 4, 64)
	for e := 1; e <= maxEpoch; e++ {
		d.Epochs = append(d.Epochs, e)
	}
	best := int(resp.GetBestTrial())
	for _, t := range s.Trials {
		job := jobs[t.GetJob().GetId()]
		tv := TrialView{Index: int(t.Index), JobID: t.GetJob().GetId(), Status: search.TrialStatus(t, job), Parameters: trialParams(t.Parameters),
			Epochs: len(t.Epochs), Objective: "—", Best: int(t.Index) == best, Color: searchPalette[int(t.Index)%len(searchPalette)]}
		if job != nil && (job.State == cohortv1.JobState_JOB_STATE_FAILED || job.State == cohortv1.JobState_JOB_STATE_CANCELLED) {
			tv.Message = job.StatusMessage
		}
		if v, _, ok := search.TrialValue(s, t, job); ok {
			tv.Objective = strconv.FormatFloat(v, 'f', 4, 64)
		}
		for _, dec := range t.Decisions {
			word := "promoted"
			if !dec.Promoted {
				word = "stopped"
			}
			tv.Decisions = append(tv.Decisions, fmt.Sprintf("rung %d (epoch %d): %s", dec.Rung, dec.Epoch, word))
		}
		tv.Values = make([]string, maxEpoch)
		var pts []string
		for _, e := range t.Epochs {
			v, ok := e.Metrics[s.Metric]
			if !ok || math.IsNaN(v) || e.Epoch < 1 {
				continue
			}
			tv.Values[e.Epoch-1] = strconv.FormatFloat(v, 'f', 4, 64)
			x := chartPad + (chartW-2*chartPad)*float64(e.Epoch-1)/math.Max(float64(maxEpoch-1), 1)
			y := chartH - chartPad - (chartH-2*chartPad)*(v-lo)/(hi-lo)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		tv.Points = strings.Join(pts, " ")
		d.Trials = append(d.Trials, tv)
		if tv.Best {
			b := tv
			d.Best, d.BestValue = &b, tv.Objective
		}
	}
	return d
}

func trialParams(p map[string]string) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := p[k]
		var f float64
		if err := json.Unmarshal([]byte(v), &f); err == nil && strings.ContainsAny(v, ".eE") {
			v = strconv.FormatFloat(f, 'g', 4, 64)
		}
		parts[i] = k + "=" + v
	}
	return strings.Join(parts, " ")
}
