package reference

import (
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// TestPeersSpecAgreesWithRuleset: for rules with peers, the reference
// semantics and the compiled ruleset decide every packet alike, whatever
// the sets hold, and a trace names the peer a packet fails.
func TestPeersSpecAgreesWithRuleset(t *testing.T) {
	cp := v1alpha1.Peer{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "cp"}}, Except: []string{"10.0.0.13", "fd00::13"}}
	pods := v1alpha1.Peer{PodCIDRs: &metav1.LabelSelector{}, Except: []string{"10.244.1.0/28"}}
	cpName, _ := cp.SetName()
	podsName, _ := pods.SetName()
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			{Policy: "p", Name: "block", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, From: []v1alpha1.Peer{{AddressSet: "block"}}},
			{Policy: "p", Name: "etcd", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP,
				Ports: []v1alpha1.PortRange{{Port: 2379, EndPort: 2380}}, From: []v1alpha1.Peer{cp, pods}},
			{Policy: "p", Name: "pods", Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionAccept,
				From: []v1alpha1.Peer{pods}, To: []v1alpha1.Peer{cp, {AddressSet: "missing"}}},
			{Policy: "p", Name: "v6-only", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionReject,
				To: []v1alpha1.Peer{{AddressSet: "block"}}, Sources: []string{"fd00::/8"}},
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyDrop, Output: v1alpha1.ChainPolicyAccept},
	}
	pfx := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, a := range s {
			p, err := v1alpha1.ParseAddress(a)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	opts := compile.Options{SetLookups: true, AddressSets: compile.AddressSets{
		cpName:   pfx("10.0.0.11", "10.0.0.12", "10.0.0.13", "fd00::11", "fd00::13"),
		podsName: pfx("10.244.0.0/24", "10.244.1.0/24", "fd01::/64"),
		"block":  pfx("10.0.0.12", "203.0.113.0/24", "fd00::11"),
	}}
	rs, err := compile.Compile(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{"10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14", "10.244.0.9", "10.244.1.5", "10.244.1.200", "203.0.113.9",
		"fd00::11", "fd00::13", "fd01::5", "2001:db8::1"}
	n := 0
	for _, s := range addrs {
		for _, d := range addrs {
			sa, da := netip.MustParseAddr(s), netip.MustParseAddr(d)
			if sa.Is4() != da.Is4() {
				continue
			}
			fam := compile.FamilyIPv4
			if sa.Is6() {
				fam = compile.FamilyIPv6
			}
			for _, port := range []uint16{22, 2379} {
				p := Packet{Family: fam, SAddr: sa, DAddr: da, L4Proto: 6, Transport: true, DPort: port, CtState: compile.CtStateNew, IIfName: "eth0", OIfName: "eth1"}
				for _, c := range []v1alpha1.Chain{v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput} {
					q := p
					if c == v1alpha1.ChainInput {
						q.OIfName = ""
					}
					if c == v1alpha1.ChainOutput {
						q.IIfName = ""
					}
					want := EvalSpec(spec, opts, c, q)
					got := EvalRuleset(rs, string(strings.ToLower(string(c))), q)
					if want != got {
						t.Errorf("%s %s -> %s:%d: spec says %s, ruleset %s", c, s, d, port, want, got)
					}
					n++
				}
			}
		}
	}
	// The spot checks: the except, and a peer that matches nothing.
	for _, tc := range []struct {
		chain      v1alpha1.Chain
		src, dst   string
		port       uint16
		want       compile.Verdict
		wantFailed string
	}{
		{v1alpha1.ChainInput, "10.0.0.11", "10.0.0.1", 2379, compile.VerdictAccept, ""},
		{v1alpha1.ChainInput, "10.0.0.13", "10.0.0.1", 2379, compile.VerdictDrop, "from"},
		{v1alpha1.ChainInput, "10.0.0.12", "10.0.0.1", 2379, compile.VerdictDrop, ""},
		{v1alpha1.ChainInput, "10.244.1.5", "10.0.0.1", 2379, compile.VerdictDrop, "from"},
		{v1alpha1.ChainInput, "10.244.1.200", "10.0.0.1", 2379, compile.VerdictAccept, ""},
		{v1alpha1.ChainForward, "10.244.0.9", "10.0.0.14", 22, compile.VerdictDrop, "to"},
	} {
		sa, da := netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst)
		p := Packet{Family: compile.FamilyIPv4, SAddr: sa, DAddr: da, L4Proto: 6, Transport: true, DPort: tc.port, CtState: compile.CtStateNew}
		tr := TraceSpec(spec, opts, tc.chain, p)
		if tr.Verdict != tc.want {
			t.Errorf("%s %s -> %s: %s, want %s", tc.chain, tc.src, tc.dst, tr.Verdict, tc.want)
		}
		if tc.wantFailed == "" {
			continue
		}
		found := false
		for _, s := range tr.Steps {
			if s.Mismatch != nil && s.Mismatch.Field == tc.wantFailed && strings.Contains(s.Mismatch.Want, "NodeFirewallAddressSet") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s %s -> %s: no step fails on %s naming the set: %+v", tc.chain, tc.src, tc.dst, tc.wantFailed, tr.Steps)
		}
	}
	t.Logf("%d packets agree", n)
}

func TestSubtractPrefixes(t *testing.T) {
	got := subtractPrefixes(netip.MustParsePrefix("10.0.0.0/30"), []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00::/8")})
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/32"), netip.MustParsePrefix("10.0.0.2/31")}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("10.0.0.0/30 less 10.0.0.1 = %v, want %v", got, want)
	}
	if got := subtractPrefixes(netip.MustParsePrefix("10.0.0.4/32"), []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}); len(got) != 0 {
		t.Errorf("covered prefix left %v", got)
	}
	if got := subtractPrefixes(netip.MustParsePrefix("fd00::/127"), []netip.Prefix{netip.MustParsePrefix("fd00::1/128")}); len(got) != 1 || got[0] != netip.MustParsePrefix("fd00::/128") {
		t.Errorf("fd00::/127 less fd00::1 = %v", got)
	}
}
