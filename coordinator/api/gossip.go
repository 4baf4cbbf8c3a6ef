package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/internal/pki"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// GossipKeyringPurpose is what the gossip keyring is sealed for (pki.CA.Seal).
const GossipKeyringPurpose = "gossip keyring"

// GossipKeyBytes is the size of the keys the cluster makes (AES-256).
const GossipKeyBytes = 32

// maxGossipKeys bounds the keyring.
const maxGossipKeys = 8

// GossipKeyFingerprint names a key without showing it: the first 16 hex digits of its
// SHA-256.
func GossipKeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

type gossipService struct {
	cohortv1.UnimplementedGossipServiceServer
	b   Backend
	cfg Config
	ec  EnrollConfig
}

// NewGossipService returns the GossipService handlers.
func NewGossipService(b Backend, cfg Config, ec EnrollConfig) cohortv1.GossipServiceServer {
	return &gossipService{b: b, cfg: cfg.withBackendClock(b).withDefaults(), ec: ec}
}

// OpenGossipKeyring reads and opens the keyring in b's state: nil keys when none is set.
// It tries each CA in cas: across a CA rotation the keyring may be sealed with the old
// CA's key until the rotation reseals it with the new one.
func OpenGossipKeyring(b Backend, cas ...*pki.CA) (keys [][]byte, version uint64, err error) {
	k, err := b.State().GossipKeyring(nil)
	if err != nil || k == nil {
		return nil, 0, err
	}
	var raw []byte
	err = pki.ErrSealed
	for _, ca := range cas {
		if raw, err = ca.Open(GossipKeyringPurpose, k.Sealed); err == nil {
			break
		}
	}
	if err != nil {
		return nil, 0, err
	}
	var gk cohortv1.GossipKeys
	if err := proto.Unmarshal(raw, &gk); err != nil {
		return nil, 0, fmt.Errorf("gossip keyring: %w", err)
	}
	return gk.Keys, k.Version, nil
}

// proposeGossipKeys seals keys and proposes them as version.
func proposeGossipKeys(ctx context.Context, b Backend, ca *pki.CA, keys [][]byte, version uint64) error {
	raw, err := proto.Marshal(&cohortv1.GossipKeys{Keys: keys})
	if err != nil {
		return err
	}
	sealed, err := ca.Seal(GossipKeyringPurpose, raw)
	if err != nil {
		return err
	}
	_, err = b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_SetGossipKeyring{
		SetGossipKeyring: &cohortv1.SetGossipKeyringCommand{Sealed: sealed, Version: version}}})
	return err
}

// EnsureGossipKeyring proposes a keyring of one random key when the cluster has none
// (a leader holding the CA calls it once it leads). It reports whether it made one.
func EnsureGossipKeyring(ctx context.Context, b Backend, ca *pki.CA) (bool, error) {
	keys, version, err := OpenGossipKeyring(b, ca)
	if err != nil || len(keys) > 0 {
		return false, err
	}
	key := make([]byte, GossipKeyBytes)
	_, _ = rand.Read(key) // crypto/rand.Read never returns an error
	if err := proposeGossipKeys(ctx, b, ca, [][]byte{key}, version+1); err != nil {
		return false, err
	}
	return true, nil
}

func (s *gossipService) caOrFail() (*pki.CA, error) {
	ca := s.ec.ca()
	if ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this coordinator does not hold the cluster CA, so it cannot open the gossip keyring")
	}
	return ca, nil
}

// GetKeyring returns the keys, from this coordinator's state.
func (s *gossipService) GetKeyring(ctx context.Context, _ *cohortv1.GetKeyringRequest) (*cohortv1.GetKeyringResponse, error) {
	if _, err := s.caOrFail(); err != nil {
		return nil, err
	}
	keys, version, err := OpenGossipKeyring(s.b, s.ec.knownCAs()...)
	if err != nil {
		return nil, toStatus(err)
	}
	if len(keys) == 0 {
		return nil, status.Error(codes.Unavailable, "the cluster has no gossip keyring yet (its leader makes one)")
	}
	return &cohortv1.GetKeyringResponse{Keys: keys, Version: version}, nil
}

func keyInfos(keys [][]byte) []*cohortv1.GossipKeyInfo {
	out := make([]*cohortv1.GossipKeyInfo, 0, len(keys))
	for i, k := range keys {
		out = append(out, &cohortv1.GossipKeyInfo{Fingerprint: GossipKeyFingerprint(k), Primary: i == 0})
	}
	return out
}

// ListKeys lists the keys' fingerprints.
func (s *gossipService) ListKeys(ctx context.Context, req *cohortv1.ListGossipKeysRequest) (*cohortv1.ListGossipKeysResponse, error) {
	if err := requireAdminCert(ctx, "ListKeys"); err != nil {
		return nil, err
	}
	if _, err := s.caOrFail(); err != nil {
		return nil, err
	}
	keys, version, err := OpenGossipKeyring(s.b, s.ec.knownCAs()...)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cohortv1.ListGossipKeysResponse{Keys: keyInfos(keys), Version: version}, nil
}

// keyringUnchanged is a change's answer when the keyring is as asked already (a
// retried change whose first try committed): the call succeeds with note.
type keyringUnchanged struct{ note string }

func (e *keyringUnchanged) Error() string { return e.note }

// changeKeyring applies change to the keyring on the leader, retrying once when
// another change raced it. A change that answers *keyringUnchanged proposes nothing
// and the call answers with the keyring as it is and the note.
func (s *gossipService) changeKeyring(ctx context.Context, method string, change func(keys [][]byte) ([][]byte, string, error),
	remote func(context.Context, grpc.ClientConnInterface) (*cohortv1.GossipKeyringChange, error)) (*cohortv1.GossipKeyringChange, error) {
	if err := requireAdminCert(ctx, method); err != nil {
		return nil, err
	}
	return leaderCall(ctx, s.cfg, func(ctx context.Context) (*cohortv1.GossipKeyringChange, error) {
		ca, err := s.caOrFail()
		if err != nil {
			return nil, err
		}
		for attempt := 0; ; attempt++ {
			if err := s.b.ConsistentRead(ctx); err != nil {
				return nil, err
			}
			keys, version, err := OpenGossipKeyring(s.b, s.ec.knownCAs()...)
			if err != nil {
				return nil, err
			}
			next, fp, err := change(slices.Clone(keys))
			if nc := (*keyringUnchanged)(nil); errors.As(err, &nc) {
				s.cfg.Logger.Info("gossip keyring unchanged", "method", method, "fingerprint", fp, "note", nc.note, "caller", Caller(ctx))
				return &cohortv1.GossipKeyringChange{Keys: keyInfos(keys), Version: version, Fingerprint: fp, Note: nc.note}, nil
			}
			if err != nil {
				return nil, err
			}
			err = proposeGossipKeys(ctx, s.b, ca, next, version+1)
			if errors.Is(err, fsm.ErrStaleKeyring) && attempt < 3 {
				continue
			}
			if err != nil {
				return nil, err
			}
			s.cfg.Logger.Info("gossip keyring changed", "method", method, "fingerprint", fp, "keys", len(next), "version", version+1, "caller", Caller(ctx))
			return &cohortv1.GossipKeyringChange{Keys: keyInfos(next), Version: version + 1, Fingerprint: fp}, nil
		}
	}, remote)
}

func findKey(keys [][]byte, fp string) int {
	return slices.IndexFunc(keys, func(k []byte) bool { return GossipKeyFingerprint(k) == fp })
}

// InstallKey adds a key (a random one when none is given).
func (s *gossipService) InstallKey(ctx context.Context, req *cohortv1.InstallGossipKeyRequest) (*cohortv1.GossipKeyringChange, error) {
	key := req.GetKey()
	switch len(key) {
	case 0:
		key = make([]byte, GossipKeyBytes)
		_, _ = rand.Read(key)
	case 16, 24, 32:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "a gossip key is 16, 24 or 32 bytes, not %d", len(key))
	}
	fp := GossipKeyFingerprint(key)
	return s.changeKeyring(ctx, "InstallKey", func(keys [][]byte) ([][]byte, string, error) {
		if findKey(keys, fp) >= 0 {
			// Installing it again changes nothing: a retried install whose first try
			// committed succeeds.
			return nil, fp, &keyringUnchanged{note: "gossip key " + fp + " is installed already"}
		}
		if len(keys) >= maxGossipKeys {
			return nil, "", status.Errorf(codes.FailedPrecondition, "the keyring holds %d keys, the most it may; remove one first", len(keys))
		}
		return append(keys, key), fp, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.GossipKeyringChange, error) {
		return cohortv1.NewGossipServiceClient(c).InstallKey(ctx, &cohortv1.InstallGossipKeyRequest{Key: key})
	})
}

// UseKey makes an installed key the primary.
func (s *gossipService) UseKey(ctx context.Context, req *cohortv1.UseGossipKeyRequest) (*cohortv1.GossipKeyringChange, error) {
	fp := req.GetFingerprint()
	return s.changeKeyring(ctx, "UseKey", func(keys [][]byte) ([][]byte, string, error) {
		i := findKey(keys, fp)
		if i < 0 {
			return nil, "", status.Errorf(codes.NotFound, "no gossip key with fingerprint %q is installed (see keyring list)", fp)
		}
		k := keys[i]
		keys = slices.Delete(keys, i, i+1)
		return append([][]byte{k}, keys...), fp, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.GossipKeyringChange, error) {
		return cohortv1.NewGossipServiceClient(c).UseKey(ctx, req)
	})
}

// RemoveKey removes a key that is not the primary.
func (s *gossipService) RemoveKey(ctx context.Context, req *cohortv1.RemoveGossipKeyRequest) (*cohortv1.GossipKeyringChange, error) {
	fp := req.GetFingerprint()
	return s.changeKeyring(ctx, "RemoveKey", func(keys [][]byte) ([][]byte, string, error) {
		i := findKey(keys, fp)
		switch {
		case i < 0:
			// A retried removal whose first try committed finds the key gone: success.
			return nil, fp, &keyringUnchanged{note: fmt.Sprintf("no gossip key with fingerprint %q is installed: removed already, or never installed (see keyring list)", fp)}
		case i == 0:
			return nil, "", status.Errorf(codes.FailedPrecondition, "gossip key %s is the primary; use another key first", fp)
		}
		return slices.Delete(keys, i, i+1), fp, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.GossipKeyringChange, error) {
		return cohortv1.NewGossipServiceClient(c).RemoveKey(ctx, req)
	})
}
