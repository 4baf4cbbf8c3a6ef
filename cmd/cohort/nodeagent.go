package main

import (
	"context"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/cohort-dev/cohort/node"
)

// nodeAgentFlags are the flags shared by `cohort worker` and `cohort paramserver`.
type nodeAgentFlags struct {
	nodeID     string
	join       string
	storageDir string
	s3         s3Flags
	cpuMillis  int64
	memory     int64
	gpus       int
	labels     []string
	dataRoots  []string
	dataAddr   string
	httpAddr   string
	gossipAddr string
	gossipJoin string
	gossipKey  string
	logLevel   string
	token      string // the global --token (an agent or admin token when ACLs are on)
	insecure   bool
	tokenFile  string          // --token-file: the join token, from a file
	tls        *node.TLSConfig // from --tls-dir and --insecure
}

func (f *nodeAgentFlags) register(cmd *cobra.Command, ps bool) {
	fl := cmd.Flags()
	host, _ := os.Hostname()
	fl.StringVar(&f.nodeID, "node-id", host, "this node's ID")
	fl.StringVar(&f.join, "join", "", "comma-separated gRPC addresses of the coordinators (required; the agent fails over between them)")
	fl.StringVar(&f.storageDir, "storage-dir", "cohort-data/storage", "local storage directory for checkpoints and exports (shared with the cluster; unused with --s3-bucket)")
	f.s3.register(cmd)
	fl.Int64Var(&f.cpuMillis, "cpu-millis", int64(runtime.NumCPU())*1000, "CPU capacity offered, in millicores")
	fl.Int64Var(&f.memory, "memory-bytes", node.TotalMemory(), "memory capacity offered, in bytes")
	fl.IntVar(&f.gpus, "gpus", node.GPUsAuto, "GPUs offered (default: every usable GPU NVML finds; 0: none)")
	fl.StringArrayVar(&f.labels, "label", nil, "node label KEY=VALUE for spec.placement.nodeSelector (repeatable)")
	if ps {
		fl.StringVar(&f.dataAddr, "data-addr", "127.0.0.1:7080", "address the parameter-server shards are served on (reachable by workers)")
	} else {
		fl.StringArrayVar(&f.dataRoots, "data-root", nil, "directory jobs' file:// data may be read from (repeatable; default: the working directory); anything outside is refused")
	}
	fl.StringVar(&f.httpAddr, "http-addr", "", "HTTP address for /metrics, /healthz and /readyz (empty: none)")
	fl.StringVar(&f.gossipAddr, "gossip-addr", "", "memberlist gossip address (empty: no gossip)")
	fl.StringVar(&f.gossipJoin, "gossip-join", "", "comma-separated gossip addresses of the coordinators (seeds)")
	fl.StringVar(&f.gossipKey, "gossip-key", os.Getenv("COHORT_GOSSIP_KEY"), "base64 gossip encryption key (env COHORT_GOSSIP_KEY)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug|info|warn|error")
	fl.BoolVar(&f.insecure, "insecure", false, insecureUsage)
	fl.Bool("https", false, httpsUsage)
	fl.StringVar(&f.tokenFile, "token-file", "", tokenFileUsage)
}

func newWorkerCmd(g *globalFlags) *cobra.Command {
	f := &nodeAgentFlags{}
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker node agent: registers with the coordinators and runs training tasks",
		Example: `  cohort worker --node-id w1 --join 10.0.0.1:7070,10.0.0.2:7070,10.0.0.3:7070 --tls-dir /etc/cohort/tls
  # a CPU-only node in a labelled pool (jobs select it with spec.placement.nodeSelector)
  cohort worker --node-id w2 --join 10.0.0.1:7070 --gpus 0 --label pool=tabular --label zone=eu-1`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.token, f.tls = aclToken(g), withHTTPS(cmd, nodeTLSConfig(g, f.insecure))
			return runNodeAgent(cmd.Context(), f, false)
		},
	}
	f.register(cmd, false)
	return cmd
}

func newParamserverCmd(g *globalFlags) *cobra.Command {
	f := &nodeAgentFlags{}
	cmd := &cobra.Command{
		Use:     "paramserver",
		Short:   "Run a parameter-server node agent: registers with the coordinators and hosts shards",
		Example: "  cohort paramserver --node-id ps1 --data-addr 10.0.0.5:7080 --join 10.0.0.1:7070,10.0.0.2:7070 --tls-dir /etc/cohort/tls",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.token, f.tls = aclToken(g), withHTTPS(cmd, nodeTLSConfig(g, f.insecure))
			return runNodeAgent(cmd.Context(), f, true)
		},
	}
	f.register(cmd, true)
	return cmd
}

func runNodeAgent(ctx context.Context, f *nodeAgentFlags, ps bool) error {
	switch {
	case f.join == "":
		return usageErr("--join is required: the gRPC addresses of the coordinators")
	case f.nodeID == "":
		return usageErr("--node-id is required")
	case f.cpuMillis <= 0 || f.memory <= 0 || f.gpus < node.GPUsAuto:
		return usageErr("--cpu-millis and --memory-bytes must be positive, --gpus not negative")
	}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return usageErr("%v", err)
	}
	join := splitList(f.join)
	for _, a := range join {
		if err := checkHostPort("--join", a); err != nil {
			return err
		}
	}
	key, err := gossipKey(f.gossipKey)
	if err != nil {
		return err
	}
	logger, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	s3cfg, err := f.s3.config(false)
	if err != nil {
		return err
	}

	cfg := node.DefaultConfig()
	a := node.AgentConfig{NodeID: f.nodeID, Join: join, CPUMillis: f.cpuMillis, MemoryBytes: f.memory, GPUs: f.gpus, Labels: labels}
	if ps {
		cfg.ParameterServers = []node.ParameterServerConfig{{AgentConfig: a, DataAddr: f.dataAddr}}
	} else {
		cfg.Workers = []node.WorkerConfig{{AgentConfig: a, DataRoots: f.dataRoots}}
	}
	cfg.Storage = node.StorageConfig{Dir: f.storageDir, S3: s3cfg}
	cfg.HTTPAddr, cfg.Logger, cfg.Token, cfg.TLS = f.httpAddr, logger, f.token, f.tls
	cfg.TLS.JoinTokenFile = f.tokenFile
	if f.tls != nil && (f.tls.JoinToken != "" || f.tokenFile != "") && f.tls.Dir == "" {
		cfg.TLS.Dir = joinedAgentTLSDir(f.nodeID) // where an agent joining with a token keeps its certificate
	}
	cfg.Gossip = node.GossipConfig{BindAddr: f.gossipAddr, Seeds: splitList(f.gossipJoin), Key: key}
	n, err := startNode(ctx, cfg, nodeAgentFlagOf)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return n.Shutdown(context.Background())
}

// nodeAgentFlagOf names the worker and paramserver flag that sets a node.Config field.
var nodeAgentFlagOf = map[string]string{
	"ParameterServers.DataAddr": "--data-addr", "HTTPAddr": "--http-addr", "AgentConfig.Join": "--join", "TLS.Dir": "--tls-dir",
	"Storage.Dir": "--storage-dir", "Storage.S3": "--s3-endpoint/--s3-bucket",
}
