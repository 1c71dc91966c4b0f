package compile

import (
	"cmp"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"strconv"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Runs of simple rules.
//
// Linear rules cost a new flow one evaluation per rule before its match, as
// in iptables. Compile instead turns every run of consecutive simple rules
// of a chain with the same action (minRunRules or more) into lookups in
// concatenated interval sets: per IP family, one set keyed on destination
// port, addresses and protocol for the rules with ports, and one keyed on
// addresses and protocol for the rules without (keyOrder and keyFields say
// which fields, in which order). A rule is simple when it
// matches only on protocol, ports and addresses (no interfaces, conntrack
// states, log or audit). Within a run every rule has the same verdict, so a
// packet gets it when any of the run's rules matches, whatever their order:
// the union of the rules is all that matters, and first-match semantics
// hold because runs keep their place and every other rule stays linear
// between them. A new flow then pays for a lookup or two per change of
// verdict along the list, not for every rule.
//
// Rules without ports get a set of their own because `th dport` cannot be
// read from every packet (later fragments, headers cut short): a linear rule
// without ports still matches those, a lookup keyed on the port would not.
//
// The kernel refuses elements that overlap, so the rules' matches (boxes:
// a range per key field) are rewritten as disjoint elements covering
// exactly their union. The rewrite is canonical (it depends only on the
// union), so changing one rule changes only the elements near it.

// minRunRules is the least number of rules a run needs to become sets.
// A run costs a packet up to two lookups of its family, each a rule that
// loads the key and walks the set's bitmaps; a few linear rules cost no
// more, and keep their own counters and comments, which small policies
// (the common case) are read by.
const minRunRules = 8

// maxRuleElements bounds the elements one rule may become (ports times
// sources times destinations): a rule with more stays linear, where its
// lists are separate small sets.
const maxRuleElements = 256

// errBudget reports a set whose disjoint rewrite would take too long.
var errBudget = errors.New("disjoint rewrite over budget")

// simpleRule reports whether an API rule can join a run.
func simpleRule(r *v1alpha1.NodeFirewallRule) bool {
	if r.Log || len(r.States) > 0 || interfaceMatch(r.InInterface) != "" || interfaceMatch(r.OutInterface) != "" {
		return false
	}
	if r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept {
		return false
	}
	// Rules without addresses go to both families.
	return 2*max(len(r.Ports), 1)*max(len(r.Sources), 1)*max(len(r.Destinations), 1) <= maxRuleElements
}

// chainBuilder appends one chain's rules and sets.
type chainBuilder struct {
	rs     *Ruleset
	ch     *Chain
	runs   int
	minRun int
}

// addRules appends a chain's API rules, turning runs into set lookups.
func (b *chainBuilder) addRules(rules []*v1alpha1.NodeFirewallRule) {
	for i := 0; i < len(rules); {
		j := i
		if simpleRule(rules[i]) {
			for j < len(rules) && rules[j].Action == rules[i].Action && simpleRule(rules[j]) {
				j++
			}
		}
		if j-i >= b.minRun {
			b.addRun(rules[i:j])
			i = j
			continue
		}
		b.ch.Rules = append(b.ch.Rules, expandRule(*rules[i])...)
		i++
	}
}

// setKey is one of the four sets of a run.
type setKey struct {
	fam   Family
	ports bool
}

var setKeys = []setKey{{FamilyIPv4, true}, {FamilyIPv4, false}, {FamilyIPv6, true}, {FamilyIPv6, false}}

// addRun appends the lookups of one run. A run whose rewrite is over
// budget is split in two runs, which is still exact: each half keeps the
// verdict and the order of the halves does not matter.
func (b *chainBuilder) addRun(rules []*v1alpha1.NodeFirewallRule) {
	// Count the boxes of each set first: they are many, and big.
	matches := make([][]familyMatch, len(rules))
	count := map[setKey]int{}
	for i, r := range rules {
		matches[i] = familyMatches(*r)
		count[setKey{FamilyIPv4, len(r.Ports) > 0}] += ruleBoxCount(r, matches[i], FamilyIPv4)
		count[setKey{FamilyIPv6, len(r.Ports) > 0}] += ruleBoxCount(r, matches[i], FamilyIPv6)
	}
	boxes := map[setKey][]box{}
	for k, n := range count {
		boxes[k] = make([]box, 0, n)
	}
	for i, r := range rules {
		ruleBoxes(r, matches[i], b.ch.Name, boxes)
	}
	elems := map[setKey][]SetElement{}
	for _, k := range setKeys {
		if len(boxes[k]) == 0 {
			continue
		}
		e, err := disjoint(boxes[k], k, keyOrder(b.ch.Name, k.ports))
		if err != nil {
			if len(rules) > 1 {
				b.addRun(rules[:len(rules)/2])
				b.addRun(rules[len(rules)/2:])
			} else {
				b.ch.Rules = append(b.ch.Rules, expandRule(*rules[0])...)
			}
			return
		}
		elems[k] = e
	}
	b.runs++
	comment := runComment(rules)
	for _, k := range setKeys {
		if len(elems[k]) == 0 {
			continue
		}
		fields := keyFields(keyOrder(b.ch.Name, k.ports), k.fam, elems[k])
		name := SetName(b.ch.Name, b.runs, k.fam, k.ports)
		for _, blk := range portBlocks(elems[k], k.ports, fields) {
			s := Set{Name: name + blk.suffix, Family: k.fam, Fields: fields, Elements: blk.elems}
			b.rs.Sets = append(b.rs.Sets, s)
			r := Rule{
				Family:  k.fam,
				Lookup:  s.Name,
				Counter: true,
				Verdict: verdicts[rules[0].Action],
				Comment: comment,
			}
			if blk.ports != nil {
				r.DPorts = []PortInterval{*blk.ports}
			}
			b.ch.Rules = append(b.ch.Rules, r)
		}
	}
}

// Port blocks. The kernel deletes an element from a concatenated interval
// set by walking the set's elements from the first to it, so changing one
// rule in a set of n elements costs O(n). A set with ports and more than
// portBlockMin elements is therefore cut by destination port into blocks
// of portBlockWidth ports (an element across a border is cut in two), each
// block a set of its own, empty or not, behind a rule that first checks
// the port range: a packet walks a few cheap port comparisons and still
// makes one lookup, in a smaller set, and a change walks one block. The
// borders are fixed, so a change moves no element but its own from one
// block to another.
const (
	portBlockMin   = 1024
	portBlockWidth = 4096
)

// block is the elements of one set and the ports its lookup is for, if
// the set is one block of a run's set.
type block struct {
	suffix string
	ports  *PortInterval
	elems  []SetElement
}

func portBlocks(elems []SetElement, ports bool, fields []SetField) []block {
	if !ports || len(elems) <= portBlockMin {
		return []block{{elems: elems}}
	}
	const blocks = 65536 / portBlockWidth
	if !slices.ContainsFunc(elems, func(e SetElement) bool {
		return e.DPort.First/portBlockWidth != e.DPort.Last/portBlockWidth
	}) {
		// Sorted by port first: each block is a stretch of the elements.
		out := make([]block, blocks)
		start := 0
		for i := range out {
			end := start
			for end < len(elems) && int(elems[end].DPort.First)/portBlockWidth == i {
				end++
			}
			out[i] = blockOf(i, elems[start:end:end])
			start = end
		}
		return out
	}
	byBlock := map[int][]SetElement{}
	cut := map[int]bool{}
	for _, e := range elems {
		first, last := int(e.DPort.First)/portBlockWidth, int(e.DPort.Last)/portBlockWidth
		for i := first; i <= last; i++ {
			piece := e
			piece.DPort = PortInterval{
				First: uint16(max(int(e.DPort.First), i*portBlockWidth)),
				Last:  uint16(min(int(e.DPort.Last), (i+1)*portBlockWidth-1)),
			}
			byBlock[i] = append(byBlock[i], piece)
			cut[i] = cut[i] || first != last
		}
	}
	// Every block, even an empty one: a rule moving to an empty block
	// then changes elements only.
	var out []block
	for i := range blocks {
		if cut[i] {
			// A cut piece starts at the border, maybe before elements
			// that were ahead of it.
			sortElements(byBlock[i], fields)
		}
		out = append(out, blockOf(i, byBlock[i]))
	}
	return out
}

func blockOf(i int, elems []SetElement) block {
	return block{
		suffix: "-" + strconv.Itoa(i*portBlockWidth),
		ports:  &PortInterval{uint16(i * portBlockWidth), uint16((i+1)*portBlockWidth - 1)},
		elems:  elems,
	}
}

// sortElements sorts elements by key: the first value of each field in
// key order, then the last ones.
func sortElements(elems []SetElement, fields []SetField) {
	rangeOf := func(e *SetElement, f SetField) (span, bool) {
		switch f {
		case FieldL4Proto:
			return span{u128{lo: uint64(e.L4Proto.First)}, u128{lo: uint64(e.L4Proto.Last)}}, true
		case FieldDPort:
			return span{u128{lo: uint64(e.DPort.First)}, u128{lo: uint64(e.DPort.Last)}}, true
		case FieldSAddr:
			return span{addrU128(e.SAddr.First), addrU128(e.SAddr.Last)}, true
		case FieldDAddr:
			return span{addrU128(e.DAddr.First), addrU128(e.DAddr.Last)}, true
		}
		return span{}, false
	}
	slices.SortFunc(elems, func(a, b SetElement) int {
		for _, byLast := range []bool{false, true} {
			for _, f := range fields {
				x, _ := rangeOf(&a, f)
				y, _ := rangeOf(&b, f)
				c := x.lo.cmp(y.lo)
				if byLast {
					c = x.hi.cmp(y.hi)
				}
				if c != 0 {
					return c
				}
			}
		}
		return 0
	})
}

// keyOrder orders a set's key fields. The kernel's lookup narrows the
// candidate elements field by field and pays, after each field, for every
// element still in the running, so the field that tells elements apart
// best goes first: the port in sets with ports; then the address the
// chain's rules usually name, the source on input and forward, the
// destination on output; the protocol, which has few values, goes last.
// Boxes and elements keep their fields in this order, so the elements come
// out of the rewrite sorted by key.
func keyOrder(chain string, ports bool) []SetField {
	first, second := FieldSAddr, FieldDAddr
	if chain == ChainOutput {
		first, second = FieldDAddr, FieldSAddr
	}
	if ports {
		return []SetField{FieldDPort, first, second, FieldL4Proto}
	}
	return []SetField{first, second, FieldL4Proto}
}

// keyFields drops from a key order the address fields that no element
// restricts (every element has the whole family there, as the destination
// of most input rules): such a field would match anything, yet cost the
// kernel a bit in every bucket of every one of its groups for each element,
// and every lookup a pass over them. A set without ports keeps at least
// one address field, since the kernel's concatenated interval sets need
// two fields. Dropping a field that is the same in every element keeps the
// elements sorted.
func keyFields(order []SetField, fam Family, elems []SetElement) []SetField {
	all := familyAll(fam)
	restricts := func(f SetField) bool {
		return slices.ContainsFunc(elems, func(e SetElement) bool {
			r := e.SAddr
			if f == FieldDAddr {
				r = e.DAddr
			}
			return addrU128(r.First) != all.lo || addrU128(r.Last) != all.hi
		})
	}
	ports := order[0] == FieldDPort
	var fields []SetField
	for i, f := range order {
		switch {
		case f != FieldSAddr && f != FieldDAddr, restricts(f):
		case !ports && i == 0 && !restricts(order[1]):
			// Keep the first address field when both are unused.
		default:
			continue
		}
		fields = append(fields, f)
	}
	return fields
}

// runComment names a run by its first rule. It leaves out what adding or
// removing a rule later in the run would change (the last rule, the
// count), so that such a change touches set elements only.
func runComment(rules []*v1alpha1.NodeFirewallRule) string {
	return truncate("run from "+rules[0].Policy+"/"+rules[0].Name, maxComment)
}

// u128 is a key field's value: a protocol, a port or an address.
type u128 struct{ hi, lo uint64 }

func (a u128) cmp(b u128) int { return cmp.Or(cmp.Compare(a.hi, b.hi), cmp.Compare(a.lo, b.lo)) }

// next returns a+1 (wrapping at the top, which callers rule out).
func (a u128) next() u128 {
	if a.lo == ^uint64(0) {
		return u128{a.hi + 1, 0}
	}
	return u128{a.hi, a.lo + 1}
}

func (a u128) prev() u128 {
	if a.lo == 0 {
		return u128{a.hi - 1, ^uint64(0)}
	}
	return u128{a.hi, a.lo - 1}
}

func addrU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func u128Addr(v u128, fam Family) netip.Addr {
	if fam == FamilyIPv4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

// span is an inclusive range of one key field.
type span struct{ lo, hi u128 }

func (s span) cmp(o span) int { return cmp.Or(s.lo.cmp(o.lo), s.hi.cmp(o.hi)) }

// box is a rule's match in one set: a span per key field, in key order.
type box [4]span

func prefixSpan(p netip.Prefix) span {
	lo := addrU128(p.Masked().Addr())
	host := p.Addr().BitLen() - p.Bits()
	var mask u128
	switch {
	case host >= 128:
		mask = u128{^uint64(0), ^uint64(0)}
	case host >= 64:
		mask = u128{^uint64(0) >> (128 - host), ^uint64(0)}
	case host > 0:
		mask = u128{0, ^uint64(0) >> (64 - host)}
	}
	return span{lo, u128{lo.hi | mask.hi, lo.lo | mask.lo}}
}

// familyAll is the span of every address of a family.
func familyAll(fam Family) span {
	if fam == FamilyIPv4 {
		return span{u128{}, u128{lo: 1<<32 - 1}}
	}
	return span{u128{}, u128{^uint64(0), ^uint64(0)}}
}

// ruleBoxCount is the number of boxes a simple rule adds to the sets of
// one family.
func ruleBoxCount(r *v1alpha1.NodeFirewallRule, matches []familyMatch, fam Family) int {
	n := 0
	for _, m := range matches {
		if m.family == fam || m.family == FamilyAny {
			n += max(len(r.Ports), 1) * max(len(m.saddr), 1) * max(len(m.daddr), 1)
		}
	}
	return n
}

// ruleBoxes appends the boxes of one simple rule, given its family
// matches, to the sets of its run, their fields in the chain's key order.
func ruleBoxes(r *v1alpha1.NodeFirewallRule, matches []familyMatch, chain string, out map[setKey][]box) {
	proto := span{u128{}, u128{lo: 255}}
	if p, ok := l4Protos[r.Protocol]; ok {
		proto = span{u128{lo: uint64(p)}, u128{lo: uint64(p)}}
	}
	var portSpans []span
	if len(r.Ports) > 0 {
		ports := make([]PortInterval, len(r.Ports))
		for i, p := range r.Ports {
			ports[i] = PortInterval{First: uint16(p.Port), Last: uint16(p.Last())}
		}
		for _, p := range canonicalPorts(ports) {
			portSpans = append(portSpans, span{u128{lo: uint64(p.First)}, u128{lo: uint64(p.Last)}})
		}
	}
	addrSpans := func(ps []netip.Prefix, fam Family) []span {
		if len(ps) == 0 {
			return []span{familyAll(fam)}
		}
		out := make([]span, len(ps))
		for i, p := range ps {
			out[i] = prefixSpan(p)
		}
		return out
	}
	ports := len(portSpans) > 0
	if !ports {
		// One box per address pair, its port field unused.
		portSpans = []span{{}}
	}
	order := keyOrder(chain, ports)
	for _, m := range matches {
		fams := []Family{m.family}
		if m.family == FamilyAny {
			fams = []Family{FamilyIPv4, FamilyIPv6}
		}
		for _, fam := range fams {
			k := setKey{fam: fam, ports: ports}
			for _, src := range addrSpans(m.saddr, fam) {
				for _, dst := range addrSpans(m.daddr, fam) {
					for _, p := range portSpans {
						var b box
						for i, f := range order {
							switch f {
							case FieldL4Proto:
								b[i] = proto
							case FieldDPort:
								b[i] = p
							case FieldSAddr:
								b[i] = src
							case FieldDAddr:
								b[i] = dst
							}
						}
						out[k] = append(out[k], b)
					}
				}
			}
		}
	}
}

// disjoint rewrites boxes, their fields in order, as disjoint set elements
// covering exactly their union, sorted by key.
func disjoint(boxes []box, k setKey, order []SetField) ([]SetElement, error) {
	d := &decomposer{dims: len(order), budget: 1<<16 + 16*len(boxes)}
	for i, f := range order {
		switch f {
		case FieldL4Proto:
			d.max[i] = u128{lo: 255}
		case FieldDPort:
			d.max[i] = u128{lo: 65535}
		default:
			d.max[i] = familyAll(k.fam).hi
		}
	}
	ptrs := make([]*box, len(boxes))
	for i := range boxes {
		ptrs[i] = &boxes[i]
	}
	tree, err := d.union(ptrs, 0)
	if err != nil {
		return nil, err
	}
	out := make([]SetElement, 0, len(boxes))
	var path box
	var walk func(ps []piece, depth int)
	walk = func(ps []piece, depth int) {
		for _, p := range ps {
			path[depth] = p.s
			if depth == d.dims-1 {
				out = append(out, toElement(path, order, k.fam))
				continue
			}
			walk(p.sub, depth+1)
		}
	}
	walk(tree, 0)
	return out, nil
}

func toElement(b box, order []SetField, fam Family) SetElement {
	// Fields a set does not use match anything.
	all := familyAll(fam)
	e := SetElement{
		L4Proto: ProtoRange{0, 255},
		DPort:   PortInterval{0, 65535},
		SAddr:   AddrRange{u128Addr(all.lo, fam), u128Addr(all.hi, fam)},
		DAddr:   AddrRange{u128Addr(all.lo, fam), u128Addr(all.hi, fam)},
	}
	for i, f := range order {
		switch f {
		case FieldL4Proto:
			e.L4Proto = ProtoRange{uint8(b[i].lo.lo), uint8(b[i].hi.lo)}
		case FieldDPort:
			e.DPort = PortInterval{uint16(b[i].lo.lo), uint16(b[i].hi.lo)}
		case FieldSAddr:
			e.SAddr = AddrRange{u128Addr(b[i].lo, fam), u128Addr(b[i].hi, fam)}
		case FieldDAddr:
			e.DAddr = AddrRange{u128Addr(b[i].lo, fam), u128Addr(b[i].hi, fam)}
		}
	}
	return e
}

// piece is a span of one field and, below the last field, the union of
// the boxes' remaining fields over it.
type piece struct {
	s   span
	sub []piece
}

func equalPieces(a, b []piece) bool {
	return slices.EqualFunc(a, b, func(x, y piece) bool { return x.s == y.s && equalPieces(x.sub, y.sub) })
}

// decomposer computes the union of boxes field by field: it cuts field k
// at every box boundary, takes the union of the remaining fields of the
// boxes over each cut, and joins neighbouring cuts whose unions are equal.
// The result is the union's canonical partition: maximal spans of field k
// over which the rest is the same.
type decomposer struct {
	dims   int
	max    [4]u128 // each field's largest value
	work   int
	budget int
}

func (d *decomposer) union(boxes []*box, k int) ([]piece, error) {
	if len(boxes) == 1 {
		// One box is its own union: a chain of pieces.
		b := boxes[0]
		chain := make([]piece, d.dims-k)
		for j := range chain {
			chain[j].s = b[k+j]
			if j+1 < len(chain) {
				chain[j].sub = chain[j+1 : j+2]
			}
		}
		return chain[:1], nil
	}
	if k == d.dims-1 {
		spans := make([]span, len(boxes))
		for i, b := range boxes {
			spans[i] = b[k]
		}
		slices.SortFunc(spans, span.cmp)
		out := make([]piece, 0, 1)
		for _, s := range spans {
			if n := len(out); n > 0 {
				last := &out[n-1].s
				if last.hi == d.max[k] || s.lo.cmp(last.hi.next()) <= 0 {
					if s.hi.cmp(last.hi) > 0 {
						last.hi = s.hi
					}
					continue
				}
			}
			out = append(out, piece{s: s})
		}
		return out, nil
	}
	sorted := slices.Clone(boxes)
	slices.SortFunc(sorted, func(a, b *box) int { return a[k].lo.cmp(b[k].lo) })
	cuts := make([]u128, 0, 2*len(sorted))
	for _, b := range sorted {
		cuts = append(cuts, b[k].lo)
		if b[k].hi != d.max[k] {
			cuts = append(cuts, b[k].hi.next())
		}
	}
	slices.SortFunc(cuts, u128.cmp)
	cuts = slices.Compact(cuts)

	out := make([]piece, 0, min(len(cuts), 16))
	active := make([]*box, 0, len(sorted))
	next := 0
	for i, c := range cuts {
		for next < len(sorted) && sorted[next][k].lo.cmp(c) <= 0 {
			active = append(active, sorted[next])
			next++
		}
		active = slices.DeleteFunc(active, func(b *box) bool { return b[k].hi.cmp(c) < 0 })
		if len(active) == 0 {
			continue
		}
		// Every box boundary is a cut, so each active box covers the
		// whole span up to the next cut, or to the field's end.
		hi := d.max[k]
		if i+1 < len(cuts) {
			hi = cuts[i+1].prev()
		}
		d.work += len(active)
		if d.work > d.budget {
			return nil, errBudget
		}
		sub, err := d.union(active, k+1)
		if err != nil {
			return nil, err
		}
		if n := len(out); n > 0 && out[n-1].s.hi.next() == c && equalPieces(out[n-1].sub, sub) {
			out[n-1].s.hi = hi
			continue
		}
		out = append(out, piece{s: span{c, hi}, sub: sub})
	}
	return out, nil
}
