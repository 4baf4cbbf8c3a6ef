package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/worker"
)

// joinTimeout bounds a joining coordinator's retries: coordinators started together
// may not be listening yet.
const joinTimeout = 60 * time.Second

// startCoordinator starts the Raft voter and serves its gRPC API: JobService,
// AgentService and ClusterService, with forwarding to the leader and the ACL when
// configured.
func (n *Node) startCoordinator() error {
	co := n.cfg.Coordinator
	log := n.log
	dataDir := co.DataDir
	if co.Ephemeral {
		if err := os.MkdirAll(co.DataDir, 0o755); err != nil {
			return configErr("Coordinator.DataDir", "", err)
		}
		dir, err := os.MkdirTemp(co.DataDir, "coordinator-run-")
		if err != nil {
			return fmt.Errorf("coordinator state directory: %w", err)
		}
		n.onStop(func() error { _ = os.RemoveAll(dir); return nil })
		dataDir = dir
	}
	glis, err := net.Listen("tcp", co.GRPCAddr)
	if err != nil {
		return configErr("Coordinator.GRPCAddr", co.GRPCAddr, err)
	}
	n.onStop(func() error { _ = glis.Close(); return nil }) // when Start fails before serving it
	n.grpcAddr = glis.Addr().String()

	scfg := server.DefaultConfig()
	scfg.NodeID = co.NodeID
	scfg.DataDir = dataDir
	scfg.RaftBindAddr = co.RaftAddr
	scfg.GRPCAddr = n.grpcAddr
	scfg.Bootstrap = co.Bootstrap
	scfg.RaftLogStore = co.RaftLogStore
	scfg.RaftHeartbeatTimeout = co.RaftHeartbeatTimeout
	scfg.RaftElectionTimeout = co.RaftElectionTimeout
	scfg.RaftLeaderLeaseTimeout = co.RaftLeaderLeaseTimeout
	scfg.RaftLogLevel = co.RaftLogLevel
	scfg.HeartbeatTTL = co.HeartbeatTTL
	// A node suspected dead (a parameter server lost its worker's session) goes down a
	// quarter interval after a missed heartbeat.
	hb := n.cfg.HeartbeatInterval
	if hb <= 0 {
		hb = DefaultHeartbeatInterval
	}
	scfg.SuspectGrace = hb + hb/4
	scfg.Logger = log.With("role", "coordinator")
	scfg.Registry = n.reg
	if n.tls != nil {
		scfg.RaftTLS = &server.TLSConfig{Trust: n.tls.trust, Certs: n.tls.certs}
	}
	if co.Mutate != nil {
		co.Mutate(&scfg)
	}
	srv, err := server.New(scfg)
	if err != nil {
		return fmt.Errorf("start coordinator: %w", err)
	}
	n.srv = srv
	n.onStop(func() error {
		if err := srv.Shutdown(); err != nil && !errors.Is(err, server.ErrShutdown) {
			return err
		}
		return nil
	})
	if !srv.HadState() && !co.Bootstrap && len(co.Join) == 0 {
		return fmt.Errorf("coordinator data directory %s %w", co.DataDir, ErrNoClusterState)
	}

	// The forwarder carries no token of its own: a forwarded call carries its caller's.
	fwd := api.NewLeaderForwarder(srv, clientOptions(n.coordinatorCreds(), "")...)
	n.onStop(fwd.Close)
	parse := co.ParseSpec
	if parse == nil {
		parse = ParseJobSpec
	}
	acfg := api.Config{Logger: log.With("role", "api"), ParseSpec: parse, Forwarder: fwd,
		Preflight: n.preflight(), RefuseWithoutNodes: true}
	if n.store != nil {
		acfg.Logs = n.store // the node agents' task logs
	}
	if co.ACLTokensFile != "" {
		n.acl = newNodeACL(co.ACLTokensFile, n.tokens, parse, srv.State, log.With("role", "acl"))
	}
	sopts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes)},
		KeepaliveServerOptions()...)
	if n.tls != nil {
		// Every caller presents a certificate from the cluster CA; its role decides which
		// RPCs it may call (before the ACL's check of its token or its certificate's ACL
		// role).
		sopts = append(sopts, grpc.Creds(n.tls.coordinatorServerCreds()))
		sopts = append(sopts, api.CertRoleServerOptions(log.With("role", "api"), func(id string) bool {
			rec, err := srv.State().TokenByID(nil, id)
			return err == nil && rec != nil && rec.Revoked
		})...)
	}
	switch {
	case n.acl != nil:
		sopts = append(sopts, n.acl.serverOptions()...)
	case n.tls != nil:
		// No tokens file: a client certificate's ACL role and namespaces are still
		// enforced on every RPC, as a token's would be.
		sopts = append(sopts, api.NewACL(api.ACLConfig{TokensOff: true, ParseSpec: parse, SearchNamespace: searchNamespace,
			State: srv.State, Logger: log.With("role", "acl")}).ServerOptions()...)
	}
	gs := grpc.NewServer(sopts...)
	cohortv1.RegisterJobServiceServer(gs, api.NewJobService(srv, acfg))
	cohortv1.RegisterAgentServiceServer(gs, api.NewAgentService(srv, acfg))
	cohortv1.RegisterClusterServiceServer(gs, api.NewClusterService(srv, acfg))
	cohortv1.RegisterSearchServiceServer(gs, api.NewSearchService(srv, api.SearchConfig{Config: acfg, ExpandSearch: ExpandSearchSpec}))
	n.enrollServices(gs, acfg)
	n.gs = gs
	n.serve(gs, glis)
	return nil
}

// coordinatorCreds are the client credentials of the coordinator's own calls (forwarding,
// joins, the dashboard's reads): its certificate, to coordinators only; nil without TLS.
func (n *Node) coordinatorCreds() credentials.TransportCredentials {
	if n.tls == nil {
		return nil
	}
	return n.tls.clientCreds(n.tls.certs, pki.RoleCoordinator)
}

// join adds a new voter to the cluster of Coordinator.Join; a voter with state (a
// restart) does not join again. Unreachable coordinators are retried for a minute; a
// refusal or a non-coordinator ends the attempt at once.
func (n *Node) join(ctx context.Context) error {
	co := n.cfg.Coordinator
	if len(co.Join) == 0 || n.srv.HadState() {
		return nil
	}
	jctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	req := &cohortv1.JoinRequest{Id: co.NodeID, RaftAddress: n.srv.RaftAddr(), GrpcAddress: n.grpcAddr}
	var resp *cohortv1.JoinResponse
	var err error
	for back := 200 * time.Millisecond; ; back = min(2*back, 2*time.Second) {
		resp, err = api.JoinCluster(jctx, co.Join, req, clientOptions(n.coordinatorCreds(), n.cfg.Token)...)
		if err == nil || refusedJoin(err) || status.Code(err) == codes.FailedPrecondition {
			break
		}
		n.log.Warn("join failed; retrying", "err", err, "backoff", back)
		select {
		case <-jctx.Done():
		case <-time.After(back):
		}
		if jctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return &JoinError{Addrs: co.Join, Refused: refusedJoin(err), Err: err}
	}
	n.log.Info("joined the cluster", "leader", resp.GetLeaderId())
	return nil
}

// refusedJoin reports whether a join failed because the cluster refused it (bad
// input), not because no coordinator could be reached.
func refusedJoin(err error) bool {
	c := status.Code(err)
	return errors.Is(err, api.ErrNotCoordinator) || c == codes.AlreadyExists || c == codes.InvalidArgument
}

// preflight is what the coordinator's pre-flight reads of a job's data: s3:// data with
// the node's S3 configuration, and file:// data under the data roots of the workers of
// this process (they share its file system, as in `cohort dev`); a coordinator without
// workers checks no file:// data.
func (n *Node) preflight() *api.Preflight {
	p := &api.Preflight{S3: n.cfg.Storage.S3}
	if len(n.cfg.Workers) > 0 {
		p.DataRoots = n.cfg.Workers[0].DataRoots
		if len(p.DataRoots) == 0 {
			p.DataRoots = worker.DefaultDataRoots()
		}
	}
	return p
}
