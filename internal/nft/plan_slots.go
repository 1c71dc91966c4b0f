package nft

import (
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// slotSuffix ends the kernel names of the named sets in slot 1; slot 0
// uses the ruleset's names as they are. A full rewrite fills the named
// sets of the slot the live rules do not use and commits them in a first
// transaction, then switches every rule over in a second one. The packet
// path only changes in the second transaction, and by then every set it
// looks up is committed with all its elements: the kernel publishes a new
// generation before it swaps in the new contents of a concatenated
// interval (pipapo) set, so a set created and filled in the same
// transaction as its rules can miss lookups for a moment after the
// commit. Ruleset set names never end in this suffix.
const slotSuffix = "-b"

// stagingSlot picks the slot for a rewrite's named sets: the one whose
// names the live table uses least, so that the live rules keep their sets
// until the switch. Names of that slot that exist anyway are leftovers of
// an interrupted rewrite. When both slots hold as many of the plan's sets,
// ok is false: only the live rules tell which slot they use (slotOf), and
// the other one is the staging slot.
func stagingSlot(pl *plan, live *liveObjects) (slot int, ok bool) {
	names := liveSetNames(live)
	var taken [2]int
	for _, ns := range pl.named {
		for slot := range taken {
			if names[kernelName(ns.set.Name, slot)] {
				taken[slot]++
			}
		}
	}
	switch {
	case taken[0] < taken[1]:
		return 0, true
	case taken[1] < taken[0]:
		return 1, true
	case taken[0] == 0:
		return 0, true
	}
	return 0, false
}

// slotOf tells which slot the live rules look up the plan's named sets
// in: the one of which they reference more sets. After an interrupted
// rewrite both slots may exist; only the rules tell which one is live.
func slotOf(pl *plan, rules map[string][]*nftables.Rule) int {
	var in [2]int
	for _, rs := range rules {
		for _, r := range rs {
			for _, e := range r.Exprs {
				name, ok := namedSetOf(e)
				if !ok {
					continue
				}
				switch {
				case pl.hasKernelSet(name, 1):
					in[1]++
				case pl.hasKernelSet(name, 0):
					in[0]++
				}
			}
		}
	}
	if in[1] > in[0] {
		return 1
	}
	return 0
}

// ruleExprs returns a rule's expressions with its named set lookups, and
// the meters it fills, pointing at the sets of slot.
func (p *plan) ruleExprs(kr *kernelRule, slot int) []expr.Any {
	if slot == 0 || len(p.named) == 0 {
		return kr.exprs
	}
	var out []expr.Any
	for i, e := range kr.exprs {
		name, ok := namedSetOf(e)
		if !ok || !p.hasSet(name) {
			continue
		}
		if out == nil {
			out = append([]expr.Any(nil), kr.exprs...)
		}
		switch e := e.(type) {
		case *expr.Lookup:
			renamed := *e
			renamed.SetName, renamed.SetID = kernelName(name, slot), 0
			out[i] = &renamed
		case *expr.Dynset:
			renamed := *e
			renamed.SetName, renamed.SetID = kernelName(name, slot), 0
			out[i] = &renamed
		}
	}
	if out == nil {
		return kr.exprs
	}
	return out
}

// namedSetOf is the named set an expression refers to: the set a lookup
// reads, or the meter a dynset fills.
func namedSetOf(e expr.Any) (string, bool) {
	switch e := e.(type) {
	case *expr.Lookup:
		return e.SetName, true
	case *expr.Dynset:
		return e.SetName, true
	}
	return "", false
}

// hasKernelSet reports whether name is the kernel name of one of the
// plan's named sets in slot.
func (p *plan) hasKernelSet(name string, slot int) bool {
	if slot == 1 {
		base, ok := strings.CutSuffix(name, slotSuffix)
		if !ok {
			return false
		}
		name = base
	}
	return p.hasSet(name)
}

// kernelName is the name of a named set in the kernel, in a slot.
func kernelName(name string, slot int) string {
	if slot == 1 {
		return name + slotSuffix
	}
	return name
}

// liveSetNames are the names of the live table's named sets.
func liveSetNames(live *liveObjects) map[string]bool {
	names := make(map[string]bool, len(live.sets))
	for _, s := range live.sets {
		names[s.Name] = true
	}
	return names
}
