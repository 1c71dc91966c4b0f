// Package iptables renders a node's resolved firewall as iptables-restore
// input for the filter table, one file for iptables-restore and one for
// ip6tables-restore, with the semantics of the ruleset internal/compile
// builds for the agent:
//
//  1. the implicit accepts: conntrack ESTABLISHED,RELATED, loopback (INPUT
//     and OUTPUT), ICMPv6 neighbour discovery (INPUT and OUTPUT, IPv6 only)
//     and the failsafe ports (INPUT inbound, OUTPUT outbound);
//  2. the node's rules in order, the first match deciding;
//  3. the chain policies from spec.defaultActions; an audited chain keeps
//     policy ACCEPT and ends with a rate-limited LOG rule instead.
//
// Loading the output with iptables-restore (without --noflush) replaces the
// whole filter table of that family. The renderer serves the differential
// tests, which compare the two implementations packet by packet, and
// benchmarks of iptables-restore against the agent's netlink apply.
//
// Differences that do not change a verdict: iptables has no sets, so a rule
// becomes one iptables rule per source, destination and block of at most 15
// destination ports (multiport's limit); a packet that matches several of
// them is logged once per matching LOG rule where the agent logs it once.
// LOG prefixes are cut to 29 bytes, iptables' limit (nftables allows 127).
package iptables

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// Options are the agent settings that shape the ruleset, as in
// compile.Options.
type Options struct {
	// FailsafeInbound are accepted in INPUT and FailsafeOutbound in OUTPUT,
	// before any rule; nil means none.
	FailsafeInbound, FailsafeOutbound []compile.Failsafe
}

// Limits of iptables' extensions.
const (
	// MaxLogPrefix is the longest --log-prefix the LOG target takes.
	MaxLogPrefix = 29
	// MaxMultiportPorts is how many ports one multiport match holds; a
	// range counts as two.
	MaxMultiportPorts = 15
	// maxComment is the comment match's limit, in bytes.
	maxComment = 255
)

// Log rate limit of log and audit rules, as the agent's.
var logLimit = fmt.Sprintf("-m limit --limit %d/min --limit-burst %d", compile.LogRatePerMinute, compile.LogBurst)

// ICMPv6 neighbour discovery types (RFC 4861) accepted ahead of any rule:
// router solicitation and advertisement, neighbour solicitation and
// advertisement, redirect.
var ndTypes = []int{133, 134, 135, 136, 137}

type family int

const (
	ipv4 family = iota
	ipv6
)

var chainNames = map[v1alpha1.Chain]string{
	v1alpha1.ChainInput:   "INPUT",
	v1alpha1.ChainForward: "FORWARD",
	v1alpha1.ChainOutput:  "OUTPUT",
}

var protoNames = map[v1alpha1.Protocol]string{
	v1alpha1.ProtocolTCP:    "tcp",
	v1alpha1.ProtocolUDP:    "udp",
	v1alpha1.ProtocolSCTP:   "sctp",
	v1alpha1.ProtocolICMP:   "icmp",
	v1alpha1.ProtocolICMPv6: "ipv6-icmp",
}

// Restore returns the iptables-restore (v4) and ip6tables-restore (v6)
// input for spec. It does not validate: call compile.Validate first. A
// value it cannot parse (an address, say) is written through unchanged, so
// that iptables-restore refuses the file instead of loading a broader rule.
func Restore(spec v1alpha1.NodeFirewallSpec, opts Options) (v4, v6 string) {
	return render(spec, opts, ipv4), render(spec, opts, ipv6)
}

func render(spec v1alpha1.NodeFirewallSpec, opts Options, fam family) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range v1alpha1.Chains {
		policy := "ACCEPT"
		if spec.DefaultActions.For(c) == v1alpha1.ChainPolicyDrop && !slices.Contains(spec.AuditedChains, c) {
			policy = "DROP"
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", chainNames[c], policy)
	}
	for _, c := range v1alpha1.Chains {
		w := &writer{b: &b, chain: chainNames[c]}
		implicitRules(w, c, opts, fam)
		for _, r := range spec.Rules {
			if r.Chain == c {
				expandRule(w, r, fam)
			}
		}
		if spec.DefaultActions.For(c) == v1alpha1.ChainPolicyDrop && slices.Contains(spec.AuditedChains, c) {
			// Log what the policy would drop; drop nothing.
			w.rule(logLimit, "-m comment --comment", quote("nodefw: audit default-drop"),
				"-j LOG --log-prefix", quote(logPrefix("nodefw-audit ", "default-drop "+strings.ToLower(w.chain))))
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// writer appends rules to one chain.
type writer struct {
	b     *strings.Builder
	chain string
}

// rule writes "-A CHAIN" and the non-empty parts.
func (w *writer) rule(parts ...string) {
	w.b.WriteString("-A ")
	w.b.WriteString(w.chain)
	for _, p := range parts {
		if p != "" {
			w.b.WriteByte(' ')
			w.b.WriteString(p)
		}
	}
	w.b.WriteByte('\n')
}

func implicitRules(w *writer, c v1alpha1.Chain, opts Options, fam family) {
	w.rule("-m conntrack --ctstate RELATED,ESTABLISHED",
		"-m comment --comment", quote("nodefw: established,related"), "-j ACCEPT")
	var failsafes []compile.Failsafe
	switch c {
	case v1alpha1.ChainInput:
		w.rule("-i lo", "-m comment --comment", quote("nodefw: loopback"), "-j ACCEPT")
		failsafes = opts.FailsafeInbound
	case v1alpha1.ChainOutput:
		w.rule("-o lo", "-m comment --comment", quote("nodefw: loopback"), "-j ACCEPT")
		failsafes = opts.FailsafeOutbound
	default:
		return
	}
	if fam == ipv6 {
		for _, t := range ndTypes {
			w.rule("-p ipv6-icmp -m icmp6 --icmpv6-type", strconv.Itoa(t),
				"-m comment --comment", quote("nodefw: icmpv6 neighbour discovery"), "-j ACCEPT")
		}
	}
	// One rule per protocol, in a fixed order whatever the flag's order.
	for _, p := range []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP} {
		var ports []compile.PortInterval
		for _, f := range failsafes {
			if f.Protocol == p {
				ports = append(ports, f.Ports)
			}
		}
		if len(ports) == 0 {
			continue
		}
		for _, m := range portMatches(protoNames[p], canonicalPorts(ports)) {
			w.rule("-p", protoNames[p], m,
				"-m comment --comment", quote("nodefw: failsafe "+protoNames[p]), "-j ACCEPT")
		}
	}
}

// expandRule writes one API rule's iptables rules for a family: for every
// source, destination and block of ports an optional LOG rule and the
// verdict rule, or in Audit mode only a LOG rule in place of a Drop or
// Reject.
func expandRule(w *writer, r v1alpha1.NodeFirewallRule, fam family) {
	srcs, dsts, ok := addressMatches(r, fam)
	if !ok {
		return
	}
	name := r.Policy + "/" + r.Name
	proto := ""
	if p, ok := protoNames[r.Protocol]; ok {
		proto = "-p " + p
	} else if r.Protocol != "" {
		// Written through for iptables-restore to refuse.
		proto = "-p " + string(r.Protocol)
	}
	var ports []string
	if len(r.Ports) > 0 {
		intervals := make([]compile.PortInterval, len(r.Ports))
		for i, p := range r.Ports {
			intervals[i] = compile.PortInterval{First: uint16(p.Port), Last: uint16(p.Last())}
		}
		ports = portMatches(protoNames[r.Protocol], canonicalPorts(intervals))
	} else {
		ports = []string{""}
	}
	states := ""
	if len(r.States) > 0 {
		states = "-m conntrack --ctstate " + ctStates(r.States)
	}
	in, out := "", ""
	if r.InInterface != "" {
		in = "-i " + r.InInterface
	}
	if r.OutInterface != "" {
		out = "-o " + r.OutInterface
	}
	comment := "-m comment --comment " + quote(truncate(name, maxComment))

	audit := r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept
	var target string
	switch r.Action {
	case v1alpha1.ActionAccept:
		target = "-j ACCEPT"
	case v1alpha1.ActionDrop:
		target = "-j DROP"
	case v1alpha1.ActionReject:
		target = "-j REJECT --reject-with icmp-port-unreachable"
		if fam == ipv6 {
			target = "-j REJECT --reject-with icmp6-port-unreachable"
		}
	default:
		target = "-j " + string(r.Action)
	}
	for _, s := range srcs {
		for _, d := range dsts {
			for _, p := range ports {
				match := []string{s, d, in, out, proto, p, states}
				switch {
				case audit:
					w.rule(slices.Concat(match, []string{logLimit, comment,
						"-j LOG --log-prefix", quote(logPrefix("nodefw-audit ", name))})...)
					continue
				case r.Log:
					// A rule of its own: its rate limit must not gate the verdict.
					w.rule(slices.Concat(match, []string{logLimit, comment,
						"-j LOG --log-prefix", quote(logPrefix("nodefw ", name))})...)
				}
				w.rule(slices.Concat(match, []string{comment, target})...)
			}
		}
	}
}

// addressMatches returns the -s and -d options of a rule for a family, each
// list holding "" when the rule has no addresses of that kind, or false
// when the rule leaves nothing of the family to match: it has addresses of
// a kind but none of the family, or an ICMP protocol of the other family.
func addressMatches(r v1alpha1.NodeFirewallRule, fam family) (srcs, dsts []string, ok bool) {
	switch {
	case r.Protocol == v1alpha1.ProtocolICMP && fam != ipv4,
		r.Protocol == v1alpha1.ProtocolICMPv6 && fam != ipv6:
		return nil, nil, false
	}
	srcs, ok = addresses("-s", r.Sources, fam)
	if !ok {
		return nil, nil, false
	}
	dsts, ok = addresses("-d", r.Destinations, fam)
	return srcs, dsts, ok
}

// addresses renders the addresses of a family, masked and without those
// another one covers, as the agent's sets hold them.
func addresses(opt string, addrs []string, fam family) ([]string, bool) {
	if len(addrs) == 0 {
		return []string{""}, true
	}
	var prefixes []netip.Prefix
	var raw []string
	for _, a := range addrs {
		p, err := parseAddress(a)
		if err != nil {
			raw = append(raw, opt+" "+a)
			continue
		}
		if p.Addr().Is4() == (fam == ipv4) {
			prefixes = append(prefixes, p)
		}
	}
	var out []string
	for _, p := range canonicalPrefixes(prefixes) {
		out = append(out, opt+" "+p.String())
	}
	out = append(out, raw...)
	return out, len(out) > 0
}

// parseAddress parses an IP address or CIDR; host bits are masked off, as
// iptables does with -s 10.1.2.3/8.
func parseAddress(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// canonicalPrefixes sorts prefixes and drops those another one covers.
func canonicalPrefixes(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	var out []netip.Prefix
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// canonicalPorts sorts intervals and merges overlapping or adjacent ones.
func canonicalPorts(ps []compile.PortInterval) []compile.PortInterval {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b compile.PortInterval) int {
		return cmp.Or(cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last))
	})
	var out []compile.PortInterval
	for _, p := range ps {
		if n := len(out); n > 0 && uint32(p.First) <= uint32(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, p.Last)
			continue
		}
		out = append(out, p)
	}
	return out
}

// portMatches renders destination ports: "-m PROTO --dport" for one
// interval, else multiport matches of at most MaxMultiportPorts ports each.
func portMatches(proto string, ports []compile.PortInterval) []string {
	if len(ports) == 1 {
		return []string{"-m " + proto + " --dport " + formatPorts(ports[0])}
	}
	var out, block []string
	used := 0
	flush := func() {
		if len(block) > 0 {
			out = append(out, "-m multiport --dports "+strings.Join(block, ","))
			block, used = nil, 0
		}
	}
	for _, p := range ports {
		n := 1
		if p.First != p.Last {
			n = 2
		}
		if used+n > MaxMultiportPorts {
			flush()
		}
		block = append(block, formatPorts(p))
		used += n
	}
	flush()
	return out
}

func formatPorts(p compile.PortInterval) string {
	if p.First == p.Last {
		return strconv.Itoa(int(p.First))
	}
	return fmt.Sprintf("%d:%d", p.First, p.Last)
}

// ctStates lists conntrack states in the order iptables-save prints them.
func ctStates(states []v1alpha1.ConnState) string {
	var names []string
	for _, s := range []v1alpha1.ConnState{
		v1alpha1.ConnStateInvalid, v1alpha1.ConnStateNew,
		v1alpha1.ConnStateRelated, v1alpha1.ConnStateEstablished,
	} {
		if slices.Contains(states, s) {
			names = append(names, strings.ToUpper(string(s)))
		}
	}
	for _, s := range states {
		switch s {
		case v1alpha1.ConnStateInvalid, v1alpha1.ConnStateNew,
			v1alpha1.ConnStateRelated, v1alpha1.ConnStateEstablished:
		default:
			// Written through for iptables-restore to refuse.
			names = append(names, string(s))
		}
	}
	return strings.Join(names, ",")
}

// logPrefix is head + name + ": ", shortening the name so that the prefix
// fits MaxLogPrefix and still ends with ": ".
func logPrefix(head, name string) string {
	return head + truncate(name, MaxLogPrefix-len(head)-len(": ")) + ": "
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// quote makes an iptables-restore string argument. iptables-restore has no
// escapes inside quotes, so characters that would end or break the
// argument are replaced.
func quote(s string) string {
	return `"` + strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, s) + `"`
}
