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
