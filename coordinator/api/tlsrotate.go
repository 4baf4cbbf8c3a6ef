package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// ClusterCAKeyPurpose is what a rotated CA's key is sealed for (pki.CA.Seal), with the
// key of the CA it replaces.
const ClusterCAKeyPurpose = "cluster CA key"

// CARotationOverlap returns how long, after a rotation, FinishRotation waits (unless forced)
// before it stops trusting the old CA, and after which the leader ends the rotation by
// itself: the life of the certificates the coordinators issue and renew
// (pki.DefaultCertTTL). By then every certificate they renew in process or over the
// network has been replaced by one of the new CA. Files written offline (`cohort tls
// issue`) may live longer: reissue them.
func CARotationOverlap() time.Duration { return time.Duration(caRotationOverlap.Load()) }

var caRotationOverlap atomic.Int64

func init() { caRotationOverlap.Store(int64(pki.DefaultCertTTL)) }

// SetCARotationOverlap sets CARotationOverlap, for tests; the returned function
// restores it.
func SetCARotationOverlap(d time.Duration) func() {
	old := caRotationOverlap.Swap(int64(d))
	return func() { caRotationOverlap.Store(old) }
}

type tlsService struct {
	cohortv1.UnimplementedTLSServiceServer
	b   Backend
	cfg Config
	ec  EnrollConfig
}

// NewTLSService returns the TLSService handlers (CA rotation).
func NewTLSService(b Backend, cfg Config, ec EnrollConfig) cohortv1.TLSServiceServer {
	return &tlsService{b: b, cfg: cfg.withBackendClock(b).withDefaults(), ec: ec}
}

// OpenClusterCA returns the CA a cluster CA record makes active, its key opened with
// whichever of known sealed it.
func OpenClusterCA(rec *cohortv1.ClusterCA, known []*pki.CA) (*pki.CA, error) {
	for _, ca := range known {
		if ca.Hash() != rec.GetSealedByHash() {
			continue
		}
		keyPEM, err := ca.Open(ClusterCAKeyPurpose, rec.GetSealedKey())
		if err != nil {
			return nil, fmt.Errorf("cluster CA: %w", err)
		}
		return pki.ParseCA(rec.GetActiveCertPem(), keyPEM)
	}
	return nil, fmt.Errorf("cluster CA version %d: its key is sealed with CA %s, whose key this coordinator does not hold (it missed a rotation: enroll it again with a coordinator token)",
		rec.GetVersion(), rec.GetSealedByHash())
}

func (s *tlsService) caOrFail() (*pki.CA, error) {
	ca := s.ec.ca()
	if ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this coordinator does not hold the cluster CA (it runs without TLS, or with certificates from `cohort tls issue`), so it cannot rotate it")
	}
	return ca, nil
}

// RotateCA makes a new CA cross-signed by the active one and records it. The record
// carries the call's idempotency key (the caller's, or one minted here before the call
// is forwarded): a retry whose first try committed answers with that record instead
// of FailedPrecondition (a rotation in progress).
func (s *tlsService) RotateCA(ctx context.Context, req *cohortv1.RotateCARequest) (*cohortv1.TLSStatusResponse, error) {
	if err := requireAdminCert(ctx, "RotateCA"); err != nil {
		return nil, err
	}
	if len(req.IdempotencyKey) > maxIdempotencyKeyLen {
		return nil, toStatus(fmt.Errorf("%w: idempotency_key is longer than %d bytes", ErrInvalidArgument, maxIdempotencyKeyLen))
	}
	key := req.IdempotencyKey
	if key == "" {
		key = "auto-" + randomHex(16)
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.TLSStatusResponse, error) {
		ca, err := s.caOrFail()
		if err != nil {
			return nil, err
		}
		if err := s.b.ConsistentRead(ctx); err != nil {
			return nil, err
		}
		cur, err := s.b.State().ClusterCA(nil)
		if err != nil {
			return nil, err
		}
		if cur != nil && cur.RequestKey == key {
			return statusOf(cur), nil
		}
		if cur != nil {
			if certs, err := pki.ParseCertBundle(cur.TrustBundlePem); err == nil && len(certs) > 1 {
				return nil, status.Errorf(codes.FailedPrecondition, "a rotation is in progress (%d CAs are trusted); end it first with `cohort operator tls rotate-ca --finish`", len(certs))
			}
			if h, _ := pki.CAHashOf(cur.ActiveCertPem); h != ca.Hash() {
				return nil, status.Errorf(codes.Unavailable, "this coordinator has not switched to the CA of the last rotation yet (it signs with %s, the cluster with %s); try again", ca.Hash(), h)
			}
		}
		now := s.cfg.Now()
		next, err := pki.NewCA("cohort cluster CA "+now.UTC().Format("2006-01-02T15:04:05Z"), now)
		if err != nil {
			return nil, err
		}
		cross, err := ca.CrossSign(next, now)
		if err != nil {
			return nil, err
		}
		keyPEM, err := next.KeyPEM()
		if err != nil {
			return nil, err
		}
		sealed, err := ca.Seal(ClusterCAKeyPurpose, keyPEM)
		if err != nil {
			return nil, err
		}
		rec := &cohortv1.ClusterCA{
			Version:         cur.GetVersion() + 1,
			ActiveCertPem:   next.CertPEM(),
			SealedKey:       sealed,
			SealedByHash:    ca.Hash(),
			TrustBundlePem:  append(next.CertPEM(), ca.CertPEM()...),
			ChainPem:        append(cross, ca.CertPEM()...),
			RotatedUnixNano: now.UnixNano(),
			RequestKey:      key,
		}
		if _, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SetClusterCa{SetClusterCa: &cohortv1.SetClusterCACommand{Ca: rec}}}); err != nil {
			return nil, err
		}
		s.cfg.Logger.Info("cluster CA rotated", "old", ca.Hash(), "new", next.Hash(), "version", rec.Version, "caller", Caller(ctx))
		if err := s.resealKeyring(ctx, next, ca); err != nil {
			// The keyring stays sealed with the old CA, which every coordinator still
			// holds; the next keyring change reseals it.
			s.cfg.Logger.Warn("the gossip keyring was not resealed with the new CA", "err", err)
		}
		return statusOf(rec), nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.TLSStatusResponse, error) {
		return cohortv1.NewTLSServiceClient(c).RotateCA(ctx, &cohortv1.RotateCARequest{IdempotencyKey: key})
	})
}

// resealKeyring seals the gossip keyring with next, so that it opens after the old CA
// is dropped.
func (s *tlsService) resealKeyring(ctx context.Context, next, old *pki.CA) error {
	for attempt := 0; ; attempt++ {
		keys, version, err := OpenGossipKeyring(s.b, old, next)
		if err != nil || len(keys) == 0 {
			return err
		}
		err = proposeGossipKeys(ctx, s.b, next, keys, version+1)
		if errors.Is(err, fsm.ErrStaleKeyring) && attempt < 3 {
			continue
		}
		return err
	}
}

// resealKeyringWith makes sure the gossip keyring (if any) opens with active: one that
// opens only with one of older is resealed with active.
func resealKeyringWith(ctx context.Context, b Backend, active *pki.CA, older ...*pki.CA) error {
	if _, _, err := OpenGossipKeyring(b, active); err == nil {
		return nil
	}
	for attempt := 0; ; attempt++ {
		keys, version, err := OpenGossipKeyring(b, append([]*pki.CA{active}, older...)...)
		if err != nil || len(keys) == 0 {
			return err
		}
		err = proposeGossipKeys(ctx, b, active, keys, version+1)
		if errors.Is(err, fsm.ErrStaleKeyring) && attempt < 3 {
			continue
		}
		return err
	}
}

// FinishRotation stops trusting every CA but the active one.
func (s *tlsService) FinishRotation(ctx context.Context, req *cohortv1.FinishCARotationRequest) (*cohortv1.TLSStatusResponse, error) {
	if err := requireAdminCert(ctx, "FinishRotation"); err != nil {
		return nil, err
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.TLSStatusResponse, error) {
		rec, err := FinishCARotation(ctx, s.b, s.cfg.Now(), req.Force, s.ec.knownCAs()...)
		if err != nil {
			return nil, err
		}
		h, _ := pki.CAHashOf(rec.ActiveCertPem)
		s.cfg.Logger.Info("cluster CA rotation finished: only the active CA is trusted", "ca", h, "forced", req.Force, "caller", Caller(ctx))
		return statusOf(rec), nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.TLSStatusResponse, error) {
		return cohortv1.NewTLSServiceClient(c).FinishRotation(ctx, req)
	})
}

// FinishCARotation ends the cluster's CA rotation on the leader: it records that only
// the active CA is trusted. Before CARotationOverlap has passed since the rotation it
// refuses (FailedPrecondition) unless force. A cluster trusting one CA already is left
// as it is. It returns the record now in force.
//
// cas are the CAs whose keys the leader holds, the active one first: a gossip keyring
// still sealed with an older one (its reseal at the rotation failed) is resealed with
// the active CA first, because once the rotation ends every coordinator deletes the
// old CA's key (tls/previous-ca). If that fails, the rotation does not end.
func FinishCARotation(ctx context.Context, b Backend, now time.Time, force bool, cas ...*pki.CA) (*cohortv1.ClusterCA, error) {
	if err := b.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	cur, err := b.State().ClusterCA(nil)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, status.Error(codes.FailedPrecondition, "the cluster CA was never rotated: there is no old CA to stop trusting (cohort operator tls rotate-ca first)")
	}
	if certs, err := pki.ParseCertBundle(cur.TrustBundlePem); err == nil && len(certs) == 1 {
		return cur, nil
	}
	rotated := time.Unix(0, cur.RotatedUnixNano)
	if until := rotated.Add(CARotationOverlap()); now.Before(until) && !force {
		return nil, status.Errorf(codes.FailedPrecondition, "certificates of the old CA may be valid until %s (the rotation was at %s; certificates live %s); wait, or pass --force to refuse them now",
			until.UTC().Format(time.RFC3339), rotated.UTC().Format(time.RFC3339), CARotationOverlap())
	}
	if len(cas) > 0 {
		if err := resealKeyringWith(ctx, b, cas[0], cas[1:]...); err != nil {
			return nil, status.Errorf(codes.Unavailable, "the gossip keyring is not sealed with the active CA and could not be resealed, so the old CA's key is still needed; the rotation goes on: %v", err)
		}
	}
	rec := &cohortv1.ClusterCA{
		Version: cur.Version + 1, ActiveCertPem: cur.ActiveCertPem, SealedKey: cur.SealedKey, SealedByHash: cur.SealedByHash,
		TrustBundlePem: cur.ActiveCertPem, RotatedUnixNano: cur.RotatedUnixNano,
	}
	if _, err := b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SetClusterCa{SetClusterCa: &cohortv1.SetClusterCACommand{Ca: rec}}}); err != nil {
		return nil, err
	}
	return rec, nil
}

// Status lists the trusted CAs, from this coordinator's state.
func (s *tlsService) Status(ctx context.Context, _ *cohortv1.TLSStatusRequest) (*cohortv1.TLSStatusResponse, error) {
	if err := requireAdminCert(ctx, "Status"); err != nil {
		return nil, err
	}
	cur, err := s.b.State().ClusterCA(nil)
	if err != nil {
		return nil, toStatus(err)
	}
	if cur != nil {
		return statusOf(cur), nil
	}
	ca, err := s.caOrFail()
	if err != nil {
		return nil, err
	}
	return &cohortv1.TLSStatusResponse{Cas: []*cohortv1.TrustedCA{trustedCA(ca.Certificate(), true)}}, nil
}

func trustedCA(c *x509.Certificate, active bool) *cohortv1.TrustedCA {
	return &cohortv1.TrustedCA{Hash: pki.SPKIHash(c), Subject: c.Subject.CommonName, NotAfterUnixNano: c.NotAfter.UnixNano(), Active: active}
}

func statusOf(rec *cohortv1.ClusterCA) *cohortv1.TLSStatusResponse {
	resp := &cohortv1.TLSStatusResponse{Version: rec.Version}
	certs, _ := pki.ParseCertBundle(rec.TrustBundlePem)
	for i, c := range certs {
		resp.Cas = append(resp.Cas, trustedCA(c, i == 0))
	}
	if len(certs) > 1 {
		resp.OldCertificatesUntilUnixNano = time.Unix(0, rec.RotatedUnixNano).Add(CARotationOverlap()).UnixNano()
	}
	return resp
}
