package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/state"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// AuthorizationHeader is the request metadata key that carries the caller's token, as
// "Bearer <secret>".
const AuthorizationHeader = "authorization"

// Role is what an ACL token may do.
type Role int

// Roles. Read < Submit < Admin; Agent is a separate line for node agents (Admin holds
// it too).
const (
	// RoleRead may call the read-only RPCs: get, list, watch, status, plan, peers.
	RoleRead Role = iota + 1
	// RoleSubmit may also submit and cancel jobs, in its namespaces.
	RoleSubmit
	// RoleAdmin may call every RPC: quotas, queues, drains, eligibility, Raft peers,
	// snapshots, and the agent RPCs.
	RoleAdmin
	// RoleAgent may call only the node agents' RPCs (register, heartbeat, watch
	// assignments, report tasks).
	RoleAgent
)

var roleNames = map[Role]string{RoleRead: "read", RoleSubmit: "submit", RoleAdmin: "admin", RoleAgent: "agent"}

// String returns the role's name as the tokens file spells it.
func (r Role) String() string {
	if n, ok := roleNames[r]; ok {
		return n
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole parses a role name (read, submit, admin, agent).
func ParseRole(s string) (Role, error) {
	for r, n := range roleNames {
		if n == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("%q is not one of read, submit, admin, agent", s)
}

// grants reports whether a token of role r may call an RPC that needs role need.
func (r Role) grants(need Role) bool {
	switch need {
	case RoleRead:
		return r == RoleRead || r == RoleSubmit || r == RoleAdmin
	case RoleSubmit:
		return r == RoleSubmit || r == RoleAdmin
	case RoleAdmin:
		return r == RoleAdmin
	case RoleAgent:
		return r == RoleAgent || r == RoleAdmin
	}
	return false
}

// Grants reports whether a caller of role r may call an RPC that needs role need.
func (r Role) Grants(need Role) bool { return r.grants(need) }

// MethodRole returns the ACL role method (a full gRPC method name) needs of a token or
// client certificate; public is true for an RPC that authenticates its caller itself,
// and ok is false for a method without a rule, which nobody may call.
func MethodRole(method string) (need Role, public, ok bool) {
	r, ok := methodRules[method]
	return r.need, r.public, ok
}

// holders names the roles that grant need, for error messages ("a submit or admin
// token").
func holders(need Role) string {
	var names []string
	for _, r := range []Role{RoleRead, RoleSubmit, RoleAdmin, RoleAgent} {
		if r.grants(need) {
			names = append(names, r.String())
		}
	}
	return strings.Join(names, " or ")
}

// Token is one ACL token. Only a hash of its secret is kept.
type Token struct {
	// Name identifies the token in logs and errors; never secret.
	Name string
	// Role is what the token may do.
	Role Role
	// Namespaces, when not empty, are the only namespaces the token acts in: a submit
	// token submits, cancels and resumes jobs there, and a read or submit token reads
	// only jobs (and quotas) there: other namespaces' jobs are PermissionDenied to get,
	// watch, log or report, and left out of lists.
	Namespaces []string
	// hash is the SHA-256 of the secret.
	hash [sha256.Size]byte
	// fromCert marks the caller's client certificate standing in for a token (a call
	// without a bearer token): Name is then the certificate's name.
	fromCert bool
}

// describe names the credential in errors: `token "ci"` or `the certificate of alice`.
func (t *Token) describe() string {
	if t.fromCert {
		return "the certificate of " + t.Name
	}
	return fmt.Sprintf("token %q", t.Name)
}

// credential is what the credential is called in errors: "token" or "certificate".
func (t *Token) credential() string {
	if t.fromCert {
		return "certificate"
	}
	return "token"
}

// NewToken returns a token for secret.
func NewToken(name string, role Role, secret string, namespaces ...string) Token {
	return Token{Name: name, Role: role, Namespaces: namespaces, hash: sha256.Sum256([]byte(secret))}
}

// allowsNamespace reports whether the token may read or write jobs in ns.
func (t *Token) allowsNamespace(ns string) bool {
	return len(t.Namespaces) == 0 || slices.Contains(t.Namespaces, ns)
}

// rule is what one RPC needs.
type rule struct {
	need Role
	// public marks an RPC that needs no ACL token: it authenticates its caller itself
	// (a join token, or the certificate it renews).
	public bool
	// namespace, when set, returns the namespace a job-writing request acts in; ok is
	// false when it cannot tell (an invalid spec, a job this coordinator does not know),
	// and the handler, or the leader the call is forwarded to, decides. Unary RPCs only.
	namespace func(a *ACL, req any) (ns string, ok bool)
	// streamNamespace is namespace for a server-streaming RPC: it is checked on the
	// stream's request when the handler receives it, before anything is sent.
	streamNamespace func(a *ACL, req any) (ns string, ok bool)
	// filter, when set, drops from a unary response what a namespace-limited token may
	// not read (lists).
	filter func(tok *Token, resp any)
}

// methodRules maps every RPC the coordinator serves to the role it needs. An RPC
// without a rule is refused (TestEveryRPCHasAnACLRule keeps this table complete).
var methodRules = map[string]rule{
	// JobService: users.
	cohortv1.JobService_SubmitJob_FullMethodName:          {need: RoleSubmit, namespace: submitNamespace},
	cohortv1.JobService_GetJob_FullMethodName:             {need: RoleRead, namespace: jobIDNamespace},
	cohortv1.JobService_ListJobs_FullMethodName:           {need: RoleRead, namespace: listNamespace, filter: filterJobs},
	cohortv1.JobService_CancelJob_FullMethodName:          {need: RoleSubmit, namespace: cancelNamespace},
	cohortv1.JobService_WatchJob_FullMethodName:           {need: RoleRead, streamNamespace: jobIDNamespace},
	cohortv1.JobService_ListNodes_FullMethodName:          {need: RoleRead},
	cohortv1.JobService_PlanJob_FullMethodName:            {need: RoleRead, namespace: submitNamespace},
	cohortv1.JobService_SetQuota_FullMethodName:           {need: RoleAdmin},
	cohortv1.JobService_ListQuotas_FullMethodName:         {need: RoleRead, filter: filterQuotas},
	cohortv1.JobService_SetQueue_FullMethodName:           {need: RoleAdmin},
	cohortv1.JobService_ListQueues_FullMethodName:         {need: RoleRead},
	cohortv1.JobService_DrainNode_FullMethodName:          {need: RoleAdmin},
	cohortv1.JobService_SetNodeEligibility_FullMethodName: {need: RoleAdmin},
	cohortv1.JobService_ResumeJob_FullMethodName:          {need: RoleSubmit, namespace: resumeNamespace},
	cohortv1.JobService_JobLogs_FullMethodName:            {need: RoleRead, streamNamespace: jobIDNamespace},
	cohortv1.JobService_GetJobReport_FullMethodName:       {need: RoleRead, namespace: jobIDNamespace},
	// Exporting a model that failed its fairness gate is a governance decision.
	cohortv1.JobService_OverrideGate_FullMethodName: {need: RoleAdmin},
	// SearchService: the same roles and namespace rules as the job verbs.
	cohortv1.SearchService_SubmitSearch_FullMethodName: {need: RoleSubmit, namespace: searchNamespace},
	cohortv1.SearchService_GetSearch_FullMethodName:    {need: RoleRead, namespace: searchNamespace},
	cohortv1.SearchService_ListSearches_FullMethodName: {need: RoleRead, namespace: listSearchNamespace, filter: filterSearches},
	cohortv1.SearchService_CancelSearch_FullMethodName: {need: RoleSubmit, namespace: searchNamespace},
	// AgentService: node agents.
	cohortv1.AgentService_RegisterNode_FullMethodName:      {need: RoleAgent},
	cohortv1.AgentService_Heartbeat_FullMethodName:         {need: RoleAgent},
	cohortv1.AgentService_WatchAssignments_FullMethodName:  {need: RoleAgent},
	cohortv1.AgentService_ReportTasks_FullMethodName:       {need: RoleAgent},
	cohortv1.AgentService_ReportSessionLoss_FullMethodName: {need: RoleAgent},
	// ClusterService: operators and joining coordinators.
	cohortv1.ClusterService_Join_FullMethodName:               {need: RoleAdmin},
	cohortv1.ClusterService_ListPeers_FullMethodName:          {need: RoleRead},
	cohortv1.ClusterService_AddVoter_FullMethodName:           {need: RoleAdmin},
	cohortv1.ClusterService_RemovePeer_FullMethodName:         {need: RoleAdmin},
	cohortv1.ClusterService_TransferLeadership_FullMethodName: {need: RoleAdmin},
	cohortv1.ClusterService_SnapshotSave_FullMethodName:       {need: RoleAdmin},
	cohortv1.ClusterService_SnapshotRestore_FullMethodName:    {need: RoleAdmin},
	// EnrollService authenticates by join token or certificate; TokenService: admins.
	cohortv1.EnrollService_Enroll_FullMethodName:     {public: true},
	cohortv1.EnrollService_Renew_FullMethodName:      {public: true},
	cohortv1.TokenService_CreateToken_FullMethodName: {need: RoleAdmin},
	cohortv1.TokenService_ListTokens_FullMethodName:  {need: RoleAdmin},
	cohortv1.TokenService_RevokeToken_FullMethodName: {need: RoleAdmin},
	// GossipService: the keys to agents; their management to admins.
	cohortv1.GossipService_GetKeyring_FullMethodName: {need: RoleAgent},
	cohortv1.GossipService_ListKeys_FullMethodName:   {need: RoleAdmin},
	cohortv1.GossipService_InstallKey_FullMethodName: {need: RoleAdmin},
	cohortv1.GossipService_UseKey_FullMethodName:     {need: RoleAdmin},
	cohortv1.GossipService_RemoveKey_FullMethodName:  {need: RoleAdmin},
	// TLSService: CA rotation, admins.
	cohortv1.TLSService_RotateCA_FullMethodName:       {need: RoleAdmin},
	cohortv1.TLSService_FinishRotation_FullMethodName: {need: RoleAdmin},
	cohortv1.TLSService_Status_FullMethodName:         {need: RoleAdmin},
}

// submitNamespace is the namespace a submitted or planned spec names ("default" when
// none). A spec that does not parse is left to the handler, which refuses it with the
// parser's message (the same parser). Without a parser no namespace is known: a token
// limited to namespaces is refused.
func submitNamespace(a *ACL, req any) (string, bool) {
	var spec []byte
	switch r := req.(type) {
	case *cohortv1.SubmitJobRequest:
		spec = r.GetSpecYaml()
	case *cohortv1.PlanJobRequest:
		spec = r.GetSpecYaml()
	default:
		return "", true
	}
	if a.cfg.ParseSpec == nil {
		return "", true
	}
	if len(spec) == 0 {
		return "", false // the handler refuses an empty spec
	}
	tmpl, err := a.cfg.ParseSpec(spec)
	if err != nil || tmpl == nil {
		return "", false // the handler refuses the spec with its own message
	}
	if tmpl.Namespace == "" {
		return "default", true
	}
	return tmpl.Namespace, true
}

// jobIDNamespace is the namespace of the job a read names (get, watch, logs, report),
// from local state.
func jobIDNamespace(a *ACL, req any) (string, bool) {
	r, ok := req.(interface{ GetId() string })
	if !ok {
		return "", false
	}
	return a.jobNamespace(r.GetId())
}

// listNamespace is the namespace a job list asks for; an empty one (every namespace)
// is allowed and its result filtered (filterJobs).
func listNamespace(_ *ACL, req any) (string, bool) {
	r, ok := req.(*cohortv1.ListJobsRequest)
	if !ok || r.GetNamespace() == "" {
		return "", false
	}
	return r.GetNamespace(), true
}

// filterJobs keeps the jobs of the token's namespaces.
func filterJobs(tok *Token, resp any) {
	r, ok := resp.(*cohortv1.ListJobsResponse)
	if !ok {
		return
	}
	r.Jobs = slices.DeleteFunc(r.Jobs, func(j *cohortv1.Job) bool { return !tok.allowsNamespace(j.GetNamespace()) })
}

// filterQuotas keeps the quotas of the token's namespaces.
func filterQuotas(tok *Token, resp any) {
	r, ok := resp.(*cohortv1.ListQuotasResponse)
	if !ok {
		return
	}
	r.Quotas = slices.DeleteFunc(r.Quotas, func(q *cohortv1.Quota) bool { return !tok.allowsNamespace(q.GetNamespace()) })
}

// cancelNamespace is the namespace of the job a cancel names, from local state.
func cancelNamespace(a *ACL, req any) (string, bool) {
	r, ok := req.(*cohortv1.CancelJobRequest)
	if !ok {
		return "", false
	}
	return a.jobNamespace(r.Id)
}

// jobNamespace is the namespace of job id in this coordinator's local state; ok is false
// for a job it does not know (yet): the handler answers NotFound, or forwards the call
// to the leader, whose interceptor checks it again. Without a state store no namespace
// is known: a token limited to namespaces is refused.
func (a *ACL) jobNamespace(id string) (string, bool) {
	if a.cfg.State == nil {
		return "", true
	}
	store := a.cfg.State()
	if store == nil {
		return "", true
	}
	job, err := store.JobByID(nil, id)
	if err != nil || job == nil {
		return "", false
	}
	return job.Namespace, true
}

// ACLConfig configures an ACL.
type ACLConfig struct {
	// Tokens are the tokens accepted (see ParseTokens); SetTokens replaces them.
	Tokens []Token
	// ParseSpec finds the namespace of a submitted spec (the same parser as Config's).
	// Without it, submit tokens limited to namespaces cannot submit.
	ParseSpec func(spec []byte) (*cohortv1.Job, error)
	// SearchNamespace finds the namespace of a submitted Search spec (its
	// metadata.namespace). Without it, submit tokens limited to namespaces cannot
	// submit searches.
	SearchNamespace func(spec []byte) (string, error)
	// State finds the namespace of a job being cancelled. Without it, submit tokens
	// limited to namespaces cannot cancel.
	State func() *state.Store
	// Logger receives refused calls (a known token beyond its rights at info level, a
	// missing or unknown one at debug level); nil means slog.Default().
	Logger *slog.Logger
	// TokensOff is a coordinator without a tokens file: bearer tokens are ignored and
	// every call is authorized by its certificate alone (see callerOf); a call without
	// one passes (on a TLS coordinator the certificate-role check has refused it
	// already, unless the RPC is public).
	TokensOff bool
}

// ACL authenticates the bearer token of every call and checks it against the RPC's
// rule. It is safe for concurrent use; SetTokens swaps the token set atomically.
type ACL struct {
	cfg    ACLConfig
	log    *slog.Logger
	tokens atomic.Pointer[[]Token]

	mu     sync.Mutex
	minted []Token // in-memory tokens, kept across SetTokens
	file   []Token
}

// NewACL returns an ACL accepting cfg.Tokens.
func NewACL(cfg ACLConfig) *ACL {
	a := &ACL{cfg: cfg, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.SetTokens(cfg.Tokens)
	return a
}

// SetTokens replaces the tokens (a reloaded tokens file); minted tokens stay.
func (a *ACL) SetTokens(tokens []Token) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.file = slices.Clone(tokens)
	a.publish()
}

// Mint adds an in-memory token of role for this process's own use (the dashboard's
// client) and returns its random secret. It is never written anywhere, and other
// coordinators do not accept it.
func (a *ACL) Mint(name string, role Role) string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	secret := hex.EncodeToString(b[:])
	a.mu.Lock()
	defer a.mu.Unlock()
	a.minted = append(a.minted, NewToken(name, role, secret))
	a.publish()
	return secret
}

func (a *ACL) publish() {
	all := append(slices.Clone(a.file), a.minted...)
	a.tokens.Store(&all)
}

// Authenticate returns the token whose secret is secret. Every token's hash is
// compared in constant time, so the time taken does not tell how much of a secret
// matched, or which token it was.
func (a *ACL) Authenticate(secret string) (*Token, bool) {
	h := sha256.Sum256([]byte(secret))
	var found *Token
	tokens := *a.tokens.Load()
	for i := range tokens {
		if subtle.ConstantTimeCompare(h[:], tokens[i].hash[:]) == 1 && found == nil {
			found = &tokens[i]
		}
	}
	return found, found != nil && secret != ""
}

// Check authenticates secret and checks that its token holds role need; the error is
// a gRPC status (Unauthenticated or PermissionDenied) naming what is missing.
func (a *ACL) Check(secret string, need Role) (*Token, error) {
	if secret == "" {
		return nil, status.Error(codes.Unauthenticated, "this cluster requires an ACL token: set --token, COHORT_TOKEN or token: in the CLI config file")
	}
	tok, ok := a.Authenticate(secret)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "the ACL token is not valid on this coordinator")
	}
	if !tok.Role.grants(need) {
		return tok, status.Errorf(codes.PermissionDenied, "token %q has role %s; this needs a %s token", tok.Name, tok.Role, holders(need))
	}
	return tok, nil
}

// bearer extracts the secret of the "authorization: Bearer <secret>" metadata.
func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(AuthorizationHeader) {
		scheme, secret, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			return strings.TrimSpace(secret)
		}
	}
	return ""
}

// callerKey is the context key of the *Token an authorized call was made with.
type callerKey struct{}

// Caller returns the name of the ACL token the call in ctx was authorized with, or ""
// on a coordinator without ACLs.
func Caller(ctx context.Context) string {
	tok, _ := ctx.Value(callerKey{}).(*Token)
	return tokenName(tok)
}

// authorizeCall checks the call's caller against method's rule and returns ctx carrying
// the token it was authorized as (see Caller); req is nil for streams.
func (a *ACL) authorizeCall(ctx context.Context, method string, req any) (context.Context, *Token, error) {
	tok, err := a.authorize(ctx, method, req)
	if err != nil {
		return ctx, nil, err
	}
	if tok != nil {
		ctx = context.WithValue(ctx, callerKey{}, tok)
	}
	return ctx, tok, nil
}

// authorize checks the call's caller against method's rule; req is nil for streams. It
// returns the token the call was authorized as: nil for a public RPC and for a caller
// every rule admits (a coordinator forwarding its own call).
func (a *ACL) authorize(ctx context.Context, method string, req any) (*Token, error) {
	r, ok := methodRules[method]
	if !ok {
		a.log.Error("acl: refused an RPC that has no ACL rule", "method", method)
		return nil, status.Errorf(codes.PermissionDenied, "%s has no ACL rule; it is refused", method)
	}
	if r.public {
		return nil, nil
	}
	tok, trusted, err := a.callerOf(ctx)
	if err == nil && !trusted && !tok.Role.grants(r.need) {
		err = status.Errorf(codes.PermissionDenied, "%s has role %s; this needs a %s %s", tok.describe(), tok.Role, holders(r.need), tok.credential())
	}
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.PermissionDenied { // a known caller beyond its role: worth an audit line
			a.log.Info("acl: call refused", "method", method, "caller", tokenName(tok), "role", roleOf(tok))
			return nil, status.Errorf(codes.PermissionDenied, "permission denied: %s: %s", method, st.Message())
		}
		a.log.Debug("acl: call refused", "method", method, "code", st.Code())
		return nil, status.Errorf(codes.Unauthenticated, "%s: %s", method, st.Message())
	}
	if trusted {
		return nil, nil
	}
	if r.namespace != nil && req != nil {
		return tok, a.checkNamespace(tok, method, r.namespace, req)
	}
	return tok, nil
}

// callerOf is who the call in ctx is authorized as. A bearer token, when sent to a
// coordinator with tokens, is the caller, as it always was. Otherwise the caller's
// certificate is: a client certificate acts as a token of its ACL role and namespaces,
// an agent certificate as an agent token, and a coordinator certificate is trusted
// (it forwards calls it has checked), unless it names the client it forwards for (see
// forwardedAuth), who is then the caller. A call with neither is refused, or, on a
// coordinator without tokens, trusted (plaintext loopback and --insecure clusters).
func (a *ACL) callerOf(ctx context.Context) (tok *Token, trusted bool, err error) {
	if secret := bearer(ctx); secret != "" && !a.cfg.TokensOff {
		tok, ok := a.Authenticate(secret)
		if !ok {
			return nil, false, status.Error(codes.Unauthenticated, "the ACL token is not valid on this coordinator")
		}
		return tok, false, nil
	}
	id, err := callerIdentity(ctx)
	if err != nil {
		if a.cfg.TokensOff {
			return nil, true, nil
		}
		return nil, false, status.Error(codes.Unauthenticated, "this cluster requires an ACL token: set --token, COHORT_TOKEN or token: in the CLI config file")
	}
	switch id.Role {
	case pki.RoleCoordinator:
		if on := onBehalfOf(ctx); on != "" {
			client, err := parseOnBehalfOf(on)
			if err != nil {
				return nil, false, status.Errorf(codes.PermissionDenied, "coordinator %s forwarded a call for a client it does not name properly: %v", id.Name, err)
			}
			return certToken(client)
		}
		return nil, true, nil
	case pki.RoleAgent:
		return &Token{Name: id.Name, Role: RoleAgent, fromCert: true}, false, nil
	default:
		return certToken(id)
	}
}

// certToken is the token a client certificate stands for: its ACL role and namespaces.
func certToken(id pki.Identity) (*Token, bool, error) {
	role, err := ParseRole(id.ACLRole)
	if err != nil {
		return nil, false, status.Errorf(codes.PermissionDenied, "the certificate of %s has ACL role %q, which grants nothing: %v", id.Name, id.ACLRole, err)
	}
	return &Token{Name: id.Name, Role: role, Namespaces: slices.Clone(id.Namespaces), fromCert: true}, false, nil
}

func roleOf(t *Token) string {
	if t == nil {
		return ""
	}
	return t.Role.String()
}

// checkNamespace refuses a namespace-limited caller a request in another namespace.
func (a *ACL) checkNamespace(tok *Token, method string, namespace func(*ACL, any) (string, bool), req any) error {
	if tok == nil || len(tok.Namespaces) == 0 {
		return nil
	}
	ns, known := namespace(a, req)
	if !known || tok.allowsNamespace(ns) {
		return nil
	}
	a.log.Info("acl: call refused by namespace", "method", method, "caller", tok.Name, "namespace", ns)
	if ns == "" {
		return status.Errorf(codes.PermissionDenied, "permission denied: %s: %s may act in namespaces %s only, and this coordinator cannot tell the job's namespace",
			method, tok.describe(), strings.Join(tok.Namespaces, ", "))
	}
	return status.Errorf(codes.PermissionDenied, "permission denied: %s: %s may act in namespaces %s only, not %q",
		method, tok.describe(), strings.Join(tok.Namespaces, ", "), ns)
}

func tokenName(t *Token) string {
	if t == nil {
		return ""
	}
	return t.Name
}

// UnaryServerInterceptor checks every unary call.
func (a *ACL) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, tok, err := a.authorizeCall(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		resp, err := handler(ctx, req)
		if err == nil && tok != nil && len(tok.Namespaces) > 0 {
			if f := methodRules[info.FullMethod].filter; f != nil {
				f(tok, resp)
			}
		}
		return resp, err
	}
}

// StreamServerInterceptor checks every streaming call before its handler runs.
func (a *ACL) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, tok, err := a.authorizeCall(ss.Context(), info.FullMethod, nil)
		if err != nil {
			return err
		}
		if tok != nil {
			ss = &callerStream{ServerStream: ss, ctx: ctx}
		}
		r := methodRules[info.FullMethod]
		if tok != nil && len(tok.Namespaces) > 0 && r.streamNamespace != nil {
			ss = &namespacedStream{ServerStream: ss, check: func(req any) error {
				return a.checkNamespace(tok, info.FullMethod, r.streamNamespace, req)
			}}
		}
		return handler(srv, ss)
	}
}

// callerStream carries the context of an authorized call (see Caller).
type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }

// namespacedStream checks a server-streaming call's request against the caller's
// namespaces when the handler receives it, before the handler can send anything.
type namespacedStream struct {
	grpc.ServerStream
	check   func(req any) error
	checked bool
}

func (s *namespacedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if !s.checked {
		s.checked = true
		return s.check(m)
	}
	return nil
}

// ServerOptions are the gRPC server options that enforce the ACL.
func (a *ACL) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor()),
	}
}

// forwardedAuth passes the caller's credentials on to the leader a call is forwarded
// to, so the leader checks the caller's own rights: a follower vouches for nobody. A
// bearer token is passed as it came (every coordinator must therefore load the same
// tokens file); a client certificate, which the leader cannot see, is named in the
// onBehalfOfHeader, which the leader believes only from a coordinator certificate.
func forwardedAuth(ctx context.Context) context.Context {
	out, _ := metadata.FromOutgoingContext(ctx)
	if id, err := callerIdentity(ctx); err == nil && id.Role == pki.RoleClient && len(out.Get(onBehalfOfHeader)) == 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, onBehalfOfHeader, formatOnBehalfOf(id))
	}
	in, _ := metadata.FromIncomingContext(ctx)
	vals := in.Get(AuthorizationHeader)
	if len(vals) == 0 {
		return ctx
	}
	if len(out.Get(AuthorizationHeader)) > 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, AuthorizationHeader, vals[0])
}

// onBehalfOfHeader names the client whose call a coordinator forwards, as
// "NAME;ACL-ROLE;NS1,NS2" (names and namespaces hold no ';' or ',').
const onBehalfOfHeader = "cohort-on-behalf-of"

func formatOnBehalfOf(id pki.Identity) string {
	return id.Name + ";" + id.ACLRole + ";" + strings.Join(id.Namespaces, ",")
}

// onBehalfOf is the forwarded client of the incoming call ("" none).
func onBehalfOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(onBehalfOfHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseOnBehalfOf parses an onBehalfOfHeader value into the client identity it names.
func parseOnBehalfOf(v string) (pki.Identity, error) {
	parts := strings.Split(v, ";")
	if len(parts) != 3 {
		return pki.Identity{}, fmt.Errorf("%s %q is not NAME;ACL-ROLE;NAMESPACES", onBehalfOfHeader, v)
	}
	id := pki.Identity{Name: parts[0], Role: pki.RoleClient, ACLRole: parts[1]}
	if parts[2] != "" {
		id.Namespaces = strings.Split(parts[2], ",")
	}
	if err := id.Validate(); err != nil {
		return pki.Identity{}, fmt.Errorf("%s %q: %w", onBehalfOfHeader, v, err)
	}
	return id, nil
}

// BearerToken returns per-RPC credentials that send secret as
// "authorization: Bearer <secret>" on every call. They do not require transport
// security themselves: the connection's does (mutual TLS, unless a node runs
// --insecure, where the token is as visible as the rest of the traffic).
func BearerToken(secret string) credentials.PerRPCCredentials { return bearerToken(secret) }

type bearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{AuthorizationHeader: "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (bearerToken) RequireTransportSecurity() bool { return false }
