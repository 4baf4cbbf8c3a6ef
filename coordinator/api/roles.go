package api

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// Who may call what, by the role in the caller's certificate (on a coordinator that
// serves mutual TLS). ACL tokens, when on, are checked after this.
var (
	// agentCallers are the node agents, and coordinators forwarding their calls.
	agentCallers = []pki.Role{pki.RoleAgent, pki.RoleCoordinator}
	// userCallers are people and tools, and coordinators forwarding their calls.
	userCallers = []pki.Role{pki.RoleClient, pki.RoleCoordinator}
)

// certRoleRules maps every RPC the coordinator serves to the certificate roles that may
// call it. An RPC without a rule is refused (TestEveryCoordinatorRPCHasARoleRule, in
// package node, checks the served methods against this table).
var certRoleRules = map[string][]pki.Role{
	// JobService: users and admins.
	cohortv1.JobService_SubmitJob_FullMethodName:          userCallers,
	cohortv1.JobService_GetJob_FullMethodName:             userCallers,
	cohortv1.JobService_ListJobs_FullMethodName:           userCallers,
	cohortv1.JobService_CancelJob_FullMethodName:          userCallers,
	cohortv1.JobService_WatchJob_FullMethodName:           userCallers,
	cohortv1.JobService_ListNodes_FullMethodName:          userCallers,
	cohortv1.JobService_PlanJob_FullMethodName:            userCallers,
	cohortv1.JobService_SetQuota_FullMethodName:           userCallers,
	cohortv1.JobService_ListQuotas_FullMethodName:         userCallers,
	cohortv1.JobService_SetQueue_FullMethodName:           userCallers,
	cohortv1.JobService_ListQueues_FullMethodName:         userCallers,
	cohortv1.JobService_DrainNode_FullMethodName:          userCallers,
	cohortv1.JobService_SetNodeEligibility_FullMethodName: userCallers,
	cohortv1.JobService_ResumeJob_FullMethodName:          userCallers,
	cohortv1.JobService_JobLogs_FullMethodName:            userCallers,
	cohortv1.JobService_GetJobReport_FullMethodName:       userCallers,
	cohortv1.JobService_OverrideGate_FullMethodName:       userCallers,
	// SearchService: users, as JobService.
	cohortv1.SearchService_SubmitSearch_FullMethodName: userCallers,
	cohortv1.SearchService_GetSearch_FullMethodName:    userCallers,
	cohortv1.SearchService_ListSearches_FullMethodName: userCallers,
	cohortv1.SearchService_CancelSearch_FullMethodName: userCallers,
	// AgentService: node agents.
	cohortv1.AgentService_RegisterNode_FullMethodName:      agentCallers,
	cohortv1.AgentService_Heartbeat_FullMethodName:         agentCallers,
	cohortv1.AgentService_WatchAssignments_FullMethodName:  agentCallers,
	cohortv1.AgentService_ReportTasks_FullMethodName:       agentCallers,
	cohortv1.AgentService_ReportSessionLoss_FullMethodName: agentCallers,
	// ClusterService: operators manage the peers; a new voter joins with its
	// coordinator certificate (an operator may join one too, as AddVoter does; the new
	// voter still needs a coordinator certificate to speak Raft).
	cohortv1.ClusterService_Join_FullMethodName:               userCallers,
	cohortv1.ClusterService_ListPeers_FullMethodName:          userCallers,
	cohortv1.ClusterService_AddVoter_FullMethodName:           userCallers,
	cohortv1.ClusterService_RemovePeer_FullMethodName:         userCallers,
	cohortv1.ClusterService_TransferLeadership_FullMethodName: userCallers,
	cohortv1.ClusterService_SnapshotSave_FullMethodName:       userCallers,
	cohortv1.ClusterService_SnapshotRestore_FullMethodName:    userCallers,
	// EnrollService: Enroll is also open to callers without a certificate (see
	// certlessMethods): its join token authenticates it. Renew renews any role's own
	// certificate. TokenService: people (admins, checked by the handlers) and
	// coordinators forwarding.
	cohortv1.EnrollService_Enroll_FullMethodName:     allCallers,
	cohortv1.EnrollService_Renew_FullMethodName:      allCallers,
	cohortv1.TokenService_CreateToken_FullMethodName: userCallers,
	cohortv1.TokenService_ListTokens_FullMethodName:  userCallers,
	cohortv1.TokenService_RevokeToken_FullMethodName: userCallers,
	// GossipService: the keys themselves to node agents and coordinators; their
	// management to people (admins, checked by the handlers).
	cohortv1.GossipService_GetKeyring_FullMethodName: agentCallers,
	cohortv1.GossipService_ListKeys_FullMethodName:   userCallers,
	cohortv1.GossipService_InstallKey_FullMethodName: userCallers,
	cohortv1.GossipService_UseKey_FullMethodName:     userCallers,
	cohortv1.GossipService_RemoveKey_FullMethodName:  userCallers,
	// TLSService: CA rotation, admins (the handlers refuse other client roles).
	cohortv1.TLSService_RotateCA_FullMethodName:       userCallers,
	cohortv1.TLSService_FinishRotation_FullMethodName: userCallers,
	cohortv1.TLSService_Status_FullMethodName:         userCallers,
}

// allCallers is every certificate role.
var allCallers = []pki.Role{pki.RoleClient, pki.RoleAgent, pki.RoleCoordinator}

// certlessMethods may be called over TLS without a client certificate: the join-token
// enrollment, which is how a process gets its first certificate. The coordinator's TLS
// listener therefore verifies client certificates only when given, and every other
// method refuses a caller without one (Unauthenticated).
var certlessMethods = map[string]bool{
	cohortv1.EnrollService_Enroll_FullMethodName: true,
}

// CertRoles returns the certificate roles that may call method (a full gRPC method
// name); ok is false for a method without a rule, which nobody may call.
func CertRoles(method string) (roles []pki.Role, ok bool) {
	r, ok := certRoleRules[method]
	return slices.Clone(r), ok
}

// CertRoleServerOptions are the gRPC server options of a coordinator serving mutual
// TLS: every call is refused (PermissionDenied) unless the role in the caller's verified
// certificate may call the method (see certRoleRules). Add them before the ACL's, so a
// call is checked by certificate first. log receives refusals (nil: slog.Default()).
// revoked, when not nil, reports whether a join token has been revoked: a certificate
// enrolled with a revoked token is refused (Unauthenticated) on every RPC.
func CertRoleServerOptions(log *slog.Logger, revoked func(tokenID string) bool) []grpc.ServerOption {
	if log == nil {
		log = slog.Default()
	}
	check := func(ctx context.Context, method string) error {
		return authorizeCertRole(ctx, method, log, revoked)
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	}
}

// authorizeCertRole checks the role in the certificate of the call in ctx against
// method's rule.
func authorizeCertRole(ctx context.Context, method string, log *slog.Logger, revoked func(string) bool) error {
	allowed, ok := certRoleRules[method]
	if !ok {
		log.Error("tls: refused an RPC that has no certificate role rule", "method", method)
		return status.Errorf(codes.PermissionDenied, "%s has no certificate role rule; it is refused", method)
	}
	id, err := callerIdentity(ctx)
	if err != nil && certlessMethods[method] && errors.Is(err, pki.ErrNoIdentity) {
		return nil
	}
	if err != nil {
		log.Info("tls: call refused", "method", method, "err", err)
		return status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
	}
	if id.Token != "" && revoked != nil && revoked(id.Token) {
		log.Info("tls: call refused: the certificate's join token is revoked", "method", method, "caller", id.String(), "token", id.Token)
		return status.Errorf(codes.Unauthenticated, "%s: the certificate of %s was enrolled with join token %s, which is revoked; enroll again with a valid token",
			method, id.Name, id.Token)
	}
	if !slices.Contains(allowed, id.Role) {
		log.Info("tls: call refused by certificate role", "method", method, "caller", id.String())
		return status.Errorf(codes.PermissionDenied, "permission denied: %s: the certificate of %s has role %s; this needs one of %v",
			method, id.Name, id.Role, allowed)
	}
	return nil
}

// callerIdentity is the identity in the verified certificate of the call in ctx.
func callerIdentity(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, pki.ErrNoIdentity
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, pki.ErrNoIdentity
	}
	return pki.IdentityFromTLS(info.State)
}
