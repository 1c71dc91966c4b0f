package resolve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// addressedNode is a node with InternalIPs, an ExternalIP and pod CIDRs.
func addressedNode(name string, lbls map[string]string, internal []string, external string, podCIDRs ...string) corev1.Node {
	n := node(name, lbls)
	for _, a := range internal {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	if external != "" {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: external})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	n.Spec.PodCIDRs = podCIDRs
	return n
}

func setName(t *testing.T, p fwv1.Peer) string {
	t.Helper()
	n, err := p.SetName()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func entries(s ...string) []fwv1.AddressSetEntry {
	out := make([]fwv1.AddressSetEntry, len(s))
	for i := range s {
		out[i] = fwv1.AddressSetEntry(s[i])
	}
	return out
}

func TestAddressSetsFor(t *testing.T) {
	cp := fwv1.Peer{NodeSelector: &cpSel}
	cpExternal := fwv1.Peer{NodeSelector: &cpSel, AddressType: fwv1.NodeAddressExternalIP}
	pods := fwv1.Peer{PodCIDRs: &metav1.LabelSelector{}}
	nobody := fwv1.Peer{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "none"}}}
	office := fwv1.Peer{AddressSet: "office"}
	missing := fwv1.Peer{AddressSet: "partners"}
	nodes := []corev1.Node{
		addressedNode("cp-2", map[string]string{controlPlaneLabel: ""}, []string{"10.0.0.12", "fd00::12"}, "203.0.113.2", "10.244.2.0/24"),
		addressedNode("cp-1", map[string]string{controlPlaneLabel: ""}, []string{"10.0.0.11", "fd00::11"}, "", "10.244.1.0/24", "fd01:0:0:1::/64"),
		addressedNode("worker-1", nil, []string{"10.0.0.21"}, "203.0.113.21", "10.244.3.0/24"),
		addressedNode("worker-2", nil, []string{"10.0.0.21"}, ""),
	}
	sets := []fwv1.NodeFirewallAddressSet{{ObjectMeta: metav1.ObjectMeta{Name: "office"}}}
	rule := fwv1.Rule{Name: "peers", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept,
		From: []fwv1.Peer{cp, cpExternal, office, missing}, To: []fwv1.Peer{pods, nobody}}
	again := fwv1.Rule{Name: "again", Chain: fwv1.ChainForward, Action: fwv1.ActionAccept,
		From: []fwv1.Peer{{NodeSelector: &cpSel, Except: []string{"10.0.0.11"}}}}
	policies := []fwv1.NodeFirewallPolicy{policy("peers", 1, metav1.LabelSelector{}, withRules(rule, again))}

	got := AddressSetsFor(policies, nodes, sets)
	want := AddressSets{
		Managed: map[string][]fwv1.AddressSetEntry{
			setName(t, cp):         entries("10.0.0.11", "10.0.0.12", "fd00::11", "fd00::12"),
			setName(t, cpExternal): entries("203.0.113.2"),
			setName(t, pods):       entries("10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24", "fd01:0:0:1::/64"),
			setName(t, nobody):     {},
		},
		Problems: []Problem{
			{Policy: "peers", Reason: fwv1.ReasonUnresolvedPeers, Message: "rule peers from[3]: NodeFirewallAddressSet partners not found"},
			{Policy: "peers", Reason: fwv1.ReasonUnresolvedPeers, Message: `rule peers to[1]: selector "role=none" matches no node`},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AddressSetsFor (-want +got):\n%s", diff)
	}

	// A managed set of the same name as a user's does not make the user's
	// reference resolve.
	managedOffice := []fwv1.NodeFirewallAddressSet{{ObjectMeta: metav1.ObjectMeta{Name: "office", Labels: map[string]string{fwv1.LabelManagedBy: fwv1.ManagedByController}}}}
	only := []fwv1.NodeFirewallPolicy{policy("office", 1, metav1.LabelSelector{}, withRules(fwv1.Rule{Name: "o", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, From: []fwv1.Peer{office}}))}
	if got := AddressSetsFor(only, nodes, managedOffice).Problems; len(got) != 1 {
		t.Errorf("problems %v, want the missing user set office", got)
	}

	// Nodes without the address type the peer takes.
	ext := []fwv1.NodeFirewallPolicy{policy("ext", 1, metav1.LabelSelector{}, withRules(fwv1.Rule{Name: "e", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept,
		From: []fwv1.Peer{{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"x": "y"}}, AddressType: fwv1.NodeAddressExternalIP}}}))}
	bare := []corev1.Node{addressedNode("n", map[string]string{"x": "y"}, []string{"10.0.0.1"}, "")}
	wantMsg := `rule e from[0]: the 1 nodes selector "x=y" matches have no ExternalIP address`
	if got := AddressSetsFor(ext, bare, nil).Problems; len(got) != 1 || got[0].Message != wantMsg {
		t.Errorf("problems %v, want %q", got, wantMsg)
	}
}

func TestPlanAddressSets(t *testing.T) {
	managed := func(name string, addrs ...string) fwv1.NodeFirewallAddressSet {
		return fwv1.NodeFirewallAddressSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{fwv1.LabelManagedBy: fwv1.ManagedByController}},
			Spec:       fwv1.NodeFirewallAddressSetSpec{Addresses: entries(addrs...)},
		}
	}
	existing := []fwv1.NodeFirewallAddressSet{
		managed("same", "10.0.0.1"),
		managed("changed", "10.0.0.1"),
		managed("unreferenced", "10.0.0.1"),
		{ObjectMeta: metav1.ObjectMeta{Name: "users"}, Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: entries("192.0.2.1")}},
		managed("empty"),
	}
	desired := map[string][]fwv1.AddressSetEntry{
		"same":    entries("10.0.0.1"),
		"changed": entries("10.0.0.1", "10.0.0.2"),
		"new":     entries("fd00::1"),
		"users":   entries("10.0.0.9"),
		"empty":   {},
	}
	w := PlanAddressSets(desired, existing)
	names := func(list []*fwv1.NodeFirewallAddressSet) []string {
		var out []string
		for _, s := range list {
			out = append(out, s.Name)
		}
		return out
	}
	got := map[string][]string{"create": names(w.Create), "update": names(w.Update), "delete": names(w.Delete)}
	want := map[string][]string{"create": {"new"}, "update": {"changed"}, "delete": {"unreferenced"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("PlanAddressSets (-want +got):\n%s", diff)
	}
	if w.Create[0].Labels[fwv1.LabelManagedBy] != fwv1.ManagedByController {
		t.Errorf("created set is not labelled managed: %v", w.Create[0].Labels)
	}
	if diff := cmp.Diff(entries("10.0.0.1", "10.0.0.2"), w.Update[0].Spec.Addresses); diff != "" {
		t.Errorf("updated addresses (-want +got):\n%s", diff)
	}
}
