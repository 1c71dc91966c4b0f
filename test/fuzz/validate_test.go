package fuzz

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
)

// Choices for the enumerated fields: the valid values and near misses.
var (
	chains    = []fwv1.Chain{fwv1.ChainInput, fwv1.ChainForward, fwv1.ChainOutput, "", "INPUT", "Prerouting", fwv1.ChainPreRouting}
	actions   = []fwv1.Action{fwv1.ActionAccept, fwv1.ActionDrop, fwv1.ActionReject, "", "ACCEPT", "Log"}
	protocols = []fwv1.Protocol{"", fwv1.ProtocolTCP, fwv1.ProtocolUDP, fwv1.ProtocolSCTP, fwv1.ProtocolICMP, fwv1.ProtocolICMPv6, "tcp", "GRE", "41", "47"}
	modes     = []fwv1.PolicyMode{"", fwv1.PolicyModeEnforce, fwv1.PolicyModeAudit, "Dry"}
	states    = []fwv1.ConnState{fwv1.ConnStateNew, fwv1.ConnStateEstablished, fwv1.ConnStateRelated, fwv1.ConnStateInvalid, "Untracked"}
)

func choose[T any](list []T, i uint8) T { return list[int(i)%len(list)] }

// FuzzValidateRule builds a NodeFirewall from one fuzzed rule, repeated
// up to eight times so that runs of rules become set lookups, and checks:
// Validate and Compile never panic; Compile succeeds exactly when Validate
// accepts; and every port and address in the compiled ruleset is in range,
// of its rule's or set's family, and inside what the rule asked for.
func FuzzValidateRule(f *testing.F) {
	type seed struct {
		policy, name                 string
		chain, action, proto, mode   uint8
		port1, end1, port2, end2     int32
		src1, src2, dst, inIf, outIf string
		states                       uint8
		log                          bool
		copies                       uint8
	}
	for _, s := range []seed{
		{"worker", "kubelet", 0, 0, 1, 1, 10250, 0, 0, 0, "", "", "", "", "", 0, false, 0},
		{"worker", "nodeports", 0, 0, 1, 1, 30000, 32767, 0, 0, "10.0.0.0/8", "", "", "eth0", "", 0, false, 3},
		{"worker", "nodeports-before-dnat", 6, 0, 1, 1, 30000, 32767, 0, 0, "10.0.0.0/8", "", "", "eth0", "", 0, false, 3},
		{"p", "nodeports-elsewhere", 6, 2, 2, 1, 30000, 32767, 0, 0, "", "", "", "", "", 1, true, 7},
		{"p", "out-on-prerouting", 6, 1, 1, 1, 30000, 0, 0, 0, "", "", "", "", "eth0", 0, false, 0},
		{"p", "all-ports", 1, 1, 2, 2, 1, 65535, 53, 53, "10.244.0.0/16", "fd00::/8", "192.0.2.1", "", "cni+", 0, false, 7},
		{"p", "v6", 2, 2, 3, 1, 5000, 6000, 0, 0, "2001:db8::/32", "::ffff:10.1.2.3", "fe80::/10", "", "eth+", 3, true, 1},
		{"p", "host-bits", 0, 1, 1, 2, 22, 0, 0, 0, "10.1.2.3/8", "", "0.0.0.0/0", "+", "", 1, false, 4},
		{"p", "icmp", 0, 1, 4, 1, 0, 0, 0, 0, "", "", "", "", "", 0, false, 5},
		// Invalid on purpose.
		{"p", "bad-port", 0, 1, 1, 1, 0, 0, 65536, 70000, "", "", "", "", "", 0, false, 0},
		{"p", "end-below", 0, 1, 1, 1, 100, 99, 0, 0, "", "", "", "", "", 0, false, 0},
		{"p", "zone", 0, 1, 1, 1, 22, 0, 0, 0, "fe80::1%eth0", "", "", "", "", 0, false, 0},
		{"p", "bad-cidr", 0, 1, 1, 1, 22, 0, 0, 0, "10.0.0.0/33", "1.2.3", "", "", "", 0, false, 0},
		{"p", "ports-icmp", 0, 1, 4, 1, 22, 0, 0, 0, "", "", "", "", "", 0, false, 0},
		{"P", "Upper", 5, 5, 7, 3, 22, 0, 0, 0, "", "", "", "eth0", "eth1", 4, false, 0},
		{"p", "iface-on-output", 2, 1, 0, 1, 0, 0, 0, 0, "", "", "", "averylonginterfacename", "", 0, false, 0},
	} {
		f.Add(s.policy, s.name, s.chain, s.action, s.proto, s.mode, s.port1, s.end1, s.port2, s.end2,
			s.src1, s.src2, s.dst, s.inIf, s.outIf, s.states, s.log, s.copies)
	}
	f.Fuzz(func(t *testing.T, policy, name string, chain, action, proto, mode uint8, port1, end1, port2, end2 int32,
		src1, src2, dst, inIf, outIf string, stateBits uint8, log bool, copies uint8) {
		r := fwv1.NodeFirewallRule{
			Policy: policy, Name: name, Chain: choose(chains, chain), Action: choose(actions, action),
			Protocol: choose(protocols, proto), Mode: choose(modes, mode),
			InInterface: inIf, OutInterface: outIf, Log: log,
		}
		for _, p := range [][2]int32{{port1, end1}, {port2, end2}} {
			if p != [2]int32{} {
				r.Ports = append(r.Ports, fwv1.PortRange{Port: p[0], EndPort: p[1]})
			}
		}
		for _, s := range []string{src1, src2} {
			if s != "" {
				r.Sources = append(r.Sources, s)
			}
		}
		if dst != "" {
			r.Destinations = []string{dst}
		}
		for i, s := range states {
			if stateBits&(1<<i) != 0 {
				r.States = append(r.States, s)
			}
		}
		spec := fwv1.NodeFirewallSpec{DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}}
		for i := range 1 + int(copies%8) {
			c := *r.DeepCopy()
			if i > 0 {
				c.Name += "-" + strconv.Itoa(i)
			}
			spec.Rules = append(spec.Rules, c)
		}
		opts := compile.Options{FailsafeInbound: compile.DefaultFailsafeInbound(), FailsafeOutbound: compile.DefaultFailsafeOutbound()}

		verr := reference.Validate(spec)
		rs, cerr := compile.Compile(spec, opts)
		switch {
		case verr == nil && cerr != nil:
			t.Fatalf("Validate accepts the rule, Compile fails: %v\nrule: %+v", cerr, r)
		case verr != nil && cerr == nil:
			t.Fatalf("Validate refuses the rule (%v), Compile accepts it\nrule: %+v", verr, r)
		case verr != nil:
			if !strings.HasPrefix(verr.Error(), "rules[") {
				t.Fatalf("error does not name the field: %v", verr)
			}
			return
		}
		if text := compile.Render(rs); !strings.Contains(text, "table inet "+rs.Table) {
			t.Fatalf("Render does not name the table:\n%s", text)
		}
		checkRanges(t, rs, r, opts)
	})
}

// checkRanges checks every port and address of rs against the rule it was
// compiled from (and the failsafes, for ports).
func checkRanges(t *testing.T, rs *compile.Ruleset, r fwv1.NodeFirewallRule, opts compile.Options) {
	t.Helper()
	var ports []compile.PortInterval
	for _, p := range r.Ports {
		ports = append(ports, compile.PortInterval{First: uint16(p.Port), Last: uint16(p.Last())})
	}
	for _, f := range slices.Concat(opts.FailsafeInbound, opts.FailsafeOutbound) {
		ports = append(ports, f.Ports)
	}
	portOK := func(pi compile.PortInterval) bool {
		return pi.First >= 1 && pi.First <= pi.Last && covered(ports, pi)
	}
	sources, dests := prefixes(t, r.Sources), prefixes(t, r.Destinations)
	prefixOK := func(p netip.Prefix, fam compile.Family, within []netip.Prefix) bool {
		if !p.IsValid() || p != p.Masked() || !familyOf(p.Addr(), fam) {
			return false
		}
		return slices.ContainsFunc(within, func(in netip.Prefix) bool { return in.Bits() <= p.Bits() && in.Contains(p.Addr()) })
	}
	for _, c := range rs.Chains {
		for _, rule := range c.Rules {
			for _, pi := range rule.DPorts {
				if !portOK(pi) {
					t.Fatalf("chain %s: port interval %v is outside the rule's ports and the failsafes %v\nrule: %+v", c.Name, pi, ports, r)
				}
			}
			if (len(rule.SAddrs) > 0 || len(rule.DAddrs) > 0) && rule.Family == compile.FamilyAny {
				t.Fatalf("chain %s: a rule with addresses has no family: %+v", c.Name, rule)
			}
			for _, p := range rule.SAddrs {
				if !prefixOK(p, rule.Family, sources) {
					t.Fatalf("chain %s: source %v (family %v) is not inside the rule's sources %v", c.Name, p, rule.Family, sources)
				}
			}
			for _, p := range rule.DAddrs {
				if !prefixOK(p, rule.Family, dests) {
					t.Fatalf("chain %s: destination %v (family %v) is not inside the rule's destinations %v", c.Name, p, rule.Family, dests)
				}
			}
			if rule.Lookup != "" && rs.Set(rule.Lookup) == nil {
				t.Fatalf("chain %s: lookup of a missing set %q", c.Name, rule.Lookup)
			}
		}
	}
	proto := map[fwv1.Protocol]uint8{fwv1.ProtocolTCP: 6, fwv1.ProtocolUDP: 17, fwv1.ProtocolSCTP: 132, fwv1.ProtocolICMP: 1, fwv1.ProtocolICMPv6: 58}
	for _, s := range rs.Sets {
		if s.Family != compile.FamilyIPv4 && s.Family != compile.FamilyIPv6 {
			t.Fatalf("set %s has family %v", s.Name, s.Family)
		}
		for _, e := range s.Elements {
			for _, fld := range s.Fields {
				switch fld {
				case compile.FieldL4Proto:
					if e.L4Proto.First > e.L4Proto.Last {
						t.Fatalf("set %s: protocol range %v", s.Name, e.L4Proto)
					}
					if n, ok := proto[r.Protocol]; ok && (e.L4Proto.First != n || e.L4Proto.Last != n) {
						t.Fatalf("set %s: protocol range %v for protocol %s", s.Name, e.L4Proto, r.Protocol)
					}
				case compile.FieldDPort:
					if !portOK(e.DPort) {
						t.Fatalf("set %s: port range %v is outside the rule's ports %v", s.Name, e.DPort, ports)
					}
				case compile.FieldSAddr:
					checkAddrRange(t, s, "source", e.SAddr, sources)
				case compile.FieldDAddr:
					checkAddrRange(t, s, "destination", e.DAddr, dests)
				}
			}
		}
	}
}

// covered reports whether the union of list covers pi.
func covered(list []compile.PortInterval, pi compile.PortInterval) bool {
	for p := int(pi.First); p <= int(pi.Last); {
		next := -1
		for _, in := range list {
			if int(in.First) <= p && p <= int(in.Last) {
				next = max(next, int(in.Last)+1)
			}
		}
		if next < 0 {
			return false
		}
		p = next
	}
	return true
}

func checkAddrRange(t *testing.T, s compile.Set, what string, r compile.AddrRange, within []netip.Prefix) {
	t.Helper()
	if !r.First.IsValid() || !r.Last.IsValid() || !familyOf(r.First, s.Family) || !familyOf(r.Last, s.Family) ||
		r.First.Compare(r.Last) > 0 {
		t.Fatalf("set %s (family %v): %s range %v-%v", s.Name, s.Family, what, r.First, r.Last)
	}
	if len(within) == 0 {
		return
	}
	if !slices.ContainsFunc(within, func(in netip.Prefix) bool { return in.Contains(r.First) && in.Contains(r.Last) }) {
		t.Fatalf("set %s: %s range %v-%v is not inside the rule's %v", s.Name, what, r.First, r.Last, within)
	}
}

// prefixes parses addresses the way the API means them: an address is a
// host prefix, a CIDR's host bits are cleared.
func prefixes(t *testing.T, addrs []string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range addrs {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				t.Fatalf("Validate accepted the CIDR %q: %v", s, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			t.Fatalf("Validate accepted the address %q (%v)", s, err)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

func familyOf(a netip.Addr, fam compile.Family) bool {
	switch fam {
	case compile.FamilyIPv4:
		return a.Is4()
	case compile.FamilyIPv6:
		return a.Is6()
	}
	return false
}
