package worker

import (
	"context"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Replicated shards (spec.resources.parameterServers.replicas: 2). When a shard's
// primary is lost, the coordinator promotes its backup under a new generation and the
// workers' assignments name the backup's node as the shard's address. A worker whose
// calls to the dead primary are being retried (Unavailable) must move them there at
// once: followShards points the parameter-server client and the version probe at the
// addresses of every newer membership. The calls then reach the promoted shard with
// the old generation, are refused as stale, and the trainer follows the membership
// change as for an elastic job (elastic.go): in sync mode it settles the step in
// progress by the shards' versions, so it continues at the step the backup holds,
// never behind the last acknowledged one, without a checkpoint restore.

// followShards moves client and probe to the shard addresses of each membership the
// trainer's watch receives, until ctx ends.
func (t *Trainer) followShards(ctx context.Context, client *paramserver.Client, probe *versionProbe) {
	if t.cfg.Membership == nil {
		return
	}
	for {
		m, changed := t.cfg.Membership.Get()
		if addrs := m.ShardAddresses; len(addrs) == len(client.Ranges()) {
			for i, addr := range addrs {
				if addr == "" {
					continue
				}
				if err := client.SetAddress(i, addr); err != nil {
					t.log.Warn("parameter shard address not followed", "shard", i, "address", addr, "err", err)
					continue
				}
				probe.setAddress(i, addr)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// stub returns the probe's stub of shard i.
func (p *versionProbe) stub(i int) cohortv1.ParameterServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stubs[i]
}

// setAddress points the probe's calls to shard i at addr.
func (p *versionProbe) setAddress(i int, addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addrs[i] == addr {
		return
	}
	cc, err := grpc.NewClient(addr, p.dial...)
	if err != nil {
		return // the next probe fails on the old address and is retried
	}
	_ = p.conns[i].Close()
	p.addrs[i], p.conns[i], p.stubs[i] = addr, cc, cohortv1.NewParameterServiceClient(cc)
}

// shardUnavailable passes the client's report of an unreachable shard to OnShardLost,
// for jobs with replicated shards (one copy has nothing to promote).
func (t *Trainer) shardUnavailable(shard int, err error) {
	if t.cfg.OnShardLost == nil || t.job.GetShardReplicas() < 2 {
		return
	}
	gen := t.cfg.Assignment.GetAllocation().GetGeneration()
	if t.cfg.Membership != nil {
		m, _ := t.cfg.Membership.Get()
		gen = m.Generation
	}
	t.log.Warn("parameter shard unreachable: reporting it", "shard", shard, "generation", gen, "err", err)
	t.cfg.OnShardLost(t.job.GetId(), gen, shard)
}
