package compile

import (
	"cmp"
	"math/bits"
	"slices"
	"strconv"
)

// Exact hash sets. Every element of a run has the run's verdict, so the
// elements that are one key once their addresses are masked to a prefix
// length can live in hash sets of their own, one per pair of prefix
// lengths: the kernel adds and removes a hash set's elements in constant
// time, where an interval set costs in proportion to its size. Compile
// does so for the sets of a run that have at least Options.ExactSetMin
// elements.

// exactSuffix starts the suffix of the name of a run's hash sets.
const exactSuffix = "-exact"

// exactClass is the elements of a run's set that are one key once the
// addresses are masked to sbits and dbits (0: not masked).
type exactClass struct {
	sbits, dbits int
	elems        []SetElement
}

// suffix names the class's set: "-exact", then "-s<bits>" and "-d<bits>"
// for masked addresses.
func (c exactClass) suffix() string {
	s := exactSuffix
	if c.sbits > 0 {
		s += "-s" + strconv.Itoa(c.sbits)
	}
	if c.dbits > 0 {
		s += "-d" + strconv.Itoa(c.dbits)
	}
	return s
}

// splitExact takes the elements that are one key once the addresses are
// masked out of elems: into the class of single keys, which it always
// returns (first), and into classes of masked prefixes that have at least
// classMin elements. It compacts the others in place. Every class and the
// rest keep their order.
func splitExact(elems []SetElement, fields []SetField, fam Family, classMin int) (classes []exactClass, ranged []SetElement) {
	type class struct{ sbits, dbits int }
	count := map[class]int{}
	for i := range elems {
		if s, d, ok := exactKey(&elems[i], fields, fam); ok {
			count[class{s, d}]++
		}
	}
	keep := []class{{0, 0}}
	for c, n := range count {
		if c != (class{}) && n >= classMin {
			keep = append(keep, c)
		}
	}
	slices.SortFunc(keep[1:], func(a, b class) int { return cmp.Or(cmp.Compare(a.sbits, b.sbits), cmp.Compare(a.dbits, b.dbits)) })
	index := make(map[class]int, len(keep))
	classes = make([]exactClass, len(keep))
	for i, c := range keep {
		index[c] = i
		classes[i] = exactClass{sbits: c.sbits, dbits: c.dbits, elems: make([]SetElement, 0, count[c])}
	}
	w := 0
	for i := range elems {
		if s, d, ok := exactKey(&elems[i], fields, fam); ok {
			if j, kept := index[class{s, d}]; kept {
				classes[j].elems = append(classes[j].elems, elems[i])
				continue
			}
		}
		elems[w] = elems[i]
		w++
	}
	return classes, elems[:w:w]
}

// exactKey tells whether an element is one protocol, one port and
// address prefixes, and the prefix lengths, 0 for a single address.
func exactKey(e *SetElement, fields []SetField, fam Family) (sbits, dbits int, ok bool) {
	full := 32
	if fam == FamilyIPv6 {
		full = 128
	}
	for _, f := range fields {
		switch f {
		case FieldL4Proto:
			if e.L4Proto.First != e.L4Proto.Last {
				return 0, 0, false
			}
		case FieldDPort:
			if e.DPort.First != e.DPort.Last {
				return 0, 0, false
			}
		case FieldSAddr, FieldDAddr:
			r := e.SAddr
			if f == FieldDAddr {
				r = e.DAddr
			}
			bits, isPrefix := prefixBits(r)
			if !isPrefix || bits == 0 {
				return 0, 0, false
			}
			if bits == full {
				bits = 0
			}
			if f == FieldSAddr {
				sbits = bits
			} else {
				dbits = bits
			}
		}
	}
	return sbits, dbits, true
}

// prefixBits returns the length of the prefix that is exactly r, if any.
func prefixBits(r AddrRange) (int, bool) {
	lo, hi := addrU128(r.First), addrU128(r.Last)
	// lo ^ hi must be the host part: ones after the prefix, and lo zero
	// there.
	x := u128{hi: lo.hi ^ hi.hi, lo: lo.lo ^ hi.lo}
	if x.hi&(x.hi+1) != 0 || (x.hi != 0 && x.lo != ^uint64(0)) || x.lo&(x.lo+1) != 0 ||
		lo.hi&x.hi != 0 || lo.lo&x.lo != 0 {
		return 0, false
	}
	host := bits.OnesCount64(x.hi) + bits.OnesCount64(x.lo)
	return r.First.BitLen() - host, true
}
