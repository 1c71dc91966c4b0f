package nft

import (
	"bytes"
	"fmt"

	"github.com/google/nftables"
)

// diff describes the first difference between the table and a plan whose
// named sets are in slot, or returns "" when the table is exactly the
// plan: its base chains first, then their rules, then the sets.
func (st *tableState) diff(pl *plan, slot int) string {
	if d := st.diffChains(pl); d != "" {
		return d
	}
	if d := st.diffRules(pl); d != "" {
		return d
	}
	return st.diffSets(pl, slot)
}

// diffChains compares the base chains: the plan's, with their type, hook,
// priority and policy, and no others.
func (st *tableState) diffChains(pl *plan) string {
	seen := map[string]bool{}
	for _, want := range pl.chains {
		ch := st.chains[want.name]
		switch {
		case ch == nil:
			return fmt.Sprintf("chain %s is missing", want.name)
		case ch.Type != nftables.ChainTypeFilter || ch.Hooknum == nil || *ch.Hooknum != want.hook ||
			ch.Priority == nil || *ch.Priority != want.priority:
			return fmt.Sprintf("chain %s has the wrong type, hook or priority", want.name)
		case ch.Policy == nil || *ch.Policy != want.policy:
			return fmt.Sprintf("chain %s has the wrong policy", want.name)
		}
		seen[want.name] = true
	}
	for name := range st.chains {
		if !seen[name] {
			return fmt.Sprintf("unexpected chain %s", name)
		}
	}
	return ""
}

// diffRules compares each chain's rules, in order, by their number of
// expressions and their userdata (comment and fingerprint).
func (st *tableState) diffRules(pl *plan) string {
	for _, want := range pl.chains {
		rules := st.rules[want.name]
		if len(rules) != len(want.rules) {
			return fmt.Sprintf("chain %s has %d rules, want %d", want.name, len(rules), len(want.rules))
		}
		for i, r := range rules {
			w := want.rules[i]
			if len(r.Exprs) != len(w.exprs) || !bytes.Equal(r.UserData, w.udata) {
				return fmt.Sprintf("chain %s rule %d (handle %d) differs", want.name, i, r.Handle)
			}
		}
	}
	return ""
}

// diffSets compares the sets: as many anonymous sets, all constant, and
// exactly the plan's named sets in slot, with their type, flags and
// elements.
func (st *tableState) diffSets(pl *plan, slot int) string {
	if len(st.anon) != pl.sets {
		return fmt.Sprintf("table has %d anonymous sets, want %d", len(st.anon), pl.sets)
	}
	for _, s := range st.anon {
		if !s.Constant {
			return fmt.Sprintf("unexpected set %s", s.Name)
		}
	}
	for name := range st.named {
		if !pl.hasKernelSet(name, slot) {
			return fmt.Sprintf("unexpected set %s", name)
		}
	}
	for _, want := range pl.named {
		name := kernelName(want.set.Name, slot)
		s := st.named[name]
		switch {
		case s == nil:
			return fmt.Sprintf("set %s is missing", name)
		case want.meter:
			if d := diffMeter(s, want.set); d != "" {
				return fmt.Sprintf("meter %s %s", name, d)
			}
			// The kernel fills a meter: its elements are its own.
			continue
		case s.Interval != want.set.Interval || !s.Concatenation || s.Constant || s.IsMap || s.HasTimeout || s.Dynamic || s.KeyType.Name != want.set.KeyType.Name:
			return fmt.Sprintf("set %s has the wrong type or flags", name)
		}
		add, del := diffElements(st.elems[name], want.elems)
		// The kernel does not list a set's expressions: that the set
		// counts shows in its elements' counters, whose values are no
		// drift.
		for _, e := range st.elems[name] {
			if (e.Counter != nil) != want.set.Counter {
				return fmt.Sprintf("set %s has the wrong element counters", name)
			}
		}
		switch {
		case len(add) > 0:
			return fmt.Sprintf("set %s lacks %d elements", name, len(add))
		case len(del) > 0:
			return fmt.Sprintf("set %s has %d unexpected elements", name, len(del))
		}
	}
	return ""
}
