package nft_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/agent"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/nft"
)

// TestRuleMetricsAt10kRules programs 10,000 rules as agents compile them,
// one run of sets, sends connections that two neighbouring rules deep
// inside the run accept, and reads the agent's per-rule metrics: each of
// the two counts exactly its own packets, and the last rule, which covers
// their ports too, counts only the packet neither matches.
func TestRuleMetricsAt10kRules(t *testing.T) {
	const n, deep = 10000, 7777
	pair := netnstest.NewTestPair(t)
	client, host := pair.Client, pair.Host
	p, err := nft.New(host.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	port := func(i int) uint16 { return uint16(20000 + i) }
	if _, err := host.ServeTCP(port(deep), port(deep+1)); err != nil {
		t.Fatal(err)
	}
	const other = "192.0.2.99"
	if err := client.AddAddr("eth0", other+"/24"); err != nil {
		t.Fatal(err)
	}
	// Resolve the neighbours before counting: a SYN sent again while
	// they resolve would count twice.
	for _, src := range []string{netnstest.ClientV4.String(), other} {
		if v, err := netnstest.ProbeTCP(client, netnstest.HostV4, 9, netnstest.WithSource(netip.MustParseAddr(src))); err != nil || v != netnstest.Rejected {
			t.Fatalf("from %s before the firewall: %v %v", src, v, err)
		}
	}
	spec := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop}}
	for i := range n {
		r := v1alpha1.NodeFirewallRule{Policy: "many", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput,
			Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: int32(port(i))}}}
		switch {
		case i == n-1:
			// Covers the deep rules' ports, too late to count them.
			r.Ports = []v1alpha1.PortRange{{Port: int32(port(deep - 10)), EndPort: int32(port(deep + 10))}}
		case i == deep:
			// Any source.
		case i == deep+1:
			r.Sources = []string{netnstest.ClientV4.String(), "2001:db8:1::/64"}
		case i%3 == 1:
			r.Sources = []string{fmt.Sprintf("10.%d.%d.0/24", i/256%256, i%256)}
		case i%3 == 2:
			r.Sources = []string{netnstest.ClientV4.String(), fmt.Sprintf("2001:db8:%x::/48", i)}
		}
		spec.Rules = append(spec.Rules, r)
	}
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true, FailsafeInbound: compile.DefaultFailsafeInbound()})
	if err != nil {
		t.Fatal(err)
	}
	if rs.RuleCount() > 50 {
		t.Fatalf("%d nftables rules: the rules did not become a run", rs.RuleCount())
	}
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		netnstest.ExpectTCP(t, client, netnstest.HostV4, port(deep), netnstest.Accepted)
	}
	for range 2 {
		netnstest.ExpectTCP(t, client, netnstest.HostV4, port(deep+1), netnstest.Accepted)
	}
	// From another source, the deep rule does not match: the wide rule,
	// last of the run, accepts and counts it.
	netnstest.ExpectTCP(t, client, netnstest.HostV4, port(deep+1), netnstest.Accepted,
		netnstest.WithSource(netip.MustParseAddr(other)))

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(agent.NewRuleCounters(p.Counters))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "nodefw_agent_rule_packets_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "rule" && m.GetCounter().GetValue() > 0 {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	want := map[string]float64{fmt.Sprintf("many/r%d", deep): 5, fmt.Sprintf("many/r%d", deep+1): 2, fmt.Sprintf("many/r%d", n-1): 1}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s counted %v packets, want %v", name, got[name], v)
		}
	}
	for name, v := range got {
		if _, ok := want[name]; !ok && name != "nodefw: established,related" && name != "nodefw: loopback" {
			t.Errorf("%s counted %v packets, want none", name, v)
		}
	}
}
