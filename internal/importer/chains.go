package importer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Taking user-defined chains in. Each built-in chain's rules are read in
// order; a jump to a user-defined chain is replaced by that chain's rules,
// each also matching what the jump matched. A packet that reaches the end
// of the chain, or a RETURN, goes on with the rules after the jump, as in
// iptables. An unconditional RETURN ends the chain; a conditional one
// needs what follows the jump for the packets it returns, so those rules
// are written there, for those packets, ending with the built-in chain's
// policy as a rule: nothing after the RETURN in the chain may then meet
// them. A goto (-g) is a jump whose packets, at the chain's end, go where
// a RETURN of the calling chain would send them. A jump back into a chain
// being taken in is a loop, which iptables refuses too.

// maxEmitted bounds the rules taking chains in may write, twice what a
// policy holds: a conditional RETURN repeats what follows its jump.
const maxEmitted = 2 * v1alpha1.MaxPolicyRules

// emittedRule is a rule of the policy and the line it came from.
type emittedRule struct {
	rule    v1alpha1.Rule
	comment string
	line    int
	text    string
}

// parsedEntry is a rule line read.
type parsedEntry struct {
	entry
	parsed
	// log says a LOG rule just before logs the packets this one matches,
	// with these settings of the API's.
	log bool
	logSettings

	// logOf is, for a LOG rule that the next rule takes in, that rule's
	// line.
	logOf *entry
}

// continuation writes the rules for packets that match cond and return
// from a chain, their origin being the line that returned them.
type continuation func(cond v1alpha1.Rule, origin entry) []emittedRule

// build translates every built-in chain, taking in the user-defined chains
// it jumps to, and reports what no built-in chain reaches.
func (im *importer) build() map[v1alpha1.Chain][]emittedRule {
	out := map[v1alpha1.Chain][]emittedRule{}
	for _, c := range v1alpha1.Chains {
		name := strings.ToUpper(string(c))
		policy := im.defaults.For(c)
		atEnd := func(cond v1alpha1.Rule, origin entry) []emittedRule {
			// The built-in chain's policy, as a rule for these packets.
			r := cond
			r.Action = v1alpha1.ActionAccept
			if policy == v1alpha1.ChainPolicyDrop {
				r.Action = v1alpha1.ActionDrop
			}
			return []emittedRule{{rule: r, line: origin.line, text: origin.text}}
		}
		if c == v1alpha1.ChainPreRouting {
			out[c] = im.buildPreRouting(atEnd)
			continue
		}
		out[c] = im.inline(filterChain(name), 0, v1alpha1.Rule{Chain: c}, []string{name}, atEnd, &budget{})
	}
	im.reportOwnedLines()
	im.reportUnreached()
	return out
}

// reportUnreached reports, once each, the user-defined chains nothing
// jumps to: their rules have no effect.
func (im *importer) reportUnreached() {
	for _, name := range im.filterChainNames() {
		list := im.chains[filterChain(name)]
		if builtinChains[name] != "" || chainOwner(name) != "" || im.reached[name] || len(list) == 0 {
			continue
		}
		first := list[0]
		im.warn(first.line, first.text, "chain %s is not reached from INPUT, FORWARD or OUTPUT by any jump imported: its %d rules are not imported", name, len(list))
	}
}

// filterChainNames are the names of the filter table's chains with rules,
// sorted.
func (im *importer) filterChainNames() []string {
	var names []string
	for ref := range im.chains {
		if ref.table == "filter" {
			names = append(names, ref.name)
		}
	}
	slices.Sort(names)
	return names
}

// budget counts the rules a built-in chain has written.
type budget struct{ spent int }

// inline writes the rules of chain ref from entry from on, for the
// packets that match cond; stack are the names of the chains being taken
// in; cont writes the rules of packets that a RETURN of this chain
// returns.
func (im *importer) inline(ref chainRef, from int, cond v1alpha1.Rule, stack []string, cont continuation, b *budget) []emittedRule {
	var out []emittedRule
	name := ref.name
	if ref.table == "filter" {
		im.reached[name] = true
	}
	entries := im.parsedChain(ref)
	for i := from; i < len(entries); i++ {
		e := &entries[i]
		if b.spent > maxEmitted {
			if !im.budgetSpent {
				im.budgetSpent = true
				im.warn(e.line, e.text, "taking user-defined chains in writes more than %d rules: the rest of chain %s and what follows are not imported", maxEmitted, name)
			}
			im.mark(e.line, statusSkipped)
			continue
		}
		if e.err != "" {
			im.skip(e.entry, "%s", e.err)
			continue
		}
		// iptables refuses these in the built-in chains; in a user-defined
		// chain they match no packet of these chains.
		if c := apiChain(ref); (c == v1alpha1.ChainOutput && e.match.InInterface != "") || (c == v1alpha1.ChainInput && e.match.OutInterface != "") || (c == v1alpha1.ChainPreRouting && e.match.OutInterface != "") {
			opt := map[v1alpha1.Chain]string{v1alpha1.ChainOutput: "-i", v1alpha1.ChainInput: "-o", v1alpha1.ChainPreRouting: "-o"}[c]
			im.skip(e.entry, "%s is not allowed on %s (iptables refuses it)", opt, name)
			continue
		}
		// What PREROUTING's rules say that nodefw's PreRouting chain says
		// otherwise; -m addrtype anywhere else.
		preNote := ""
		if isPreRouting(ref) {
			check := im.checkPreRouting(ref.table, e)
			switch {
			case check.notLocalAccept:
				im.acceptNotLocal(ref.table, e.entry, cond)
				continue
			case check.reason != "":
				im.skip(e.entry, "%s", check.reason)
				continue
			}
			preNote = check.note
		} else if e.addrtype {
			im.skip(e.entry, "match -m addrtype is not supported: only as --dst-type LOCAL, in PREROUTING")
			continue
		}
		if e.target == "LOG" {
			if e.logOf != nil {
				im.note(e.entry, fmt.Sprintf("LOG imported as log: true on the rule of line %d: the agent writes a JSON line per packet, with the prefix as logLabel%s", e.logOf.line, e.logNote))
				continue
			}
			if len(stack) == 1 && im.endsBuiltin(ref, i) && im.defaults.For(apiChain(ref)) == v1alpha1.ChainPolicyDrop && isEmptyMatch(withoutLimit(e.match)) {
				// Last in a built-in chain that drops: it logs the drops.
				im.logDrops = true
				im.note(e.entry, "LOG at the end of a chain whose default is DROP imported as defaultActions.logDrops: the agent logs what the policy's Drop defaults drop, on every chain, 10 a minute")
				continue
			}
			im.skip(e.entry, "LOG is imported only right before a rule that matches the same packets and accepts, drops or rejects them: set log: true on the rule that decides")
			continue
		}
		if stateful := e.match.Limit != nil || e.match.ConnLimit != nil; stateful && !decides(e.target) && e.target != "" {
			// Taken in, the limit would go to every rule the jump (or
			// the RETURN's rest) leads to, each counting on its own.
			im.skip(e.entry, "a %s with a rate or connection limit is not supported: nodefw would count the limit once for every rule it leads to", jumpWord(e.target))
			continue
		}
		m, none, err := intersect(cond, e.match)
		if err != "" {
			im.skip(e.entry, "%s", err)
			continue
		}
		if none {
			// No packet of the jump meets the rule here.
			im.mark(e.line, statusImported)
			continue
		}
		switch t := e.target; {
		case decides(t):
			r := m
			r.Action = map[string]v1alpha1.Action{"ACCEPT": v1alpha1.ActionAccept, "DROP": v1alpha1.ActionDrop, "REJECT": v1alpha1.ActionReject}[t]
			if t == "REJECT" && e.rejectWith != v1alpha1.RejectWithPortUnreachable {
				r.RejectWith = e.rejectWith
			}
			if r.Log = e.log; r.Log {
				r.LogLabel, r.LogRatePerMinute, r.LogBurst = e.logLabel, e.logRate, e.logBurst
			}
			if r.Log && r.Limit != nil {
				im.skip(e.entry, "a rule with a rate limit cannot log: drop the LOG before it, or the limit")
				continue
			}
			if r.RejectWith == v1alpha1.RejectWithTCPReset && r.Protocol != v1alpha1.ProtocolTCP {
				im.skip(e.entry, "--reject-with tcp-reset needs -p tcp")
				continue
			}
			out = append(out, emittedRule{rule: r, comment: e.comment, line: e.line, text: e.text})
			b.spent++
			im.marked(e)
			if preNote != "" {
				im.note(e.entry, preNote)
			}
		case t == "RETURN":
			im.marked(e)
			if isEmptyMatch(e.match) {
				// Nothing after it in the chain is reached from here.
				return out
			}
			rs := cont(m, e.entry)
			b.spent += len(rs)
			out = append(out, rs...)
		case t == "":
			im.skip(e.entry, "rule without a target (-j) only counts packets: not imported")
		case chainOwner(t) != "":
			im.reportedChains[t] = true
			im.skip(e.entry, "jump to chain %s skipped: it belongs to %s", t, chainOwner(t))
			if ref.table == "filter" {
				im.warnOwnedAccepts(e.entry, stack[0], t)
			}
		case ref.table != "filter" && isBuiltin(ref.table, t):
			im.skip(e.entry, "jump to built-in chain %s: iptables refuses it", t)
		case ref.table != "filter":
			im.skip(e.entry, "jump to user-defined chain %s of table %s is not imported: %s", t, ref.table, importedChains)
		case builtinChains[t] != "":
			im.skip(e.entry, "jump to built-in chain %s: iptables refuses it", t)
		case im.chains[filterChain(t)] == nil && !im.isDeclared(t):
			im.skip(e.entry, "jump to chain %s, which is not defined", t)
		case slices.Contains(stack, t):
			im.skip(e.entry, "jump to chain %s loops back into it (%s): refused, as iptables refuses it", t, strings.Join(append(stack, t), " -> "))
		default:
			im.marked(e)
			sub := append(slices.Clone(stack), t)
			if e.gotoChain {
				out = append(out, im.inline(filterChain(t), 0, m, sub, cont, b)...)
				// What reaches the chain's end returns where this chain
				// would return it.
				rs := cont(m, e.entry)
				b.spent += len(rs)
				out = append(out, rs...)
				continue
			}
			rest := func(c v1alpha1.Rule, origin entry) []emittedRule {
				rs := im.inline(ref, i+1, c, stack, cont, b)
				return append(rs, cont(c, origin)...)
			}
			out = append(out, im.inline(filterChain(t), 0, m, sub, rest, b)...)
		}
	}
	return out
}

// decides reports whether a target is a verdict nodefw has.
func decides(target string) bool {
	return target == "ACCEPT" || target == "DROP" || target == "REJECT"
}

// jumpWord names what a rule with target does: a RETURN or a jump.
func jumpWord(target string) string {
	if target == "RETURN" {
		return "RETURN"
	}
	return "jump"
}

// marked records a translated rule line: changed when it has notes.
func (im *importer) marked(e *parsedEntry) {
	if len(e.notes) == 0 {
		im.mark(e.line, statusImported)
		return
	}
	for _, n := range e.notes {
		im.note(e.entry, n)
	}
}

// isDeclared reports whether chain was declared, even without rules.
func (im *importer) isDeclared(chain string) bool {
	_, ok := im.declared[chain]
	return ok
}

// parsedChain reads the rules of a chain, once, and gives each LOG rule to
// the rule after it when that rule matches the same packets (the LOG's
// own rate limit aside) and decides them.
func (im *importer) parsedChain(ref chainRef) []parsedEntry {
	if pe, ok := im.parsedChains[ref]; ok {
		return pe
	}
	entries := im.chains[ref]
	pe := make([]parsedEntry, len(entries))
	for i, e := range entries {
		pe[i] = parsedEntry{entry: e, parsed: im.resolveSets(parseRule(e.args))}
	}
	for i := 0; i+1 < len(pe); i++ {
		lg, next := &pe[i], &pe[i+1]
		if lg.err != "" || lg.target != "LOG" || next.err != "" || next.log {
			continue
		}
		switch next.target {
		case "ACCEPT", "DROP", "REJECT":
		default:
			continue
		}
		// A LOG whose -m addrtype differs logs other packets; the
		// not-local accept is nodefw's own, with no log; a rule
		// PREROUTING cannot take leaves its LOG alone.
		if isPreRouting(ref) && im.checkPreRouting(ref.table, next).reason != "" {
			continue
		}
		if sameMatch(withoutLimit(lg.match), next.match) && lg.dstType == next.dstType && !strings.HasPrefix(next.dstType, "!") {
			next.log, lg.logOf = true, &next.entry
			next.logSettings = logSettingsOf(lg.parsed)
			lg.logNote = next.logNote
		}
	}
	im.parsedChains[ref] = pe
	return pe
}

// warnOwnedAccepts warns when a chain whose default is Drop jumps into a
// chain left to another component that accepts traffic: nodefw's own
// default Drop will then drop that traffic, which the other component's
// chain let through before, unless a rule accepts it.
func (im *importer) warnOwnedAccepts(jump entry, builtin, owned string) {
	c := builtinChains[builtin]
	if im.defaults.For(c) != v1alpha1.ChainPolicyDrop {
		return
	}
	accepts := im.ownedAccepts(owned, map[string]bool{})
	if len(accepts) == 0 {
		return
	}
	shown := accepts
	if len(shown) > 3 {
		shown = shown[:3]
	}
	var parts []string
	for _, a := range shown {
		parts = append(parts, fmt.Sprintf("line %d: %s", a.line, a.text))
	}
	more := ""
	if len(accepts) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(accepts)-len(shown))
	}
	im.difference(jump.line, jump.text, "%s drops by default and jumps to %s, which is left to %s and accepts traffic (%s%s): nodefw's default Drop will drop that traffic unless a rule accepts it",
		builtin, owned, chainOwner(owned), strings.Join(parts, "; "), more)
}

// ownedAccepts are the ACCEPT rules of a chain left to another component
// and of the chains it jumps to.
func (im *importer) ownedAccepts(chain string, seen map[string]bool) []entry {
	if seen[chain] {
		return nil
	}
	seen[chain] = true
	var out []entry
	for _, e := range im.parsedChain(filterChain(chain)) {
		switch t := e.target; {
		case t == "ACCEPT":
			out = append(out, e.entry)
		case im.chains[filterChain(t)] != nil:
			out = append(out, im.ownedAccepts(t, seen)...)
		}
	}
	return out
}

// reportOwnedLines reports each chain left to another component once, at
// its first line, and counts its rule lines as skipped.
func (im *importer) reportOwnedLines() {
	for _, name := range im.filterChainNames() {
		if chainOwner(name) == "" {
			continue
		}
		for _, e := range im.chains[filterChain(name)] {
			im.reportOwned(e.line, e.text, name)
			im.mark(e.line, statusOwned)
		}
	}
}
