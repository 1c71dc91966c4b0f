package nft

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

const (
	tcp    = 6
	udp    = 17
	icmp   = 1
	icmpv6 = 58
)

func pfx(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, x := range s {
		if !strings.Contains(x, "/") {
			a := netip.MustParseAddr(x)
			out[i] = netip.PrefixFrom(a, a.BitLen())
			continue
		}
		out[i] = netip.MustParsePrefix(x)
	}
	return out
}

func ports(p ...uint16) []compile.PortInterval {
	out := make([]compile.PortInterval, len(p))
	for i, x := range p {
		out[i] = compile.PortInterval{First: x, Last: x}
	}
	return out
}

// sampleRuleset exercises every field of the model.
func sampleRuleset() *compile.Ruleset {
	return &compile.Ruleset{
		Table: compile.DefaultTable,
		Chains: []compile.Chain{
			{
				Name: compile.ChainInput, Hook: compile.HookInput, Priority: 0, Policy: compile.VerdictDrop,
				Rules: []compile.Rule{
					{CtStates: compile.CtStateEstablished | compile.CtStateRelated, Verdict: compile.VerdictAccept, Comment: "base/established"},
					{IIfName: "lo", Verdict: compile.VerdictAccept, Comment: "base/loopback"},
					{L4Proto: tcp, DPorts: ports(22), Counter: true, Verdict: compile.VerdictAccept, Comment: "base/ssh"},
					{
						Family: compile.FamilyIPv4, L4Proto: tcp,
						DPorts:  append(ports(80, 443), compile.PortInterval{First: 8000, Last: 8100}),
						SAddrs:  pfx("10.0.0.0/8", "192.168.1.0/24"),
						Counter: true, Verdict: compile.VerdictAccept, Comment: "web/http",
					},
					{Family: compile.FamilyIPv6, L4Proto: udp, DPorts: ports(53), SAddrs: pfx("2001:db8::/32"), Verdict: compile.VerdictAccept, Comment: "dns/v6"},
					{Family: compile.FamilyIPv4, L4Proto: icmp, ICMPTypes: []uint8{8, 0}, Verdict: compile.VerdictAccept, Comment: "icmp/v4"},
					{Family: compile.FamilyIPv6, L4Proto: icmpv6, ICMPTypes: []uint8{128}, Verdict: compile.VerdictAccept, Comment: "icmp/v6"},
					{IIfName: "eth+", L4Proto: udp, DPorts: ports(8472), Verdict: compile.VerdictDrop, Comment: "vxlan/block"},
					{
						L4Proto: tcp, DPorts: ports(23),
						Log:     &compile.Log{Prefix: "nodefw telnet ", Group: 100, RatePerMinute: 10, Burst: 5},
						Counter: true, Verdict: compile.VerdictReject, Comment: "legacy/telnet",
					},
					{Family: compile.FamilyIPv4, DAddrs: pfx("198.51.100.0/22"), Verdict: compile.VerdictDrop, Comment: "net/unaligned"},
					{Family: compile.FamilyIPv4, SAddrs: pfx("10.9.0.1", "10.9.0.2/31"), Verdict: compile.VerdictDrop, Comment: "net/range"},
					{
						L4Proto: tcp, DPorts: []compile.PortInterval{{First: 9000, Last: 9100}},
						Counter: true, Log: &compile.Log{Prefix: "nodefw audit ", Group: 7, RatePerMinute: 60, Burst: 10},
						Comment: "audit/would-drop",
					},
				},
			},
			{Name: compile.ChainForward, Hook: compile.HookForward, Priority: 0, Policy: compile.VerdictAccept},
			{
				Name: compile.ChainOutput, Hook: compile.HookOutput, Priority: 0, Policy: compile.VerdictAccept,
				Rules: []compile.Rule{
					{OIfName: "eth0", Family: compile.FamilyIPv6, DAddrs: pfx("2001:db8:ffff::1", "2001:db8:eeee::/48"), Verdict: compile.VerdictReject, Comment: "out/v6"},
				},
			},
		},
	}
}

// target is a namespace and a Programmer for its nodefw table.
func target(t *testing.T) (*netnstest.NS, *Programmer) {
	t.Helper()
	ns := netnstest.NewNS(t, "nft")
	p, err := New(ns.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return ns, p
}

func listTable(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	return ns.MustExec("nft", "list", "table", "inet", compile.DefaultTable)
}

// mustInSync checks Drift's answer and, for a Programmer of another
// namespace, that of a Programmer with nothing committed, which always
// reads the table: where p answers from what it committed, it must agree
// with the kernel.
func mustInSync(t *testing.T, p *Programmer, rs *compile.Ruleset, want bool) {
	t.Helper()
	check := func(who string, q *Programmer) {
		t.Helper()
		d, err := q.Drift(rs)
		if err != nil {
			t.Fatal(err)
		}
		if got := d == ""; got != want {
			t.Fatalf("%s: in sync = %v (%s), want %v", who, got, d, want)
		}
	}
	check("Drift", p)
	if p.nsFile == nil {
		return
	}
	q, err := New(p.nsFile.Name(), p.table)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	check("Drift with nothing committed", q)
}

// tableExists reports whether p's table is in the kernel.
func tableExists(t *testing.T, p *Programmer) bool {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	kt, err := p.findTable()
	if err != nil {
		t.Fatal(err)
	}
	return kt != nil
}

func TestApplyListing(t *testing.T) {
	ns, p := target(t)
	rs := sampleRuleset()
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	out := listTable(t, ns)
	for _, want := range []string{
		"type filter hook input priority filter; policy drop;",
		"type filter hook forward priority filter; policy accept;",
		"type filter hook output priority filter; policy accept;",
		`ct state established,related accept comment "base/established"`,
		`iifname "lo" accept comment "base/loopback"`,
		`tcp dport 22 counter packets 0 bytes 0 accept comment "base/ssh"`,
		`ip saddr { 10.0.0.0/8, 192.168.1.0/24 } tcp dport { 80, 443, 8000-8100 } counter packets 0 bytes 0 accept comment "web/http"`,
		`ip6 saddr 2001:db8::/32 udp dport 53 accept comment "dns/v6"`,
		`icmp type { echo-reply, echo-request } accept comment "icmp/v4"`,
		`icmpv6 type echo-request accept comment "icmp/v6"`,
		`iifname "eth*" udp dport 8472 drop comment "vxlan/block"`,
		`tcp dport 23 limit rate 10/minute log prefix "nodefw telnet " group 100 comment "legacy/telnet"`,
		`tcp dport 23 counter packets 0 bytes 0 reject comment "legacy/telnet"`,
		`ip daddr 198.51.100.0/22 drop comment "net/unaligned"`,
		`ip saddr 10.9.0.1-10.9.0.3 drop comment "net/range"`,
		`tcp dport 9000-9100 counter packets 0 bytes 0 limit rate 60/minute burst 10 packets log prefix "nodefw audit " group 7 comment "audit/would-drop"`,
		`oifname "eth0" ip6 daddr { 2001:db8:eeee::/48, 2001:db8:ffff::1 } reject comment "out/v6"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("listing lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
	mustInSync(t, p, rs, true)
	if n := strings.Count(out, "comment "); n != 14 {
		t.Errorf("%d rules listed, want 14 (the telnet rule in two)", n)
	}
	if !tableExists(t, p) {
		t.Error("table missing after Apply")
	}
}

// handleOf returns the handle of the first rule of a chain whose listing
// contains text.
func handleOf(t *testing.T, ns *netnstest.NS, chain, text string) string {
	t.Helper()
	out := ns.MustExec("nft", "-a", "list", "chain", "inet", compile.DefaultTable, chain)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, text) {
			if m := regexp.MustCompile(`# handle (\d+)`).FindStringSubmatch(line); m != nil {
				return m[1]
			}
		}
	}
	t.Fatalf("no rule %q in:\n%s", text, out)
	return ""
}

func TestDrift(t *testing.T) {
	ns, p := target(t)
	rs := sampleRuleset()
	table := compile.DefaultTable
	nft := func(args ...string) { ns.MustExec(append([]string{"nft"}, args...)...) }
	for _, tc := range []struct {
		name   string
		mutate func()
	}{
		{"delete rule", func() {
			nft("delete", "rule", "inet", table, "input", "handle", handleOf(t, ns, "input", "base/ssh"))
		}},
		{"replace rule", func() {
			h := handleOf(t, ns, "input", "base/ssh")
			nft("replace", "rule", "inet", table, "input", "handle", h, "tcp", "dport", "2222", "counter", "accept", "comment", `"base/ssh"`)
		}},
		{"replace rule identically", func() {
			h := handleOf(t, ns, "input", "base/ssh")
			nft("replace", "rule", "inet", table, "input", "handle", h, "tcp", "dport", "22", "counter", "accept", "comment", `"base/ssh"`)
		}},
		{"insert rule", func() { nft("insert", "rule", "inet", table, "input", "accept") }},
		{"append rule", func() { nft("add", "rule", "inet", table, "output", "drop") }},
		{"flush chain", func() { nft("flush", "chain", "inet", table, "input") }},
		{"chain policy", func() { nft("chain", "inet", table, "input", "{ policy accept ; }") }},
		{"extra chain", func() { nft("add", "chain", "inet", table, "extra") }},
		{"extra set", func() { nft("add", "set", "inet", table, "extra", "{ type ipv4_addr ; }") }},
		{"dormant", func() { nft("add", "table", "inet", table, "{ flags dormant ; }") }},
		{"delete chain", func() { nft("delete", "chain", "inet", table, "forward") }},
		{"delete table", func() { nft("delete", "table", "inet", table) }},
		{"flush ruleset", func() { nft("flush", "ruleset") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.Apply(rs); err != nil {
				t.Fatal(err)
			}
			mustInSync(t, p, rs, true)
			tc.mutate()
			mustInSync(t, p, rs, false)
			if _, err := p.Apply(rs); err != nil {
				t.Fatal(err)
			}
			mustInSync(t, p, rs, true)
		})
	}

	// A different desired ruleset is not in sync either.
	other := sampleRuleset()
	other.Chains[0].Rules[2].DPorts = ports(2222)
	mustInSync(t, p, other, false)
	other = sampleRuleset()
	other.Chains[0].Rules[3].SAddrs = pfx("10.0.0.0/8", "192.168.2.0/24")
	mustInSync(t, p, other, false)
	other = sampleRuleset()
	other.Chains[1].Policy = compile.VerdictDrop
	mustInSync(t, p, other, false)
	other = sampleRuleset()
	other.Chains[0].Rules[0].Comment = "renamed"
	mustInSync(t, p, other, false)
}

// foreignTables creates tables that belong to others: iptables-nft's
// ip filter, a kube-proxy-like table and a firewalld-like inet table.
func foreignTables(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	ns.MustExec("iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
	ns.MustExec("iptables-nft", "-A", "INPUT", "-s", "10.0.0.0/8", "-m", "comment", "--comment", "foreign", "-j", "DROP")
	ns.MustExec("nft", "add table ip kube-proxy; add chain ip kube-proxy services; add map ip kube-proxy svc { type ipv4_addr . inet_proto . inet_service : verdict ; elements = { 10.96.0.1 . tcp . 443 : goto services } }; add rule ip kube-proxy services counter")
	ns.MustExec("nft", "add table inet firewalld; add chain inet firewalld filter_INPUT { type filter hook input priority filter + 10 ; policy accept ; }; add rule inet firewalld filter_INPUT ct state established,related accept; add rule inet firewalld filter_INPUT tcp dport { 22, 9090 } accept")
	return []string{"ip filter", "ip kube-proxy", "inet firewalld"}
}

func snapshot(t *testing.T, ns *netnstest.NS, tables []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tb := range tables {
		out[tb] = ns.MustExec(append([]string{"nft", "list", "table"}, strings.Fields(tb)...)...)
	}
	return out
}

func TestForeignTablesUntouched(t *testing.T) {
	ns, p := target(t)
	tables := foreignTables(t, ns)
	before := snapshot(t, ns, tables)
	check := func(step string) {
		t.Helper()
		after := snapshot(t, ns, tables)
		for _, tb := range tables {
			if after[tb] != before[tb] {
				t.Errorf("after %s, table %s changed:\n%s\nwas:\n%s", step, tb, after[tb], before[tb])
			}
		}
	}
	if err := p.Delete(); err != nil {
		t.Fatalf("Delete of a missing table: %v", err)
	}
	check("delete of a missing table")
	rs := sampleRuleset()
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	check("apply")
	rs.Chains[0].Rules = rs.Chains[0].Rules[:3]
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	check("update")
	mustInSync(t, p, rs, true)
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	check("delete")
	if tableExists(t, p) {
		t.Error("table still there after Delete")
	}
	mustInSync(t, p, rs, false)
	if err := p.Delete(); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	check("second delete")
	if out := ns.MustExec("nft", "list", "tables"); strings.Contains(out, compile.DefaultTable) {
		t.Errorf("table still listed: %s", out)
	}
}

func TestOtherTableName(t *testing.T) {
	ns, p := target(t)
	q, err := New(ns.Path(), "nodefw-b")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	rs := sampleRuleset()
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Apply(rs); err == nil {
		t.Fatal("applying a ruleset for another table succeeded")
	}
	rs.Table = ""
	if _, err := q.Apply(rs); err != nil {
		t.Fatal(err)
	}
	mustInSync(t, q, rs, true)
	if err := q.Delete(); err != nil {
		t.Fatal(err)
	}
	rs.Table = compile.DefaultTable
	mustInSync(t, p, rs, true)
}

func TestInvalidRulesetKeepsTable(t *testing.T) {
	_, p := target(t)
	rs := sampleRuleset()
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	bad := sampleRuleset()
	bad.Chains[0].Rules = append(bad.Chains[0].Rules, compile.Rule{DPorts: ports(80), Verdict: compile.VerdictAccept})
	if _, err := p.Apply(bad); err == nil {
		t.Fatal("ports without a protocol were accepted")
	}
	mustInSync(t, p, rs, true)
	bad = sampleRuleset()
	bad.Chains[0].Hook = "prerouting"
	if _, err := p.Apply(bad); err == nil {
		t.Fatal("unknown hook accepted")
	}
	mustInSync(t, p, rs, true)
	// The kernel refuses the last chain (its name is too long) and with it
	// the whole batch: the previous table stays.
	bad = sampleRuleset()
	bad.Chains[0].Rules = bad.Chains[0].Rules[:2]
	bad.Chains = append(bad.Chains, compile.Chain{Name: strings.Repeat("x", 300), Hook: compile.HookInput, Policy: compile.VerdictAccept})
	if _, err := p.Apply(bad); err == nil {
		t.Fatal("the kernel accepted a 300-byte chain name")
	} else {
		t.Log(err)
	}
	mustInSync(t, p, rs, true)
	// After errors the connection still works.
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
}

// TestCommitted follows the ruleset a Programmer holds as committed: the
// last one applied, kept through a failed Apply (it is what the caller
// restores), gone with the table.
func TestCommitted(t *testing.T) {
	_, p := target(t)
	if got := p.Committed(); got != nil {
		t.Fatalf("a new Programmer has committed %p", got)
	}
	rs := sampleRuleset()
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if got := p.Committed(); got != rs {
		t.Fatalf("after Apply, Committed = %p, want %p", got, rs)
	}
	refusedByPlan := sampleRuleset()
	refusedByPlan.Chains[0].Hook = "prerouting"
	refusedByKernel := sampleRuleset()
	refusedByKernel.Chains = append(refusedByKernel.Chains, compile.Chain{Name: strings.Repeat("x", 300), Hook: compile.HookInput, Policy: compile.VerdictAccept})
	for _, bad := range []*compile.Ruleset{refusedByPlan, refusedByKernel} {
		if _, err := p.Apply(bad); err == nil {
			t.Fatal("a bad ruleset was applied")
		}
		if got := p.Committed(); got != rs {
			t.Fatalf("after a failed Apply, Committed = %p, want %p", got, rs)
		}
	}
	mustInSync(t, p, rs, true)
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	if got := p.Committed(); got != nil {
		t.Fatalf("after Delete, Committed = %p", got)
	}
}

// largeRuleset has n input rules, each with a destination port or port
// range and a source CIDR; every setEvery-th rule has port and CIDR sets
// instead, and the last rule has sets of several thousand elements, more
// than one netlink attribute can hold.
func largeRuleset(n, setEvery int) *compile.Ruleset {
	rules := make([]compile.Rule, 0, n)
	for i := 0; i < n-1; i++ {
		r := compile.Rule{
			Family: compile.FamilyIPv4, L4Proto: tcp,
			DPorts:  []compile.PortInterval{{First: uint16(1024 + i%30000), Last: uint16(1024 + i%30000 + i%3)}},
			SAddrs:  []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)},
			Counter: true, Verdict: compile.VerdictAccept, Comment: fmt.Sprintf("large/rule-%d", i),
		}
		if i%setEvery == 0 {
			r.DPorts = append(r.DPorts, compile.PortInterval{First: 40000, Last: 40010}, compile.PortInterval{First: 50000, Last: 50000})
			r.SAddrs = append(r.SAddrs, netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"))
		}
		if i%2 == 1 {
			r.Family, r.L4Proto = compile.FamilyIPv6, udp
			r.SAddrs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}), 48)}
			if i%setEvery == 1 {
				r.SAddrs = append(r.SAddrs, netip.MustParsePrefix("fd00::/8"))
			}
		}
		rules = append(rules, r)
	}
	big := compile.Rule{Family: compile.FamilyIPv6, L4Proto: tcp, Verdict: compile.VerdictDrop, Comment: "large/big-sets"}
	for i := 0; i < 6000; i++ {
		big.SAddrs = append(big.SAddrs, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, byte(i >> 8), byte(i)}), 64))
		big.DPorts = append(big.DPorts, compile.PortInterval{First: uint16(2 * i), Last: uint16(2 * i)})
	}
	rules = append(rules, big)
	return &compile.Ruleset{
		Table: compile.DefaultTable,
		Chains: []compile.Chain{
			{Name: compile.ChainInput, Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: rules},
			{Name: compile.ChainOutput, Hook: compile.HookOutput, Policy: compile.VerdictAccept},
		},
	}
}

func testLarge(t *testing.T, setEvery, rounds int) {
	ns, p := target(t)
	foreign := foreignTables(t, ns)
	before := snapshot(t, ns, foreign)
	const n = 10000
	rs := largeRuleset(n, setEvery)
	for round := 0; round < rounds; round++ {
		start := time.Now()
		if _, err := p.Apply(rs); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		t.Logf("round %d: applied %d rules in %v", round, n, time.Since(start))
		start = time.Now()
		mustInSync(t, p, rs, true)
		t.Logf("round %d: checked in %v", round, time.Since(start))
		// The update reverses the rule order.
		for i, j := 0, n-2; i < j; i, j = i+1, j-1 {
			rs.Chains[0].Rules[i], rs.Chains[0].Rules[j] = rs.Chains[0].Rules[j], rs.Chains[0].Rules[i]
		}
	}
	out := ns.MustExec("nft", "list", "chain", "inet", compile.DefaultTable, "input")
	if got := strings.Count(out, "comment \"large/"); got != n {
		t.Errorf("listing has %d rules, want %d", got, n)
	}
	if !strings.Contains(out, "2001:db8:ff00:500::/64") || !strings.Contains(out, "11998") {
		t.Errorf("big sets incomplete")
	}
	if after := snapshot(t, ns, foreign); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("foreign tables changed")
	}
	h := handleOf(t, ns, "input", "large/rule-4321\"")
	ns.MustExec("nft", "delete", "rule", "inet", compile.DefaultTable, "input", "handle", h)
	mustInSync(t, p, rs, false)
}

// TestLargeRuleset applies 10,000 rules, one in twenty with port and CIDR
// sets, plus sets too big for one netlink attribute, then replaces them.
func TestLargeRuleset(t *testing.T) { testLarge(t, 20, 2) }

// TestLargeRulesetAllSets gives every one of the 10,000 rules its own sets
// (15,000 sets). The kernel finds sets by walking a list, so a transaction
// costs the square of its number of sets: this is slow.
func TestLargeRulesetAllSets(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 15,000 sets in one transaction")
	}
	testLarge(t, 1, 1)
}

func TestPackets(t *testing.T) {
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
	if _, err := host.ServeUDPEcho(9001, 9002, 9003, 9004); err != nil {
		t.Fatal(err)
	}
	const second = "192.0.2.11"
	if err := client.AddAddr("eth0", second+"/24"); err != nil {
		t.Fatal(err)
	}
	rs := &compile.Ruleset{Chains: []compile.Chain{{
		Name: compile.ChainInput, Hook: compile.HookInput, Policy: compile.VerdictDrop,
		Rules: []compile.Rule{
			{CtStates: compile.CtStateEstablished | compile.CtStateRelated, Verdict: compile.VerdictAccept},
			{Family: compile.FamilyIPv4, SAddrs: pfx(second), Verdict: compile.VerdictDrop, Comment: "src/blocked"},
			{L4Proto: tcp, DPorts: ports(8001), Verdict: compile.VerdictAccept},
			{L4Proto: tcp, DPorts: ports(8002), Verdict: compile.VerdictReject},
			{L4Proto: udp, DPorts: ports(9001), Verdict: compile.VerdictAccept},
			{L4Proto: udp, DPorts: ports(9002), Counter: true, Verdict: compile.VerdictReject},
			// IPv4 only: IPv6 falls through to the policy.
			{Family: compile.FamilyIPv4, L4Proto: tcp, DPorts: ports(8004), Verdict: compile.VerdictAccept},
			{IIfName: "eth+", L4Proto: udp, DPorts: ports(9004), Verdict: compile.VerdictAccept},
			// Needed for IPv6 neighbour discovery.
			{Family: compile.FamilyIPv6, L4Proto: icmpv6, Verdict: compile.VerdictAccept},
		},
	}}}
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []netip.Addr{netnstest.HostV4, netnstest.HostV6} {
		netnstest.ExpectTCP(t, client, dst, 8001, netnstest.Accepted)
		netnstest.ExpectTCP(t, client, dst, 8002, netnstest.Rejected)
		netnstest.ExpectTCP(t, client, dst, 8003, netnstest.Dropped)
		netnstest.ExpectUDP(t, client, dst, 9001, netnstest.Accepted)
		netnstest.ExpectUDP(t, client, dst, 9002, netnstest.Rejected)
		netnstest.ExpectUDP(t, client, dst, 9003, netnstest.Dropped)
		netnstest.ExpectUDP(t, client, dst, 9004, netnstest.Accepted)
	}
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8004, netnstest.Accepted)
	netnstest.ExpectTCP(t, client, netnstest.HostV6, 8004, netnstest.Dropped)
	src := netnstest.WithSource(netip.MustParseAddr(second))
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8001, netnstest.Dropped, src)
	netnstest.ExpectUDP(t, client, netnstest.HostV4, 9001, netnstest.Dropped, src)

	// The reject rule counted the UDP probes.
	if out := listTable(t, host); !strings.Contains(out, "udp dport 9002 counter packets 2 ") {
		t.Errorf("counter did not count:\n%s", out)
	}

	// Output: the host rejects its own connections to the client's port.
	if _, err := client.ServeTCP(7000); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectTCP(t, host, netnstest.ClientV4, 7000, netnstest.Accepted)
	rs.Chains = append(rs.Chains, compile.Chain{
		Name: compile.ChainOutput, Hook: compile.HookOutput, Policy: compile.VerdictAccept,
		Rules: []compile.Rule{{L4Proto: tcp, DPorts: ports(7000), Verdict: compile.VerdictReject}},
	})
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectTCP(t, host, netnstest.ClientV4, 7000, netnstest.Rejected)
	netnstest.ExpectTCP(t, host, netnstest.ClientV6, 7000, netnstest.Rejected)

	// Without the table everything gets through.
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8003, netnstest.Accepted)
	netnstest.ExpectTCP(t, host, netnstest.ClientV4, 7000, netnstest.Accepted)
}

func TestForwardPackets(t *testing.T) {
	r := netnstest.NewTestRouted(t)
	p, err := New(r.Router.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := r.Server.ServeTCP(443, 8443); err != nil {
		t.Fatal(err)
	}
	rs := &compile.Ruleset{Chains: []compile.Chain{{
		Name: compile.ChainForward, Hook: compile.HookForward, Policy: compile.VerdictDrop,
		Rules: []compile.Rule{
			{CtStates: compile.CtStateEstablished | compile.CtStateRelated, Verdict: compile.VerdictAccept},
			{IIfName: "eth-c", OIfName: "eth-s", L4Proto: tcp, DPorts: ports(443), Verdict: compile.VerdictAccept},
			{IIfName: "eth-c", L4Proto: tcp, DPorts: ports(8443), Verdict: compile.VerdictReject},
		},
	}}}
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []netip.Addr{netnstest.ServerV4, netnstest.ServerV6} {
		netnstest.ExpectTCP(t, r.Client, dst, 443, netnstest.Accepted)
		netnstest.ExpectTCP(t, r.Client, dst, 8443, netnstest.Rejected)
	}
	// Nothing is allowed the other way.
	if _, err := r.Client.ServeTCP(443); err != nil {
		t.Fatal(err)
	}
	netnstest.ExpectTCP(t, r.Server, netnstest.ClientV4, 443, netnstest.Dropped)
}

// TestUpdateIsAtomic replaces the table over and over while probes run:
// a port open in every version never fails, and one closed in every
// version never opens.
func TestUpdateIsAtomic(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	p, err := New(pair.Host.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := pair.Host.ServeTCP(8080, 8081); err != nil {
		t.Fatal(err)
	}
	version := func(v int) *compile.Ruleset {
		var rules []compile.Rule
		// Filler makes each transaction take a while.
		for i := 0; i < 2000; i++ {
			rules = append(rules, compile.Rule{L4Proto: udp, DPorts: ports(uint16(20000 + i + v)), Verdict: compile.VerdictDrop})
		}
		rules = append(rules,
			compile.Rule{CtStates: compile.CtStateEstablished | compile.CtStateRelated, Verdict: compile.VerdictAccept},
			compile.Rule{L4Proto: tcp, DPorts: ports(8080), Verdict: compile.VerdictAccept, Comment: fmt.Sprintf("v%d", v)},
			compile.Rule{Family: compile.FamilyIPv6, L4Proto: icmpv6, Verdict: compile.VerdictAccept},
		)
		return &compile.Ruleset{Chains: []compile.Chain{{Name: compile.ChainInput, Hook: compile.HookInput, Policy: compile.VerdictDrop, Rules: rules}}}
	}
	if _, err := p.Apply(version(0)); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var probes, bad atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := netnstest.HostV4
			if w%2 == 1 {
				dst = netnstest.HostV6
			}
			for !stop.Load() {
				if v, err := netnstest.ProbeTCP(pair.Client, dst, 8080, netnstest.WithTimeout(2*time.Second)); err != nil || v != netnstest.Accepted {
					t.Errorf("open port: %v %v", v, err)
					bad.Add(1)
				}
				if v, err := netnstest.ProbeTCP(pair.Client, dst, 8081, netnstest.WithTimeout(50*time.Millisecond)); err != nil || v != netnstest.Dropped {
					t.Errorf("closed port: %v %v", v, err)
					bad.Add(1)
				}
				probes.Add(2)
			}
		}()
	}
	for i := 1; i <= 10; i++ {
		if _, err := p.Apply(version(i)); err != nil {
			t.Error(err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d probes during 10 updates, %d wrong", probes.Load(), bad.Load())
	mustInSync(t, p, version(10), true)
}

// TestCurrentNamespace opens a Programmer from inside a namespace with an
// empty path: its socket, and so its table, belong to that namespace.
func TestCurrentNamespace(t *testing.T) {
	ns := netnstest.NewNS(t, "nft-current")
	var p *Programmer
	if err := ns.Do(func() error {
		var err error
		p, err = New("", "")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rs := sampleRuleset()
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if out := listTable(t, ns); !strings.Contains(out, `comment "base/ssh"`) {
		t.Errorf("table not in the namespace:\n%s", out)
	}
	mustInSync(t, p, rs, true)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(rs); err == nil {
		t.Error("Apply after Close succeeded")
	}
}
