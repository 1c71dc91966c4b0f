package nft

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/google/nftables"
	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// peersSpec accepts TCP 8080 from the address set "clients" and from the
// pod CIDRs of every node less one address, and drops the rest of Input.
func peersSpec() (v1alpha1.NodeFirewallSpec, string) {
	pods := v1alpha1.Peer{PodCIDRs: &metav1.LabelSelector{}, Except: []string{"10.244.1.1", "fd01::1"}}
	podsSet, _ := pods.SetName()
	return v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			{Policy: "p", Name: "clients", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP,
				Ports: []v1alpha1.PortRange{{Port: 8080}}, From: []v1alpha1.Peer{{AddressSet: "clients"}, pods}},
			{Policy: "p", Name: "excepts", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, Protocol: v1alpha1.ProtocolUDP,
				From: []v1alpha1.Peer{{AddressSet: "clients", Except: []string{"10.100.0.0/23", "10.100.5.5", "2001:db8:ff00::/17"}}}},
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}, podsSet
}

// filler is n prefixes of both families, from offset on, that no probe
// comes from: they make each set large, and each update touch many
// elements.
func filler(n, offset int) []netip.Prefix {
	out := make([]netip.Prefix, 0, n)
	for i := offset; i < offset+n; i++ {
		if i%2 == 0 {
			out = append(out, netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.%d/32", 100+i/65536, i/256%256, i%256)))
			continue
		}
		out = append(out, netip.MustParsePrefix(fmt.Sprintf("2001:db8:ff%02x:%x::/64", i/65536, i%65536)))
	}
	return out
}

func compilePeers(t *testing.T, spec v1alpha1.NodeFirewallSpec, sets compile.AddressSets) *compile.Ruleset {
	t.Helper()
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true, AddressSets: sets})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestPeerSetsParityWithRender: the netlink encoding of peer sets and
// their lookups is what `nft -f` makes of the rendered ruleset.
func TestPeerSetsParityWithRender(t *testing.T) {
	spec, pods := peersSpec()
	parity(t, compilePeers(t, spec, compile.AddressSets{
		"clients": append(filler(40, 0), netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("255.255.255.0/24")),
		pods:      {netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd01::/48")},
	}))
}

// TestPeerSetsElementUpdates changes the contents of peer sets of both
// families, big ones, while probes run: every change is one transaction
// of set elements, never a rewrite; a client whose address stays in a set
// is never refused, and one that leaves it is dropped from the next
// update on.
func TestPeerSetsElementUpdates(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	client, host := pair.Client, pair.Host
	p, err := New(host.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := host.ServeTCP(8080); err != nil {
		t.Fatal(err)
	}
	// Two more client addresses per family, which join and leave the set.
	movingV4, movingV6 := netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8:1::11")
	if err := client.AddAddr("eth0", "192.0.2.11/24", "2001:db8:1::11/64"); err != nil {
		t.Fatal(err)
	}
	// Neighbours resolved before any probe counts, while nothing drops.
	for _, dst := range []netip.Addr{netnstest.HostV4, netnstest.HostV6} {
		if err := netnstest.WaitReachable(client, dst, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	spec, pods := peersSpec()
	version := func(v int) *compile.Ruleset {
		clients := append(filler(20000, 1000*v), netip.PrefixFrom(netnstest.ClientV4, 32), netip.PrefixFrom(netnstest.ClientV6, 128))
		if v%2 == 1 {
			clients = append(clients, netip.PrefixFrom(movingV4, 32), netip.PrefixFrom(movingV6, 128))
		}
		podCIDRs := filler(100, 50000+v)
		return compilePeers(t, spec, compile.AddressSets{"clients": clients, pods: podCIDRs})
	}
	first, err := p.Apply(version(0))
	if err != nil {
		t.Fatal(err)
	}
	if first.Incremental {
		t.Fatalf("first apply: %+v", first)
	}
	mustInSync(t, p, version(0), true)
	// The client's first addresses, named: the kernel may pick a moving
	// one as the source otherwise.
	staying := map[netip.Addr]netnstest.ProbeOption{
		netnstest.HostV4: netnstest.WithSource(netnstest.ClientV4),
		netnstest.HostV6: netnstest.WithSource(netnstest.ClientV6),
	}
	for dst, src := range staying {
		netnstest.ExpectTCP(t, client, dst, 8080, netnstest.Accepted, src)
	}
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8080, netnstest.Dropped, netnstest.WithSource(movingV4))
	netnstest.ExpectTCP(t, client, netnstest.HostV6, 8080, netnstest.Dropped, netnstest.WithSource(movingV6))

	var stop atomic.Bool
	var probes, bad atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			dst := netnstest.HostV4
			if w%2 == 1 {
				dst = netnstest.HostV6
			}
			for !stop.Load() {
				if v, err := netnstest.ProbeTCP(client, dst, 8080, staying[dst], netnstest.WithTimeout(2*time.Second)); err != nil || v != netnstest.Accepted {
					t.Errorf("a client that stays in the set, during an update: %v %v", v, err)
					bad.Add(1)
				}
				probes.Add(1)
			}
		})
	}
	for v := 1; v <= 6; v++ {
		rs := version(v)
		st, err := p.Apply(rs)
		if err != nil {
			t.Error(err)
			break
		}
		if !st.Incremental || st.Batches != 1 || st.ElementsAdded == 0 || st.ElementsDeleted == 0 {
			t.Errorf("version %d: %+v, want one batch of elements added and deleted", v, st)
		}
		mustInSync(t, p, rs, true)
		want := netnstest.Dropped
		if v%2 == 1 {
			want = netnstest.Accepted
		}
		netnstest.ExpectTCP(t, client, netnstest.HostV4, 8080, want, netnstest.WithSource(movingV4))
		netnstest.ExpectTCP(t, client, netnstest.HostV6, 8080, want, netnstest.WithSource(movingV6))
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d probes during 6 updates, %d refused", probes.Load(), bad.Load())
}

// TestPeerSetsDiffIntervals: intervals that stay keep their elements;
// one that grows is deleted and added whole.
func TestPeerSetsDiffIntervals(t *testing.T) {
	set := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, a := range s {
			out = append(out, netip.MustParsePrefix(a))
		}
		return out
	}
	encode := func(ps []netip.Prefix) *plan {
		pl := &plan{byName: map[string]int{}}
		if err := pl.encodePeerSet(&compile.PeerSet{Name: "s", Family: compile.FamilyIPv4, Prefixes: ps}); err != nil {
			t.Fatal(err)
		}
		return pl
	}
	have := encode(set("10.0.0.0/24", "10.0.2.0/24", "255.255.255.0/24"))
	want := encode(set("10.0.0.0/24", "10.0.2.0/23", "10.0.9.9/32", "255.255.255.0/24"))
	add, del := diffIntervals(have.named[0].elems, want.named[0].elems)
	// 10.0.2.0/24 became 10.0.2.0/23: that interval is replaced; 10.0.9.9
	// is new; the others stay.
	if len(del) != 2 || len(add) != 4 {
		t.Errorf("add %v, del %v", add, del)
	}
	// Read back from the kernel in reverse order, nothing differs.
	rev := append([]nftables.SetElement(nil), have.named[0].elems...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if add, del := diffIntervals(rev, have.named[0].elems); len(add)+len(del) != 0 {
		t.Errorf("reordered: add %v, del %v", add, del)
	}
}
