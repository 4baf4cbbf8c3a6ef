package paramserver

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// SetAddress points the Client's calls to shard at addr: after a replicated shard's
// backup was promoted, its workers follow it there. Calls in progress on the old
// address fail or are retried at the new one (Unavailable is retried); together with
// SetMembership (the promotion's generation) the worker carries on where the shard is.
// Setting the address the shard has is a no-op.
func (c *Client) SetAddress(shard int, addr string) error {
	if shard < 0 || shard >= len(c.ranges) {
		return fmt.Errorf("%w: shard %d outside [0,%d)", ErrInvalidArgument, shard, len(c.ranges))
	}
	c.epMu.RLock()
	same := c.cfg.Addresses[shard] == addr
	c.epMu.RUnlock()
	if same {
		return nil
	}
	cc, err := grpc.NewClient(addr, c.dialOpts...)
	if err != nil {
		return fmt.Errorf("paramserver: dial shard %d at %s: %w", shard, addr, err)
	}
	c.epMu.Lock()
	old, oldSession := c.conns[shard], c.sessions[shard]
	addrs := append([]string(nil), c.cfg.Addresses...) // the caller's slice stays as it was
	addrs[shard] = addr
	c.cfg.Addresses = addrs
	c.conns[shard], c.stubs[shard] = cc, cohortv1.NewParameterServiceClient(cc)
	c.sessions[shard] = &session{off: c.cfg.NoSessions}
	c.epMu.Unlock()
	c.log.Info("shard moved", "shard", shard, "address", addr)
	go func() {
		oldSession.finish(0)
		_ = old.Close()
	}()
	return nil
}

// Addresses returns the shard addresses the Client calls, in shard order.
func (c *Client) Addresses() []string {
	c.epMu.RLock()
	defer c.epMu.RUnlock()
	return append([]string(nil), c.cfg.Addresses...)
}

func (c *Client) stub(i int) cohortv1.ParameterServiceClient {
	c.epMu.RLock()
	defer c.epMu.RUnlock()
	return c.stubs[i]
}

func (c *Client) session(i int) *session {
	c.epMu.RLock()
	defer c.epMu.RUnlock()
	return c.sessions[i]
}

func (c *Client) addr(i int) string {
	c.epMu.RLock()
	defer c.epMu.RUnlock()
	return c.cfg.Addresses[i]
}

// unavailable reports a call to shard that failed as unreachable (Unavailable from the
// transport, not a backup's NOT_PRIMARY) through OnShardUnavailable, at most once a
// second per shard.
func (c *Client) unavailable(shard int, err error) {
	if c.cfg.OnShardUnavailable == nil || status.Code(err) != codes.Unavailable || errors.Is(err, ErrNotPrimary) {
		return
	}
	now := time.Now().UnixNano()
	if last, ok := c.reported.Load(shard); ok && now-last.(int64) < int64(time.Second) {
		return
	}
	c.reported.Store(shard, now)
	go c.cfg.OnShardUnavailable(shard, err)
}
