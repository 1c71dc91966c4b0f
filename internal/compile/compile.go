package compile

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"unicode/utf8"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// ChainPriority is the priority of nodefw's base chains: filter + 10.
//
// Every table's base chains on a hook see each packet in priority order,
// and accept only ends the chain it is in, so an accept here can never
// override a drop in another table, nor theirs a drop here: the order
// decides only whose drop, reject or log comes first. iptables-nft's filter
// chains sit at filter (0), and so do kube-proxy's filter-input,
// filter-forward and filter-output chains in its own kube-proxy table in
// nftables mode (older releases used dstnat - 10, i.e. -110); between
// tables at equal priority the order is undefined. filter + 10 runs after
// both, deterministically, so Kubernetes' own rejects (services without
// endpoints) answer first. On the output hook it is also after DNAT
// (dstnat, -100), as iptables' filter OUTPUT is, so rules match translated
// addresses just as the iptables rules they replace did.
const ChainPriority int32 = 10

// Log rate for log and audit rules: enough to see what a rule does without
// letting a flood fill the kernel log.
const (
	LogRatePerMinute = 10
	LogBurst         = 5
)

// Kernel limits: NF_LOG_PREFIXLEN and the nftables comment size both
// include the terminating NUL.
const (
	maxLogPrefix = 127
	maxComment   = 127
)

// IP protocol numbers.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// ICMPv6 neighbour discovery (RFC 4861): router solicitation and
// advertisement, neighbour solicitation and advertisement, redirect.
// Without them IPv6 stops working within minutes.
var ndTypes = []uint8{133, 134, 135, 136, 137}

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
	return 0
}

var ctStates = map[v1alpha1.ConnState]CtState{
	v1alpha1.ConnStateNew:         CtStateNew,
	v1alpha1.ConnStateEstablished: CtStateEstablished,
	v1alpha1.ConnStateRelated:     CtStateRelated,
	v1alpha1.ConnStateInvalid:     CtStateInvalid,
}

// tableName is what nft accepts unquoted as a table name.
var tableName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,254}$`)

// chainName is the nftables chain of an API chain.
func chainName(c v1alpha1.Chain) string {
	switch c {
	case v1alpha1.ChainInput:
		return ChainInput
	case v1alpha1.ChainForward:
		return ChainForward
	case v1alpha1.ChainOutput:
		return ChainOutput
	}
	return ""
}

// chainIndex is the index of a validated chain in v1alpha1.Chains.
func chainIndex(c v1alpha1.Chain) int { return slices.Index(v1alpha1.Chains, c) }

func chainHook(c v1alpha1.Chain) Hook {
	switch c {
	case v1alpha1.ChainInput:
		return HookInput
	case v1alpha1.ChainForward:
		return HookForward
	}
	return HookOutput
}

// Compile turns a node's resolved firewall into the ruleset its agent
// programs: the input, forward and output base chains, each with the
// implicit accepts, then the node's rules of that chain in order, then the
// chain policy. Runs of simple rules with the same action become lookups
// in sets (see runs.go); the first rule that matches a packet still
// decides. The result depends only on its arguments.
func Compile(spec v1alpha1.NodeFirewallSpec, opts Options) (*Ruleset, error) {
	byChain, err := validate(spec, true)
	if err != nil {
		return nil, err
	}
	if err := validateOptions(opts); err != nil {
		return nil, err
	}
	rs := &Ruleset{Table: opts.table()}
	scratch := &runScratch{}
	for ci, c := range v1alpha1.Chains {
		ch := Chain{
			Name:     chainName(c),
			Hook:     chainHook(c),
			Priority: ChainPriority,
			Policy:   VerdictAccept,
			Rules:    implicitRules(c, opts),
		}
		b := chainBuilder{rs: rs, ch: &ch, minRun: opts.minRun(), exactMin: opts.exactSetMin(), scratch: scratch}
		b.addRules(byChain[ci])
		if spec.DefaultActions.For(c) == v1alpha1.ChainPolicyDrop {
			if slices.Contains(spec.AuditedChains, c) {
				// Count and log what the policy would drop; drop nothing.
				ch.Rules = append(ch.Rules, Rule{
					Counter: true,
					Log:     newLog("nodefw-audit default-drop " + ch.Name + ": "),
					Comment: "nodefw: audit default-drop",
				})
			} else {
				ch.Policy = VerdictDrop
			}
		}
		rs.Chains = append(rs.Chains, ch)
	}
	return rs, nil
}

// RuleCount is the number of rules in all chains; a lookup in a set counts
// as one rule.
func (r *Ruleset) RuleCount() int {
	n := 0
	for _, c := range r.Chains {
		n += len(c.Rules)
	}
	return n
}

// ElementCount is the number of elements in all sets.
func (r *Ruleset) ElementCount() int {
	n := 0
	for _, s := range r.Sets {
		n += len(s.Elements)
	}
	return n
}

func validateOptions(opts Options) error {
	var errs []error
	if !tableName.MatchString(opts.table()) {
		errs = append(errs, fmt.Errorf("table: %q is not a table name", opts.Table))
	}
	for i, f := range opts.FailsafeInbound {
		if err := ValidateFailsafe(f); err != nil {
			errs = append(errs, fmt.Errorf("failsafeInbound[%d]: %w", i, err))
		}
	}
	for i, f := range opts.FailsafeOutbound {
		if err := ValidateFailsafe(f); err != nil {
			errs = append(errs, fmt.Errorf("failsafeOutbound[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// implicitRules are the accepts every chain starts with, so that no policy
// can break established connections, local traffic, IPv6 or the failsafe
// ports. Only the failsafes count: the others match most traffic and tell
// nothing.
func implicitRules(c v1alpha1.Chain, opts Options) []Rule {
	rules := []Rule{{
		CtStates: CtStateEstablished | CtStateRelated,
		Verdict:  VerdictAccept,
		Comment:  "nodefw: established,related",
	}}
	var failsafes []Failsafe
	switch c {
	case v1alpha1.ChainInput:
		rules = append(rules, Rule{IIfName: "lo", Verdict: VerdictAccept, Comment: "nodefw: loopback"})
		failsafes = opts.FailsafeInbound
	case v1alpha1.ChainOutput:
		rules = append(rules, Rule{OIfName: "lo", Verdict: VerdictAccept, Comment: "nodefw: loopback"})
		failsafes = opts.FailsafeOutbound
	default:
		return rules
	}
	rules = append(rules, Rule{
		Family:    FamilyIPv6,
		L4Proto:   protoICMPv6,
		ICMPTypes: slices.Clone(ndTypes),
		Verdict:   VerdictAccept,
		Comment:   "nodefw: icmpv6 neighbour discovery",
	})
	return appendFailsafeRules(rules, failsafes)
}

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
}

func (p *parsedRule) src() []netip.Prefix { return p.addrs[:p.nsrc:p.nsrc] }
func (p *parsedRule) dst() []netip.Prefix { return p.addrs[p.nsrc:] }

// parse fills p, zero, with a validated rule and its parsed sources, then
// destinations. It works in place rather than return a copy: the rules are
// many.
func (p *parsedRule) parse(r *v1alpha1.NodeFirewallRule, addrs []netip.Prefix) {
	p.NodeFirewallRule, p.addrs, p.nsrc = r, addrs, int32(len(r.Sources))
	p.proto, p.simple = l4Proto(r.Protocol), simpleRule(r)
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

// familyMatch is the address part of one expanded rule.
type familyMatch struct {
	family       Family
	saddr, daddr []netip.Prefix
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
func (r *parsedRule) inFamily(f Family, srcs, dsts int) bool {
	if pf := protoFamily(r.proto); pf != FamilyAny && pf != f {
		return false
	}
	return (r.nsrc == 0 || srcs > 0) && (len(r.addrs) == int(r.nsrc) || dsts > 0)
}

// familyMatches splits a rule's addresses by IP family (see inFamily). A
// rule without addresses has one match, of the family its protocol
// implies.
func familyMatches(r parsedRule) []familyMatch {
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

// expandRule turns one API rule into its nftables rules: per IP family, an
// optional log rule and then the verdict rule, or in Audit mode a single
// counting and logging rule in place of a Drop or Reject.
func expandRule(r parsedRule) []Rule {
	name := r.Policy + "/" + r.Name
	base := Rule{
		L4Proto: r.proto,
		IIfName: interfaceMatch(r.InInterface),
		OIfName: interfaceMatch(r.OutInterface),
		Comment: truncate(name, maxComment),
	}
	for _, s := range r.States {
		base.CtStates |= ctStates[s]
	}
	if len(r.Ports) > 0 {
		ports := make([]PortInterval, len(r.Ports))
		for i, p := range r.Ports {
			ports[i] = PortInterval{First: uint16(p.Port), Last: uint16(p.Last())}
		}
		base.DPorts = canonicalPorts(ports)
	}
	audit := r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept

	var out []Rule
	for _, m := range familyMatches(r) {
		rule := base
		rule.Family, rule.SAddrs, rule.DAddrs = m.family, m.saddr, m.daddr
		rule.DPorts = slices.Clone(base.DPorts)
		if audit {
			rule.Counter = true
			rule.Log = newLog(logPrefix("nodefw-audit ", name))
			out = append(out, rule)
			continue
		}
		if r.Log {
			// A separate rule: its rate limit must not gate the verdict.
			logRule := rule
			logRule.DPorts = slices.Clone(rule.DPorts)
			logRule.SAddrs = slices.Clone(rule.SAddrs)
			logRule.DAddrs = slices.Clone(rule.DAddrs)
			logRule.Log = newLog(logPrefix("nodefw ", name))
			out = append(out, logRule)
		}
		rule.Counter = true
		rule.Verdict = verdicts[r.Action]
		out = append(out, rule)
	}
	return out
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

func newLog(prefix string) *Log {
	return &Log{Prefix: prefix, RatePerMinute: LogRatePerMinute, Burst: LogBurst}
}

// logPrefix is head + name + ": ", shortening the name to fit the kernel's
// limit so the prefix still ends with ": ".
func logPrefix(head, name string) string {
	return head + truncate(name, maxLogPrefix-len(head)-len(": ")) + ": "
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// canonicalPorts sorts intervals and merges overlapping or adjacent ones:
// the kernel rejects overlapping elements in an interval set.
func canonicalPorts(ps []PortInterval) []PortInterval {
	return compactPorts(slices.Clone(ps))
}

// compactPorts is canonicalPorts in place: it reuses and returns ps.
func compactPorts(ps []PortInterval) []PortInterval {
	if len(ps) > 1 {
		slices.SortFunc(ps, func(a, b PortInterval) int {
			return cmp.Or(cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last))
		})
	}
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && uint32(p.First) <= uint32(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, p.Last)
			continue
		}
		out = append(out, p)
	}
	return out
}

// compactPrefixes sorts prefixes of one family, in place, and drops those
// another one covers: the kernel rejects overlapping elements in an
// interval set.
func compactPrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	if len(ps) > 1 {
		slices.SortFunc(ps, func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
		})
	}
	out := ps[:0]
	for _, p := range ps {
		// Sorted by address, shorter first: only the last kept prefix can
		// cover p.
		if n := len(out); n > 0 && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}
