package api

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestFinishCARotationReseals: ending a rotation while the gossip keyring is still
// sealed with the old CA (its reseal at the rotation failed) reseals it with the
// active CA first, so that the coordinators may delete the old CA's key; without the
// old CA's key to open it, the rotation does not end (Unavailable) and the record
// still trusts both CAs.
func TestFinishCARotationReseals(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	setup := func() (*fsmBackend, *pki.CA, *pki.CA) {
		b := newBackend(t)
		old, err := pki.NewCA("old", now)
		if err != nil {
			t.Fatal(err)
		}
		next, err := pki.NewCA("next", now)
		if err != nil {
			t.Fatal(err)
		}
		if err := proposeGossipKeys(ctx, b, old, [][]byte{bytes.Repeat([]byte{7}, GossipKeyBytes)}, 1); err != nil {
			t.Fatal(err)
		}
		rec := &cohortv1.ClusterCA{Version: 1, ActiveCertPem: next.CertPEM(), SealedByHash: old.Hash(), SealedKey: []byte("x"),
			TrustBundlePem: append(next.CertPEM(), old.CertPEM()...), RotatedUnixNano: now.Add(-48 * time.Hour).UnixNano()}
		if _, err := b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SetClusterCa{SetClusterCa: &cohortv1.SetClusterCACommand{Ca: rec}}}); err != nil {
			t.Fatal(err)
		}
		return b, old, next
	}

	b, old, next := setup()
	if _, _, err := OpenGossipKeyring(b, next); err == nil {
		t.Fatal("the keyring opens with the new CA before the finish; the test needs it sealed with the old one")
	}
	rec, err := FinishCARotation(ctx, b, now, false, next, old)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.TrustBundlePem, next.CertPEM()) {
		t.Error("the finished record still trusts the old CA")
	}
	keys, _, err := OpenGossipKeyring(b, next)
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], bytes.Repeat([]byte{7}, GossipKeyBytes)) {
		t.Fatalf("after the finish the keyring with the new CA alone: %v %v, want the same key", keys, err)
	}

	b, _, next = setup()
	_, err = FinishCARotation(ctx, b, now, false, next) // the old CA's key is not at hand
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("finish without a key that opens the keyring: %v, want Unavailable", err)
	}
	if cur, _ := b.State().ClusterCA(nil); cur == nil || bytes.Equal(cur.TrustBundlePem, next.CertPEM()) {
		t.Error("a finish that could not reseal the keyring ended the rotation")
	}
}
