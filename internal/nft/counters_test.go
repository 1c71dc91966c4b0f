package nft

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// countersSpec is one run of Input rules that become counting sets: rules
// with ports, a rule without ports ahead of them that takes some of their
// packets, and a rule that the others shadow.
func countersSpec() v1alpha1.NodeFirewallSpec {
	rule := func(name string, src string, ports ...v1alpha1.PortRange) v1alpha1.NodeFirewallRule {
		r := v1alpha1.NodeFirewallRule{Policy: "count", Name: name, Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
			Protocol: v1alpha1.ProtocolTCP, Ports: ports}
		if src != "" {
			r.Sources = []string{src}
		}
		return r
	}
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			rule("admin", "192.0.2.50"),
			rule("p7001", "", v1alpha1.PortRange{Port: 7001}),
			rule("p7002", "", v1alpha1.PortRange{Port: 7002}),
			rule("p7003", "", v1alpha1.PortRange{Port: 7003}),
			rule("p7004", "", v1alpha1.PortRange{Port: 7004}),
			rule("wide", "", v1alpha1.PortRange{Port: 7001, EndPort: 7004}),
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop},
	}
	for i := range 4 {
		spec.Rules = append(spec.Rules, rule(fmt.Sprintf("pad-%d", i), "", v1alpha1.PortRange{Port: int32(7101 + i)}))
	}
	return spec
}

// ruleCounts sums the counters the programmer reads by rule.
func ruleCounts(t *testing.T, p *Programmer) (packets, bytes map[string]uint64) {
	t.Helper()
	counts, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	packets, bytes = map[string]uint64{}, map[string]uint64{}
	for _, c := range counts {
		packets[c.Comment] += c.Packets
		bytes[c.Comment] += c.Bytes
	}
	return packets, bytes
}

// TestRunCountersPerRule sends real packets that different rules of one
// run decide, and checks that each rule's own counter counted exactly
// them: a new TCP connection is one packet on Input (the SYN), the rest
// of it is established.
func TestRunCountersPerRule(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	client, host := pair.Client, pair.Host
	p, err := New(host.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := host.ServeTCP(7001, 7002, 7003, 7004); err != nil {
		t.Fatal(err)
	}
	const admin = "192.0.2.50"
	if err := client.AddAddr("eth0", admin+"/24"); err != nil {
		t.Fatal(err)
	}
	// Resolve the neighbours before counting: a SYN sent again while
	// they resolve would count twice.
	for _, src := range []string{netnstest.ClientV4.String(), admin} {
		if v, err := netnstest.ProbeTCP(client, netnstest.HostV4, 9, netnstest.WithSource(netip.MustParseAddr(src))); err != nil || v != netnstest.Rejected {
			t.Fatalf("from %s before the firewall: %v %v", src, v, err)
		}
	}
	if err := netnstest.WaitReachable(client, netnstest.HostV6, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	spec := countersSpec()
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	lookups := 0
	for _, r := range rs.Chains[0].Rules {
		if r.Lookup != "" {
			lookups++
			if r.Counter || !rs.Set(r.Lookup).Counter {
				t.Fatalf("lookup %s: want counting elements and no rule counter", r.Lookup)
			}
		}
	}
	if lookups == 0 {
		t.Fatalf("no run:\n%s", compile.Render(rs))
	}
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	connect := func(dst netip.Addr, port uint16, n int, opts ...netnstest.ProbeOption) {
		t.Helper()
		for range n {
			netnstest.ExpectTCP(t, client, dst, port, netnstest.Accepted, opts...)
		}
	}
	connect(netnstest.HostV4, 7001, 3)
	connect(netnstest.HostV6, 7001, 1)
	connect(netnstest.HostV6, 7002, 2)
	connect(netnstest.HostV4, 7003, 1)
	// The rule without ports comes first: its source's packets are its,
	// not the port rule's.
	connect(netnstest.HostV4, 7004, 2, netnstest.WithSource(netip.MustParseAddr(admin)))

	want := map[string]uint64{"count/p7001": 4, "count/p7002": 2, "count/p7003": 1, "count/admin": 2}
	packets, bytes := ruleCounts(t, p)
	got := map[string]uint64{}
	for name, n := range packets {
		if strings.HasPrefix(name, "run from") {
			t.Errorf("a run is counted as a whole: %q", name)
		}
		if strings.HasPrefix(name, "count/") && n > 0 {
			got[name] = n
			if bytes[name] < 40*n {
				t.Errorf("%s: %d bytes for %d packets", name, bytes[name], n)
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packets by rule (-want +got):\n%s\n%s", diff, listTable(t, host))
	}
	// Counting is no drift.
	mustInSync(t, p, rs, true)

	// A new rule at the end changes elements only: the counts stay. A
	// rule that takes elements of another starts them over, for itself.
	spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{Policy: "count", Name: "late", Chain: v1alpha1.ChainInput,
		Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 7201}}})
	rs2, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Apply(rs2)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Incremental {
		t.Errorf("adding a rule: %+v", st)
	}
	mustInSync(t, p, rs2, true)
	if packets, _ := ruleCounts(t, p); packets["count/p7001"] != 4 || packets["count/admin"] != 2 {
		t.Errorf("counters changed with another rule's elements: %v", packets)
	}
	spec.Rules[0].Sources = nil // admin: every source's TCP
	rs3, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(rs3); err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, rs3, true)
	connect(netnstest.HostV4, 7001, 1)
	if packets, _ := ruleCounts(t, p); packets["count/p7001"] != 0 || packets["count/admin"] != 1 {
		t.Errorf("after admin took every TCP packet: %v\n%s", packets, listTable(t, host))
	}
}
