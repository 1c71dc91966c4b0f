package reference

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/text"
)

// The iptables rendering of a node's resolved firewall: iptables-restore
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
// A spec that uses the PreRouting chain also gets the mangle table's
// PREROUTING (see iptables_prerouting.go).
//
// Loading the output with iptables-restore (without --noflush) replaces the
// whole filter table of that family, and the mangle table when written. The renderer serves the differential
// tests, which compare the two implementations packet by packet, and
// benchmarks of iptables-restore against the agent's netlink apply.
//
// Differences that do not change a verdict: iptables has no sets, so a rule
// becomes one iptables rule per source, destination, block of at most 15
// destination (and source) ports (multiport's limit) and ICMP type; a
// packet that matches several of them is logged once per matching LOG rule
// where the agent logs it once. LOG prefixes are cut to 29 bytes,
// iptables' limit (nftables allows 127).
//
// A difference that changes verdicts once a rate limit is reached: each of
// those iptables rules keeps a bucket of its own for `-m limit`, where the
// agent keeps one per rule and family (a per-source limit shares one
// hashlimit table per rule, as the agent shares one meter). Probes that
// stay under the limits see no difference.

// Limits of iptables' extensions.
const (
	// maxLogPrefix is the longest --log-prefix the LOG target takes.
	maxLogPrefix = 29
	// maxMultiportPorts is how many ports one multiport match holds; a
	// range counts as two.
	maxMultiportPorts = 15
	// maxComment is the comment match's limit, in bytes.
	maxComment = 255
)

// Log rate limit of log and audit rules, as the agent's.
var logLimit = fmt.Sprintf("-m limit --limit %d/min --limit-burst %d", compile.LogRatePerMinute, compile.LogBurst)

type family int

const (
	ipv4 family = iota
	ipv6
)

var chainNames = map[v1alpha1.Chain]string{
	v1alpha1.ChainInput:      "INPUT",
	v1alpha1.ChainForward:    "FORWARD",
	v1alpha1.ChainOutput:     "OUTPUT",
	v1alpha1.ChainPreRouting: "PREROUTING",
}

var protoNames = map[v1alpha1.Protocol]string{
	v1alpha1.ProtocolTCP:    "tcp",
	v1alpha1.ProtocolUDP:    "udp",
	v1alpha1.ProtocolSCTP:   "sctp",
	v1alpha1.ProtocolICMP:   "icmp",
	v1alpha1.ProtocolICMPv6: "ipv6-icmp",
}

// IPTablesRestore returns the iptables-restore (v4) and ip6tables-restore
// (v6) input for spec; of opts it reads only the failsafes. It does not
// validate: call Validate first. A value it cannot parse (an address, say)
// is written through unchanged, so that iptables-restore refuses the file
// instead of loading a broader rule.
func IPTablesRestore(spec v1alpha1.NodeFirewallSpec, opts compile.Options) (v4, v6 string) {
	// Peers become the literal addresses they stand for.
	spec = peersAsAddresses(spec, opts.AddressSets)
	return renderRestore(spec, opts, ipv4), renderRestore(spec, opts, ipv6)
}

func renderRestore(spec v1alpha1.NodeFirewallSpec, opts compile.Options, fam family) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range filterChains {
		policy := "ACCEPT"
		if spec.DefaultActions.For(c) == v1alpha1.ChainPolicyDrop && !slices.Contains(spec.AuditedChains, c) {
			policy = "DROP"
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", chainNames[c], policy)
	}
	marks := rejectsInPreRouting(spec)
	for _, c := range filterChains {
		w := &writer{b: &b, chain: chainNames[c]}
		if marks && c != v1alpha1.ChainOutput {
			writeMarkedReject(w, fam)
		}
		implicitRestoreRules(w, c, opts, fam)
		for _, r := range spec.Rules {
			if r.Chain == c {
				restoreRules(w, r, fam)
			}
		}
		if spec.DefaultActions.For(c) == v1alpha1.ChainPolicyDrop && slices.Contains(spec.AuditedChains, c) {
			// Log what the policy would drop; drop nothing.
			w.rule(logLimit, "-m comment --comment", text.Quote("nodefw: audit default-drop"),
				"-j LOG --log-prefix", text.Quote(logPrefix("nodefw-audit ", "default-drop "+strings.ToLower(w.chain))))
		}
	}
	b.WriteString("COMMIT\n")
	if usesPreRouting(spec) {
		renderMangle(&b, spec, opts, fam)
	}
	return b.String()
}

// filterChains are the API's chains of the filter table, in its order.
var filterChains = []v1alpha1.Chain{v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput}

// writer appends rules to one chain.
type writer struct {
	b     *strings.Builder
	chain string
	// guard, when set, is the match every policy rule of the chain starts
	// with (PREROUTING's -m addrtype --dst-type LOCAL).
	guard string
	// reject, when set, is the chain's target for Reject in place of
	// REJECT, which only the filter table allows.
	reject string
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

// implicitRestoreRules writes the accepts every chain starts with.
func implicitRestoreRules(w *writer, c v1alpha1.Chain, opts compile.Options, fam family) {
	w.rule("-m conntrack --ctstate RELATED,ESTABLISHED",
		"-m comment --comment", text.Quote("nodefw: established,related"), "-j ACCEPT")
	var failsafes []compile.Failsafe
	switch c {
	case v1alpha1.ChainInput, v1alpha1.ChainPreRouting:
		w.rule("-i lo", "-m comment --comment", text.Quote("nodefw: loopback"), "-j ACCEPT")
		failsafes = opts.FailsafeInbound
	case v1alpha1.ChainOutput:
		w.rule("-o lo", "-m comment --comment", text.Quote("nodefw: loopback"), "-j ACCEPT")
		failsafes = opts.FailsafeOutbound
	default:
		return
	}
	if fam == ipv6 {
		for _, t := range ndTypes {
			w.rule("-p ipv6-icmp -m icmp6 --icmpv6-type", strconv.Itoa(int(t)),
				"-m comment --comment", text.Quote("nodefw: icmpv6 neighbour discovery"), "-j ACCEPT")
		}
	}
	// One rule per protocol, in a fixed order whatever the flag's order.
	for _, p := range []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP} {
		var ports []compile.PortInterval
		for _, f := range failsafes {
			if f.Protocol == p && len(f.Sources) == 0 && len(f.Destinations) == 0 {
				ports = append(ports, f.Ports)
			}
		}
		if len(ports) == 0 {
			continue
		}
		for _, m := range portMatches(protoNames[p], compile.CanonicalPorts(ports)) {
			w.rule("-p", protoNames[p], m,
				"-m comment --comment", text.Quote("nodefw: failsafe "+protoNames[p]), "-j ACCEPT")
		}
	}
	// A failsafe restricted to addresses: one rule per source and
	// destination of this family, none when a list it has holds none.
	for _, f := range failsafes {
		if len(f.Sources) == 0 && len(f.Destinations) == 0 {
			continue
		}
		srcs, ok := failsafeAddresses("-s", f.Sources, fam)
		if !ok {
			continue
		}
		dsts, ok := failsafeAddresses("-d", f.Destinations, fam)
		if !ok {
			continue
		}
		proto := protoNames[f.Protocol]
		for _, src := range srcs {
			for _, dst := range dsts {
				for _, m := range portMatches(proto, []compile.PortInterval{f.Ports}) {
					w.rule("-p", proto, src, dst, m,
						"-m comment --comment", text.Quote("nodefw: failsafe "+proto+" by address"), "-j ACCEPT")
				}
			}
		}
	}
}

// failsafeAddresses renders a failsafe's addresses of a family; an empty
// list matches any address, one without an address of the family none.
func failsafeAddresses(opt string, prefixes []netip.Prefix, fam family) ([]string, bool) {
	if len(prefixes) == 0 {
		return []string{""}, true
	}
	var out []string
	for _, p := range prefixes {
		if p.Addr().Is4() == (fam == ipv4) {
			out = append(out, opt+" "+p.String())
		}
	}
	return out, len(out) > 0
}

// restoreRules writes one API rule's iptables rules for a family: for every
// source, destination and block of ports an optional LOG rule and the
// verdict rule, or in Audit mode only a LOG rule in place of a Drop or
// Reject.
func restoreRules(w *writer, r v1alpha1.NodeFirewallRule, fam family) {
	srcs, dsts, ok := addressMatches(r, fam)
	if !ok {
		return
	}
	name := r.Policy + "/" + r.Name
	proto := ""
	if p, ok := protoNames[r.Protocol]; ok {
		proto = "-p " + p
	} else if n, ok := protoNumbers[r.Protocol]; ok {
		// By number: iptables finds other names in /etc/protocols only.
		proto = "-p " + strconv.Itoa(int(n))
	} else if r.Protocol != "" {
		// A number, or written through for iptables-restore to refuse.
		proto = "-p " + string(r.Protocol)
	}
	var ports []string
	if len(r.Ports) > 0 {
		intervals := make([]compile.PortInterval, len(r.Ports))
		for i, p := range r.Ports {
			intervals[i] = compile.PortInterval{First: uint16(p.Port), Last: uint16(p.Last())}
		}
		ports = portMatches(protoNames[r.Protocol], compile.CanonicalPorts(intervals))
	} else {
		ports = []string{""}
	}
	states := ""
	if len(r.States) > 0 {
		states = "-m conntrack --ctstate " + restoreStates(r.States)
	}
	in, out := "", ""
	if r.InInterface != "" {
		in = "-i " + r.InInterface
	}
	if r.OutInterface != "" {
		out = "-o " + r.OutInterface
	}
	comment := "-m comment --comment " + text.Quote(text.Truncate(name, maxComment))

	audit := r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept
	var target string
	switch r.Action {
	case v1alpha1.ActionAccept:
		target = "-j ACCEPT"
	case v1alpha1.ActionDrop:
		target = "-j DROP"
	case v1alpha1.ActionReject:
		target = "-j REJECT --reject-with " + rejectWith(r.RejectWith, fam)
		if w.reject != "" {
			// The answer is the filter table's (see iptables_prerouting.go).
			target = w.reject
		}
	default:
		target = "-j " + string(r.Action)
	}
	extensions := restoreExtensions(r, fam)
	stateful := restoreLimits(r, fam)
	for _, s := range srcs {
		for _, d := range dsts {
			for _, p := range ports {
				for _, x := range extensions {
					match := []string{w.guard, s, d, in, out, proto, p, x, states, stateful}
					switch {
					case audit:
						w.rule(slices.Concat(match, []string{logLimit, comment,
							"-j LOG --log-prefix", text.Quote(logPrefix("nodefw-audit ", name))})...)
						continue
					case r.Log:
						// A rule of its own: its rate limit must not gate the verdict.
						w.rule(slices.Concat(match, []string{logLimit, comment,
							"-j LOG --log-prefix", text.Quote(logPrefix("nodefw ", name))})...)
					}
					w.rule(slices.Concat(match, []string{comment, target})...)
				}
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
		p, err := v1alpha1.ParseAddress(a)
		if err != nil {
			raw = append(raw, opt+" "+a)
			continue
		}
		if p.Addr().Is4() == (fam == ipv4) {
			prefixes = append(prefixes, p)
		}
	}
	var out []string
	for _, p := range compile.CanonicalPrefixes(prefixes) {
		out = append(out, opt+" "+p.String())
	}
	out = append(out, raw...)
	return out, len(out) > 0
}

// portMatches renders destination ports: "-m PROTO --dport" for one
// interval, else multiport matches of at most maxMultiportPorts ports each.
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
		if used+n > maxMultiportPorts {
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

// restoreStates lists conntrack states in the order iptables-save prints them.
func restoreStates(states []v1alpha1.ConnState) string {
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
// fits maxLogPrefix and still ends with ": ".
func logPrefix(head, name string) string {
	return head + text.Truncate(name, maxLogPrefix-len(head)-len(": ")) + ": "
}
