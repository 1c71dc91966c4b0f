package reference

import (
	"net/netip"
	"slices"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// Packet is what a chain looks at to decide on a packet: enough to
// evaluate a NodeFirewallSpec and the Ruleset compiled from it in Go,
// without a kernel.
type Packet struct {
	// Family is FamilyIPv4 or FamilyIPv6; SAddr and DAddr are of it.
	Family       compile.Family
	SAddr, DAddr netip.Addr
	// L4Proto is the IP protocol (meta l4proto).
	L4Proto uint8
	// Transport says the transport header can be read: the packet is not
	// a later fragment and its header is long enough. Port and ICMP type
	// matches need it.
	Transport bool
	// DPort is the 16 bits at offset 2 of the transport header (th dport),
	// SPort the 16 bits at offset 0 (th sport), Type the byte at offset 0
	// (icmp type) and Code the byte at offset 1 (icmp code): an ICMP
	// packet's SPort is its type and code.
	DPort uint16
	SPort uint16
	Type  uint8
	Code  uint8
	// IIfName and OIfName are the input and output interfaces; "" when the
	// hook has none.
	IIfName, OIfName string
	// CtState is the packet's conntrack state, one bit.
	CtState compile.CtState
	// DAddrLocal says DAddr is one of the node's own addresses, as the
	// routing table says (fib daddr type local). The PreRouting chain
	// decides only such packets; see EvalInbound for their way on.
	DAddrLocal bool
}

// IP protocol numbers.
const (
	protoICMP   = 1
	protoICMPv6 = 58
)

// protoNumbers are the IP protocol numbers of the API's protocol names;
// a number of another protocol is its own (see protoNumber).
var protoNumbers = v1alpha1.ProtocolNumbers

var stateBits = map[v1alpha1.ConnState]compile.CtState{
	v1alpha1.ConnStateNew:         compile.CtStateNew,
	v1alpha1.ConnStateEstablished: compile.CtStateEstablished,
	v1alpha1.ConnStateRelated:     compile.CtStateRelated,
	v1alpha1.ConnStateInvalid:     compile.CtStateInvalid,
}

var verdicts = map[v1alpha1.Action]compile.Verdict{
	v1alpha1.ActionAccept: compile.VerdictAccept,
	v1alpha1.ActionDrop:   compile.VerdictDrop,
	v1alpha1.ActionReject: compile.VerdictReject,
}

// EvalSpec is the verdict of TraceSpec: the reference semantics of a
// node's firewall for one chain, as the README states them. PreRouting's
// packets are as the client sent them, before any DNAT: EvalInbound takes
// a packet through PreRouting and on to Input or Forward.
func EvalSpec(spec v1alpha1.NodeFirewallSpec, opts compile.Options, chain v1alpha1.Chain, p Packet) compile.Verdict {
	return evaluate(spec, opts, chain, &p, false).Verdict
}

// EvalRuleset runs a packet through the named chain of a ruleset as the
// kernel runs it through the programmed table: rules in order, linear
// matches and set lookups alike, the first rule with a verdict that
// matches decides, then the chain's policy. An unknown chain accepts.
func EvalRuleset(rs *compile.Ruleset, chain string, p Packet) compile.Verdict {
	for i := range rs.Chains {
		c := &rs.Chains[i]
		if c.Name != chain {
			continue
		}
		if r := decidingRule(rs, c, p); r != nil {
			return r.Verdict
		}
		if c.Policy == compile.VerdictDrop {
			return compile.VerdictDrop
		}
		return compile.VerdictAccept
	}
	return compile.VerdictAccept
}

// DecidingRule is the rule of the named chain that decides a packet: the
// first with a verdict that matches it. It is nil when none does, and the
// chain's policy decides.
func DecidingRule(rs *compile.Ruleset, chain string, p Packet) *compile.Rule {
	for i := range rs.Chains {
		if c := &rs.Chains[i]; c.Name == chain {
			return decidingRule(rs, c, p)
		}
	}
	return nil
}

func decidingRule(rs *compile.Ruleset, c *compile.Chain, p Packet) *compile.Rule {
	for j := range c.Rules {
		if rule := &c.Rules[j]; rule.Verdict != compile.VerdictNone && ruleMatches(rs, rule, p) {
			return rule
		}
	}
	return nil
}

func ruleMatches(rs *compile.Ruleset, rule *compile.Rule, p Packet) bool {
	if rule.Family != compile.FamilyAny && rule.Family != p.Family {
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
	if len(rule.DPorts) > 0 && (!p.Transport || !slices.ContainsFunc(rule.DPorts, func(pi compile.PortInterval) bool {
		return pi.First <= p.DPort && p.DPort <= pi.Last
	})) {
		return false
	}
	if len(rule.ICMPTypes) > 0 && (!p.Transport || !slices.Contains(rule.ICMPTypes, p.Type)) {
		return false
	}
	if !rulesetExtensionsMatch(rule, p) {
		return false
	}
	if rule.CtStates != 0 && rule.CtStates&p.CtState == 0 {
		return false
	}
	if (rule.DAddrType == compile.DAddrTypeLocal && !p.DAddrLocal) || (rule.DAddrType == compile.DAddrTypeNotLocal && p.DAddrLocal) {
		return false
	}
	if rule.Lookup != "" {
		s := rs.Set(rule.Lookup)
		if s == nil || !setContains(s, p) {
			return false
		}
	}
	return true
}

// CountingRule names the counter that counts a packet which a rule of
// the named chain decides, as the agent reports it: the deciding rule's
// comment or, when that rule looks up a set whose elements count, the
// Rule of the element the packet is in. It is "" when the chain's policy
// decides.
func CountingRule(rs *compile.Ruleset, chain string, p Packet) string {
	r := DecidingRule(rs, chain, p)
	if r == nil {
		return ""
	}
	if s := rs.Set(r.Lookup); s != nil && s.Counter {
		if i := setElement(s, p); i >= 0 {
			return s.Elements[i].Rule
		}
	}
	return r.Comment
}

// setContains reports whether the packet's key is inside one of the set's
// elements. The elements of a hash set are prefixes of the lengths it
// masks addresses to, so this is also whether the packet's masked key is
// one of them.
func setContains(s *compile.Set, p Packet) bool {
	return setElement(s, p) >= 0
}

// setElement is the index of the set's element the packet's key is in,
// or -1.
func setElement(s *compile.Set, p Packet) int {
	if p.Family != s.Family || (slices.Contains(s.Fields, compile.FieldDPort) && !p.Transport) {
		return -1
	}
	return slices.IndexFunc(s.Elements, func(e compile.SetElement) bool {
		for _, f := range s.Fields {
			var in bool
			switch f {
			case compile.FieldL4Proto:
				in = e.L4Proto.First <= p.L4Proto && p.L4Proto <= e.L4Proto.Last
			case compile.FieldDPort:
				in = e.DPort.First <= p.DPort && p.DPort <= e.DPort.Last
			case compile.FieldSAddr:
				in = e.SAddr.First.Compare(p.SAddr) <= 0 && p.SAddr.Compare(e.SAddr.Last) <= 0
			case compile.FieldDAddr:
				in = e.DAddr.First.Compare(p.DAddr) <= 0 && p.DAddr.Compare(e.DAddr.Last) <= 0
			}
			if !in {
				return false
			}
		}
		return true
	})
}
