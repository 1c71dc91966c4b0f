package agent

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// randomEntry is an address or CIDR of both families from a small space,
// so that random sets repeat and nest entries, some written unmasked.
func randomEntry(r *rand.Rand) fwv1.AddressSetEntry {
	switch r.IntN(4) {
	case 0:
		return fwv1.AddressSetEntry(fmt.Sprintf("10.0.%d.%d", r.IntN(4), r.IntN(8)))
	case 1:
		return fwv1.AddressSetEntry(fmt.Sprintf("10.0.%d.%d/%d", r.IntN(4), r.IntN(8), 22+r.IntN(10)))
	case 2:
		return fwv1.AddressSetEntry(fmt.Sprintf("2001:db8::%x", r.IntN(16)))
	}
	return fwv1.AddressSetEntry(fmt.Sprintf("2001:db8:%x::/%d", r.IntN(4), 32+r.IntN(40)))
}

// parsedWhole is what prefixes must return: every entry parsed, sorted.
func parsedWhole(t *testing.T, entries []fwv1.AddressSetEntry) []netip.Prefix {
	t.Helper()
	ps, err := compile.ParseAddressSet(entries)
	if err != nil {
		t.Fatal(err)
	}
	compile.SortAddressSet(ps)
	return ps
}

// prefixesOf is cache.prefixes of s's entries, its version its UID and
// generation.
func prefixesOf(cache parsedSets, s *fwv1.NodeFirewallAddressSet) ([]netip.Prefix, error) {
	return cache.prefixes(s.Name, fmt.Sprintf("%s/%d", s.UID, s.Generation), s.Spec.Addresses)
}

// TestParsedSetsFollowEdits: through random edits of one set, from one
// entry to all of them, the prefixes parsed from what changed are those of
// the whole set parsed and sorted, and those handed out before stay as
// they were.
func TestParsedSetsFollowEdits(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 7))
	cache := parsedSets{}
	set := &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: "s", UID: "u1"}}
	var handed [][]netip.Prefix
	var wants [][]netip.Prefix
	for gen := int64(1); gen <= 3000; gen++ {
		entries := slices.Clone(set.Spec.Addresses)
		switch n := 1 + r.IntN(3)*r.IntN(4); {
		case gen%500 == 0:
			entries = nil // emptied
		case gen%300 == 0:
			for range 200 {
				entries = append(entries, randomEntry(r)) // more than maxSpliced
			}
		default:
			for range n {
				j := r.IntN(len(entries) + 1)
				if len(entries) > 0 && r.IntN(2) == 0 {
					entries = slices.Delete(entries, min(j, len(entries)-1), min(j, len(entries)-1)+1)
				} else {
					entries = slices.Insert(entries, j, randomEntry(r))
				}
			}
		}
		set.Spec.Addresses, set.Generation = entries, gen
		if gen%700 == 0 {
			set.UID = types.UID(fmt.Sprintf("u%d", gen)) // deleted and created again
		}
		got, err := prefixesOf(cache, set)
		if err != nil {
			t.Fatal(err)
		}
		want := parsedWhole(t, entries)
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Fatalf("generation %d (-whole +spliced):\n%s", gen, diff)
		}
		again, _ := prefixesOf(cache, set)
		if len(again) > 0 && &again[0] != &got[0] {
			t.Errorf("generation %d parsed twice", gen)
		}
		handed, wants = append(handed, got), append(wants, want)
	}
	for i := range handed {
		if !slices.Equal(handed[i], wants[i]) {
			t.Fatalf("the prefixes of generation %d changed after they were handed out", i+1)
		}
	}
}

// TestParsedSetsInvalidEntry: a generation with an entry that does not
// parse is an error, and the next valid one is parsed whole.
func TestParsedSetsInvalidEntry(t *testing.T) {
	cache := parsedSets{}
	set := &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: "s", UID: "u", Generation: 1},
		Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: []fwv1.AddressSetEntry{"192.0.2.1", "198.51.100.0/24"}}}
	if _, err := prefixesOf(cache, set); err != nil {
		t.Fatal(err)
	}
	set.Generation, set.Spec.Addresses = 2, []fwv1.AddressSetEntry{"192.0.2.1", "not-an-address", "198.51.100.0/24"}
	if _, err := prefixesOf(cache, set); err == nil {
		t.Error("an entry that does not parse was taken")
	}
	set.Generation, set.Spec.Addresses = 3, []fwv1.AddressSetEntry{"198.51.100.0/24", "192.0.2.1", "192.0.2.2"}
	got, err := prefixesOf(cache, set)
	if err != nil {
		t.Fatal(err)
	}
	if want := parsedWhole(t, set.Spec.Addresses); !slices.Equal(got, want) {
		t.Errorf("after the invalid generation: %v, want %v", got, want)
	}
	cache.forget(nil)
	if len(cache) != 0 {
		t.Errorf("forget kept %d sets", len(cache))
	}
}
