package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/internal/agent"
	"github.com/cohort-dev/cohort/internal/gossip"
	"github.com/cohort-dev/cohort/internal/gpu"
	"github.com/cohort-dev/cohort/internal/psagent"
	"github.com/cohort-dev/cohort/internal/tasklog"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/worker"
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
	dataAddr   string
	httpAddr   string
	gossipAddr string
	gossipJoin string
	gossipKey  string
	logLevel   string
	token      string // the global --token (an agent or admin token when ACLs are on)
}

func (f *nodeAgentFlags) register(cmd *cobra.Command, ps bool) {
	fl := cmd.Flags()
	host, _ := os.Hostname()
	fl.StringVar(&f.nodeID, "node-id", host, "this node's ID")
	fl.StringVar(&f.join, "join", "", "comma-separated gRPC addresses of the coordinators (required; the agent fails over between them)")
	fl.StringVar(&f.storageDir, "storage-dir", "cohort-data/storage", "local storage directory for checkpoints and exports (shared with the cluster; unused with --s3-bucket)")
	f.s3.register(cmd)
	fl.Int64Var(&f.cpuMillis, "cpu-millis", int64(runtime.NumCPU())*1000, "CPU capacity offered, in millicores")
	fl.Int64Var(&f.memory, "memory-bytes", totalMemory(), "memory capacity offered, in bytes")
	fl.IntVar(&f.gpus, "gpus", gpusAuto, "GPUs offered (default: every usable GPU NVML finds; 0: none)")
	fl.StringArrayVar(&f.labels, "label", nil, "node label KEY=VALUE for spec.placement.nodeSelector (repeatable)")
	if ps {
		fl.StringVar(&f.dataAddr, "data-addr", "127.0.0.1:7080", "address the parameter-server shards are served on (reachable by workers)")
	}
	fl.StringVar(&f.httpAddr, "http-addr", "", "HTTP address for /metrics, /healthz and /readyz (empty: none)")
	fl.StringVar(&f.gossipAddr, "gossip-addr", "", "memberlist gossip address (empty: no gossip)")
	fl.StringVar(&f.gossipJoin, "gossip-join", "", "comma-separated gossip addresses of the coordinators (seeds)")
	fl.StringVar(&f.gossipKey, "gossip-key", os.Getenv("COHORT_GOSSIP_KEY"), "base64 gossip encryption key (env COHORT_GOSSIP_KEY)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug|info|warn|error")
}

func newWorkerCmd(g *globalFlags) *cobra.Command {
	f := &nodeAgentFlags{}
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker node agent: registers with the coordinators and runs training tasks",
		Example: `  cohort worker --node-id w1 --join 10.0.0.1:7070,10.0.0.2:7070,10.0.0.3:7070
  # a CPU-only node in a labelled pool (jobs select it with spec.placement.nodeSelector)
  cohort worker --node-id w2 --join 10.0.0.1:7070 --gpus 0 --label pool=tabular --label zone=eu-1`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.token = g.token
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
		Example: "  cohort paramserver --node-id ps1 --data-addr 10.0.0.5:7080 --join 10.0.0.1:7070,10.0.0.2:7070",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.token = g.token
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
	case f.cpuMillis <= 0 || f.memory <= 0 || f.gpus < gpusAuto:
		return usageErr("--cpu-millis and --memory-bytes must be positive, --gpus not negative")
	}
	labels, err := parseLabels(f.labels)
	if err != nil {
		return usageErr("%v", err)
	}
	for _, a := range splitList(f.join) {
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
	role, roleName := cohortv1.NodeRole_NODE_ROLE_WORKER, "worker"
	if ps {
		role, roleName = cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, "paramserver"
	}
	logger = logger.With("role", roleName, "node", f.nodeID)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	s3cfg, err := f.s3.config(false)
	if err != nil {
		return err
	}
	var store storage.Blob
	if s3cfg != nil {
		s3, err := storage.NewS3(ctx, *s3cfg)
		if err != nil {
			return usageErr("--s3-endpoint/--s3-bucket: %v", err)
		}
		store = s3
	} else if store, err = storage.NewLocal(f.storageDir); err != nil {
		return usageErr("--storage-dir: %v", err)
	}
	sm, err := storage.NewMetrics(reg)
	if err != nil {
		return err
	}
	store = storage.Instrument(store, sm)
	capacity := nodeGPUs(f.gpus, gpu.Discover, logger)
	capacity.CpuMillis, capacity.MemoryBytes = f.cpuMillis, f.memory
	node := &cohortv1.Node{
		Id: f.nodeID, Name: f.nodeID, Roles: []cohortv1.NodeRole{role},
		Capacity: capacity, Labels: labels,
	}
	var runner agent.Runner
	taskLogs := tasklog.Config{Store: store, Logger: logger.With("component", "tasklog")} // `cohort job logs`
	if ps {
		pcfg := paramserver.DefaultServerConfig()
		router := tasklog.NewRouter(logger.Handler(), taskLogs) // shard logs also go to their task logs
		pcfg.Logger, pcfg.Registry = slog.New(router), reg
		srv := paramserver.NewServer(pcfg)
		lis, err := net.Listen("tcp", f.dataAddr)
		if err != nil {
			return usageErr("--data-addr %s: %v", f.dataAddr, err)
		}
		gs := grpc.NewServer(paramserver.ServerOptions()...)
		srv.Register(gs)
		go func() { _ = gs.Serve(lis) }()
		defer gs.Stop()
		node.DataAddress = lis.Addr().String()
		if runner, err = psagent.New(psagent.Config{Server: srv, Store: store, Logger: logger, TaskLogs: router}); err != nil {
			return err
		}
	} else {
		wm, err := worker.NewMetrics(reg)
		if err != nil {
			return err
		}
		if runner, err = worker.NewRunner(worker.RunnerConfig{Store: store, Logger: logger, S3: s3cfg, Metrics: wm, TaskLogs: &taskLogs}); err != nil {
			return err
		}
	}

	var started atomic.Pointer[agent.Agent] // set once the agent exists; /readyz reads it
	if f.httpAddr != "" {
		hl, err := net.Listen("tcp", f.httpAddr)
		if err != nil {
			return usageErr("--http-addr %s: %v", f.httpAddr, err)
		}
		ready := func() bool {
			a := started.Load()
			if a == nil || ctx.Err() != nil {
				return false
			}
			select {
			case <-a.Ready():
				return true
			default:
				return false
			}
		}
		hs := &http.Server{Handler: nodeAgentMux(reg, ready), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(hl) }()
		defer hs.Close()
	}

	if f.gossipAddr != "" {
		gcfg := gossip.DefaultConfig()
		gcfg.Name, gcfg.BindAddr, gcfg.Seeds, gcfg.SecretKey = f.nodeID, f.gossipAddr, splitList(f.gossipJoin), key
		gcfg.Meta = gossip.Meta{Roles: []string{roleName}, GRPCAddr: node.DataAddress, NodeID: f.nodeID}
		gcfg.Logger, gcfg.Registry = logger, reg
		g, err := gossip.New(gcfg)
		if err != nil {
			return fmt.Errorf("gossip: %w", err)
		}
		defer func() { _ = g.Shutdown() }()
	}

	// One connection over every coordinator: it fails over between them, and any
	// coordinator serves the agent (writes are forwarded to the leader).
	conn, err := dial(f.join, tokenDialOptions(f.token)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	acfg := agent.DefaultConfig()
	acfg.Conn, acfg.Node, acfg.Logger, acfg.Runners = conn, node, logger, []agent.Runner{runner}
	a, err := agent.New(acfg)
	if err != nil {
		return err
	}
	started.Store(a)
	logger.Info("node agent starting", "coordinators", f.join, "data_addr", node.DataAddress)
	if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("node agent: %w", err)
	}
	return nil
}

// nodeAgentMux serves a node agent's HTTP endpoints: /metrics; /healthz, 200 while the
// process serves HTTP (a liveness probe); /readyz, 200 once the node has registered with
// a coordinator and 503 before that or while shutting down (a readiness probe).
func nodeAgentMux(reg *prometheus.Registry, ready func() bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not registered with a coordinator", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
