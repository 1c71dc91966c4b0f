package nft

import (
	"bytes"
	"strings"

	"github.com/google/nftables"
)

// samePlan reports whether two plans program the same table, set elements
// included.
func samePlan(a, b *plan) bool {
	if !sameShape(a, b) {
		return false
	}
	for i := range a.named {
		x, y := a.named[i].elems, b.named[i].elems
		if len(x) != len(y) {
			return false
		}
		for j := range x {
			if compareElems(x[j], y[j]) != 0 {
				return false
			}
		}
	}
	return true
}

// sameShape reports whether two plans differ at most in the elements of
// their named sets: same chains, same rules (by fingerprint, which covers
// the name of every set a rule looks up), same named sets and key types,
// same anonymous sets. Only then can an update send set elements alone.
func sameShape(a, b *plan) bool {
	if len(a.chains) != len(b.chains) || len(a.named) != len(b.named) || a.sets != b.sets {
		return false
	}
	for i := range a.chains {
		x, y := &a.chains[i], &b.chains[i]
		if x.name != y.name || x.hook != y.hook || x.priority != y.priority || x.policy != y.policy || len(x.rules) != len(y.rules) {
			return false
		}
		for j := range x.rules {
			if !bytes.Equal(x.rules[j].udata, y.rules[j].udata) {
				return false
			}
		}
	}
	for i := range a.named {
		x, y := a.named[i].set, b.named[i].set
		if x.Name != y.Name || x.Interval != y.Interval || x.KeyType.Name != y.KeyType.Name || a.named[i].family != b.named[i].family ||
			x.Dynamic != y.Dynamic || x.Timeout != y.Timeout || x.Counter != y.Counter {
			return false
		}
	}
	return true
}

// setUpdate is the change of one named set in an incremental update.
type setUpdate struct {
	set      *nftables.Set // as planned
	name     string        // in the kernel
	add, del []nftables.SetElement
}

// planSetUpdates returns the element changes that turn the named sets of
// from, in slot, into those of to, a plan of the same shape (see
// sameShape): one update per set whose elements change, none when no
// element does.
func planSetUpdates(from, to *plan, slot int) []setUpdate {
	var updates []setUpdate
	for i := range to.named {
		add, del := diffElements(from.named[i].elems, to.named[i].elems)
		if len(add) == 0 && len(del) == 0 {
			continue
		}
		s := to.named[i].set
		updates = append(updates, setUpdate{set: s, name: kernelName(s.Name, slot), add: add, del: del})
	}
	return updates
}

// stagedRewrite is what a staged rewrite removes from the live table
// besides adding the plan: the plan's named sets go to slot, each in place
// of a leftover of the same name; then, in the transaction that switches
// the rules over, every live chain is flushed, those the plan cannot keep
// are deleted, and so are the named sets the new rules do not use.
type stagedRewrite struct {
	slot         int
	leftovers    map[string]bool // kernel names of the plan's sets that exist already
	flushChains  []*nftables.Chain
	deleteChains []*nftables.Chain
	deleteSets   []string
}

// planStagedRewrite plans a staged rewrite of the live table to pl, with
// pl's named sets in slot.
func planStagedRewrite(pl *plan, live *liveObjects, slot int) stagedRewrite {
	rw := stagedRewrite{slot: slot, leftovers: map[string]bool{}, flushChains: live.chains}
	names := liveSetNames(live)
	for _, ns := range pl.named {
		if name := kernelName(ns.set.Name, slot); names[name] {
			rw.leftovers[name] = true
		}
	}
	for _, ch := range live.chains {
		if kc := pl.chain(ch.Name); kc == nil || !sameHook(ch, kc) {
			rw.deleteChains = append(rw.deleteChains, ch)
		}
	}
	for _, s := range live.sets {
		if !pl.hasKernelSet(s.Name, slot) {
			rw.deleteSets = append(rw.deleteSets, s.Name)
		}
	}
	return rw
}

// chain returns the plan's chain named name, or nil.
func (p *plan) chain(name string) *kernelChain {
	for i := range p.chains {
		if p.chains[i].name == name {
			return &p.chains[i]
		}
	}
	return nil
}

// sameHook reports whether a live chain can be kept for a planned one: a
// filter base chain on the same hook at the same priority. Its policy is
// set again with its rules.
func sameHook(ch *nftables.Chain, kc *kernelChain) bool {
	return ch.Type == nftables.ChainTypeFilter && ch.Hooknum != nil && *ch.Hooknum == kc.hook &&
		ch.Priority != nil && *ch.Priority == kc.priority
}

// diffElements returns the elements of want that have lacks (add) and
// those of have that want lacks (del). Elements sorted by key, as Compile
// emits them, are merged in one pass; others go through a map.
func diffElements(have, want []nftables.SetElement) (add, del []nftables.SetElement) {
	if sortedElems(have) && sortedElems(want) {
		i, j := 0, 0
		for i < len(have) || j < len(want) {
			switch {
			case j == len(want):
				del = append(del, have[i])
				i++
			case i == len(have):
				add = append(add, want[j])
				j++
			default:
				switch c := compareElems(have[i], want[j]); {
				case c == 0:
					i++
					j++
				case c < 0:
					del = append(del, have[i])
					i++
				default:
					add = append(add, want[j])
					j++
				}
			}
		}
		return add, del
	}
	in := make(map[string]struct{}, len(have))
	for _, e := range have {
		in[elemKey(e)] = struct{}{}
	}
	for _, e := range want {
		k := elemKey(e)
		if _, ok := in[k]; ok {
			delete(in, k)
			continue
		}
		add = append(add, e)
	}
	for _, e := range have {
		if _, ok := in[elemKey(e)]; ok {
			del = append(del, e)
		}
	}
	return add, del
}

// elemKey identifies an element by its first and last key and its
// comment (the rule it counts for); its counter is not part of it.
func elemKey(e nftables.SetElement) string {
	return string(e.Key) + "\x00" + string(e.KeyEnd) + "\x00" + e.Comment
}

func sortedElems(es []nftables.SetElement) bool {
	for i := 1; i < len(es); i++ {
		if compareElems(es[i-1], es[i]) >= 0 {
			return false
		}
	}
	return true
}

func compareElems(a, b nftables.SetElement) int {
	if c := bytes.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	if c := bytes.Compare(a.KeyEnd, b.KeyEnd); c != 0 {
		return c
	}
	return strings.Compare(a.Comment, b.Comment)
}
