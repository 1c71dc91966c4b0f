package importer

import (
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// PREROUTING of the raw and mangle tables becomes the PreRouting chain.
//
// Both run before the nat table's DNAT (kube-proxy's), as nodefw's
// PreRouting chain does, so their ports are the ones the client used. They
// differ from it in three ways the import must account for:
//
//   - nodefw's PreRouting decides only packets addressed to the node; an
//     iptables PREROUTING rule also sees forwarded ones unless it says
//     -m addrtype --dst-type LOCAL. A rule with that match translates
//     exactly; an ACCEPT without it too (nodefw lets other packets go
//     anyway); a DROP or REJECT without it, and a DROP policy, no longer
//     drop forwarded packets, which is reported. The usual
//     `-m addrtype ! --dst-type LOCAL -j ACCEPT` is what nodefw's chain
//     does first of all, and is reported rather than imported.
//   - raw runs before connection tracking: conntrack states mean nothing
//     there, and rules that match them are not imported.
//   - raw and mangle are two chains, where nodefw has one: their rules are
//     imported raw's first, and a file that fills both is reported, since
//     an ACCEPT in raw no longer lets mangle's rules see the packet.

// preRoutingMatch checks a translated rule of chain c of table against
// what PreRouting can say, given the rule's --dst-type value (addrType,
// "!" prefixed when negated) and whether it matched -m addrtype. It fills
// in t's localOnly, notLocalAccept and notes, or returns why the rule is
// not imported.
func preRoutingMatch(table string, c v1alpha1.Chain, r *v1alpha1.Rule, addrType string, addrtype bool, t *translation) string {
	if c != v1alpha1.ChainPreRouting {
		if addrtype {
			return "match -m addrtype is not supported: only as --dst-type LOCAL, in PREROUTING"
		}
		return ""
	}
	switch {
	case table == "raw" && len(r.States) > 0:
		return "conntrack states in the raw table, which runs before connection tracking, match no packet as they would in nodefw's PreRouting: not imported"
	case r.Action == v1alpha1.ActionReject:
		return "REJECT in table " + table + " is refused by iptables: it is allowed only in the filter table"
	}
	value, negated := strings.CutPrefix(addrType, "!")
	switch {
	case addrtype && addrType == "":
		return "-m addrtype without --dst-type LOCAL is not supported"
	case addrType == "":
		if r.Action != v1alpha1.ActionAccept {
			t.notes = append(t.notes, "imported into PreRouting, which sees only packets addressed to the node: the forwarded packets this rule "+
				strings.ToLower(string(r.Action))+"s pass (match them in Forward, which sees them after DNAT; -m addrtype --dst-type LOCAL says the same as PreRouting)")
		}
	case !strings.EqualFold(value, "LOCAL"):
		return "addrtype --dst-type " + value + " is not supported: only LOCAL"
	case !negated:
		t.localOnly = true
	case r.Action == v1alpha1.ActionAccept && onlyAction(r):
		t.notLocalAccept = true
	default:
		return "-m addrtype ! --dst-type LOCAL is supported only alone with -j ACCEPT, which nodefw's PreRouting chain does before any rule"
	}
	return ""
}

// onlyAction reports whether a rule matches every packet.
func onlyAction(r *v1alpha1.Rule) bool {
	return r.Protocol == "" && len(r.Ports) == 0 && len(r.Sources) == 0 && len(r.Destinations) == 0 &&
		r.InInterface == "" && r.OutInterface == "" && len(r.States) == 0
}

// warnPreRoutingScope reports what the rules of PREROUTING cannot carry
// over: a DROP policy, which in iptables also drops forwarded packets
// unless the chain lets them go first, and rules in both raw and mangle.
func (im *importer) warnPreRoutingScope() {
	raw := im.chains[tableChain{"raw", v1alpha1.ChainPreRouting}]
	mangle := im.chains[tableChain{"mangle", v1alpha1.ChainPreRouting}]
	if w := im.preRoutingDropLine; w != nil && !hasNotLocalAccept(raw) && !hasNotLocalAccept(mangle) {
		im.warn(w.Line, w.Text, "PREROUTING's DROP policy is imported as defaultActions.preRouting: Drop, which drops only packets addressed to the node: the forwarded packets it dropped pass (a Forward Drop sees them after DNAT)")
	}
	if first, ok := firstRule(mangle); ok && hasRules(raw) {
		im.warn(first.line, first.text, "the PREROUTING rules of raw and of mangle are imported into the one PreRouting chain, raw's first: a packet a raw rule accepts no longer meets mangle's rules")
	}
}

func hasNotLocalAccept(es []entry) bool {
	for _, e := range es {
		if e.notLocalAccept {
			return true
		}
	}
	return false
}

func hasRules(es []entry) bool {
	_, ok := firstRule(es)
	return ok
}

// firstRule is the first entry that became a rule.
func firstRule(es []entry) (entry, bool) {
	for _, e := range es {
		if e.rule != nil {
			return e, true
		}
	}
	return entry{}, false
}
