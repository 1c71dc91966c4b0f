package compile

import (
	"net/netip"
	"slices"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/text"
)

// The API rules as Compile reads them, and their expansion into linear
// nftables rules: what every rule becomes that does not join a run of set
// lookups (see runs.go).

// parsedRule is a validated API rule with what Compile reads of it more
// than once: its addresses, parsed (in the rule's order), its protocol
// number, whether it can join a run and, if it does, at most how many
// boxes it adds to the sets of each family.
type parsedRule struct {
	*v1alpha1.NodeFirewallRule
	addrs  []netip.Prefix // sources, then destinations
	nsrc   int32
	boxes  [len(families)]int32
	proto  uint8
	simple bool
	// verdict is the rule's action and answer as a verdict.
	verdict Verdict
}

func (p *parsedRule) src() []netip.Prefix { return p.addrs[:p.nsrc:p.nsrc] }
func (p *parsedRule) dst() []netip.Prefix { return p.addrs[p.nsrc:] }

// parse fills p, zero, with a validated rule and its parsed sources, then
// destinations. It works in place rather than return a copy: the rules are
// many.
func (p *parsedRule) parse(r *v1alpha1.NodeFirewallRule, addrs []netip.Prefix) {
	p.NodeFirewallRule, p.addrs, p.nsrc = r, addrs, int32(len(r.Sources))
	p.proto, p.simple, p.verdict = l4Proto(r.Protocol), simpleRule(r), ruleVerdict(r)
	if p.simple {
		var srcs, dsts [3]int // by Family
		for _, a := range p.src() {
			srcs[prefixFamily(a)]++
		}
		for _, a := range p.dst() {
			dsts[prefixFamily(a)]++
		}
		for i, f := range families {
			if p.inFamily(f, srcs[f], dsts[f]) {
				p.boxes[i] = int32(max(len(r.Ports), 1) * max(srcs[f], 1) * max(dsts[f], 1))
			}
		}
	}
}

// l4Proto is the IP protocol number of a protocol, 0 (any) for none. A
// switch, not a map: Compile asks once per rule.
func l4Proto(p v1alpha1.Protocol) uint8 {
	switch p {
	case v1alpha1.ProtocolTCP:
		return protoTCP
	case v1alpha1.ProtocolUDP:
		return protoUDP
	case v1alpha1.ProtocolSCTP:
		return protoSCTP
	case v1alpha1.ProtocolICMP:
		return protoICMP
	case v1alpha1.ProtocolICMPv6:
		return protoICMPv6
	}
	n, _ := p.Number()
	return n
}

// protoFamily is the IP family a protocol number implies, if any.
func protoFamily(proto uint8) Family {
	switch proto {
	case protoICMP:
		return FamilyIPv4
	case protoICMPv6:
		return FamilyIPv6
	}
	return FamilyAny
}

// families are the IP families a rule can match in, in the order Compile
// emits them.
var families = [...]Family{FamilyIPv4, FamilyIPv6}

// inFamily reports whether a rule has a match in family f, given how many
// of its sources and destinations are of f: nftables matches ip and ip6
// addresses separately, so a family is left out when the rule's sources,
// destinations or protocol leave nothing of it to match.
func (p *parsedRule) inFamily(f Family, srcs, dsts int) bool {
	if pf := protoFamily(p.proto); pf != FamilyAny && pf != f {
		return false
	}
	return (p.nsrc == 0 || srcs > 0) && (len(p.addrs) == int(p.nsrc) || dsts > 0)
}

// splitByChain splits rules, in order, by chain; count is how many each
// chain has.
func splitByChain(rules []parsedRule, count []int) [][]parsedRule {
	out := make([][]parsedRule, len(count))
	for c, n := range count {
		if n == len(rules) {
			// All in one chain, the common case: no copy.
			out[c] = rules
			return out
		}
	}
	for c, n := range count {
		out[c] = make([]parsedRule, 0, n)
	}
	for _, r := range rules {
		c := chainIndex(r.Chain)
		out[c] = append(out[c], r)
	}
	return out
}

// expandRule turns one API rule into its nftables rules: per IP family, an
// optional log rule and then the verdict rule, or in Audit mode a single
// counting and logging rule in place of a Drop or Reject. A rule that
// keeps state per source address has a rule per family, each with meters
// of its family, which m declares.
func expandRule(r parsedRule, m *meterMaker, logs *logBook) []Rule {
	name := r.Policy + "/" + r.Name
	base := baseRule(r, name)
	audit := r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept

	matches := familyMatches(r)
	var limits [3]*RateLimit
	var conns [3]*ConnLimit
	if r.Limit != nil || r.ConnLimit != nil {
		matches = splitAnyFamily(matches, hasMeters(r.NodeFirewallRule))
		fams := make([]Family, len(matches))
		for i, fm := range matches {
			fams[i] = fm.family
		}
		limits, conns = m.statefulMatches(r.NodeFirewallRule, fams)
	}
	var out []Rule
	for _, fm := range matches {
		rule := base
		rule.Family, rule.SAddrs, rule.DAddrs = fm.family, fm.saddr, fm.daddr
		rule.Limit, rule.ConnLimit = limits[fm.family], conns[fm.family]
		// Peers.
		if fm.speer.set != "" {
			rule.SAddrSet, rule.SAddrsExcept = m.peers.use(fm.speer.set, fm.family), fm.speer.except
		}
		if fm.dpeer.set != "" {
			rule.DAddrSet, rule.DAddrsExcept = m.peers.use(fm.dpeer.set, fm.family), fm.dpeer.except
		}
		rule.DPorts = slices.Clone(base.DPorts)
		if audit {
			rule.Counter = true
			rule.Log = ruleLog(r, logs)
			out = append(out, rule)
			continue
		}
		if r.Log {
			// A separate rule: its rate limit must not gate the verdict.
			logRule := rule
			logRule.DPorts = slices.Clone(rule.DPorts)
			logRule.SAddrs = slices.Clone(rule.SAddrs)
			logRule.DAddrs = slices.Clone(rule.DAddrs)
			logRule.Log = ruleLog(r, logs)
			out = append(out, logRule)
		}
		rule.Counter = true
		rule.Verdict = r.verdict
		out = append(out, rule)
	}
	return out
}

// baseRule is what every nftables rule of an API rule matches, whatever
// the family: protocol, interfaces, states and canonical ports.
func baseRule(r parsedRule, name string) Rule {
	base := Rule{
		L4Proto: r.proto,
		IIfName: interfaceMatch(r.InInterface),
		OIfName: interfaceMatch(r.OutInterface),
		Comment: text.Truncate(name, maxComment),
	}
	for _, s := range r.States {
		base.CtStates |= ctStates[s]
	}
	base.SPorts = sourcePorts(r.NodeFirewallRule)
	base.ICMPTypes, base.ICMPTypeCodes = icmpMatch(r.NodeFirewallRule)
	if len(r.Ports) > 0 {
		ports := make([]PortInterval, len(r.Ports))
		for i, p := range r.Ports {
			ports[i] = PortInterval{First: uint16(p.Port), Last: uint16(p.Last())}
		}
		base.DPorts = CanonicalPorts(ports)
	}
	return base
}

var ctStates = map[v1alpha1.ConnState]CtState{
	v1alpha1.ConnStateNew:         CtStateNew,
	v1alpha1.ConnStateEstablished: CtStateEstablished,
	v1alpha1.ConnStateRelated:     CtStateRelated,
	v1alpha1.ConnStateInvalid:     CtStateInvalid,
}

var verdicts = map[v1alpha1.Action]Verdict{
	v1alpha1.ActionAccept: VerdictAccept,
	v1alpha1.ActionDrop:   VerdictDrop,
	v1alpha1.ActionReject: VerdictReject,
}

// interfaceMatch maps the API's interface field to the model's: a lone "+"
// matches every interface, which is no condition at all.
func interfaceMatch(name string) string {
	if name == "+" {
		return ""
	}
	return name
}

// familyMatch is the address part of one expanded rule.
type familyMatch struct {
	family       Family
	saddr, daddr []netip.Prefix
	// speer and dpeer are the peers of a rule with from or to.
	speer, dpeer peerMatch
}

// familyMatches splits a rule's addresses by IP family (see inFamily). A
// rule without addresses has one match, of the family its protocol
// implies.
func familyMatches(r parsedRule) []familyMatch {
	if hasPeers(r.NodeFirewallRule) {
		return peerFamilyMatches(r)
	}
	if len(r.Sources) == 0 && len(r.Destinations) == 0 {
		return []familyMatch{{family: protoFamily(r.proto)}}
	}
	src := splitByFamily(r.src())
	dst := splitByFamily(r.dst())
	var out []familyMatch
	for _, f := range families {
		if r.inFamily(f, len(src[f]), len(dst[f])) {
			out = append(out, familyMatch{family: f, saddr: src[f], daddr: dst[f]})
		}
	}
	return out
}

// splitAnyFamily splits a match of either family in one per family, when
// perFamily says the rule needs one (its meters hold addresses of one
// family).
func splitAnyFamily(ms []familyMatch, perFamily bool) []familyMatch {
	if !perFamily || len(ms) != 1 || ms[0].family != FamilyAny {
		return ms
	}
	return []familyMatch{{family: FamilyIPv4}, {family: FamilyIPv6}}
}

// splitByFamily sorts parsed addresses into canonical prefix lists,
// indexed by Family.
func splitByFamily(addrs []netip.Prefix) [3][]netip.Prefix {
	var out [3][]netip.Prefix
	for _, p := range addrs {
		f := prefixFamily(p)
		out[f] = append(out[f], p)
	}
	out[FamilyIPv4] = compactPrefixes(out[FamilyIPv4])
	out[FamilyIPv6] = compactPrefixes(out[FamilyIPv6])
	return out
}

// ruleLog is the log statement of a logged or audited rule: with the
// rule's label and rate when it logs, the defaults when it is only audited.
func ruleLog(r parsedRule, logs *logBook) *Log {
	src := LogSource{Policy: r.Policy, Rule: r.Name, Verdict: ruleLogVerdict(r), Chain: chainName(r.Chain)}
	if !r.Log {
		return logs.log(src, 0, 0)
	}
	src.Label = r.LogLabel
	return logs.log(src, r.LogRatePerMinute, r.LogBurst)
}
