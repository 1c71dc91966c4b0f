package diff

import (
	"fmt"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// TestLimitsInSequence compares the rate limits of both sides past their
// burst: the same probes, one after the other, must get the same verdicts
// from -m limit and -m hashlimit as from the agent's limits and meters.
// The rates are so low (one a minute) that no token comes back while the
// probes run, so the verdicts depend only on the order, which is the same
// on both sides. The ports are the test's own: a packet of an earlier
// test's connection, arriving after the flush of conntrack, would be new
// and take a token.
func TestLimitsInSequence(t *testing.T) {
	tp := env(t)
	const webPort, dnsPort = 4190, 4191
	if err := tp.serveExtraPorts([]uint16{webPort, dnsPort}); err != nil {
		t.Fatal(err)
	}
	in := v1alpha1.ChainInput
	rule := func(name string, action v1alpha1.Action, proto v1alpha1.Protocol, edit func(r *v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallRule {
		r := v1alpha1.NodeFirewallRule{Policy: "limits", Mode: v1alpha1.PolicyModeEnforce, Name: name, Chain: in, Action: action, Protocol: proto}
		edit(&r)
		return r
	}
	minute := v1alpha1.RateUnitMinute
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			rule("ping", v1alpha1.ActionAccept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"}
				r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: minute, Burst: 3, PerSource: true}
			}),
			rule("ping-over", v1alpha1.ActionReject, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
				r.RejectWith = v1alpha1.RejectWithAdminProhibited
			}),
			rule("ping6", v1alpha1.ActionAccept, v1alpha1.ProtocolICMPv6, func(r *v1alpha1.NodeFirewallRule) {
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"}
				r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: minute, Burst: 2, PerSource: true}
			}),
			rule("web", v1alpha1.ActionAccept, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: webPort}}
				r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: minute, Burst: 4}
			}),
			rule("dns", v1alpha1.ActionAccept, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: dnsPort}}
				r.SourcePorts = []v1alpha1.SourcePortRange{{Port: sourceFirst, EndPort: sourceLast}}
				r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: minute, Burst: 2, PerSource: true}
			}),
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}
	c := newRuleCase("limits in sequence", spec)
	if err := tp.load(c); err != nil {
		t.Fatalf("loading:\n%s\n%v", describe(c), err)
	}
	var probes []probe
	for _, src := range clientV4[:3] {
		for range 5 {
			probes = append(probes, probe{chain: in, msg: netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 8}, from: client, to: router, src: src, dst: routerClientV4})
		}
	}
	for _, src := range clientV6 {
		for range 4 {
			probes = append(probes, probe{chain: in, msg: netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: 128}, from: client, to: router, src: src, dst: routerClientV6})
		}
	}
	for i := range 6 {
		probes = append(probes, probe{chain: in, proto: v1alpha1.ProtocolTCP, from: client, to: router, src: clientV4[i%2], dst: routerClientV4, port: webPort})
	}
	for _, src := range clientV4[:2] {
		for i := range 4 {
			probes = append(probes, probe{chain: in, proto: v1alpha1.ProtocolUDP, from: client, to: router, src: src, dst: routerClientV4, port: dnsPort, sport: uint16(sourceFirst + i)})
		}
	}
	got := map[string][]netnstest.Verdict{}
	for _, s := range []*side{tp.ipt, tp.nfw} {
		for _, p := range probes {
			v, err := s.run(p, *confirmFlag)
			if err != nil {
				t.Fatalf("%s: %v: %v", s.name, p, err)
			}
			got[s.name] = append(got[s.name], v)
		}
	}
	accepted := 0
	for i, p := range probes {
		ipt, nfw := got[tp.ipt.name][i], got[tp.nfw.name][i]
		if ipt != nfw {
			t.Errorf("probe %d, %v: iptables %v, nodefw %v", i, p, ipt, nfw)
		}
		if nfw == netnstest.Accepted {
			accepted++
		}
	}
	// Each source's bucket: 3 pings of 5 from each of 3 sources, 2 of 4
	// from each of 2 IPv6 sources, 4 of 6 connections of the rule, 2 of 4
	// datagrams from each of 2 sources.
	if want := 3*3 + 2*2 + 4 + 2*2; accepted != want {
		t.Errorf("%d probes accepted, want %d (the buckets' bursts)\n%s", accepted, want, fmt.Sprint(got))
	}
	if t.Failed() {
		t.Log(describe(c))
	}
}
