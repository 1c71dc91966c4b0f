package compile

import (
	"slices"
	"strconv"
)

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
	portBlockMin    = 1024
	portBlockWidth  = 4096
	portBlocksCount = 65536 / portBlockWidth
)

// block is the elements of one set and the ports its lookup is for, if
// the set is one block of a run's set.
type block struct {
	suffix string
	ports  *PortInterval
	elems  []SetElement
}

// portBlocks cuts the elements of a large set with ports into the port
// blocks; any other set is one block, whose lookup checks no ports.
func portBlocks(elems []SetElement, ports bool, fields []SetField) []block {
	if !ports || len(elems) <= portBlockMin {
		return []block{{elems: elems}}
	}
	if out, ok := stretchBlocks(elems); ok {
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
	for i := range portBlocksCount {
		if cut[i] {
			// A cut piece starts at the border, maybe before elements
			// that were ahead of it.
			sortElements(byBlock[i], fields)
		}
		out = append(out, blockOf(i, byBlock[i]))
	}
	return out
}

// stretchBlocks cuts elements sorted by port first into the port blocks,
// each a stretch of them, unless an element is across a border (ok false).
func stretchBlocks(elems []SetElement) (out []block, ok bool) {
	out = make([]block, 0, portBlocksCount)
	start := 0
	for i := range elems {
		p := &elems[i].DPort
		b := int(p.First) / portBlockWidth
		if int(p.Last)/portBlockWidth != b {
			return nil, false
		}
		for len(out) < b {
			out = append(out, blockOf(len(out), elems[start:i:i]))
			start = i
		}
	}
	for len(out) < portBlocksCount {
		out = append(out, blockOf(len(out), elems[start:]))
		start = len(elems)
	}
	return out, true
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
