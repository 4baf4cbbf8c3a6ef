// Package agent is the node agent shared by worker and parameter-server nodes: it
// registers the node with the coordinator, keeps its heartbeat, watches the node's
// assignments (reconnecting after errors such as a leader change) and hands each
// allocation to a Runner, forwarding the runner's task reports to the coordinator.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ReportFunc sends one task report to the coordinator. It never blocks for long: reports
// are queued and delivered in order, with retries.
type ReportFunc func(*cohortv1.TaskReport)

// assignmentSeen is what of an assignment the agent last handed its runner: a change of
// either is handed over again (Updater): the allocation's modify index (its membership)
// and the checkpoint its job record points at (the chief's retention keeps it).
type assignmentSeen struct {
	modifyIndex uint64
	checkpoint  string
	// peer is a replicated shard's other copy (its backup moves without a change of
	// the primary's allocation).
	peer string
}

// Runner runs the allocations of one kind on this node.
type Runner interface {
	// Kind is the task kind this runner accepts.
	Kind() cohortv1.TaskKind
	// Start begins running an allocation. It must return quickly; the work runs until
	// ctx is cancelled or it ends on its own, and reports through report. Start is
	// called once per allocation ID.
	Start(ctx context.Context, a *cohortv1.Assignment, report ReportFunc)
	// Stop ends an allocation that is no longer assigned (the coordinator stopped it or
	// its job ended). Its context is cancelled as well.
	Stop(allocationID string)
}

// Updater is implemented by a Runner whose running allocations follow changes of their
// assignment without a restart (an elastic job's membership: a newer generation, a new
// worker rank or world size; the checkpoint the job record points at).
type Updater interface {
	// Update hands a running allocation its changed assignment. It must return quickly
	// and ignore assignments that are not newer than what the allocation runs under.
	Update(a *cohortv1.Assignment)
}

// Config configures an Agent.
type Config struct {
	// Conn is a client connection to a coordinator.
	Conn grpc.ClientConnInterface
	// Node describes this node; ID may be empty (the coordinator assigns one).
	Node *cohortv1.Node
	// Runners run this node's allocations, one per task kind.
	Runners []Runner
	// HeartbeatInterval is how often the node heartbeats (default 2s).
	HeartbeatInterval time.Duration
	// RetryInterval is the first back-off after a failed call (default 100ms, doubling
	// up to 2s).
	RetryInterval time.Duration
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// GPUUsage, when set, samples the node's GPUs for every heartbeat (usage.go).
	GPUUsage GPUUsageFunc
	// StateDir, when set, is where the agent keeps the ID of the cluster it joined
	// (file cluster-id), so that a restarted agent still refuses coordinators of
	// another cluster. Empty: the agent remembers the ID in memory only.
	StateDir string
	// ClusterID, when set, is the cluster the agent must join (it overrides the one
	// in StateDir).
	ClusterID string
	// OnRevokedTokens, when set, receives the ids of the revoked join tokens with
	// every assignment message (the whole set each time, sorted): a parameter server
	// refuses callers whose certificates name one.
	OnRevokedTokens func(ids []string)
	// OnTrustBundle, when set, receives the cluster's trust bundle (PEM) with every
	// assignment message that carries one (after a CA rotation).
	OnTrustBundle func(pem []byte)
}

// DefaultConfig returns a Config with default intervals.
func DefaultConfig() Config {
	return Config{HeartbeatInterval: 2 * time.Second, RetryInterval: 100 * time.Millisecond}
}

// Agent is a running node agent.
type Agent struct {
	cfg     Config
	jobs    cohortv1.AgentServiceClient
	log     *slog.Logger
	runners map[cohortv1.TaskKind]Runner

	mu      sync.Mutex
	node    *cohortv1.Node
	running map[string]context.CancelFunc // allocation ID -> cancel
	runBy   map[string]Runner
	seen    map[string]assignmentSeen // allocation ID -> what was last handed over
	// cluster is the ID of the cluster the node joined: set by its first registration
	// (or a heartbeat, when the cluster had none yet), then checked on every call.
	cluster string

	reports chan *cohortv1.TaskReport
	ready   chan struct{}
	// resync asks the assignment stream to reopen: heartbeats got through again after
	// failing, so the stream may hang on a connection that died meanwhile.
	resync chan struct{}

	usageState
}

// New returns an Agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	d := DefaultConfig()
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = d.HeartbeatInterval
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = d.RetryInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Conn == nil {
		return nil, errors.New("agent: Config.Conn is required")
	}
	if cfg.Node == nil {
		return nil, errors.New("agent: Config.Node is required")
	}
	a := &Agent{
		cfg:     cfg,
		jobs:    cohortv1.NewAgentServiceClient(cfg.Conn),
		log:     cfg.Logger,
		runners: map[cohortv1.TaskKind]Runner{},
		running: map[string]context.CancelFunc{},
		runBy:   map[string]Runner{},
		seen:    map[string]assignmentSeen{},
		reports: make(chan *cohortv1.TaskReport, 1024),
		ready:   make(chan struct{}),
		resync:  make(chan struct{}, 1),
	}
	for _, r := range cfg.Runners {
		a.runners[r.Kind()] = r
	}
	a.cluster = cfg.ClusterID
	if a.cluster == "" && cfg.StateDir != "" {
		id, err := loadClusterID(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		a.cluster = id
	}
	return a, nil
}

// Ready is closed once the node has registered.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Node returns the node as the coordinator registered it (nil before registration).
func (a *Agent) Node() *cohortv1.Node {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.node
}

// Run registers the node and serves until ctx is cancelled. It returns ctx's error.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.register(ctx); err != nil {
		return err
	}
	close(a.ready)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); a.heartbeatLoop(ctx) }()
	go func() { defer wg.Done(); a.reportLoop(ctx) }()
	go func() { defer wg.Done(); a.watchLoop(ctx) }()
	wg.Wait()
	a.stopAll()
	return ctx.Err()
}

func (a *Agent) register(ctx context.Context) error {
	back := a.cfg.RetryInterval
	var last error // the last failure not caused by ctx's end: why the node never registered
	for {
		var p peer.Peer
		resp, err := a.jobs.RegisterNode(ctx, &cohortv1.RegisterNodeRequest{Node: a.cfg.Node, ClusterId: a.ClusterID()},
			grpc.Peer(&p))
		if err == nil {
			err = a.learnCluster(resp.GetClusterId(), &p)
		}
		if err == nil {
			a.mu.Lock()
			a.node = resp.GetNode()
			a.mu.Unlock()
			a.log.Info("node registered", "node_id", resp.GetNode().GetId(),
				"generation", resp.GetNode().GetRegistrationGeneration())
			return nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("agent: register node: %w", last)
		}
		a.log.Warn("node registration failed; retrying", "err", err, "coordinator", peerAddr(&p), "backoff", back)
		if werr := wait(ctx, back); werr != nil {
			return fmt.Errorf("agent: register node: %w", last)
		}
		back = min(back*2, 2*time.Second)
	}
}

func (a *Agent) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	defer a.startUsage()()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := a.Node()
		req := &cohortv1.HeartbeatRequest{NodeId: n.GetId(), RegistrationGeneration: n.GetRegistrationGeneration(),
			ClusterId: a.ClusterID()}
		a.usage(req, time.Now())
		var p peer.Peer
		resp, err := a.jobs.Heartbeat(ctx, req, grpc.Peer(&p))
		if err == nil {
			err = a.learnCluster(resp.GetClusterId(), &p)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			a.log.Warn("heartbeat failed", "err", err, "coordinator", peerAddr(&p))
			failing = true
		case err == nil && failing:
			// Back in touch: the assignment stream may be stuck on a connection that
			// died while the coordinators were out of reach (or on a coordinator that
			// is no longer in the majority); reopen it now instead of waiting for a
			// keepalive or a reset to end it.
			failing = false
			a.log.Info("heartbeat got through again; reopening the assignment stream")
			select {
			case a.resync <- struct{}{}:
			default:
			}
		}
	}
}

// ReportSessionLoss tells the coordinators that a worker's session at this node's
// parameter-server shards broke (the worker's process, host or link may be gone): the
// leader confirms by the worker node's heartbeats and marks it down fast if they have
// stopped. Best effort: it tries once, for at most 5 s, and logs a failure.
func (a *Agent) ReportSessionLoss(ctx context.Context, jobID string, generation uint64, rank int) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := a.jobs.ReportSessionLoss(ctx, &cohortv1.ReportSessionLossRequest{
		NodeId: a.Node().GetId(), JobId: jobID, Generation: generation, WorkerRank: int32(rank)})
	if err != nil {
		a.log.Warn("could not report a lost worker session", "job_id", jobID, "generation", generation, "rank", rank, "err", err)
		return
	}
	a.log.Info("lost worker session reported", "job_id", jobID, "generation", generation, "rank", rank,
		"suspected", resp.GetSuspected())
}

// ReportShardLoss tells the coordinators that this worker cannot reach the primary of
// shard of job (replicated shards): the leader confirms and, if the node is gone,
// promotes the shard's backup at once.
func (a *Agent) ReportShardLoss(ctx context.Context, jobID string, generation uint64, shard int) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := a.jobs.ReportSessionLoss(ctx, &cohortv1.ReportSessionLossRequest{
		NodeId: a.Node().GetId(), JobId: jobID, Generation: generation, ShardPrimary: true, Shard: int32(shard)})
	if err != nil {
		a.log.Warn("could not report an unreachable shard", "job_id", jobID, "generation", generation, "shard", shard, "err", err)
		return
	}
	a.log.Info("unreachable shard reported", "job_id", jobID, "generation", generation, "shard", shard,
		"suspected", resp.GetSuspected())
}

// report queues a task report for delivery. An interim (in-epoch progress) report is
// dropped rather than waited for when the queue is full (interimReport, usage.go).
func (a *Agent) report(r *cohortv1.TaskReport) {
	if a.interimReport(r) {
		return
	}
	a.reports <- r
}

func (a *Agent) reportLoop(ctx context.Context) {
	for {
		var batch []*cohortv1.TaskReport
		select {
		case <-ctx.Done():
			return
		case r := <-a.reports:
			batch = append(batch, r)
		}
	drain:
		for len(batch) < 64 {
			select {
			case r := <-a.reports:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		back := a.cfg.RetryInterval
		for {
			_, err := a.jobs.ReportTasks(ctx, &cohortv1.ReportTasksRequest{Reports: batch})
			if err == nil {
				break
			}
			a.log.Warn("task report failed; retrying", "err", err, "reports", len(batch))
			if wait(ctx, back) != nil {
				return
			}
			back = min(back*2, 2*time.Second)
		}
	}
}

func (a *Agent) watchLoop(ctx context.Context) {
	back := a.cfg.RetryInterval
	for ctx.Err() == nil {
		err := a.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errResync) {
			back = a.cfg.RetryInterval
			continue
		}
		a.log.Warn("assignment stream ended; reconnecting", "err", err, "backoff", back)
		if wait(ctx, back) != nil {
			return
		}
		back = min(back*2, 2*time.Second)
	}
}

// errResync ends an assignment stream that the heartbeat loop asked to reopen.
var errResync = errors.New("agent: assignment stream reopened after the coordinators were unreachable")

func (a *Agent) watchOnce(ctx context.Context) error {
	select {
	case <-a.resync: // an old request: this stream is new anyway
	default:
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-sctx.Done():
		case <-a.resync:
			cancel(errResync)
		}
	}()
	stream, err := a.jobs.WatchAssignments(sctx, &cohortv1.WatchAssignmentsRequest{NodeId: a.Node().GetId(), ClusterId: a.ClusterID()})
	if err != nil && context.Cause(sctx) == errResync {
		return errResync
	}
	if err != nil {
		return fmt.Errorf("open assignment stream: %w", err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if context.Cause(sctx) == errResync {
				return errResync
			}
			return fmt.Errorf("receive assignments: %w", err)
		}
		if f := a.cfg.OnRevokedTokens; f != nil {
			f(msg.GetRevokedTokens())
		}
		if f := a.cfg.OnTrustBundle; f != nil && len(msg.GetTrustBundlePem()) > 0 {
			f(msg.GetTrustBundlePem())
		}
		a.reconcile(ctx, msg.GetAssignments())
	}
}

// reconcile starts allocations that are new and live, and stops the ones that are no
// longer assigned or that the coordinator has stopped.
func (a *Agent) reconcile(ctx context.Context, as []*cohortv1.Assignment) {
	live := map[string]bool{}
	for _, as := range as {
		alloc := as.GetAllocation()
		if !liveTask(alloc.GetState()) || terminalJob(as.GetJob().GetState()) {
			continue
		}
		live[alloc.GetId()] = true
		a.mu.Lock()
		_, started := a.running[alloc.GetId()]
		seen := assignmentSeen{modifyIndex: alloc.GetModifyIndex(), checkpoint: as.GetJob().GetCheckpoint(), peer: as.GetPeerAddress()}
		r, changed := a.runBy[alloc.GetId()], a.seen[alloc.GetId()] != seen
		a.seen[alloc.GetId()] = seen
		a.mu.Unlock()
		if started {
			if u, ok := r.(Updater); ok && changed {
				u.Update(proto.Clone(as).(*cohortv1.Assignment))
			}
			continue
		}
		r, ok := a.runners[alloc.GetKind()]
		if !ok {
			a.report(&cohortv1.TaskReport{
				AllocationId: alloc.GetId(), JobId: alloc.GetJobId(), State: cohortv1.TaskState_TASK_STATE_FAILED,
				Message: fmt.Sprintf("node %s cannot run tasks of kind %s", a.Node().GetId(), alloc.GetKind()),
			})
			continue
		}
		tctx, cancel := context.WithCancel(ctx)
		a.mu.Lock()
		a.running[alloc.GetId()] = cancel
		a.runBy[alloc.GetId()] = r
		a.mu.Unlock()
		a.log.Info("starting task", "alloc_id", alloc.GetId(), "job_id", alloc.GetJobId(),
			"kind", alloc.GetKind().String(), "index", alloc.GetIndex())
		r.Start(tctx, proto.Clone(as).(*cohortv1.Assignment), a.report)
	}
	a.mu.Lock()
	var stop []string
	for id := range a.running {
		if !live[id] {
			stop = append(stop, id)
		}
	}
	a.mu.Unlock()
	for _, id := range stop {
		a.stop(id)
	}
}

func (a *Agent) stop(id string) {
	a.mu.Lock()
	cancel, r := a.running[id], a.runBy[id]
	delete(a.running, id)
	delete(a.runBy, id)
	delete(a.seen, id)
	a.mu.Unlock()
	if cancel == nil {
		return
	}
	a.log.Info("stopping task", "alloc_id", id)
	cancel()
	r.Stop(id)
}

func (a *Agent) stopAll() {
	a.mu.Lock()
	ids := make([]string, 0, len(a.running))
	for id := range a.running {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	for _, id := range ids {
		a.stop(id)
	}
}

func liveTask(s cohortv1.TaskState) bool {
	return s == cohortv1.TaskState_TASK_STATE_PENDING || s == cohortv1.TaskState_TASK_STATE_RUNNING
}

func terminalJob(s cohortv1.JobState) bool {
	switch s {
	case cohortv1.JobState_JOB_STATE_SUCCEEDED, cohortv1.JobState_JOB_STATE_FAILED, cohortv1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
