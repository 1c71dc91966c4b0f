package reference

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

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
}

// IP protocol numbers.
const (
	protoICMP   = 1
	protoICMPv6 = 58
)

// protoNumbers are the IP protocol numbers of the API's protocol names;
// a number of another protocol is its own (see protoNumber).
var protoNumbers = v1alpha1.ProtocolNumbers

// ndTypes are the ICMPv6 neighbour discovery types (RFC 4861) every
// chain but forward accepts ahead of any rule: router solicitation and
// advertisement, neighbour solicitation and advertisement, redirect.
var ndTypes = []uint8{133, 134, 135, 136, 137}

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

// rejectVerdicts are the answers of a Reject rule, by rejectWith.
var rejectVerdicts = map[v1alpha1.RejectWith]compile.Verdict{
	"":                                 compile.VerdictReject,
	v1alpha1.RejectWithPortUnreachable: compile.VerdictReject,
	v1alpha1.RejectWithTCPReset:        compile.VerdictRejectTCPReset,
	v1alpha1.RejectWithHostUnreachable: compile.VerdictRejectHostUnreachable,
	v1alpha1.RejectWithAdminProhibited: compile.VerdictRejectAdminProhibited,
	v1alpha1.RejectWithNetUnreachable:  compile.VerdictRejectNetUnreachable,
}

// ruleVerdict is what a matching rule does: its action, and for Reject
// its answer.
func ruleVerdict(r v1alpha1.NodeFirewallRule) compile.Verdict {
	if r.Action == v1alpha1.ActionReject {
		return rejectVerdicts[r.RejectWith]
	}
	return verdicts[r.Action]
}

// EvalSpec is the reference semantics of a node's firewall, as the README
// states them, for one chain: the implicit accepts (established and
// related, loopback, ICMPv6 neighbour discovery, the failsafe ports), then
// the first of the chain's rules that matches decides, then the chain's
// default action. Rules of an audited policy that would drop or reject
// decide nothing; an audited chain's default is accept. Of opts it reads
// only the failsafes. It reads the spec directly, independently of the
// compiler.
//
// A packet is taken to be under every limit: a rule's rate limit matches
// it (its bucket has a token) and a connection limit does not (its source
// has no more connections than the limit).
func EvalSpec(spec v1alpha1.NodeFirewallSpec, opts compile.Options, chain v1alpha1.Chain, p Packet) compile.Verdict {
	if implicitAccept(opts, chain, p) {
		return compile.VerdictAccept
	}
	for _, r := range spec.Rules {
		if r.Chain != chain || !specRuleMatches(r, p) {
			continue
		}
		if r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept {
			continue
		}
		return ruleVerdict(r)
	}
	if spec.DefaultActions.For(chain) == v1alpha1.ChainPolicyDrop && !slices.Contains(spec.AuditedChains, chain) {
		return compile.VerdictDrop
	}
	return compile.VerdictAccept
}

// implicitAccept reports whether a chain accepts a packet ahead of its
// rules.
func implicitAccept(opts compile.Options, chain v1alpha1.Chain, p Packet) bool {
	if p.CtState&(compile.CtStateEstablished|compile.CtStateRelated) != 0 {
		return true
	}
	var failsafes []compile.Failsafe
	switch chain {
	case v1alpha1.ChainInput:
		if p.IIfName == "lo" {
			return true
		}
		failsafes = opts.FailsafeInbound
	case v1alpha1.ChainOutput:
		if p.OIfName == "lo" {
			return true
		}
		failsafes = opts.FailsafeOutbound
	}
	if chain != v1alpha1.ChainForward && p.Family == compile.FamilyIPv6 && p.L4Proto == protoICMPv6 &&
		p.Transport && slices.Contains(ndTypes, p.Type) {
		return true
	}
	return slices.ContainsFunc(failsafes, func(f compile.Failsafe) bool {
		return p.L4Proto == protoNumbers[f.Protocol] && p.Transport && f.Ports.First <= p.DPort && p.DPort <= f.Ports.Last
	})
}

// protoNumber is the IP protocol number of a rule's protocol: a name's,
// or the number itself.
func protoNumber(p v1alpha1.Protocol) uint8 {
	if n, ok := protoNumbers[p]; ok {
		return n
	}
	n, _ := strconv.Atoi(string(p))
	return uint8(n)
}

func specRuleMatches(r v1alpha1.NodeFirewallRule, p Packet) bool {
	switch r.Protocol {
	case "":
	case v1alpha1.ProtocolICMP:
		if p.Family != compile.FamilyIPv4 || p.L4Proto != protoICMP {
			return false
		}
	case v1alpha1.ProtocolICMPv6:
		if p.Family != compile.FamilyIPv6 || p.L4Proto != protoICMPv6 {
			return false
		}
	default:
		if p.L4Proto != protoNumber(r.Protocol) {
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
	if !specExtensionsMatch(r, p) {
		return false
	}
	inAny := func(addrs []string, a netip.Addr) bool {
		return slices.ContainsFunc(addrs, func(s string) bool {
			pfx, err := v1alpha1.ParseAddress(s)
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
	if len(r.States) > 0 && !slices.ContainsFunc(r.States, func(s v1alpha1.ConnState) bool { return stateBits[s] == p.CtState }) {
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
	if rule.Lookup != "" {
		s := rs.Set(rule.Lookup)
		if s == nil || !setContains(s, p) {
			return false
		}
	}
	return true
}

// setContains reports whether the packet's key is inside one of the set's
// elements. The elements of a hash set are prefixes of the lengths it
// masks addresses to, so this is also whether the packet's masked key is
// one of them.
func setContains(s *compile.Set, p Packet) bool {
	if p.Family != s.Family || (slices.Contains(s.Fields, compile.FieldDPort) && !p.Transport) {
		return false
	}
	return slices.ContainsFunc(s.Elements, func(e compile.SetElement) bool {
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
