package node

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestCARotationSurvivesRestart: a coordinator that applied a rotation keeps it on disk
// (the new CA as ca.key and first in ca.crt, the old one in previous-ca, the
// cross-signed chain), so that after a restart it signs with the new CA through the
// same chain and still opens what the old CA sealed; applying the same record again
// changes nothing; the rotation's end removes the chain and the old CA from the trust
// bundle, across a restart too. A record sealed by a CA it never held is refused,
// naming that CA.
func TestCARotationSurvivesRestart(t *testing.T) {
	cfg, log := bootstrapCoordinatorConfig(t)
	load := func() *nodeTLS {
		t.Helper()
		tl, err := loadTLS(&cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		return tl
	}
	tl := load()
	old := tl.ca()
	sealedByOld, err := old.Seal("test", []byte("sealed before the rotation"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	next := newRotationCA(t, now)
	cross, err := old.CrossSign(next, now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := next.KeyPEM()
	sealedKey, err := old.Seal(api.ClusterCAKeyPurpose, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	chain := append(cross, old.CertPEM()...)
	rec := &cohortv1.ClusterCA{Version: 1, ActiveCertPem: next.CertPEM(), SealedKey: sealedKey, SealedByHash: old.Hash(),
		TrustBundlePem: append(next.CertPEM(), old.CertPEM()...), ChainPem: chain, RotatedUnixNano: now.UnixNano()}
	var logs bytes.Buffer
	if err := tl.applyClusterCA(rec, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logs.Bytes(), []byte("renewed=true")) {
		t.Errorf("the first application of the rotation did not renew the certificates: %s", logs.String())
	}
	check := func(tl *nodeTLS, wantTrust []string, wantChain []byte) {
		t.Helper()
		if tl.ca().Hash() != next.Hash() {
			t.Fatalf("signs with %s, want the new CA %s", tl.ca().Hash(), next.Hash())
		}
		if got := tl.trust.Hashes(); !slices.Equal(got, wantTrust) {
			t.Fatalf("trusts %v, want %v", got, wantTrust)
		}
		if !bytes.Equal(tl.ca().ChainPEM(), wantChain) {
			t.Fatal("signed chains do not end with the rotation's chain")
		}
		known := tl.knownCAs()
		if len(known) != 2 || known[1].Hash() != old.Hash() {
			t.Fatalf("known CAs %d, want the new and the old", len(known))
		}
		if got, err := known[1].Open("test", sealedByOld); err != nil || string(got) != "sealed before the rotation" {
			t.Fatalf("the old CA's key no longer opens what it sealed: %v", err)
		}
	}
	check(tl, []string{next.Hash(), old.Hash()}, chain)
	again := load()
	check(again, []string{next.Hash(), old.Hash()}, chain)
	logs.Reset()
	if err := again.applyClusterCA(rec, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	check(again, []string{next.Hash(), old.Hash()}, chain)
	if !bytes.Contains(logs.Bytes(), []byte("renewed=false")) {
		t.Errorf("applying the same record after the restart renewed the certificates again: %s", logs.String())
	}

	end := &cohortv1.ClusterCA{Version: 2, ActiveCertPem: next.CertPEM(), SealedKey: sealedKey, SealedByHash: old.Hash(),
		TrustBundlePem: next.CertPEM(), RotatedUnixNano: now.UnixNano()}
	if err := again.applyClusterCA(end, log); err != nil {
		t.Fatal(err)
	}
	check(again, []string{next.Hash()}, next.CertPEM())
	if _, err := os.Stat(filepath.Join(again.dir, caChainFile)); !os.IsNotExist(err) {
		t.Errorf("%s after the rotation ended: %v, want it removed", caChainFile, err)
	}
	check(load(), []string{next.Hash()}, next.CertPEM())

	stranger, _ := pki.NewCA("stranger", now)
	third, _ := pki.NewCA("cohort cluster CA 3", now)
	k3, _ := third.KeyPEM()
	s3, _ := stranger.Seal(api.ClusterCAKeyPurpose, k3)
	bad := &cohortv1.ClusterCA{Version: 3, ActiveCertPem: third.CertPEM(), SealedKey: s3, SealedByHash: stranger.Hash(), TrustBundlePem: third.CertPEM()}
	if err := again.applyClusterCA(bad, log); err == nil || !bytes.Contains([]byte(err.Error()), []byte(stranger.Hash())) {
		t.Errorf("a record sealed by a CA never held: %v, want an error naming it", err)
	}
	if again.ca().Hash() != next.Hash() {
		t.Error("a refused record changed the signing CA")
	}
}

// TestCARotationStoppedBetweenBundleAndKey: a coordinator stopped while applying a
// rotation, after it wrote the new trust bundle (new CA first) and before the new
// key, starts again: it signs with the old CA, which it still holds, trusts both, and
// the record, applied again on start, moves it onto the new CA. Before the fix the
// start refused ca.crt ("starts with CA new, not ca.key's CA old").
func TestCARotationStoppedBetweenBundleAndKey(t *testing.T) {
	cfg, log := bootstrapCoordinatorConfig(t)
	tl, err := loadTLS(&cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	old := tl.ca()
	now := time.Now()
	next := newRotationCA(t, now)
	cross, err := old.CrossSign(next, now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := next.KeyPEM()
	sealedKey, err := old.Seal(api.ClusterCAKeyPurpose, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(next.CertPEM(), old.CertPEM()...)
	rec := &cohortv1.ClusterCA{Version: 1, ActiveCertPem: next.CertPEM(), SealedKey: sealedKey, SealedByHash: old.Hash(),
		TrustBundlePem: bundle, ChainPem: append(cross, old.CertPEM()...), RotatedUnixNano: now.UnixNano()}
	// What applyClusterCA leaves when stopped after the bundle's rename.
	if err := old.Save(filepath.Join(tl.dir, previousCADir)); err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveCACert(tl.dir, bundle); err != nil {
		t.Fatal(err)
	}
	again, err := loadTLS(&cfg, log)
	if err != nil {
		t.Fatalf("a restart after a rotation stopped between the bundle and the key: %v", err)
	}
	if again.ca().Hash() != old.Hash() {
		t.Fatalf("signs with %s after the restart, want the old CA %s (the new key was never written)", again.ca().Hash(), old.Hash())
	}
	if got, want := again.trust.Hashes(), []string{next.Hash(), old.Hash()}; !slices.Equal(got, want) {
		t.Fatalf("trusts %v, want %v", got, want)
	}
	if err := again.applyClusterCA(rec, log); err != nil {
		t.Fatal(err)
	}
	if again.ca().Hash() != next.Hash() {
		t.Fatalf("signs with %s once the record is applied again, want the new CA", again.ca().Hash())
	}
	disk, err := pki.LoadCA(tl.dir)
	if err != nil || disk.Hash() != next.Hash() {
		t.Fatalf("the directory's CA after the record: %v %v, want the new one", err, disk)
	}
}

// TestPreviousCAKeyDeletedWhenTheRotationEnds: a coordinator keeps the old CA's key
// (tls/previous-ca) while the rotation runs and while something sealed still needs it
// (the gossip keyring does not open with the active CA), and deletes it once the
// rotation has ended and nothing does; a restart then knows the active CA alone.
func TestPreviousCAKeyDeletedWhenTheRotationEnds(t *testing.T) {
	cfg, log := bootstrapCoordinatorConfig(t)
	tl, err := loadTLS(&cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	old := tl.ca()
	now := time.Now()
	next := newRotationCA(t, now)
	keyPEM, _ := next.KeyPEM()
	sealedKey, err := old.Seal(api.ClusterCAKeyPurpose, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	rotation := &cohortv1.ClusterCA{Version: 1, ActiveCertPem: next.CertPEM(), SealedKey: sealedKey, SealedByHash: old.Hash(),
		TrustBundlePem: append(next.CertPEM(), old.CertPEM()...), RotatedUnixNano: now.UnixNano()}
	end := &cohortv1.ClusterCA{Version: 2, ActiveCertPem: next.CertPEM(), SealedKey: sealedKey, SealedByHash: old.Hash(),
		TrustBundlePem: next.CertPEM(), RotatedUnixNano: now.UnixNano()}
	prevDir := filepath.Join(tl.dir, previousCADir)
	opens := func(*pki.CA) error { return nil }
	sealedWithOld := func(ca *pki.CA) error {
		if ca.Hash() != old.Hash() {
			return pki.ErrSealed
		}
		return nil
	}
	kept := func(what string) {
		t.Helper()
		if _, err := pki.LoadCA(prevDir); err != nil || len(tl.knownCAs()) != 2 {
			t.Fatalf("%s: the old CA's key is gone (%v, %d known CAs)", what, err, len(tl.knownCAs()))
		}
	}

	if err := tl.applyClusterCA(rotation, log); err != nil {
		t.Fatal(err)
	}
	tl.forgetPreviousCA(rotation, opens, log)
	kept("during the rotation")
	tl.forgetPreviousCA(end, opens, log) // not applied yet
	kept("before the end is applied")
	if err := tl.applyClusterCA(end, log); err != nil {
		t.Fatal(err)
	}
	tl.forgetPreviousCA(end, sealedWithOld, log)
	kept("while the keyring opens only with the old CA")
	tl.forgetPreviousCA(end, opens, log)
	if _, err := os.Stat(prevDir); !os.IsNotExist(err) {
		t.Fatalf("%s after the rotation ended: %v, want it deleted", prevDir, err)
	}
	if known := tl.knownCAs(); len(known) != 1 || known[0].Hash() != next.Hash() {
		t.Fatalf("known CAs after the end: %d, want the active one alone", len(known))
	}
	again, err := loadTLS(&cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if known := again.knownCAs(); len(known) != 1 || known[0].Hash() != next.Hash() {
		t.Fatalf("known CAs after a restart: %d, want the active one alone", len(known))
	}
}

// bootstrapCoordinatorConfig is the config of a coordinator that bootstraps a cluster
// in a temporary data dir (loadTLS makes its CA there), with a logger that discards.
func bootstrapCoordinatorConfig(t *testing.T) (Config, *slog.Logger) {
	cfg := DefaultConfig()
	co := DefaultCoordinatorConfig()
	co.NodeID, co.DataDir, co.Bootstrap = "c1", t.TempDir(), true
	co.RaftAddr, co.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Coordinator = &co
	return cfg, slog.New(slog.DiscardHandler)
}

// newRotationCA is the new CA of a rotation.
func newRotationCA(t *testing.T, now time.Time) *pki.CA {
	t.Helper()
	next, err := pki.NewCA("cohort cluster CA 2", now)
	if err != nil {
		t.Fatal(err)
	}
	return next
}
