package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// threeHosts is a network with hosts a, b and c.
func threeHosts(t *testing.T) (*Network, *Host, *Host, *Host) {
	t.Helper()
	n := NewT(t, Config{})
	var hs []*Host
	for _, name := range []string{"a", "b", "c"} {
		h, err := n.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	return n, hs[0], hs[1], hs[2]
}

// echoServer serves a TCP echo on h:port until the test ends.
func echoServer(t *testing.T, h *Host, port int) string {
	t.Helper()
	l, err := h.Listen("tcp", h.HostPort(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return h.HostPort(port)
}

// roundTrip dials addr from h and echoes a line, within timeout.
func roundTrip(h *Host, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping\n" {
		return fmt.Errorf("echo %q", buf)
	}
	return nil
}

func TestHostsAndPartitions(t *testing.T) {
	n, a, b, c := threeHosts(t)
	if a.Addr().String() != "10.77.0.1" || c.Addr().String() != "10.77.0.3" {
		t.Fatalf("addresses %s %s", a.Addr(), c.Addr())
	}
	bAddr, aAddr := echoServer(t, b, 9000), echoServer(t, a, 9000)
	cAddr := echoServer(t, c, 9000)
	for _, p := range []struct {
		from *Host
		to   string
	}{{a, bAddr}, {b, aAddr}, {c, aAddr}, {a, cAddr}} {
		if err := roundTrip(p.from, p.to, 2*time.Second); err != nil {
			t.Fatalf("%s -> %s before any fault: %v", p.from, p.to, err)
		}
	}

	t.Run("symmetric", func(t *testing.T) {
		f, err := n.Partition([]*Host{a}, []*Host{b})
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(a, bAddr, 300*time.Millisecond); err == nil {
			t.Error("a reached b across the partition")
		}
		if err := roundTrip(b, aAddr, 300*time.Millisecond); err == nil {
			t.Error("b reached a across the partition")
		}
		if err := roundTrip(a, cAddr, 2*time.Second); err != nil {
			t.Errorf("a -> c, outside the partition: %v", err)
		}
		if got := n.Faults(); len(got) != 1 || got[0] != "partition [a] | [b]" {
			t.Errorf("faults %q", got)
		}
		if err := f.Heal(); err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(a, bAddr, 2*time.Second); err != nil {
			t.Errorf("a -> b after the heal: %v", err)
		}
	})

	t.Run("one-way", func(t *testing.T) {
		// UDP shows the direction: a's datagrams to b are dropped, b's to a arrive.
		pa, err := a.ListenPacket("udp", a.HostPort(9100))
		if err != nil {
			t.Fatal(err)
		}
		defer pa.Close()
		pb, err := b.ListenPacket("udp", b.HostPort(9100))
		if err != nil {
			t.Fatal(err)
		}
		defer pb.Close()
		f, err := n.PartitionOneWay([]*Host{a}, []*Host{b})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Heal()
		if got := exchange(t, pa, pb, b, 20); got != 0 {
			t.Errorf("b received %d of a's datagrams across a one-way cut", got)
		}
		if got := exchange(t, pb, pa, a, 20); got != 20 {
			t.Errorf("a received %d of b's 20 datagrams, the open direction", got)
		}
		if err := roundTrip(a, bAddr, 300*time.Millisecond); err == nil {
			t.Error("a TCP exchange worked across a one-way cut")
		}
	})

	t.Run("isolate", func(t *testing.T) {
		f, err := n.Isolate(a, c)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Heal()
		if err := roundTrip(b, aAddr, 300*time.Millisecond); err == nil {
			t.Error("b reached the isolated a")
		}
		if err := roundTrip(c, aAddr, 2*time.Second); err != nil {
			t.Errorf("c, kept, could not reach a: %v", err)
		}
	})
}

// exchange sends count datagrams from src to dst's address and returns how many
// dst received before a quiet half second.
func exchange(t *testing.T, src, dst net.PacketConn, dstHost *Host, count int) int {
	t.Helper()
	to := dst.LocalAddr()
	for i := range count {
		if _, err := src.WriteTo([]byte{byte(i)}, to); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	buf := make([]byte, 16)
	for {
		_ = dst.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, _, err := dst.ReadFrom(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return got
			}
			t.Fatalf("read on %s: %v", dstHost, err)
		}
		got++
	}
}

func TestLoss(t *testing.T) {
	n, a, b, _ := threeHosts(t)
	pa, err := a.ListenPacket("udp", a.HostPort(9200))
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := b.ListenPacket("udp", b.HostPort(9200))
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	f, err := n.Loss(b, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	const sent = 400
	// Binomial(400, 0.5): mean 200, sd 10; the bounds are 6 sd away.
	if got := exchange(t, pa, pb, b, sent); got < 140 || got > 260 {
		t.Errorf("b received %d of %d datagrams at 50%% loss", got, sent)
	}
	if got := exchange(t, pb, pa, a, sent); got < 140 || got > 260 {
		t.Errorf("a received %d of b's %d datagrams at 50%% loss on b", got, sent)
	}
	if err := f.Heal(); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, pa, pb, b, 50); got != 50 {
		t.Errorf("b received %d of 50 datagrams after the heal", got)
	}
	if _, err := n.Loss(b, 1.5); err == nil {
		t.Error("loss probability 1.5 accepted")
	}
}

func TestProcessPauseResumeKill(t *testing.T) {
	n, a, _, _ := threeHosts(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	p, err := a.Start(ProcessConfig{Name: "sleeper", Path: sleep, Args: []string{"300"}})
	if err != nil {
		t.Fatal(err)
	}
	waitState := func(want byte) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
			if err != nil {
				t.Fatal(err)
			}
			i := bytes.LastIndexByte(b, ')')
			if b[i+2] == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("process state %c, want %c", b[i+2], want)
			}
			time.Sleep(10 * time.Millisecond) // polling /proc for the kernel's state change
		}
	}
	waitState('S')
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid()))
	if !strings.HasSuffix(exe, "/sleep") {
		t.Errorf("pid %d runs %s, want sleep itself", p.Pid(), exe)
	}
	ino := func(path string) uint64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	// The process itself runs in a's namespace (ip netns exec execs in place).
	if ino(fmt.Sprintf("/proc/%d/ns/net", p.Pid())) != ino("/run/netns/"+a.Namespace()) {
		t.Errorf("process %d is not in %s's namespace", p.Pid(), a)
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	waitState('T')
	if !p.Paused() {
		t.Error("Paused() false after Pause")
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	waitState('S')
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	p.Kill() // a paused process dies at once
	if done, err := p.Exited(); !done || err == nil {
		t.Errorf("after Kill: exited %v, err %v", done, err)
	}
	if err := p.Pause(); err == nil {
		t.Error("Pause of an exited process succeeded")
	}

	// Close kills what still runs.
	q, err := a.Start(ProcessConfig{Name: "sleeper2", Path: sleep, Args: []string{"300"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Close left a process running")
	}
	if _, err := os.Stat("/run/netns/" + a.Namespace()); !os.IsNotExist(err) {
		t.Errorf("namespace %s after Close: %v", a.Namespace(), err)
	}
}

func TestRemoveLeftovers(t *testing.T) {
	live, a, _, _ := threeHosts(t)
	// A crashed run: its owner (a process that has exited) no longer exists.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	run := "dead" + live.Run()[:2]
	br, ns, veth := "cnb"+run, nsPrefix+run+"-x", "cnv"+run+"01"
	t.Cleanup(func() {
		_ = ipCmd("link", "del", veth)
		_ = ipCmd("netns", "del", ns)
		_ = ipCmd("link", "del", br)
	})
	for _, s := range [][]string{
		{"link", "add", br, "type", "bridge"},
		{"link", "set", "dev", br, "alias", fmt.Sprintf("%srun=%s pid=%d start=1", aliasPrefix, run, dead.Process.Pid)},
		{"netns", "add", ns},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", veth, "master", br},
	} {
		if err := ipCmd(s...); err != nil {
			t.Fatal(err)
		}
	}
	var logged []string
	if err := RemoveLeftovers(func(f string, args ...any) { logged = append(logged, fmt.Sprintf(f, args...)) }); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{br, veth} {
		if ipCmd("link", "show", l) == nil {
			t.Errorf("leftover link %s still exists", l)
		}
	}
	if _, err := os.Stat("/run/netns/" + ns); !os.IsNotExist(err) {
		t.Errorf("leftover namespace %s still exists", ns)
	}
	// The live run is untouched.
	if _, err := os.Stat("/run/netns/" + a.Namespace()); err != nil {
		t.Errorf("live namespace %s removed: %v", a.Namespace(), err)
	}
	if err := ipCmd("link", "show", "cnb"+live.Run()); err != nil {
		t.Errorf("live bridge removed: %v", err)
	}
	t.Logf("removed: %s", strings.Join(logged, "; "))
}

func TestCheckAndConfig(t *testing.T) {
	Require(t)
	if _, err := New(Config{Subnet: netip.MustParsePrefix("8.8.8.0/24")}); err == nil {
		t.Error("a public subnet was accepted")
	}
	n := NewT(t, Config{Subnet: netip.MustParsePrefix("192.168.77.0/29")})
	for i := range 6 {
		if _, err := n.AddHost(fmt.Sprintf("h%d", i)); err != nil {
			t.Fatalf("host %d of a /29: %v", i, err)
		}
	}
	if _, err := n.AddHost("h6"); err == nil {
		t.Error("a /29 gave a 7th host (its broadcast address)")
	}
	if _, err := n.AddHost("h0"); err == nil {
		t.Error("a duplicate host name was accepted")
	}
	if _, err := n.AddHost("bad name"); err == nil {
		t.Error("a host name with a space was accepted")
	}
}
