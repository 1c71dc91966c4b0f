package resolve

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// AddressSets are the NodeFirewallAddressSets the policies' node peers
// need, and the peers that do not resolve.
type AddressSets struct {
	// Managed maps the name of every set the controller keeps (see
	// Peer.SetName) to its addresses, sorted and without duplicates.
	Managed map[string][]fwv1.AddressSetEntry
	// Problems are fwv1.ReasonUnresolvedPeers problems, one per peer of a
	// rule that matches nothing: a missing set, a selector matching no node
	// or nodes without such addresses.
	Problems []Problem
}

// AddressSetsFor computes, MetalLB-style, from the cluster's policies,
// nodes and address sets, the managed sets every node peer of a policy
// needs, and reports the peers that do not resolve. A node peer that
// selects nothing still gets its set, empty, so that its rules match
// nothing from it rather than wait for a set that is missing.
func AddressSetsFor(policies []fwv1.NodeFirewallPolicy, nodes []corev1.Node, sets []fwv1.NodeFirewallAddressSet) AddressSets {
	out := AddressSets{Managed: map[string][]fwv1.AddressSetEntry{}}
	user := make(map[string]bool, len(sets))
	for i := range sets {
		if !IsManagedSet(&sets[i]) {
			user[sets[i].Name] = true
		}
	}
	for i := range policies {
		p := &policies[i]
		for _, r := range p.Spec.Rules {
			for _, dir := range []struct {
				field string
				peers []fwv1.Peer
			}{{"from", r.From}, {"to", r.To}} {
				for k, peer := range dir.peers {
					where := fmt.Sprintf("rule %s %s[%d]", r.Name, dir.field, k)
					if msg := out.resolve(peer, nodes, user); msg != "" {
						out.Problems = append(out.Problems, Problem{Policy: p.Name, Reason: fwv1.ReasonUnresolvedPeers, Message: where + ": " + msg})
					}
				}
			}
		}
	}
	sortProblems(out.Problems)
	return out
}

// resolve adds a node peer's set to Managed and returns why the peer
// matches nothing, or "".
func (s *AddressSets) resolve(peer fwv1.Peer, nodes []corev1.Node, user map[string]bool) string {
	if peer.AddressSet != "" {
		if !user[peer.AddressSet] {
			return fmt.Sprintf("NodeFirewallAddressSet %s not found", peer.AddressSet)
		}
		return ""
	}
	name, err := peer.SetName()
	if err != nil {
		return err.Error()
	}
	sel := peer.NodeSelector
	if sel == nil {
		sel = peer.PodCIDRs
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err.Error()
	}
	addrs, matched := peerAddresses(peer, selector, nodes)
	if _, done := s.Managed[name]; !done {
		s.Managed[name] = addrs
	}
	switch {
	case matched == 0:
		return fmt.Sprintf("selector %q matches no node", selector.String())
	case len(addrs) == 0 && peer.PodCIDRs != nil:
		return fmt.Sprintf("the %d nodes selector %q matches have no pod CIDRs", matched, selector.String())
	case len(addrs) == 0:
		return fmt.Sprintf("the %d nodes selector %q matches have no %s address", matched, selector.String(), peer.EffectiveAddressType())
	}
	return ""
}

// peerAddresses are the addresses of a node peer on the nodes its selector
// matches, sorted and without duplicates, and how many nodes it matches.
func peerAddresses(peer fwv1.Peer, selector labels.Selector, nodes []corev1.Node) ([]fwv1.AddressSetEntry, int) {
	var prefixes []netip.Prefix
	matched := 0
	for i := range nodes {
		n := &nodes[i]
		if !selector.Matches(labels.Set(n.Labels)) {
			continue
		}
		matched++
		if peer.PodCIDRs != nil {
			for _, c := range n.Spec.PodCIDRs {
				if p, err := netip.ParsePrefix(c); err == nil {
					prefixes = append(prefixes, p.Masked())
				}
			}
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeAddressType(peer.EffectiveAddressType()) {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Zone() == "" {
				ip = ip.Unmap()
				prefixes = append(prefixes, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	slices.SortFunc(prefixes, comparePrefixes)
	prefixes = slices.Compact(prefixes)
	out := make([]fwv1.AddressSetEntry, 0, len(prefixes))
	for _, p := range prefixes {
		if p.IsSingleIP() {
			out = append(out, fwv1.AddressSetEntry(p.Addr().String()))
		} else {
			out = append(out, fwv1.AddressSetEntry(p.String()))
		}
	}
	return out, matched
}

// comparePrefixes orders IPv4 before IPv6, then by address and length.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// IsManagedSet reports whether the controller keeps the set.
func IsManagedSet(s *fwv1.NodeFirewallAddressSet) bool {
	return s.Labels[fwv1.LabelManagedBy] == fwv1.ManagedByController
}

// SetWrites are the writes that take the managed NodeFirewallAddressSets to
// the desired ones, each list sorted by name. Sets are created and updated
// before NodeFirewalls are written, and deleted after, so that an agent
// never meets a rule whose set is not there yet.
type SetWrites struct {
	Create []*fwv1.NodeFirewallAddressSet
	Update []*fwv1.NodeFirewallAddressSet
	// Delete are managed sets no policy references any more.
	Delete []*fwv1.NodeFirewallAddressSet
}

// PlanAddressSets decides the writes of managed sets. A set of the user's
// of the same name is left alone: the controller owns only labelled sets.
func PlanAddressSets(desired map[string][]fwv1.AddressSetEntry, existing []fwv1.NodeFirewallAddressSet) SetWrites {
	var w SetWrites
	have := map[string]*fwv1.NodeFirewallAddressSet{}
	for i := range existing {
		have[existing[i].Name] = &existing[i]
	}
	for name, addrs := range desired {
		s := have[name]
		switch {
		case s == nil:
			w.Create = append(w.Create, &fwv1.NodeFirewallAddressSet{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{fwv1.LabelManagedBy: fwv1.ManagedByController}},
				Spec:       fwv1.NodeFirewallAddressSetSpec{Addresses: addrs},
			})
		case !IsManagedSet(s):
		case !equality.Semantic.DeepEqual(s.Spec.Addresses, addrs) && !(len(s.Spec.Addresses) == 0 && len(addrs) == 0):
			updated := s.DeepCopy()
			updated.Spec.Addresses = addrs
			w.Update = append(w.Update, updated)
		}
	}
	for i := range existing {
		s := &existing[i]
		if _, want := desired[s.Name]; !want && IsManagedSet(s) && s.DeletionTimestamp == nil {
			w.Delete = append(w.Delete, s)
		}
	}
	for _, list := range [][]*fwv1.NodeFirewallAddressSet{w.Create, w.Update, w.Delete} {
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	}
	return w
}
