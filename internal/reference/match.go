package reference

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// match is one condition of a rule on one of its fields. A rule matches a
// packet when the packet passes every match of every field the rule sets;
// a rule without the field passes.
//
// A new match of the API adds its entry to matches (or, when the kernel
// keeps state for it, to statefulMatches) in a block of its own: the
// verdicts of EvalSpec, the traces of `nodefw trace` and the differential
// tests all read this one table.
type match struct {
	// field is the rule's field, by its JSON name.
	field string
	// test reports whether the packet passes.
	test func(r *v1alpha1.NodeFirewallRule, p *Packet) bool
	// explain says what the rule wants and what the packet has, for a
	// packet that fails test.
	explain func(r *v1alpha1.NodeFirewallRule, p *Packet) (want, got string)
}

// unexplained stands for every mismatch of an evaluation that keeps no
// steps (EvalSpec), so that it allocates nothing for them.
var unexplained = &Mismatch{}

// matches are the stateless matches, in the order a trace names the first
// one a packet fails: the README's order of the fields.
var matches = []match{
	{"protocol", protocolMatches, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		want := string(r.Protocol)
		switch {
		case r.Protocol == v1alpha1.ProtocolICMP && p.L4Proto == protoICMP:
			want += " over IPv4"
		case r.Protocol == v1alpha1.ProtocolICMPv6 && p.L4Proto == protoICMPv6:
			want += " over IPv6"
		}
		return want, protocolName(p)
	}},
	{"ports", portsMatch, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		ports := make([]string, len(r.Ports))
		for i, pr := range r.Ports {
			ports[i] = strconv.Itoa(int(pr.Port))
			if pr.Last() != pr.Port {
				ports[i] += "-" + strconv.Itoa(int(pr.Last()))
			}
		}
		got := strconv.Itoa(int(p.DPort))
		if !p.Transport {
			got = "no readable transport header"
		}
		return oneOf(ports), got
	}},
	{"sources", func(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
		return len(r.Sources) == 0 || inAny(r.Sources, p.SAddr)
	}, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		return oneOf(r.Sources), p.SAddr.String()
	}},
	{"destinations", func(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
		return len(r.Destinations) == 0 || inAny(r.Destinations, p.DAddr)
	}, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		return oneOf(r.Destinations), p.DAddr.String()
	}},
	{"inInterface", func(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
		return ifnameMatches(r.InInterface, p.IIfName)
	}, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		return r.InInterface, interfaceName(p.IIfName)
	}},
	{"outInterface", func(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
		return ifnameMatches(r.OutInterface, p.OIfName)
	}, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		return r.OutInterface, interfaceName(p.OIfName)
	}},
	{"states", func(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
		return len(r.States) == 0 || slices.ContainsFunc(r.States, func(s v1alpha1.ConnState) bool { return stateBits[s] == p.CtState })
	}, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		states := make([]string, len(r.States))
		for i, s := range r.States {
			states[i] = string(s)
		}
		return oneOf(states), stateName(p.CtState)
	}},
	// Matches of iptables' extensions (matches.go).
	extensionMatches[0], extensionMatches[1],
}

// ruleMismatch is the first match of the rule the packet fails, nil when
// the rule matches it; the notes say what a match assumed. Without
// explain, a mismatch names only its field.
func ruleMismatch(r *v1alpha1.NodeFirewallRule, p *Packet, explain bool) (*Mismatch, []string) {
	for i := range matches {
		m := &matches[i]
		if m.test(r, p) {
			continue
		}
		if !explain {
			return unexplained, nil
		}
		want, got := m.explain(r, p)
		return &Mismatch{Field: m.field, Want: want, Got: got}, nil
	}
	return statefulMismatch(r)
}

func protocolMatches(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
	switch r.Protocol {
	case "":
		return true
	case v1alpha1.ProtocolICMP:
		return p.Family == compile.FamilyIPv4 && p.L4Proto == protoICMP
	case v1alpha1.ProtocolICMPv6:
		return p.Family == compile.FamilyIPv6 && p.L4Proto == protoICMPv6
	}
	return p.L4Proto == protoNumber(r.Protocol)
}

func portsMatch(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
	return len(r.Ports) == 0 || p.Transport && slices.ContainsFunc(r.Ports, func(pr v1alpha1.PortRange) bool {
		return int32(p.DPort) >= pr.Port && int32(p.DPort) <= pr.Last()
	})
}

// inAny reports whether an address is inside one of a rule's sources or
// destinations.
func inAny(addrs []string, a netip.Addr) bool {
	return slices.ContainsFunc(addrs, func(s string) bool {
		pfx, err := v1alpha1.ParseAddress(s)
		return err == nil && pfx.Contains(a)
	})
}

// ifnameMatches matches an interface name against "", "+", "name" or
// "prefix+" (iptables' -i and -o).
func ifnameMatches(pattern, name string) bool {
	if pattern == "" || pattern == "+" {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "+"); ok {
		return name != "" && strings.HasPrefix(name, base)
	}
	return name == pattern
}

// oneOf lists the values a field accepts.
func oneOf(values []string) string {
	if len(values) == 1 {
		return values[0]
	}
	return "one of " + strings.Join(values, ", ")
}

// traceProtoNames name the IP protocols the API knows, as a trace shows
// them.
var traceProtoNames = map[uint8]string{6: "tcp", 17: "udp", 132: "sctp", protoICMP: "icmp", protoICMPv6: "icmpv6"}

// protocolName names a packet's protocol, with its family when an ICMP
// protocol comes in the other family's packet.
func protocolName(p *Packet) string {
	name, ok := traceProtoNames[p.L4Proto]
	if !ok {
		name = "protocol " + strconv.Itoa(int(p.L4Proto))
	}
	switch {
	case p.L4Proto == protoICMP && p.Family == compile.FamilyIPv6:
		name += " over IPv6"
	case p.L4Proto == protoICMPv6 && p.Family == compile.FamilyIPv4:
		name += " over IPv4"
	}
	return name
}

// protocolAndPort is a packet's protocol, with its destination port when
// the protocol has ports and the port is readable.
func protocolAndPort(p *Packet) string {
	name := protocolName(p)
	if pr := v1alpha1.Protocol(strings.ToUpper(traceProtoNames[p.L4Proto])); pr.HasPorts() && p.Transport {
		name += ":" + strconv.Itoa(int(p.DPort))
	}
	return name
}

// stateName names a conntrack state bit as the API does; a packet that
// conntrack does not track has none.
func stateName(s compile.CtState) string {
	for name, bit := range stateBits {
		if bit == s {
			return string(name)
		}
	}
	if s == 0 {
		return "untracked"
	}
	return "state bits " + strconv.FormatUint(uint64(s), 2)
}

// interfaceName is an interface as a trace shows it.
func interfaceName(name string) string {
	if name == "" {
		return "none"
	}
	return name
}
