package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/server"
	"github.com/cohort-dev/cohort/internal/agent"
	"github.com/cohort-dev/cohort/internal/psagent"
	"github.com/cohort-dev/cohort/internal/tasklog"
	"github.com/cohort-dev/cohort/jobs"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/storage"
	"github.com/cohort-dev/cohort/web"
	"github.com/cohort-dev/cohort/worker"
)

type devFlags struct {
	dataDir  string
	workers  int
	ps       int
	grpcAddr string
	httpAddr string
	run      string
	logLevel string
	s3       s3Flags
}

func newDevCmd(g *globalFlags) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded cluster in one process (coordinator, parameter servers, workers, local storage)",
		Long: `dev runs a single-voter coordinator, N parameter-server nodes and M worker nodes in one
process, all talking real gRPC over loopback, with a local storage directory.

Without --run it serves until interrupted (submit jobs with 'cohort job submit').
With --run FILE it runs that one job to the end, prints per-epoch progress on stderr and
the result object as the last line on stdout, and exits 0 only if the job succeeded.`,
		Example: `  cohort dev --run jobs/examples/attrition-mlp.yaml -o json
  cohort dev --workers 4 --ps 2 --data-dir ./cohort-data`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), g, f) },
	}
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "cohort-data", "directory for storage (checkpoints, exports) and coordinator state")
	cmd.Flags().IntVar(&f.workers, "workers", 2, "number of worker nodes")
	cmd.Flags().IntVar(&f.ps, "ps", 2, "number of parameter-server nodes")
	cmd.Flags().StringVar(&f.grpcAddr, "grpc-addr", "", "coordinator gRPC address (default 127.0.0.1:7070; with --run a free loopback port)")
	cmd.Flags().StringVar(&f.httpAddr, "http-addr", "", "HTTP address for /metrics and /healthz (default 127.0.0.1:7071; with --run a free loopback port)")
	cmd.Flags().StringVar(&f.run, "run", "", "run this job spec to the end, then exit")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "", "debug|info|warn|error (default warn with --run, info otherwise)")
	f.s3.register(cmd)
	return cmd
}

func runDev(ctx context.Context, g *globalFlags, f *devFlags) error {
	if err := checkOutput(g); err != nil {
		return err
	}
	if f.workers < 1 || f.workers > 64 {
		return usageErr("--workers: must be between 1 and 64, got %d", f.workers)
	}
	if f.ps < 1 || f.ps > 64 {
		return usageErr("--ps: must be between 1 and 64, got %d", f.ps)
	}
	level := f.logLevel
	if level == "" {
		level = "info"
		if f.run != "" {
			level = "warn"
		}
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return usageErr("--log-level: %q is not one of debug, info, warn, error", level)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	slog.SetDefault(logger)

	s3cfg, err := f.s3.config(true)
	if err != nil {
		return err
	}
	var raw []byte
	if f.run != "" {
		var spec *jobs.TrainingJob
		var err error
		if raw, spec, err = readSpec(f.run); err != nil {
			return err
		}
		if err := checkLocalInputs(spec); err != nil {
			return err
		}
		if err := worker.Preflight(ctx, spec, s3cfg); err != nil {
			return usageErr("job spec %s: %v", f.run, err)
		}
	}
	cfg := devConfig{
		DataDir: f.dataDir, Workers: f.workers, PS: f.ps,
		GRPCAddr: f.grpcAddr, HTTPAddr: f.httpAddr, Logger: logger, Ephemeral: f.run != "", S3: s3cfg,
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:7070"
		if cfg.Ephemeral {
			cfg.GRPCAddr = "127.0.0.1:0"
		}
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:7071"
		if cfg.Ephemeral {
			cfg.HTTPAddr = "127.0.0.1:0"
		}
	}
	c, err := startDev(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if f.run == "" {
		fmt.Fprintf(os.Stderr, "cohort dev: coordinator on %s, metrics on http://%s/metrics, storage in %s; Ctrl-C to stop\n",
			c.GRPCAddr, c.HTTPAddr, c.StorageDir)
		<-ctx.Done()
		return nil
	}
	conn, err := dial(c.GRPCAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	return submitAndReport(ctx, cohortv1.NewJobServiceClient(conn), raw, true, g.output)
}

// checkLocalInputs makes sure the spec's local file:// inputs exist before a job is
// submitted by `dev --run`.
func checkLocalInputs(spec *jobs.TrainingJob) error {
	d := spec.Spec.Data
	var problems []string
	for _, in := range []struct{ field, uri string }{
		{"spec.data.train", d.Train}, {"spec.data.validation.uri", d.Validation.URI}, {"spec.data.test", d.Test},
	} {
		if in.uri == "" {
			continue
		}
		scheme, _, path, err := jobs.ParseURI(in.uri)
		if err != nil || scheme != "file" {
			continue
		}
		if st, err := os.Stat(path); err != nil {
			problems = append(problems, fmt.Sprintf("%s: file %s does not exist or cannot be read", in.field, path))
		} else if st.IsDir() {
			problems = append(problems, fmt.Sprintf("%s: %s is a directory, not a file", in.field, path))
		}
	}
	if len(problems) > 0 {
		return usageErr("%s", strings.Join(problems, "\n"))
	}
	return nil
}

// devConfig configures an embedded cluster.
type devConfig struct {
	DataDir   string
	Workers   int
	PS        int
	GRPCAddr  string
	HTTPAddr  string
	Logger    *slog.Logger
	Ephemeral bool // coordinator state in a temporary directory, removed on Close
	// Observer receives every task report a worker sends (tests).
	Observer func(*cohortv1.TaskReport)
	// S3, when set, puts all storage in that bucket and lets workers read s3:// data.
	S3 *storage.S3Config
}

// devCluster is a running embedded cluster.
type devCluster struct {
	GRPCAddr   string
	HTTPAddr   string
	StorageDir string
	Store      storage.Blob
	Server     *server.Server

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closers []func()
	once    sync.Once
}

// startDev starts a coordinator, PS nodes and worker nodes, all on loopback gRPC, and
// returns once every node has registered.
func startDev(parent context.Context, cfg devConfig) (c *devCluster, err error) {
	log := cfg.Logger
	ctx, cancel := context.WithCancel(parent)
	c = &devCluster{cancel: cancel}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	var store storage.Blob
	if cfg.S3 != nil {
		s3, err := storage.NewS3(ctx, *cfg.S3)
		if err != nil {
			return c, usageErr("--s3-endpoint/--s3-bucket: %v", err)
		}
		store, c.StorageDir = s3, s3.URI("")
	} else {
		storageDir := filepath.Join(cfg.DataDir, "storage")
		local, err := storage.NewLocal(storageDir)
		if err != nil {
			return c, usageErr("--data-dir: %v", err)
		}
		store, c.StorageDir = local, storageDir
	}
	c.Store = store

	raftDir := filepath.Join(cfg.DataDir, "coordinator")
	if cfg.Ephemeral {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return c, usageErr("--data-dir: %v", err)
		}
		if raftDir, err = os.MkdirTemp(cfg.DataDir, "coordinator-run-"); err != nil {
			return c, fmt.Errorf("coordinator state directory: %w", err)
		}
		dir := raftDir
		c.closers = append(c.closers, func() { _ = os.RemoveAll(dir) })
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sm, err := storage.NewMetrics(reg)
	if err != nil {
		return c, err
	}
	store = storage.Instrument(store, sm) // the roles' storage traffic shows on /metrics

	scfg := server.DefaultConfig()
	scfg.NodeID = "dev-coordinator"
	scfg.DataDir = raftDir
	scfg.RaftBindAddr = "127.0.0.1:0"
	scfg.Bootstrap = true
	scfg.Logger = log.With("role", "coordinator")
	scfg.Registry = reg
	// A single voter always starts with an election: raft's warnings about it are noise.
	scfg.RaftLogLevel = slog.LevelError
	srv, err := server.New(scfg)
	if err != nil {
		return c, fmt.Errorf("start coordinator: %w", err)
	}
	c.Server = srv
	c.closers = append(c.closers, func() { _ = srv.Shutdown() })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = srv.WaitForLeader(wctx)
	wcancel()
	if err != nil {
		return c, fmt.Errorf("coordinator: no leader: %w", err)
	}

	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return c, usageErr("--grpc-addr %s: %v", cfg.GRPCAddr, err)
	}
	c.GRPCAddr = lis.Addr().String()
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(maxMsgBytes), grpc.MaxSendMsgSize(maxMsgBytes))
	var apiCfg api.Config
	apiCfg.Logger = log.With("role", "api")
	apiCfg.ParseSpec = parseSpecTemplate
	apiCfg.Logs = store // the node agents' task logs
	cohortv1.RegisterJobServiceServer(gs, api.NewJobService(srv, apiCfg))
	cohortv1.RegisterAgentServiceServer(gs, api.NewAgentService(srv, apiCfg))
	c.serveGRPC(gs, lis)

	hl, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return c, usageErr("--http-addr %s: %v", cfg.HTTPAddr, err)
	}
	c.HTTPAddr = hl.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !srv.IsLeader() {
			http.Error(w, "no leader", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	// The dashboard reads the cluster through the gRPC API; the dev coordinator serves
	// no cluster API, so the Raft peers come from the server itself.
	webConn, err := dial(c.GRPCAddr)
	if err != nil {
		return c, fmt.Errorf("dashboard: %w", err)
	}
	c.closers = append(c.closers, func() { _ = webConn.Close() })
	mux.Handle("/", web.New(web.Config{Source: newWebSource(webConn, srv.Peers), Logger: log.With("role", "web"), Context: ctx}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); _ = hs.Serve(hl) }()
	c.closers = append(c.closers, func() { _ = hs.Close() })

	var agents []*agent.Agent
	ncpu := int64(runtime.NumCPU())
	mem := totalMemory()
	taskLogs := tasklog.Config{Store: store, Logger: log.With("role", "tasklog")}
	for i := range cfg.PS {
		name := fmt.Sprintf("dev-ps-%d", i)
		nlog := log.With("role", "paramserver", "node", name)
		pcfg := paramserver.DefaultServerConfig()
		router := tasklog.NewRouter(nlog.Handler(), taskLogs) // shard logs also go to their task logs
		pcfg.Logger = slog.New(router)
		pcfg.Registry = prometheus.WrapRegistererWith(prometheus.Labels{"node": name}, reg)
		ps := paramserver.NewServer(pcfg)
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return c, fmt.Errorf("parameter server %s: %w", name, err)
		}
		pgs := grpc.NewServer(paramserver.ServerOptions()...)
		ps.Register(pgs)
		c.serveGRPC(pgs, pl)
		runner, err := psagent.New(psagent.Config{Server: ps, Store: store, Logger: nlog, TaskLogs: router})
		if err != nil {
			return c, err
		}
		a, err := c.startAgent(ctx, &cohortv1.Node{
			Id: name, Name: name, Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_PARAMSERVER},
			Capacity:    &cohortv1.Resources{CpuMillis: ncpu * 1000, MemoryBytes: mem / int64(cfg.PS+cfg.Workers)},
			DataAddress: pl.Addr().String(),
		}, nlog, runner)
		if err != nil {
			return c, err
		}
		agents = append(agents, a)
	}
	for i := range cfg.Workers {
		name := fmt.Sprintf("dev-worker-%d", i)
		nlog := log.With("role", "worker", "node", name)
		wm, err := worker.NewMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"node": name}, reg))
		if err != nil {
			return c, err
		}
		runner, err := worker.NewRunner(worker.RunnerConfig{Store: store, Logger: nlog, Observer: cfg.Observer, S3: cfg.S3, Metrics: wm,
			TaskLogs: &taskLogs})
		if err != nil {
			return c, err
		}
		a, err := c.startAgent(ctx, &cohortv1.Node{
			Id: name, Name: name, Roles: []cohortv1.NodeRole{cohortv1.NodeRole_NODE_ROLE_WORKER},
			Capacity: &cohortv1.Resources{CpuMillis: max(1000, ncpu*1000/int64(cfg.Workers)), MemoryBytes: mem / int64(cfg.PS+cfg.Workers)},
		}, nlog, runner)
		if err != nil {
			return c, err
		}
		agents = append(agents, a)
	}
	for _, a := range agents {
		select {
		case <-a.Ready():
		case <-ctx.Done():
			return c, ctx.Err()
		}
	}
	log.Info("dev cluster ready", "grpc", c.GRPCAddr, "http", c.HTTPAddr, "workers", cfg.Workers, "ps", cfg.PS)
	return c, nil
}

func (c *devCluster) serveGRPC(gs *grpc.Server, lis net.Listener) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); _ = gs.Serve(lis) }()
	c.closers = append(c.closers, gs.Stop)
}

func (c *devCluster) startAgent(ctx context.Context, node *cohortv1.Node, log *slog.Logger, runner agent.Runner) (*agent.Agent, error) {
	conn, err := dial(c.GRPCAddr)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, func() { _ = conn.Close() })
	acfg := agent.DefaultConfig()
	acfg.Conn, acfg.Node, acfg.Logger, acfg.Runners = conn, node, log, []agent.Runner{runner}
	a, err := agent.New(acfg)
	if err != nil {
		return nil, err
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("node agent stopped", "err", err)
		}
	}()
	return a, nil
}

// Close stops every component, agents first, then servers in reverse start order.
func (c *devCluster) Close() {
	c.once.Do(func() {
		c.cancel()
		for i := len(c.closers) - 1; i >= 0; i-- {
			c.closers[i]()
		}
		c.wg.Wait()
	})
}

// parseSpecTemplate adapts jobs.Parse for the coordinator API.
func parseSpecTemplate(raw []byte) (*cohortv1.Job, error) {
	spec, err := jobs.Parse(raw)
	if err != nil {
		return nil, err
	}
	return spec.JobTemplate()
}

// totalMemory is the machine's physical memory in bytes (8 GiB when unknown).
func totalMemory() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 8 << 30
	}
	return int64(si.Totalram) * int64(si.Unit)
}
