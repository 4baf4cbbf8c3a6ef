package tasklog

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
)

// Router is a slog.Handler for a process that hosts parameter-server shards. Every
// record goes to the base handler; a record whose logger carries the attributes "job"
// and "shard" (as the parameter server's per-shard loggers do) also goes to the task
// log of that shard, when one is open (see OpenShard). The parameter server needs no
// knowledge of task logs.
type Router struct {
	base   slog.Handler
	cfg    Config
	level  slog.Leveler // cfg's, with its default
	routes *routes
	// ops replays the logger's WithAttrs/WithGroup calls on a task log's handler.
	ops        []func(slog.Handler) slog.Handler
	inGroup    bool
	job, shard string
}

type routes struct {
	mu sync.RWMutex
	m  map[string]*route // "<job>/<shard>" -> the open writer's handler
}

type route struct {
	w *Writer
	h slog.Handler
}

// NewRouter returns a Router over base whose task logs are written with cfg.
func NewRouter(base slog.Handler, cfg Config) *Router {
	return &Router{base: base, cfg: cfg, level: cfg.withDefaults().Level, routes: &routes{m: map[string]*route{}}}
}

// OpenShard opens the task log of shard of job jobID in generation gen and routes the
// shard's records to it until the writer is closed.
func (r *Router) OpenShard(jobID string, shard int, gen uint64) (*Writer, error) {
	w, err := r.cfg.Open(jobID, taskName(psTask, shard), gen)
	if err != nil {
		return nil, err
	}
	key := jobID + "/" + strconv.Itoa(shard)
	rt := &route{w: w, h: w.Handler()}
	r.routes.mu.Lock()
	r.routes.m[key] = rt
	r.routes.mu.Unlock()
	w.close = func() {
		r.routes.mu.Lock()
		if r.routes.m[key] == rt { // a newer writer of the shard keeps its route
			delete(r.routes.m, key)
		}
		r.routes.mu.Unlock()
	}
	return w, nil
}

// Enabled implements slog.Handler.
func (r *Router) Enabled(ctx context.Context, l slog.Level) bool {
	return r.base.Enabled(ctx, l) || (r.job != "" && r.shard != "" && l >= r.level.Level())
}

// Handle implements slog.Handler.
func (r *Router) Handle(ctx context.Context, rec slog.Record) error {
	var err error
	if r.base.Enabled(ctx, rec.Level) {
		err = r.base.Handle(ctx, rec)
	}
	if r.job == "" || r.shard == "" {
		return err
	}
	r.routes.mu.RLock()
	rt := r.routes.m[r.job+"/"+r.shard]
	r.routes.mu.RUnlock()
	if rt == nil {
		return err
	}
	h := rt.h
	for _, op := range r.ops {
		h = op(h)
	}
	if h.Enabled(ctx, rec.Level) {
		_ = h.Handle(ctx, rec.Clone()) // a task log never fails the caller's logging
	}
	return err
}

// WithAttrs implements slog.Handler.
func (r *Router) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *r
	n.base = r.base.WithAttrs(attrs)
	n.ops = append(r.ops[:len(r.ops):len(r.ops)], func(h slog.Handler) slog.Handler { return h.WithAttrs(attrs) })
	if !r.inGroup {
		for _, a := range attrs {
			switch a.Key {
			case "job":
				n.job = a.Value.Resolve().String()
			case "shard":
				n.shard = a.Value.Resolve().String()
			}
		}
	}
	return &n
}

// WithGroup implements slog.Handler.
func (r *Router) WithGroup(name string) slog.Handler {
	if name == "" {
		return r
	}
	n := *r
	n.base = r.base.WithGroup(name)
	n.ops = append(r.ops[:len(r.ops):len(r.ops)], func(h slog.Handler) slog.Handler { return h.WithGroup(name) })
	n.inGroup = true
	return &n
}
