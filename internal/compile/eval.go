package compile

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Packet is what a chain looks at to decide on a packet: enough to
// evaluate a NodeFirewallSpec and the Ruleset compiled from it in Go,
// without a kernel.
type Packet struct {
	// Family is FamilyIPv4 or FamilyIPv6; SAddr and DAddr are of it.
	Family       Family
	SAddr, DAddr netip.Addr
	// L4Proto is the IP protocol (meta l4proto).
	L4Proto uint8
	// Transport says the transport header can be read: the packet is not
	// a later fragment and its header is long enough. Port and ICMP type
	// matches need it.
	Transport bool
	// DPort is the 16 bits at offset 2 of the transport header (th dport)
	// and Type the byte at offset 0 (icmp type).
	DPort uint16
	Type  uint8
	// IIfName and OIfName are the input and output interfaces; "" when the
	// hook has none.
	IIfName, OIfName string
	// CtState is the packet's conntrack state, one bit.
	CtState CtState
}

// EvalSpec is the reference semantics of a node's firewall, as the README
// states them, for one chain: the implicit accepts (established and
// related, loopback, ICMPv6 neighbour discovery, the failsafe ports), then
// the first of the chain's rules that matches decides, then the chain's
// default action. Rules of an audited policy that would drop or reject
// decide nothing; an audited chain's default is accept. It reads the spec
// directly, independently of Compile.
func EvalSpec(spec v1alpha1.NodeFirewallSpec, opts Options, chain v1alpha1.Chain, p Packet) Verdict {
	if p.CtState&(CtStateEstablished|CtStateRelated) != 0 {
		return VerdictAccept
	}
	var failsafes []Failsafe
	switch chain {
	case v1alpha1.ChainInput:
		if p.IIfName == "lo" {
			return VerdictAccept
		}
		failsafes = opts.FailsafeInbound
	case v1alpha1.ChainOutput:
		if p.OIfName == "lo" {
			return VerdictAccept
		}
		failsafes = opts.FailsafeOutbound
	}
	if chain != v1alpha1.ChainForward && p.Family == FamilyIPv6 && p.L4Proto == protoICMPv6 &&
		p.Transport && slices.Contains(ndTypes, p.Type) {
		return VerdictAccept
	}
	for _, f := range failsafes {
		if failsafeMatches(f, p) {
			return VerdictAccept
		}
	}
	for _, r := range spec.Rules {
		if r.Chain != chain || !specRuleMatches(r, p) {
			continue
		}
		if r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept {
			continue
		}
		return verdicts[r.Action]
	}
	if spec.DefaultActions.For(chain) == v1alpha1.ChainPolicyDrop && !slices.Contains(spec.AuditedChains, chain) {
		return VerdictDrop
	}
	return VerdictAccept
}

// failsafeMatches reports whether a failsafe accepts a packet: its
// protocol, a destination port in its range (which needs a readable
// transport header), and a source and a destination among its addresses
// when it lists any; an address list holds addresses of either family and
// matches a packet only by those of the packet's family.
func failsafeMatches(f Failsafe, p Packet) bool {
	if p.L4Proto != l4Proto(f.Protocol) || !p.Transport || p.DPort < f.Ports.First || p.DPort > f.Ports.Last {
		return false
	}
	in := func(prefixes []netip.Prefix, a netip.Addr) bool {
		return len(prefixes) == 0 || slices.ContainsFunc(prefixes, func(pfx netip.Prefix) bool {
			return pfx.Addr().Is4() == (p.Family == FamilyIPv4) && pfx.Contains(a)
		})
	}
	return in(f.Sources, p.SAddr) && in(f.Destinations, p.DAddr)
}

func specRuleMatches(r v1alpha1.NodeFirewallRule, p Packet) bool {
	switch r.Protocol {
	case "":
	case v1alpha1.ProtocolICMP:
		if p.Family != FamilyIPv4 || p.L4Proto != protoICMP {
			return false
		}
	case v1alpha1.ProtocolICMPv6:
		if p.Family != FamilyIPv6 || p.L4Proto != protoICMPv6 {
			return false
		}
	default:
		if p.L4Proto != l4Proto(r.Protocol) {
			return false
		}
	}
	if len(r.Ports) > 0 {
		if !p.Transport || !slices.ContainsFunc(r.Ports, func(pr v1alpha1.PortRange) bool {
			return int32(p.DPort) >= pr.Port && int32(p.DPort) <= pr.Last()
		}) {
			return false
		}
	}
	inAny := func(addrs []string, a netip.Addr) bool {
		return slices.ContainsFunc(addrs, func(s string) bool {
			pfx, err := parseAddress(s)
			return err == nil && pfx.Contains(a)
		})
	}
	if len(r.Sources) > 0 && !inAny(r.Sources, p.SAddr) {
		return false
	}
	if len(r.Destinations) > 0 && !inAny(r.Destinations, p.DAddr) {
		return false
	}
	if !ifnameMatches(r.InInterface, p.IIfName) || !ifnameMatches(r.OutInterface, p.OIfName) {
		return false
	}
	if len(r.States) > 0 && !slices.ContainsFunc(r.States, func(s v1alpha1.ConnState) bool { return ctStates[s] == p.CtState }) {
		return false
	}
	return true
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

// Eval runs a packet through the named chain as the kernel runs it through
// the programmed table: rules in order, linear matches and set lookups
// alike, the first rule with a verdict that matches decides, then the
// chain's policy. An unknown chain accepts.
func (r *Ruleset) Eval(chain string, p Packet) Verdict {
	for i := range r.Chains {
		c := &r.Chains[i]
		if c.Name != chain {
			continue
		}
		for j := range c.Rules {
			rule := &c.Rules[j]
			if rule.Verdict != VerdictNone && r.ruleMatches(rule, p) {
				return rule.Verdict
			}
		}
		if c.Policy == VerdictDrop {
			return VerdictDrop
		}
		return VerdictAccept
	}
	return VerdictAccept
}

func (r *Ruleset) ruleMatches(rule *Rule, p Packet) bool {
	if rule.Family != FamilyAny && rule.Family != p.Family {
		return false
	}
	if !ifnameMatches(rule.IIfName, p.IIfName) || !ifnameMatches(rule.OIfName, p.OIfName) {
		return false
	}
	inPrefixes := func(ps []netip.Prefix, a netip.Addr) bool {
		return slices.ContainsFunc(ps, func(pfx netip.Prefix) bool { return pfx.Contains(a) })
	}
	if len(rule.SAddrs) > 0 && !inPrefixes(rule.SAddrs, p.SAddr) {
		return false
	}
	if len(rule.DAddrs) > 0 && !inPrefixes(rule.DAddrs, p.DAddr) {
		return false
	}
	if rule.L4Proto != 0 && rule.L4Proto != p.L4Proto {
		return false
	}
	if len(rule.DPorts) > 0 && (!p.Transport || !slices.ContainsFunc(rule.DPorts, func(pi PortInterval) bool {
		return pi.First <= p.DPort && p.DPort <= pi.Last
	})) {
		return false
	}
	if len(rule.ICMPTypes) > 0 && (!p.Transport || !slices.Contains(rule.ICMPTypes, p.Type)) {
		return false
	}
	if rule.CtStates != 0 && rule.CtStates&p.CtState == 0 {
		return false
	}
	if rule.Lookup != "" {
		s := r.Set(rule.Lookup)
		if s == nil || !s.Contains(p) {
			return false
		}
	}
	return true
}

// Contains reports whether the packet's key is in the set.
func (s *Set) Contains(p Packet) bool {
	if p.Family != s.Family || (slices.Contains(s.Fields, FieldDPort) && !p.Transport) {
		return false
	}
	return slices.ContainsFunc(s.Elements, func(e SetElement) bool {
		for _, f := range s.Fields {
			var in bool
			switch f {
			case FieldL4Proto:
				in = e.L4Proto.First <= p.L4Proto && p.L4Proto <= e.L4Proto.Last
			case FieldDPort:
				in = e.DPort.First <= p.DPort && p.DPort <= e.DPort.Last
			case FieldSAddr:
				in = e.SAddr.First.Compare(p.SAddr) <= 0 && p.SAddr.Compare(e.SAddr.Last) <= 0
			case FieldDAddr:
				in = e.DAddr.First.Compare(p.DAddr) <= 0 && p.DAddr.Compare(e.DAddr.Last) <= 0
			}
			if !in {
				return false
			}
		}
		return true
	})
}
