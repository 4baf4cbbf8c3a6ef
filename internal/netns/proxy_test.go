package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// proxied is hosts a (client), b (proxy) and c (an echo server on port 9000), with a's
// connections to the echo server redirected through a proxy on b shaped by fwd and back.
func proxied(t *testing.T, fwd, back Shape) (a *Host, echo string, p *Proxy) {
	t.Helper()
	n, a, b, c := threeHosts(t)
	echo = echoServer(t, c, 9000)
	p, err := b.StartProxy(ProxyConfig{Target: echo, Forward: fwd, Back: back, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Redirect([]*Host{a}, netip.MustParseAddrPort(echo), p); err != nil {
		t.Fatal(err)
	}
	return a, echo, p
}

// TestProxyDelay measures that every request/response round trip through the proxy
// takes at least twice the one-way delay less the jitter, and that jittered chunks
// keep their order.
func TestProxyDelay(t *testing.T) {
	const delay, jitter = 20 * time.Millisecond, 8 * time.Millisecond
	shape := Shape{Delay: delay, Jitter: jitter}
	a, echo, p := proxied(t, shape, shape)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	floor := 2 * (delay - jitter)
	var shortest time.Duration
	buf := make([]byte, 5)
	for i := range 20 {
		start := time.Now()
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(start)
		if string(buf) != "ping\n" {
			t.Fatalf("echo %q", buf)
		}
		if rtt < floor {
			t.Errorf("round trip %d took %v through a proxy delaying %v±%v each way: want at least %v", i, rtt, delay, jitter, floor)
		}
		if i == 0 || rtt < shortest {
			shortest = rtt
		}
	}
	t.Logf("shortest of 20 round trips: %v (floor %v)", shortest, floor)
	if p.Conns() != 1 {
		t.Errorf("proxy accepted %d connections, want 1 (the redirected dial)", p.Conns())
	}

	// A new shape applies to the open connection.
	const longer = 40 * time.Millisecond
	p.SetShape(Shape{Delay: longer}, Shape{Delay: longer})
	start := time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 2*longer {
		t.Errorf("round trip after SetShape(%v each way) took %v: want at least %v", longer, rtt, 2*longer)
	}
	p.SetShape(shape, shape)

	// Many small writes, each read as its own chunk with its own jitter draw: the
	// echo must come back byte for byte in order.
	var sent bytes.Buffer
	for i := range 2000 {
		sent.Write([]byte{byte(i), byte(i >> 8), '\n'})
	}
	msgs := sent.Bytes()
	go func() {
		for i := range 2000 {
			if _, err := c.Write(msgs[3*i : 3*i+3]); err != nil {
				return
			}
			if i%50 == 0 {
				time.Sleep(time.Millisecond) // spread the writes over many proxy reads
			}
		}
	}()
	got := make([]byte, 2000*3)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msgs) {
		t.Fatal("bytes came back reordered or changed through the jittering proxy")
	}
}

// TestProxyBandwidth sends 2 MiB through an echo behind a proxy capped at 1 MiB/s
// forward and 512 KiB/s back: the bytes come back intact (hash), and at every moment
// the bytes received since the first write are at most cap × elapsed + burst.
func TestProxyBandwidth(t *testing.T) {
	const size = 2 << 20
	fwd := Shape{Rate: 1 << 20, Burst: 16 << 10}
	back := Shape{Rate: 512 << 10, Burst: 16 << 10, Delay: 5 * time.Millisecond}
	a, echo, _ := proxied(t, fwd, back)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- err
	}()
	h := sha256.New()
	var got int
	buf := make([]byte, 8<<10)
	for got < size {
		n, err := c.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			got += n
			elapsed := time.Since(start) // observed no earlier than the proxy sent it
			if bound := float64(back.Rate)*elapsed.Seconds() + float64(back.Burst); float64(got) > bound {
				t.Fatalf("%d bytes back after %v: over the cap's %0.f (512 KiB/s + 16 KiB burst)", got, elapsed, bound)
			}
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
	}
	elapsed := time.Since(start)
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the echoed bytes differ from those sent (hash)")
	}
	t.Logf("2 MiB echoed in %v: %.0f KiB/s against a 512 KiB/s cap back", elapsed, float64(size)/1024/elapsed.Seconds())
}

// TestRedirectHeal checks that healing a redirect sends new connections straight to
// the target again.
func TestRedirectHeal(t *testing.T) {
	n, a, b, c := threeHosts(t)
	echo := echoServer(t, c, 9000)
	p, err := b.StartProxy(ProxyConfig{Target: echo})
	if err != nil {
		t.Fatal(err)
	}
	f, err := n.Redirect([]*Host{a}, netip.MustParseAddrPort(echo), p)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(a, echo, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Conns() != 1 {
		t.Fatalf("proxy accepted %d connections, want 1", p.Conns())
	}
	if err := f.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(a, echo, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Conns() != 1 {
		t.Fatalf("proxy accepted %d connections after the heal, want still 1", p.Conns())
	}
	// Redirected again: through the proxy, with one jump to the nat fault chain.
	if _, err := n.Redirect([]*Host{a}, netip.MustParseAddrPort(echo), p); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(a, echo, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Conns() != 2 {
		t.Fatalf("proxy accepted %d connections after the second redirect, want 2", p.Conns())
	}
	out, err := a.Command(context.Background(), "iptables", "-t", "nat", "-S", "OUTPUT").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -t nat -S OUTPUT: %v: %s", err, out)
	}
	if got := strings.Count(string(out), "-j "+faultChain); got != 1 {
		t.Fatalf("nat OUTPUT of %s jumps to %s %d times, want 1:\n%s", a, faultChain, got, out)
	}
	if _, err := n.Redirect([]*Host{b}, netip.MustParseAddrPort(echo), p); err == nil {
		t.Fatal("redirecting the proxy's own host through it: want an error")
	}
}
