package nft

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// runsSpec has two runs of eight simple rules that become sets: ports and no ports,
// IPv4 and IPv6, overlapping and nested matches, and a linear rule between
// two runs.
func runsSpec() v1alpha1.NodeFirewallSpec {
	rule := func(name string, action v1alpha1.Action, proto v1alpha1.Protocol, port int32, src ...string) v1alpha1.NodeFirewallRule {
		r := v1alpha1.NodeFirewallRule{Policy: "runs", Name: name, Chain: v1alpha1.ChainInput, Action: action, Protocol: proto, Sources: src}
		if port != 0 {
			r.Ports = []v1alpha1.PortRange{{Port: port}}
		}
		return r
	}
	accept, drop, reject := v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject
	tcp, udp := v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP
	return v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			// Drops first: the blocked source loses even accepted ports.
			rule("block-1", drop, "", 0, "192.0.2.11"),
			rule("block-2", drop, "", 0, "198.51.100.0/24", "2001:db8:bad::/48"),
			rule("block-3", drop, tcp, 8003, "192.0.2.0/24"),
			rule("block-4", drop, udp, 9003),
			rule("block-5", drop, tcp, 8003, "2001:db8:1::/64"),
			rule("block-6", drop, udp, 9100),
			rule("block-7", drop, tcp, 8100, "203.0.113.0/24", "2001:db8:2::/48"),
			rule("block-8", drop, v1alpha1.ProtocolSCTP, 0, "192.0.2.0/24"),
			{Policy: "runs", Name: "linear", Chain: v1alpha1.ChainInput, Action: reject, Protocol: tcp,
				Ports: []v1alpha1.PortRange{{Port: 8002}}, InInterface: "eth0"},
			rule("web", accept, tcp, 8001),
			rule("web-again", accept, tcp, 8001, "192.0.2.0/24"),
			rule("range", accept, tcp, 0, "192.0.2.0/25"),
			rule("dns", accept, udp, 9001),
			rule("v6-only", accept, udp, 9004, "2001:db8:1::/64"),
			{Policy: "runs", Name: "ports-range", Chain: v1alpha1.ChainInput, Action: accept, Protocol: udp,
				Ports: []v1alpha1.PortRange{{Port: 9005, EndPort: 9010}, {Port: 9008, EndPort: 9020}}},
			{Policy: "runs", Name: "ping6", Chain: v1alpha1.ChainInput, Action: accept, Protocol: v1alpha1.ProtocolICMPv6},
			{Policy: "runs", Name: "ping", Chain: v1alpha1.ChainInput, Action: accept, Protocol: v1alpha1.ProtocolICMP},
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop},
	}
}

func compileRuns(t *testing.T, spec v1alpha1.NodeFirewallSpec) *compile.Ruleset {
	t.Helper()
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Sets) < 4 {
		t.Fatalf("want sets, got %d:\n%s", len(rs.Sets), compile.Render(rs))
	}
	return rs
}

// TestSetsParityWithRender programs runs over netlink and loads their
// rendering with nft: the kernel must list both the same.
func TestSetsParityWithRender(t *testing.T) {
	parity(t, compileRuns(t, runsSpec()))
}

// TestPortBlocksParityWithRender does the same with a run large enough to
// be cut into port blocks, some of them empty.
func TestPortBlocksParityWithRender(t *testing.T) {
	rs, err := compile.Compile(bigRuns(3000, 3000), compile.Options{SetLookups: true, ExactSetMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Sets) < 16 {
		t.Fatalf("%d sets: no port blocks", len(rs.Sets))
	}
	parity(t, rs)
}

// TestExactSetsParityWithRender does the same with hash sets: single keys,
// and prefixes matched by masking the packet's address.
func TestExactSetsParityWithRender(t *testing.T) {
	spec := bigRuns(3000, 3000)
	for i := range spec.Rules {
		if i%5 == 0 {
			spec.Rules[i].Sources = []string{fmt.Sprintf("192.168.%d.%d", i>>8&255, i&255)}
		}
	}
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	var masked, single int
	for _, s := range rs.Sets {
		switch {
		case s.Exact && s.SAddrBits > 0:
			masked += len(s.Elements)
		case s.Exact:
			single += len(s.Elements)
		}
	}
	if masked < 1000 || single < 500 {
		t.Fatalf("%d elements in masked hash sets, %d in hash sets of single keys:\n%s", masked, single, compile.Render(rs))
	}
	parity(t, rs)
}

func parity(t *testing.T, rs *compile.Ruleset) {
	t.Helper()
	ns, p := target(t)
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, rs, true)
	ref := netnstest.NewNS(t, "nft-ref")
	file := filepath.Join(t.TempDir(), "ruleset.nft")
	if err := os.WriteFile(file, []byte(compile.Render(rs)), 0o644); err != nil {
		t.Fatal(err)
	}
	ref.MustExec("nft", "-f", file)
	if got, want := listTable(t, ns), listTable(t, ref); got != want {
		t.Errorf("netlink:\n%s\nnft -f:\n%s", got, want)
	}
}

// TestSetsPackets sends real packets through runs.
func TestSetsPackets(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	client, host := pair.Client, pair.Host
	p, err := New(host.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := host.ServeTCP(8001, 8002, 8003, 8004); err != nil {
		t.Fatal(err)
	}
	if _, err := host.ServeUDPEcho(9001, 9003, 9004, 9012, 9021); err != nil {
		t.Fatal(err)
	}
	const blocked = "192.0.2.11"
	if err := client.AddAddr("eth0", blocked+"/24"); err != nil {
		t.Fatal(err)
	}
	spec := runsSpec()
	rs := compileRuns(t, spec)
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []netip.Addr{netnstest.HostV4, netnstest.HostV6} {
		netnstest.ExpectTCP(t, client, dst, 8001, netnstest.Accepted)
		netnstest.ExpectTCP(t, client, dst, 8002, netnstest.Rejected)
		netnstest.ExpectUDP(t, client, dst, 9001, netnstest.Accepted)
		netnstest.ExpectUDP(t, client, dst, 9003, netnstest.Dropped)
		netnstest.ExpectUDP(t, client, dst, 9012, netnstest.Accepted)
		netnstest.ExpectUDP(t, client, dst, 9021, netnstest.Dropped)
	}
	// 8003: dropped from the /24 and from the IPv6 /64 before "range".
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8003, netnstest.Dropped)
	netnstest.ExpectTCP(t, client, netnstest.HostV6, 8003, netnstest.Dropped)
	// 8004: only "range" accepts it, for 192.0.2.0/25.
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8004, netnstest.Accepted)
	netnstest.ExpectTCP(t, client, netnstest.HostV6, 8004, netnstest.Dropped)
	netnstest.ExpectUDP(t, client, netnstest.HostV4, 9004, netnstest.Dropped)
	netnstest.ExpectUDP(t, client, netnstest.HostV6, 9004, netnstest.Accepted)
	src := netnstest.WithSource(netip.MustParseAddr(blocked))
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8001, netnstest.Dropped, src)
	netnstest.ExpectUDP(t, client, netnstest.HostV4, 9001, netnstest.Dropped, src)

	// The rules of the runs count on their own.
	packets, _ := ruleCounts(t, p)
	for _, name := range []string{"runs/block-1", "runs/block-3", "runs/block-4", "runs/web", "runs/range", "runs/dns", "runs/v6-only", "runs/ports-range"} {
		if packets[name] == 0 {
			t.Errorf("rule %s did not count: %v", name, packets)
		}
	}
	if n := packets["runs/web-again"]; n != 0 {
		t.Errorf("shadowed rule web-again counted %d packets", n)
	}

	// One more accepted port changes elements only: counters stay.
	spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{Policy: "runs", Name: "more", Chain: v1alpha1.ChainInput,
		Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 8004}}})
	rs2 := compileRuns(t, spec)
	st, err := p.Apply(rs2)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Incremental || st.ElementsAdded == 0 || st.Messages > 10 {
		t.Errorf("adding a port: %+v", st)
	}
	mustInSync(t, p, rs2, true)
	netnstest.ExpectTCP(t, client, netnstest.HostV6, 8004, netnstest.Accepted)
	if after, _ := ruleCounts(t, p); after["runs/web"] < packets["runs/web"] || after["runs/dns"] < packets["runs/dns"] {
		t.Errorf("counters were reset: %v, then %v", packets, after)
	}
}

// bigRuns is n simple Input rules in runs of runLen, alternating Accept
// and Drop, with distinct ports and sources.
func bigRuns(n, runLen int) v1alpha1.NodeFirewallSpec {
	var spec v1alpha1.NodeFirewallSpec
	for i := range n {
		action := v1alpha1.ActionAccept
		if (i/runLen)%2 == 1 {
			action = v1alpha1.ActionDrop
		}
		r := v1alpha1.NodeFirewallRule{
			Policy: "big", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput, Action: action,
			Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: int32(1 + i%60000)}},
			Sources: []string{fmt.Sprintf("10.%d.%d.0/24", i>>8&255, i&255)},
		}
		if i%3 == 0 {
			r.Sources = []string{fmt.Sprintf("2001:db8:%x::/48", i)}
		}
		spec.Rules = append(spec.Rules, r)
	}
	return spec
}

// TestSetsIncremental changes one rule of 10,000 in interval sets: the
// batch carries only the elements that change, and the table is the new
// ruleset.
func TestSetsIncremental(t *testing.T) {
	ns, p := target(t)
	spec := bigRuns(10000, 2500)
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true, ExactSetMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	full, err := p.Apply(rs)
	if err != nil {
		t.Fatal(err)
	}
	elements := 0
	for _, s := range rs.Sets {
		elements += len(s.Elements)
	}
	t.Logf("full apply: %v, %+v, %d rules, %d elements", time.Since(start), full, rs.RuleCount(), elements)
	if full.Incremental || full.ElementsAdded != elements {
		t.Errorf("first apply: %+v", full)
	}
	mustInSync(t, p, rs, true)

	spec.Rules[4321].Ports[0].Port = 61000
	rs2, err := compile.Compile(spec, compile.Options{SetLookups: true, ExactSetMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, rs2, false)
	start = time.Now()
	st, err := p.Apply(rs2)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("one rule changed: %v, %+v", took, st)
	if !st.Incremental || st.ElementsAdded != 1 || st.ElementsDeleted != 1 || st.Messages != 4 {
		t.Errorf("one rule changed: %+v", st)
	}
	mustInSync(t, p, rs2, true)
	mustInSync(t, p, rs, false)

	// An element deleted from outside is drift; Drift distrusts the table,
	// and the next Apply rewrites it whole.
	ns.MustExec("nft", "delete", "element", "inet", compile.DefaultTable, kernelName("input-run-1-v4-0", p.last.slot), "{ 2 . 10.0.1.0/24 . tcp }")
	mustInSync(t, p, rs2, false)
	if st, err := p.Apply(rs2); err != nil {
		t.Fatal(err)
	} else if st.Incremental {
		t.Errorf("drift repaired incrementally: %+v", st)
	}
	mustInSync(t, p, rs2, true)

	// An element added from outside, unseen by Drift: the incremental
	// batch still succeeds (adds are idempotent), then Drift sees it.
	ns.MustExec("nft", "add", "element", "inet", compile.DefaultTable, kernelName("input-run-1-v4-0", p.last.slot), "{ 7 . 10.9.9.9 . udp }")
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, rs, false)
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, rs, true)

	// A failing incremental batch falls back to a full rewrite: here the
	// element it deletes is gone already.
	spec.Rules[4321].Ports[0].Port = 62000
	rs3, err := compile.Compile(spec, compile.Options{SetLookups: true, ExactSetMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	ns.MustExec("nft", "delete", "element", "inet", compile.DefaultTable, kernelName("input-run-2-v4-4096", p.last.slot), "{ 4322 . 10.16.225.0/24 . tcp }")
	if st, err := p.Apply(rs3); err != nil {
		t.Fatal(err)
	} else if st.Incremental {
		t.Errorf("failed incremental batch not replaced by a full one: %+v", st)
	}
	mustInSync(t, p, rs3, true)
}

// kernelSetNames lists the named sets of the table.
func kernelSetNames(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(ns.MustExec("nft", "list", "sets", "table", "inet", compile.DefaultTable), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "set" {
			names = append(names, f[1])
		}
	}
	slices.Sort(names)
	return names
}

// TestStagedRewrite checks the two transactions of a rewrite: the new sets
// take the names the live rules do not use, the old ones go, and a set
// left behind by a rewrite interrupted between its transactions is drift
// that the next Apply deletes.
func TestStagedRewrite(t *testing.T) {
	ns, p := target(t)
	compileRuns := func(n, runLen int) *compile.Ruleset {
		rs, err := compile.Compile(bigRuns(n, runLen), compile.Options{SetLookups: true})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	first, second := compileRuns(2000, 500), compileRuns(2000, 1000)
	want := func(rs *compile.Ruleset, slot int) []string {
		var names []string
		for _, s := range rs.Sets {
			names = append(names, kernelName(s.Name, slot))
		}
		slices.Sort(names)
		return names
	}
	for i, step := range []struct {
		rs   *compile.Ruleset
		slot int
	}{{first, 0}, {second, 1}, {first, 0}} {
		st, err := p.Apply(step.rs)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got := kernelSetNames(t, ns)
		if diff := cmp.Diff(want(step.rs, step.slot), got); diff != "" {
			t.Errorf("step %d: sets (-want +got):\n%s", i, diff)
		}
		if st.Incremental || st.Batches != 2 {
			t.Errorf("step %d: want a staged rewrite, got %+v", i, st)
		}
		mustInSync(t, p, step.rs, true)
	}

	// A rewrite interrupted after its first transaction: the other slot's
	// set exists, unused.
	leftover := kernelName(first.Sets[0].Name, 1)
	ns.MustExec("nft", "add", "set", "inet", compile.DefaultTable, leftover,
		"{ type inet_proto . inet_service . ipv4_addr; flags interval; }")
	mustInSync(t, p, first, false)
	if _, err := p.Apply(first); err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, first, true)
	if diff := cmp.Diff(want(first, 1), kernelSetNames(t, ns)); diff != "" {
		t.Errorf("after the repair, sets (-want +got):\n%s", diff)
	}

	// Every set of the other slot left behind: only the rules tell which
	// slot is live.
	for _, s := range first.Sets {
		addr := map[compile.Family]string{compile.FamilyIPv4: "ipv4_addr", compile.FamilyIPv6: "ipv6_addr"}[s.Family]
		ns.MustExec("nft", "add", "set", "inet", compile.DefaultTable, kernelName(s.Name, 0),
			"{ type inet_proto . inet_service . "+addr+"; flags interval; }")
	}
	mustInSync(t, p, first, false)
	st, err := p.Apply(first)
	if err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, first, true)
	if st.Batches != 2 {
		t.Errorf("repair: want a staged rewrite, got %+v", st)
	}
	if diff := cmp.Diff(want(first, 0), kernelSetNames(t, ns)); diff != "" {
		t.Errorf("after the second repair, sets (-want +got):\n%s", diff)
	}
}

// TestExactSetsIncremental changes one rule of 10,000 whose element is in a
// hash set, by a prefix (a /24 or a /48) or a single address.
func TestExactSetsIncremental(t *testing.T) {
	_, p := target(t)
	spec := bigRuns(10000, 2500)
	for i := range spec.Rules {
		if i%7 == 0 {
			spec.Rules[i].Sources = []string{fmt.Sprintf("192.168.%d.%d", i>>8&255, i&255)}
		}
	}
	compileSpec := func() *compile.Ruleset {
		rs, err := compile.Compile(spec, compile.Options{SetLookups: true})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	rs := compileSpec()
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, rs, true)
	for _, k := range []int{4321, 4323, 4326} { // a /24, a /48, a single address
		spec.Rules[k].Ports[0].Port = 61000
		next := compileSpec()
		start := time.Now()
		st, err := p.Apply(next)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("rule %d (%s) changed: %v, %+v", k, spec.Rules[k].Sources[0], took, st)
		if !st.Incremental || st.ElementsAdded != 1 || st.ElementsDeleted != 1 || st.Messages != 4 {
			t.Errorf("rule %d changed: %+v", k, st)
		}
		mustInSync(t, p, next, true)
		mustInSync(t, p, rs, false)
		rs = next
	}
}

// TestAdoptedTableUpdatesIncrementally: a Programmer with nothing
// committed (a restarted agent's) that finds its table to be exactly the
// ruleset adopts it: Committed returns it, and a change of set elements
// only is then sent alone.
func TestAdoptedTableUpdatesIncrementally(t *testing.T) {
	ns, p := target(t)
	spec := runsSpec()
	rs := compileRuns(t, spec)
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	q, err := New(ns.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if got := q.Committed(); got != nil {
		t.Fatalf("a new Programmer has committed %p", got)
	}
	if d, err := q.Drift(rs); err != nil || d != "" {
		t.Fatalf("Drift = %q, %v", d, err)
	}
	if got := q.Committed(); got != rs {
		t.Fatalf("after a Drift that found the ruleset, Committed = %p, want %p", got, rs)
	}
	spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{Policy: "runs", Name: "more", Chain: v1alpha1.ChainInput,
		Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 8004}}})
	rs2 := compileRuns(t, spec)
	st, err := q.Apply(rs2)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Incremental || st.ElementsAdded == 0 {
		t.Errorf("first change after adoption: %+v, want set elements only", st)
	}
	mustInSync(t, q, rs2, true)
}
