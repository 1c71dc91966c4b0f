package compile

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// bigSpec is n Input rules like a large allowlist: TCP or UDP ports from
// single sources or /24s, some IPv6, every action Accept but the ones
// that blocks of drops interrupt every dropEvery rules (0: never).
func bigSpec(n, dropEvery int, seed uint64) v1alpha1.NodeFirewallSpec {
	r := rand.New(rand.NewPCG(seed, 7))
	spec := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop}}
	for i := range n {
		rule := v1alpha1.NodeFirewallRule{
			Policy: "big", Mode: v1alpha1.PolicyModeEnforce, Name: fmt.Sprintf("r%d", i),
			Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
			Protocol: []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP}[r.IntN(2)],
			Ports:    []v1alpha1.PortRange{{Port: int32(1024 + r.IntN(60000))}},
		}
		switch r.IntN(4) {
		case 0:
			rule.Sources = []string{fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256))}
		case 1:
			rule.Sources = []string{fmt.Sprintf("10.%d.%d.0/24", r.IntN(256), r.IntN(256))}
		case 2:
			rule.Sources = []string{fmt.Sprintf("2001:db8:%x::/48", r.IntN(65536))}
		}
		if dropEvery > 0 && (i/dropEvery)%2 == 1 {
			rule.Action = v1alpha1.ActionDrop
		}
		spec.Rules = append(spec.Rules, rule)
	}
	return spec
}

// TestLookupsFollowVerdictChanges checks that a chain's length depends on
// how often the action changes along it, not on how many rules it has.
func TestLookupsFollowVerdictChanges(t *testing.T) {
	opts := Options{FailsafeInbound: DefaultFailsafeInbound(), SetLookups: true}
	implicit := len(implicitRules(v1alpha1.ChainInput, opts))
	for _, tc := range []struct{ n, dropEvery, runs int }{
		{10000, 0, 1},
		{10000, 2500, 4},
		{1000, 100, 10},
	} {
		rs, err := Compile(bigSpec(tc.n, tc.dropEvery, 1), opts)
		if err != nil {
			t.Fatal(err)
		}
		checkSets(t, rs)
		in := chainOf(t, rs, ChainInput)
		// Large sets put the elements that are one key, once addresses
		// are masked to a prefix length, in hash sets of their own.
		exact, exact4 := 0, 0
		for _, s := range rs.Sets {
			if s.Exact {
				exact++
				if s.Family == FamilyIPv4 {
					exact4++
				}
			}
		}
		// Per run, a lookup per family for ports and one without, port
		// blocks in front of large sets with ports, and the hash sets.
		if got := len(in.Rules) - implicit; got > tc.runs*2*(65536/portBlockWidth+1)+exact || got < tc.runs {
			t.Errorf("%d rules in %d runs became %d rules", tc.n, tc.runs, got)
		}
		// A packet meets at most two lookups of its family per run, and
		// the hash sets.
		for _, port := range []uint16{0, 80, 4095, 4096, 30000, 65535} {
			p := Packet{Family: FamilyIPv4, L4Proto: protoTCP, Transport: true, DPort: port}
			lookups := 0
			for _, r := range in.Rules[implicit:] {
				if r.Lookup != "" && r.Family == FamilyIPv4 && (len(r.DPorts) == 0 || rs.ruleMatches(&Rule{DPorts: r.DPorts}, p)) {
					lookups++
				}
			}
			if lookups > 2*tc.runs+exact4 {
				t.Errorf("%d rules in %d runs: port %d meets %d lookups", tc.n, tc.runs, port, lookups)
			}
		}
		if rs.ElementCount() < tc.n/2 {
			t.Errorf("%d rules became only %d elements", tc.n, rs.ElementCount())
		}
	}
}

// TestPathologicalRunIsSplit feeds a run whose disjoint rewrite would
// explode (nested port ranges from distinct sources): Compile must split it
// into several runs, quickly, and stay exact.
func TestPathologicalRunIsSplit(t *testing.T) {
	spec := v1alpha1.NodeFirewallSpec{}
	for i := range 3000 {
		spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{
			Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop,
			Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: int32(1 + i), EndPort: int32(60000 - i)}},
			Sources: []string{fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)},
		})
	}
	rs, err := Compile(spec, Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	checkSets(t, rs)
	if len(rs.Sets) < 2 || rs.ElementCount() > 100*len(spec.Rules) {
		t.Errorf("%d sets, %d elements", len(rs.Sets), rs.ElementCount())
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		i := r.IntN(3200)
		p := Packet{
			Family: FamilyIPv4, L4Proto: protoTCP, Transport: true, DPort: uint16(r.IntN(65536)), CtState: CtStateNew,
			SAddr: netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 9}), DAddr: netip.MustParseAddr("192.0.2.2"),
			IIfName: "eth0",
		}
		if got, want := rs.Eval(ChainInput, p), EvalSpec(spec, Options{SetLookups: true}, v1alpha1.ChainInput, p); got != want {
			t.Fatalf("packet %+v: compiled %q, rules %q", p, got, want)
		}
	}
}

// TestSetsAreCanonical checks that the elements depend only on what the
// rules match together, not on how the rules split it.
func TestSetsAreCanonical(t *testing.T) {
	mk := func(ports ...v1alpha1.PortRange) v1alpha1.NodeFirewallSpec {
		var spec v1alpha1.NodeFirewallSpec
		for i, p := range ports {
			spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{
				Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
				Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{p},
			})
		}
		return spec
	}
	a, err := Compile(mk(v1alpha1.PortRange{Port: 10, EndPort: 20}, v1alpha1.PortRange{Port: 15, EndPort: 30},
		v1alpha1.PortRange{Port: 31}, v1alpha1.PortRange{Port: 40}), Options{minRunLen: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compile(mk(v1alpha1.PortRange{Port: 40}, v1alpha1.PortRange{Port: 10, EndPort: 12},
		v1alpha1.PortRange{Port: 13, EndPort: 31}, v1alpha1.PortRange{Port: 20}), Options{minRunLen: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Sets) != 2 || len(b.Sets) != 2 {
		t.Fatalf("want a v4 and a v6 set, got %d and %d", len(a.Sets), len(b.Sets))
	}
	for i := range a.Sets {
		got := make([]string, 0)
		for _, e := range a.Sets[i].Elements {
			got = append(got, formatElement(e, a.Sets[i].Fields))
		}
		want := make([]string, 0)
		for _, e := range b.Sets[i].Elements {
			want = append(want, formatElement(e, b.Sets[i].Fields))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || len(got) != 2 {
			t.Errorf("set %s: %v and %v", a.Sets[i].Name, got, want)
		}
	}
}

// TestPortBlocksMatchLinear checks runs big enough to be cut into port
// blocks, with ranges across the borders, against the rules' semantics.
func TestPortBlocksMatchLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	spec := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop}}
	for i := range 3000 {
		first := int32(1 + r.IntN(65535))
		last := first
		switch r.IntN(10) {
		case 0:
			last = min(65535, first+int32(r.IntN(20000)))
		case 1:
			first = int32(portBlockWidth*(1+r.IntN(15)) - r.IntN(5))
			last = first + int32(r.IntN(10))
		}
		rule := v1alpha1.NodeFirewallRule{
			Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput,
			Action:   []v1alpha1.Action{v1alpha1.ActionAccept, v1alpha1.ActionDrop}[i/1500],
			Protocol: []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP}[r.IntN(2)],
			Ports:    []v1alpha1.PortRange{{Port: first, EndPort: last}},
		}
		if r.IntN(5) > 0 {
			rule.Sources = []string{fmt.Sprintf("10.%d.%d.0/24", r.IntN(8), r.IntN(8))}
		}
		spec.Rules = append(spec.Rules, rule)
	}
	rs, err := Compile(spec, Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	checkSets(t, rs)
	blocks := 0
	for _, s := range rs.Sets {
		if strings.HasSuffix(s.Name, "-4096") {
			blocks++
		}
	}
	if blocks == 0 {
		t.Fatalf("no port blocks:\n%v", rs.Sets)
	}
	for range 20000 {
		p := Packet{
			Family: FamilyIPv4, L4Proto: []uint8{protoTCP, protoUDP, protoSCTP}[r.IntN(3)], Transport: r.IntN(20) > 0,
			DPort: uint16(r.IntN(65536)), CtState: CtStateNew, IIfName: "eth0",
			SAddr: netip.AddrFrom4([4]byte{10, byte(r.IntN(9)), byte(r.IntN(9)), 1}), DAddr: netip.MustParseAddr("192.0.2.2"),
		}
		if r.IntN(4) == 0 {
			p.DPort = uint16(portBlockWidth*(1+r.IntN(15)) - 3 + r.IntN(6))
		}
		if got, want := rs.Eval(ChainInput, p), EvalSpec(spec, Options{SetLookups: true}, v1alpha1.ChainInput, p); got != want {
			t.Fatalf("packet %+v: compiled %q, rules %q", p, got, want)
		}
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		spec := bigSpec(n, 0, 1)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compile(spec, Options{SetLookups: true}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
