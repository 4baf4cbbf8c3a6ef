package paramserver

// Replicated shards (spec.resources.parameterServers.replicas: 2, issue 18).
//
// A replicated shard has a primary, which workers talk to, and a backup on another
// node, which refuses workers (ErrNotPrimary, retried by clients) until it is promoted.
// Replication happens after aggregation: the primary forwards every update it is about
// to apply (the sample-weighted mean gradient of a complete sync step, or one worker's
// gradient in async and bounded modes) to the backup, which applies it with the same
// optimizer code to the same values at the same version, and only then applies it
// itself and advances its version. A step is acknowledged to workers by the version
// advancing (sync pulls wait for it; async and bounded pushes return after it), so an
// acknowledged update lives on both copies, and the two copies are bit-identical at
// every version the primary acknowledged.
//
// Updates are applied in one order on both copies: the primary holds its forward
// mutex (fwdMu) from admitting a push to advancing the version, so in async and
// bounded modes pushes to a replicated shard are committed one at a time, each after a
// round trip to the backup. A push in flight when the primary dies was never
// acknowledged: the worker retries it at the promoted backup, which either has the
// update (the primary forwarded it before dying: the retry is answered AlreadyExists
// through the generation change, see setMembership) or not (the retry applies it).
//
// The first update after a backup is attached, and any update the backup answers
// WRONG_STEP or NOT_INITIALISED to, is preceded by InstallReplica: the primary streams
// its values and optimizer state at its current version, under fwdMu (no update can
// interleave), so the backup starts from exactly the primary's state. When the backup
// cannot be reached (or fails) within ReplicaTimeout, the primary detaches it, reports
// it through OnBackupLost, and goes on alone: the update is applied and acknowledged
// on one copy until a new backup is attached (SetBackup).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrNotPrimary: a worker call reached the backup copy of a replicated shard
// (Unavailable, which clients retry: the backup serves workers once promoted).
var ErrNotPrimary = errors.New("not the primary")

// ErrNotBackup: replication reached a shard that is not a backup (FailedPrecondition):
// it was promoted, or was never a backup.
var ErrNotBackup = errors.New("not a backup")

// DefaultReplicaTimeout bounds one replication call (an update, or a state install)
// from a primary to its backup when ServerConfig.ReplicaTimeout is zero.
const DefaultReplicaTimeout = 5 * time.Second

// replicaState is a shard's part in replication.
type replicaState struct {
	// backup is set on a backup copy (guarded by shard.mu).
	backup bool
	// fwdMu serialises a primary's commits: admitting a push, forwarding the update and
	// applying it happen under it, in that order. Taken before shard.mu.
	fwdMu sync.Mutex
	// target is the backup a primary forwards to; nil when it has none.
	target atomic.Pointer[replicaTarget]
}

// replicaTarget is a primary's connection to its backup.
type replicaTarget struct {
	addr string
	conn *grpc.ClientConn
	stub cohortv1.ReplicaServiceClient
	// synced is set once the backup holds the primary's state (guarded by fwdMu).
	synced bool
}

// replicaServer is the Server's replication settings and metrics.
type replicaServer struct {
	dial    []grpc.DialOption
	timeout time.Duration
	onLost  func(jobID string, shard int, err error)
	// hook, when set (tests), is called by a primary just before it forwards the
	// update of version ("forward") and just after ("forwarded").
	hook func(stage string, version int64)

	forwardSeconds prometheus.Histogram
	failures       prometheus.Counter
	installs       prometheus.Counter
	installBytes   prometheus.Counter
	promotions     prometheus.Counter

	mu    sync.Mutex
	peers map[shardKey]string // backup: the node name its primary's certificate carries
}

func newReplicaServer(cfg ServerConfig) *replicaServer {
	r := &replicaServer{
		dial:    cfg.ReplicaDialOptions,
		timeout: cfg.ReplicaTimeout,
		onLost:  cfg.OnBackupLost,
		forwardSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cohort_ps_replica_forward_seconds",
			Help:    "Time for a primary shard to have one update applied by its backup.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 4, 10),
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_ps_replica_failures_total",
			Help: "Backups detached by their primary because replication to them failed.",
		}),
		installs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_ps_replica_installs_total",
			Help: "Whole-shard state installs streamed from a primary to its backup.",
		}),
		installBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_ps_replica_install_bytes_total",
			Help: "Bytes of shard state streamed from primaries to backups.",
		}),
		promotions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cohort_ps_replica_promotions_total",
			Help: "Backup shards promoted to primary.",
		}),
		peers: map[shardKey]string{},
	}
	if r.timeout <= 0 {
		r.timeout = DefaultReplicaTimeout
	}
	if reg := cfg.Registry; reg != nil {
		r.forwardSeconds = register(reg, r.forwardSeconds)
		r.failures = register(reg, r.failures)
		r.installs = register(reg, r.installs)
		r.installBytes = register(reg, r.installBytes)
		r.promotions = register(reg, r.promotions)
	}
	return r
}

// SetReplicaDialOptions sets the options a primary dials its backup with (SetBackup):
// on a TLS cluster the node's client credentials. Later SetBackup calls use them.
func (s *Server) SetReplicaDialOptions(opts ...grpc.DialOption) {
	s.replica.mu.Lock()
	defer s.replica.mu.Unlock()
	s.replica.dial = append([]grpc.DialOption(nil), opts...)
}

// RegisterReplica registers the replica service on g (Register does it too).
func (s *Server) RegisterReplica(g *grpc.Server) {
	cohortv1.RegisterReplicaServiceServer(g, replicaService{s: s})
}

// AddBackupShard creates the backup copy of a replicated shard: it refuses worker calls
// (ErrNotPrimary) and receives its state and updates from its primary until
// SetBackupPeer names the node whose certificate may replicate to a backup shard (its
// primary's node, after the primary moved).
func (s *Server) SetBackupPeer(jobID string, shard int, peerNode string) {
	s.replica.mu.Lock()
	defer s.replica.mu.Unlock()
	s.replica.peers[shardKey{jobID, shard}] = peerNode
}

// PromoteShard makes it the primary. peerNode, when not empty, is the node name the
// primary's certificate carries: on a server with a CallerFunc only it may replicate
// to the backup. Adding a backup that exists updates its membership as AddShard does;
// a primary of the same shard on this server is an error.
func (s *Server) AddBackupShard(cfg ShardConfig, peerNode string) error {
	cfg, err := cfg.normalize()
	if err != nil {
		return err
	}
	key := shardKey{cfg.JobID, cfg.Shard}
	s.replica.mu.Lock()
	s.replica.peers[key] = peerNode
	s.replica.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh, ok := s.shards[key]; ok {
		sh.mu.Lock()
		cur, backup := sh.cfg, sh.replica.backup
		sh.mu.Unlock()
		if !backup {
			return fmt.Errorf("%w: job %s shard %d is hosted here as the primary", ErrInvalidConfig, cfg.JobID, cfg.Shard)
		}
		if !sameSettings(cur, cfg) {
			return fmt.Errorf("%w: job %s shard %d exists with optimizer %+v, mode %q, staleness %d", ErrInvalidConfig, cfg.JobID, cfg.Shard, cur.Optimizer, cur.Mode, cur.Staleness)
		}
		return sh.setMembership(cfg.Generation, cfg.Workers, cfg.Store)
	}
	sh := newShard(cfg, s.m, s.log, s.waitHook)
	sh.replica.backup = true
	s.shards[key] = sh
	s.m.shards.Inc()
	sh.log.Info("backup shard added", "generation", cfg.Generation, "workers", cfg.Workers, "mode", cfg.Mode, "optimizer", cfg.Optimizer.Name)
	return nil
}

// PromoteShard makes a backup shard the primary at generation (a newer one than the
// backup's, with workers ranks): from then on it serves workers at the version it
// reached, which is at least every version its old primary acknowledged, and a push
// of the step just before that version is answered AlreadyExists (see setMembership).
// Promoting a shard that is already the primary at generation is a no-op. A backup
// that never received its primary's state cannot be promoted (ErrNotInitialised): the
// job falls back to its checkpoint.
func (s *Server) PromoteShard(jobID string, shard int, generation uint64, workers int) error {
	sh, err := s.lookup(jobID, shard)
	if err != nil {
		return err
	}
	sh.mu.Lock()
	switch {
	case !sh.replica.backup && sh.cfg.Generation == generation:
		sh.mu.Unlock()
		return nil
	case !sh.replica.backup:
		sh.mu.Unlock()
		return fmt.Errorf("%w: job %s shard %d is not a backup", ErrNotBackup, jobID, shard)
	case !sh.initialised:
		sh.mu.Unlock()
		return fmt.Errorf("%w: backup of job %s shard %d never received its primary's state", ErrNotInitialised, jobID, shard)
	case generation <= sh.cfg.Generation:
		sh.mu.Unlock()
		return fmt.Errorf("%w: job %s shard %d: promotion at generation %d, backup is at %d", ErrStaleGeneration, jobID, shard, generation, sh.cfg.Generation)
	}
	sh.replica.backup = false
	version, workersBefore := sh.version, sh.cfg.Workers
	last := maps.Clone(sh.lastPush)
	sh.mu.Unlock()
	if err := sh.setMembership(generation, workers, nil); err != nil {
		return err
	}
	if workers == workersBefore {
		// The same workers with the same ranks: the pushes the backup recorded stay
		// recorded, so one retried after the promotion is answered AlreadyExists.
		sh.mu.Lock()
		maps.Copy(sh.lastPush, last)
		sh.mu.Unlock()
	}
	s.replica.promotions.Inc()
	sh.log.Info("backup promoted to primary", "generation", generation, "workers", workers, "version", version)
	return nil
}

// SetBackup points a primary shard at its backup's data address: every later update
// is applied by the backup before it is acknowledged (the first one after a state
// install). An empty addr detaches the backup. Setting the address it has is a no-op.
func (s *Server) SetBackup(jobID string, shard int, addr string) error {
	sh, err := s.lookup(jobID, shard)
	if err != nil {
		return err
	}
	cur := sh.replica.target.Load()
	if cur != nil && cur.addr == addr {
		return nil
	}
	var t *replicaTarget
	if addr != "" {
		s.replica.mu.Lock()
		dial := s.replica.dial
		s.replica.mu.Unlock()
		opts := append([]grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
			grpc.WithInitialWindowSize(8 << 20), grpc.WithInitialConnWindowSize(32 << 20)}, dial...)
		if len(dial) == 0 {
			opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}
		conn, err := grpc.NewClient(addr, opts...)
		if err != nil {
			return fmt.Errorf("paramserver: backup of job %s shard %d at %s: %w", jobID, shard, addr, err)
		}
		t = &replicaTarget{addr: addr, conn: conn, stub: cohortv1.NewReplicaServiceClient(conn)}
	}
	if old := sh.replica.target.Swap(t); old != nil {
		// An update being forwarded to it fails and is applied without it.
		_ = old.conn.Close()
	}
	sh.log.Info("backup set", "address", addr)
	return nil
}

// HasBackup reports whether a primary shard is forwarding to a backup.
func (s *Server) HasBackup(jobID string, shard int) bool {
	sh, err := s.lookup(jobID, shard)
	return err == nil && sh.replica.target.Load() != nil
}

// ShardVersion returns a hosted shard's version and whether it is a backup.
func (s *Server) ShardVersion(jobID string, shard int) (version int64, backup bool, err error) {
	sh, err := s.lookup(jobID, shard)
	if err != nil {
		return 0, false, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.version, sh.replica.backup, nil
}

// ShardValues returns a copy of a hosted shard's values and optimizer step (tests and
// the replica comparisons in them).
func (s *Server) ShardValues(jobID string, shard int) ([]float32, int64, error) {
	sh, err := s.lookup(jobID, shard)
	if err != nil {
		return nil, 0, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.initialised {
		return nil, 0, fmt.Errorf("%w: job %s shard %d", ErrNotInitialised, jobID, shard)
	}
	return append([]float32(nil), sh.params...), sh.opt.Step(), nil
}

// commit accepts a received gradient: commitPush for a shard without a backup, and for
// a primary with one, commitReplicated. Both run under fwdMu, so an update is never
// applied while another is being forwarded.
func (s *shard) commit(srv *replicaServer, gen uint64, rank int, step, samples int64, grad []float32) (int64, error) {
	s.replica.fwdMu.Lock()
	defer s.replica.fwdMu.Unlock()
	if t := s.replica.target.Load(); t != nil {
		return s.commitReplicated(srv, t, gen, rank, step, samples, grad)
	}
	return s.commitPush(gen, rank, step, samples, grad)
}

// commitReplicated is commitPush for a primary with a backup; fwdMu is held, mu is not.
// It admits and accumulates the push as commitPush does, and when that yields an
// update (a complete sync step, any async or bounded push) forwards it to t before
// applying it and advancing the version.
func (s *shard) commitReplicated(srv *replicaServer, t *replicaTarget, gen uint64, rank int, step, samples int64, grad []float32) (int64, error) {
	s.mu.Lock()
	if err := s.admitPush(gen, rank, step, samples); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	upd, n := grad, samples
	if s.cfg.Mode == ModeSync {
		if !s.accumulate(rank, samples, grad) {
			v := s.version
			s.mu.Unlock()
			return v, nil
		}
		upd, n = s.meanGradient()
	} else {
		s.lastPush[rank] = step
	}
	version := s.version
	s.mu.Unlock()

	if srv.hook != nil {
		srv.hook("forward", version)
	}
	s.forward(srv, t, pushID{rank, step}, version, n, upd)
	if srv.hook != nil {
		srv.hook("forwarded", version)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return 0, fmt.Errorf("%w: job %s shard %d", ErrShardRemoved, s.key.job, s.key.shard)
	}
	if n > 0 {
		s.applyTimed(upd)
	}
	if s.cfg.Mode == ModeSync {
		s.accPushes, s.accSamples = 0, 0
		clear(s.pushed)
	}
	s.advance()
	return s.version, nil
}

// forward has the backup t apply the update upd (averaging n samples) at version,
// installing the primary's state there first when the backup does not hold it. When
// the backup fails, it is detached and reported; the caller applies the update alone.
// fwdMu is held, so the shard's values and optimizer state do not change meanwhile.
func (s *shard) forward(srv *replicaServer, t *replicaTarget, id pushID, version, n int64, upd []float32) {
	start := time.Now()
	err := func() error {
		if !t.synced {
			if err := s.installOn(srv, t, version); err != nil {
				return err
			}
			t.synced = true
		}
		err := s.replicate(srv, t, id, version, n, upd)
		if errors.Is(err, ErrWrongStep) || errors.Is(err, ErrNotInitialised) {
			// The backup lost its state or missed updates (restarted): start it over.
			s.log.Warn("backup out of step: installing the shard's state again", "version", version, "err", err)
			if err = s.installOn(srv, t, version); err == nil {
				err = s.replicate(srv, t, id, version, n, upd)
			}
		}
		return err
	}()
	if err == nil {
		srv.forwardSeconds.Observe(time.Since(start).Seconds())
		return
	}
	t.synced = false
	if s.replica.target.CompareAndSwap(t, nil) {
		_ = t.conn.Close()
	}
	srv.failures.Inc()
	s.log.Warn("backup lost: the shard goes on without it", "backup", t.addr, "version", version, "err", err)
	if srv.onLost != nil {
		go srv.onLost(s.key.job, s.key.shard, err)
	}
}

// pushID names the push an update came from: the worker's rank and step.
type pushID struct {
	rank int
	step int64
}

// replicate sends one update to the backup.
func (s *shard) replicate(srv *replicaServer, t *replicaTarget, id pushID, version, n int64, upd []float32) error {
	ctx, cancel := context.WithTimeout(context.Background(), srv.timeout)
	defer cancel()
	stream, err := t.stub.Replicate(ctx)
	if err != nil {
		return FromStatus(err)
	}
	s.mu.Lock()
	ref := &cohortv1.ShardRef{JobId: s.key.job, Shard: int32(s.key.shard), Generation: s.cfg.Generation}
	s.mu.Unlock()
	err = stream.Send(&cohortv1.ReplicateRequest{Part: &cohortv1.ReplicateRequest_Header{Header: &cohortv1.ReplicateHeader{
		Ref: ref, Version: version, NumSamples: n, WorkerRank: int32(id.rank), Step: id.step}}})
	if err == nil {
		msg := &cohortv1.ReplicateRequest_Chunk{}
		req := &cohortv1.ReplicateRequest{Part: msg}
		err = sendFloatChunks(upd, chunkValues(DefaultChunkBytes), func(c *cohortv1.Chunk) error {
			msg.Chunk = c
			return stream.Send(req)
		})
	}
	resp, err := finish(stream, err)
	if err != nil {
		return FromStatus(err)
	}
	if resp.GetVersion() != version+1 {
		return fmt.Errorf("%w: backup answered version %d after the update of version %d", ErrWrongStep, resp.GetVersion(), version)
	}
	return nil
}

// installOn streams the shard's values and optimizer state at version to the backup.
func (s *shard) installOn(srv *replicaServer, t *replicaTarget, version int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), srv.timeout)
	defer cancel()
	stream, err := t.stub.InstallReplica(ctx)
	if err != nil {
		return FromStatus(err)
	}
	s.mu.Lock()
	h := &cohortv1.InstallReplicaHeader{
		Ref:         &cohortv1.ShardRef{JobId: s.key.job, Shard: int32(s.key.shard), Generation: s.cfg.Generation},
		Version:     version,
		RangeOffset: s.rng.Offset, RangeLength: s.rng.Length, TotalParams: s.total, LayoutHash: s.layoutHash,
		Optimizer: s.opt.Name(), OptimizerStep: s.opt.Step(),
	}
	// Values and state change only under fwdMu, which the caller holds.
	vectors := append([][]float32{s.params}, s.opt.State()...)
	s.mu.Unlock()
	h.StateVectors = uint32(len(vectors) - 1)
	err = stream.Send(&cohortv1.InstallReplicaRequest{Part: &cohortv1.InstallReplicaRequest_Header{Header: h}})
	msg := &cohortv1.InstallReplicaRequest_Chunk{}
	req := &cohortv1.InstallReplicaRequest{Part: msg}
	per := chunkValues(DefaultChunkBytes)
	for k, vec := range vectors {
		if err != nil {
			break
		}
		base := uint64(k) * h.RangeLength
		err = sendFloatChunks(vec, per, func(c *cohortv1.Chunk) error {
			c.Offset += base
			msg.Chunk = c
			return stream.Send(req)
		})
	}
	resp, err := finish(stream, err)
	if err != nil {
		return FromStatus(err)
	}
	if resp.GetVersion() != version {
		return fmt.Errorf("%w: backup answered version %d after installing version %d", ErrWrongStep, resp.GetVersion(), version)
	}
	srv.installs.Inc()
	srv.installBytes.Add(float64(4 * uint64(len(vectors)) * h.RangeLength))
	s.log.Info("shard state installed on the backup", "backup", t.addr, "version", version, "values", h.RangeLength, "state_vectors", h.StateVectors)
	return nil
}

// sendFloatChunks streams values as chunks of at most per values (offsets from 0).
func sendFloatChunks(values []float32, per int, send func(*cohortv1.Chunk) error) error {
	var scratch []byte
	for off := 0; off < len(values); off += per {
		end := min(off+per, len(values))
		c := &cohortv1.Chunk{Offset: uint64(off), Data: float32Bytes(values[off:end], &scratch)}
		if err := send(c); err != nil {
			return err
		}
	}
	return nil
}

// applyReplicated applies one update from the primary on a backup: at its version it
// applies upd (when n > 0) and advances; an update it already has (version below its
// own) is answered with its version; a later one is ErrWrongStep. A newer generation
// than the backup's is adopted (the primary's membership changed first).
func (s *shard) applyReplicated(gen uint64, id pushID, version, n int64, upd []float32) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkReplica(gen); err != nil {
		return 0, err
	}
	switch {
	case version < s.version:
		return s.version, nil
	case version > s.version:
		return 0, fmt.Errorf("%w: backup of job %s shard %d at version %d got the update of version %d", ErrWrongStep, s.key.job, s.key.shard, s.version, version)
	case uint64(len(upd)) != s.rng.Length:
		return 0, fmt.Errorf("%w: update of %d values for a range of %d", ErrInvalidArgument, len(upd), s.rng.Length)
	}
	if n > 0 {
		s.applyTimed(upd)
	}
	if s.cfg.Mode != ModeSync {
		s.lastPush[id.rank] = id.step
	}
	s.advance()
	return s.version, nil
}

// replicaBuffer returns an update buffer of n values from the shard's gradient pool
// (release it with releaseGrad).
func (s *shard) replicaBuffer(n uint64) []float32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := len(s.freeGrads); k > 0 && uint64(len(s.freeGrads[k-1])) == n {
		g := s.freeGrads[k-1]
		s.freeGrads = s.freeGrads[:k-1]
		return g
	}
	return make([]float32, n)
}

// checkReplica admits replication at gen to a backup; mu must be held.
func (s *shard) checkReplica(gen uint64) error {
	switch {
	case s.removed:
		return fmt.Errorf("%w: job %s shard %d", ErrShardRemoved, s.key.job, s.key.shard)
	case !s.replica.backup:
		return fmt.Errorf("%w: job %s shard %d is the primary here", ErrNotBackup, s.key.job, s.key.shard)
	case gen < s.cfg.Generation:
		return fmt.Errorf("%w: job %s shard %d: replication at generation %d, backup is at %d", ErrStaleGeneration, s.key.job, s.key.shard, gen, s.cfg.Generation)
	case !s.initialised:
		return fmt.Errorf("%w: backup of job %s shard %d has no state yet", ErrNotInitialised, s.key.job, s.key.shard)
	}
	if gen > s.cfg.Generation {
		s.cfg.Generation = gen
	}
	return nil
}

// installHeader is a checked InstallReplicaHeader.
type installHeader struct {
	rng       Range
	total     uint64
	layout    string
	version   int64
	optStep   int64
	vectors   int
	optimizer string
}

// checkInstallHeader validates an InstallReplica header against the backup's
// optimizer name and returns it with the length of the flat space that follows.
func checkInstallHeader(h *cohortv1.InstallReplicaHeader, optimizer string) (installHeader, uint64, error) {
	out := installHeader{
		rng: Range{Offset: h.GetRangeOffset(), Length: h.GetRangeLength()}, total: h.GetTotalParams(),
		layout: h.GetLayoutHash(), version: h.GetVersion(), optStep: h.GetOptimizerStep(),
		vectors: int(min(h.GetStateVectors(), 1<<16)), optimizer: h.GetOptimizer(),
	}
	want := map[string]int{OptimizerSGD: 0, OptimizerMomentum: 1, OptimizerAdam: 2}
	switch {
	case h.GetRef().GetJobId() == "":
		return out, 0, fmt.Errorf("%w: install_replica: ref.job_id is empty", ErrInvalidArgument)
	case out.rng.Length == 0 || out.rng.Length > MaxShardParams:
		return out, 0, fmt.Errorf("%w: install_replica: range_length %d must be in [1,%d]", ErrInvalidArgument, out.rng.Length, MaxShardParams)
	case out.rng.Offset > out.total || out.rng.Length > out.total-out.rng.Offset:
		return out, 0, fmt.Errorf("%w: install_replica: range [%d,+%d) outside total_params %d", ErrInvalidArgument, out.rng.Offset, out.rng.Length, out.total)
	case out.version < 0:
		return out, 0, fmt.Errorf("%w: install_replica: negative version %d", ErrInvalidArgument, out.version)
	case out.optStep < 0:
		return out, 0, fmt.Errorf("%w: install_replica: negative optimizer_step %d", ErrInvalidArgument, out.optStep)
	case out.optimizer != optimizer:
		return out, 0, fmt.Errorf("%w: install_replica: optimizer %q, the backup is configured with %q", ErrInvalidArgument, out.optimizer, optimizer)
	case uint32(out.vectors) != h.GetStateVectors() || out.vectors != want[optimizer]:
		return out, 0, fmt.Errorf("%w: install_replica: state_vectors %d, optimizer %q has %d", ErrInvalidArgument, h.GetStateVectors(), optimizer, want[optimizer])
	}
	return out, uint64(1+out.vectors) * out.rng.Length, nil
}

// installReplica installs a primary's state (values then state vectors in flat) on a
// backup at h's version.
func (s *shard) installReplica(gen uint64, h installHeader, flat []float32) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.removed:
		return 0, fmt.Errorf("%w: job %s shard %d", ErrShardRemoved, s.key.job, s.key.shard)
	case !s.replica.backup:
		return 0, fmt.Errorf("%w: job %s shard %d is the primary here", ErrNotBackup, s.key.job, s.key.shard)
	case gen < s.cfg.Generation:
		return 0, fmt.Errorf("%w: job %s shard %d: install at generation %d, backup is at %d", ErrStaleGeneration, s.key.job, s.key.shard, gen, s.cfg.Generation)
	}
	n := h.rng.Length
	opt, err := NewOptimizer(s.cfg.Optimizer, int(n))
	if err != nil {
		return 0, err
	}
	state := make([][]float32, h.vectors)
	for k := range state {
		state[k] = flat[uint64(k+1)*n : uint64(k+2)*n]
	}
	if err := opt.SetState(h.optStep, state); err != nil {
		return 0, fmt.Errorf("%w: install_replica: %w", ErrInvalidArgument, err)
	}
	if gen > s.cfg.Generation {
		s.cfg.Generation = gen
	}
	s.install(h.rng, h.total, h.layout, append([]float32(nil), flat[:n]...), opt, h.version)
	s.log.Info("backup installed from its primary", "version", h.version, "range_offset", h.rng.Offset, "range_length", n)
	return s.version, nil
}

// admitPeer admits a replication call: on a server with a CallerFunc only the node
// named as the shard's primary (AddBackupShard's peerNode) may make it.
func (s *Server) admitPeer(ctx context.Context, ref *cohortv1.ShardRef) error {
	s.access.mu.Lock()
	caller := s.access.caller
	s.access.mu.Unlock()
	if caller == nil {
		return nil
	}
	name, err := caller(ctx)
	if err != nil {
		return toStatus(fmt.Errorf("%w: %w", ErrNotJobWorker, err))
	}
	s.replica.mu.Lock()
	peer := s.replica.peers[shardKey{ref.GetJobId(), int(ref.GetShard())}]
	s.replica.mu.Unlock()
	if peer == "" || name != peer {
		return toStatus(fmt.Errorf("%w: %s is not the primary of job %q shard %d", ErrNotJobWorker, name, ref.GetJobId(), ref.GetShard()))
	}
	return nil
}

// replicaService implements cohortv1.ReplicaServiceServer for a Server.
type replicaService struct {
	cohortv1.UnimplementedReplicaServiceServer
	s *Server
}

var _ cohortv1.ReplicaServiceServer = replicaService{}

// Replicate applies one update from the shard's primary (see the package comment of
// this file).
func (r replicaService) Replicate(stream cohortv1.ReplicaService_ReplicateServer) error {
	s := r.s
	first, err := stream.Recv()
	if err != nil {
		return toStatus(fmt.Errorf("%w: replicate: %w", ErrInvalidArgument, err))
	}
	h := first.GetHeader()
	if h == nil {
		return toStatus(fmt.Errorf("%w: replicate stream must start with a header", ErrInvalidArgument))
	}
	if err := s.admitPeer(stream.Context(), h.GetRef()); err != nil {
		return err
	}
	sh, err := s.lookupRef(h.GetRef())
	if err != nil {
		return toStatus(err)
	}
	if h.GetNumSamples() < 0 {
		return toStatus(fmt.Errorf("%w: replicate: negative num_samples %d", ErrInvalidArgument, h.GetNumSamples()))
	}
	sh.mu.Lock()
	err = sh.checkReplica(h.GetRef().GetGeneration())
	have, length := sh.version, sh.rng.Length
	sh.mu.Unlock()
	if err != nil {
		return toStatus(err)
	}
	if h.GetVersion() < have {
		return stream.SendAndClose(&cohortv1.ReplicateResponse{Version: have})
	}
	upd := sh.replicaBuffer(length)
	defer sh.releaseGrad(upd)
	// msg is reused across chunks: chunkCodec decodes into its pooled chunk's capacity.
	msg := cohortv1.ReplicateRequest{Part: &cohortv1.ReplicateRequest_Chunk{Chunk: getChunk()}}
	defer func() { putChunk(msg.GetChunk()) }()
	if err := s.receive(stream.Context(), "replicate", &assembler{dst: upd}, func() (*cohortv1.Chunk, error) {
		if err := stream.RecvMsg(&msg); err != nil {
			return nil, err
		}
		if msg.GetChunk() == nil {
			return nil, fmt.Errorf("%w: replicate: second header in stream", ErrInvalidArgument)
		}
		return msg.GetChunk(), nil
	}); err != nil {
		return toStatus(err)
	}
	id := pushID{rank: int(h.GetWorkerRank()), step: h.GetStep()}
	v, err := sh.applyReplicated(h.GetRef().GetGeneration(), id, h.GetVersion(), h.GetNumSamples(), upd)
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&cohortv1.ReplicateResponse{Version: v})
}

// InstallReplica installs the primary's whole state on its backup.
func (r replicaService) InstallReplica(stream cohortv1.ReplicaService_InstallReplicaServer) error {
	s := r.s
	first, err := stream.Recv()
	if err != nil {
		return toStatus(fmt.Errorf("%w: install_replica: %w", ErrInvalidArgument, err))
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return toStatus(fmt.Errorf("%w: install_replica stream must start with a header", ErrInvalidArgument))
	}
	if err := s.admitPeer(stream.Context(), hdr.GetRef()); err != nil {
		return err
	}
	sh, err := s.lookupRef(hdr.GetRef())
	if err != nil {
		return toStatus(err)
	}
	sh.mu.Lock()
	optimizer, backup := sh.cfg.Optimizer.Name, sh.replica.backup
	sh.mu.Unlock()
	if !backup {
		return toStatus(fmt.Errorf("%w: job %s shard %d is the primary here", ErrNotBackup, sh.key.job, sh.key.shard))
	}
	h, n, err := checkInstallHeader(hdr, optimizer)
	if err != nil {
		return toStatus(err)
	}
	flat := make([]float32, n)
	msg := cohortv1.InstallReplicaRequest{Part: &cohortv1.InstallReplicaRequest_Chunk{Chunk: getChunk()}}
	defer func() { putChunk(msg.GetChunk()) }()
	if err := s.receive(stream.Context(), "install_replica", &assembler{dst: flat}, func() (*cohortv1.Chunk, error) {
		if err := stream.RecvMsg(&msg); err != nil {
			return nil, err
		}
		if msg.GetChunk() == nil {
			return nil, fmt.Errorf("%w: install_replica: second header in stream", ErrInvalidArgument)
		}
		return msg.GetChunk(), nil
	}); err != nil {
		return toStatus(err)
	}
	v, err := sh.installReplica(hdr.GetRef().GetGeneration(), h, flat)
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&cohortv1.InstallReplicaResponse{Version: v})
}
