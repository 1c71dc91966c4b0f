package resolve

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

func TestFailsafeShadows(t *testing.T) {
	in, out := compile.DefaultFailsafeInbound(), compile.DefaultFailsafeOutbound()
	tests := []struct {
		name string
		rule fwv1.Rule
		want []string
	}{
		{"accept never shadows", fwv1.Rule{Name: "ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 22}}}, nil},
		{"drop of ssh", fwv1.Rule{Name: "no-ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 22}}},
			[]string{"spec.rules[0] (no-ssh) would drop failsafe port(s) tcp:22, which nodes accept before any rule"}},
		{"range over etcd", fwv1.Rule{Name: "low", Chain: fwv1.ChainInput, Action: fwv1.ActionReject, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 2000, EndPort: 2379}}},
			[]string{"spec.rules[0] (low) would reject failsafe port(s) tcp:2379-2380, which nodes accept before any rule"}},
		{"udp drop misses tcp failsafes", fwv1.Rule{Name: "udp", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolUDP, Ports: []fwv1.PortRange{{Port: 6443}}}, nil},
		{"drop everything outbound", fwv1.Rule{Name: "all", Chain: fwv1.ChainOutput, Action: fwv1.ActionDrop},
			[]string{"spec.rules[0] (all) would drop failsafe port(s) udp:53, tcp:53, tcp:6443, udp:67-68, which nodes accept before any rule"}},
		{"prerouting drop of the kubelet", fwv1.Rule{Name: "pre", Chain: fwv1.ChainPreRouting, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 10000, EndPort: 32767}}},
			[]string{"spec.rules[0] (pre) would drop failsafe port(s) tcp:10250, which nodes accept before any rule"}},
		{"forward has no failsafes", fwv1.Rule{Name: "fwd", Chain: fwv1.ChainForward, Action: fwv1.ActionDrop}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: fwv1.NodeFirewallPolicySpec{Rules: []fwv1.Rule{tc.rule}}}
			var got []string
			for _, pr := range Resolve(Input{Policies: []fwv1.NodeFirewallPolicy{*p}, Failsafes: Failsafes{Inbound: in, Outbound: out}}).Problems {
				got = append(got, pr.Message)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestFailsafeShadowsByAddress: a rule shadows a failsafe restricted to
// addresses only when its sources and the failsafe's, and its
// destinations and the failsafe's, have addresses in common, list by
// list.
func TestFailsafeShadowsByAddress(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	etcd := compile.Failsafe{Protocol: fwv1.ProtocolTCP, Ports: compile.PortInterval{First: 2379, Last: 2380}, Sources: pfx("10.0.0.0/24", "2001:db8::/64")}
	toDNS := compile.Failsafe{Protocol: fwv1.ProtocolUDP, Ports: compile.PortInterval{First: 53, Last: 53}, Destinations: pfx("10.96.0.10/32")}
	v6Both := compile.Failsafe{Protocol: fwv1.ProtocolTCP, Ports: compile.PortInterval{First: 22, Last: 22}, Sources: pfx("2001:db8::/32"), Destinations: pfx("2001:db8:1::/48")}
	drop := func(sources, destinations []string) fwv1.Rule {
		return fwv1.Rule{Name: "r", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Sources: sources, Destinations: destinations}
	}
	tests := []struct {
		name string
		rule fwv1.Rule
		fs   compile.Failsafe
		want bool
	}{
		{"no addresses covers the failsafe's", drop(nil, nil), etcd, true},
		{"a source inside the failsafe's", drop([]string{"10.0.0.7"}, nil), etcd, true},
		{"a source around the failsafe's", drop([]string{"10.0.0.0/8"}, nil), etcd, true},
		{"a source elsewhere", drop([]string{"10.0.1.0/24"}, nil), etcd, false},
		{"an IPv6 source inside", drop([]string{"2001:db8::5"}, nil), etcd, true},
		{"an IPv6 source elsewhere", drop([]string{"2001:db9::/32"}, nil), etcd, false},
		{"a host-bits CIDR is its network", drop([]string{"10.0.0.99/24"}, nil), etcd, true},
		{"destinations the failsafe does not restrict", drop(nil, []string{"192.0.2.1"}), etcd, true},
		{"only IPv6 destinations, failsafe IPv4 destinations", drop(nil, []string{"2001:db8::1"}), toDNS, false},
		{"the failsafe's destination", drop([]string{"192.0.2.1"}, []string{"10.96.0.0/16"}), toDNS, true},
		{"IPv4 sources against an IPv6-only failsafe", drop([]string{"10.0.0.0/8"}, nil), v6Both, false},
		{"IPv6 sources and destinations inside", drop([]string{"2001:db8:5::1"}, []string{"2001:db8:1::1"}), v6Both, true},
		{"IPv6 sources inside, destinations elsewhere", drop([]string{"2001:db8:5::1"}, []string{"2001:db8:2::1"}), v6Both, false},
		{"IPv4 sources with IPv6 destinations", drop([]string{"10.0.0.1"}, []string{"2001:db8:1::1"}), v6Both, false},
		{"list by list: IPv4 sources meet a failsafe's IPv6 destinations", drop([]string{"10.0.0.1"}, nil),
			compile.Failsafe{Protocol: fwv1.ProtocolUDP, Ports: compile.PortInterval{First: 53, Last: 53}, Destinations: pfx("2001:db8::53/128")}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rule
			r.Protocol = tc.fs.Protocol
			if got := shadows(r, tc.fs); got != tc.want {
				t.Errorf("shadows(%+v, %v) = %v, want %v", r, tc.fs, got, tc.want)
			}
		})
	}
}

// TestFailsafeShadowsByPeers: a rule on peers is restricted to their
// addresses, which are not in the policy: it shadows a failsafe that takes
// every address on that side, and not one restricted to addresses,
// whatever the peers hold; its literal side is compared as ever.
func TestFailsafeShadowsByPeers(t *testing.T) {
	pfx := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	ssh := compile.Failsafe{Protocol: fwv1.ProtocolTCP, Ports: compile.PortInterval{First: 22, Last: 22}}
	etcd := compile.Failsafe{Protocol: fwv1.ProtocolTCP, Ports: compile.PortInterval{First: 2379, Last: 2380}, Sources: pfx("10.0.0.0/24")}
	toDNS := compile.Failsafe{Protocol: fwv1.ProtocolUDP, Ports: compile.PortInterval{First: 53, Last: 53}, Destinations: pfx("10.96.0.10/32")}
	controlPlane := []fwv1.Peer{{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}}}
	blocklist := []fwv1.Peer{{AddressSet: "blocklist", Except: []string{"10.0.0.0/24"}}}
	tests := []struct {
		name string
		rule fwv1.Rule
		fs   compile.Failsafe
		want bool
	}{
		{"from peers, failsafe from anywhere", fwv1.Rule{From: blocklist}, ssh, true},
		{"from node peers, failsafe from anywhere", fwv1.Rule{From: controlPlane}, ssh, true},
		{"to peers, failsafe to anywhere", fwv1.Rule{To: controlPlane}, ssh, true},
		{"from peers, failsafe from addresses", fwv1.Rule{From: controlPlane}, etcd, false},
		{"from an address set, failsafe from addresses", fwv1.Rule{From: blocklist}, etcd, false},
		{"to peers, failsafe to addresses", fwv1.Rule{To: blocklist}, toDNS, false},
		{"from peers, failsafe to addresses: sources meet, destinations unset", fwv1.Rule{From: blocklist}, toDNS, true},
		{"from peers, literal destinations inside the failsafe's", fwv1.Rule{From: blocklist, Destinations: []string{"10.96.0.0/16"}}, toDNS, true},
		{"from peers, literal destinations elsewhere", fwv1.Rule{From: blocklist, Destinations: []string{"10.97.0.0/16"}}, toDNS, false},
		{"literal sources inside, to peers against a failsafe from addresses", fwv1.Rule{Sources: []string{"10.0.0.5"}, To: controlPlane}, etcd, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rule
			r.Name, r.Chain, r.Action, r.Protocol = "r", fwv1.ChainInput, fwv1.ActionDrop, tc.fs.Protocol
			if got := shadows(r, tc.fs); got != tc.want {
				t.Errorf("shadows(%+v, %v) = %v, want %v", r, tc.fs, got, tc.want)
			}
		})
	}
}
