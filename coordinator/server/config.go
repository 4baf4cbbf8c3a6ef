package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a coordinator Server.
type Config struct {
	// NodeID is this voter's Raft server ID; it must be stable across restarts.
	NodeID string
	// DataDir holds the Raft log and stable store (raft-wal/ or raft.db) and the snapshots.
	DataDir string
	// RaftBindAddr is the TCP address the Raft transport listens on ("127.0.0.1:0"
	// picks a free port).
	RaftBindAddr string
	// RaftAdvertiseAddr is the address peers reach this voter at; empty means the
	// listener's address (which must then be advertisable, not 0.0.0.0).
	RaftAdvertiseAddr string
	// GRPCAddr is the address this coordinator's gRPC API is reachable at. The leader
	// records it in the replicated state, so followers can forward calls to it. Empty
	// means this voter is never forwarded to (single-voter setups).
	GRPCAddr string
	// RaftTLS, when set, runs the Raft transport over mutual TLS: only peers whose
	// certificate, from RaftTLS.CA, names role coordinator may connect, and this voter
	// connects only to such peers.
	RaftTLS *TLSConfig
	// Transport, when set, replaces the TCP Raft transport (tests use raft's in-memory
	// transport to partition a cluster); RaftBindAddr and RaftAdvertiseAddr are then
	// ignored.
	Transport raft.Transport
	// Bootstrap makes this voter bootstrap a single-voter cluster when DataDir holds no
	// Raft state yet. It is ignored when state exists.
	Bootstrap bool

	// Logger receives the server's logs (and raft's, at RaftLogLevel and above); nil
	// means slog.Default().
	Logger *slog.Logger
	// RaftLogLevel is the lowest level of raft's own log lines that is passed on.
	RaftLogLevel slog.Level
	// Registry, when set, receives the server's Prometheus metrics (cohort_*).
	Registry prometheus.Registerer

	// HeartbeatTTL is how long the leader waits for a READY node's heartbeat before it
	// marks the node DOWN.
	HeartbeatTTL time.Duration
	// SuspectGrace is how long after its last heartbeat a node that a parameter server
	// reported a lost worker session of is marked DOWN, unless it heartbeats meanwhile
	// (agents heartbeat every 2 s; see SuspectSessionLoss). At most HeartbeatTTL.
	SuspectGrace time.Duration

	// Clock is the time source of the leader's deadlines (heartbeat TTLs, drain
	// deadlines) and of the time stamped on proposed commands; nil means RealClock.
	// Raft's own timeouts always run on real time. Tests set a FakeClock.
	Clock Clock

	// RaftLogStore is the durable log store: LogStoreWAL or LogStoreBoltDB; empty picks
	// what DataDir already holds, raft-wal for a new directory.
	RaftLogStore string

	// Raft timing, tuned for a LAN; see raft.Config for their meaning.
	RaftHeartbeatTimeout   time.Duration
	RaftElectionTimeout    time.Duration
	RaftLeaderLeaseTimeout time.Duration
	RaftCommitTimeout      time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot trigger a new
	// one; SnapshotInterval is how often that is checked.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration

	// MaxInflightApplies bounds the Raft applies the server keeps in flight at once.
	MaxInflightApplies int
	// ApplyEnqueueTimeout bounds how long one apply may wait to enter raft's queue.
	ApplyEnqueueTimeout time.Duration
	// SchedulerRetryInterval is how soon the scheduling loop retries after a failed pass
	// (otherwise it runs only when the state changes).
	SchedulerRetryInterval time.Duration
}

// DefaultConfig returns a Config with LAN-tuned defaults; NodeID, DataDir and
// RaftBindAddr still need to be set.
//
// Raft: a follower starts an election after 400-800 ms without the leader, so a new
// leader is in place within about 1 s of a failure; the leader steps down after 350 ms
// without a quorum's contact. 250/250/200 ms flapped on a busy 2-core host with no
// fault at all (#22: three step-downs in 8 s, "contact 217 ms > 200 ms lease").
func DefaultConfig() Config {
	return Config{
		RaftBindAddr:           "127.0.0.1:0",
		RaftLogLevel:           slog.LevelWarn,
		HeartbeatTTL:           15 * time.Second,
		SuspectGrace:           2500 * time.Millisecond,
		RaftHeartbeatTimeout:   400 * time.Millisecond,
		RaftElectionTimeout:    400 * time.Millisecond,
		RaftLeaderLeaseTimeout: 350 * time.Millisecond,
		RaftCommitTimeout:      20 * time.Millisecond,
		SnapshotThreshold:      8192,
		SnapshotInterval:       2 * time.Minute,
		MaxInflightApplies:     128,
		ApplyEnqueueTimeout:    5 * time.Second,
		SchedulerRetryInterval: time.Second,
	}
}

// withDefaults fills zero fields from DefaultConfig and checks the required ones.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.NodeID == "" {
		return c, errors.New("server: config: NodeID is required")
	}
	if c.DataDir == "" {
		return c, errors.New("server: config: DataDir is required")
	}
	if c.RaftBindAddr == "" {
		c.RaftBindAddr = d.RaftBindAddr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur(&c.HeartbeatTTL, d.HeartbeatTTL)
	setDur(&c.SuspectGrace, min(d.SuspectGrace, c.HeartbeatTTL))
	setDur(&c.RaftHeartbeatTimeout, d.RaftHeartbeatTimeout)
	setDur(&c.RaftElectionTimeout, d.RaftElectionTimeout)
	setDur(&c.RaftLeaderLeaseTimeout, d.RaftLeaderLeaseTimeout)
	setDur(&c.RaftCommitTimeout, d.RaftCommitTimeout)
	setDur(&c.SnapshotInterval, d.SnapshotInterval)
	setDur(&c.ApplyEnqueueTimeout, d.ApplyEnqueueTimeout)
	setDur(&c.SchedulerRetryInterval, d.SchedulerRetryInterval)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.MaxInflightApplies <= 0 {
		c.MaxInflightApplies = d.MaxInflightApplies
	}
	if c.RaftLeaderLeaseTimeout > c.RaftHeartbeatTimeout {
		return c, fmt.Errorf("server: config: RaftLeaderLeaseTimeout (%s) exceeds RaftHeartbeatTimeout (%s)",
			c.RaftLeaderLeaseTimeout, c.RaftHeartbeatTimeout)
	}
	if c.RaftElectionTimeout < c.RaftHeartbeatTimeout {
		return c, fmt.Errorf("server: config: RaftElectionTimeout (%s) is below RaftHeartbeatTimeout (%s)",
			c.RaftElectionTimeout, c.RaftHeartbeatTimeout)
	}
	return c, nil
}
