package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Elastic membership (see also coordinator/fsm/elastic.go).
//
// A running job's worker membership changes without restarting its surviving workers:
// the coordinator bumps the job's generation, renumbers the live workers 0..n-1 and
// sends every live task its new allocation. Shards install the new generation at once
// and refuse the old one; a worker learns of the change from its runner
// (Membership) and notices it when a shard refuses a call as stale. It then adopts the
// new generation, rank and world size and settles the step in progress with the other
// workers (rejoin), without rolling back.
//
// Data order is independent of the membership: step s of an epoch always trains on the
// global batch perm[s*G, (s+1)*G) of the epoch's seeded permutation, with
// G = batchSize * workers.count; the current ranks split it evenly (rank r of w takes
// the r-th of w contiguous slices, computed in pieces of at most batchSize rows), and
// the shards average the gradients weighted by rows. So a run whose membership changes
// follows the same trajectory as an uninterrupted one, up to floating-point summation
// order, except for the one step in progress at the change, which is settled as
// follows. When the change finds every shard at the same step v (the usual case:
// shards discard the gradients already pushed for v), the new membership trains step
// v again over the same rows. When it finds some shards already past v (every old
// rank had pushed v to them), step v stays as the old membership computed it: the
// survivors push their step-v gradients again to the shards still at v, a newcomer
// pushes an empty one, and the lost worker's rows of that step count only on the shards
// it had reached. Dropout masks after a change are not those of an uninterrupted run.

// Membership is a worker task's place in its job's current membership generation.
type Membership struct {
	// Generation is the job's membership generation.
	Generation uint64
	// Rank is this worker's rank, 0..World-1; rank 0 is the chief.
	Rank int
	// World is the number of worker ranks in the generation.
	World int
	// ShardAddresses are the job's shards' data addresses in the generation: a
	// replicated shard's promoted backup moves its shard (replicas.go).
	ShardAddresses []string
}

// MembershipOf returns the membership an assignment gives its worker.
func MembershipOf(a *cohortv1.Assignment) Membership {
	job := a.GetJob()
	world := int(job.GetActiveWorkers())
	if world <= 0 {
		world = int(job.GetWorkerCount())
	}
	return Membership{Generation: a.GetAllocation().GetGeneration(), Rank: int(a.GetAllocation().GetIndex()), World: world,
		ShardAddresses: a.GetShardAddresses()}
}

// MembershipWatch hands a running trainer the newest membership of its task. It is
// safe for concurrent use.
type MembershipWatch struct {
	mu      sync.Mutex
	cur     Membership
	changed chan struct{}
}

// NewMembershipWatch returns a watch holding m.
func NewMembershipWatch(m Membership) *MembershipWatch {
	return &MembershipWatch{cur: m, changed: make(chan struct{})}
}

// Set installs m when its generation is newer than the held one; it reports whether it
// did.
func (w *MembershipWatch) Set(m Membership) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m.Generation <= w.cur.Generation {
		return false
	}
	w.cur = m
	close(w.changed)
	w.changed = make(chan struct{})
	return true
}

// Get returns the held membership and a channel closed when a newer one is set.
func (w *MembershipWatch) Get() (Membership, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur, w.changed
}

// isStaleGeneration reports whether err says a shard refused a call for its
// generation: the membership changed (or the shard has not heard of the change yet).
// Errors of the Client and of versionProbe are decoded (paramserver.FromStatus).
func isStaleGeneration(err error) bool {
	return errors.Is(err, paramserver.ErrStaleGeneration)
}

// errNoMembership is returned when a shard refuses the worker's generation and the
// trainer has no MembershipWatch to learn the new one from.
var errNoMembership = errors.New("the job's membership changed and this trainer cannot follow it")

// adopt waits for a membership newer than the one the trainer runs under (or, when
// none comes within backoff, returns so that the caller retries: a shard may not have
// installed the newer generation yet) and switches the trainer and client to it.
func (t *Trainer) adopt(ctx context.Context, client *paramserver.Client, backoff time.Duration) error {
	if t.cfg.Membership == nil {
		return errNoMembership
	}
	m, changed := t.cfg.Membership.Get()
	if m.Generation <= t.gen {
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("worker: wait for the new membership: %w", ctx.Err())
		case <-changed:
			timer.Stop()
		case <-timer.C:
		}
		m, _ = t.cfg.Membership.Get()
	}
	if m.Generation <= t.gen {
		return nil
	}
	if m.World < 1 || m.Rank < 0 || m.Rank >= m.World {
		return fmt.Errorf("worker: membership generation %d: rank %d outside world %d", m.Generation, m.Rank, m.World)
	}
	t.log.Info("membership changed: continuing under the new generation", "generation", m.Generation,
		"previous_generation", t.gen, "rank", m.Rank, "previous_rank", t.rank, "workers", m.World, "previous_workers", t.world)
	t.gen, t.rank, t.world, t.chief = m.Generation, m.Rank, m.World, m.Rank == 0
	client.SetMembership(m.Generation, m.Rank)
	if t.cfg.Metrics != nil {
		t.cfg.Metrics.membershipChanges.Inc()
	}
	return nil
}

// nextBackoff doubles d up to half a second.
func nextBackoff(d time.Duration) time.Duration { return min(2*d, 500*time.Millisecond) }

// withStaleRetry runs op until it succeeds or fails for another reason than a stale
// generation; after a stale refusal it adopts the newest membership first.
func (t *Trainer) withStaleRetry(ctx context.Context, client *paramserver.Client, op func() error) error {
	backoff := 10 * time.Millisecond
	for {
		err := op()
		if !isStaleGeneration(err) {
			return err
		}
		if aerr := t.adopt(ctx, client, backoff); aerr != nil {
			return errors.Join(err, aerr)
		}
		backoff = nextBackoff(backoff)
	}
}

// versionProbe reads the shards' versions directly (the first message of a Pull for
// step 0), which the client's Pull does not report when they differ.
type versionProbe struct {
	jobID string
	dial  []grpc.DialOption
	addrs []string
	mu    sync.Mutex // guards conns and stubs, which setAddress changes (replicas.go)
	conns []*grpc.ClientConn
	stubs []cohortv1.ParameterServiceClient
}

func newVersionProbe(jobID string, addrs []string, dial []grpc.DialOption) (*versionProbe, error) {
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(paramserver.MaxMessageBytes))}
	if len(dial) == 0 {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	opts = append(opts, dial...)
	p := &versionProbe{jobID: jobID, dial: opts, addrs: slices.Clone(addrs)}
	for i, addr := range addrs {
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("worker: dial shard %d at %s: %w", i, addr, err)
		}
		p.conns = append(p.conns, cc)
		p.stubs = append(p.stubs, cohortv1.NewParameterServiceClient(cc))
	}
	return p, nil
}

func (p *versionProbe) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cc := range p.conns {
		_ = cc.Close()
	}
}

// versions returns every shard's version under generation gen, as seen by rank.
// Unavailable shards are retried until ctx ends.
func (p *versionProbe) versions(ctx context.Context, gen uint64, rank int) ([]int64, error) {
	out := make([]int64, len(p.stubs))
	for i := range out {
		backoff := 10 * time.Millisecond
		for {
			v, err := p.version(ctx, p.stub(i), i, gen, rank)
			if err == nil {
				out[i] = v
				break
			}
			if c := status.Code(err); c != codes.Unavailable && c != codes.NotFound {
				return nil, fmt.Errorf("worker: read the version of shard %d: %w", i, err)
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("worker: read the version of shard %d: %w (last error: %w)", i, ctx.Err(), err)
			case <-time.After(backoff):
			}
			backoff = nextBackoff(backoff)
		}
	}
	return out, nil
}

func (p *versionProbe) version(ctx context.Context, stub cohortv1.ParameterServiceClient, shard int, gen uint64, rank int) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := stub.Pull(ctx, &cohortv1.PullRequest{
		Ref:     &cohortv1.ShardRef{JobId: p.jobID, Shard: int32(shard), Generation: gen},
		MinStep: 0, WorkerRank: int32(rank),
	})
	if err != nil {
		return 0, paramserver.FromStatus(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return 0, paramserver.FromStatus(err)
	}
	return resp.GetStep(), nil
}

// settle brings the trainer into the current membership after a shard refused its
// generation: it adopts the newest membership, reads the shards' versions and settles
// the step in progress (see the comment at the top of this file). It returns the step
// to go on with: the shards' common step v, to train again with the new partition, or,
// when some shards were already past v, v+1 after finishing v with the gradient this
// worker computed for it (an empty one when it has none).
func (l *loopState) settle(ctx context.Context) (int64, error) {
	t := l.t
	backoff := 10 * time.Millisecond
	for {
		if err := t.adopt(ctx, l.client, backoff); err != nil {
			return 0, err
		}
		backoff = nextBackoff(backoff)
		vs, err := l.probe.versions(ctx, t.gen, t.rank)
		if isStaleGeneration(err) {
			continue
		}
		if err != nil {
			return 0, err
		}
		lo, hi := slices.Min(vs), slices.Max(vs)
		switch {
		case lo == hi:
			t.log.Info("settled after the membership change: training the shards' step with the new membership", "step", lo, "generation", t.gen)
			return lo, nil
		case hi == lo+1:
			grad, samples := l.grad.values, l.grad.samples
			if l.grad.step != lo {
				// A newcomer, or a worker that had not computed step lo: it still has a
				// place in the shards' barrier of lo, and fills it with an empty gradient.
				clear(grad)
				samples = 0
			}
			err := l.client.Push(ctx, lo, grad, samples)
			if isStaleGeneration(err) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("worker: finish step %d after the membership change: %w", lo, err)
			}
			t.log.Info("settled after the membership change: step finished with the gradients computed for it", "step", lo,
				"generation", t.gen, "rows", samples)
			return lo + 1, nil
		default:
			return 0, fmt.Errorf("worker: after the membership change the shards are at steps %v, more than one step apart", vs)
		}
	}
}

// sliceOf returns the rows [lo, hi) of the current step (rows of the epoch permutation
// from pos, at most global of them, the epoch's end included) that rank of world trains
// on: the rank-th of world even contiguous slices.
func sliceOf(pos, global, n int64, rank, world int) (lo, hi int64) {
	end := min(pos+global, n)
	q := (global + int64(world) - 1) / int64(world)
	lo = min(pos+int64(rank)*q, end)
	hi = min(lo+q, end)
	return lo, hi
}

// settleJoin runs before a sync-mode worker reads its start point. A worker that joins
// a running job (a replacement or growth) finds the shards at one step, or, when the
// change came while some shards had completed step v and others had not, at v and
// v+1; it then fills its place in the barrier of v with an empty gradient and waits for
// v+1, so that it starts where every shard agrees.
func (t *Trainer) settleJoin(ctx context.Context, client *paramserver.Client, probe *versionProbe, params int) error {
	backoff := 10 * time.Millisecond
	var empty, buf []float32
	for {
		vs, err := probe.versions(ctx, t.gen, t.rank)
		if err == nil {
			lo, hi := slices.Min(vs), slices.Max(vs)
			switch {
			case lo == hi:
				return nil
			case hi != lo+1:
				return fmt.Errorf("worker: the shards are at steps %v, more than one step apart", vs)
			}
			if empty == nil {
				empty, buf = make([]float32, params), make([]float32, params)
			}
			t.log.Info("joining while the shards finish a step: pushing an empty gradient for it", "step", lo, "generation", t.gen)
			if err = client.Push(ctx, lo, empty, 0); err == nil {
				if _, err = client.Pull(ctx, lo+1, buf); err == nil {
					return nil
				}
			}
		}
		if !isStaleGeneration(err) {
			return fmt.Errorf("worker: join the running job: %w", err)
		}
		if err := t.adopt(ctx, client, backoff); err != nil {
			return err
		}
		backoff = nextBackoff(backoff)
	}
}
