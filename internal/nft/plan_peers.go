package nft

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/compile"
)

// Peer sets (compile.PeerSet) are named interval sets keyed on one address
// of a family: the kernel's rbtree, whose intervals are half-open, each a
// start element and an interval-end element one past its last address
// (none when it runs to the last address). Rules look them up with the
// source or destination address; their elements change without touching
// the rules, by whole intervals (see diffIntervals).

// encodePeerSet adds a peer set to the plan.
func (p *plan) encodePeerSet(s *compile.PeerSet) error {
	switch {
	case s.Name == "" || len(s.Name) >= unix.NFT_SET_MAXNAMELEN-len(slotSuffix) || strings.HasPrefix(s.Name, "__"):
		return errors.New("invalid set name")
	case p.hasSet(s.Name):
		return errors.New("set appears twice")
	case s.Family != compile.FamilyIPv4 && s.Family != compile.FamilyIPv6:
		return fmt.Errorf("set family must be IPv4 or IPv6, not %v", s.Family)
	}
	keyType := nftables.TypeIPAddr
	if s.Family == compile.FamilyIPv6 {
		keyType = nftables.TypeIP6Addr
	}
	spans := make([]span, 0, len(s.Prefixes))
	for _, pr := range s.Prefixes {
		if !pr.IsValid() || pr.Addr().Is4() != (s.Family == compile.FamilyIPv4) || pr.Addr().Zone() != "" {
			return fmt.Errorf("prefix %v is not of the set's family", pr)
		}
		lo, hi := prefixSpan(pr.Masked())
		spans = append(spans, span{lo: lo, hi: hi})
	}
	var elems []nftables.SetElement
	if len(spans) > 0 {
		elems = peerElems(mergeSpans(spans))
	}
	size := 0
	for _, e := range elems {
		size += elemSize(e)
	}
	p.ids++
	ns := namedSet{
		set:    &nftables.Set{Name: s.Name, ID: p.ids, Interval: true, KeyType: keyType},
		elems:  elems,
		size:   size,
		family: s.Family,
		peer:   true,
	}
	p.byName[s.Name] = len(p.named)
	p.named = append(p.named, ns)
	chunks := (size + maxElemChunk - 1) / maxElemChunk
	p.msgs += 1 + chunks
	p.bytes += 256 + size + 128*chunks
	return nil
}

// peerElems encodes merged spans as a peer set's elements, sorted: each
// span's start and the interval end one past its last key. Unlike an
// anonymous set's (intervalElems) there is no interval end at zero: what
// lies below the first start is outside the set anyway, and the elements
// of an interval stay the same whatever the others are.
func peerElems(spans []span) []nftables.SetElement {
	elems := make([]nftables.SetElement, 0, 2*len(spans))
	for _, s := range spans {
		elems = append(elems, nftables.SetElement{Key: s.lo})
		if end, ok := increment(s.hi); ok {
			elems = append(elems, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return elems
}

// peerLookup matches the source or destination address against the
// plan's peer set called name, of the rule's family.
func (b *ruleBuilder) peerLookup(name string, fam compile.Family, source bool) error {
	if name == "" {
		return nil
	}
	i, ok := b.p.byName[name]
	if !ok || !b.p.named[i].peer {
		return fmt.Errorf("lookup in unknown peer set %q", name)
	}
	ns := &b.p.named[i]
	if fam != ns.family {
		return fmt.Errorf("rule of family %v looks up peer set %q of family %v", fam, name, ns.family)
	}
	b.add(addrPayload(fam, source))
	b.add(&expr.Lookup{SourceRegister: reg, SetName: ns.set.Name, SetID: ns.set.ID})
	return nil
}

// exceptAddrs matches addresses outside prefixes: a lookup in a constant
// anonymous interval set, inverted.
func (b *ruleBuilder) exceptAddrs(prefixes []netip.Prefix, fam compile.Family, source bool) error {
	if len(prefixes) == 0 {
		return nil
	}
	if fam == compile.FamilyAny {
		return errors.New("except without a family")
	}
	spans := make([]span, 0, len(prefixes))
	for _, pr := range prefixes {
		if !pr.IsValid() || pr.Addr().Is4() != (fam == compile.FamilyIPv4) {
			return fmt.Errorf("except %v is not of the rule's family", pr)
		}
		lo, hi := prefixSpan(pr.Masked())
		spans = append(spans, span{lo: lo, hi: hi})
	}
	spans = mergeSpans(spans)
	load := addrPayload(fam, source)
	if len(spans) == 1 {
		// One prefix or range: compared, as nft does.
		b.exceptSpan(load, spans[0])
		return nil
	}
	kt := nftables.TypeIPAddr
	if fam == compile.FamilyIPv6 {
		kt = nftables.TypeIP6Addr
	}
	b.add(load)
	lookup := b.anonLookup(kt, true, intervalElems(spans))
	lookup.Invert = true
	b.add(lookup)
	return nil
}

// exceptSpan matches an address loaded by load outside one span: the
// leading bytes of a prefix on a byte boundary, the masked address of
// another prefix, or a range.
func (b *ruleBuilder) exceptSpan(load *expr.Payload, s span) {
	bits, ok := spanPrefixLen(s)
	switch {
	case !ok:
		b.add(load, &expr.Range{Op: expr.CmpOpNeq, Register: reg, FromData: s.lo, ToData: s.hi})
	case bits%8 == 0:
		n := uint32(bits / 8)
		short := *load
		short.Len = n
		b.add(&short, &expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: s.lo[:n]})
	default:
		mask := make([]byte, load.Len)
		for i := 0; i < bits; i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		b.add(load,
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: load.Len, Mask: mask, Xor: make([]byte, load.Len)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: s.lo})
	}
}

// addrPayload loads the source or destination address of a family.
func addrPayload(fam compile.Family, source bool) *expr.Payload {
	offset, n := uint32(16), uint32(4)
	switch {
	case fam == compile.FamilyIPv4 && source:
		offset = 12
	case fam == compile.FamilyIPv6 && source:
		offset, n = 8, 16
	case fam == compile.FamilyIPv6:
		offset, n = 24, 16
	}
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n}
}

// interval is one interval of a peer set: its start element and, unless
// it runs to the last address, its end element.
type interval struct {
	start, end *nftables.SetElement
}

// intervals groups a peer set's elements, as encoded or as read from the
// kernel in any order, into intervals keyed by their start.
func intervals(elems []nftables.SetElement) map[string]interval {
	starts := map[string]*nftables.SetElement{}
	var ends []*nftables.SetElement
	for i := range elems {
		if elems[i].IntervalEnd {
			ends = append(ends, &elems[i])
		} else {
			starts[string(elems[i].Key)] = &elems[i]
		}
	}
	// Every end follows the greatest start below it.
	sorted := make([][]byte, 0, len(starts))
	for k := range starts {
		sorted = append(sorted, []byte(k))
	}
	sortKeys(sorted)
	out := make(map[string]interval, len(starts))
	for k, s := range starts {
		out[k] = interval{start: s}
	}
	for _, e := range ends {
		lo, hi := 0, len(sorted)
		for lo < hi {
			mid := (lo + hi) / 2
			if bytes.Compare(sorted[mid], e.Key) < 0 {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		if lo == 0 {
			continue // an end with no start below it: nothing is inside
		}
		k := string(sorted[lo-1])
		iv := out[k]
		iv.end = e
		out[k] = iv
	}
	return out
}

// diffIntervals returns the elements to add and delete that take a peer
// set from have to want, by whole intervals: an interval that stays keeps
// both its elements, so a packet inside it never misses; one that changes
// is deleted and added again in the same transaction.
func diffIntervals(have, want []nftables.SetElement) (add, del []nftables.SetElement) {
	h, w := intervals(have), intervals(want)
	same := func(a, b interval) bool {
		if (a.end == nil) != (b.end == nil) {
			return false
		}
		return a.end == nil || bytes.Equal(a.end.Key, b.end.Key)
	}
	for _, e := range want {
		if e.IntervalEnd {
			continue
		}
		k := string(e.Key)
		if old, ok := h[k]; ok && same(old, w[k]) {
			continue
		}
		add = append(add, *w[k].start)
		if w[k].end != nil {
			add = append(add, *w[k].end)
		}
	}
	for _, e := range have {
		if e.IntervalEnd {
			continue
		}
		k := string(e.Key)
		if nw, ok := w[k]; ok && same(h[k], nw) {
			continue
		}
		del = append(del, *h[k].start)
		if h[k].end != nil {
			del = append(del, *h[k].end)
		}
	}
	return add, del
}

func sortKeys(keys [][]byte) { slices.SortFunc(keys, bytes.Compare) }
