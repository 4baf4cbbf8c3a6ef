package api

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/state"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Limits on enrollment requests, checked before anything is parsed.
const (
	maxCSRBytes     = 8 << 10
	maxEnrollHosts  = 32
	maxHostLen      = 253
	maxTokenNameLen = 128
	maxDescLen      = 256
	maxNamespaces   = 64
)

// DefaultClientACLRole is the ACL role of a client token created without one.
const DefaultClientACLRole = "submit"

// EnrollConfig is what the enrollment and token services need besides the backend.
type EnrollConfig struct {
	// CA returns the cluster CA when this coordinator holds it, else nil: it then
	// forwards enrollments to the leader and cannot renew.
	CA func() *pki.CA
	// KnownCAs returns every CA whose key this coordinator holds, the active one first:
	// what sealed values are opened with across a rotation. nil: CA alone.
	KnownCAs func() []*pki.CA
	// Trust returns the CAs this coordinator trusts (its trust bundle), sent to
	// enrolling and renewing processes. nil: the CA alone.
	Trust func() *pki.Trust
	// CertTTL is the life of the certificates issued (0: pki.DefaultCertTTL).
	CertTTL time.Duration
}

type enrollService struct {
	cohortv1.UnimplementedEnrollServiceServer
	b   Backend
	cfg Config
	ec  EnrollConfig
}

// NewEnrollService returns the EnrollService handlers: Enroll (authenticated by a join
// token, callable without a certificate) and Renew (authenticated by the caller's
// certificate).
func NewEnrollService(b Backend, cfg Config, ec EnrollConfig) cohortv1.EnrollServiceServer {
	return &enrollService{b: b, cfg: cfg.withBackendClock(b).withDefaults(), ec: ec}
}

func (ec EnrollConfig) ca() *pki.CA {
	if ec.CA == nil {
		return nil
	}
	return ec.CA()
}

// knownCAs is KnownCAs, or the CA alone.
func (ec EnrollConfig) knownCAs() []*pki.CA {
	if ec.KnownCAs != nil {
		return ec.KnownCAs()
	}
	if ca := ec.ca(); ca != nil {
		return []*pki.CA{ca}
	}
	return nil
}

// bundlePEM is the trust bundle sent with a certificate: every trusted CA, ca first.
func (ec EnrollConfig) bundlePEM(ca *pki.CA) []byte {
	if ec.Trust == nil {
		return ca.CertPEM()
	}
	if t := ec.Trust(); t != nil {
		if b := t.PEM(); len(b) > 0 {
			return b
		}
	}
	return ca.CertPEM()
}

// Enroll checks the join token against its record (on the leader, which holds every
// committed token) and signs the CSR for the identity the record grants.
func (s *enrollService) Enroll(ctx context.Context, req *cohortv1.EnrollRequest) (*cohortv1.EnrollResponse, error) {
	if err := checkEnrollRequest(req); err != nil {
		return nil, err
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.EnrollResponse, error) {
		if err := s.b.ConsistentRead(ctx); err != nil {
			return nil, err
		}
		return s.enrollLocal(req)
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.EnrollResponse, error) {
		return cohortv1.NewEnrollServiceClient(c).Enroll(ctx, req)
	})
}

func (s *enrollService) enrollLocal(req *cohortv1.EnrollRequest) (*cohortv1.EnrollResponse, error) {
	ca := s.ec.ca()
	if ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this coordinator does not hold the cluster CA, so it cannot enroll; join through the coordinator that bootstrapped the cluster")
	}
	rec, err := s.b.State().TokenByID(nil, req.TokenId)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	if rec == nil {
		s.cfg.Logger.Info("enroll: refused", "token", req.TokenId, "name", req.Name, "err", "unknown token")
		return nil, status.Errorf(codes.Unauthenticated, "join token %s is not known to this cluster", req.TokenId)
	}
	tr := tokenRecord(rec)
	if err := tr.Check(req.TokenSecret, now); err != nil {
		s.cfg.Logger.Info("enroll: refused", "token", req.TokenId, "name", req.Name, "err", err)
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	id, err := tr.IdentityFor(req.Name)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	sreq := pki.SignRequest{CSR: req.Csr, Identity: id, TTL: s.ec.CertTTL}
	if id.Role != pki.RoleClient {
		sreq.DNSNames, sreq.IPs = pki.SplitHosts(req.Hosts)
	}
	certPEM, err := ca.Sign(sreq, now)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &cohortv1.EnrollResponse{CertificatePem: certPEM, CaCertificatePem: s.ec.bundlePEM(ca), Identity: id.String()}
	if id.Role == pki.RoleCoordinator {
		if resp.CaKeyPem, err = ca.KeyPEM(); err != nil {
			return nil, err
		}
	}
	s.cfg.Logger.Info("enrolled", "token", req.TokenId, "identity", id.String(), "ca_key_sent", id.Role == pki.RoleCoordinator)
	return resp, nil
}

// Renew signs a new CSR for the identity in the caller's certificate. It needs no
// state, so any coordinator holding the CA answers.
func (s *enrollService) Renew(ctx context.Context, req *cohortv1.RenewRequest) (*cohortv1.RenewResponse, error) {
	if len(req.Csr) == 0 || len(req.Csr) > maxCSRBytes {
		return nil, status.Errorf(codes.InvalidArgument, "the CSR has %d bytes; want 1 to %d", len(req.Csr), maxCSRBytes)
	}
	if err := checkHosts(req.Hosts); err != nil {
		return nil, err
	}
	id, err := callerIdentity(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "renew needs the certificate it renews: %v", err)
	}
	if id.Token != "" {
		rec, err := s.b.State().TokenByID(nil, id.Token)
		if err != nil {
			return nil, err
		}
		if rec != nil && rec.Revoked {
			s.cfg.Logger.Info("renew: refused", "identity", id.String(), "token", id.Token, "err", "token revoked")
			return nil, status.Errorf(codes.Unauthenticated, "renew: join token %s, with which %s enrolled, is revoked", id.Token, id.Name)
		}
	}
	ca := s.ec.ca()
	if ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this coordinator does not hold the cluster CA, so it cannot renew certificates")
	}
	sreq := pki.SignRequest{CSR: req.Csr, Identity: id, TTL: s.ec.CertTTL}
	if id.Role != pki.RoleClient {
		sreq.DNSNames, sreq.IPs = pki.SplitHosts(req.Hosts)
	}
	certPEM, err := ca.Sign(sreq, s.cfg.Now())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.cfg.Logger.Debug("renewed a certificate", "identity", id.String())
	return &cohortv1.RenewResponse{CertificatePem: certPEM, CaCertificatePem: s.ec.bundlePEM(ca)}, nil
}

func checkEnrollRequest(req *cohortv1.EnrollRequest) error {
	if len(req.TokenId) != pki.TokenIDLen || len(req.TokenSecret) != pki.TokenSecretLen {
		return status.Errorf(codes.InvalidArgument, "the join token id and secret must be %d and %d characters", pki.TokenIDLen, pki.TokenSecretLen)
	}
	if req.Name == "" || len(req.Name) > maxTokenNameLen {
		return status.Errorf(codes.InvalidArgument, "the name to enroll must be 1 to %d characters", maxTokenNameLen)
	}
	if len(req.Csr) == 0 || len(req.Csr) > maxCSRBytes {
		return status.Errorf(codes.InvalidArgument, "the CSR has %d bytes; want 1 to %d", len(req.Csr), maxCSRBytes)
	}
	return checkHosts(req.Hosts)
}

func checkHosts(hosts []string) error {
	if len(hosts) > maxEnrollHosts {
		return status.Errorf(codes.InvalidArgument, "%d hosts; at most %d", len(hosts), maxEnrollHosts)
	}
	for _, h := range hosts {
		if len(h) > maxHostLen {
			return status.Errorf(codes.InvalidArgument, "a host name has %d characters; at most %d", len(h), maxHostLen)
		}
	}
	return nil
}

// tokenRecord converts a stored record for pki's checks.
func tokenRecord(t *cohortv1.JoinToken) pki.TokenRecord {
	r := pki.TokenRecord{
		ID: t.Id, SecretHash: t.SecretSha256, Role: pki.Role(t.Role), ACLRole: t.AclRole,
		Namespaces: slices.Clone(t.Namespaces), NodeName: t.NodeName,
		CreatedAt: time.Unix(0, t.CreatedUnixNano), Revoked: t.Revoked,
	}
	if t.ExpiresUnixNano != 0 {
		r.ExpiresAt = time.Unix(0, t.ExpiresUnixNano)
	}
	return r
}

type tokenService struct {
	cohortv1.UnimplementedTokenServiceServer
	b   Backend
	cfg Config
	ec  EnrollConfig
}

// NewTokenService returns the TokenService handlers (admins only: an admin ACL token
// when ACLs are on, and, on a TLS coordinator, a client certificate whose ACL role is
// admin, or a coordinator forwarding).
func NewTokenService(b Backend, cfg Config, ec EnrollConfig) cohortv1.TokenServiceServer {
	return &tokenService{b: b, cfg: cfg.withBackendClock(b).withDefaults(), ec: ec}
}

// requireAdminCert refuses a client certificate whose ACL role is not admin: a token
// can grant a coordinator certificate, which carries the CA's key, so only admins may
// mint one. A call without a certificate (a plaintext loopback coordinator) passes,
// as every call there does.
func requireAdminCert(ctx context.Context, method string) error {
	id, err := callerIdentity(ctx)
	if err != nil {
		return nil
	}
	if id.Role == pki.RoleClient && id.ACLRole != "admin" {
		return status.Errorf(codes.PermissionDenied, "permission denied: %s: the certificate of %s has ACL role %q; join tokens are managed by admins only", method, id.Name, id.ACLRole)
	}
	return nil
}

// CreateToken mints a join token granting the requested identity.
func (s *tokenService) CreateToken(ctx context.Context, req *cohortv1.CreateTokenRequest) (*cohortv1.CreateTokenResponse, error) {
	if err := requireAdminCert(ctx, "CreateToken"); err != nil {
		return nil, err
	}
	role, err := pki.ParseRole(req.Role)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	acl := req.AclRole
	switch {
	case role == pki.RoleClient && acl == "":
		acl = DefaultClientACLRole
	case role == pki.RoleAgent && acl == "":
		acl = "agent"
	}
	if role == pki.RoleClient {
		if _, err := ParseRole(acl); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "ACL role: %v", err)
		}
	}
	if len(req.Namespaces) > maxNamespaces || len(req.Description) > maxDescLen || req.TtlSeconds < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d namespaces, a description of at most %d characters, and a TTL of 0 (never expires) or more", maxNamespaces, maxDescLen)
	}
	probe := pki.Identity{Name: "probe", Role: role, ACLRole: acl, Namespaces: req.Namespaces}
	if req.NodeName != "" {
		probe.Name = req.NodeName
	}
	if err := probe.Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ca := s.ec.ca()
	if ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this coordinator does not hold the cluster CA (it runs without TLS, or with certificates from `cohort tls issue`), so its tokens could not enroll anyone")
	}
	tok, err := pki.GenerateToken(ca.Hash())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	if isForwarded(ctx) && req.MintedToken != "" {
		// Every attempt of a forwarded create proposes the token the first
		// coordinator minted: a retry finds it stored (applyCreateToken).
		if m, err := pki.ParseToken(req.MintedToken); err == nil && m.CAHash == ca.Hash() && req.MintedUnixNano > 0 {
			tok, now = m, time.Unix(0, req.MintedUnixNano)
		}
	}
	rec := NewJoinTokenRecord(tok, probe, req.NodeName != "", now, time.Duration(req.TtlSeconds)*time.Second, req.Description)
	cmd := &cohortv1.Command{Kind: &cohortv1.Command_CreateToken{CreateToken: &cohortv1.CreateTokenCommand{Token: rec}}}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.CreateTokenResponse, error) {
		out, err := s.b.Apply(ctx, cmd)
		if err != nil {
			return nil, err
		}
		stored, _ := out.(*cohortv1.JoinToken)
		s.cfg.Logger.Info("join token created", "token", tok, "role", role, "acl_role", acl, "caller", Caller(ctx))
		return &cohortv1.CreateTokenResponse{Token: tok.String(), Record: redactToken(stored)}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.CreateTokenResponse, error) {
		fwd := proto.Clone(req).(*cohortv1.CreateTokenRequest)
		fwd.MintedToken, fwd.MintedUnixNano = tok.String(), now.UnixNano()
		return cohortv1.NewTokenServiceClient(c).CreateToken(ctx, fwd)
	})
}

// NewJoinTokenRecord is the Raft record of tok granting id (bound to id.Name when
// bound), made at now and expiring ttl later (never when ttl is 0).
func NewJoinTokenRecord(tok pki.Token, id pki.Identity, bound bool, now time.Time, ttl time.Duration, desc string) *cohortv1.JoinToken {
	r := &cohortv1.JoinToken{
		Id: tok.ID, SecretSha256: pki.HashSecret(tok.Secret), Role: string(id.Role), AclRole: id.ACLRole,
		Namespaces: slices.Clone(id.Namespaces), CreatedUnixNano: now.UnixNano(), Description: desc,
	}
	if bound {
		r.NodeName = id.Name
	}
	if ttl > 0 {
		r.ExpiresUnixNano = now.Add(ttl).UnixNano()
	}
	return r
}

// redactToken returns a copy of t without its secret hash.
func redactToken(t *cohortv1.JoinToken) *cohortv1.JoinToken {
	if t == nil {
		return nil
	}
	c := &cohortv1.JoinToken{
		Id: t.Id, Role: t.Role, AclRole: t.AclRole, Namespaces: slices.Clone(t.Namespaces), NodeName: t.NodeName,
		CreatedUnixNano: t.CreatedUnixNano, ExpiresUnixNano: t.ExpiresUnixNano, Revoked: t.Revoked,
		Description: t.Description, CreateIndex: t.CreateIndex, ModifyIndex: t.ModifyIndex, RevokedUnixNano: t.RevokedUnixNano,
	}
	return c
}

// ListTokens lists the token records, without their secret hashes.
func (s *tokenService) ListTokens(ctx context.Context, req *cohortv1.ListTokensRequest) (*cohortv1.ListTokensResponse, error) {
	if err := requireAdminCert(ctx, "ListTokens"); err != nil {
		return nil, err
	}
	return readCall(ctx, s.b, s.cfg, func() (*cohortv1.ListTokensResponse, error) {
		toks, err := s.b.State().Tokens(nil)
		if err != nil {
			return nil, err
		}
		out := &cohortv1.ListTokensResponse{}
		for _, t := range toks {
			out.Tokens = append(out.Tokens, redactToken(t))
		}
		return out, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ListTokensResponse, error) {
		return cohortv1.NewTokenServiceClient(c).ListTokens(ctx, req)
	})
}

// RevokeToken revokes a token by id.
func (s *tokenService) RevokeToken(ctx context.Context, req *cohortv1.RevokeTokenRequest) (*cohortv1.RevokeTokenResponse, error) {
	if err := requireAdminCert(ctx, "RevokeToken"); err != nil {
		return nil, err
	}
	if req.Id == "" || len(req.Id) > maxIDLen {
		return nil, status.Error(codes.InvalidArgument, "a token id is required")
	}
	cmd := &cohortv1.Command{Kind: &cohortv1.Command_RevokeToken{RevokeToken: &cohortv1.RevokeTokenCommand{Id: req.Id, RevokedUnixNano: s.cfg.Now().UnixNano()}}}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.RevokeTokenResponse, error) {
		out, err := s.b.Apply(ctx, cmd)
		if errors.Is(err, fsm.ErrTokenNotFound) {
			return nil, status.Errorf(codes.NotFound, "no join token with id %q", req.Id)
		}
		if err != nil {
			return nil, err
		}
		stored, _ := out.(*cohortv1.JoinToken)
		s.cfg.Logger.Info("join token revoked", "token", req.Id, "caller", Caller(ctx))
		return &cohortv1.RevokeTokenResponse{Token: redactToken(stored)}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.RevokeTokenResponse, error) {
		return cohortv1.NewTokenServiceClient(c).RevokeToken(ctx, req)
	})
}

// workerNodes returns the sorted, distinct nodes of a job's live worker allocations:
// the callers its parameter-server shards serve.
func workerNodes(snap *state.StateSnapshot, ws memdb.WatchSet, jobID string) ([]string, error) {
	allocs, err := snap.AllocsByJob(ws, jobID)
	if err != nil {
		return nil, err
	}
	var nodes []string
	for _, a := range allocs {
		if a.Kind == cohortv1.TaskKind_TASK_KIND_WORKER && !state.TaskTerminal(a.State) && !slices.Contains(nodes, a.NodeId) {
			nodes = append(nodes, a.NodeId)
		}
	}
	slices.Sort(nodes)
	return nodes, nil
}
