package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// certContext is an incoming call's context from a peer whose verified certificate
// names id, with the incoming metadata md.
func certContext(t *testing.T, ca *pki.CA, id pki.Identity, md ...string) context.Context {
	t.Helper()
	certPEM, _, err := ca.IssueFor(id, []string{"127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Certificate()}}},
	}})
	return metadata.NewIncomingContext(ctx, metadata.Pairs(md...))
}

// TestForwardedCertificateCaller: a follower names the client certificate it forwards
// for, and the leader checks that client's ACL role and namespaces; the name is
// believed from a coordinator certificate only, and a malformed one is refused.
func TestForwardedCertificateCaller(t *testing.T) {
	ca, err := pki.NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := NewACL(ACLConfig{TokensOff: true})
	reader := pki.Identity{Name: "viewer", Role: pki.RoleClient, ACLRole: "read", Namespaces: []string{"team-a"}}

	// The follower: the outgoing call names its client.
	out, _ := metadata.FromOutgoingContext(forwardContext(certContext(t, ca, reader)))
	on := out.Get(onBehalfOfHeader)
	if len(on) != 1 || on[0] != "viewer;read;team-a" {
		t.Fatalf("forwarded %s = %q, want viewer;read;team-a", onBehalfOfHeader, on)
	}
	coordinator := pki.Identity{Name: "c2", Role: pki.RoleCoordinator}
	cancel := &cohortv1.CancelJobRequest{Id: "j1"}
	const method = cohortv1.JobService_CancelJob_FullMethodName

	// The leader: a coordinator on its own is trusted, on behalf of the reader it is not.
	if _, err := a.authorize(certContext(t, ca, coordinator), method, cancel); err != nil {
		t.Errorf("a coordinator's own call: %v", err)
	}
	_, err = a.authorize(certContext(t, ca, coordinator, onBehalfOfHeader, on[0]), method, cancel)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "the certificate of viewer has role read") {
		t.Errorf("a coordinator forwarding for a read certificate: %v, want PermissionDenied naming the reader", err)
	}
	tok, err := a.authorize(certContext(t, ca, coordinator, onBehalfOfHeader, on[0]), cohortv1.JobService_ListJobs_FullMethodName, &cohortv1.ListJobsRequest{})
	if err != nil || tok == nil || tok.Name != "viewer" || len(tok.Namespaces) != 1 {
		t.Errorf("a coordinator forwarding a reader's list: %+v, %v; want the reader's token (its namespaces filter the list)", tok, err)
	}
	for _, bad := range []string{"viewer;read", "viewer;root;", "Bad Name;read;", "viewer;read;Team_A"} {
		if _, err := a.authorize(certContext(t, ca, coordinator, onBehalfOfHeader, bad), method, cancel); status.Code(err) != codes.PermissionDenied {
			t.Errorf("a coordinator forwarding for %q: %v, want PermissionDenied", bad, err)
		}
	}
	// A client claiming to forward is itself.
	admin := pki.Identity{Name: "root", Role: pki.RoleClient, ACLRole: "admin"}
	if _, err := a.authorize(certContext(t, ca, reader, onBehalfOfHeader, "root;admin;"), method, cancel); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a read certificate claiming to forward for an admin: %v, want PermissionDenied", err)
	}
	if _, err := a.authorize(certContext(t, ca, admin), method, cancel); err != nil {
		t.Errorf("an admin certificate: %v", err)
	}
	// Without a certificate: trusted without tokens (plaintext), refused with them.
	if _, err := a.authorize(context.Background(), method, cancel); err != nil {
		t.Errorf("a plaintext call without tokens: %v", err)
	}
	if _, err := NewACL(ACLConfig{}).authorize(context.Background(), method, cancel); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a plaintext call with tokens on and none sent: %v, want Unauthenticated", err)
	}
}
