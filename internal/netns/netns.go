// Package netns runs test hosts on one Linux machine: every host is a network namespace
// with its own address on a private bridge, and faults are injected between them the
// way operators meet them on real networks: partitions (symmetric or one-way, between
// sets of hosts), packet loss, delay, jitter and bandwidth caps (a userspace TCP proxy,
// Proxy, that connections are redirected through: this kernel has no netem qdisc),
// and killed or paused processes.
//
// A Network owns one bridge and its hosts, named after a random run ID so test
// binaries running side by side never collide. Addresses come from a private range
// (10.77.0.0/24 by default) that exists only on that bridge: the root namespace gets
// no address on it and no route to it, and nothing is sent anywhere else. Faults are
// iptables rules inside the hosts' own namespaces (they vanish with them); the host's
// own firewall is never touched (the bridge is created with nf_call_iptables 0, so
// bridged frames skip it); redirections through a proxy are DNAT rules in the nat
// table of the client hosts' namespaces. Close stops the proxies, kills the
// processes, then removes the namespaces, veth pairs and bridge; New first removes
// what a crashed earlier run left behind (its owner process, recorded in the
// bridge's alias, is gone).
//
// It needs root, iproute2 (`ip`) and iptables (`make deps` installs it). Tests call
// Require, which skips when COHORT_SKIP_NETNS=1 and otherwise fails with a message
// naming what is missing.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SkipEnv is the environment variable that, set to 1, makes Require skip instead of
// fail where the harness cannot run (no root, no ip or iptables).
const SkipEnv = "COHORT_SKIP_NETNS"

// aliasPrefix starts the alias of every bridge this package creates; the rest names
// the run and its owner process: "cohort-netns run=ID pid=PID start=TICKS".
const aliasPrefix = "cohort-netns "

// nsPrefix starts every namespace this package creates: "cohort-<run>-<host>".
const nsPrefix = "cohort-"

// faultChain is the iptables chain, in each host's filter table, that holds the
// host's fault rules; INPUT jumps to it.
const faultChain = "COHORT-FAULTS"

// Config configures a Network.
type Config struct {
	// Subnet is the private range hosts get addresses from, in order (.1, .2, ...):
	// an RFC 1918 IPv4 prefix between /16 and /29. It exists only on this network's
	// bridge, so parallel networks may use the same one.
	Subnet netip.Prefix
	// Logf, when set, receives one line per setup, fault and cleanup step.
	Logf func(format string, args ...any)
}

// DefaultConfig uses 10.77.0.0/24 and does not log.
func DefaultConfig() Config {
	return Config{Subnet: netip.MustParsePrefix("10.77.0.0/24")}
}

// Network is one bridge with its hosts and the faults injected between them.
type Network struct {
	cfg    Config
	run    string // random run ID, 6 hex digits
	bridge string

	applyMu sync.Mutex // held while fault chains are rewritten

	mu      sync.Mutex
	hosts   []*Host
	procs   []*Process
	proxies []*Proxy
	faults  map[int]*Fault
	nextID  int
	closed  bool
}

// Check reports why this machine cannot run test hosts (nil when it can): not root,
// or ip, iptables or iptables-restore missing.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("netns: test hosts need root (network namespaces, veth pairs, iptables); run as root, " +
			"or set " + SkipEnv + "=1 to skip these tests")
	}
	var missing []string
	for _, tool := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("netns: %s not found in PATH (make deps installs iptables; ip comes with iproute2), "+
			"or set %s=1 to skip these tests", strings.Join(missing, ", "), SkipEnv)
	}
	return nil
}

// New creates the bridge of a new Network after removing what crashed earlier runs
// left behind. The caller must Close it.
func New(cfg Config) (*Network, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultConfig().Subnet
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if !cfg.Subnet.Addr().Is4() || !cfg.Subnet.Addr().IsPrivate() || cfg.Subnet.Bits() < 16 || cfg.Subnet.Bits() > 29 {
		return nil, fmt.Errorf("netns: subnet %s: want a private IPv4 range between /16 and /29", cfg.Subnet)
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if err := RemoveLeftovers(cfg.Logf); err != nil {
		return nil, err
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	n := &Network{cfg: cfg, run: hex.EncodeToString(b[:]), faults: map[int]*Fault{}}
	n.bridge = "cnb" + n.run
	start, err := procStart(os.Getpid())
	if err != nil {
		return nil, err
	}
	alias := fmt.Sprintf("%srun=%s pid=%d start=%d", aliasPrefix, n.run, os.Getpid(), start)
	if err := ipCmd("link", "add", n.bridge, "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0"); err != nil {
		return nil, err
	}
	if err := ipCmd("link", "set", "dev", n.bridge, "alias", alias); err != nil {
		_ = ipCmd("link", "del", n.bridge)
		return nil, err
	}
	if err := ipCmd("link", "set", n.bridge, "up"); err != nil {
		_ = ipCmd("link", "del", n.bridge)
		return nil, err
	}
	cfg.Logf("netns: bridge %s for %s (run %s)", n.bridge, cfg.Subnet, n.run)
	return n, nil
}

// Run is this network's run ID (part of every name it creates).
func (n *Network) Run() string { return n.run }

// Hosts returns the hosts added so far, in order.
func (n *Network) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

// AddHost creates a host: a namespace with loopback up, a veth pair to the bridge and
// the next address of the subnet. name must be short and unique in the network
// (letters, digits, '-' or '_').
func (n *Network) AddHost(name string) (*Host, error) {
	if !hostName.MatchString(name) {
		return nil, fmt.Errorf("netns: host name %q: want 1-16 letters, digits, '-' or '_'", name)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errors.New("netns: network closed")
	}
	idx := len(n.hosts) + 1
	for _, h := range n.hosts {
		if h.name == name {
			n.mu.Unlock()
			return nil, fmt.Errorf("netns: host %q exists", name)
		}
	}
	addr := n.cfg.Subnet.Addr()
	for range idx {
		addr = addr.Next()
	}
	if !n.cfg.Subnet.Contains(addr.Next()) || idx > 255 { // the last address is the broadcast
		n.mu.Unlock()
		return nil, fmt.Errorf("netns: subnet %s has no address left for host %q", n.cfg.Subnet, name)
	}
	h := &Host{net: n, name: name, index: idx, ns: nsPrefix + n.run + "-" + name,
		veth: fmt.Sprintf("cnv%s%02x", n.run, idx), addr: addr}
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()

	steps := [][]string{
		{"netns", "add", h.ns},
		{"link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
		{"link", "set", h.veth, "master", n.bridge, "up"},
		{"-n", h.ns, "addr", "add", fmt.Sprintf("%s/%d", addr, n.cfg.Subnet.Bits()), "dev", "eth0"},
		{"-n", h.ns, "link", "set", "eth0", "up"},
		{"-n", h.ns, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return nil, fmt.Errorf("netns: host %s: %w", name, err)
		}
	}
	rules := fmt.Sprintf("*filter\n:%s - [0:0]\n-A INPUT -j %s\nCOMMIT\n", faultChain, faultChain)
	if err := h.iptablesRestore(rules); err != nil {
		return nil, fmt.Errorf("netns: host %s: %w", name, err)
	}
	n.cfg.Logf("netns: host %s = %s (namespace %s)", name, addr, h.ns)
	return h, nil
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}$`)

// Close heals every fault, kills every process still running on the hosts (a paused
// one is continued first), and removes the namespaces, veth pairs and bridge. It is
// safe to call more than once; it returns the first error but always tries every step.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	procs, hosts, proxies := n.procs, n.hosts, n.proxies
	n.mu.Unlock()
	var errs []error
	for _, p := range proxies {
		if err := p.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range procs {
		p.Kill()
	}
	for _, h := range hosts {
		// Any process started in the namespace by other means (a CLI run through
		// Host.Command that outlived its context) goes too.
		killNamespacePids(h.ns)
		if err := ipCmd("link", "del", h.veth); err != nil && !isNotExist(err) {
			errs = append(errs, err)
		}
		if err := ipCmd("netns", "del", h.ns); err != nil && !isNotExist(err) {
			errs = append(errs, err)
		}
	}
	if err := ipCmd("link", "del", n.bridge); err != nil && !isNotExist(err) {
		errs = append(errs, err)
	}
	n.cfg.Logf("netns: run %s removed (%d hosts, %d processes)", n.run, len(hosts), len(procs))
	return errors.Join(errs...)
}

// RemoveLeftovers removes the bridges, veth pairs and namespaces of earlier runs whose
// owner process is gone (a crashed or killed test binary), killing any process still
// running in those namespaces. Runs whose owner lives are left alone.
func RemoveLeftovers(logf func(string, ...any)) error {
	out, err := exec.Command("ip", "-j", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("netns: ip link show: %w", err)
	}
	var links []struct {
		Name  string `json:"ifname"`
		Alias string `json:"ifalias"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return fmt.Errorf("netns: ip -j link show: %w", err)
	}
	live := map[string]bool{} // runs with a bridge, by whether the owner lives
	for _, l := range links {
		if !strings.HasPrefix(l.Alias, aliasPrefix) || !strings.HasPrefix(l.Name, "cnb") {
			continue
		}
		run, pid, start := parseAlias(l.Alias)
		live[run] = ownerAlive(pid, start)
	}
	nsOut, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("netns: ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(nsOut), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		ns := f[0]
		run, _, ok := strings.Cut(strings.TrimPrefix(ns, nsPrefix), "-")
		if !ok || len(run) != 6 {
			continue
		}
		if alive, hasBridge := live[run]; hasBridge && alive {
			continue
		} else if !hasBridge {
			// A namespace without its bridge: the bridge is made first and removed
			// last, so its run has ended.
			live[run] = false
		}
		killNamespacePids(ns)
		if err := ipCmd("netns", "del", ns); err != nil && !isNotExist(err) {
			errs = append(errs, err)
		}
		logf("netns: removed leftover namespace %s", ns)
	}
	for _, l := range links {
		for run, alive := range live {
			if alive {
				continue
			}
			if l.Name == "cnb"+run || strings.HasPrefix(l.Name, "cnv"+run) {
				if err := ipCmd("link", "del", l.Name); err != nil && !isNotExist(err) {
					errs = append(errs, err)
				}
				logf("netns: removed leftover link %s", l.Name)
			}
		}
	}
	return errors.Join(errs...)
}

func parseAlias(alias string) (run string, pid int, start uint64) {
	for _, f := range strings.Fields(strings.TrimPrefix(alias, aliasPrefix)) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "run":
			run = v
		case "pid":
			pid, _ = strconv.Atoi(v)
		case "start":
			start, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return run, pid, start
}

// ownerAlive reports whether process pid exists and started at start (clock ticks
// since boot), so a recycled PID does not keep a dead run's leftovers.
func ownerAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	got, err := procStart(pid)
	return err == nil && got == start
}

// procStart is field 22 of /proc/PID/stat: the process's start time in clock ticks.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("netns: /proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("netns: /proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// killNamespacePids SIGKILLs every process in namespace ns (continuing stopped ones
// first) and waits briefly for them to go.
func killNamespacePids(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGCONT)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			if syscall.Kill(pid, 0) != nil {
				break
			}
			time.Sleep(10 * time.Millisecond) // polling for the kernel to reap a process we do not parent
		}
	}
}

// ipCmd runs `ip args...` and returns an error with its output.
func ipCmd(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return &cmdError{cmd: "ip " + strings.Join(args, " "), out: strings.TrimSpace(string(out)), err: err}
	}
	return nil
}

// cmdError is a failed ip or iptables command with its output.
type cmdError struct {
	cmd, out string
	err      error
}

func (e *cmdError) Error() string { return fmt.Sprintf("%s: %v: %s", e.cmd, e.err, e.out) }

func (e *cmdError) Unwrap() error { return e.err }

// isNotExist reports whether a failed ip command says the object is already gone.
func isNotExist(err error) bool {
	var ce *cmdError
	if !errors.As(err, &ce) {
		return false
	}
	return strings.Contains(ce.out, "Cannot find device") || strings.Contains(ce.out, "No such file") ||
		strings.Contains(ce.out, "does not exist")
}
