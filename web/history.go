package web

import (
	"sync"
	"time"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Point is one sample of a job's training curve: the progress and metrics the job
// reported at the end of an epoch.
type Point struct {
	// Seq numbers the points of one job from 1, in the order the dashboard saw them.
	Seq              uint64            `json:"seq"`
	Time             time.Time         `json:"time"`
	Epoch            int32             `json:"epoch"`
	Step             int64             `json:"step"`
	Loss             Number            `json:"loss"`
	SamplesPerSecond Number            `json:"samples_per_second"`
	Metrics          map[string]Number `json:"metrics"`
	// IntervalLoss is the mean training loss since the chief's previous report, over
	// IntervalRows rows (0: the point is not an in-epoch report).
	IntervalLoss Number `json:"interval_loss"`
	IntervalRows int64  `json:"interval_rows"`
}

// history keeps the last maxPoints curve points of at most maxJobs jobs, so that a
// job page opened late still draws what the dashboard saw earlier.
type history struct {
	mu        sync.Mutex
	maxJobs   int
	maxPoints int
	tick      uint64 // recency clock for eviction
	jobs      map[string]*jobHistory
}

type jobHistory struct {
	points  []Point
	nextSeq uint64
	used    uint64
}

func newHistory(maxJobs, maxPoints int) *history {
	return &history{maxJobs: maxJobs, maxPoints: maxPoints, jobs: make(map[string]*jobHistory)}
}

// record adds a point for j when its progress differs from the last point recorded.
// A job that has not reported progress yet adds nothing.
func (h *history) record(j *cohortv1.Job, now time.Time) {
	p := j.GetProgress()
	if p == nil || (p.GetEpoch() == 0 && p.GetStep() == 0) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tick++
	jh := h.jobs[j.GetId()]
	if jh == nil {
		jh = &jobHistory{nextSeq: 1, used: h.tick}
		h.jobs[j.GetId()] = jh
		h.evictLocked()
	}
	jh.used = h.tick
	if n := len(jh.points); n > 0 && jh.points[n-1].Epoch == p.GetEpoch() && jh.points[n-1].Step == p.GetStep() {
		return
	}
	pt := Point{
		Seq: jh.nextSeq, Time: now.UTC(), Epoch: p.GetEpoch(), Step: p.GetStep(),
		Loss: Number(p.GetLoss()), SamplesPerSecond: Number(p.GetSamplesPerSecond()),
		IntervalLoss: Number(p.GetIntervalLoss()), IntervalRows: p.GetIntervalRows(),
		Metrics: make(map[string]Number, len(j.GetMetrics())),
	}
	for k, v := range j.GetMetrics() {
		pt.Metrics[k] = Number(v)
	}
	jh.nextSeq++
	jh.points = append(jh.points, pt)
	if over := len(jh.points) - h.maxPoints; over > 0 {
		jh.points = append(jh.points[:0], jh.points[over:]...)
	}
}

// evictLocked drops the least recently used job while more than maxJobs are kept.
func (h *history) evictLocked() {
	for len(h.jobs) > h.maxJobs {
		var oldest string
		var used uint64
		for id, jh := range h.jobs {
			if oldest == "" || jh.used < used {
				oldest, used = id, jh.used
			}
		}
		delete(h.jobs, oldest)
	}
}

// since returns a copy of the job's points with a sequence number above seq.
func (h *history) since(id string, seq uint64) []Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	jh := h.jobs[id]
	if jh == nil {
		return []Point{}
	}
	out := []Point{}
	for _, p := range jh.points {
		if p.Seq > seq {
			out = append(out, p)
		}
	}
	return out
}
