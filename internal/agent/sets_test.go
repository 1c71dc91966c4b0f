package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/addressshard"
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

// addressSet is a set called name at generation gen holding addrs.
func addressSet(name string, gen int64, addrs ...fwv1.AddressSetEntry) *fwv1.NodeFirewallAddressSet {
	return &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Generation: gen},
		Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: addrs}}
}

// createShards stores the shards the controller writes of s when it has
// current shards (see addressshard.For), and returns them.
func createShards(t *testing.T, c client.Client, s *fwv1.NodeFirewallAddressSet, current int) []*appsv1.ControllerRevision {
	t.Helper()
	crs := addressshard.For(s, shardNamespace, current)
	for _, cr := range crs {
		if err := c.Create(context.Background(), cr.DeepCopy()); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	return crs
}

func deleteShards(t *testing.T, c client.Client, crs ...*appsv1.ControllerRevision) {
	t.Helper()
	for _, cr := range crs {
		if err := c.Delete(context.Background(), cr.DeepCopy()); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
	}
}

// TestAddressSetChangeUpdatesElements: the contents of a set the rules
// look up reach the ruleset from its shards, a change of them is a new
// ruleset that differs only in the set (not drift), the deletion of the
// shards the change replaced is no change, and a missing set is empty.
func TestAddressSetChangeUpdatesElements(t *testing.T) {
	rule := kubelet()
	rule.From = []fwv1.Peer{{AddressSet: "office"}, {AddressSet: "partners"}}
	spec := fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{rule}, DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}}
	r, fw, c := setup(t, spec)
	ctx := context.Background()
	office := addressSet("office", 1, "192.0.2.0/24", "2001:db8::1")
	first := createShards(t, c, office, 0)
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if got := peerPrefixes(t, fw.table, "peer-v4-office"); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}) {
		t.Errorf("peer-v4-office = %v", got)
	}
	if got := peerPrefixes(t, fw.table, "peer-v6-partners"); len(got) != 0 {
		t.Errorf("missing set partners holds %v, want nothing", got)
	}
	other := addressshard.For(addressSet("other", 1, "192.0.2.9"), shardNamespace, 0)[0]
	if len(r.addressSetRequests(ctx, first[0])) != 1 || len(r.addressSetRequests(ctx, other)) != 0 {
		t.Error("the watch does not pass exactly the shards of the sets the rules look up")
	}
	firstTable := fw.table

	// The controller creates the new shard first: the agent takes it.
	office = addressSet("office", 2, append(office.Spec.Addresses, "198.51.100.7")...)
	createShards(t, c, office, 0)
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
	before, after := *firstTable, *fw.table
	before.PeerSets, after.PeerSets = nil, nil
	if !before.Equal(&after) {
		t.Error("a set's contents changed a rule")
	}
	// Then it deletes the one replaced: nothing changes.
	deleteShards(t, c, first...)
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if fw.applies != 2 {
		t.Errorf("%d applies after the old shard went, want 2", fw.applies)
	}
	if n := testutil.ToFloat64(r.Metrics.DriftRepairs); n != 0 {
		t.Errorf("a set change counted as %v drift repairs", n)
	}
	if ready(get(t, c)).Status != metav1.ConditionTrue {
		t.Errorf("not Ready after the set change: %+v", ready(get(t, c)))
	}
}

// entries are n distinct IPv4 addresses from 10.1.0.0, and their sorted
// prefixes.
func entries(n int) ([]fwv1.AddressSetEntry, []netip.Prefix) {
	out := make([]fwv1.AddressSetEntry, n)
	for i := range out {
		out[i] = fwv1.AddressSetEntry(fmt.Sprintf("10.1.%d.%d", i/256, i%256))
	}
	ps, _ := compile.ParseAddressSet(out)
	compile.SortAddressSet(ps)
	return out, ps
}

// TestAddressSetAssembly: the agent assembles a set from a complete group
// of its shards only, takes the newer of two shards of one index, and
// moves to a group of another size once it is complete.
func TestAddressSetAssembly(t *testing.T) {
	small, smallPrefixes := entries(1500)   // 2 shards
	grown, grownPrefixes := entries(4500)   // 8 shards
	edited, editedPrefixes := entries(1501) // 2 shards, one changed
	for _, tc := range []struct {
		name string
		// shards writes the shards there are.
		shards func(t *testing.T, c client.Client)
		want   []netip.Prefix
	}{
		{"complete", func(t *testing.T, c client.Client) {
			createShards(t, c, addressSet("s", 1, small...), 0)
		}, smallPrefixes},
		{"incomplete group ignored", func(t *testing.T, c client.Client) {
			crs := createShards(t, c, addressSet("s", 1, small...), 0)
			deleteShards(t, c, crs[1])
		}, nil},
		{"mid-update: the newer of one index", func(t *testing.T, c client.Client) {
			old := createShards(t, c, addressSet("s", 1, small...), 0)
			cur := createShards(t, c, addressSet("s", 2, edited...), 2)
			if old[0].Name != cur[0].Name && old[1].Name != cur[1].Name {
				t.Fatal("one entry more changed both shards")
			}
		}, editedPrefixes},
		{"growing: the new group incomplete", func(t *testing.T, c client.Client) {
			createShards(t, c, addressSet("s", 1, small...), 0)
			crs := createShards(t, c, addressSet("s", 2, grown...), 2)
			deleteShards(t, c, crs[7])
		}, smallPrefixes},
		{"growing: the new group complete", func(t *testing.T, c client.Client) {
			createShards(t, c, addressSet("s", 1, small...), 0)
			createShards(t, c, addressSet("s", 2, grown...), 2)
		}, grownPrefixes},
		{"shrinking: the old group gone but one", func(t *testing.T, c client.Client) {
			old := createShards(t, c, addressSet("s", 1, grown...), 0)
			createShards(t, c, addressSet("s", 2, small...), 0)
			deleteShards(t, c, old[1:]...)
		}, smallPrefixes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule := kubelet()
			rule.From = []fwv1.Peer{{AddressSet: "s"}}
			r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{rule}})
			tc.shards(t, c)
			if err := reconcileOnce(t, r); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, peerPrefixes(t, fw.table, "peer-v4-s"), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("peer-v4-s (-want +got):\n%s", diff)
			}
		})
	}
}
