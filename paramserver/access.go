package paramserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ErrNotJobWorker means the caller's identity is not one of the workers the shard's job
// placed (PermissionDenied): a shard serves only its own job's workers.
var ErrNotJobWorker = errors.New("caller is not a worker of this shard's job")

// CallerFunc returns the verified name of the caller of the call in ctx (the node name
// in its certificate), or an error saying why the call has none that may call a shard
// (no certificate, another role, a certificate of a revoked join token).
type CallerFunc func(ctx context.Context) (name string, err error)

// shardAccess is who may call one shard: the nodes of its job's workers at a
// generation.
type shardAccess struct {
	gen   uint64
	nodes []string
}

// accessList holds the shards' access lists; it is checked only when the Server has a
// CallerFunc (a server behind mutual TLS).
type accessList struct {
	mu     sync.Mutex
	caller CallerFunc
	shards map[shardKey]shardAccess
}

// SetCaller turns access control on: from then on every Init, Push, Pull, Session and
// Checkpoint call is admitted only if caller names one of the nodes SetAllowedWorkers
// gave for the shard it addresses.
func (s *Server) SetCaller(caller CallerFunc) {
	s.access.mu.Lock()
	defer s.access.mu.Unlock()
	s.access.caller = caller
}

// SetAllowedWorkers records the nodes of the job's workers at generation for one shard
// (the assignment's allowed_workers). An older generation than the one recorded is
// ignored. It may come before the shard exists.
func (s *Server) SetAllowedWorkers(jobID string, shard int, generation uint64, nodes []string) {
	s.access.mu.Lock()
	defer s.access.mu.Unlock()
	if s.access.shards == nil {
		s.access.shards = make(map[shardKey]shardAccess)
	}
	k := shardKey{jobID, shard}
	if cur, ok := s.access.shards[k]; ok && generation < cur.gen {
		return
	}
	s.access.shards[k] = shardAccess{gen: generation, nodes: slices.Clone(nodes)}
}

// dropAccess forgets the access lists of a job's shards (shard < 0: all of them).
func (s *Server) dropAccess(jobID string, shard int) {
	s.access.mu.Lock()
	defer s.access.mu.Unlock()
	for k := range s.access.shards {
		if k.job == jobID && (shard < 0 || k.shard == shard) {
			delete(s.access.shards, k)
		}
	}
}

// admit checks the caller of ctx against the access list of the shard ref names. A
// caller missing from a list of an older generation than the request's is told the
// shard is not known yet (NotFound, which workers retry): the new membership may not
// have reached this server. Errors are gRPC status errors.
func (s *Server) admit(ctx context.Context, ref *cohortv1.ShardRef) error {
	s.access.mu.Lock()
	caller := s.access.caller
	acc, known := s.access.shards[shardKey{ref.GetJobId(), int(ref.GetShard())}]
	s.access.mu.Unlock()
	if caller == nil {
		return nil
	}
	name, err := caller(ctx)
	if err != nil {
		s.log.Warn("shard call refused", "job", ref.GetJobId(), "shard", ref.GetShard(), "err", err)
		return toStatus(fmt.Errorf("%w: %w", ErrNotJobWorker, err))
	}
	if known && slices.Contains(acc.nodes, name) {
		return nil
	}
	if !known || ref.GetGeneration() > acc.gen {
		return toStatus(fmt.Errorf("%w: job %q shard %d: its workers at generation %d are not known here yet", ErrUnknownShard, ref.GetJobId(), ref.GetShard(), ref.GetGeneration()))
	}
	s.log.Warn("shard call refused: not a worker of the job", "caller", name, "job", ref.GetJobId(), "shard", ref.GetShard(), "generation", acc.gen)
	return toStatus(fmt.Errorf("%w: %s is not among the workers of job %q (generation %d) that shard %d serves", ErrNotJobWorker, name, ref.GetJobId(), acc.gen, ref.GetShard()))
}
