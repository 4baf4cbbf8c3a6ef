package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Shape is what a link does to the bytes crossing it in one direction: a one-way
// delay with jitter and a token-bucket bandwidth cap. The zero Shape passes bytes as
// they come.
type Shape struct {
	// Delay is the one-way delay every byte waits before it is sent on.
	Delay time.Duration
	// Jitter spreads the delay uniformly over [Delay-Jitter, Delay+Jitter] (at least
	// 0), per chunk read; bytes never overtake earlier bytes of their connection, so
	// a chunk whose draw is shorter than its predecessor's waits for it.
	Jitter time.Duration
	// Rate caps the bytes per second through this direction of the link, summed
	// over its connections (0: no cap).
	Rate int64
	// Burst is the token bucket's depth in bytes (default: 16 KiB, or Rate/100 when
	// that is larger); reads are at most this size (and 64 KiB).
	Burst int
}

func (s Shape) burst() int {
	if s.Burst > 0 {
		return s.Burst
	}
	return max(16<<10, int(s.Rate/100))
}

func (s Shape) String() string {
	out := fmt.Sprintf("delay %v", s.Delay)
	if s.Jitter > 0 {
		out += fmt.Sprintf("±%v", s.Jitter)
	}
	if s.Rate > 0 {
		out += fmt.Sprintf(", %.1f Mbit/s", float64(s.Rate)*8/1e6)
	}
	return out
}

// ProxyConfig configures a Proxy.
type ProxyConfig struct {
	// Listen is the address the proxy listens on in its host's namespace (default:
	// the host's address, a free port).
	Listen string
	// Target is the address every accepted connection is forwarded to, dialled from
	// the proxy's host.
	Target string
	// Forward shapes bytes from the client to Target; Back shapes the replies.
	Forward, Back Shape
	// Seed seeds the jitter draws (0: random).
	Seed uint64
}

// Proxy is a userspace TCP proxy on a test host that delays, jitters and caps the
// bytes of the connections it forwards, per direction, keeping each connection's byte
// order. (This kernel has no netem qdisc; the proxy is how the harness shapes links.)
// Traffic reaches it by address (start a process pointing at Addr) or through
// Network.Redirect, which rewrites connections to the real target inside the client
// hosts so TLS names and addresses stay as they are.
type Proxy struct {
	host   *Host
	cfg    ProxyConfig
	ln     net.Listener
	fwd    *bucket
	back   *bucket
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards conns, nconns and cfg's shapes
	conns  map[net.Conn]struct{}
	nconns int
	rngMu  sync.Mutex // guards rng (the jitter draws)
	rng    *rand.Rand
}

// StartProxy starts a proxy in h's namespace. Close stops it; the network closes it
// on Close too.
func (h *Host) StartProxy(cfg ProxyConfig) (*Proxy, error) {
	if cfg.Target == "" {
		return nil, errors.New("netns: proxy needs a target")
	}
	if cfg.Listen == "" {
		cfg.Listen = netip.AddrPortFrom(h.addr, 0).String()
	}
	ln, err := h.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("netns: proxy on %s: %w", h.name, err)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{host: h, cfg: cfg, ln: ln, fwd: newBucket(cfg.Forward), back: newBucket(cfg.Back),
		ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	h.net.mu.Lock()
	if h.net.closed {
		h.net.mu.Unlock()
		ln.Close()
		cancel()
		return nil, errors.New("netns: network closed")
	}
	h.net.proxies = append(h.net.proxies, p)
	h.net.mu.Unlock()
	p.wg.Add(1)
	go p.accept()
	h.net.cfg.Logf("netns: proxy %s -> %s on %s (forward %v; back %v)", ln.Addr(), cfg.Target, h.name, cfg.Forward, cfg.Back)
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() netip.AddrPort { return p.ln.Addr().(*net.TCPAddr).AddrPort() }

// Host is the host the proxy runs on.
func (p *Proxy) Host() *Host { return p.host }

// Conns is the number of connections the proxy has accepted.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nconns
}

// Close stops accepting, closes every forwarded connection and waits for the
// proxy's goroutines. It is safe to call more than once.
func (p *Proxy) Close() error {
	p.cancel()
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.mu.Lock()
		p.nconns++
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve forwards one connection: dial the target from the proxy's host, then pump
// both directions until either side closes. A half-close is passed on (CloseWrite),
// so request/response protocols that end their request with EOF work.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	up, err := p.host.DialContext(ctx, "tcp", p.cfg.Target)
	cancel()
	if err != nil {
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(up, client, false, p.fwd) }()
	go func() { defer wg.Done(); p.pump(client, up, true, p.back) }()
	wg.Wait()
}

// chunk is bytes read from one side, to be written to the other at due.
type chunk struct {
	b   []byte
	due time.Time
	eof bool
}

// pump copies src to dst through shape: a reader takes tokens for each chunk it
// reads and stamps it with its due time (arrival + delay ± jitter, never before the
// previous chunk's); a writer writes each chunk at its due time, in order. The queue
// between them holds what is "on the wire", so a long delay does not stall reading.
func (p *Proxy) pump(dst, src net.Conn, back bool, tb *bucket) {
	q := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var t *time.Timer
		for c := range q {
			if d := time.Until(c.due); d > 0 {
				if t == nil {
					t = time.NewTimer(d)
				} else {
					t.Reset(d)
				}
				select {
				case <-t.C:
				case <-p.ctx.Done():
					return
				}
			}
			if c.eof {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				} else {
					dst.Close()
				}
				return
			}
			if _, err := dst.Write(c.b); err != nil {
				src.Close() // the reader stops too
				return
			}
		}
	}()
	var last time.Time
	reset := false
	buf := make([]byte, 64<<10)
	for {
		size := len(buf)
		if s := p.shape(back); s.Rate > 0 {
			size = min(size, s.burst()) // a read never takes more than the bucket holds
		}
		n, err := src.Read(buf[:size])
		if n > 0 {
			b := append([]byte(nil), buf[:n]...) // queued: its own copy, exactly n bytes
			if !tb.take(p.ctx, n) {              // takes at most the depth at read time (SetShape may lower it: one longer wait)
				reset = true
				break
			}
			due := time.Now().Add(p.delay(p.shape(back))) // the shape now, not when the read began
			if due.Before(last) {
				due = last
			}
			last = due
			select {
			case q <- chunk{b: b, due: due}:
			case <-done:
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				due := time.Now().Add(p.delay(p.shape(back)))
				if due.Before(last) {
					due = last
				}
				select {
				case q <- chunk{due: due, eof: true}:
				case <-done:
				}
			} else {
				reset = true
			}
			break
		}
	}
	close(q)
	<-done
	if reset {
		dst.Close() // a broken source breaks the other side too, so its pump ends
	}
}

// shape is the current shape of one direction.
func (p *Proxy) shape(back bool) Shape {
	p.mu.Lock()
	defer p.mu.Unlock()
	if back {
		return p.cfg.Back
	}
	return p.cfg.Forward
}

// SetShape changes both directions' shapes, for the bytes read from now on (those
// already queued keep their due times; connections stay open).
func (p *Proxy) SetShape(forward, back Shape) {
	p.mu.Lock()
	p.cfg.Forward, p.cfg.Back = forward, back
	p.mu.Unlock()
	p.fwd.set(forward)
	p.back.set(back)
	p.host.net.cfg.Logf("netns: proxy %s -> %s: forward %v; back %v", p.Addr(), p.cfg.Target, forward, back)
}

func (p *Proxy) delay(s Shape) time.Duration {
	d := s.Delay
	if s.Jitter > 0 {
		p.rngMu.Lock()
		d += time.Duration(p.rng.Int64N(int64(2*s.Jitter)+1)) - s.Jitter
		p.rngMu.Unlock()
	}
	return max(d, 0)
}

// bucket is a token bucket of bytes, shared by one direction's connections.
type bucket struct {
	rate  float64 // bytes per second; 0: unlimited
	depth float64
	mu    sync.Mutex
	level float64
	at    time.Time
}

func newBucket(s Shape) *bucket {
	return &bucket{rate: float64(s.Rate), depth: float64(s.burst()), level: float64(s.burst()), at: time.Now()}
}

// set changes the bucket's rate and depth (the level is kept, capped at the depth).
func (b *bucket) set(s Shape) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.rate > 0 {
		b.level = min(b.depth, b.level+now.Sub(b.at).Seconds()*b.rate)
	}
	b.at = now
	b.rate, b.depth = float64(s.Rate), float64(s.burst())
	b.level = min(b.level, b.depth)
}

// take waits until n bytes' tokens are available and takes them (n ≤ depth). It
// returns false when ctx ends first.
func (b *bucket) take(ctx context.Context, n int) bool {
	b.mu.Lock()
	if b.rate <= 0 {
		b.mu.Unlock()
		return true
	}
	now := time.Now()
	b.level = min(b.depth, b.level+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	b.level -= float64(n) // may go negative: the debt is the wait, and later takers queue behind it
	wait := time.Duration(-b.level / b.rate * float64(time.Second))
	b.mu.Unlock()
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Redirect makes connections that the hosts of from open to target (an address and
// TCP port of a host on this network) go to the proxy instead (iptables DNAT in the
// from hosts' own namespaces). The clients still address the target, so its TLS name
// is checked as before; the target sees connections from the proxy's host. Only new
// connections are redirected: close existing ones (restart the client) to move them.
// Heal removes the redirection.
func (n *Network) Redirect(from []*Host, target netip.AddrPort, p *Proxy) (*Fault, error) {
	if len(from) == 0 {
		return nil, errors.New("netns: redirect needs client hosts")
	}
	var rules []rule
	for _, h := range from {
		if h == p.host {
			return nil, fmt.Errorf("netns: host %s runs the proxy; it cannot be redirected through it", h.name)
		}
		rules = append(rules, rule{host: h, table: "nat", args: fmt.Sprintf("-p tcp -d %s/32 --dport %d -j DNAT --to-destination %s",
			target.Addr(), target.Port(), p.Addr())})
	}
	return n.inject(fmt.Sprintf("redirect %s -> %s via %s", names(from), target, p.Addr()), rules)
}
