package reference

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// Peers: a rule's from and to match an address inside one of their peers'
// NodeFirewallAddressSets, as the evaluation is given them
// (compile.Options.AddressSets), and outside that peer's except. A set
// that is not given is empty.

// peersMismatch is the side of a rule's peers the packet fails, nil when
// it passes both.
func peersMismatch(r *v1alpha1.NodeFirewallRule, p *Packet, sets compile.AddressSets, explain bool) *Mismatch {
	for _, side := range []struct {
		field string
		peers []v1alpha1.Peer
		addr  netip.Addr
	}{{"from", r.From, p.SAddr}, {"to", r.To, p.DAddr}} {
		if len(side.peers) == 0 || slices.ContainsFunc(side.peers, func(peer v1alpha1.Peer) bool { return inPeer(peer, sets, side.addr) }) {
			continue
		}
		if !explain {
			return unexplained
		}
		return &Mismatch{Field: side.field, Want: peersWant(side.peers), Got: side.addr.String()}
	}
	return nil
}

// inPeer reports whether a is in the peer's set and not in its except.
func inPeer(peer v1alpha1.Peer, sets compile.AddressSets, a netip.Addr) bool {
	name, err := peer.SetName()
	if err != nil {
		return false
	}
	if !slices.ContainsFunc(sets[name], func(p netip.Prefix) bool { return p.Contains(a) }) {
		return false
	}
	return !inAny(peer.Except, a)
}

// peersWant says which sets a side's peers look up.
func peersWant(peers []v1alpha1.Peer) string {
	names := make([]string, len(peers))
	for i, peer := range peers {
		name, _ := peer.SetName()
		names[i] = "NodeFirewallAddressSet " + name
		if len(peer.Except) > 0 {
			names[i] += " except " + strings.Join(peer.Except, ",")
		}
	}
	return oneOf(names)
}

// peerSetsMatch reports whether a ruleset's rule matches the packet's
// addresses against its peer sets and excepts.
func peerSetsMatch(rs *compile.Ruleset, rule *compile.Rule, p Packet) bool {
	for _, side := range []struct {
		set    string
		except []netip.Prefix
		addr   netip.Addr
	}{{rule.SAddrSet, rule.SAddrsExcept, p.SAddr}, {rule.DAddrSet, rule.DAddrsExcept, p.DAddr}} {
		if side.set != "" {
			i := slices.IndexFunc(rs.PeerSets, func(s compile.PeerSet) bool { return s.Name == side.set })
			if i < 0 || rs.PeerSets[i].Family != p.Family ||
				!slices.ContainsFunc(rs.PeerSets[i].Prefixes, func(pfx netip.Prefix) bool { return pfx.Contains(side.addr) }) {
				return false
			}
		}
		if slices.ContainsFunc(side.except, func(pfx netip.Prefix) bool { return pfx.Contains(side.addr) }) {
			return false
		}
	}
	return true
}

// peersAsAddresses returns spec with every rule's peers replaced by the
// literal sources and destinations they stand for, given the sets'
// contents: each peer's set less its except, merged. A rule one side of
// whose peers stands for no address matches nothing and is left out.
// iptables-restore, which has no sets of nodefw's, reads the result.
func peersAsAddresses(spec v1alpha1.NodeFirewallSpec, sets compile.AddressSets) v1alpha1.NodeFirewallSpec {
	if !slices.ContainsFunc(spec.Rules, func(r v1alpha1.NodeFirewallRule) bool { return len(r.From)+len(r.To) > 0 }) {
		return spec
	}
	out := spec
	out.Rules = make([]v1alpha1.NodeFirewallRule, 0, len(spec.Rules))
	for _, r := range spec.Rules {
		if len(r.From) > 0 {
			if r.Sources = peerAddresses(r.From, sets); len(r.Sources) == 0 {
				continue
			}
		}
		if len(r.To) > 0 {
			if r.Destinations = peerAddresses(r.To, sets); len(r.Destinations) == 0 {
				continue
			}
		}
		r.From, r.To = nil, nil
		out.Rules = append(out.Rules, r)
	}
	return out
}

// peerAddresses are the addresses peers stand for, as CIDRs.
func peerAddresses(peers []v1alpha1.Peer, sets compile.AddressSets) []string {
	var all []netip.Prefix
	for _, peer := range peers {
		name, err := peer.SetName()
		if err != nil {
			continue
		}
		var except []netip.Prefix
		for _, e := range peer.Except {
			if p, err := v1alpha1.ParseAddress(e); err == nil {
				except = append(except, p)
			}
		}
		for _, p := range sets[name] {
			all = append(all, subtractPrefixes(p, except)...)
		}
	}
	var out []string
	for _, p := range compile.CanonicalPrefixes(all) {
		out = append(out, p.String())
	}
	return out
}

// subtractPrefixes returns the prefixes covering exactly p less every
// prefix of except.
func subtractPrefixes(p netip.Prefix, except []netip.Prefix) []netip.Prefix {
	for _, e := range except {
		switch {
		case e.Addr().Is4() != p.Addr().Is4() || !e.Overlaps(p):
		case e.Bits() <= p.Bits():
			// e covers p.
			return nil
		default:
			// e lies inside p: split p in halves, and subtract from each.
			lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
			hiAddr := p.Addr().AsSlice()
			hiAddr[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
			a, _ := netip.AddrFromSlice(hiAddr)
			hi := netip.PrefixFrom(a, p.Bits()+1)
			return append(subtractPrefixes(lo, except), subtractPrefixes(hi, except)...)
		}
	}
	return []netip.Prefix{p}
}
