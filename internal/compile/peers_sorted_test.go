package compile

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// TestFamilyPeerPrefixesSortedInput: a set's contents sorted by
// SortAddressSet give the peer sets that unsorted contents give, shared
// with the input when they are canonical already, and copied otherwise.
func TestFamilyPeerPrefixesSortedInput(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 5))
	random := func() netip.Prefix {
		if r.IntN(2) == 0 {
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(4)), byte(r.IntN(16))}), 26+r.IntN(7)).Masked()
		}
		return netip.MustParsePrefix(fmt.Sprintf("2001:db8::%x/%d", r.IntN(64), 122+r.IntN(7))).Masked()
	}
	shared := 0
	for i := range 3000 {
		var set []netip.Prefix
		for range r.IntN(30) {
			set = append(set, random())
		}
		sorted := slices.Clone(set)
		SortAddressSet(sorted)
		for _, f := range families {
			var of []netip.Prefix
			for _, p := range set {
				if prefixFamily(p) == f {
					of = append(of, p)
				}
			}
			want := canonicalPeerPrefixes(of)
			for _, in := range [][]netip.Prefix{set, sorted} {
				if got := familyPeerPrefixes(in, f); !slices.Equal(got, want) {
					t.Fatalf("case %d, %v of %v: %v, want %v", i, f, in, got, want)
				}
			}
			if got := familyPeerPrefixes(sorted, f); canonicalPeerList(sorted) && len(got) > 0 {
				if &got[0] != &sorted[slices.Index(sorted, got[0])] {
					t.Fatalf("case %d: canonical contents were copied", i)
				}
				shared++
			}
		}
	}
	if shared == 0 {
		t.Error("no case had canonical contents")
	}
}
