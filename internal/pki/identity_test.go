package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestIdentityRoundTrip(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	for _, id := range []Identity{
		{Name: "coord-1", Role: RoleCoordinator},
		{Name: "node-7.rack-2", Role: RoleAgent, ACLRole: "agent"},
		{Name: "alice@example.com", Role: RoleClient, ACLRole: "submit", Namespaces: []string{"team-b", "team-a"}},
		{Name: "ci", Role: RoleClient, ACLRole: "read"},
		{Name: "root", Role: RoleClient, ACLRole: "admin"},
	} {
		t.Run(id.String(), func(t *testing.T) {
			leaf := issueLeaf(t, ca, SignRequest{Identity: id}, t0)
			got, err := IdentityOf(leaf)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, id) {
				t.Errorf("IdentityOf = %#v, want %#v", got, id)
			}
			if leaf.Subject.CommonName != id.Name || !reflect.DeepEqual(leaf.Subject.OrganizationalUnit, []string{string(id.Role)}) {
				t.Errorf("subject %v", leaf.Subject)
			}
			want := []string{"cohort://role/" + string(id.Role)}
			if id.ACLRole != "" {
				want = append(want, "cohort://acl/"+id.ACLRole)
			}
			for _, ns := range id.Namespaces {
				want = append(want, "cohort://namespace/"+ns)
			}
			var uris []string
			for _, u := range leaf.URIs {
				uris = append(uris, u.String())
			}
			if !reflect.DeepEqual(uris, want) {
				t.Errorf("URI SANs %q, want %q", uris, want)
			}
		})
	}
}

func TestIdentityValidate(t *testing.T) {
	ok := Identity{Name: "node-1", Role: RoleAgent}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]Identity{
		"empty name":         {Role: RoleAgent},
		"name with space":    {Name: "node 1", Role: RoleAgent},
		"name with slash":    {Name: "a/b", Role: RoleAgent},
		"name too long":      {Name: strings.Repeat("n", 129), Role: RoleAgent},
		"no role":            {Name: "node-1"},
		"unknown role":       {Name: "node-1", Role: "root"},
		"client without ACL": {Name: "alice", Role: RoleClient},
		"bad ACL role":       {Name: "alice", Role: RoleClient, ACLRole: "Admin"},
		"bad namespace":      {Name: "alice", Role: RoleClient, ACLRole: "submit", Namespaces: []string{"Team_A"}},
		"empty namespace":    {Name: "alice", Role: RoleClient, ACLRole: "submit", Namespaces: []string{""}},
		"duplicate ns":       {Name: "alice", Role: RoleClient, ACLRole: "submit", Namespaces: []string{"a", "b", "a"}},
	} {
		if err := id.Validate(); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidIdentity", name, err)
		}
	}
	if _, err := ParseRole("admin"); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("ParseRole(admin) = %v", err)
	}
	if r, err := ParseRole("agent"); err != nil || r != RoleAgent {
		t.Errorf("ParseRole(agent) = %v, %v", r, err)
	}
}

func TestIdentityOfRefuses(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	uris := func(ss ...string) []*url.URL {
		var out []*url.URL
		for _, s := range ss {
			out = append(out, mustURL(s))
		}
		return out
	}
	cases := []struct {
		name   string
		change func(*x509.Certificate)
	}{
		{"no role URI", func(c *x509.Certificate) { c.URIs = nil }},
		{"duplicate role", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent", "cohort://role/agent") }},
		{"two roles", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent", "cohort://role/coordinator") }},
		{"unknown role", func(c *x509.Certificate) {
			c.URIs = uris("cohort://role/root")
			c.Subject.OrganizationalUnit = []string{"root"}
		}},
		{"OU disagrees with role URI", func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"coordinator"} }},
		{"two OUs", func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"agent", "coordinator"} }},
		{"no OU", func(c *x509.Certificate) { c.Subject.OrganizationalUnit = nil }},
		{"empty name", func(c *x509.Certificate) { c.Subject.CommonName = "" }},
		{"unknown kind", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent", "cohort://admin/yes") }},
		{"foreign scheme", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent", "spiffe://cluster/ns/x") }},
		{"query", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent?x=1") }},
		{"fragment", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent#x") }},
		{"user info", func(c *x509.Certificate) { c.URIs = uris("cohort://u@role/agent") }},
		{"port", func(c *x509.Certificate) { c.URIs = uris("cohort://role:1/agent") }},
		{"extra path", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent/x") }},
		{"escaped path", func(c *x509.Certificate) { c.URIs = uris("cohort://role/%61gent") }},
		{"empty value", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent", "cohort://acl/") }},
		{"two ACL roles", func(c *x509.Certificate) {
			c.URIs = uris("cohort://role/agent", "cohort://acl/read", "cohort://acl/admin")
		}},
		{"duplicate namespace", func(c *x509.Certificate) {
			c.URIs = uris("cohort://role/agent", "cohort://namespace/a", "cohort://namespace/a")
		}},
		{"bad namespace", func(c *x509.Certificate) { c.URIs = uris("cohort://role/agent", "cohort://namespace/A_B") }},
		{"client without ACL role", func(c *x509.Certificate) {
			c.URIs = uris("cohort://role/client")
			c.Subject.OrganizationalUnit = []string{"client"}
		}},
		{"CA certificate", func(c *x509.Certificate) { c.IsCA = true }},
	}
	if _, err := IdentityOf(signTemplate(t, ca, agentTemplate())); err != nil {
		t.Fatalf("the unbroken template is refused: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := agentTemplate()
			tc.change(tmpl)
			id, err := IdentityOf(signTemplate(t, ca, tmpl))
			t.Log(err)
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Errorf("IdentityOf = %#v, %v; want ErrInvalidIdentity", id, err)
			}
		})
	}
	if _, err := IdentityOf(nil); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("IdentityOf(nil) = %v", err)
	}
}

// A certificate edited after signing decodes to whatever it now says, but no longer
// verifies, so IdentityFromTLS (which reads only verified chains) never sees it.
func TestTamperedCertificateFailsVerification(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	leaf := issueLeaf(t, ca, SignRequest{Identity: Identity{Name: "bob", Role: RoleClient, ACLRole: "read"}}, t0)
	der := bytes.Replace(leaf.Raw, []byte("cohort://acl/read"), []byte("cohort://acl/root"), 1)
	if bytes.Equal(der, leaf.Raw) {
		t.Fatal("ACL URI not found in the DER")
	}
	tampered, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := IdentityOf(tampered); err != nil || id.ACLRole != "root" {
		t.Fatalf("tampered certificate decodes to %v, %v", id, err)
	}
	_, err = tampered.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err == nil {
		t.Fatal("tampered certificate verifies")
	}
}

func TestIdentityFromTLS(t *testing.T) {
	ca := newTestCA(t, "cohort-ca", t0)
	want := Identity{Name: "node-1", Role: RoleAgent}
	leaf := issueLeaf(t, ca, SignRequest{Identity: want}, t0)
	if _, err := IdentityFromTLS(tls.ConnectionState{}); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("no chains: %v", err)
	}
	// Presented but not verified (InsecureSkipVerify): no identity.
	if _, err := IdentityFromTLS(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("unverified peer certificate: %v", err)
	}
	state := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf, ca.Certificate()}}}
	if got, err := IdentityFromTLS(state); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("IdentityFromTLS = %v, %v", got, err)
	}

	if err := RequireRole(RoleAgent, RoleCoordinator)(state); err != nil {
		t.Errorf("RequireRole(agent, coordinator) refused an agent: %v", err)
	}
	if err := RequireRole(RoleCoordinator)(state); !errors.Is(err, ErrRoleNotAllowed) {
		t.Errorf("RequireRole(coordinator) on an agent: %v", err)
	}
	if err := RequireRole(RoleAgent)(tls.ConnectionState{}); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("RequireRole without a certificate: %v", err)
	}
}
