package netns

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Fault is a set of iptables rules injected into hosts' namespaces; Heal removes them.
// Faults add up: two partitions drop what either drops.
type Fault struct {
	net   *Network
	id    int
	desc  string
	rules []rule
}

// rule is one iptables rule (the arguments after `-A CHAIN`) applied on host, in the
// filter table's fault chain (table "") or the nat table's (table "nat").
type rule struct {
	host  *Host
	table string
	args  string
}

// String describes the fault ("partition [c1] | [c2 c3]").
func (f *Fault) String() string { return f.desc }

// Heal removes the fault's rules. Healing a healed fault does nothing.
func (f *Fault) Heal() error {
	n := f.net
	n.mu.Lock()
	if _, ok := n.faults[f.id]; !ok {
		n.mu.Unlock()
		return nil
	}
	delete(n.faults, f.id)
	n.mu.Unlock()
	n.cfg.Logf("netns: heal %s", f.desc)
	return n.apply(hostsOf(f.rules))
}

// Partition cuts every host of a from every host of b in both directions: packets
// between them are dropped silently on arrival (senders see timeouts, not refusals).
// Traffic within a, within b, and with other hosts is untouched.
func (n *Network) Partition(a, b []*Host) (*Fault, error) {
	if err := checkSides(a, b); err != nil {
		return nil, err
	}
	var rules []rule
	for _, x := range a {
		for _, y := range b {
			rules = append(rules, rule{host: x, args: "-s " + y.addr.String() + "/32 -j DROP"},
				rule{host: y, args: "-s " + x.addr.String() + "/32 -j DROP"})
		}
	}
	return n.inject(fmt.Sprintf("partition %s | %s", names(a), names(b)), rules)
}

// PartitionOneWay drops the packets that hosts of from send to hosts of to; packets
// the other way pass. (Over TCP both directions suffer, as on a real asymmetric link:
// acknowledgements are lost too.)
func (n *Network) PartitionOneWay(from, to []*Host) (*Fault, error) {
	if err := checkSides(from, to); err != nil {
		return nil, err
	}
	var rules []rule
	for _, y := range to {
		for _, x := range from {
			rules = append(rules, rule{host: y, args: "-s " + x.addr.String() + "/32 -j DROP"})
		}
	}
	return n.inject(fmt.Sprintf("one-way %s -> %s", names(from), names(to)), rules)
}

// Isolate partitions h from every other host of the network except those in keep.
func (n *Network) Isolate(h *Host, keep ...*Host) (*Fault, error) {
	var others []*Host
	for _, o := range n.Hosts() {
		if o != h && !slices.Contains(keep, o) {
			others = append(others, o)
		}
	}
	return n.Partition([]*Host{h}, others)
}

// Loss drops each packet h receives from, or sends to, another host with probability
// p (iptables' statistic match; the kernel has no netem here). Loopback traffic is
// untouched.
func (n *Network) Loss(h *Host, p float64) (*Fault, error) {
	if p <= 0 || p > 1 {
		return nil, fmt.Errorf("netns: loss probability %v: want (0, 1]", p)
	}
	stat := fmt.Sprintf("-m statistic --mode random --probability %.4f -j DROP", p)
	rules := []rule{{host: h, args: "! -i lo " + stat}}
	for _, o := range n.Hosts() {
		if o != h {
			rules = append(rules, rule{host: o, args: "-s " + h.addr.String() + "/32 " + stat})
		}
	}
	return n.inject(fmt.Sprintf("loss %.0f%% on %s", p*100, h.name), rules)
}

// HealAll removes every fault.
func (n *Network) HealAll() error {
	n.mu.Lock()
	var hosts []*Host
	for id, f := range n.faults {
		hosts = append(hosts, hostsOf(f.rules)...)
		delete(n.faults, id)
	}
	n.mu.Unlock()
	return n.apply(hosts)
}

// Faults describes the faults in force.
func (n *Network) Faults() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, f := range n.faults {
		out = append(out, f.desc)
	}
	slices.Sort(out)
	return out
}

func (n *Network) inject(desc string, rules []rule) (*Fault, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errors.New("netns: network closed")
	}
	n.nextID++
	f := &Fault{net: n, id: n.nextID, desc: desc, rules: rules}
	n.faults[f.id] = f
	n.mu.Unlock()
	if err := n.apply(hostsOf(rules)); err != nil {
		_ = f.Heal()
		return nil, err
	}
	n.cfg.Logf("netns: inject %s", desc)
	return f, nil
}

// apply rewrites the fault chain of each host from the faults in force, atomically
// per host (iptables-restore).
func (n *Network) apply(hosts []*Host) error {
	n.applyMu.Lock() // serialised, so the last write of a chain reflects the newest faults
	defer n.applyMu.Unlock()
	n.mu.Lock()
	byHost := map[*Host][]string{}
	natByHost := map[*Host][]string{}
	ids := make([]int, 0, len(n.faults))
	for id := range n.faults {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		for _, r := range n.faults[id].rules {
			if r.table == "nat" {
				natByHost[r.host] = append(natByHost[r.host], r.args)
			} else {
				byHost[r.host] = append(byHost[r.host], r.args)
			}
		}
	}
	n.mu.Unlock()
	var errs []error
	seen := map[*Host]bool{}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		var b strings.Builder
		fmt.Fprintf(&b, "*filter\n:%s - [0:0]\n", faultChain) // declaring the chain flushes it
		for _, r := range byHost[h] {
			fmt.Fprintf(&b, "-A %s %s\n", faultChain, r)
		}
		b.WriteString("COMMIT\n")
		// The nat table's chain is made by the host's first redirect, so hosts that
		// never have one need no nat support in the kernel.
		newNat := !h.nat && len(natByHost[h]) > 0
		if h.nat || newNat {
			fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", faultChain)
			if newNat {
				fmt.Fprintf(&b, "-A OUTPUT -j %s\n", faultChain)
			}
			for _, r := range natByHost[h] {
				fmt.Fprintf(&b, "-A %s %s\n", faultChain, r)
			}
			b.WriteString("COMMIT\n")
		}
		if err := h.iptablesRestore(b.String()); err != nil {
			errs = append(errs, err)
		} else if newNat {
			h.nat = true
		}
	}
	return errors.Join(errs...)
}

func hostsOf(rules []rule) []*Host {
	var hs []*Host
	for _, r := range rules {
		if !slices.Contains(hs, r.host) {
			hs = append(hs, r.host)
		}
	}
	return hs
}

func checkSides(a, b []*Host) error {
	if len(a) == 0 || len(b) == 0 {
		return errors.New("netns: a partition needs hosts on both sides")
	}
	for _, x := range a {
		if slices.Contains(b, x) {
			return fmt.Errorf("netns: host %s is on both sides of a partition", x.name)
		}
	}
	return nil
}

func names(hs []*Host) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.name
	}
	return "[" + strings.Join(s, " ") + "]"
}
