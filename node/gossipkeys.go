package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/gossip"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Gossip keyring timing (variables for tests).
var (
	// gossipKeyringPoll is how often a member asks for the keyring again, to follow
	// installs, switches and removals.
	gossipKeyringPoll = 5 * time.Second
	// gossipKeyringWait bounds the wait for the first keyring at start.
	gossipKeyringWait = 60 * time.Second
)

// keyring is a fetched gossip keyring.
type keyring struct {
	keys    [][]byte
	version uint64
}

// gossipKeysFromCluster reports whether this node takes its gossip keyring from the
// cluster: with TLS on and no static key.
func (n *Node) gossipKeysFromCluster() bool {
	return n.tls != nil && len(n.cfg.Gossip.Key) == 0
}

// fetchGossipKeyring reads the keyring: from local state on a coordinator that holds
// the CA, else over mutual TLS from the coordinators.
func (n *Node) fetchGossipKeyring(ctx context.Context) (keyring, error) {
	if n.srv != nil && n.tls.ca() != nil {
		keys, version, err := api.OpenGossipKeyring(n.srv, n.tls.rot.knownCAs()...)
		if err == nil && len(keys) == 0 {
			err = errors.New("the cluster has no gossip keyring yet")
		}
		return keyring{keys, version}, err
	}
	var addrs []string
	if co := n.cfg.Coordinator; co != nil {
		addrs = co.Join
	} else if as := agentsOf(&n.cfg); len(as) > 0 {
		addrs = as[0].Join
	}
	conn, err := dial(addrs, n.tls.clientCreds(n.tls.certs, pki.RoleCoordinator), n.cfg.Token)
	if err != nil {
		return keyring{}, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := cohortv1.NewGossipServiceClient(conn).GetKeyring(cctx, &cohortv1.GetKeyringRequest{})
	if err != nil {
		return keyring{}, err
	}
	return keyring{resp.Keys, resp.Version}, nil
}

// firstGossipKeyring waits (bounded) for the cluster's keyring.
func (n *Node) firstGossipKeyring(ctx context.Context) (keyring, error) {
	ctx, cancel := context.WithTimeout(ctx, gossipKeyringWait)
	defer cancel()
	for {
		kr, err := n.fetchGossipKeyring(ctx)
		if err == nil {
			return kr, nil
		}
		n.log.Debug("waiting for the gossip keyring", "err", err)
		select {
		case <-ctx.Done():
			return keyring{}, fmt.Errorf("gossip: no keyring from the cluster: %w", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// followGossipKeyring applies keyring changes to member until ctx ends.
func (n *Node) followGossipKeyring(ctx context.Context, member *gossip.Gossip, version uint64) {
	log := n.log.With("component", "gossip")
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(gossipKeyringPoll):
		}
		kr, err := n.fetchGossipKeyring(ctx)
		if err != nil {
			log.Debug("gossip keyring refresh failed", "err", err)
			continue
		}
		if kr.version == version && keysEqual(member.Keys(), kr.keys) {
			continue
		}
		if err := member.SetKeys(kr.keys); err != nil {
			log.Warn("gossip keyring not applied", "err", err, "version", kr.version)
			continue
		}
		version = kr.version
		log.Info("gossip keyring applied", "version", version, "keys", len(kr.keys), "primary", api.GossipKeyFingerprint(kr.keys[0]))
	}
}

func keysEqual(a, b [][]byte) bool {
	return slices.EqualFunc(a, b, bytes.Equal)
}

// ensureGossipKeyring makes the cluster's first gossip keyring when this coordinator,
// holding the CA, leads and there is none.
func (n *Node) ensureGossipKeyring(ctx context.Context) {
	if n.srv == nil || n.tls == nil || n.tls.ca() == nil {
		return
	}
	srv, ca := n.srv, n.tls.ca()
	n.serveWG.Go(func() {
		for {
			if err := srv.WaitForLeader(ctx); err != nil {
				return
			}
			if k, err := srv.State().GossipKeyring(nil); err == nil && k != nil {
				return
			}
			if srv.IsLeader() {
				made, err := api.EnsureGossipKeyring(ctx, srv, ca)
				if err == nil {
					if made {
						n.log.Info("made the cluster's gossip keyring", "component", "gossip")
					}
					return
				}
				n.log.Debug("making the gossip keyring failed; retrying", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
}
