package fsm

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

func tokenCmd(id, role string) *cohortv1.Command {
	return &cohortv1.Command{Kind: &cohortv1.Command_CreateToken{CreateToken: &cohortv1.CreateTokenCommand{
		Token: &cohortv1.JoinToken{Id: id, SecretSha256: "00ff", Role: role, CreatedUnixNano: 1}}}}
}

func revokeCmd(id string) *cohortv1.Command {
	return &cohortv1.Command{Kind: &cohortv1.Command_RevokeToken{RevokeToken: &cohortv1.RevokeTokenCommand{Id: id, RevokedUnixNano: 7}}}
}

// TestJoinTokenCommands: a token is created once (its id is never reused), revoked
// (again is a no-op keeping the first revocation time), refused when unknown or
// without a secret hash, and survives a snapshot.
func TestJoinTokenCommands(t *testing.T) {
	h := newHarness(t)
	h.mustApply(tokenCmd("abc123", "agent"))
	if err, ok := h.apply(tokenCmd("abc123", "coordinator")).(error); !ok || !errors.Is(err, ErrTokenExists) {
		t.Fatalf("a second token with the same id: %v", err)
	}
	if got, ok := h.apply(tokenCmd("abc123", "agent")).(*cohortv1.JoinToken); !ok || got.GetRole() != "agent" {
		t.Fatalf("the same token applied again (a retried create): %v, want the stored record", got)
	}
	if err, ok := h.apply(&cohortv1.Command{Kind: &cohortv1.Command_CreateToken{CreateToken: &cohortv1.CreateTokenCommand{Token: &cohortv1.JoinToken{Id: "x"}}}}).(error); !ok {
		t.Fatalf("a token without a secret hash applied: %v", err)
	}
	if err, ok := h.apply(revokeCmd("nope00")).(error); !ok || !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("revoking an unknown token: %v", err)
	}
	h.mustApply(revokeCmd("abc123"))
	again := revokeCmd("abc123")
	again.GetRevokeToken().RevokedUnixNano = 99
	h.mustApply(again)
	tok, _ := h.f.State().TokenByID(nil, "abc123")
	if !tok.GetRevoked() || tok.GetRevokedUnixNano() != 7 || tok.GetRole() != "agent" {
		t.Fatalf("token after revocation: %v", tok)
	}

	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, h.f.State().Snapshot()); err != nil {
		t.Fatal(err)
	}
	restored, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := restored.TokenByID(nil, "abc123")
	if !proto.Equal(got, tok) {
		t.Fatalf("restored token %v, want %v", got, tok)
	}
}

func keyringCmd(sealed string, version uint64) *cohortv1.Command {
	return &cohortv1.Command{Kind: &cohortv1.Command_SetGossipKeyring{SetGossipKeyring: &cohortv1.SetGossipKeyringCommand{Sealed: []byte(sealed), Version: version}}}
}

// TestSetGossipKeyring: the keyring is replaced only by a newer version, never emptied,
// and survives a snapshot.
func TestSetGossipKeyring(t *testing.T) {
	h := newHarness(t)
	h.mustApply(keyringCmd("v1", 1))
	if err, ok := h.apply(keyringCmd("v1-again", 1)).(error); !ok || !errors.Is(err, ErrStaleKeyring) {
		t.Fatalf("same version applied: %v", err)
	}
	if _, ok := h.apply(keyringCmd("", 2)).(error); !ok {
		t.Fatal("an empty keyring applied")
	}
	h.mustApply(keyringCmd("v2", 2))
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, h.f.State().Snapshot()); err != nil {
		t.Fatal(err)
	}
	restored, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := restored.GossipKeyring(nil)
	if string(k.GetSealed()) != "v2" || k.GetVersion() != 2 {
		t.Fatalf("restored keyring %v", k)
	}
}

func clusterCACmd(cert string, version uint64) *cohortv1.Command {
	return &cohortv1.Command{Kind: &cohortv1.Command_SetClusterCa{SetClusterCa: &cohortv1.SetClusterCACommand{Ca: &cohortv1.ClusterCA{
		Version: version, ActiveCertPem: []byte(cert), SealedKey: []byte("sealed"), TrustBundlePem: []byte(cert + "+old"), SealedByHash: "h",
	}}}}
}

// TestSetClusterCA: the CA record is replaced only by a newer version, never without
// its certificate, key or bundle, and survives a snapshot.
func TestSetClusterCA(t *testing.T) {
	h := newHarness(t)
	h.mustApply(clusterCACmd("ca2", 1))
	if err, ok := h.apply(clusterCACmd("ca2-again", 1)).(error); !ok || !errors.Is(err, ErrStaleClusterCA) {
		t.Fatalf("same version applied: %v", err)
	}
	if _, ok := h.apply(clusterCACmd("", 2)).(error); !ok {
		t.Fatal("a record without a certificate applied")
	}
	h.mustApply(clusterCACmd("ca3", 2))
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, h.f.State().Snapshot()); err != nil {
		t.Fatal(err)
	}
	restored, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := restored.ClusterCA(nil)
	if string(c.GetActiveCertPem()) != "ca3" || c.GetVersion() != 2 || string(c.GetTrustBundlePem()) != "ca3+old" {
		t.Fatalf("restored cluster CA %v", c)
	}
}
