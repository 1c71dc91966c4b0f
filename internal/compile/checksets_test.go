package compile

import (
	"net/netip"
	"slices"
	"testing"
)

// checkSets checks what the kernel needs of every set: sorted, disjoint,
// well-formed elements of the set's family, and a lookup that uses it.
func checkSets(t testing.TB, rs *Ruleset) {
	t.Helper()
	used := map[string]int{}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if r.Lookup != "" {
				used[r.Lookup]++
				if s := rs.Set(r.Lookup); s == nil || s.Family != r.Family {
					t.Fatalf("rule %q looks up %q, which is not a set of family %v", r.Comment, r.Lookup, r.Family)
				}
			}
		}
	}
	for _, s := range rs.Sets {
		// Port blocks, exact sets and the interval set next to an exact
		// set may be empty.
		mayBeEmpty := isBlock(rs, s.Name) || s.Exact || rs.Set(s.Name+exactSuffix) != nil
		if used[s.Name] != 1 || (len(s.Elements) == 0 && !mayBeEmpty) {
			t.Fatalf("set %s: %d lookups, %d elements", s.Name, used[s.Name], len(s.Elements))
		}
		if s.Exact {
			for i, e := range s.Elements {
				if sbits, dbits, ok := exactKey(&e, s.Fields, s.Family); !ok || sbits != s.SAddrBits || dbits != s.DAddrBits {
					t.Fatalf("set %s (/%d, /%d): element %d is not one key of those prefix lengths: %+v", s.Name, s.SAddrBits, s.DAddrBits, i, e)
				}
			}
		}
		boxes := make([]box, len(s.Elements))
		for i, e := range s.Elements {
			boxes[i] = elementBox(e, s)
			for k := range s.Fields {
				if boxes[i][k].lo.cmp(boxes[i][k].hi) > 0 {
					t.Fatalf("set %s: element %d has an empty range", s.Name, i)
				}
			}
			for _, a := range []netip.Addr{e.SAddr.First, e.SAddr.Last, e.DAddr.First, e.DAddr.Last} {
				if (a.Is4() && s.Family != FamilyIPv4) || (a.Is6() && s.Family != FamilyIPv6) {
					t.Fatalf("set %s: element %d has address %v of the other family", s.Name, i, a)
				}
			}
			if i > 0 && slices.Compare(keyOf(boxes[i-1], len(s.Fields)), keyOf(boxes[i], len(s.Fields))) >= 0 {
				t.Fatalf("set %s: elements %d and %d are out of order", s.Name, i-1, i)
			}
		}
		if len(boxes) > 400 {
			continue
		}
		for i := range boxes {
			for j := i + 1; j < len(boxes); j++ {
				if overlap(boxes[i], boxes[j], len(s.Fields)) {
					t.Fatalf("set %s: elements %s and %s overlap", s.Name,
						formatElement(s.Elements[i], s.Fields), formatElement(s.Elements[j], s.Fields))
				}
			}
		}
	}
}

// isBlock reports whether a set is a port block: its lookup checks a port
// range first.
func isBlock(rs *Ruleset, name string) bool {
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if r.Lookup == name {
				return len(r.DPorts) == 1
			}
		}
	}
	return false
}

// box is a set element's ranges, a span per key field, in key order.
type box [4]span

func elementBox(e SetElement, s Set) box {
	var b box
	for k, f := range s.Fields {
		switch f {
		case FieldL4Proto:
			b[k] = span{u128{lo: uint64(e.L4Proto.First)}, u128{lo: uint64(e.L4Proto.Last)}}
		case FieldDPort:
			b[k] = span{u128{lo: uint64(e.DPort.First)}, u128{lo: uint64(e.DPort.Last)}}
		case FieldSAddr:
			b[k] = span{addrU128(e.SAddr.First), addrU128(e.SAddr.Last)}
		case FieldDAddr:
			b[k] = span{addrU128(e.DAddr.First), addrU128(e.DAddr.Last)}
		}
	}
	return b
}

func keyOf(b box, n int) []uint64 {
	var out []uint64
	for k := range n {
		out = append(out, b[k].lo.hi, b[k].lo.lo, b[k].hi.hi, b[k].hi.lo)
	}
	return out
}

func overlap(a, b box, n int) bool {
	for k := range n {
		if a[k].hi.cmp(b[k].lo) < 0 || b[k].hi.cmp(a[k].lo) < 0 {
			return false
		}
	}
	return true
}

// elementCount is the number of elements in all sets of a ruleset.
func elementCount(rs *Ruleset) int {
	n := 0
	for _, s := range rs.Sets {
		n += len(s.Elements)
	}
	return n
}
