package nft

import (
	"encoding/binary"
	"math"
	"net/netip"
	"slices"

	"github.com/google/nftables"

	"github.com/nodefw/nodefw/internal/compile"
)

// A change of a large peer set (a blocklist of 100,000 entries, the
// addresses of every node) usually adds or removes a few prefixes. Encoding
// every element of the new ruleset and diffing the encoded intervals costs
// the agent hundreds of milliseconds at that size, a hundred times the
// kernel's transaction. When the ruleset differs from the committed one
// only in the prefixes of its peer sets, planPeerUpdates diffs the sorted
// prefixes instead: it finds the stretch of each set where old and new
// differ, widened to whole intervals of the kernel's set, encodes that
// stretch alone, and splices it into the committed plan's elements.

// planPeerUpdates returns the plan of rs and the element changes that take
// the table from last, committed as lastPlan in slot, to it, when rs
// differs from last in the prefixes of its peer sets alone and those are
// sorted and disjoint on both sides, as compile.PeerSet's are; ok is false
// otherwise, and the caller builds the plan whole. No updates with ok
// means the peer sets are the same.
func planPeerUpdates(last *compile.Ruleset, lastPlan *plan, rs *compile.Ruleset, slot int) (next *plan, updates []setUpdate, ok bool) {
	if last == nil || lastPlan == nil || rs == nil || len(rs.PeerSets) == 0 || !samePeerShape(last, rs) {
		return nil, nil, false
	}
	next = new(plan)
	*next = *lastPlan
	next.named = slices.Clone(lastPlan.named)
	for i := range rs.PeerSets {
		old, cur := last.PeerSets[i].Prefixes, rs.PeerSets[i].Prefixes
		if slices.Equal(old, cur) {
			continue
		}
		k, found := next.byName[rs.PeerSets[i].Name]
		if !found || !next.named[k].peer {
			return nil, nil, false
		}
		ns := &next.named[k]
		elems, add, del, ok := splicePeerSet(ns.elems, old, cur, rs.PeerSets[i].Family)
		if !ok {
			return nil, nil, false
		}
		size := ns.size
		for _, e := range del {
			size -= elemSize(e)
		}
		for _, e := range add {
			size += elemSize(e)
		}
		oldChunks := (ns.size + maxElemChunk - 1) / maxElemChunk
		newChunks := (size + maxElemChunk - 1) / maxElemChunk
		next.msgs += newChunks - oldChunks
		next.bytes += size - ns.size + 128*(newChunks-oldChunks)
		ns.elems, ns.size = elems, size
		if len(add) > 0 || len(del) > 0 {
			updates = append(updates, setUpdate{set: ns.set, name: kernelName(ns.set.Name, slot), add: add, del: del})
		}
	}
	return next, updates, true
}

// samePeerShape reports whether two rulesets are equal but for the
// prefixes of their peer sets: then their plans differ only in those
// sets' elements.
func samePeerShape(a, b *compile.Ruleset) bool {
	if len(a.PeerSets) != len(b.PeerSets) {
		return false
	}
	return withoutPeerPrefixes(a).Equal(withoutPeerPrefixes(b))
}

// withoutPeerPrefixes is rs with its peer sets emptied; the rest is shared.
func withoutPeerPrefixes(rs *compile.Ruleset) *compile.Ruleset {
	c := *rs
	c.PeerSets = make([]compile.PeerSet, len(rs.PeerSets))
	for i, s := range rs.PeerSets {
		s.Prefixes = nil
		c.PeerSets[i] = s
	}
	return &c
}

// splicePeerSet takes a peer set's elements, encoded from the prefixes
// old, to those of cur: the stretch where the two differ, widened until
// neither side's prefixes at its edges merge into one interval, is encoded
// on both sides; what lies outside it encodes to the same intervals on
// both. It returns the new elements, sorted as encodePeerSet's, and the
// intervals to add and delete (diffIntervals of the stretch); ok is false
// when a side is not sorted and disjoint, a prefix of cur is not of the
// family, or elems does not hold the old stretch where it should.
func splicePeerSet(elems []nftables.SetElement, old, cur []netip.Prefix, fam compile.Family) (out, add, del []nftables.SetElement, ok bool) {
	if !sortedDisjoint(old) || !sortedDisjoint(cur) {
		return nil, nil, nil, false
	}
	// The common head and tail.
	lo := 0
	for lo < len(old) && lo < len(cur) && old[lo] == cur[lo] {
		lo++
	}
	oldHi, curHi := len(old), len(cur)
	for oldHi > lo && curHi > lo && old[oldHi-1] == cur[curHi-1] {
		oldHi--
		curHi--
	}
	// Widen to whole intervals: a prefix at an edge may merge with its
	// neighbour outside on either side.
	for lo > 0 && (merges(old, lo) || merges(cur, lo)) {
		lo--
	}
	for oldHi < len(old) && (merges(old, oldHi) || merges(cur, curHi)) {
		oldHi++
		curHi++
	}
	before, err := peerStretch(old[lo:oldHi], fam)
	if err != nil {
		return nil, nil, nil, false
	}
	after, err := peerStretch(cur[lo:curHi], fam)
	if err != nil {
		return nil, nil, nil, false
	}
	// Where the old stretch sits in elems: at its first element, or, when
	// it has none, where the new stretch's first element goes.
	var at int
	switch {
	case len(before) > 0:
		i, found := slices.BinarySearchFunc(elems, before[0], compareElems)
		if !found || i+len(before) > len(elems) {
			return nil, nil, nil, false
		}
		for j := range before {
			if compareElems(elems[i+j], before[j]) != 0 {
				return nil, nil, nil, false
			}
		}
		at = i
	case len(after) > 0:
		at, _ = slices.BinarySearchFunc(elems, after[0], compareElems)
	default:
		return elems, nil, nil, true
	}
	out = make([]nftables.SetElement, 0, len(elems)-len(before)+len(after))
	out = append(append(append(out, elems[:at]...), after...), elems[at+len(before):]...)
	add, del = diffIntervals(before, after)
	return out, add, del, true
}

// peerStretch encodes prefixes, sorted and disjoint, as a peer set's
// elements, as encodePeerSet does.
func peerStretch(prefixes []netip.Prefix, fam compile.Family) ([]nftables.SetElement, error) {
	if len(prefixes) == 0 {
		return nil, nil
	}
	p := &plan{byName: map[string]int{}}
	if err := p.encodePeerSet(&compile.PeerSet{Name: "stretch", Family: fam, Prefixes: prefixes}); err != nil {
		return nil, err
	}
	return p.named[0].elems, nil
}

// sortedDisjoint reports whether prefixes are valid, masked, sorted by
// address and without overlaps.
func sortedDisjoint(ps []netip.Prefix) bool {
	for i, p := range ps {
		if !p.IsValid() || p.Masked() != p {
			return false
		}
		if i > 0 {
			last, end := lastAddr(ps[i-1])
			if end || p.Addr().Compare(last) <= 0 {
				return false
			}
		}
	}
	return true
}

// merges reports whether ps[i-1] and ps[i], sorted and disjoint, touch,
// so that the kernel's set holds them as one interval; false when either
// is missing.
func merges(ps []netip.Prefix, i int) bool {
	if i <= 0 || i >= len(ps) {
		return false
	}
	last, end := lastAddr(ps[i-1])
	return !end && last.Next() == ps[i].Addr()
}

// lastAddr is the last address of a masked prefix, and whether it is the
// last address of its family. It runs on every prefix of a changed set:
// words, not bits.
func lastAddr(p netip.Prefix) (netip.Addr, bool) {
	host := p.Addr().BitLen() - p.Bits()
	if p.Addr().Is4() {
		b := p.Addr().As4()
		v := binary.BigEndian.Uint32(b[:]) | uint32(uint64(1)<<host-1)
		binary.BigEndian.PutUint32(b[:], v)
		return netip.AddrFrom4(b), v == math.MaxUint32
	}
	b := p.Addr().As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	switch {
	case host >= 128:
		hi, lo = math.MaxUint64, math.MaxUint64
	case host >= 64:
		hi, lo = hi|(uint64(1)<<(host-64)-1), math.MaxUint64
	default:
		lo |= uint64(1)<<host - 1
	}
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b), hi == math.MaxUint64 && lo == math.MaxUint64
}
