package paramserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// Chunk and message size limits.
const (
	// DefaultChunkBytes is the tensor chunk size used when a config leaves it zero.
	DefaultChunkBytes = 1 << 20
	// MaxChunkBytes is the largest tensor chunk; larger settings are clamped to it.
	MaxChunkBytes = 4 << 20
	// MaxMessageBytes is the gRPC send and receive limit set by ServerOptions and the
	// Client: several times MaxChunkBytes plus headers.
	MaxMessageBytes = 16 << 20
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Logger receives the server's logs; nil uses slog.Default().
	Logger *slog.Logger
	// Registry receives the cohort_ps_* metrics; nil registers nothing.
	Registry prometheus.Registerer
	// ChunkBytes is the Pull chunk size in bytes (0: DefaultChunkBytes; clamped to
	// MaxChunkBytes; rounded down to whole float32 values).
	ChunkBytes int
	// OnSessionLost, when set, is called (in its own goroutine) when a worker's session
	// breaks after at least one push: job, the generation it pushed under, its rank.
	OnSessionLost func(jobID string, generation uint64, rank int)
	// ReplicaDialOptions dial a primary shard's backup (SetBackup); empty: insecure
	// transport credentials (loopback tests).
	ReplicaDialOptions []grpc.DialOption
	// ReplicaTimeout bounds each replication call to a backup (0: DefaultReplicaTimeout).
	ReplicaTimeout time.Duration
	// OnBackupLost, when set, is called (in its own goroutine) when a primary detaches
	// its backup because replication to it failed.
	OnBackupLost func(jobID string, shard int, err error)
}

// DefaultServerConfig returns the default configuration: slog.Default(), no metrics
// registry, 1 MiB chunks.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{Logger: slog.Default(), ChunkBytes: DefaultChunkBytes}
}

// normalizeChunkBytes applies the ChunkBytes rules shared by ServerConfig and
// ClientConfig.
func normalizeChunkBytes(n int) int {
	switch {
	case n <= 0:
		return DefaultChunkBytes
	case n > MaxChunkBytes:
		return MaxChunkBytes
	case n < 4:
		return 4
	}
	return n &^ 3
}

// ServerOptions returns the gRPC server options the parameter service needs: message
// size limits above the chunk size and larger flow-control windows and buffers for
// bulk tensor transfer.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.InitialWindowSize(8 << 20),
		grpc.InitialConnWindowSize(32 << 20),
		grpc.WriteBufferSize(1 << 20),
		grpc.ReadBufferSize(1 << 20),
		grpc.ForceServerCodecV2(chunkCodec{}),
	}
}

// Server hosts many shards of many jobs and implements cohortv1.ParameterServiceServer.
// It is safe for concurrent use.
type Server struct {
	cohortv1.UnimplementedParameterServiceServer

	log        *slog.Logger
	m          *metrics
	chunkBytes int
	waitHook   func() // tests: called whenever a call starts waiting on a shard
	// onSessionLost is ServerConfig.OnSessionLost.
	onSessionLost func(jobID string, generation uint64, rank int)

	replica *replicaServer // replication to and from other copies (replica.go)

	mu     sync.RWMutex
	shards map[shardKey]*shard

	access accessList // who may call which shard (see SetCaller)
}

var _ cohortv1.ParameterServiceServer = (*Server)(nil)

// NewServer returns a Server with no shards.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{
		log:           cfg.Logger.With("component", "paramserver"),
		m:             newMetrics(cfg.Registry),
		chunkBytes:    normalizeChunkBytes(cfg.ChunkBytes),
		onSessionLost: cfg.OnSessionLost,
		replica:       newReplicaServer(cfg),
		shards:        make(map[shardKey]*shard),
	}
}

// Register registers the parameter service on g.
func (s *Server) Register(g *grpc.Server) {
	cohortv1.RegisterParameterServiceServer(g, s)
	s.RegisterReplica(g)
}

// AddShard creates a shard, not yet initialised: its range and initial values come
// with the first Init. Adding an identical config again is a no-op; a config with a
// newer generation updates the membership (generation, workers, store) and keeps the
// values, as SetGeneration does. A different optimizer, mode or staleness, an older
// generation, or a different worker count at the same generation is an error.
func (s *Server) AddShard(cfg ShardConfig) error {
	cfg, err := cfg.normalize()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := shardKey{cfg.JobID, cfg.Shard}
	if sh, ok := s.shards[key]; ok {
		sh.mu.Lock()
		cur := sh.cfg
		sh.mu.Unlock()
		if !sameSettings(cur, cfg) {
			return fmt.Errorf("%w: job %s shard %d exists with optimizer %+v, mode %q, staleness %d", ErrInvalidConfig, cfg.JobID, cfg.Shard, cur.Optimizer, cur.Mode, cur.Staleness)
		}
		return sh.setMembership(cfg.Generation, cfg.Workers, cfg.Store)
	}
	sh := newShard(cfg, s.m, s.log, s.waitHook)
	s.shards[key] = sh
	s.m.shards.Inc()
	sh.log.Info("shard added", "generation", cfg.Generation, "workers", cfg.Workers, "mode", cfg.Mode, "optimizer", cfg.Optimizer.Name)
	return nil
}

// RestoreShard creates the shard initialised from a checkpoint: its values, range and
// optimizer state are ck's and its version is ck.Step. A shard already present under
// the same job and index is replaced (its blocked calls fail with Aborted) unless its
// generation is newer than cfg.Generation. cfg.Optimizer must name ck's optimizer.
func (s *Server) RestoreShard(ctx context.Context, cfg ShardConfig, ck *ShardCheckpoint) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("paramserver: restore shard: %w", err)
	}
	cfg, err := cfg.normalize()
	if err != nil {
		return err
	}
	switch {
	case ck == nil:
		return fmt.Errorf("%w: nil checkpoint", ErrInvalidConfig)
	case ck.JobID != cfg.JobID || ck.Shard != cfg.Shard:
		return fmt.Errorf("%w: checkpoint of job %s shard %d restored as job %s shard %d", ErrInvalidConfig, ck.JobID, ck.Shard, cfg.JobID, cfg.Shard)
	case ck.Optimizer != cfg.Optimizer.Name:
		return fmt.Errorf("%w: checkpoint optimizer %q differs from configured %q", ErrInvalidConfig, ck.Optimizer, cfg.Optimizer.Name)
	case uint64(len(ck.Params)) != ck.Range.Length || ck.Range.Length > MaxShardParams:
		return fmt.Errorf("%w: checkpoint has %d values for a range of %d", ErrInvalidConfig, len(ck.Params), ck.Range.Length)
	case ck.Step < 0:
		return fmt.Errorf("%w: checkpoint step %d", ErrInvalidConfig, ck.Step)
	}
	opt, err := NewOptimizer(cfg.Optimizer, len(ck.Params))
	if err != nil {
		return err
	}
	if err := opt.SetState(ck.OptimizerStep, ck.State); err != nil {
		return fmt.Errorf("paramserver: restore job %s shard %d: %w", cfg.JobID, cfg.Shard, err)
	}
	sh := newShard(cfg, s.m, s.log, s.waitHook)
	sh.install(ck.Range, ck.TotalParams, ck.LayoutHash, append([]float32(nil), ck.Params...), opt, ck.Step)

	s.mu.Lock()
	defer s.mu.Unlock()
	key := shardKey{cfg.JobID, cfg.Shard}
	if old, ok := s.shards[key]; ok {
		old.mu.Lock()
		oldGen := old.cfg.Generation
		old.mu.Unlock()
		if oldGen > cfg.Generation {
			return fmt.Errorf("%w: job %s shard %d: restore at generation %d, shard is at %d", ErrStaleGeneration, cfg.JobID, cfg.Shard, cfg.Generation, oldGen)
		}
		old.remove()
	} else {
		s.m.shards.Inc()
	}
	s.shards[key] = sh
	sh.log.Info("shard restored", "step", ck.Step, "generation", cfg.Generation, "range_offset", ck.Range.Offset, "range_length", ck.Range.Length)
	return nil
}

// RemoveShard drops a shard; calls blocked on it fail with Aborted.
func (s *Server) RemoveShard(jobID string, shard int) {
	s.dropAccess(jobID, shard)
	s.mu.Lock()
	sh, ok := s.shards[shardKey{jobID, shard}]
	if ok {
		delete(s.shards, sh.key)
		s.m.shards.Dec()
	}
	s.mu.Unlock()
	if ok {
		sh.remove()
		sh.log.Info("shard removed")
	}
}

// RemoveJob drops every shard of a job.
func (s *Server) RemoveJob(jobID string) {
	s.dropAccess(jobID, -1)
	s.mu.Lock()
	var removed []*shard
	for k, sh := range s.shards {
		if k.job == jobID {
			delete(s.shards, k)
			removed = append(removed, sh)
		}
	}
	s.m.shards.Sub(float64(len(removed)))
	s.mu.Unlock()
	for _, sh := range removed {
		sh.remove()
	}
	if len(removed) > 0 {
		s.log.Info("job removed", "job", jobID, "shards", len(removed))
	}
}

// SetGeneration installs a newer membership generation with its worker count. In sync
// mode the barrier changes at once: a pending step completes when every rank below the
// new worker count has pushed (gradients already accepted stay in the average).
// Requests carrying another generation are refused from then on, and calls waiting
// with the old one fail with FailedPrecondition.
func (s *Server) SetGeneration(jobID string, shard int, generation uint64, workers int) error {
	sh, err := s.lookup(jobID, shard)
	if err != nil {
		return err
	}
	return sh.setMembership(generation, workers, nil)
}

func (s *Server) lookup(jobID string, shard int) (*shard, error) {
	s.mu.RLock()
	sh, ok := s.shards[shardKey{jobID, shard}]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: job %q shard %d", ErrUnknownShard, jobID, shard)
	}
	return sh, nil
}

func (s *Server) lookupRef(ref *cohortv1.ShardRef) (*shard, error) {
	if ref == nil || ref.GetJobId() == "" {
		return nil, fmt.Errorf("%w: missing shard reference", ErrInvalidArgument)
	}
	return s.lookup(ref.GetJobId(), int(ref.GetShard()))
}

// Init implements the init handshake (see cohortv1.ParameterServiceServer).
func (s *Server) Init(stream cohortv1.ParameterService_InitServer) error {
	first, err := stream.Recv()
	if err != nil {
		return toStatus(fmt.Errorf("%w: init: %w", ErrInvalidArgument, err))
	}
	h := first.GetHeader()
	if h == nil {
		return toStatus(fmt.Errorf("%w: init stream must start with a header", ErrInvalidArgument))
	}
	rng := Range{Offset: h.GetRangeOffset(), Length: h.GetRangeLength()}
	switch {
	case rng.Length > MaxShardParams:
		return toStatus(fmt.Errorf("%w: range length %d exceeds %d", ErrInvalidArgument, rng.Length, MaxShardParams))
	case rng.Offset > h.GetTotalParams() || rng.Length > h.GetTotalParams()-rng.Offset:
		return toStatus(fmt.Errorf("%w: range [%d,+%d) outside total %d", ErrInvalidArgument, rng.Offset, rng.Length, h.GetTotalParams()))
	}
	if err := s.admit(stream.Context(), h.GetRef()); err != nil {
		return err
	}
	sh, err := s.lookupRef(h.GetRef())
	if err != nil {
		return toStatus(err)
	}
	gen := h.GetRef().GetGeneration()
	need, version, err := sh.beginInit(gen, rng, h.GetTotalParams(), h.GetLayoutHash())
	if err != nil {
		return toStatus(err)
	}
	if !need {
		// Already initialised: answer without reading the values.
		return stream.SendAndClose(&cohortv1.InitResponse{AcceptedValues: false, Step: version})
	}
	values := make([]float32, rng.Length)
	// m is reused across chunks: chunkCodec decodes into its chunk's capacity.
	m := cohortv1.InitRequest{Part: &cohortv1.InitRequest_Chunk{Chunk: getChunk()}}
	defer func() { putChunk(m.GetChunk()) }()
	if err := s.receive(stream.Context(), "init", &assembler{dst: values}, func() (*cohortv1.Chunk, error) {
		if err := stream.RecvMsg(&m); err != nil {
			return nil, err
		}
		if m.GetChunk() == nil {
			return nil, fmt.Errorf("%w: init: second header in stream", ErrInvalidArgument)
		}
		return m.GetChunk(), nil
	}); err != nil {
		return toStatus(err)
	}
	accepted, version, err := sh.commitInit(gen, rng, h.GetTotalParams(), h.GetLayoutHash(), values)
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&cohortv1.InitResponse{AcceptedValues: accepted, Step: version})
}

// receive reads chunks until the client closes its side and decodes them with asm.
func (s *Server) receive(ctx context.Context, rpc string, asm chunkDecoder, next func() (*cohortv1.Chunk, error)) error {
	var n int
	for {
		c, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return fmt.Errorf("%s: receive: %w", rpc, ctxErr)
			}
			return fmt.Errorf("%s: receive: %w", rpc, err)
		}
		n += len(c.GetData())
		if err := asm.add(c.GetOffset(), c.GetData()); err != nil {
			return fmt.Errorf("%s: %w", rpc, err)
		}
	}
	s.m.bytesReceived.WithLabelValues(rpc).Add(float64(n))
	if err := asm.done(); err != nil {
		return fmt.Errorf("%s: %w", rpc, err)
	}
	return nil
}

// Push accepts one worker's gradient for one step (see the package documentation).
func (s *Server) Push(stream cohortv1.ParameterService_PushServer) error {
	first, err := stream.Recv()
	if err != nil {
		return toStatus(fmt.Errorf("%w: push: %w", ErrInvalidArgument, err))
	}
	h := first.GetHeader()
	if h == nil {
		return toStatus(fmt.Errorf("%w: push stream must start with a header", ErrInvalidArgument))
	}
	// msg is reused across chunks: chunkCodec decodes into its chunk's capacity.
	msg := cohortv1.PushRequest{Part: &cohortv1.PushRequest_Chunk{Chunk: getChunk()}}
	defer func() { putChunk(msg.GetChunk()) }()
	version, err := s.push(stream.Context(), h, func() (*cohortv1.Chunk, error) {
		if err := stream.RecvMsg(&msg); err != nil {
			return nil, err
		}
		if msg.GetChunk() == nil {
			return nil, fmt.Errorf("%w: push: second header in stream", ErrInvalidArgument)
		}
		return msg.GetChunk(), nil
	})
	if err != nil {
		return err
	}
	return stream.SendAndClose(&cohortv1.PushResponse{Step: version})
}

// push applies one push with header h: it admits it, assembles the chunks next yields
// (until io.EOF) into the shard's gradient buffer and commits it, returning the shard's
// version after the push. Errors are gRPC status errors. A push refused before its
// body was read leaves the body unread.
func (s *Server) push(ctx context.Context, h *cohortv1.PushHeader, next func() (*cohortv1.Chunk, error)) (int64, error) {
	if err := s.admit(ctx, h.GetRef()); err != nil {
		return 0, err
	}
	sh, err := s.lookupRef(h.GetRef())
	if err != nil {
		return 0, toStatus(err)
	}
	gen, rank, step, samples := h.GetRef().GetGeneration(), int(h.GetWorkerRank()), h.GetStep(), h.GetNumSamples()
	grad, err := sh.beginPush(gen, rank, step, samples)
	if err != nil {
		return 0, s.pushRefused(sh, err)
	}
	defer sh.releaseGrad(grad)
	dec, err := newChunkDecoder(h.GetEncoding(), grad, true)
	if err != nil {
		return 0, s.pushRefused(sh, fmt.Errorf("push_header.encoding: %w", err))
	}
	if err := s.receive(ctx, "push", dec, next); err != nil {
		return 0, s.pushRefused(sh, err)
	}
	version, err := sh.commit(s.replica, gen, rank, step, samples, grad)
	if err != nil {
		return 0, s.pushRefused(sh, err)
	}
	s.m.pushes.WithLabelValues("accepted").Inc()
	return version, nil
}

func (s *Server) pushRefused(sh *shard, err error) error {
	if errors.Is(err, ErrDuplicatePush) {
		s.m.pushes.WithLabelValues("duplicate").Inc()
	} else {
		s.m.pushes.WithLabelValues("refused").Inc()
		sh.log.Debug("push refused", "err", err)
	}
	return toStatus(err)
}

// Pull streams the shard's values once its version is at least min_step.
func (s *Server) Pull(req *cohortv1.PullRequest, stream cohortv1.ParameterService_PullServer) error {
	return s.pull(stream.Context(), req, stream.Send)
}

// pull waits until the shard's version is at least req.min_step and sends one
// consistent snapshot of its values through send, in chunks. Refusals are gRPC status
// errors; an error from send is returned as it is.
func (s *Server) pull(ctx context.Context, req *cohortv1.PullRequest, send func(*cohortv1.PullResponse) error) error {
	if err := s.admit(ctx, req.GetRef()); err != nil {
		return err
	}
	per, err := pullChunkValues(req.GetEncoding(), s.chunkBytes)
	if err != nil {
		return toStatus(err)
	}
	sh, err := s.lookupRef(req.GetRef())
	if err != nil {
		return toStatus(err)
	}
	snap, err := sh.acquireSnapshot(ctx, req.GetRef().GetGeneration(), int(req.GetWorkerRank()), req.GetMinStep())
	if err != nil {
		return toStatus(err)
	}
	defer sh.releaseSnapshot(snap)
	resp := &cohortv1.PullResponse{Step: snap.version, Chunk: &cohortv1.Chunk{}, Encoding: req.GetEncoding()}
	var scratch []byte
	vals := snap.values
	for off := 0; off < len(vals) || off == 0; off += per {
		end := min(off+per, len(vals))
		resp.Chunk.Offset = uint64(off)
		resp.Chunk.Data = encodeValues(req.GetEncoding(), vals[off:end], &scratch)
		if err := send(resp); err != nil {
			return err
		}
		s.m.bytesSent.Add(float64(len(resp.Chunk.Data)))
		if end == len(vals) {
			break
		}
	}
	return nil
}

// Checkpoint writes the shard's values and optimizer state to the shard's Store as
// <key_prefix>/shard-NNN.ckpt: at exactly req.step in sync mode, at the version reached
// (at least req.step) in async and bounded modes. The response's step is the version
// written. key_prefix must lie below the shard's own job's checkpoints (see
// checkpointPrefix); any other is InvalidArgument and nothing is written.
func (s *Server) Checkpoint(ctx context.Context, req *cohortv1.CheckpointRequest) (*cohortv1.CheckpointResponse, error) {
	if err := s.admit(ctx, req.GetRef()); err != nil {
		return nil, err
	}
	sh, err := s.lookupRef(req.GetRef())
	if err != nil {
		return nil, toStatus(err)
	}
	if req.GetStep() < 0 {
		return nil, toStatus(fmt.Errorf("%w: negative checkpoint step %d", ErrInvalidArgument, req.GetStep()))
	}
	prefix, err := checkpointPrefix(sh.key.job, req.GetKeyPrefix())
	if err != nil {
		return nil, toStatus(err)
	}
	start := time.Now()
	data, store, version, err := sh.encodeCheckpoint(ctx, req.GetRef().GetGeneration(), req.GetStep())
	if err != nil {
		return nil, toStatus(err)
	}
	key := CheckpointKey(prefix, sh.key.shard)
	if err := store.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		if storage.IsFull(err) {
			s.m.checkpointFailures.WithLabelValues("storage_full").Inc()
			sh.log.Error("checkpoint write failed: storage full", "key", key, "step", req.GetStep(), "bytes", len(data), "err", err)
			return nil, toStatus(fmt.Errorf("paramserver: write checkpoint %s (%d bytes): %w: %w", key, len(data), ErrStorageFull, err))
		}
		s.m.checkpointFailures.WithLabelValues("error").Inc()
		sh.log.Error("checkpoint write failed", "key", key, "err", err)
		return nil, toStatus(fmt.Errorf("paramserver: write checkpoint %s: %w", key, err))
	}
	sum := sha256.Sum256(data)
	s.m.checkpointSecond.Observe(time.Since(start).Seconds())
	s.m.checkpointBytes.Add(float64(len(data)))
	sh.log.Info("checkpoint written", "key", key, "step", req.GetStep(), "version", version, "bytes", len(data))
	return &cohortv1.CheckpointResponse{Key: key, Size: int64(len(data)), Sha256: hex.EncodeToString(sum[:]), Step: version}, nil
}

// checkpointPrefix checks the key prefix of a Checkpoint request against the shard's
// job and returns it without its trailing '/': it must lie below the job's own
// checkpoints, storage.CheckpointsRoot(jobID) ("jobs/<job id>/checkpoints/"), as
// storage.CheckpointPrefix makes it, and be a valid key there (not absolute, no empty,
// "." or ".." segment). Anything else, such as another job's prefix, is refused with
// ErrInvalidArgument before anything is written.
func checkpointPrefix(jobID, prefix string) (string, error) {
	root := storage.CheckpointsRoot(jobID)
	p := strings.TrimSuffix(prefix, "/")
	rest, under := strings.CutPrefix(p, root)
	switch {
	case jobID == "" || strings.ContainsAny(jobID, "/\\") || storage.ValidateKey(root+"x") != nil:
		return "", fmt.Errorf("%w: job id %.64q cannot name a checkpoint key", ErrInvalidArgument, jobID)
	case !under || rest == "":
		return "", fmt.Errorf("%w: checkpoint key prefix %.128q is not below the job's checkpoints %q", ErrInvalidArgument, prefix, root)
	}
	if err := storage.ValidateKey(p); err != nil {
		return "", fmt.Errorf("%w: checkpoint key prefix: %w", ErrInvalidArgument, err)
	}
	return p, nil
}

// CheckpointKey returns the storage key of a shard's checkpoint object under prefix.
func CheckpointKey(prefix string, shard int) string {
	name := fmt.Sprintf("shard-%03d.ckpt", shard)
	if prefix = strings.Trim(prefix, "/"); prefix == "" {
		return name
	}
	return prefix + "/" + name
}
