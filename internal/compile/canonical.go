package compile

import (
	"cmp"
	"net/netip"
	"slices"
)

// Canonical lists. Compile emits a rule's ports sorted, merged and
// non-overlapping, and its addresses masked, sorted and non-overlapping:
// the kernel rejects overlapping elements in an interval set, and one
// form per match keeps golden files and comparisons stable.

// CanonicalPorts sorts intervals and merges overlapping or adjacent ones,
// as Rule.DPorts holds them.
func CanonicalPorts(ps []PortInterval) []PortInterval {
	return compactPorts(slices.Clone(ps))
}

// compactPorts is CanonicalPorts in place: it reuses and returns ps.
func compactPorts(ps []PortInterval) []PortInterval {
	if len(ps) > 1 {
		slices.SortFunc(ps, func(a, b PortInterval) int {
			return cmp.Or(cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last))
		})
	}
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && uint32(p.First) <= uint32(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, p.Last)
			continue
		}
		out = append(out, p)
	}
	return out
}

// CanonicalPrefixes sorts prefixes of one family and drops those another
// one covers, as Rule.SAddrs and Rule.DAddrs hold them.
func CanonicalPrefixes(ps []netip.Prefix) []netip.Prefix {
	return compactPrefixes(slices.Clone(ps))
}

// compactPrefixes is CanonicalPrefixes in place: it reuses and returns ps.
func compactPrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	if len(ps) > 1 {
		slices.SortFunc(ps, func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
		})
	}
	out := ps[:0]
	for _, p := range ps {
		// Sorted by address, shorter first: only the last kept prefix can
		// cover p.
		if n := len(out); n > 0 && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}
