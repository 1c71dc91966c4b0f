package reference

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/text"
)

// The PreRouting chain in iptables: the mangle table's PREROUTING, which
// runs after conntrack (-200) and before the nat table's DNAT (-100), as
// nodefw's prerouting chain does. It is written only for a spec that uses
// PreRouting, after the filter table, and it is said independently of the
// agent's chain: where nodefw lets go what is not addressed to the node in
// one rule ahead of all, here every policy rule, and the default Drop,
// carries the match -m addrtype --dst-type LOCAL, and the chain's own
// policy stays ACCEPT.
//
// iptables allows REJECT only in the filter table, so a Reject rule marks
// the packet and accepts it in a chain of its own (rejectChain), and the
// filter table's INPUT and FORWARD reject marked packets before anything
// else: the packet is rejected in PREROUTING's stead, whether DNAT sends it
// on to the node or past it. Only new packets are marked (PREROUTING
// accepts established and related ones first), and nothing else sets the
// mark's bit where the differential test runs.

// rejectMark is the packet mark bit of a Reject in PREROUTING.
const rejectMark = "0x10000000"

// rejectChain is the mangle table's chain that marks a packet for REJECT.
const rejectChain = "NODEFW-REJECT"

// localGuard restricts a PREROUTING rule to packets addressed to the node.
const localGuard = "-m addrtype --dst-type LOCAL"

// usesPreRouting reports whether a spec has PreRouting rules or a Drop
// default there: the agent's ruleset then has a prerouting chain, and the
// iptables rendering a mangle table.
func usesPreRouting(spec v1alpha1.NodeFirewallSpec) bool {
	return spec.DefaultActions.PreRouting == v1alpha1.ChainPolicyDrop ||
		slices.ContainsFunc(spec.Rules, func(r v1alpha1.NodeFirewallRule) bool { return r.Chain == v1alpha1.ChainPreRouting })
}

// rejectsInPreRouting reports whether some PreRouting rule rejects (in
// Enforce mode: an audited Reject only logs).
func rejectsInPreRouting(spec v1alpha1.NodeFirewallSpec) bool {
	return slices.ContainsFunc(spec.Rules, func(r v1alpha1.NodeFirewallRule) bool {
		return r.Chain == v1alpha1.ChainPreRouting && r.Action == v1alpha1.ActionReject && r.Mode != v1alpha1.PolicyModeAudit
	})
}

// rejectTarget is iptables' REJECT as the API's Reject answers.
func rejectTarget(fam family) string {
	if fam == ipv6 {
		return "-j REJECT --reject-with icmp6-port-unreachable"
	}
	return "-j REJECT --reject-with icmp-port-unreachable"
}

// writeMarkedReject writes the filter table rule that rejects what a
// PreRouting Reject marked.
func writeMarkedReject(w *writer, fam family) {
	w.rule("-m mark --mark "+rejectMark+"/"+rejectMark,
		"-m comment --comment", text.Quote("nodefw: rejected in prerouting"), rejectTarget(fam))
}

// renderMangle writes the mangle table: PREROUTING's implicit accepts, as
// INPUT's, then the rules and the default action, each guarded.
func renderMangle(b *strings.Builder, spec v1alpha1.NodeFirewallSpec, opts compile.Options, fam family) {
	b.WriteString("*mangle\n:PREROUTING ACCEPT [0:0]\n")
	marks := rejectsInPreRouting(spec)
	if marks {
		fmt.Fprintf(b, ":%s - [0:0]\n", rejectChain)
	}
	w := &writer{b: b, chain: "PREROUTING", guard: localGuard, reject: "-j " + rejectChain}
	implicitRestoreRules(w, v1alpha1.ChainPreRouting, opts, fam)
	for _, r := range spec.Rules {
		if r.Chain == v1alpha1.ChainPreRouting {
			restoreRules(w, r, fam)
		}
	}
	if spec.DefaultActions.PreRouting == v1alpha1.ChainPolicyDrop {
		comment := "-m comment --comment " + text.Quote("nodefw: default-drop")
		if slices.Contains(spec.AuditedChains, v1alpha1.ChainPreRouting) {
			w.rule(localGuard, logLimit, "-m comment --comment", text.Quote("nodefw: audit default-drop"),
				"-j LOG --log-prefix", text.Quote(logPrefix("nodefw-audit ", "default-drop prerouting")))
		} else {
			w.rule(localGuard, comment, "-j DROP")
		}
	}
	if marks {
		m := &writer{b: b, chain: rejectChain}
		m.rule("-j MARK --or-mark", rejectMark)
		m.rule("-j ACCEPT")
	}
	b.WriteString("COMMIT\n")
}
