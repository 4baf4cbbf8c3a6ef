package node

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/internal/agent"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
)

// Config says which roles a Node runs and how. A section left empty (nil Coordinator, no
// Workers, no ParameterServers) is a role the node does not run.
type Config struct {
	// Coordinator, when set, makes the node a Raft voter with the gRPC API (JobService,
	// AgentService, ClusterService) and, on HTTPAddr, the dashboard.
	Coordinator *CoordinatorConfig
	// Workers are worker node agents, each registered as its own node (cohort dev runs
	// several in one process; cohort worker runs one).
	Workers []WorkerConfig
	// ParameterServers are parameter-server node agents, each with its own data address.
	ParameterServers []ParameterServerConfig

	// Storage is where every role of the node keeps checkpoints, exports, reports and
	// task logs. Node agents need it; a coordinator without it refuses `job logs`.
	Storage StorageConfig
	// HTTPAddr serves /metrics, /healthz and /readyz (and, with a coordinator, the
	// dashboard at /); empty: no HTTP.
	HTTPAddr string
	// Gossip joins a memberlist pool when its BindAddr is set.
	Gossip GossipConfig
	// Token is the ACL token this node presents to coordinators: a joining coordinator's
	// (admin) and the node agents' (agent). Empty: none, except that agents of this
	// node's own coordinator then present a token its ACL mints.
	Token string
	// HeartbeatInterval is how often the node agents heartbeat (0: the agent default,
	// DefaultHeartbeatInterval).
	HeartbeatInterval time.Duration
	// Logger receives every role's logs (nil: slog.Default()).
	Logger *slog.Logger

	// TLS is where the node's certificates are: every connection it serves or opens (the
	// gRPC API, Raft, forwarding and joins, node agents to coordinators, workers to
	// parameter-server shards) is then mutual TLS. nil is the zero TLSConfig.
	TLS *TLSConfig
}

// TLSConfig is where a node's TLS material lives. A node with material serves and calls
// over mutual TLS only; a node without it speaks plaintext, which it refuses off loopback
// unless Insecure.
type TLSConfig struct {
	// Dir holds ca.crt (the cluster CA's certificate), node.crt and node.key (this
	// node's certificate chain and key, role coordinator for a coordinator, agent for a
	// node agent). A coordinator that holds the CA also keeps ca.key there (mode 0600):
	// it then issues its own certificate (and its in-process agents') at every start,
	// renews them in process, and writes an admin client certificate for the operator
	// (admin.crt, admin.key). A coordinator that bootstraps with an empty Dir creates the
	// CA there.
	//
	// Empty: <Coordinator.DataDir>/tls for a coordinator (when it holds no material
	// and does not bootstrap, it runs without TLS); no TLS for a node agent.
	Dir string
	// Insecure turns TLS off: every connection is plaintext, even off loopback (and
	// even with material in Dir). A node that serves or calls a non-loopback address
	// this way logs a warning every minute.
	Insecure bool
	// HTTPS serves HTTPAddr (metrics, health, dashboard) over TLS with the node's
	// certificate from the cluster CA; clients need no certificate (scrapers and
	// browsers verify the server with ca.crt). Ignored without TLS material.
	HTTPS bool
	// JoinTokenFile, when JoinToken is empty, is a file holding the join token (read
	// when the node enrolls, waiting for it to appear): keeps the token off the command
	// line, and lets a deployment hand it over on a shared volume.
	JoinTokenFile string
	// JoinTokenDir, on a coordinator that bootstraps with the CA, is a directory where it
	// writes coordinator.token and agent.token (mode 0600, never expiring, recorded in
	// Raft): join tokens for a deployment's other voters and node agents (docker
	// compose). Revoke them with `cohort token revoke` once every node has joined.
	JoinTokenDir string
	// JoinToken (COH1...), when set and Dir holds no material yet, enrolls the node
	// before it starts: a coordinator with Coordinator.Join, a node agent with its Join
	// addresses (it then needs Dir). The CA is fetched, its hash checked against the
	// token, and a certificate (and, for a coordinator token, the CA's key) received.
	JoinToken string
}

// CoordinatorConfig is the coordinator role: one Raft voter.
type CoordinatorConfig struct {
	// NodeID is the voter's stable Raft server ID. Required.
	NodeID string
	// DataDir holds the Raft log, stable store and snapshots. Required.
	DataDir string
	// Ephemeral keeps the state in a new temporary directory inside DataDir (created if
	// needed), removed at Shutdown: `cohort dev --run`.
	Ephemeral bool
	// RaftAddr is the Raft TCP address (port 0 picks one).
	RaftAddr string
	// GRPCAddr is the gRPC API address (port 0 picks one); it is what clients, the other
	// voters and the node agents reach.
	GRPCAddr string
	// Bootstrap starts a new cluster with this voter as its first member.
	Bootstrap bool
	// Join lists the gRPC addresses of running coordinators to join (when DataDir holds
	// no state yet). Bootstrap and Join are mutually exclusive; a voter with neither
	// needs state in DataDir.
	Join []string

	// RaftLogStore is server.LogStoreWAL or server.LogStoreBoltDB; empty: what DataDir
	// holds, raft-wal when new.
	RaftLogStore string
	// Raft timing (see server.Config).
	RaftHeartbeatTimeout   time.Duration
	RaftElectionTimeout    time.Duration
	RaftLeaderLeaseTimeout time.Duration
	// RaftLogLevel is the lowest level of raft's own log lines that is passed on.
	RaftLogLevel slog.Level
	// HeartbeatTTL is how long the leader waits for a node's heartbeat before it marks
	// the node down; at least three node-agent heartbeat intervals.
	HeartbeatTTL time.Duration

	// ACLTokensFile, when set, turns ACLs on: every gRPC call needs a token from this
	// YAML file, and the dashboard asks for one. ReloadACLTokens reads it again.
	ACLTokensFile string
	// ParseSpec parses a submitted spec into a job template (nil: ParseJobSpec).
	ParseSpec func(spec []byte) (*cohortv1.Job, error)
	// Mutate, when set, changes the server config last (tests: clustertest.TestRaftConfig).
	Mutate func(*server.Config)
}

// AgentConfig is what every node agent has, worker or parameter server.
type AgentConfig struct {
	// NodeID is the node's ID. Required.
	NodeID string
	// Join lists the coordinators' gRPC addresses; the agent fails over between them.
	// Empty: this node's own coordinator.
	Join []string
	// CPUMillis and MemoryBytes are the capacity offered.
	CPUMillis   int64
	MemoryBytes int64
	// GPUs is the number of GPUs offered; GPUsAuto offers every usable GPU NVML finds.
	GPUs int
	// Labels are the node's labels (spec.placement.nodeSelector matches them).
	Labels map[string]string
}

// WorkerConfig is a worker node agent: it runs training tasks.
type WorkerConfig struct {
	AgentConfig
	// DataRoots are the directories jobs' file:// data may name; a path outside them
	// (after resolving symlinks and "..") is refused before anything is opened. Empty:
	// the process's working directory (worker.DefaultDataRoots).
	DataRoots []string
	// Observer, when set, receives every task report the worker sends (tests).
	Observer func(*cohortv1.TaskReport)
	// ProgressInterval and ProgressEverySteps set how often a job's chief reports
	// progress within an epoch (worker.TrainerConfig; zero: every 2 s).
	ProgressInterval   time.Duration
	ProgressEverySteps int
}

// ParameterServerConfig is a parameter-server node agent: it hosts shards.
type ParameterServerConfig struct {
	AgentConfig
	// DataAddr is the address the shards are served on (reachable by workers; port 0
	// picks one).
	DataAddr string
}

// StorageConfig names the node's storage: an S3 bucket when S3 is set, else a local
// directory; neither: no storage.
type StorageConfig struct {
	// Dir is a local storage directory (created if needed).
	Dir string
	// S3 puts all storage in a bucket; workers also read s3:// data with it.
	S3 *storage.S3Config
}

// GossipConfig joins the node to a memberlist pool (a hint only; see internal/gossip).
type GossipConfig struct {
	// BindAddr is the gossip address; empty: no gossip.
	BindAddr string
	// Seeds are the gossip addresses of other members (the coordinators').
	Seeds []string
	// Key encrypts gossip (16, 24 or 32 bytes; nil: plaintext).
	Key []byte
}

// GPUsAuto offers every usable GPU NVML finds (AgentConfig.GPUs).
const GPUsAuto = -1

// DefaultHeartbeatInterval is the node agents' default heartbeat interval.
var DefaultHeartbeatInterval = agent.DefaultConfig().HeartbeatInterval

// DefaultConfig returns a Config that runs no role yet and serves no HTTP; add sections
// from DefaultCoordinatorConfig, DefaultWorkerConfig and DefaultParameterServerConfig.
func DefaultConfig() Config { return Config{} }

// DefaultCoordinatorConfig returns a coordinator section with LAN-tuned Raft timing;
// NodeID and DataDir still need to be set.
func DefaultCoordinatorConfig() CoordinatorConfig {
	d := server.DefaultConfig()
	return CoordinatorConfig{
		RaftAddr: "127.0.0.1:7000", GRPCAddr: "127.0.0.1:7070",
		RaftHeartbeatTimeout: d.RaftHeartbeatTimeout, RaftElectionTimeout: d.RaftElectionTimeout,
		RaftLeaderLeaseTimeout: d.RaftLeaderLeaseTimeout, RaftLogLevel: d.RaftLogLevel, HeartbeatTTL: d.HeartbeatTTL,
	}
}

// DefaultAgentConfig offers the whole machine: every CPU, all memory, every usable GPU.
func DefaultAgentConfig() AgentConfig {
	return AgentConfig{CPUMillis: int64(runtime.NumCPU()) * 1000, MemoryBytes: TotalMemory(), GPUs: GPUsAuto}
}

// DefaultWorkerConfig returns a worker section offering the whole machine; NodeID and
// Join still need to be set.
func DefaultWorkerConfig() WorkerConfig { return WorkerConfig{AgentConfig: DefaultAgentConfig()} }

// DefaultParameterServerConfig returns a parameter-server section offering the whole
// machine on 127.0.0.1:7080; NodeID and Join still need to be set.
func DefaultParameterServerConfig() ParameterServerConfig {
	return ParameterServerConfig{AgentConfig: DefaultAgentConfig(), DataAddr: "127.0.0.1:7080"}
}

// DevConfig is `cohort dev`: a single-voter coordinator that bootstraps (gRPC on
// 127.0.0.1:7070, HTTP on 127.0.0.1:7071), ps parameter-server agents and workers worker
// agents, all on loopback in one process, with storage in dataDir/storage, coordinator
// state in dataDir/coordinator, and the cluster CA and the operator's client credentials
// in dataDir/tls. The machine's CPUs and memory are shared out among the agents; no GPUs
// are offered.
func DevConfig(workers, ps int, dataDir string) Config {
	cfg := DefaultConfig()
	c := DefaultCoordinatorConfig()
	c.NodeID, c.DataDir, c.Bootstrap = "dev-coordinator", filepath.Join(dataDir, "coordinator"), true
	c.RaftAddr = "127.0.0.1:0"
	// A single voter always starts with an election: raft's warnings about it are noise.
	c.RaftLogLevel = slog.LevelError
	cfg.Coordinator = &c
	cfg.HTTPAddr = "127.0.0.1:7071"
	cfg.Storage.Dir = filepath.Join(dataDir, "storage")
	// Its own CA, kept across runs (the operator's credentials stay valid), and mutual
	// TLS on every connection, as in a real cluster.
	cfg.TLS = &TLSConfig{Dir: filepath.Join(dataDir, "tls")}
	ncpu := int64(runtime.NumCPU())
	mem := TotalMemory() / int64(max(1, ps+workers))
	for i := range ps {
		p := ParameterServerConfig{DataAddr: "127.0.0.1:0", AgentConfig: AgentConfig{
			NodeID: fmt.Sprintf("dev-ps-%d", i), CPUMillis: ncpu * 1000, MemoryBytes: mem,
		}}
		cfg.ParameterServers = append(cfg.ParameterServers, p)
	}
	for i := range workers {
		w := WorkerConfig{AgentConfig: AgentConfig{
			NodeID: fmt.Sprintf("dev-worker-%d", i), CPUMillis: max(1000, ncpu*1000/int64(workers)), MemoryBytes: mem,
		}}
		cfg.Workers = append(cfg.Workers, w)
	}
	return cfg
}

// TotalMemory is the machine's physical memory in bytes (8 GiB when unknown).
func TotalMemory() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 8 << 30
	}
	return int64(si.Totalram) * int64(si.Unit)
}

// ConfigError is a Config value the node cannot use: a missing or invalid field, an
// address it cannot listen on, a directory or bucket it cannot open, a tokens file that
// does not validate. cmd/ maps Field back to the flag that set it.
type ConfigError struct {
	// Field is the Config field: "Coordinator.GRPCAddr", "ParameterServers.DataAddr",
	// "Storage.Dir", "Storage.S3", "HTTPAddr", ...
	Field string
	// Value is the offending value where the message should name it (an address, a
	// file); empty otherwise.
	Value string
	Err   error
}

func (e *ConfigError) Error() string {
	if e.Value != "" {
		return fmt.Sprintf("%s %s: %v", e.Field, e.Value, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Field, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(field, value string, err error) error {
	return &ConfigError{Field: field, Value: value, Err: err}
}

// ErrNoClusterState is returned by Start for a coordinator whose DataDir holds no state
// and that neither bootstraps nor joins.
var ErrNoClusterState = errors.New("holds no cluster state: bootstrap a new cluster or join one")

// JoinError is a coordinator's failed join.
type JoinError struct {
	// Addrs are the coordinators it tried.
	Addrs []string
	// Refused is true when the cluster answered and refused (the address is not a
	// coordinator, the ID is taken, the request is invalid): bad input, not an outage.
	Refused bool
	Err     error
}

func (e *JoinError) Error() string { return fmt.Sprintf("join %v: %v", e.Addrs, e.Err) }
func (e *JoinError) Unwrap() error { return e.Err }

// validate checks what New can check without I/O.
func (c *Config) validate() error {
	if c.Coordinator == nil && len(c.Workers) == 0 && len(c.ParameterServers) == 0 {
		return errors.New("node: config: no role (Coordinator, Workers or ParameterServers)")
	}
	if co := c.Coordinator; co != nil {
		switch {
		case co.NodeID == "":
			return configErr("Coordinator.NodeID", "", errors.New("required"))
		case co.DataDir == "":
			return configErr("Coordinator.DataDir", "", errors.New("required"))
		case co.Bootstrap && len(co.Join) > 0:
			return configErr("Coordinator.Join", "", errors.New("bootstrap and join are mutually exclusive"))
		}
		hb := c.HeartbeatInterval
		if hb <= 0 {
			hb = DefaultHeartbeatInterval
		}
		if co.HeartbeatTTL < 3*hb {
			// A TTL under three heartbeat intervals marks live nodes down (and restarts
			// their jobs) whenever one heartbeat is late.
			return configErr("Coordinator.HeartbeatTTL", co.HeartbeatTTL.String(),
				fmt.Errorf("must be at least %s (three node-agent heartbeat intervals)", 3*hb))
		}
	}
	agents := agentsOf(c)
	for _, a := range agents {
		switch {
		case a.NodeID == "":
			return configErr("AgentConfig.NodeID", "", errors.New("required"))
		case len(a.Join) == 0 && c.Coordinator == nil:
			return configErr("AgentConfig.Join", "", fmt.Errorf("node %s: no coordinator to join", a.NodeID))
		case a.CPUMillis <= 0 || a.MemoryBytes <= 0 || a.GPUs < GPUsAuto:
			return configErr("AgentConfig", a.NodeID, errors.New("CPUMillis and MemoryBytes must be positive, GPUs not negative"))
		}
	}
	if len(agents) > 0 && c.Storage.Dir == "" && c.Storage.S3 == nil {
		return configErr("Storage", "", errors.New("node agents need storage (Dir or S3)"))
	}
	return nil
}

// agentsOf lists the node agents of c, workers first.
func agentsOf(c *Config) []AgentConfig {
	agents := make([]AgentConfig, 0, len(c.Workers)+len(c.ParameterServers))
	for _, w := range c.Workers {
		agents = append(agents, w.AgentConfig)
	}
	for _, p := range c.ParameterServers {
		agents = append(agents, p.AgentConfig)
	}
	return agents
}
