package node

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/pki"
)

// TestEveryCoordinatorRPCRefusesOutsiders enumerates every method the coordinator
// serves and calls it over real mutual TLS: without a client certificate every method
// but the join-token enrollment is Unauthenticated, with a certificate from another CA
// the handshake fails, and with a certificate of each role the method's rule does not
// admit it is PermissionDenied, and with a client certificate whose ACL role does not
// grant the method's ACL rule (no tokens file) it is PermissionDenied naming the role.
// A new RPC is covered the day it is registered.
func TestEveryCoordinatorRPCRefusesOutsiders(t *testing.T) {
	cfg := DefaultConfig()
	co := DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator, cfg.Logger = &co, slog.New(slog.DiscardHandler)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ca := n.tls.ca()
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(from *pki.CA, id pki.Identity) *pki.Reloader {
		certPEM, keyPEM, err := from.IssueFor(id, []string{"127.0.0.1"}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r, err := pki.NewReloader(certPEM, keyPEM, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	dial := func(certs *pki.Reloader) *grpc.ClientConn {
		conn, err := grpc.NewClient(n.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(pki.RoleClientTLSConfig(ca.Pool(), certs, pki.RoleCoordinator))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	byRole := map[pki.Role]*grpc.ClientConn{
		pki.RoleClient:      dial(issue(ca, pki.Identity{Name: "alice", Role: pki.RoleClient, ACLRole: "read"})),
		pki.RoleAgent:       dial(issue(ca, pki.Identity{Name: "w9", Role: pki.RoleAgent, ACLRole: "agent"})),
		pki.RoleCoordinator: dial(issue(ca, pki.Identity{Name: "c9", Role: pki.RoleCoordinator})),
	}
	// Client certificates of each ACL role: what the role does not grant is refused
	// by the certificate's ACL role, with no tokens file configured.
	byACLRole := map[api.Role]*grpc.ClientConn{}
	for _, r := range []api.Role{api.RoleRead, api.RoleSubmit, api.RoleAdmin} {
		byACLRole[r] = dial(issue(ca, pki.Identity{Name: "u-" + r.String(), Role: pki.RoleClient, ACLRole: r.String()}))
	}
	anonymous := dial(nil)
	foreign := dial(issue(other, pki.Identity{Name: "alice", Role: pki.RoleClient, ACLRole: "admin"}))

	call := func(conn *grpc.ClientConn, method string, m grpc.MethodInfo) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if !m.IsClientStream && !m.IsServerStream {
			return conn.Invoke(cctx, method, &emptypb.Empty{}, &emptypb.Empty{})
		}
		s, err := conn.NewStream(cctx, &grpc.StreamDesc{ClientStreams: m.IsClientStream, ServerStreams: m.IsServerStream}, method)
		if err != nil {
			return err
		}
		_ = s.SendMsg(&emptypb.Empty{})
		_ = s.CloseSend()
		return s.RecvMsg(&emptypb.Empty{})
	}
	// What the rule table itself must never allow: node agents calling people's RPCs,
	// people calling the agents'.
	never := map[string]pki.Role{
		"cohort.v1.JobService": pki.RoleAgent, "cohort.v1.ClusterService": pki.RoleAgent, "cohort.v1.TokenService": pki.RoleAgent,
		"cohort.v1.AgentService": pki.RoleClient, "/cohort.v1.GossipService/GetKeyring": pki.RoleClient,
		"/cohort.v1.GossipService/ListKeys": pki.RoleAgent, "/cohort.v1.GossipService/InstallKey": pki.RoleAgent,
		"/cohort.v1.GossipService/UseKey": pki.RoleAgent, "/cohort.v1.GossipService/RemoveKey": pki.RoleAgent,
	}
	methods := 0
	for svc, info := range n.gs.GetServiceInfo() {
		for _, m := range info.Methods {
			methods++
			full := "/" + svc + "/" + m.Name
			allowed, _ := api.CertRoles(full)
			for _, key := range []string{svc, full} {
				if r, ok := never[key]; ok && slices.Contains(allowed, r) {
					t.Errorf("%s admits %s certificates; it must not", full, r)
				}
			}
			err := call(anonymous, full, m)
			switch full {
			case "/cohort.v1.EnrollService/Enroll": // the join token authenticates: an empty one is bad input
				if status.Code(err) != codes.InvalidArgument {
					t.Errorf("%s without a certificate and token: %v, want InvalidArgument", full, err)
				}
			default:
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("%s without a certificate: %v, want Unauthenticated", full, err)
				}
			}
			if err := call(foreign, full, m); status.Code(err) != codes.Unavailable {
				t.Errorf("%s with another CA's certificate: %v, want the handshake to fail (Unavailable)", full, err)
			}
			need, public, ok := api.MethodRole(full)
			if !ok {
				t.Errorf("%s has no ACL rule", full)
			}
			for r, conn := range byACLRole {
				if public || !slices.Contains(allowed, pki.RoleClient) || r.Grants(need) {
					continue
				}
				err := call(conn, full, m)
				if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "has role "+r.String()) {
					t.Errorf("%s with a client certificate of ACL role %s: %v, want PermissionDenied naming the role (it needs %s)", full, r, err, need)
				}
			}
			for role, conn := range byRole {
				if slices.Contains(allowed, role) {
					continue
				}
				if err := call(conn, full, m); status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s with a %s certificate: %v, want PermissionDenied", full, role, err)
				}
			}
		}
	}
	if methods < 30 {
		t.Fatalf("the coordinator serves %d methods; want every service", methods)
	}
}
