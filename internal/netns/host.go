package netns

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Host is one test host: a network namespace with one address on the network's bridge.
type Host struct {
	net   *Network
	name  string
	index int
	ns    string
	veth  string
	addr  netip.Addr
	nat   bool // the nat table's fault chain exists (made by the first redirect; Network.applyMu)
}

// Name is the host's name in the network.
func (h *Host) Name() string { return h.name }

// Addr is the host's address.
func (h *Host) Addr() netip.Addr { return h.addr }

// HostPort is the host's address with port, for flags such as --grpc-addr.
func (h *Host) HostPort(port int) string {
	return netip.AddrPortFrom(h.addr, uint16(port)).String()
}

// Namespace is the name of the host's network namespace (for `ip netns exec`).
func (h *Host) Namespace() string { return h.ns }

func (h *Host) String() string { return h.name + "(" + h.addr.String() + ")" }

// Command returns a command that runs name with args inside the host's namespace
// (`ip netns exec NS name args...`, which execs name in place, so the command's
// process is name itself). It is killed with SIGKILL when ctx ends, and when the
// test process dies.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	return cmd
}

// ProcessConfig describes a long-running process started on a host.
type ProcessConfig struct {
	// Name labels the process in logs and errors (default: the host's name).
	Name string
	// Path and Args are the program and its arguments.
	Path string
	Args []string
	// Dir is the working directory (default: the test process's).
	Dir string
	// Env, when set, replaces the environment.
	Env []string
	// Log receives stdout and stderr, appended (empty: discarded).
	Log string
}

// Start starts a long-running process on the host. The network kills it on Close if
// it still runs; the test process's death kills it too.
func (h *Host) Start(cfg ProcessConfig) (*Process, error) {
	if cfg.Name == "" {
		cfg.Name = h.name
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, cfg.Path}, cfg.Args...)...)
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	cmd.Dir, cmd.Env = cfg.Dir, cfg.Env
	var logf *os.File
	if cfg.Log != "" {
		f, err := os.OpenFile(cfg.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("netns: %s: %w", cfg.Name, err)
		}
		logf = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	h.net.mu.Lock()
	if h.net.closed {
		h.net.mu.Unlock()
		if logf != nil {
			logf.Close()
		}
		return nil, fmt.Errorf("netns: %s: network closed", cfg.Name)
	}
	if err := cmd.Start(); err != nil {
		h.net.mu.Unlock()
		if logf != nil {
			logf.Close()
		}
		return nil, fmt.Errorf("netns: start %s on %s: %w", cfg.Name, h.name, err)
	}
	p := newProcess(cfg.Name, h, cmd, logf)
	h.net.procs = append(h.net.procs, p)
	h.net.mu.Unlock()
	h.net.cfg.Logf("netns: started %s on %s (pid %d)", cfg.Name, h.name, p.Pid())
	return p, nil
}

// inNamespace runs fn on an OS thread switched into the host's network namespace, so
// the sockets fn creates belong to the host (they keep working from any thread
// afterwards). The thread goes back to its namespace after fn, or is retired when it
// cannot.
func (h *Host) inNamespace(fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open own namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+h.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: open namespace of %s: %w", h.name, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter namespace of %s: %w", h.name, err)
			return
		}
		fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else: the goroutine ends locked and the runtime retires the thread
		errc <- nil
	}()
	return <-errc
}

// DialContext connects from inside the host's namespace (for an http.Transport or a
// grpc.WithContextDialer).
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	var derr error
	if err := h.inNamespace(func() {
		var d net.Dialer
		c, derr = d.DialContext(ctx, network, address)
	}); err != nil {
		return nil, err
	}
	return c, derr
}

// Listen opens a listener inside the host's namespace.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	var lerr error
	if err := h.inNamespace(func() { l, lerr = net.Listen(network, address) }); err != nil {
		return nil, err
	}
	return l, lerr
}

// ListenPacket opens a packet listener (UDP) inside the host's namespace.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	var lerr error
	if err := h.inNamespace(func() { c, lerr = net.ListenPacket(network, address) }); err != nil {
		return nil, err
	}
	return c, lerr
}

// HTTPClient returns a client whose connections start from this host, each request
// bounded by timeout.
func (h *Host) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: h.DialContext, DisableKeepAlives: true, Proxy: nil,
	}}
}

// iptablesRestore applies rules (iptables-restore syntax) in the host's namespace
// without flushing what they do not name.
func (h *Host) iptablesRestore(rules string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.ns, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(rules)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return &cmdError{cmd: "iptables-restore in " + h.ns, out: strings.TrimSpace(string(out)) + "\n" + rules, err: err}
	}
	return nil
}
