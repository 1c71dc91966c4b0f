package compile

import (
	"cmp"
	"errors"
	"slices"
)

// errBudget reports a set whose disjoint rewrite would take too long.
var errBudget = errors.New("disjoint rewrite over budget")

// disjoint rewrites the boxes of a set, setKeys[set], their fields in
// order, as disjoint set elements covering exactly their union, sorted by
// key. Every element lies where one owner comes first, the least of the
// boxes over it, and names that owner's rule, from names. It sets
// restricted[i] when some element does not have the whole of field
// order[i]. It leaves out the elements of the owners that skip says.
func (sc *runScratch) disjoint(set int, k setKey, order []SetField, names []string, skip []bool, restricted *[4]bool) ([]SetElement, error) {
	boxes := sc.boxes[set]
	at := layoutOf(order)
	d := &sc.d
	d.reset(boxes, order)
	d.owners, d.skip = sc.owners[set], skip
	w := elementWriter{at: at, fam: k.fam, names: names, skip: skip}
	if k.fam == FamilyIPv6 {
		w.points = sc.rankAddrs(boxes, sc.addrs[set], at)
		d.max[at.src] = uint32(len(w.points) - 1)
		d.max[at.dst] = d.max[at.src]
	}
	// The boxes that only take their place restrict the key as if they
	// were elements: whether they own a region depends on the other
	// rules, and a key that changed with it would turn a change of
	// elements into a new set.
	for i := range boxes {
		if skip != nil && skip[d.owners[i]] {
			b := &boxes[i]
			w.restricted[at.src] = w.restricted[at.src] || b[at.src] != (span32{0, d.max[at.src]})
			w.restricted[at.dst] = w.restricted[at.dst] || b[at.dst] != (span32{0, d.max[at.dst]})
		}
	}
	root, err := sc.cutAll()
	if err != nil {
		return nil, err
	}
	d.write(root, &w)
	*restricted = w.restricted
	return w.out, nil
}

// reset readies the decomposer for the boxes of a set, their fields in
// order, with a budget in proportion to their number.
func (d *decomposer) reset(boxes []box32, order []SetField) {
	d.dims, d.work, d.budget = len(order), 0, 1<<16+16*len(boxes)
	d.boxes = boxes
	d.pieces = d.pieces[:0]
	for i, f := range order {
		switch f {
		case FieldL4Proto:
			d.max[i] = 255
		case FieldDPort:
			d.max[i] = 65535
		default:
			d.max[i] = 1<<32 - 1
		}
	}
}

// cutAll cuts the first field once, for all the boxes: its pieces, about
// one per box, go to a slice of their own rather than to d.pieces (the
// first level's, which no other call uses).
func (sc *runScratch) cutAll() ([]piece, error) {
	d := &sc.d
	all := slices.Grow(sc.all[:0], len(d.boxes))
	for i := range d.boxes {
		all = append(all, int32(i))
	}
	sc.all = all
	root, err := d.cut(all, 0, slices.Grow(d.levels[0].out[:0], len(d.boxes)))
	d.levels[0].out = root
	return root, err
}

// write has w write the elements of the union whose first field's pieces
// are root, in order.
func (d *decomposer) write(root []piece, w *elementWriter) {
	n := 0
	for _, p := range root {
		n += d.leaves(p.sub, 1)
	}
	w.out = make([]SetElement, 0, n)
	// Most pieces have one box over them, read out of order. Copying a
	// few at a time first lets the reads overlap.
	var batch [64]box32
	for len(root) > 0 {
		ps := root[:min(len(root), len(batch))]
		root = root[len(ps):]
		for i, p := range ps {
			if p.sub.n < 0 {
				batch[i] = d.boxes[p.sub.start]
			}
		}
		for i, p := range ps {
			if p.sub.n < 0 {
				batch[i][0] = p.s
				w.leaf(&batch[i], d.owners[p.sub.start])
				continue
			}
			w.path[0] = p.s
			d.walk(p.sub, 1, w)
		}
	}
}

// decomposer computes the union of boxes field by field: it cuts field k
// at every box boundary, takes the union of the remaining fields of the
// boxes over each cut, and joins neighbouring cuts whose unions are equal.
// The result is the union's canonical partition: maximal spans of field k
// over which the rest is the same.
//
// Every box has an owner, and where boxes overlap the least owner's wins:
// the union is of owned regions, the last field's pieces each have one
// owner, and neighbours join only when their owners are the same too. A
// run's owners are its rules, in order, so each element of the rewrite
// stands for exactly the rule that a packet inside it meets first. When
// all boxes have one owner, this is the plain union.
//
// Boxes are numbered, and trees live in one slice, pieces, so that neither
// costs an allocation apiece nor holds pointers for the collector to
// chase; each field's calls have working memory of their own, reused from
// call to call.
type decomposer struct {
	dims   int
	max    [4]uint32 // each field's largest value
	work   int
	budget int
	boxes  []box32
	owners []int32 // by box
	// skip says, by owner, which owners' regions are left out: they
	// take their place, and the last field's pieces leave a hole there.
	skip   []bool
	pieces []piece
	levels [4]level
}

// level is the working memory of the decomposer's calls for one field.
type level struct {
	sorted   []boxStart
	tmp      []boxStart
	active   []int32
	activeHi []uint32 // where each active box ends
	out      []piece
	spans    []ownedSpan
	painting []ownedSpan // the spans over the stretch being painted
}

// ownedSpan is a span of the last field and the owner of its box.
type ownedSpan struct {
	span32
	owner int32
}

// boxStart is a box and its span in the field being cut, kept with it so
// that the sweep reads the boxes in the order it meets them.
type boxStart struct {
	span32
	box int32
}

// piece is a span of one field and, below the last field, the union of
// the boxes' remaining fields over it; in the last field, sub.start is
// the span's owner.
type piece struct {
	s   span32
	sub pieces
}

// pieces is a union of boxes over their fields from some depth on: a
// stretch of a decomposer's pieces, one per span of the field at that
// depth, or, when n is -1, the fields of the one box numbered start (which
// is its own union, and common: most spans of the first field have a
// single box over them).
type pieces struct{ start, n int32 }

// cut appends to out the pieces of field k of the union of boxes (k is not
// the last field), and returns it.
func (d *decomposer) cut(boxes []int32, k int, out []piece) ([]piece, error) {
	lv := &d.levels[k]
	sorted := slices.Grow(lv.sorted[:0], len(boxes))
	for _, b := range boxes {
		sorted = append(sorted, boxStart{d.boxes[b][k], b})
	}
	lv.sorted, lv.tmp = sortStarts(sorted, lv.tmp)
	sorted = lv.sorted

	// Sweep the field from cut to cut: a cut is where a box starts or
	// where one ends, the value after its last.
	active, activeHi := lv.active[:0], lv.activeHi[:0]
	defer func() { lv.active, lv.activeHi = active, activeHi }()
	next := 0
	c := sorted[0].lo
	for {
		for next < len(sorted) && sorted[next].lo <= c {
			active = append(active, sorted[next].box)
			activeHi = append(activeHi, sorted[next].hi)
			next++
		}
		// Drop the boxes that ended before c. The next cut is the
		// nearest start or end after c: every box boundary is a cut, so
		// each active box covers the whole span up to it, or to the
		// field's end.
		hi := d.max[k]
		kept := 0
		for i, h := range activeHi {
			if h >= c {
				active[kept], activeHi[kept] = active[i], h
				kept++
				hi = min(hi, h)
			}
		}
		active, activeHi = active[:kept], activeHi[:kept]
		if len(active) == 0 {
			if next == len(sorted) {
				break
			}
			c = sorted[next].lo
			continue
		}
		if next < len(sorted) {
			hi = min(hi, sorted[next].lo-1)
		}
		d.work += len(active)
		if d.work > d.budget {
			return out, errBudget
		}
		mark := len(d.pieces)
		sub, err := d.union(active, k+1)
		if err != nil {
			return out, err
		}
		if n := len(out); n > 0 && out[n-1].s.hi+1 == c && d.equalPieces(out[n-1].sub, sub, k+1) {
			// The same union as the span before: join them, and drop the
			// copy just built (nothing else was added since).
			out[n-1].s.hi = hi
			d.pieces = d.pieces[:mark]
		} else {
			out = append(out, piece{s: span32{c, hi}, sub: sub})
		}
		if hi == d.max[k] {
			break
		}
		c = hi + 1
	}
	return out, nil
}

// union returns the union of boxes over the fields from k on.
func (d *decomposer) union(boxes []int32, k int) (pieces, error) {
	if len(boxes) == 1 {
		return pieces{boxes[0], -1}, nil
	}
	if k == d.dims-1 {
		spans := append(d.levels[k].spans[:0], make([]ownedSpan, len(boxes))...)
		d.levels[k].spans = spans
		one := true
		for i, b := range boxes {
			spans[i] = ownedSpan{d.boxes[b][k], d.owners[b]}
			one = one && spans[i].owner == spans[0].owner
		}
		slices.SortFunc(spans, func(a, b ownedSpan) int { return a.span32.cmp(b.span32) })
		start := len(d.pieces)
		if one && d.skip != nil && d.skip[spans[0].owner] {
			return pieces{int32(start), 0}, nil
		}
		if !one {
			if err := d.paint(spans, k); err != nil {
				return pieces{}, err
			}
			return pieces{int32(start), int32(len(d.pieces) - start)}, nil
		}
		for _, s := range spans {
			if n := len(d.pieces); n > start {
				last := &d.pieces[n-1].s
				if last.hi == d.max[k] || s.lo <= last.hi+1 {
					last.hi = max(last.hi, s.hi)
					continue
				}
			}
			d.pieces = append(d.pieces, piece{s: s.span32, sub: pieces{start: s.owner}})
		}
		return pieces{int32(start), int32(len(d.pieces) - start)}, nil
	}
	lv := &d.levels[k]
	out, err := d.cut(boxes, k, lv.out[:0])
	lv.out = out
	if err != nil {
		return pieces{}, err
	}
	start := len(d.pieces)
	d.pieces = append(d.pieces, out...)
	return pieces{int32(start), int32(len(out))}, nil
}

// paint appends the pieces of the last field, k, of spans sorted by
// where they start: over each stretch, the least owner of the spans over
// it, neighbours of one owner joined.
func (d *decomposer) paint(spans []ownedSpan, k int) error {
	start := len(d.pieces)
	active := d.levels[k].painting[:0]
	defer func() { d.levels[k].painting = active }()
	next := 0
	c := spans[0].lo
	for {
		for next < len(spans) && spans[next].lo <= c {
			active = append(active, spans[next])
			next++
		}
		hi, owner, kept := d.max[k], int32(-1), 0
		for _, s := range active {
			if s.hi >= c {
				active[kept] = s
				kept++
				hi = min(hi, s.hi)
				if owner < 0 || s.owner < owner {
					owner = s.owner
				}
			}
		}
		active = active[:kept]
		if len(active) == 0 {
			if next == len(spans) {
				return nil
			}
			c = spans[next].lo
			continue
		}
		if next < len(spans) {
			hi = min(hi, spans[next].lo-1)
		}
		d.work += len(active)
		if d.work > d.budget {
			return errBudget
		}
		switch n := len(d.pieces); {
		case d.skip != nil && d.skip[owner]:
			// A hole.
		case n > start && d.pieces[n-1].s.hi+1 == c && d.pieces[n-1].sub.start == owner:
			d.pieces[n-1].s.hi = hi
		default:
			d.pieces = append(d.pieces, piece{s: span32{c, hi}, sub: pieces{start: owner}})
		}
		if hi == d.max[k] {
			return nil
		}
		c = hi + 1
	}
}

// equalPieces reports whether two unions over the fields from depth on are
// the same, owners included.
func (d *decomposer) equalPieces(a, b pieces, depth int) bool {
	switch {
	case a.n < 0 && b.n < 0:
		return d.owners[a.start] == d.owners[b.start] && slices.Equal(d.boxes[a.start][depth:d.dims], d.boxes[b.start][depth:d.dims])
	case a.n < 0:
		a, b = b, a
		fallthrough
	case b.n < 0:
		// A tree equals a box when it is the box's chain of spans.
		if a.n != 1 || d.pieces[a.start].s != d.boxes[b.start][depth] {
			return false
		}
		if depth == d.dims-1 {
			return d.pieces[a.start].sub.start == d.owners[b.start]
		}
		return d.equalPieces(d.pieces[a.start].sub, b, depth+1)
	}
	if a.n != b.n {
		return false
	}
	for i := range a.n {
		x, y := &d.pieces[a.start+i], &d.pieces[b.start+i]
		if x.s != y.s {
			return false
		}
		if depth == d.dims-1 {
			if x.sub.start != y.sub.start {
				return false
			}
		} else if !d.equalPieces(x.sub, y.sub, depth+1) {
			return false
		}
	}
	return true
}

// sortStarts sorts boxes by where they start, using tmp (which it returns
// too, maybe grown) as room. Many boxes are sorted by radix, a byte at a
// time from the last, skipping the bytes in which all starts agree: a few
// passes over them, where comparisons would take many.
func sortStarts(s, tmp []boxStart) (sorted, room []boxStart) {
	if len(s) < 256 {
		slices.SortFunc(s, func(a, b boxStart) int { return cmp.Compare(a.lo, b.lo) })
		return s, tmp
	}
	var or, and uint32 = 0, ^uint32(0)
	for _, b := range s {
		or, and = or|b.lo, and&b.lo
	}
	tmp = slices.Grow(tmp[:0], len(s))[:len(s)]
	for shift := 0; shift < 32; shift += 8 {
		if ((or^and)>>shift)&0xff == 0 {
			continue
		}
		var count [257]int
		for j := range s {
			count[int(s[j].lo>>shift)&0xff+1]++
		}
		for j := 1; j < len(count); j++ {
			count[j] += count[j-1]
		}
		for j := range s {
			v := int(s[j].lo>>shift) & 0xff
			tmp[count[v]] = s[j]
			count[v]++
		}
		s, tmp = tmp, s
	}
	return s, tmp
}

// leaves counts the leaves of a union over the fields from depth on: the
// elements it becomes.
func (d *decomposer) leaves(ps pieces, depth int) int {
	if ps.n < 0 {
		return 1
	}
	if depth == d.dims-1 {
		return int(ps.n)
	}
	n := 0
	for _, p := range d.pieces[ps.start : ps.start+ps.n] {
		n += d.leaves(p.sub, depth+1)
	}
	return n
}

// walk writes the elements of a union over the fields from depth on, in
// order, below the path to it.
func (d *decomposer) walk(ps pieces, depth int, w *elementWriter) {
	if ps.n < 0 {
		copy(w.path[depth:d.dims], d.boxes[ps.start][depth:d.dims])
		w.leaf(&w.path, d.owners[ps.start])
		return
	}
	for _, p := range d.pieces[ps.start : ps.start+ps.n] {
		w.path[depth] = p.s
		if depth == d.dims-1 {
			w.leaf(&w.path, p.sub.start)
			continue
		}
		d.walk(p.sub, depth+1, w)
	}
}

// elementWriter turns the paths of a tree into set elements.
type elementWriter struct {
	at         boxLayout
	fam        Family
	points     []u128   // of an IPv6 set, see rankAddrs
	restricted [4]bool  // by field, whether some element does not have it whole
	names      []string // the rule of each owner; nil with merged counters
	skip       []bool   // by owner, whether to leave its elements out
	path       box32
	out        []SetElement
}

// leaf appends the element of a path, and of its owner. It sets the
// element's fields one by one, in place: building it aside and copying it
// costs more.
func (w *elementWriter) leaf(b *box32, owner int32) {
	if w.skip != nil && w.skip[owner] {
		return
	}
	at := &w.at
	// out has room for every leaf.
	w.out = w.out[:len(w.out)+1]
	e := &w.out[len(w.out)-1]
	e.L4Proto.First, e.L4Proto.Last = uint8(b[at.proto].lo), uint8(b[at.proto].hi)
	if at.port >= 0 {
		e.DPort.First, e.DPort.Last = uint16(b[at.port].lo), uint16(b[at.port].hi)
	} else {
		// A set without the port field matches any.
		e.DPort.Last = 65535
	}
	if w.names != nil {
		e.Rule = w.names[owner]
	}
	if !w.setAddrRange(&e.SAddr, b[at.src]) {
		w.restricted[at.src] = true
	}
	if !w.setAddrRange(&e.DAddr, b[at.dst]) {
		w.restricted[at.dst] = true
	}
}

// setAddrRange sets r to the addresses of an address field's span, and
// reports whether they are all the family's.
func (w *elementWriter) setAddrRange(r *AddrRange, s span32) (whole bool) {
	if w.fam == FamilyIPv4 {
		r.First, r.Last = addr4(uint64(s.lo)), addr4(uint64(s.hi))
		return s == span32{0, 1<<32 - 1}
	}
	lo, hi := w.points[s.lo], familyAll(FamilyIPv6).hi
	if int(s.hi)+1 < len(w.points) {
		hi = w.points[s.hi+1].prev()
	}
	r.First, r.Last = u128Addr(lo, FamilyIPv6), u128Addr(hi, FamilyIPv6)
	return span{lo, hi} == familyAll(FamilyIPv6)
}
