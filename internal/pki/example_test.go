package pki_test

import (
	"fmt"
	"time"

	"github.com/cohort-dev/cohort/internal/pki"
)

// The join flow, without the network: the coordinator makes a token, the joining node
// makes a key and a CSR, and the coordinator checks the token and signs a certificate
// for the identity the token grants.
func Example() {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)

	// Coordinator, at bootstrap (LoadOrCreateCA in a real process).
	ca, err := pki.NewCA("cohort-ca", now)
	if err != nil {
		panic(err)
	}
	// Administrator: a token for one node agent, valid for a day. Only the record goes
	// to Raft; the token string goes to the node.
	tok, err := pki.GenerateToken(ca.Hash())
	if err != nil {
		panic(err)
	}
	record := pki.NewTokenRecord(tok, pki.Identity{Role: pki.RoleAgent, ACLRole: "agent"}, now, 24*time.Hour)

	// Joining node: parse the token (FetchCA(ctx, addr, tok.CAHash, nil) would pin the
	// CA over the network), make a key and CSR.
	parsed, err := pki.ParseToken(tok.String())
	if err != nil {
		panic(err)
	}
	keyPEM, csr, err := pki.NewKeyAndCSR("node-7")
	if err != nil {
		panic(err)
	}

	// Coordinator: check the secret, decide the identity, sign.
	if err := record.Check(parsed.Secret, now.Add(time.Hour)); err != nil {
		panic(err)
	}
	id, err := record.IdentityFor("node-7")
	if err != nil {
		panic(err)
	}
	certPEM, err := ca.Sign(pki.SignRequest{CSR: csr, Identity: id, DNSNames: []string{"node-7.cluster.internal"}}, now.Add(time.Hour))
	if err != nil {
		panic(err)
	}

	// Joining node: serve and call with the certificate, renewing it as it ages.
	certs, err := pki.NewReloader(certPEM, keyPEM, nil)
	if err != nil {
		panic(err)
	}
	got, err := pki.IdentityOf(certs.Leaf())
	if err != nil {
		panic(err)
	}
	fmt.Println(got)
	fmt.Println(pki.RenewAt(certs.Leaf()).Sub(now.Add(time.Hour)).Round(time.Hour)) // two thirds of 24h (and 5 minutes of backdating)
	// Output:
	// agent/node-7 (agent)
	// 16h0m0s
}
