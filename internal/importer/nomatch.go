package importer

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// hash:net entries added with nomatch are exceptions: ipset looks an
// address up from its most specific entry to its least, and the first
// entry that holds it decides; a nomatch entry there means no match. So
// `add blk 10.0.0.0/8` and `add blk 10.1.0.0/16 nomatch` match 10.0.0.0/8
// less 10.1.0.0/16, and `add blk 10.1.2.0/24` would match again inside it.
//
// Imported, the set's entries stay as they are and its nomatch entries
// become the except of every peer naming the set (Calico's notNets,
// Cilium's except), when that matches exactly what ipset does: at most
// v1alpha1.MaxPeerExcepts of them, and no entry more specific than a
// nomatch entry that holds it. Otherwise the NodeFirewallAddressSet holds
// the addresses ipset matches, as CIDRs, and the peers no except. Either
// way the import is exact, and a note on the create line (Warning.Exact)
// says which was done.

// carveNomatch decides how the set's nomatch entries are imported. Only
// nomatch entries inside some entry matter: the others exclude nothing.
func (f *ipsetFile) carveNomatch(s *ipset) {
	entries := make([]netip.Prefix, len(s.addresses))
	for i, a := range s.addresses {
		entries[i] = mustPrefix(a)
	}
	var holes []netip.Prefix
	for _, n := range s.nomatch {
		if slices.ContainsFunc(entries, func(e netip.Prefix) bool { return e.Bits() <= n.Bits() && e.Contains(n.Addr()) }) {
			holes = append(holes, n)
		}
	}
	slices.SortFunc(holes, comparePrefixes)
	holes = slices.Compact(holes)
	if len(holes) == 0 {
		return
	}
	reentered := slices.ContainsFunc(entries, func(e netip.Prefix) bool {
		return slices.ContainsFunc(holes, func(n netip.Prefix) bool { return n.Bits() < e.Bits() && n.Contains(e.Addr()) })
	})
	if len(holes) <= v1alpha1.MaxPeerExcepts && !reentered {
		for _, n := range holes {
			s.except = append(s.except, prefixString(n))
		}
		f.note(s.line, s.create, "set %s has nomatch entries: the NodeFirewallAddressSet holds its other entries, and every rule naming it carves %v out as the peer's except; a reference written by hand needs the same except",
			s.name, s.except)
		return
	}
	matched := nomatchMatched(entries, s.nomatch)
	s.addresses = s.addresses[:0]
	for _, p := range matched {
		s.addresses = append(s.addresses, prefixString(p))
	}
	why := fmt.Sprintf("more than the %d except CIDRs of a peer", v1alpha1.MaxPeerExcepts)
	if reentered {
		why = "entries inside them match again, which except cannot say"
	}
	f.note(s.line, s.create, "set %s has nomatch entries (%s): the NodeFirewallAddressSet holds the %d CIDRs the set matches, without them",
		s.name, why, len(matched))
}

// nomatchMatched is what a hash:net set of entries and nomatch entries
// matches, as CIDRs, in order: each entry less every entry of either kind
// more specific than it and inside it, which decides for its own
// addresses.
func nomatchMatched(entries, nomatch []netip.Prefix) []netip.Prefix {
	all := slices.Concat(entries, nomatch)
	var out []netip.Prefix
	for _, e := range entries {
		var inner []netip.Prefix
		for _, o := range all {
			if o.Bits() > e.Bits() && e.Contains(o.Addr()) {
				inner = append(inner, o)
			}
		}
		if slices.ContainsFunc(nomatch, func(n netip.Prefix) bool { return n == e }) {
			continue
		}
		out = append(out, subtractPrefixes(e, inner)...)
	}
	slices.SortFunc(out, comparePrefixes)
	return slices.Compact(out)
}

// subtractPrefixes is p less the holes, as the fewest CIDRs a halving of
// p gives.
func subtractPrefixes(p netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	var overlapping []netip.Prefix
	for _, h := range holes {
		if h.Bits() <= p.Bits() && h.Contains(p.Addr()) {
			return nil
		}
		if p.Overlaps(h) {
			overlapping = append(overlapping, h)
		}
	}
	if len(overlapping) == 0 {
		return []netip.Prefix{p}
	}
	lo, hi := halves(p)
	return append(subtractPrefixes(lo, overlapping), subtractPrefixes(hi, overlapping)...)
}

// halves splits a prefix that is not a single address into its two
// halves.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	b[(bits-1)/8] |= 0x80 >> ((bits - 1) % 8)
	hiAddr, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(hiAddr, bits)
}

// mustPrefix is an address or CIDR normalizeAddress accepted, as a
// prefix; a single address is its /32 or /128.
func mustPrefix(a string) netip.Prefix {
	if p, err := netip.ParsePrefix(a); err == nil {
		return p.Masked()
	}
	ip := netip.MustParseAddr(a)
	return netip.PrefixFrom(ip, ip.BitLen())
}

// prefixString writes a single address without its length, as ipset
// save does.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// comparePrefixes orders IPv4 before IPv6, then by address, then by
// length.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
