package compile

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

func peerPrefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, a := range s {
		p, err := parseAddress(a)
		if err != nil {
			panic(err)
		}
		out[i] = p
	}
	return out
}

// peerSpec has a rule from the control-plane nodes less one address to
// the pod CIDRs, and one to a user's set over TCP.
func peerSpec() (v1alpha1.NodeFirewallSpec, string, string) {
	cp := v1alpha1.Peer{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpExists}}},
		Except: []string{"10.0.0.13", "fd00::13"}}
	pods := v1alpha1.Peer{PodCIDRs: &metav1.LabelSelector{}}
	cpName, _ := cp.SetName()
	podsName, _ := pods.SetName()
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			{Policy: "p", Name: "cp-to-pods", Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionAccept,
				From: []v1alpha1.Peer{cp}, To: []v1alpha1.Peer{pods}},
			{Policy: "p", Name: "blocklist", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, Protocol: v1alpha1.ProtocolTCP,
				From: []v1alpha1.Peer{{AddressSet: "blocklist"}, {AddressSet: "missing"}}},
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyAccept, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}
	return spec, cpName, podsName
}

func TestCompilePeers(t *testing.T) {
	spec, cp, pods := peerSpec()
	sets := AddressSets{
		cp:          peerPrefixes("10.0.0.12", "10.0.0.11", "fd00::11"),
		pods:        peerPrefixes("10.244.0.0/24", "10.244.1.0/24", "10.244.1.0/25"),
		"blocklist": peerPrefixes("203.0.113.0/24", "2001:db8::/48"),
	}
	if diff := cmp.Diff([]string{"blocklist", "missing", cp, pods}, AddressSetNames(spec)); diff != "" {
		t.Errorf("AddressSetNames (-want +got):\n%s", diff)
	}
	rs, err := Compile(spec, Options{SetLookups: true, AddressSets: sets})
	if err != nil {
		t.Fatal(err)
	}
	out := Render(rs)
	for _, want := range []string{
		"\tset peer-v4-" + cp + " {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {\n\t\t\t10.0.0.11,\n\t\t\t10.0.0.12\n\t\t}\n\t}\n",
		"\tset peer-v6-" + pods + " {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t}\n",
		"\tset peer-v4-" + pods + " {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {\n\t\t\t10.244.0.0/24,\n\t\t\t10.244.1.0/24\n\t\t}\n\t}\n",
		"\t\tip saddr @peer-v4-" + cp + " ip saddr != 10.0.0.13 ip daddr @peer-v4-" + pods + " counter accept comment \"p/cp-to-pods\"\n",
		"\t\tip6 saddr @peer-v6-" + cp + " ip6 saddr != fd00::13 ip6 daddr @peer-v6-" + pods + " counter accept comment \"p/cp-to-pods\"\n",
		"\t\tip saddr @peer-v4-blocklist meta l4proto tcp counter drop comment \"p/blocklist\"\n",
		"\t\tip saddr @peer-v4-missing meta l4proto tcp counter drop comment \"p/blocklist\"\n",
		"\t\tip6 saddr @peer-v6-missing meta l4proto tcp counter drop comment \"p/blocklist\"\n",
		"\tset peer-v6-missing {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t}\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("render lacks\n%s\nin\n%s", want, out)
		}
	}

	// Other contents change the sets' elements, never a rule.
	sets[cp] = peerPrefixes("10.0.0.11", "10.0.0.14", "fd00::11")
	delete(sets, "blocklist")
	other, err := Compile(spec, Options{SetLookups: true, AddressSets: sets})
	if err != nil {
		t.Fatal(err)
	}
	if rs.Equal(other) {
		t.Fatal("other set contents compile to the same ruleset")
	}
	before, after := *rs, *other
	before.PeerSets, after.PeerSets = nil, nil
	if !before.Equal(&after) {
		t.Errorf("other set contents changed rules:\n%s\nthen\n%s", Render(rs), Render(other))
	}
	names := func(r *Ruleset) []string {
		var out []string
		for _, s := range r.PeerSets {
			out = append(out, s.Name)
		}
		return out
	}
	if !slices.Equal(names(rs), names(other)) {
		t.Errorf("peer sets %v, then %v: want the same sets", names(rs), names(other))
	}
}

// TestCompilePeersFamilies: a protocol or literal addresses of one family
// keep a rule with peers to that family.
func TestCompilePeersFamilies(t *testing.T) {
	spec := v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
		{Policy: "p", Name: "icmp", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMP,
			From: []v1alpha1.Peer{{AddressSet: "a"}}},
		{Policy: "p", Name: "to-v6", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionAccept,
			From: []v1alpha1.Peer{{AddressSet: "a"}}, Destinations: []string{"fd00::/8"}},
	}}
	rs, err := Compile(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range rs.PeerSets {
		got = append(got, s.Name)
	}
	if diff := cmp.Diff([]string{"peer-v4-a", "peer-v6-a"}, got); diff != "" {
		t.Errorf("peer sets (-want +got):\n%s", diff)
	}
	out := Render(rs)
	if strings.Contains(out, "ip6 saddr @peer-v6-a meta l4proto icmp") || strings.Contains(out, "ip saddr @peer-v4-a ip daddr") {
		t.Errorf("a rule in a family it cannot match:\n%s", out)
	}
}

func TestValidatePeers(t *testing.T) {
	base := func() v1alpha1.NodeFirewallRule {
		return v1alpha1.NodeFirewallRule{Policy: "p", Name: "r", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept}
	}
	cases := []struct {
		name string
		edit func(r *v1alpha1.NodeFirewallRule)
		want string
	}{
		{"no kind", func(r *v1alpha1.NodeFirewallRule) { r.From = []v1alpha1.Peer{{}} },
			"rules[0].from[0]: a peer sets exactly one of nodeSelector, podCIDRs and addressSet"},
		{"two kinds", func(r *v1alpha1.NodeFirewallRule) {
			r.To = []v1alpha1.Peer{{AddressSet: "a", PodCIDRs: &metav1.LabelSelector{}}}
		}, "rules[0].to[0]: a peer sets exactly one of nodeSelector, podCIDRs and addressSet"},
		{"bad selector", func(r *v1alpha1.NodeFirewallRule) {
			r.From = []v1alpha1.Peer{{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}}
		}, "rules[0].from[0]: selector:"},
		{"bad except", func(r *v1alpha1.NodeFirewallRule) { r.From = []v1alpha1.Peer{{AddressSet: "a", Except: []string{"x"}}} },
			"rules[0].from[0].except[0]:"},
		{"bad set name", func(r *v1alpha1.NodeFirewallRule) { r.From = []v1alpha1.Peer{{AddressSet: "A_b"}} },
			"rules[0].from[0].addressSet:"},
		{"with sources", func(r *v1alpha1.NodeFirewallRule) {
			r.From, r.Sources = []v1alpha1.Peer{{AddressSet: "a"}}, []string{"10.0.0.1"}
		}, "rules[0].from: a rule takes sources or from, not both"},
		{"addressType on podCIDRs", func(r *v1alpha1.NodeFirewallRule) {
			r.From = []v1alpha1.Peer{{PodCIDRs: &metav1.LabelSelector{}, AddressType: v1alpha1.NodeAddressExternalIP}}
		}, "rules[0].from[0].addressType: addressType requires nodeSelector"},
		{"limit with two peers", func(r *v1alpha1.NodeFirewallRule) {
			r.From = []v1alpha1.Peer{{AddressSet: "a"}, {AddressSet: "b"}}
			r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: v1alpha1.RateUnitSecond}
		}, "rules[0]: limit and connLimit take at most one peer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.edit(&r)
			_, err := Compile(v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{r}}, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
