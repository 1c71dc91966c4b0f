package nft

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

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
						Log:     &compile.Log{Prefix: "nodefw telnet ", RatePerMinute: 10, Burst: 5},
						Counter: true, Verdict: compile.VerdictReject, Comment: "legacy/telnet",
					},
					{Family: compile.FamilyIPv4, DAddrs: pfx("198.51.100.0/22"), Verdict: compile.VerdictDrop, Comment: "net/unaligned"},
					{Family: compile.FamilyIPv4, SAddrs: pfx("10.9.0.1", "10.9.0.2/31"), Verdict: compile.VerdictDrop, Comment: "net/range"},
					{
						L4Proto: tcp, DPorts: []compile.PortInterval{{First: 9000, Last: 9100}},
						Counter: true, Log: &compile.Log{Prefix: "nodefw audit ", RatePerMinute: 60, Burst: 10},
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

func mustInSync(t *testing.T, p *Programmer, rs *compile.Ruleset, want bool) {
	t.Helper()
	d, err := p.Drift(rs)
	if err != nil {
		t.Fatal(err)
	}
	if got := d == ""; got != want {
		t.Fatalf("in sync = %v (%s), want %v", got, d, want)
	}
	ok, err := p.InSync(rs)
	if err != nil || ok != want {
		t.Fatalf("InSync = %v, %v; want %v", ok, err, want)
	}
}

func TestApplyListing(t *testing.T) {
	ns, p := target(t)
	rs := sampleRuleset()
	if err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	out := listTable(t, ns)
	fmt.Println(out)
	mustInSync(t, p, rs, true)
}
