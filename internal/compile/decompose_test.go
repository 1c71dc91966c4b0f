package compile

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRadixSortsSort checks the radix sorts against a comparison sort, on
// inputs large enough to take the radix path.
func TestRadixSortsSort(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 255, 256, 1000, 5000} {
		var starts []boxStart
		var ends []addrEnd
		for i := range n {
			lo := uint32(r.IntN(1 << uint(8*(1+i%4))))
			starts = append(starts, boxStart{span32{lo, lo}, int32(i)})
			a := u128{hi: r.Uint64() >> uint(r.IntN(64)), lo: r.Uint64() >> uint(r.IntN(64))}
			if i%3 == 0 {
				a.hi = 0x20010db800000000
			}
			ends = append(ends, addrEnd{a, int32(i)})
		}
		gotStarts, _ := sortStarts(slices.Clone(starts), nil)
		if !slices.IsSortedFunc(gotStarts, func(a, b boxStart) int { return int(a.lo) - int(b.lo) }) || len(gotStarts) != n {
			t.Fatalf("%d starts not sorted", n)
		}
		gotEnds, _ := sortAddrEnds(slices.Clone(ends), nil)
		if !slices.IsSortedFunc(gotEnds, func(a, b addrEnd) int { return a.addr.cmp(b.addr) }) || len(gotEnds) != n {
			t.Fatalf("%d ends not sorted", n)
		}
		// Sorting moves entries, it does not lose or duplicate them.
		seen := make([]bool, n)
		for _, s := range gotStarts {
			seen[s.box] = true
		}
		for _, e := range gotEnds {
			if !seen[e.ref] || starts[e.ref].box != e.ref {
				t.Fatalf("%d: entry %d lost", n, e.ref)
			}
		}
	}
}
