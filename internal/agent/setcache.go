package agent

import (
	"net/netip"
	"slices"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// A one-entry change of a set of 50,000 entries should cost the agent
// about what it costs the kernel. parsedSets keeps each set's entries and
// their prefixes, sorted (compile.SortAddressSet), from the version it
// last read (its shards' names): a new version parses only the entries
// that changed, and Compile takes the sorted prefixes as they are
// (compile.AddressSets), so that the programmer sees one prefix added or
// removed among sorted ones (see nft's planPeerUpdates).

// parsedSets are the parsed contents of the NodeFirewallAddressSets the
// rules look up, by name.
type parsedSets map[string]*parsedSet

// parsedSet is one NodeFirewallAddressSet's contents at a version.
type parsedSet struct {
	version string
	// entries are the set's addresses, as read; sorted are their
	// prefixes, sorted. sorted is never changed in place: a compiled
	// ruleset may share it.
	entries []fwv1.AddressSetEntry
	sorted  []netip.Prefix
}

// maxSpliced bounds the entries a new version may change and still be
// parsed by the change alone; a larger change is parsed whole.
func maxSpliced(n int) int { return max(64, n/16) }

// prefixes returns the sorted prefixes of cur, the entries of the set
// called name at version, parsed from what changed since the version
// last seen, and keeps them for the next one.
func (ps parsedSets) prefixes(name, version string, cur []fwv1.AddressSetEntry) ([]netip.Prefix, error) {
	old := ps[name]
	switch {
	case old != nil && old.version == version:
		return old.sorted, nil
	case old != nil:
		if sorted, ok, err := spliceEntries(old.entries, cur, old.sorted); err != nil {
			delete(ps, name)
			return nil, err
		} else if ok {
			ps[name] = &parsedSet{version: version, entries: cur, sorted: sorted}
			return sorted, nil
		}
	}
	sorted, err := compile.ParseAddressSet(cur)
	if err != nil {
		delete(ps, name)
		return nil, err
	}
	compile.SortAddressSet(sorted)
	ps[name] = &parsedSet{version: version, entries: cur, sorted: sorted}
	return sorted, nil
}

// forget drops the sets not in names.
func (ps parsedSets) forget(names []string) {
	for n := range ps {
		if !slices.Contains(names, n) {
			delete(ps, n)
		}
	}
}

// spliceEntries returns the sorted prefixes of cur from those of old
// (sorted): the entries between the lists' common head and tail are
// parsed, the old ones' prefixes taken out and the new ones' put in, in
// one pass. ok is false when more than maxSpliced entries differ.
func spliceEntries(old, cur []fwv1.AddressSetEntry, sorted []netip.Prefix) ([]netip.Prefix, bool, error) {
	lo := 0
	for lo < len(old) && lo < len(cur) && old[lo] == cur[lo] {
		lo++
	}
	oldHi, curHi := len(old), len(cur)
	for oldHi > lo && curHi > lo && old[oldHi-1] == cur[curHi-1] {
		oldHi--
		curHi--
	}
	if (oldHi-lo)+(curHi-lo) > maxSpliced(len(cur)) {
		return nil, false, nil
	}
	gone, err := compile.ParseAddressSet(old[lo:oldHi])
	if err != nil {
		// Parsed before: cannot happen unless the parser changed.
		return nil, false, nil
	}
	added, err := compile.ParseAddressSet(cur[lo:curHi])
	if err != nil {
		return nil, false, err
	}
	compile.SortAddressSet(gone)
	compile.SortAddressSet(added)
	return mergeSorted(sorted, gone, added), true, nil
}

// mergeSorted returns sorted less one of each of gone (a sorted part of
// it) and with added, sorted, in a new slice.
func mergeSorted(sorted, gone, added []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(sorted)-len(gone)+len(added))
	g, a := 0, 0
	for _, p := range sorted {
		for g < len(gone) && compareSorted(gone[g], p) < 0 {
			g++ // not in sorted: nothing to take out
		}
		if g < len(gone) && gone[g] == p {
			g++
			continue
		}
		for a < len(added) && compareSorted(added[a], p) < 0 {
			out = append(out, added[a])
			a++
		}
		out = append(out, p)
	}
	return append(out, added[a:]...)
}

// compareSorted is the order of compile.SortAddressSet.
func compareSorted(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
