package compile

import (
	"net/netip"
	"slices"
)

// Making boxes. A run's rules become the boxes of its four sets, one per
// family with ports and one without (boxMaker): a box per port range,
// source and destination of a rule, its fields in the set's key order
// (boxLayout). The address fields of IPv6 sets then get numbered by rank
// (rankAddrs), so that every field of every box fits 32 bits.

// makeBoxes turns a run's rules into the boxes of its sets, in the
// scratch's boxes and addrs.
func (sc *runScratch) makeBoxes(rules []parsedRule, chain string) {
	sc.reserveBoxes(rules)
	bm := boxMaker{boxes: sc.boxes, owners: sc.owners, addrs: sc.addrs}
	withPorts := slices.ContainsFunc(rules, func(r parsedRule) bool { return len(r.Ports) > 0 })
	at := boxLayouts[layoutIndex(chain, true)]
	atNoPorts := boxLayouts[layoutIndex(chain, false)]
	for i := range rules {
		// A box is owned by its rule, the first of the run to match its
		// packets when it overlaps a later rule's; with merged counters
		// all boxes have one owner, and the rewrite is the union's.
		if !sc.merged {
			bm.owner = int32(i)
		}
		if len(rules[i].Ports) > 0 {
			bm.add(&rules[i], at, false)
			continue
		}
		bm.add(&rules[i], atNoPorts, false)
		if withPorts && !sc.merged {
			// A rule without ports also matches every packet whose port
			// the set with ports reads, and that set is looked up first:
			// where such a rule comes before a rule with ports, the set
			// with ports must not count the packet for the later rule.
			// Its boxes there, of any port, take that place; the
			// elements it owns are then left out (see elementWriter),
			// so that the packet goes on to the set without ports and
			// is counted there, for it.
			bm.add(&rules[i], at, true)
		}
	}
	sc.boxes, sc.owners, sc.addrs = bm.boxes, bm.owners, bm.addrs
}

// reserveBoxes empties the boxes and makes room for a run's.
func (sc *runScratch) reserveBoxes(rules []parsedRule) {
	var count [len(setKeys)]int
	for i := range rules {
		r := &rules[i]
		for j, fam := range families {
			count[setIndex(fam, len(r.Ports) > 0)] += int(r.boxes[j])
			if len(r.Ports) == 0 && !sc.merged {
				count[setIndex(fam, true)] += int(r.boxes[j])
			}
		}
	}
	for i, n := range count {
		if cap(sc.boxes[i]) < n {
			sc.boxes[i] = make([]box32, 0, n)
		}
		sc.boxes[i] = sc.boxes[i][:0]
		if cap(sc.owners[i]) < n {
			sc.owners[i] = make([]int32, 0, n)
		}
		sc.owners[i] = sc.owners[i][:0]
		// Mostly an address a box, and all addresses.
		if setKeys[i].fam == FamilyIPv6 && n > 0 && cap(sc.addrs[i]) < n+1 {
			sc.addrs[i] = make([]span, 0, n+1)
		}
		sc.addrs[i] = sc.addrs[i][:0]
	}
}

// boxLayout is where each field goes in a box: its place in a key order;
// port is -1 in an order without the port.
type boxLayout struct{ proto, port, src, dst int }

func layoutOf(order []SetField) boxLayout {
	l := boxLayout{port: -1}
	for k, f := range order {
		switch f {
		case FieldL4Proto:
			l.proto = k
		case FieldDPort:
			l.port = k
		case FieldSAddr:
			l.src = k
		case FieldDAddr:
			l.dst = k
		}
	}
	return l
}

// boxLayouts are the layouts of the key orders, as layoutIndex numbers
// them.
var boxLayouts = func() (out [4]boxLayout) {
	for _, chain := range [...]string{ChainInput, ChainOutput} {
		for _, ports := range [...]bool{true, false} {
			out[layoutIndex(chain, ports)] = layoutOf(keyOrder(chain, ports))
		}
	}
	return out
}()

// layoutIndex numbers the key orders of a chain's sets, with ports and
// without.
func layoutIndex(chain string, ports bool) int {
	i := 0
	if chain == ChainOutput {
		i = 2
	}
	if !ports {
		i++
	}
	return i
}

// boxMaker turns a run's rules into the boxes of its sets.
type boxMaker struct {
	boxes [len(setKeys)][]box32
	// owners are, by set and parallel to boxes, the index in the run of
	// the rule each box comes from.
	owners     [len(setKeys)][]int32
	owner      int32 // of the rule being added
	addrs      [len(setKeys)][]span
	whole      [len(setKeys)]uint32 // number of all addresses, plus one; 0: none yet
	ports      []PortInterval
	portSpans  []span32
	srcs, dsts [len(families)][]span // a rule's, by family
	srcFields  []span32              // of one family, as box fields
	dstFields  []span32
}

// familyAllSpans are the whole of each family's addresses, for rules
// without sources or destinations; not to be changed.
var familyAllSpans = [len(families)][]span{{familyAll(FamilyIPv4)}, {familyAll(FamilyIPv6)}}

// add appends the boxes of one simple rule to the sets of its run, their
// fields where at says: per family it matches in (see familyMatches), a
// box per canonical port range, source and destination.
//
// With anyPort, a rule without ports goes to the set with ports, a box of
// every port per source and destination.
func (bm *boxMaker) add(r *parsedRule, at boxLayout, anyPort bool) {
	proto := span32{0, 255}
	if r.proto != 0 {
		proto = span32{uint32(r.proto), uint32(r.proto)}
	}
	ports := len(r.Ports) > 0 || anyPort
	bm.portSpans = bm.portSpans[:0]
	switch {
	case anyPort:
		bm.portSpans = append(bm.portSpans, span32{0, 65535})
	case len(r.Ports) == 0:
		// One box per address pair, its port field unused.
		bm.portSpans = append(bm.portSpans, span32{})
	case len(r.Ports) == 1:
		p := r.Ports[0]
		bm.portSpans = append(bm.portSpans, span32{uint32(p.Port), uint32(p.Last())})
	default:
		bm.ports = bm.ports[:0]
		for _, p := range r.Ports {
			bm.ports = append(bm.ports, PortInterval{First: uint16(p.Port), Last: uint16(p.Last())})
		}
		for _, p := range compactPorts(bm.ports) {
			bm.portSpans = append(bm.portSpans, span32{uint32(p.First), uint32(p.Last)})
		}
	}
	if len(r.addrs) == 1 {
		// The common rule, one source or one destination: one family, one
		// box per port.
		a := r.addrs[0]
		fam := prefixFamily(a)
		if pf := protoFamily(r.proto); pf != FamilyAny && pf != fam {
			return
		}
		set := setIndex(fam, ports)
		s, all := bm.field(set, fam, prefixSpan(a)), bm.field(set, fam, familyAll(fam))
		if r.nsrc == 1 {
			bm.emit(set, at, proto, s, all)
		} else {
			bm.emit(set, at, proto, all, s)
		}
		return
	}
	addrSpans(&bm.srcs, r.src())
	addrSpans(&bm.dsts, r.dst())
	for i, fam := range families {
		srcs, dsts := bm.srcs[i], bm.dsts[i]
		if !r.inFamily(fam, len(srcs), len(dsts)) {
			continue
		}
		if len(srcs) == 0 {
			srcs = familyAllSpans[i]
		}
		if len(dsts) == 0 {
			dsts = familyAllSpans[i]
		}
		set := setIndex(fam, ports)
		bm.srcFields, bm.dstFields = bm.srcFields[:0], bm.dstFields[:0]
		for _, s := range srcs {
			bm.srcFields = append(bm.srcFields, bm.field(set, fam, s))
		}
		for _, s := range dsts {
			bm.dstFields = append(bm.dstFields, bm.field(set, fam, s))
		}
		for _, src := range bm.srcFields {
			for _, dst := range bm.dstFields {
				bm.emit(set, at, proto, src, dst)
			}
		}
	}
}

// emit appends to a set the boxes of a source and destination, one per
// port span.
func (bm *boxMaker) emit(set int, at boxLayout, proto, src, dst span32) {
	out := &bm.boxes[set]
	for _, p := range bm.portSpans {
		bm.owners[set] = append(bm.owners[set], bm.owner)
		*out = append(*out, box32{})
		b := &(*out)[len(*out)-1]
		b[at.proto], b[at.src], b[at.dst] = proto, src, dst
		if at.port >= 0 {
			b[at.port] = p
		}
	}
}

// field is an address span as a box field of a set: as it is for IPv4;
// for IPv6, numbered by its place among the set's addresses, where it
// adds it, until rankAddrs ranks them. All addresses, the most common
// span, have one number per set.
func (bm *boxMaker) field(set int, fam Family, s span) span32 {
	if fam == FamilyIPv4 {
		return span32{uint32(s.lo.lo), uint32(s.hi.lo)}
	}
	whole := s == familyAll(FamilyIPv6)
	if whole && bm.whole[set] > 0 {
		return span32{bm.whole[set] - 1, bm.whole[set] - 1}
	}
	n := uint32(len(bm.addrs[set]))
	bm.addrs[set] = append(bm.addrs[set], s)
	if whole {
		bm.whole[set] = n + 1
	}
	return span32{n, n}
}

// addrSpans sets out, by family, to the spans of addrs, canonical as
// compactPrefixes makes them: sorted, without those another covers.
func addrSpans(out *[len(families)][]span, addrs []netip.Prefix) {
	for i := range out {
		out[i] = out[i][:0]
	}
	for _, p := range addrs {
		i := 0
		if !p.Addr().Is4() {
			i = 1
		}
		out[i] = append(out[i], prefixSpan(p))
	}
	for i, spans := range out {
		if len(spans) < 2 {
			continue
		}
		// Prefixes nest or are disjoint. Sorted by first address, the
		// larger first, one is covered only by the last one kept before
		// it.
		slices.SortFunc(spans, func(a, b span) int {
			if c := a.lo.cmp(b.lo); c != 0 {
				return c
			}
			return b.hi.cmp(a.hi)
		})
		kept := spans[:1]
		for _, s := range spans[1:] {
			if kept[len(kept)-1].hi.less(s.lo) {
				kept = append(kept, s)
			}
		}
		out[i] = kept
	}
}

// addrEnd is where an address span starts, or the address after its
// last: ref is twice the span's index, plus one for the end.
type addrEnd struct {
	addr u128
	ref  int32
}

// rankAddrs numbers the address fields of an IPv6 set's boxes, which hold
// indices into spans, by rank. The points are the addresses at which a
// span starts or after which one ends, sorted; a span becomes the ranks of
// its first point and of the last point before its end. Rank r stands for
// the addresses from point r to the one before point r+1, or to the last
// address. It returns the points, to number the elements back.
func (sc *runScratch) rankAddrs(boxes []box32, spans []span, at boxLayout) []u128 {
	last := familyAll(FamilyIPv6).hi
	ends := slices.Grow(sc.ends[:0], 2*len(spans))
	for i, s := range spans {
		ends = append(ends, addrEnd{s.lo, int32(2 * i)})
		if s.hi != last {
			ends = append(ends, addrEnd{s.hi.next(), int32(2*i + 1)})
		}
	}
	ends, sc.tmp = sortAddrEnds(ends, sc.tmp)
	sc.ends = ends
	ranked := slices.Grow(sc.ranked[:0], len(spans))[:len(spans)]
	sc.ranked = ranked
	points := slices.Grow(sc.points[:0], len(ends))
	for _, e := range ends {
		if len(points) == 0 || points[len(points)-1] != e.addr {
			points = append(points, e.addr)
		}
		r := uint32(len(points) - 1)
		if e.ref%2 == 0 {
			ranked[e.ref/2].lo = r
		} else {
			ranked[e.ref/2].hi = r - 1
		}
	}
	sc.points = points
	for i, s := range spans {
		if s.hi == last {
			ranked[i].hi = uint32(len(points) - 1)
		}
	}
	for i := range boxes {
		b := &boxes[i]
		b[at.src], b[at.dst] = ranked[b[at.src].lo], ranked[b[at.dst].lo]
	}
	return points
}

// sortAddrEnds sorts ends by address, using tmp (which it returns too,
// maybe grown) as room; see sortStarts.
func sortAddrEnds(s, tmp []addrEnd) (sorted, room []addrEnd) {
	if len(s) < 256 {
		slices.SortFunc(s, func(a, b addrEnd) int { return a.addr.cmp(b.addr) })
		return s, tmp
	}
	var or, and u128 = u128{}, u128{^uint64(0), ^uint64(0)}
	for _, e := range s {
		or.hi, or.lo = or.hi|e.addr.hi, or.lo|e.addr.lo
		and.hi, and.lo = and.hi&e.addr.hi, and.lo&e.addr.lo
	}
	tmp = slices.Grow(tmp[:0], len(s))[:len(s)]
	for i := range 16 {
		word, shift := or.lo^and.lo, 8*i
		if i >= 8 {
			word, shift = or.hi^and.hi, 8*(i-8)
		}
		if (word>>shift)&0xff == 0 {
			continue
		}
		byteOf := func(e *addrEnd) int {
			if i >= 8 {
				return int(e.addr.hi>>shift) & 0xff
			}
			return int(e.addr.lo>>shift) & 0xff
		}
		var count [257]int
		for j := range s {
			count[byteOf(&s[j])+1]++
		}
		for j := 1; j < len(count); j++ {
			count[j] += count[j-1]
		}
		for j := range s {
			v := byteOf(&s[j])
			tmp[count[v]] = s[j]
			count[v]++
		}
		s, tmp = tmp, s
	}
	return s, tmp
}
