package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Role is what kind of process a certificate belongs to.
type Role string

// Roles.
const (
	// RoleCoordinator is a coordinator (a Raft member): it serves the cluster API and
	// signs certificates.
	RoleCoordinator Role = "coordinator"
	// RoleAgent is a node agent or another cluster process that both serves and calls.
	RoleAgent Role = "agent"
	// RoleClient is a user or tool calling the API; its ACLRole says what it may do.
	RoleClient Role = "client"
)

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	return r == RoleCoordinator || r == RoleAgent || r == RoleClient
}

// ParseRole parses a role name: coordinator, agent or client.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.Valid() {
		return r, nil
	}
	return "", fmt.Errorf("%w: role %q is not one of coordinator, agent, client", ErrInvalidIdentity, s)
}

// URI SAN scheme and kinds (see the package documentation).
const (
	uriScheme        = "cohort"
	uriKindRole      = "role"
	uriKindACL       = "acl"
	uriKindNamespace = "namespace"
	uriKindToken     = "token"
)

// Errors about identities and roles.
var (
	// ErrInvalidIdentity is wrapped by every error about an identity that is malformed
	// or a certificate that does not encode one as this package does.
	ErrInvalidIdentity = errors.New("pki: invalid identity")
	// ErrNoIdentity means a TLS connection has no verified peer certificate.
	ErrNoIdentity = errors.New("pki: peer presented no verified certificate")
	// ErrRoleNotAllowed means the peer's role is not one RequireRole admits.
	ErrRoleNotAllowed = errors.New("pki: peer role not allowed")
)

var (
	// nameRE is what an identity name may be: a host name, node name or user name.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)
	// labelRE is a DNS label, as namespaces are spelled across Cohort.
	labelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// aclRoleRE is an ACL role name (admin, submit, read, agent, ...).
	aclRoleRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
)

// Identity is who a certificate says its holder is.
type Identity struct {
	// Name is the node, host or user name (the certificate's CommonName): 1 to 128
	// characters of letters, digits, '.', '_', '@' and '-', starting with a letter or
	// digit.
	Name string
	// Role is the kind of process.
	Role Role
	// ACLRole is the API access role (admin, submit, read, ...), interpreted by the
	// coordinator's ACL. It is required for RoleClient and optional otherwise.
	ACLRole string
	// Namespaces, when not empty, limit what the ACL role may write to these
	// namespaces (DNS labels, no duplicates).
	Namespaces []string
	// Token is the id of the join token the certificate was enrolled with (empty for
	// certificates issued offline): revoking that token cuts the certificate off
	// (coordinators refuse its calls and its renewal).
	Token string
}

// Validate reports whether id can be written into a certificate.
func (id Identity) Validate() error {
	if !nameRE.MatchString(id.Name) {
		return fmt.Errorf("%w: name %q must be 1-128 characters of letters, digits, '.', '_', '@', '-', starting with a letter or digit", ErrInvalidIdentity, id.Name)
	}
	if !id.Role.Valid() {
		return fmt.Errorf("%w: role %q is not one of coordinator, agent, client", ErrInvalidIdentity, id.Role)
	}
	if id.ACLRole != "" && !aclRoleRE.MatchString(id.ACLRole) {
		return fmt.Errorf("%w: ACL role %q must be a lowercase name (a-z, 0-9, '-')", ErrInvalidIdentity, id.ACLRole)
	}
	if id.Role == RoleClient && id.ACLRole == "" {
		return fmt.Errorf("%w: a client identity needs an ACL role", ErrInvalidIdentity)
	}
	for i, ns := range id.Namespaces {
		if !labelRE.MatchString(ns) {
			return fmt.Errorf("%w: namespace %q must be a DNS label (a-z, 0-9, '-', 1-63 characters)", ErrInvalidIdentity, ns)
		}
		if slices.Contains(id.Namespaces[:i], ns) {
			return fmt.Errorf("%w: namespace %q appears twice", ErrInvalidIdentity, ns)
		}
	}
	if id.Token != "" {
		if err := checkTokenPart(id.Token, TokenIDLen); err != nil {
			return fmt.Errorf("%w: token id: %v", ErrInvalidIdentity, err)
		}
	}
	return nil
}

// String returns a short description for logs: "agent/node-7" or
// "client/alice (submit; ns team-a,team-b)".
func (id Identity) String() string {
	s := string(id.Role) + "/" + id.Name
	var extra []string
	if id.ACLRole != "" {
		extra = append(extra, id.ACLRole)
	}
	if len(id.Namespaces) > 0 {
		extra = append(extra, "ns "+strings.Join(id.Namespaces, ","))
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, "; ") + ")"
	}
	return s
}

// uris returns the URI SANs that encode id.
func (id Identity) uris() []*url.URL {
	u := []*url.URL{identityURI(uriKindRole, string(id.Role))}
	if id.ACLRole != "" {
		u = append(u, identityURI(uriKindACL, id.ACLRole))
	}
	for _, ns := range id.Namespaces {
		u = append(u, identityURI(uriKindNamespace, ns))
	}
	if id.Token != "" {
		u = append(u, identityURI(uriKindToken, id.Token))
	}
	return u
}

func identityURI(kind, value string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: kind, Path: "/" + value}
}

// IdentityOf decodes the identity a certificate issued by CA.Sign carries. It is
// strict: a certificate that is a CA, has no or several OrganizationalUnits, has no,
// several or an unknown role URI, an OrganizationalUnit other than its role, several
// ACL URIs, a malformed or duplicate namespace, or any URI SAN outside the cohort://
// scheme is refused with an error wrapping ErrInvalidIdentity.
//
// IdentityOf does not verify the certificate's signature or validity; the caller must
// have done so (IdentityFromTLS does).
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrInvalidIdentity)
	}
	if cert.IsCA {
		return Identity{}, fmt.Errorf("%w: certificate is a CA", ErrInvalidIdentity)
	}
	id := Identity{Name: cert.Subject.CommonName}
	var haveRole, haveACL, haveToken bool
	for _, u := range cert.URIs {
		kind, value, err := parseIdentityURI(u)
		if err != nil {
			return Identity{}, err
		}
		switch kind {
		case uriKindRole:
			if haveRole {
				return Identity{}, fmt.Errorf("%w: more than one role URI", ErrInvalidIdentity)
			}
			r, err := ParseRole(value)
			if err != nil {
				return Identity{}, err
			}
			id.Role, haveRole = r, true
		case uriKindACL:
			if haveACL {
				return Identity{}, fmt.Errorf("%w: more than one ACL role URI", ErrInvalidIdentity)
			}
			id.ACLRole, haveACL = value, true
		case uriKindNamespace:
			id.Namespaces = append(id.Namespaces, value)
		case uriKindToken:
			if haveToken {
				return Identity{}, fmt.Errorf("%w: more than one token URI", ErrInvalidIdentity)
			}
			id.Token, haveToken = value, true
		}
	}
	if !haveRole {
		return Identity{}, fmt.Errorf("%w: no role URI", ErrInvalidIdentity)
	}
	if ou := cert.Subject.OrganizationalUnit; len(ou) != 1 || ou[0] != string(id.Role) {
		return Identity{}, fmt.Errorf("%w: subject OU %q disagrees with role %q", ErrInvalidIdentity, ou, id.Role)
	}
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// parseIdentityURI splits cohort://<kind>/<value>, refusing anything that is not
// exactly that.
func parseIdentityURI(u *url.URL) (kind, value string, err error) {
	if u.Scheme != uriScheme {
		return "", "", fmt.Errorf("%w: URI SAN %q is not in the %s:// scheme", ErrInvalidIdentity, u.Redacted(), uriScheme)
	}
	kind, value = u.Host, strings.TrimPrefix(u.Path, "/")
	switch kind {
	case uriKindRole, uriKindACL, uriKindNamespace, uriKindToken:
	default:
		return "", "", fmt.Errorf("%w: URI SAN %q has unknown kind %q", ErrInvalidIdentity, u.Redacted(), kind)
	}
	if value == "" || u.String() != identityURI(kind, value).String() || u.User != nil || u.RawQuery != "" ||
		u.ForceQuery || u.Fragment != "" || u.Opaque != "" || u.RawPath != "" || strings.Contains(value, "/") {
		return "", "", fmt.Errorf("%w: URI SAN %q is not of the form %s://%s/<value>", ErrInvalidIdentity, u.Redacted(), uriScheme, kind)
	}
	return kind, value, nil
}

// IdentityFromTLS returns the identity of the peer of a TLS connection, read from the
// leaf of the first chain the TLS stack verified. A connection whose peer sent no
// certificate, or whose certificate was not verified (InsecureSkipVerify, or a
// server's VerifyClientCertIfGiven with no certificate), yields ErrNoIdentity.
func IdentityFromTLS(state tls.ConnectionState) (Identity, error) {
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return Identity{}, ErrNoIdentity
	}
	return IdentityOf(state.VerifiedChains[0][0])
}

// RequireRole returns a check for tls.Config.VerifyConnection that admits a peer only
// if it presented a verified certificate whose role is one of allowed. The handshake
// then fails for any other peer, before any request is read.
func RequireRole(allowed ...Role) func(tls.ConnectionState) error {
	allowed = slices.Clone(allowed)
	return func(state tls.ConnectionState) error {
		id, err := IdentityFromTLS(state)
		if err != nil {
			return err
		}
		if !slices.Contains(allowed, id.Role) {
			return fmt.Errorf("%w: %s has role %q, want one of %q", ErrRoleNotAllowed, id.Name, id.Role, allowed)
		}
		return nil
	}
}
