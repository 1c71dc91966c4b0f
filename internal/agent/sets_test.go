package agent

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// peerPrefixes are the contents of the peer set name in the ruleset.
func peerPrefixes(t *testing.T, rs *compile.Ruleset, name string) []netip.Prefix {
	t.Helper()
	for _, s := range rs.PeerSets {
		if s.Name == name {
			return s.Prefixes
		}
	}
	t.Fatalf("no peer set %s in the ruleset", name)
	return nil
}

// TestAddressSetChangeUpdatesElements: the contents of a set the rules
// look up reach the ruleset, a change of them is a new ruleset that
// differs only in the set (not drift), and a missing set is empty.
func TestAddressSetChangeUpdatesElements(t *testing.T) {
	rule := kubelet()
	rule.From = []fwv1.Peer{{AddressSet: "office"}, {AddressSet: "partners"}}
	spec := fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{rule}, DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}}
	r, fw, c := setup(t, spec)
	ctx := context.Background()
	office := &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: "office", Generation: 1},
		Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: []fwv1.AddressSetEntry{"192.0.2.0/24", "2001:db8::1"}}}
	if err := c.Create(ctx, office); err != nil {
		t.Fatal(err)
	}
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if got := peerPrefixes(t, fw.table, "peer-v4-office"); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}) {
		t.Errorf("peer-v4-office = %v", got)
	}
	if got := peerPrefixes(t, fw.table, "peer-v6-partners"); len(got) != 0 {
		t.Errorf("missing set partners holds %v, want nothing", got)
	}
	if len(r.addressSetRequests(ctx, office)) != 1 || len(r.addressSetRequests(ctx, &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: "other"}})) != 0 {
		t.Error("the watch does not pass exactly the sets the rules look up")
	}
	first := fw.table

	office.Spec.Addresses = append(office.Spec.Addresses, "198.51.100.7")
	office.Generation = 2
	if err := c.Update(ctx, office); err != nil {
		t.Fatal(err)
	}
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if fw.applies != 2 {
		t.Fatalf("%d applies, want 2", fw.applies)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32")}
	if got := peerPrefixes(t, fw.table, "peer-v4-office"); !slices.Equal(got, want) {
		t.Errorf("peer-v4-office = %v, want %v", got, want)
	}
	before, after := *first, *fw.table
	before.PeerSets, after.PeerSets = nil, nil
	if !before.Equal(&after) {
		t.Error("a set's contents changed a rule")
	}
	if n := testutil.ToFloat64(r.Metrics.DriftRepairs); n != 0 {
		t.Errorf("a set change counted as %v drift repairs", n)
	}
	if ready(get(t, c)).Status != metav1.ConditionTrue {
		t.Errorf("not Ready after the set change: %+v", ready(get(t, c)))
	}
}
