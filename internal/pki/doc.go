// Package pki holds Cohort's trust primitives (issue #16): the cluster certificate
// authority, the identities written into certificates, join tokens, and the TLS
// configurations that use them. It is built on the standard library only; wiring it
// into the coordinator, node agents and parameter servers is done elsewhere.
//
// # Who holds what
//
//   - The coordinators hold the cluster CA: an ECDSA P-256 key (ca.key, PKCS#8, mode
//     0600) and its self-signed certificate (ca.crt), valid for ten years. Only they
//     sign certificates (CA.Sign).
//   - Every process (coordinator, node agent, client) holds its own private key, made
//     where it runs (NewKeyAndCSR) and never sent anywhere, and a short-lived
//     certificate (24 hours by default) that names its Identity. A Reloader serves the
//     current certificate and renews it at two thirds of its life by asking the
//     coordinator again over the connection the old certificate still authenticates.
//   - An administrator holds join tokens. The coordinators keep, in Raft, only a
//     TokenRecord per token: the SHA-256 of its secret, the identity it grants, when it
//     expires and whether it was revoked.
//
// # Join tokens
//
// A join token reads
//
//	COH1<ca-hash>::<id>.<secret>
//
// where ca-hash is 64 lowercase hex digits (see below), id is 6 and secret 16
// characters of [a-z0-9] from crypto/rand (about 83 bits of entropy). Its two halves
// authenticate the two ends of the join:
//
//   - The CA hash authenticates the coordinator to the joining node. The joiner connects
//     without trusting any certificate yet (JoinTLSConfig, FetchCA) and accepts the
//     server only if the chain it presents ends in a self-signed CA whose public key
//     hashes to ca-hash, the leaf verifies against that CA, and the leaf names a
//     coordinator. This is checked inside the TLS handshake, so nothing (in particular
//     not the secret) is written to a server that fails it. A node agent, though it
//     holds a certificate from the same CA, cannot pose as the coordinator.
//   - The id and secret authenticate the joiner to the coordinator. The coordinator
//     finds the TokenRecord by id and checks the secret against the stored hash in
//     constant time (TokenRecord.Check). A valid token proves only that its bearer was
//     given it by an administrator; the identity the new certificate carries is the one
//     recorded with the token (TokenRecord.IdentityFor), never one the joiner asks for,
//     and a token may be bound to one node name.
//
// # What the CA hash pins
//
// The hash is the lowercase hex SHA-256 of the CA certificate's DER-encoded
// SubjectPublicKeyInfo, the same value kubeadm's --discovery-token-ca-cert-hash takes
// (without its "sha256:" prefix). It pins the CA's public key, not the certificate:
// re-issuing the CA certificate with the same key keeps every token and pinned hash
// valid; a new CA key invalidates them all.
//
// # Identities in certificates
//
// CA.Sign ignores everything a CSR asks for except its public key and writes the
// Identity it is given:
//
//	Subject CommonName           Identity.Name
//	Subject OrganizationalUnit   exactly one value: the role
//	URI SAN cohort://role/<role>        exactly one; coordinator, agent or client
//	URI SAN cohort://acl/<acl-role>     at most one; required for clients (admin, submit, read, ...)
//	URI SAN cohort://namespace/<ns>     one per namespace, no duplicates
//	DNS and IP SANs              only those in SignRequest, never for clients
//	ExtKeyUsage                  ServerAuth+ClientAuth (coordinator, agent), ClientAuth (client)
//
// IdentityOf decodes this strictly: a certificate with an unknown or duplicate role,
// an OrganizationalUnit that disagrees with the role URI, a URI outside this scheme,
// or a CA flag is refused. IdentityOf does not verify the certificate; use
// IdentityFromTLS, which reads the leaf of the chain the TLS stack verified, and
// RequireRole in a tls.Config's VerifyConnection to admit only some roles. gRPC
// handlers reach the same state through credentials.TLSInfo.
//
// Certificates are not revoked: they are short-lived instead. Tokens are revoked by
// marking their TokenRecord.
package pki
