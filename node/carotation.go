package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Files of a CA-holding node's TLS directory that CA rotations add.
const (
	// previousCADir holds the CA (certificate and key) the last rotation replaced: its
	// key opens what was sealed before the rotation.
	previousCADir = "previous-ca"
	// caChainFile is what signed chains end with during a rotation: the active CA
	// cross-signed by the previous one, then the previous root.
	caChainFile = "ca-chain.pem"
)

// CA rotation timing (variables for tests).
var (
	// caFollowPoll bounds how long a coordinator waits on its state for a new cluster CA
	// record before it looks again (a snapshot restore replaces the store unwatched).
	caFollowPoll = 2 * time.Second
	// caWatchPoll is how often a node agent that renews over the network checks whether
	// the coordinators' certificates come from another CA than its own, to renew at
	// once.
	caWatchPoll = 30 * time.Second
)

// caRotation is a CA-holding node's side of CA rotations.
type caRotation struct {
	mu sync.Mutex
	// known is every CA whose key the node holds, the active one first.
	known []*pki.CA
	// version is the cluster CA record applied.
	version uint64
	// locals are the certificates the node issued itself, renewed at once when the CA
	// changes.
	locals []*pki.Reloader
}

func (r *caRotation) addLocal(rl *pki.Reloader) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.locals = append(r.locals, rl)
}

func (r *caRotation) knownCAs() []*pki.CA {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.known)
}

// knownCAs is every CA whose key this node holds, the active one first.
func (t *nodeTLS) knownCAs() []*pki.CA {
	if t == nil {
		return nil
	}
	return t.rot.knownCAs()
}

// trustOf is the node's trust bundle, or nil without TLS.
func (t *nodeTLS) trustOf() *pki.Trust {
	if t == nil {
		return nil
	}
	return t.trust
}

// loadCAs sets up a CA-holding node from ca and its directory: ca.crt's bundle (ca
// first) is what it trusts, previous-ca holds the key of the CA before the last
// rotation, and ca-chain.pem, during a rotation, ends its signed chains.
func (t *nodeTLS) loadCAs(ca *pki.CA) error {
	trust, err := pki.LoadTrust(filepath.Join(t.dir, pki.CACertFile))
	if err != nil {
		return err
	}
	// The key's CA is first, or later when a rotation stopped between writing the
	// bundle and the key: the node then signs with the old CA, trusts both, and the
	// cluster CA record, applied again on start, moves it onto the new one.
	if h := trust.Hashes(); !slices.Contains(h, ca.Hash()) {
		return fmt.Errorf("%s does not hold %s's CA %s (it holds %v)", pki.CACertFile, pki.CAKeyFile, ca.Hash(), h)
	}
	t.trust = trust
	known := []*pki.CA{ca}
	prev, err := pki.LoadCA(filepath.Join(t.dir, previousCADir))
	switch {
	case err == nil:
		known = append(known, prev)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	t.rot.known = known
	signer := ca
	if chain, err := os.ReadFile(filepath.Join(t.dir, caChainFile)); err == nil {
		signer = ca.WithChain(chain)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	t.signing.Store(signer)
	return nil
}

// followClusterCA applies the cluster CA records of rotations on a coordinator that
// holds the CA, until ctx ends.
func (n *Node) followClusterCA(ctx context.Context) {
	if n.srv == nil || n.tls.ca() == nil {
		return
	}
	log := n.log.With("component", "tls")
	n.serveWG.Go(func() {
		var failed uint64
		for {
			ws := memdb.NewWatchSet()
			rec, err := n.srv.State().ClusterCA(ws)
			if err == nil && rec != nil {
				if err := n.tls.applyClusterCA(rec, log); err != nil && failed != rec.Version {
					failed = rec.Version
					log.Error("cluster CA record not applied", "version", rec.Version, "err", err)
				}
				n.dropOldCA(ctx, rec, log)
				n.tls.forgetPreviousCA(rec, func(ca *pki.CA) error {
					_, _, err := api.OpenGossipKeyring(n.srv, ca)
					return err
				}, log)
			}
			wctx, cancel := context.WithTimeout(ctx, caFollowPoll)
			_ = ws.WatchCtx(wctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
		}
	})
}

// dropOldCA ends a rotation on the leader once api.CARotationOverlap has passed since
// it: every certificate the old CA signed and the cluster renews has been replaced.
func (n *Node) dropOldCA(ctx context.Context, rec *cohortv1.ClusterCA, log *slog.Logger) {
	if !n.srv.IsLeader() || time.Since(time.Unix(0, rec.RotatedUnixNano)) < api.CARotationOverlap() {
		return
	}
	if certs, err := pki.ParseCertBundle(rec.TrustBundlePem); err != nil || len(certs) < 2 {
		return
	}
	done, err := api.FinishCARotation(ctx, n.srv, time.Now(), false, n.tls.knownCAs()...)
	if err != nil {
		log.Warn("ending the CA rotation failed; retrying", "err", err)
		return
	}
	log.Info("CA rotation ended by itself: only the active CA is trusted", "version", done.Version, "overlap", api.CARotationOverlap())
}

// forgetPreviousCA deletes the key of the CA the last rotation replaced
// (tls/previous-ca) once the rotation has ended (rec trusts the active CA alone) and
// nothing sealed needs it any more: opensWith(active) must succeed, that is the gossip
// keyring opens with the active CA (FinishCARotation reseals it before it ends the
// rotation). The cluster CA record's key, sealed with the old CA, is not needed: this
// node already holds the active key. Until then it keeps the key, and the next look
// tries again.
func (t *nodeTLS) forgetPreviousCA(rec *cohortv1.ClusterCA, opensWith func(*pki.CA) error, log *slog.Logger) {
	t.rot.mu.Lock()
	defer t.rot.mu.Unlock()
	if len(t.rot.known) < 2 || rec.Version != t.rot.version {
		return
	}
	if certs, err := pki.ParseCertBundle(rec.TrustBundlePem); err != nil || len(certs) != 1 {
		return
	}
	active := t.rot.known[0]
	if err := opensWith(active); err != nil {
		log.Warn("the old CA's key is kept: the gossip keyring does not open with the active CA yet", "err", err)
		return
	}
	dir := filepath.Join(t.dir, previousCADir)
	if err := os.RemoveAll(dir); err != nil {
		log.Error("the old CA's key could not be deleted", "dir", dir, "err", err)
		return
	}
	dropped := make([]string, 0, len(t.rot.known)-1)
	for _, ca := range t.rot.known[1:] {
		dropped = append(dropped, ca.Hash())
	}
	t.rot.known = t.rot.known[:1]
	log.Info("CA rotation ended: the old CA's key is deleted", "dir", dir, "dropped", dropped, "active", active.Hash())
}

// followTrustBundle makes a node agent stop trusting the CAs that the coordinators'
// trust bundle (pem, from the assignment stream) no longer lists: when a CA rotation
// ends, at once rather than at the agent's next renewal. A bundle that adds a CA is
// left to the renewal (watchCoordinatorCA), which brings it with a certificate of that
// CA. If the agent's own certificate is of a dropped CA it renews at once.
func (t *nodeTLS) followTrustBundle(pem []byte, log *slog.Logger) {
	bundle, err := pki.ParseCertBundle(pem)
	if err != nil || len(bundle) == 0 {
		log.Warn("the coordinators' trust bundle does not parse; ignored", "err", err)
		return
	}
	t.rot.mu.Lock()
	defer t.rot.mu.Unlock()
	have := t.trust.Hashes()
	keep := make([]string, 0, len(bundle))
	for _, c := range bundle {
		h := pki.SPKIHash(c)
		if !slices.Contains(have, h) {
			return // a CA this node does not trust yet: its renewal adopts it
		}
		keep = append(keep, h)
	}
	if len(keep) >= len(have) {
		return
	}
	if err := pki.SaveCACert(t.dir, pki.EncodeCertBundle(bundle)); err != nil {
		log.Error("the trust bundle without the old CA was not written", "err", err)
		return
	}
	t.trust.Set(bundle...)
	var dropped []string
	for _, h := range have {
		if !slices.Contains(keep, h) {
			dropped = append(dropped, h)
		}
	}
	log.Info("CA rotation ended: the old CA is no longer trusted", "dropped", dropped, "trusted", keep)
	issuer := t.certs.Leaf().AuthorityKeyId
	if !slices.ContainsFunc(bundle, func(c *x509.Certificate) bool { return bytes.Equal(c.SubjectKeyId, issuer) }) {
		t.certs.RenewSoon()
	}
}

// applyClusterCA makes the node follow a cluster CA record: it trusts the record's
// bundle, signs with its active CA (whose key it opens with the CA it replaces), keeps
// both on disk, and renews its own certificates and the operator's at once.
func (t *nodeTLS) applyClusterCA(rec *cohortv1.ClusterCA, log *slog.Logger) error {
	t.rot.mu.Lock()
	defer t.rot.mu.Unlock()
	if rec.Version <= t.rot.version {
		return nil
	}
	bundle, err := pki.ParseCertBundle(rec.TrustBundlePem)
	if err != nil {
		return err
	}
	cur, known := t.rot.known[0], t.rot.known
	next := cur
	if pki.SPKIHash(bundle[0]) != cur.Hash() {
		if next, err = api.OpenClusterCA(rec, known); err != nil {
			return err
		}
		if err := cur.Save(filepath.Join(t.dir, previousCADir)); err != nil {
			return err
		}
		// The bundle and the key together, the bundle first: a client reading ca.crt
		// meanwhile never finds the new CA alone while this node still presents a
		// certificate of the old one.
		if err := next.SaveWithTrust(t.dir, pki.EncodeCertBundle(bundle)); err != nil {
			return err
		}
		known = []*pki.CA{next, cur}
	} else if err := pki.SaveCACert(t.dir, pki.EncodeCertBundle(bundle)); err != nil {
		return err
	}
	var chain []byte
	if len(rec.ChainPem) > 0 {
		chain = rec.ChainPem
		if err := pki.SaveCACertFile(filepath.Join(t.dir, caChainFile), chain); err != nil {
			return err
		}
	} else if err := os.Remove(filepath.Join(t.dir, caChainFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Trust first, then sign: a peer's certificate of the new CA is accepted before
	// this node presents one (the cross-signed chain covers the peers that lag).
	t.trust.Set(bundle...)
	switched := next != cur || !bytes.Equal(t.ca().ChainPEM(), next.WithChain(chain).ChainPEM())
	t.signing.Store(next.WithChain(chain))
	t.rot.known, t.rot.version = known, rec.Version
	if switched {
		for _, r := range t.rot.locals {
			r.RenewSoon()
		}
		if t.adminDir != "" {
			if err := t.ensureAdmin(time.Now()); err != nil {
				log.Warn("the operator's credentials were not reissued by the new CA", "err", err)
			}
		}
	}
	log.Info("cluster CA applied", "version", rec.Version, "active", next.Hash(), "trusted", t.trust.Hashes(), "renewed", switched)
	return nil
}

// renewFromNetwork renews a node agent's certificate at the coordinators and adopts
// their trust bundle (they are authenticated by the current one), writing both to the
// node's directory.
func (t *nodeTLS) renewFromNetwork(ctx context.Context, addrs, hosts []string) ([]byte, []byte, error) {
	resp, keyPEM, err := renewOverNetwork(ctx, addrs, t.trust, t.certs, hosts)
	if err != nil {
		return nil, nil, err
	}
	if len(resp.CaCertificatePem) > 0 {
		certs, err := pki.ParseCertBundle(resp.CaCertificatePem)
		if err != nil {
			return nil, nil, fmt.Errorf("renew: the coordinators' trust bundle: %w", err)
		}
		if err := pki.SaveCACert(t.dir, pki.EncodeCertBundle(certs)); err != nil {
			return nil, nil, err
		}
		t.trust.Set(certs...)
	}
	if err := pki.SaveKeyPair(t.dir, "node", resp.CertificatePem, keyPEM); err != nil {
		return nil, nil, err
	}
	return resp.CertificatePem, keyPEM, nil
}

// watchCoordinatorCA renews a node agent's certificate at once when the coordinators
// present certificates of another CA than its own (a rotation), checking every
// caWatchPoll until ctx ends.
func (t *nodeTLS) watchCoordinatorCA(ctx context.Context, addrs []string) {
	cfg := pki.RoleClientTLSConfigTrust(t.trust, t.certs, pki.RoleCoordinator)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(caWatchPoll):
		}
		for _, addr := range addrs {
			if issuer, ok := coordinatorIssuer(ctx, addr, cfg); ok {
				if !bytes.Equal(issuer, t.certs.Leaf().AuthorityKeyId) {
					t.certs.RenewSoon()
				}
				break
			}
		}
	}
}

// coordinatorIssuer is the authority key id of the certificate the coordinator at addr
// presents.
func coordinatorIssuer(ctx context.Context, addr string, cfg *tls.Config) ([]byte, bool) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false
	}
	defer c.Close()
	peers := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return nil, false
	}
	return peers[0].AuthorityKeyId, true
}
