package paramserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrVersionMismatch is returned (wrapped) by Client.Pull in sync mode when the shards
// answered with different versions.
var ErrVersionMismatch = errors.New("paramserver: shards at different versions")

// ClientConfig configures a worker's Client.
type ClientConfig struct {
	// Addresses holds one parameter-server address per shard, in shard order.
	Addresses []string
	// JobID, Generation and Rank identify the worker in its job's membership.
	JobID      string
	Generation uint64
	Rank       int
	// TotalParams is the length of the job's flat parameter vector.
	TotalParams uint64
	// LayoutHash identifies the model's tensor layout in the Init handshake.
	LayoutHash string
	// Mode is the job's consistency mode ("" means sync). In sync mode Pull requires
	// every shard to answer with the same version; otherwise it returns the smallest.
	Mode string
	// ChunkBytes is the Init and Push chunk size (0: DefaultChunkBytes).
	ChunkBytes int
	// NoSessions makes every push and pull its own RPC instead of an operation on the
	// shard's long-lived Session stream (tests, and comparisons in benchmarks).
	NoSessions bool
	// Compression is the job's gradient compression (compress.go); the zero value
	// sends float32 values.
	Compression Compression
	// DialOptions replace the default insecure transport credentials when non-empty;
	// message size limits are always added.
	DialOptions []grpc.DialOption
	// Logger receives retry logs; nil uses slog.Default().
	Logger *slog.Logger
	// OnShardUnavailable, when set, is called (in its own goroutine, at most once a
	// second per shard) while calls to a shard fail as unreachable: the fast sign of a
	// dead parameter server (client_replica.go).
	OnShardUnavailable func(shard int, err error)
}

// ShardObject describes one shard's checkpoint object in storage.
type ShardObject struct {
	Shard  int
	Key    string
	Size   int64
	SHA256 string
	// Offset and Length are the shard's range in the flat parameter space.
	Offset, Length uint64
}

// Client is a worker's connection to all shards of its job. Its methods are safe for
// concurrent use, and each contacts all shards in parallel. Transient failures
// (Unavailable, NotFound, and ErrNotInitialised) are retried with backoff until the
// context ends. A server's refusals come back decoded (FromStatus): errors.Is matches
// their kind (ErrStaleGeneration, ErrTooStale, ...).
type Client struct {
	cfg    ClientConfig
	log    *slog.Logger
	ranges []Range
	conns  []*grpc.ClientConn
	stubs  []cohortv1.ParameterServiceClient
	chunk  int // values per chunk
	gen    atomic.Uint64
	rank   atomic.Int32

	comp    *clientCompression // nil: float32 pushes and pulls (compress_client.go)
	traffic trafficCounters

	sessions []*session // one per shard, see session.go
	// epMu guards conns, stubs, sessions and cfg.Addresses, which SetAddress changes
	// (client_replica.go).
	epMu sync.RWMutex
	// dialOpts are the options every shard connection is dialled with.
	dialOpts []grpc.DialOption
	// reported holds, per shard, when OnShardUnavailable was last called (unix nanos).
	reported sync.Map
	base     context.Context    // bounds the sessions' streams; ended by Close
	stop     context.CancelFunc // ends base
}

// NewClient creates connections to all shards (connections are established lazily) and
// computes the shard ranges with Partition.
func NewClient(cfg ClientConfig) (*Client, error) {
	switch {
	case len(cfg.Addresses) == 0:
		return nil, fmt.Errorf("%w: no shard addresses", ErrInvalidConfig)
	case cfg.JobID == "":
		return nil, fmt.Errorf("%w: empty job id", ErrInvalidConfig)
	case cfg.Rank < 0:
		return nil, fmt.Errorf("%w: negative rank %d", ErrInvalidConfig, cfg.Rank)
	case cfg.Mode != "" && cfg.Mode != ModeSync && cfg.Mode != ModeAsync && cfg.Mode != ModeBounded:
		return nil, fmt.Errorf("%w: unknown consistency mode %q", ErrInvalidConfig, cfg.Mode)
	}
	comp, err := newClientCompression(cfg.Compression, len(cfg.Addresses))
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes),
		grpc.ForceCodecV2(chunkCodec{})),
		grpc.WithInitialWindowSize(8 << 20), grpc.WithInitialConnWindowSize(32 << 20),
		grpc.WithWriteBufferSize(1 << 20), grpc.WithReadBufferSize(1 << 20),
	}
	if len(cfg.DialOptions) == 0 {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	opts = append(opts, cfg.DialOptions...)
	c := &Client{
		dialOpts: opts,
		cfg:      cfg,
		log:      cfg.Logger.With("component", "paramserver-client", "job", cfg.JobID),
		ranges:   Partition(cfg.TotalParams, len(cfg.Addresses)),
		chunk:    chunkValues(normalizeChunkBytes(cfg.ChunkBytes)),
		comp:     comp,
	}
	c.gen.Store(cfg.Generation)
	c.rank.Store(int32(cfg.Rank))
	c.base, c.stop = context.WithCancel(context.Background())
	for i, addr := range cfg.Addresses {
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("paramserver: dial shard %d at %s: %w", i, addr, err)
		}
		c.conns = append(c.conns, cc)
		c.stubs = append(c.stubs, cohortv1.NewParameterServiceClient(cc))
		c.sessions = append(c.sessions, &session{off: cfg.NoSessions})
	}
	return c, nil
}

// Ranges returns the shard ranges, in shard order.
func (c *Client) Ranges() []Range { return append([]Range(nil), c.ranges...) }

// SetMembership changes the generation and rank the Client sends, after the job's
// membership changed.
func (c *Client) SetMembership(generation uint64, rank int) {
	c.gen.Store(generation)
	c.rank.Store(int32(rank))
}

// Close ends the sessions (cleanly where idle: see session.finish) and closes all
// connections.
func (c *Client) Close() error {
	var wg sync.WaitGroup
	c.epMu.RLock()
	sessions, conns := append([]*session(nil), c.sessions...), append([]*grpc.ClientConn(nil), c.conns...)
	c.epMu.RUnlock()
	for _, ss := range sessions {
		wg.Go(func() { ss.finish(time.Second) })
	}
	wg.Wait()
	if c.stop != nil {
		c.stop()
	}
	var errs []error
	for _, cc := range conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

func (c *Client) ref(shard int) *cohortv1.ShardRef {
	return &cohortv1.ShardRef{JobId: c.cfg.JobID, Shard: int32(shard), Generation: c.gen.Load()}
}

// parallel runs fn for every shard concurrently and returns the first error; the other
// calls are cancelled when one fails.
func (c *Client) parallel(ctx context.Context, fn func(ctx context.Context, shard int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(c.stubs))
	var wg sync.WaitGroup
	for i := range c.stubs {
		wg.Go(func() {
			if err := fn(ctx, i); err != nil {
				errs[i] = fmt.Errorf("shard %d (%s): %w", i, c.addr(i), err)
				cancel()
			}
		})
	}
	wg.Wait()
	// Prefer a root cause over the cancellations it caused.
	for _, err := range errs {
		if err != nil && status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errors.Join(errs...)
}

// retryable reports whether an RPC error (decoded by FromStatus) is transient.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.NotFound:
		return true
	}
	return errors.Is(err, ErrNotInitialised)
}

// retry calls op until it succeeds, fails permanently or ctx ends, backing off
// exponentially (10 ms to 1 s, with jitter) between transient failures. Its errors are
// decoded by FromStatus.
func (c *Client) retry(ctx context.Context, what string, shard int, op func() error) error {
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		addr := c.addr(shard)
		err := FromStatus(op())
		if err != nil && ctx.Err() == nil && c.addr(shard) != addr {
			// SetAddress moved the shard under the call (its old connection closes):
			// try the new address.
			continue
		}
		if err == nil || !retryable(err) {
			return err
		}
		c.unavailable(shard, err)
		if attempt == 1 || attempt%20 == 0 {
			c.log.Debug("retrying", "op", what, "shard", shard, "attempt", attempt, "err", err)
		}
		d := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// sendChunks streams values as chunks through send.
func (c *Client) sendChunks(values []float32, send func(*cohortv1.Chunk) error) error {
	var scratch []byte
	chunk := &cohortv1.Chunk{}
	for off := 0; off < len(values); off += c.chunk {
		end := min(off+c.chunk, len(values))
		chunk.Offset = uint64(off)
		chunk.Data = float32Bytes(values[off:end], &scratch)
		if err := send(chunk); err != nil {
			return err
		}
	}
	return nil
}

// finish closes a client stream whose Send may have failed because the server already
// answered: the status from CloseAndRecv is the real result then.
func finish[Req, Resp any](stream grpc.ClientStreamingClient[Req, Resp], sendErr error) (*Resp, error) {
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		return nil, sendErr
	}
	return stream.CloseAndRecv()
}

// Init offers initial (TotalParams values) to every shard. The first Init a shard
// receives sets its values; later ones only check that range, total and layout hash
// agree.
func (c *Client) Init(ctx context.Context, initial []float32) error {
	if uint64(len(initial)) != c.cfg.TotalParams {
		return fmt.Errorf("%w: init with %d values, job has %d", ErrInvalidArgument, len(initial), c.cfg.TotalParams)
	}
	err := c.parallel(ctx, func(ctx context.Context, i int) error {
		r := c.ranges[i]
		return c.retry(ctx, "init", i, func() error {
			stream, err := c.stub(i).Init(ctx)
			if err != nil {
				return err
			}
			err = stream.Send(&cohortv1.InitRequest{Part: &cohortv1.InitRequest_Header{Header: &cohortv1.InitHeader{
				Ref: c.ref(i), RangeOffset: r.Offset, RangeLength: r.Length, TotalParams: c.cfg.TotalParams,
				LayoutHash: c.cfg.LayoutHash, WorkerRank: c.rank.Load(),
			}}})
			if err == nil {
				msg := &cohortv1.InitRequest_Chunk{}
				req := &cohortv1.InitRequest{Part: msg}
				err = c.sendChunks(initial[r.Offset:r.End()], func(ch *cohortv1.Chunk) error {
					msg.Chunk = ch
					return stream.Send(req)
				})
			}
			_, err = finish(stream, err)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("paramserver: init: %w", err)
	}
	return nil
}

// Pull waits until every shard's version is at least step, fills dst (TotalParams
// values) from all shards and returns the version. In sync mode all shards must answer
// with the same version (else an error wrapping ErrVersionMismatch); in the other modes
// the smallest version is returned.
func (c *Client) Pull(ctx context.Context, step int64, dst []float32) (int64, error) {
	if uint64(len(dst)) != c.cfg.TotalParams {
		return 0, fmt.Errorf("%w: pull into %d values, job has %d", ErrInvalidArgument, len(dst), c.cfg.TotalParams)
	}
	versions := make([]int64, len(c.stubs))
	err := c.parallel(ctx, func(ctx context.Context, i int) error {
		r := c.ranges[i]
		return c.retry(ctx, "pull", i, func() error {
			v, err := c.pullShard(ctx, i, step, dst[r.Offset:r.End()])
			versions[i] = v
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("paramserver: pull step %d: %w", step, err)
	}
	c.countPull(c.cfg.TotalParams)
	v := versions[0]
	for i, w := range versions {
		if w != v && (c.cfg.Mode == "" || c.cfg.Mode == ModeSync) {
			return 0, fmt.Errorf("%w: shard 0 at step %d, shard %d at step %d", ErrVersionMismatch, v, i, w)
		}
		v = min(v, w)
	}
	return v, nil
}

func (c *Client) pullShard(ctx context.Context, i int, step int64, dst []float32) (int64, error) {
	if ss := c.session(i); ss.mu.TryLock() {
		var version int64
		err := errNoSession
		if !ss.off {
			req := &cohortv1.PullRequest{Ref: c.ref(i), MinStep: step, WorkerRank: c.rank.Load(), Encoding: c.pullEncoding()}
			err = ss.do(ctx, c.base, c.stub(i), func() (err error) {
				version, err = ss.pull(req, dst)
				return err
			})
		}
		ss.mu.Unlock()
		if !errors.Is(err, errNoSession) {
			return version, err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.stub(i).Pull(ctx, &cohortv1.PullRequest{Ref: c.ref(i), MinStep: step, WorkerRank: c.rank.Load(), Encoding: c.pullEncoding()})
	if err != nil {
		return 0, err
	}
	pa, err := newPullAssembler(dst, c.pullEncoding())
	if err != nil {
		return 0, err
	}
	// resp is reused across chunks: chunkCodec decodes into its chunk's capacity.
	resp := cohortv1.PullResponse{Chunk: getChunk()}
	defer func() { putChunk(resp.GetChunk()) }()
	for {
		if err := stream.RecvMsg(&resp); err != nil {
			if errors.Is(err, io.EOF) {
				return pa.done()
			}
			return 0, err
		}
		if err := pa.add(&resp); err != nil {
			return 0, err
		}
	}
}

// pullAssembler assembles the value chunks of one pull into place and checks that they
// all belong to one version and come in the encoding asked for.
type pullAssembler struct {
	asm     chunkDecoder
	enc     cohortv1.TensorEncoding
	version int64 // -1 until the first chunk
}

func newPullAssembler(dst []float32, enc cohortv1.TensorEncoding) (*pullAssembler, error) {
	asm, err := newChunkDecoder(enc, dst, false)
	if err != nil {
		return nil, err
	}
	return &pullAssembler{asm: asm, enc: enc, version: -1}, nil
}

// add places one chunk.
func (p *pullAssembler) add(r *cohortv1.PullResponse) error {
	if p.version >= 0 && r.GetStep() != p.version {
		return fmt.Errorf("%w: pull stream changed version from %d to %d", ErrInvalidArgument, p.version, r.GetStep())
	}
	p.version = r.GetStep()
	if err := checkPullEncoding(p.enc, r.GetEncoding()); err != nil {
		return err
	}
	return p.asm.add(r.GetChunk().GetOffset(), r.GetChunk().GetData())
}

// done returns the pull's version once every value has arrived.
func (p *pullAssembler) done() (int64, error) {
	if p.version < 0 {
		return 0, fmt.Errorf("%w: empty pull stream", ErrInvalidArgument)
	}
	if err := p.asm.done(); err != nil {
		return 0, err
	}
	return p.version, nil
}

// Push sends grad (TotalParams values, computed against version step, the mean over
// numSamples samples) to all shards, each getting its range. It returns once every
// shard accepted it; a shard answering AlreadyExists (a retried push) counts as success.
func (c *Client) Push(ctx context.Context, step int64, grad []float32, numSamples int64) error {
	if uint64(len(grad)) != c.cfg.TotalParams {
		return fmt.Errorf("%w: push of %d values, job has %d", ErrInvalidArgument, len(grad), c.cfg.TotalParams)
	}
	err := c.parallel(ctx, func(ctx context.Context, i int) error {
		r := c.ranges[i]
		body, settle := c.preparePush(i, grad[r.Offset:r.End()], numSamples)
		err := c.retry(ctx, "push", i, func() error {
			err := c.pushShard(ctx, i, step, body, numSamples)
			if status.Code(err) == codes.AlreadyExists {
				return nil
			}
			return err
		})
		settle(err == nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("paramserver: push step %d: %w", step, err)
	}
	return nil
}

func (c *Client) pushShard(ctx context.Context, i int, step int64, body *pushBody, numSamples int64) error {
	if ss := c.session(i); ss.mu.TryLock() {
		err := errNoSession
		if !ss.off {
			h := &cohortv1.PushHeader{Ref: c.ref(i), Step: step, WorkerRank: c.rank.Load(), NumSamples: numSamples, Encoding: body.enc}
			err = ss.do(ctx, c.base, c.stub(i), func() error {
				_, err := ss.push(h, body, c.chunk)
				return err
			})
		}
		ss.mu.Unlock()
		if !errors.Is(err, errNoSession) {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.stub(i).Push(ctx)
	if err != nil {
		return err
	}
	err = stream.Send(&cohortv1.PushRequest{Part: &cohortv1.PushRequest_Header{Header: &cohortv1.PushHeader{
		Ref: c.ref(i), Step: step, WorkerRank: c.rank.Load(), NumSamples: numSamples, Encoding: body.enc,
	}}})
	if err == nil {
		msg := &cohortv1.PushRequest_Chunk{}
		req := &cohortv1.PushRequest{Part: msg}
		err = body.send(c.chunk, func(ch *cohortv1.Chunk) error {
			msg.Chunk = ch
			return stream.Send(req)
		})
	}
	_, err = finish(stream, err)
	return err
}

// Checkpoint asks every shard to write its values and optimizer state at exactly step
// under keyPrefix and returns the objects in shard order.
func (c *Client) Checkpoint(ctx context.Context, step int64, keyPrefix string) ([]ShardObject, error) {
	out := make([]ShardObject, len(c.stubs))
	err := c.parallel(ctx, func(ctx context.Context, i int) error {
		return c.retry(ctx, "checkpoint", i, func() error {
			resp, err := c.stub(i).Checkpoint(ctx, &cohortv1.CheckpointRequest{Ref: c.ref(i), Step: step, KeyPrefix: keyPrefix})
			if err != nil {
				return err
			}
			out[i] = ShardObject{Shard: i, Key: resp.GetKey(), Size: resp.GetSize(), SHA256: resp.GetSha256(),
				Offset: c.ranges[i].Offset, Length: c.ranges[i].Length}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("paramserver: checkpoint step %d: %w", step, err)
	}
	return out, nil
}
