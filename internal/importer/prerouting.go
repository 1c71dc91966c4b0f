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
//     anyway); a DROP without it, and a DROP policy, no longer drop
//     forwarded packets, which is reported. The usual
//     `-m addrtype ! --dst-type LOCAL -j ACCEPT` is what nodefw's chain
//     does first of all: it is reported rather than imported, and the
//     DROPs after it in its table, and that table's DROP policy, drop
//     only packets addressed to the node already.
//   - raw runs before connection tracking: conntrack states mean nothing
//     there, and rules that match them are not imported.
//   - raw and mangle are two chains, where nodefw has one: their rules are
//     taken in raw's first, then mangle's, and a file that fills both is
//     reported, since an ACCEPT in raw no longer lets mangle's rules see
//     the packet. A RETURN in raw goes on with mangle's rules. The chain's
//     default is Drop when either table's policy is DROP: a packet passes
//     PREROUTING only if both let it.
//
// User-defined chains of raw and mangle are not taken in.

// preRoutingTables are the tables whose PREROUTING is imported, in the
// order the kernel runs them.
var preRoutingTables = map[string]bool{"raw": true, "mangle": true}

var (
	rawPreRouting    = chainRef{"raw", "PREROUTING"}
	manglePreRouting = chainRef{"mangle", "PREROUTING"}
)

// isPreRouting reports whether ref is the PREROUTING of raw or mangle.
func isPreRouting(ref chainRef) bool {
	return ref == rawPreRouting || ref == manglePreRouting
}

// isBuiltin reports whether chain is a built-in chain of the raw or mangle
// table.
func isBuiltin(table, chain string) bool {
	switch chain {
	case "PREROUTING", "OUTPUT":
		return true
	case "INPUT", "FORWARD", "POSTROUTING":
		return table == "mangle"
	}
	return false
}

// buildPreRouting writes the PreRouting chain: raw's PREROUTING, then
// mangle's. The packets a conditional RETURN of raw returns meet mangle's
// rules, then the chain's policy, written for them.
func (im *importer) buildPreRouting(atEnd continuation) []emittedRule {
	b := &budget{}
	stack := []string{"PREROUTING"}
	all := v1alpha1.Rule{Chain: v1alpha1.ChainPreRouting}
	im.preRoutingLocal = map[string]bool{}
	toMangle := func(cond v1alpha1.Rule, origin entry) []emittedRule {
		rs := im.inline(manglePreRouting, 0, cond, stack, atEnd, b)
		return append(rs, atEnd(cond, origin)...)
	}
	out := im.inline(rawPreRouting, 0, all, stack, toMangle, b)
	return append(out, im.inline(manglePreRouting, 0, all, stack, atEnd, b)...)
}

// endsBuiltin reports whether entry i of ref is the last rule of its
// built-in chain: of mangle's PREROUTING when ref is raw's.
func (im *importer) endsBuiltin(ref chainRef, i int) bool {
	if i != len(im.chains[ref])-1 {
		return false
	}
	return ref != rawPreRouting || len(im.chains[manglePreRouting]) == 0
}

// preRoutingCheck is what a rule of PREROUTING says that nodefw's
// PreRouting chain says otherwise.
type preRoutingCheck struct {
	// reason says why the rule is not imported.
	reason string
	// note is the caveat of a rule imported.
	note string
	// notLocalAccept says the rule is `-m addrtype ! --dst-type LOCAL -j
	// ACCEPT` alone, which nodefw's PreRouting does ahead of every rule.
	notLocalAccept bool
}

// checkPreRouting checks a rule of table's PREROUTING against what
// PreRouting can say.
func (im *importer) checkPreRouting(table string, e *parsedEntry) preRoutingCheck {
	switch {
	case table == "raw" && len(e.match.States) > 0:
		return preRoutingCheck{reason: "conntrack states in the raw table, which runs before connection tracking, match no packet as they would in nodefw's PreRouting: not imported"}
	case e.target == "REJECT":
		return preRoutingCheck{reason: "REJECT in table " + table + " is refused by iptables: it is allowed only in the filter table"}
	}
	value, negated := strings.CutPrefix(e.dstType, "!")
	switch {
	case e.addrtype && e.dstType == "":
		return preRoutingCheck{reason: "-m addrtype without --dst-type LOCAL is not supported"}
	case e.dstType == "":
		if e.target == "DROP" && !im.preRoutingLocal[table] {
			return preRoutingCheck{note: "imported into PreRouting, which sees only packets addressed to the node: the forwarded packets this rule drops pass (match them in Forward, which sees them after DNAT; -m addrtype --dst-type LOCAL says the same as PreRouting)"}
		}
	case !strings.EqualFold(value, "LOCAL"):
		return preRoutingCheck{reason: "addrtype --dst-type " + value + " is not supported: only LOCAL"}
	case !negated:
		// Exactly the packets nodefw's PreRouting sees.
	case e.target == "ACCEPT" && isEmptyMatch(e.match) && !e.log:
		return preRoutingCheck{notLocalAccept: true}
	default:
		return preRoutingCheck{reason: "-m addrtype ! --dst-type LOCAL is supported only alone with -j ACCEPT, which nodefw's PreRouting chain does before any rule"}
	}
	return preRoutingCheck{}
}

// acceptNotLocal handles the not-local accept of table's PREROUTING, met
// by the packets of cond: nodefw's PreRouting chain does it ahead of every
// rule, so it is exact without a rule, and once every packet has met it
// the DROPs after it in table drop only packets addressed to the node.
// (An ACCEPT of raw sends the packet on to mangle, whose DROPs still see
// forwarded packets.)
func (im *importer) acceptNotLocal(table string, e entry, cond v1alpha1.Rule) {
	im.warn(e.line, e.text, "not imported as a rule: nodefw's PreRouting chain lets packets not addressed to the node go before any rule")
	im.mark(e.line, statusImported)
	if isEmptyMatch(cond) {
		im.preRoutingLocal[table] = true
	}
}

// tablePolicy is the policy of a table's PREROUTING and where it was set.
type tablePolicy struct {
	policy v1alpha1.ChainPolicy
	line   int
	text   string
}

// preRoutingPolicy records the policy of table's PREROUTING and sets the
// PreRouting default: Drop when either table's policy is DROP.
func (im *importer) preRoutingPolicy(n int, text, table string, policy v1alpha1.ChainPolicy) {
	im.preRoutingPolicies[table] = tablePolicy{policy: policy, line: n, text: text}
	im.defaults.PreRouting = v1alpha1.ChainPolicyAccept
	delete(im.defaultLines, v1alpha1.ChainPreRouting)
	for _, t := range []string{"raw", "mangle"} {
		if p := im.preRoutingPolicies[t]; p.policy == v1alpha1.ChainPolicyDrop {
			im.defaults.PreRouting = v1alpha1.ChainPolicyDrop
			im.defaultLines[v1alpha1.ChainPreRouting] = Warning{Line: p.line, Text: p.text}
			break
		}
	}
}

// otherTablePolicy handles `:CHAIN POLICY`, `-P CHAIN POLICY` and `-N
// CHAIN` of the raw and mangle tables, of which only PREROUTING's policy
// is imported.
func (im *importer) otherTablePolicy(n int, text, table, chain, policy string, declare bool) {
	if isPreRouting(chainRef{table, chain}) {
		switch policy {
		case "ACCEPT":
			im.preRoutingPolicy(n, text, table, v1alpha1.ChainPolicyAccept)
		case "DROP":
			im.preRoutingPolicy(n, text, table, v1alpha1.ChainPolicyDrop)
		case "":
			im.warn(n, text, "chain %s has no policy", chain)
		default:
			im.warn(n, text, "chain policy %s is not supported: only ACCEPT and DROP", policy)
		}
		return
	}
	switch {
	case chain == "":
		im.warn(n, text, "chain name missing")
	case chainOwner(chain) != "":
		im.reportOwned(n, text, chain)
	case !isBuiltin(table, chain):
		im.warn(n, text, "user-defined chain %s of table %s is not imported: %s", chain, table, importedChains)
	case policy == "ACCEPT":
		// A built-in chain of raw or mangle that lets everything through.
	case declare && policy == "":
		im.warn(n, text, "chain %s has no policy", chain)
	default:
		im.warn(n, text, "policy %s of chain %s of table %s is not imported: %s", policy, chain, table, importedChains)
	}
}

// otherTableRule reports a rule of raw or mangle outside PREROUTING.
func (im *importer) otherTableRule(n int, text, table, chain string) {
	switch {
	case chainOwner(chain) != "":
		im.reportOwned(n, text, chain)
	case isBuiltin(table, chain):
		im.warn(n, text, "chain %s of table %s is not imported: %s", chain, table, importedChains)
	default:
		im.warn(n, text, "rule in user-defined chain %s of table %s not imported: %s", chain, table, importedChains)
	}
}

// warnPreRoutingScope reports what the PreRouting rules written cannot
// carry over: a DROP policy, which in iptables also drops forwarded
// packets unless the chain lets them go first, and rules of both raw and
// mangle in the one chain.
func (im *importer) warnPreRoutingScope(emitted map[v1alpha1.Chain][]emittedRule) {
	for _, table := range []string{"raw", "mangle"} {
		if p := im.preRoutingPolicies[table]; p.policy == v1alpha1.ChainPolicyDrop && !im.preRoutingLocal[table] {
			im.difference(p.line, p.text, "PREROUTING's DROP policy is imported as defaultActions.preRouting: Drop, which drops only packets addressed to the node: the forwarded packets it dropped pass (a Forward Drop sees them after DNAT)")
		}
	}
	lines := map[int]bool{}
	for _, e := range emitted[v1alpha1.ChainPreRouting] {
		lines[e.line] = true
	}
	hasRules := func(ref chainRef) (entry, bool) {
		for _, e := range im.chains[ref] {
			if lines[e.line] {
				return e, true
			}
		}
		return entry{}, false
	}
	first, mangle := hasRules(manglePreRouting)
	if _, raw := hasRules(rawPreRouting); raw && mangle {
		im.difference(first.line, first.text, "the PREROUTING rules of raw and of mangle are imported into the one PreRouting chain, raw's first: a packet a raw rule accepts no longer meets mangle's rules")
	}
}
