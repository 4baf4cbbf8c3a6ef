package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohort-dev/cohort/internal/agent"
	"github.com/cohort-dev/cohort/internal/gpu"
	"github.com/cohort-dev/cohort/internal/pki"
	"github.com/cohort-dev/cohort/internal/psagent"
	"github.com/cohort-dev/cohort/internal/tasklog"
	"github.com/cohort-dev/cohort/paramserver"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/worker"
)

// startAgents starts the parameter-server agents (each serving its shards on its data
// address), then the worker agents. Each registers in the background.
func (n *Node) startAgents() error {
	for _, p := range n.cfg.ParameterServers {
		if err := n.startParameterServer(p); err != nil {
			return err
		}
	}
	for _, w := range n.cfg.Workers {
		if err := n.startWorker(w); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) startParameterServer(p ParameterServerConfig) error {
	log := n.log.With("role", "paramserver", "node", p.NodeID)
	pcfg := paramserver.DefaultServerConfig()
	router := tasklog.NewRouter(log.Handler(), n.taskLogs(log)) // shard logs also go to their task logs
	pcfg.Logger, pcfg.Registry = slog.New(router), n.agentRegisterer(p.NodeID)
	// A worker's broken session is the fast sign of its death; the node's agent tells
	// the coordinators, which confirm by the worker node's heartbeats.
	var reporter atomic.Pointer[agent.Agent]
	pcfg.OnSessionLost = func(jobID string, generation uint64, rank int) {
		if a := reporter.Load(); a != nil {
			a.ReportSessionLoss(n.runCtx, jobID, generation, rank)
		}
	}
	ps := paramserver.NewServer(pcfg)
	lis, err := net.Listen("tcp", p.DataAddr)
	if err != nil {
		return configErr("ParameterServers.DataAddr", p.DataAddr, err)
	}
	certs, err := n.agentCerts(p.NodeID, p.DataAddr, log)
	if err != nil {
		_ = lis.Close()
		return err
	}
	var revoked revokedTokens
	sopts := append(paramserver.ServerOptions(), KeepaliveServerOptions()...)
	if certs != nil {
		// Only node agents (workers) may reach the shards.
		sopts = append(sopts, paramserver.TLSServerOptions(n.tls.serverCreds(certs, pki.RoleAgent))...)
		// And only the workers of each shard's job (the assignment's allowed_workers),
		// never a certificate of a revoked join token (the set comes with the assignments).
		ps.SetCaller(tlsCaller(&revoked))
		// A primary shard replicates to its backup as this node (parameterServers.replicas).
		ps.SetReplicaDialOptions(append(paramserver.TLSDialOptions(n.tls.clientCreds(certs, pki.RoleAgent)), KeepaliveDialOption())...)
	} else {
		ps.SetReplicaDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()), KeepaliveDialOption())
	}
	gs := grpc.NewServer(sopts...)
	ps.Register(gs)
	n.serve(gs, lis)
	runner, err := psagent.New(psagent.Config{Server: ps, Store: n.store, Logger: log, TaskLogs: router})
	if err != nil {
		return err
	}
	node := agentNode(p.AgentConfig, cohortv1.NodeRole_NODE_ROLE_PARAMSERVER, log)
	node.DataAddress = lis.Addr().String()
	n.data = append(n.data, node.DataAddress)
	a, err := n.startAgent(node, p.Join, certs, log, runner, revoked.set)
	if err != nil {
		return err
	}
	reporter.Store(a)
	return nil
}

func (n *Node) startWorker(w WorkerConfig) error {
	log := n.log.With("role", "worker", "node", w.NodeID)
	wm, err := worker.NewMetrics(n.agentRegisterer(w.NodeID))
	if err != nil {
		return err
	}
	taskLogs := n.taskLogs(log)
	node := agentNode(w.AgentConfig, cohortv1.NodeRole_NODE_ROLE_WORKER, log)
	var gpus *worker.GPUSet
	if c := int(node.GetCapacity().GetGpus()); c > 0 {
		gpus = worker.NewGPUSet(gpu.DefaultLoadConfig(), c)
	}
	certs, err := n.agentCerts(w.NodeID, "", log)
	if err != nil {
		return err
	}
	var shardDial []grpc.DialOption
	if certs != nil {
		// The worker presents its certificate to the shards and accepts only node agents.
		shardDial = append(paramserver.TLSDialOptions(n.tls.clientCreds(certs, pki.RoleAgent)), KeepaliveDialOption())
	} else {
		shardDial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), KeepaliveDialOption()}
	}
	// A worker's calls failing to reach a shard primary are the fast sign of a dead
	// parameter server; the node's agent tells the coordinators, which confirm.
	var reporter atomic.Pointer[agent.Agent]
	onShardLost := func(jobID string, generation uint64, shard int) {
		if a := reporter.Load(); a != nil {
			a.ReportShardLoss(n.runCtx, jobID, generation, shard)
		}
	}
	runner, err := worker.NewRunner(worker.RunnerConfig{Store: n.store, Logger: log, Observer: w.Observer, OnShardLost: onShardLost,
		S3: n.cfg.Storage.S3, Metrics: wm, TaskLogs: &taskLogs, DataRoots: w.DataRoots, GPUs: gpus, DialOptions: shardDial,
		ProgressInterval: w.ProgressInterval, ProgressEverySteps: w.ProgressEverySteps})
	if err != nil {
		return err
	}
	a, err := n.startAgent(node, w.Join, certs, log, runner, nil)
	if err != nil {
		return err
	}
	reporter.Store(a)
	return nil
}

// taskLogs writes the tasks' logs to storage (`cohort job logs`).
func (n *Node) taskLogs(log *slog.Logger) tasklog.Config {
	return tasklog.Config{Store: n.store, Logger: log.With("component", "tasklog")}
}

// agentRegisterer is where an agent's metrics go: the node's registry, with a node label
// when the process runs more than one agent (cohort dev).
func (n *Node) agentRegisterer(nodeID string) prometheus.Registerer {
	if n.agentCount() > 1 {
		return prometheus.WrapRegistererWith(prometheus.Labels{"node": nodeID}, n.reg)
	}
	return n.reg
}

// agentCerts is the certificate node agent nodeID presents (see nodeTLS.agentCerts); nil
// without TLS.
func (n *Node) agentCerts(nodeID, dataAddr string, log *slog.Logger) (*pki.Reloader, error) {
	if n.tls == nil {
		return nil, nil
	}
	certs, err := n.tls.agentCerts(nodeID, dataAddr, log.With("component", "tls"))
	if err != nil {
		return nil, fmt.Errorf("node agent %s: certificate: %w", nodeID, err)
	}
	return certs, nil
}

// agentNode is the node record an agent registers.
func agentNode(a AgentConfig, role cohortv1.NodeRole, log *slog.Logger) *cohortv1.Node {
	capacity := nodeGPUs(a.GPUs, gpu.Discover, log)
	capacity.CpuMillis, capacity.MemoryBytes = a.CPUMillis, a.MemoryBytes
	return &cohortv1.Node{Id: a.NodeID, Name: a.NodeID, Roles: []cohortv1.NodeRole{role}, Capacity: capacity, Labels: a.Labels}
}

// startAgent runs a node agent until Shutdown: one connection over every coordinator
// of join, failing over between them; any coordinator serves the agent (writes are
// forwarded to the leader). With join empty it is this node's own coordinator, and
// without Config.Token the agent presents a token minted by that coordinator's ACL.
// With TLS the agent presents certs. onRevoked, when set, receives the revoked join
// tokens with every assignment message.
func (n *Node) startAgent(node *cohortv1.Node, join []string, certs *pki.Reloader, log *slog.Logger, runner agent.Runner, onRevoked func([]string)) (*agent.Agent, error) {
	token := n.cfg.Token
	// An agent that joins coordinators elsewhere keeps the ID of the cluster it joined
	// next to its certificate, so that after a restart it still refuses another
	// cluster at those addresses. This node's own agents follow their coordinator.
	stateDir := ""
	if len(join) > 0 && certs != nil && n.cfg.TLS != nil {
		stateDir = n.cfg.TLS.Dir
	}
	if len(join) == 0 {
		join = []string{n.grpcAddr}
		if token == "" {
			token = n.acl.agentToken(node.GetId()) // this coordinator's ACL, when on
		}
	}
	var creds credentials.TransportCredentials
	if certs != nil {
		creds = n.tls.clientCreds(certs, pki.RoleCoordinator)
	}
	conn, err := dial(join, creds, token)
	if err != nil {
		return nil, err
	}
	n.onStop(conn.Close)
	acfg := agent.DefaultConfig()
	acfg.Conn, acfg.Node, acfg.Logger, acfg.Runners = conn, node, log, []agent.Runner{runner}
	acfg.StateDir, acfg.OnRevokedTokens = stateDir, onRevoked
	if len(join) > 0 && certs != nil && n.tls != nil && n.tls.ca() == nil {
		// An agent with its own certificate (renewed over the network): it follows the
		// end of CA rotations.
		acfg.OnTrustBundle = func(pem []byte) { n.tls.followTrustBundle(pem, log) }
	}
	if n.cfg.HeartbeatInterval > 0 {
		acfg.HeartbeatInterval = n.cfg.HeartbeatInterval
	}
	if node.GetCapacity().GetGpus() > 0 {
		acfg.GPUUsage = gpuUsage(log)
	}
	a, err := agent.New(acfg)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.agents = append(n.agents, a)
	n.mu.Unlock()
	log.Info("node agent starting", "coordinators", strings.Join(join, ","), "data_addr", node.DataAddress)
	n.agentWG.Add(1)
	go func() {
		defer n.agentWG.Done()
		// Run returns at Shutdown: an error other than the cancellation is one of an
		// agent that never registered.
		if err := a.Run(n.runCtx); err != nil && !errors.Is(err, context.Canceled) {
			n.mu.Lock()
			n.agentErrs = append(n.agentErrs, fmt.Errorf("node agent %s: %w", node.GetId(), err))
			n.mu.Unlock()
		}
	}()
	return a, nil
}

// gpuUsage samples the node's GPUs through NVML for the agent's heartbeats; after a
// failed sample (logged once) the heartbeats go without GPU figures.
func gpuUsage(log *slog.Logger) agent.GPUUsageFunc {
	warned := false
	return func() (int64, float64, bool) {
		u, err := gpu.SampleUsage(gpu.DefaultLoadConfig())
		if err != nil {
			if !warned {
				log.Warn("GPU usage not sampled", "err", err)
				warned = true
			}
			return 0, 0, false
		}
		return int64(u.MemoryUsedBytes), u.Utilization, true
	}
}
