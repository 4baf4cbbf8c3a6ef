//go:build linux

package paramserver

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohort-dev/cohort/internal/netns"
	"github.com/cohort-dev/cohort/internal/pki"
)

// shardHostEnv, set to a directory, turns the test binary into the shard host of
// BenchmarkPushPullTLSAcrossHosts (see TestMain): it serves the shards described by
// the directory's files and exits when its standard input closes.
const shardHostEnv = "COHORT_BENCH_SHARD_HOST"

// hostsBenchParams is the number of parameters of BenchmarkPushPullTLSAcrossHosts: 16
// MiB pushed and 16 MiB pulled per step, as in BenchmarkPushPullTLS.
const hostsBenchParams = 4 << 20

// shardHostAddrs is the shard host's one line on standard output: the ports of its two
// plaintext shards and of its two TLS shards.
type shardHostAddrs struct {
	Plain []int `json:"plain"`
	TLS   []int `json:"tls"`
}

// BenchmarkPushPullTLSAcrossHosts is BenchmarkPushPullTLSInterleaved with the worker
// and the shards on two hosts, as in a cluster: two network namespaces on a bridge
// (internal/netns; needs root), the shards in another process (this test binary again,
// see runShardHost) pinned to CPU 1, the worker in this process pinned to CPU 0, so
// each side encrypts and decrypts on its own core and the two work at the same time.
// Each op is one sync step (push 16 MiB, pull 16 MiB, 1 MiB chunks, 2 shards) in
// plaintext, then one over mutual TLS (agent certificates, the shards' job-worker
// check, TLSServerOptions/TLSDialOptions). It reports each mode's wall time and
// push+pull MB/s, their ratio (tls-wall-ratio: TLS's throughput over plaintext's; the
// issue's target is at least 0.85), and the CPU each host spent per step. It needs 2
// idle cores to mean anything.
func BenchmarkPushPullTLSAcrossHosts(b *testing.B) {
	nw := netns.NewT(b, netns.Config{Subnet: netip.MustParsePrefix("10.79.0.0/24")})
	wh, err := nw.AddHost("worker")
	if err != nil {
		b.Fatal(err)
	}
	ph, err := nw.AddHost("ps")
	if err != nil {
		b.Fatal(err)
	}
	material := newBenchTLS(b)
	dir := b.TempDir()
	shardCert, shardKey, err := material.ca.IssueFor(pki.Identity{Name: "ps-node", Role: pki.RoleAgent},
		[]string{ph.Addr().String()}, time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.pem": material.ca.CertPEM(), "shard.crt": shardCert, "shard.key": shardKey} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := ph.Command(ctx, "taskset", "-c", "1", self, "-test.run=^$")
	cmd.Env = append(os.Environ(), shardHostEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the shard host: %v", err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("shard host: no addresses: %v", err)
	}
	var ports shardHostAddrs
	if err := json.Unmarshal([]byte(line), &ports); err != nil {
		b.Fatalf("shard host: %q: %v", line, err)
	}
	if err := pinThreads(0); err != nil {
		b.Fatal(err)
	}

	dialer := grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return wh.DialContext(ctx, "tcp", addr)
	})
	step := func(ports []int, opts ...grpc.DialOption) func() {
		addrs := make([]string, len(ports))
		for i, p := range ports {
			addrs[i] = ph.HostPort(p)
		}
		c := newTestClient(b, ClientConfig{Addresses: addrs, JobID: "bench", Generation: 1,
			TotalParams: hostsBenchParams, ChunkBytes: 1 << 20, DialOptions: append(opts, dialer)})
		p := initialValues(hostsBenchParams)
		if err := c.Init(ctx, p); err != nil {
			b.Fatal(err)
		}
		g := make([]float32, hostsBenchParams)
		workerGrad(0, p, g)
		var n int64
		return func() {
			if err := c.Push(ctx, n, g, 1); err != nil {
				b.Fatal(err)
			}
			n++
			if _, err := c.Pull(ctx, n, p); err != nil {
				b.Fatal(err)
			}
		}
	}
	creds := credentials.NewTLS(pki.RoleClientTLSConfig(material.ca.Pool(), material.worker, pki.RoleAgent))
	steps := [2]func(){
		step(ports.Plain, grpc.WithTransportCredentials(insecure.NewCredentials())),
		step(ports.TLS, TLSDialOptions(creds)...),
	}
	for _, s := range steps {
		s() // connect and warm up
	}
	var wall, cpu, remote [2]time.Duration
	b.SetBytes(int64(len(steps) * 2 * 4 * hostsBenchParams))
	b.ResetTimer()
	for b.Loop() {
		for i, s := range steps {
			w, c, r := time.Now(), processCPU(b), processCPUOf(b, cmd.Process.Pid)
			s()
			wall[i] += time.Since(w)
			cpu[i] += processCPU(b) - c
			remote[i] += processCPUOf(b, cmd.Process.Pid) - r
		}
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
	mbps := func(d time.Duration) float64 { return float64(b.N) * 2 * 4 * hostsBenchParams / d.Seconds() / 1e6 }
	b.ReportMetric(per(wall[0]), "plain-ms/step")
	b.ReportMetric(per(wall[1]), "tls-ms/step")
	b.ReportMetric(mbps(wall[0]), "plain-MB/s")
	b.ReportMetric(mbps(wall[1]), "tls-MB/s")
	b.ReportMetric(float64(wall[0])/float64(wall[1]), "tls-wall-ratio")
	b.ReportMetric(per(cpu[0]), "plain-worker-cpu-ms/step")
	b.ReportMetric(per(cpu[1]), "tls-worker-cpu-ms/step")
	b.ReportMetric(per(remote[0]), "plain-ps-cpu-ms/step")
	b.ReportMetric(per(remote[1]), "tls-ps-cpu-ms/step")
}

// runShardHost is the shard host of BenchmarkPushPullTLSAcrossHosts: two plaintext
// shards and two TLS shards of the "bench" job (generation 1, one worker, plain SGD),
// each on its own listener on every address of the host, the TLS ones with dir's
// agent certificate, allowing the worker "worker-node" only. It prints their ports as
// one JSON line and serves until its standard input closes.
func runShardHost(dir string) error {
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			fmt.Fprintln(os.Stderr, "shard host:", err)
			os.Exit(1)
		}
		return data
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(read("ca.pem")) {
		return errors.New("shard host: ca.pem holds no certificate")
	}
	certs, err := pki.NewReloader(read("shard.crt"), read("shard.key"), nil)
	if err != nil {
		return fmt.Errorf("shard host: %w", err)
	}
	serve := func(tlsOn bool) ([]int, error) {
		var ports []int
		for shard := range 2 {
			srv := NewServer(ServerConfig{Logger: quietLogger(), Registry: prometheus.NewRegistry()})
			opts := ServerOptions()
			if tlsOn {
				srv.SetCaller(peerName)
				cfg := pki.ServerTLSConfig(pool, certs, true)
				cfg.VerifyConnection = pki.RequireRole(pki.RoleAgent)
				opts = append(opts, TLSServerOptions(credentials.NewTLS(cfg))...)
			}
			if err := srv.AddShard(ShardConfig{JobID: "bench", Shard: shard, Generation: 1, Workers: 1,
				Optimizer: OptimizerConfig{Name: "sgd", LearningRate: 1e-6}}); err != nil {
				return nil, err
			}
			if tlsOn {
				srv.SetAllowedWorkers("bench", shard, 1, []string{"worker-node"})
			}
			lis, err := net.Listen("tcp", ":0")
			if err != nil {
				return nil, err
			}
			g := grpc.NewServer(opts...)
			srv.Register(g)
			go func() { _ = g.Serve(lis) }()
			ports = append(ports, lis.Addr().(*net.TCPAddr).Port)
		}
		return ports, nil
	}
	var addrs shardHostAddrs
	if addrs.Plain, err = serve(false); err != nil {
		return fmt.Errorf("shard host: %w", err)
	}
	if addrs.TLS, err = serve(true); err != nil {
		return fmt.Errorf("shard host: %w", err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(addrs); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// pinThreads binds every thread of this process to cpu; threads made later inherit it
// from the thread that makes them.
func pinThreads(cpu int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var set unix.CPUSet
	set.Set(cpu)
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin thread %d to CPU %d: %w", tid, cpu, err)
		}
	}
	return nil
}

// processCPUOf is the CPU time every thread of process pid has run, from the
// scheduler's nanosecond counters (/proc/PID/task/TID/schedstat); threads that
// already exited are not counted, so it is only meaningful for a process whose
// threads live on (a Go server's do).
func processCPUOf(b *testing.B, pid int) time.Duration {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	var sum time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			b.Fatalf("schedstat of %d/%s: %q", pid, t.Name(), data)
		}
		sum += time.Duration(ns)
	}
	return sum
}
