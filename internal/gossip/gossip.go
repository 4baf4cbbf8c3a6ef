// Package gossip runs a memberlist (SWIM) member for a Cohort process: coordinators
// and node agents join one gossip pool with the coordinators as seeds, and each member
// carries its roles and gRPC address as metadata.
//
// Gossip is a hint only. The coordinator leader decides that a node is down when the
// node's heartbeat TTL expires; a gossip "dead" event is logged and counted (and may be
// used to look at that node early), never acted on by itself: faster failure detection
// configs raise false alarms under CPU load.
package gossip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Meta is the metadata a member gossips about itself.
type Meta struct {
	// Roles are the member's roles: "coordinator", "worker", "paramserver".
	Roles []string `json:"roles"`
	// GRPCAddr is the member's gRPC address (a coordinator's API, or a node agent's
	// data address when it has one).
	GRPCAddr string `json:"grpc_addr,omitempty"`
	// NodeID is the member's coordinator or node ID.
	NodeID string `json:"node_id,omitempty"`
}

// maxMetaBytes is memberlist's limit on a member's metadata.
const maxMetaBytes = memberlist.MetaMaxSize

// EventKind is what happened to a member.
type EventKind int

// Member events.
const (
	EventJoin EventKind = iota
	EventLeave
	EventUpdate
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	}
	return "unknown"
}

// Member is one member of the pool as gossip sees it.
type Member struct {
	Name string
	Addr string // gossip address host:port
	Meta Meta
}

// Config configures a gossip member.
type Config struct {
	// Name is this member's unique name in the pool (for example the node ID).
	Name string
	// BindAddr is the host:port gossip listens on (TCP and UDP); port 0 picks one.
	BindAddr string
	// AdvertiseAddr is the host:port others reach this member at; empty means BindAddr.
	AdvertiseAddr string
	// Seeds are gossip addresses of members to join (the coordinators').
	Seeds []string
	// Meta is this member's metadata.
	Meta Meta
	// SecretKey, when set (16, 24 or 32 bytes), encrypts gossip with AES-GCM.
	SecretKey []byte
	// Keys, when set, is a keyring (each key 16, 24 or 32 bytes; Keys[0] encrypts,
	// every key decrypts) that SetKeys changes while the member runs. It replaces
	// SecretKey.
	Keys [][]byte
	// LAN selects memberlist's LAN timing (the default); false selects its loopback
	// timing, for tests.
	LAN bool
	// OnEvent, when set, receives member events (hints, see the package doc).
	OnEvent func(EventKind, Member)
	// Logger receives logs; nil means slog.Default().
	Logger *slog.Logger
	// Registry, when set, receives cohort_gossip_* metrics.
	Registry prometheus.Registerer
}

// DefaultConfig returns a Config with LAN timing; Name, BindAddr and Meta still need to
// be set.
func DefaultConfig() Config { return Config{BindAddr: "0.0.0.0:7946", LAN: true} }

// Gossip is a running member.
type Gossip struct {
	list   *memberlist.Memberlist
	keys   *memberlist.Keyring // nil unless Config.Keys
	logger *slog.Logger
	events *prometheus.CounterVec
	once   sync.Once
}

// New starts a member and joins the seeds (when any). Failing to reach every seed is
// not an error (the pool is a hint; the member keeps retrying through gossip from
// whoever contacts it), but it is logged.
func New(cfg Config) (*Gossip, error) {
	if cfg.Name == "" {
		return nil, errors.New("gossip: config: Name is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	meta, err := json.Marshal(cfg.Meta)
	if err != nil {
		return nil, fmt.Errorf("gossip: encode metadata: %w", err)
	}
	if len(meta) > maxMetaBytes {
		return nil, fmt.Errorf("gossip: metadata is %d bytes, limit %d", len(meta), maxMetaBytes)
	}
	switch len(cfg.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("gossip: secret key is %d bytes, want 16, 24 or 32", len(cfg.SecretKey))
	}
	mc := memberlist.DefaultLocalConfig()
	if cfg.LAN {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = cfg.Name
	host, port, err := splitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip: bind address: %w", err)
	}
	mc.BindAddr, mc.BindPort = host, port
	if cfg.AdvertiseAddr != "" {
		ahost, aport, err := splitHostPort(cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("gossip: advertise address: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ahost, aport
	}
	mc.SecretKey = cfg.SecretKey
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys[1:], cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: keyring: %w", err)
		}
		mc.SecretKey, mc.Keyring = nil, kr
	}
	mc.Logger = log.New(io.Discard, "", 0)
	g := &Gossip{
		logger: cfg.Logger.With("component", "gossip"),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cohort_gossip_member_events_total",
			Help: "Gossip member events seen by this process (hints; heartbeat TTLs decide node health).",
		}, []string{"event"}),
	}
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(g.events); err != nil {
			return nil, fmt.Errorf("gossip: register metrics: %w", err)
		}
	}
	d := &delegate{meta: meta, g: g, onEvent: cfg.OnEvent}
	mc.Delegate, mc.Events = d, d
	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start member %q: %w", cfg.Name, err)
	}
	g.list, g.keys = list, mc.Keyring
	if len(cfg.Seeds) > 0 {
		n, err := list.Join(cfg.Seeds)
		if err != nil {
			g.logger.Warn("could not reach every gossip seed", "seeds", cfg.Seeds, "reached", n, "err", err)
		}
	}
	return g, nil
}

// LocalAddr returns the address this member gossips at.
func (g *Gossip) LocalAddr() string {
	n := g.list.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Members returns the members gossip believes alive, this one included.
func (g *Gossip) Members() []Member {
	var out []Member
	for _, n := range g.list.Members() {
		out = append(out, toMember(n))
	}
	return out
}

// Join contacts more members (for example, coordinators that came up later).
func (g *Gossip) Join(addrs []string) error {
	if _, err := g.list.Join(addrs); err != nil {
		return fmt.Errorf("gossip: join %v: %w", addrs, err)
	}
	return nil
}

// leaveTimeout bounds how long Shutdown waits for its leave message to go out.
// memberlist's Leave(0) waits for ever, and it never returns when every peer it still
// believes alive leaves at the same moment (its broadcast then has nobody to go to):
// a node agent that stops with its cluster would hang its process.
const leaveTimeout = 3 * time.Second

// Shutdown leaves the pool gracefully (so others see a leave, not a failure) and stops.
// When the leave message cannot go out within leaveTimeout (no peer is left to take
// it), Shutdown stops anyway; peers then see a failure instead of a leave.
func (g *Gossip) Shutdown() error {
	var err error
	g.once.Do(func() {
		if lerr := g.list.Leave(leaveTimeout); lerr != nil {
			g.logger.Warn("gossip leave was not broadcast; peers will see a failure instead", "err", lerr)
		}
		err = g.list.Shutdown()
	})
	return err
}

func toMember(n *memberlist.Node) Member {
	m := Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	_ = json.Unmarshal(n.Meta, &m.Meta) // a member with unreadable metadata still counts
	return m
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// delegate supplies metadata and receives member events.
type delegate struct {
	meta    []byte
	g       *Gossip
	onEvent func(EventKind, Member)
}

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) event(k EventKind, n *memberlist.Node) {
	m := toMember(n)
	d.g.events.WithLabelValues(k.String()).Inc()
	level := slog.LevelDebug
	if k == EventLeave {
		level = slog.LevelInfo
	}
	d.g.logger.Log(context.Background(), level, "gossip member "+k.String()+" (hint)", "member", m.Name, "addr", m.Addr,
		"roles", strings.Join(m.Meta.Roles, ","))
	if d.onEvent != nil {
		d.onEvent(k, m)
	}
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.event(EventJoin, n) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.event(EventLeave, n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.event(EventUpdate, n) }

// SetKeys makes the keyring exactly keys, keys[0] the primary: new keys are installed
// first, then the primary is switched, then keys no longer listed are removed. It is
// an error on a member started without Config.Keys.
func (g *Gossip) SetKeys(keys [][]byte) error {
	if g.keys == nil {
		return errors.New("gossip: this member was started without a keyring")
	}
	if len(keys) == 0 {
		return errors.New("gossip: an empty keyring")
	}
	have := g.keys.GetKeys()
	for _, k := range keys {
		if !slices.ContainsFunc(have, func(h []byte) bool { return bytes.Equal(h, k) }) {
			if err := g.keys.AddKey(k); err != nil {
				return fmt.Errorf("gossip: install key: %w", err)
			}
		}
	}
	if !bytes.Equal(g.keys.GetPrimaryKey(), keys[0]) {
		if err := g.keys.UseKey(keys[0]); err != nil {
			return fmt.Errorf("gossip: use key: %w", err)
		}
	}
	for _, h := range g.keys.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(h, k) }) {
			if err := g.keys.RemoveKey(h); err != nil {
				return fmt.Errorf("gossip: remove key: %w", err)
			}
		}
	}
	return nil
}

// Keys returns the keyring, the primary first (nil without one).
func (g *Gossip) Keys() [][]byte {
	if g.keys == nil {
		return nil
	}
	primary := g.keys.GetPrimaryKey()
	out := [][]byte{primary}
	for _, k := range g.keys.GetKeys() {
		if !bytes.Equal(k, primary) {
			out = append(out, k)
		}
	}
	return out
}
