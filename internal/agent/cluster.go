package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/peer"
)

// clusterIDFile is the file in Config.StateDir that keeps the joined cluster's ID.
const clusterIDFile = "cluster-id"

// ErrOtherCluster means a coordinator answered for another cluster than the one this
// node joined: its address now serves another cluster (signed by the same CA).
var ErrOtherCluster = errors.New("agent: coordinator of another cluster")

// ClusterID returns the ID of the cluster this node joined ("" before it learnt one).
func (a *Agent) ClusterID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cluster
}

// learnCluster checks the cluster ID a coordinator answered with against the one this
// node joined, and remembers it when the node had none. A coordinator that names none
// (its cluster has not recorded one yet) passes.
func (a *Agent) learnCluster(got string, p *peer.Peer) error {
	if got == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch a.cluster {
	case got:
		return nil
	case "":
		a.cluster = got
		if a.cfg.StateDir != "" {
			if err := saveClusterID(a.cfg.StateDir, got); err != nil {
				a.log.Error("could not keep the cluster ID; a restarted agent will not check it", "err", err)
			}
		}
		a.log.Info("joined cluster", "cluster_id", got)
		return nil
	}
	return fmt.Errorf("%w: the coordinator at %s belongs to cluster %s, but node %s joined cluster %s",
		ErrOtherCluster, peerAddr(p), got, a.cfg.Node.GetId(), a.cluster)
}

// peerAddr is the address of the coordinator a call reached, as far as known.
func peerAddr(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return "unknown address"
	}
	return p.Addr.String()
}

// loadClusterID reads the cluster ID kept in dir ("" when none is kept).
func loadClusterID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, clusterIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("agent: read the joined cluster's ID: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// saveClusterID keeps the cluster ID in dir, replacing the file atomically.
func saveClusterID(dir, id string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: keep the cluster ID: %w", err)
	}
	tmp, err := os.CreateTemp(dir, clusterIDFile+".tmp*")
	if err != nil {
		return fmt.Errorf("agent: keep the cluster ID: %w", err)
	}
	_, werr := tmp.WriteString(id + "\n")
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("agent: keep the cluster ID: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, clusterIDFile)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("agent: keep the cluster ID: %w", err)
	}
	return nil
}
