package compile

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// TestRadixSortsSort checks the radix sorts against a comparison sort, on
// inputs large enough to take the radix path.
func TestRadixSortsSort(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 255, 256, 1000, 5000} {
		var starts []boxStart
		var ends []addrEnd
		for i := range n {
			lo := uint32(r.IntN(1 << uint(8*(1+i%4))))
			starts = append(starts, boxStart{span32{lo, lo}, int32(i)})
			a := u128{hi: r.Uint64() >> uint(r.IntN(64)), lo: r.Uint64() >> uint(r.IntN(64))}
			if i%3 == 0 {
				a.hi = 0x20010db800000000
			}
			ends = append(ends, addrEnd{a, int32(i)})
		}
		gotStarts, _ := sortStarts(slices.Clone(starts), nil)
		if !slices.IsSortedFunc(gotStarts, func(a, b boxStart) int { return int(a.lo) - int(b.lo) }) || len(gotStarts) != n {
			t.Fatalf("%d starts not sorted", n)
		}
		gotEnds, _ := sortAddrEnds(slices.Clone(ends), nil)
		if !slices.IsSortedFunc(gotEnds, func(a, b addrEnd) int { return a.addr.cmp(b.addr) }) || len(gotEnds) != n {
			t.Fatalf("%d ends not sorted", n)
		}
		// Sorting moves entries, it does not lose or duplicate them.
		seen := make([]bool, n)
		for _, s := range gotStarts {
			seen[s.box] = true
		}
		for _, e := range gotEnds {
			if !seen[e.ref] || starts[e.ref].box != e.ref {
				t.Fatalf("%d: entry %d lost", n, e.ref)
			}
		}
	}
}

// TestIPv6RunsMatchLinear checks large IPv6 runs, whose addresses the
// decomposer numbers by rank, against the rules' semantics: nested,
// touching and overlapping prefixes, sources and destinations, rules of
// both families and ICMPv6, in sets large enough to be sorted by radix.
func TestIPv6RunsMatchLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 11))
	// Broad prefixes, seldom: they would cover the others.
	broad := []string{"::/0", "::/1", "8000::/1", "2001:db8::/32", "2001:db8::/33", "2001:db8:8000::/33", "fe80::/10"}
	prefixes := []string{"2001:db9::/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::", "::1"}
	for i := range 64 {
		prefixes = append(prefixes, fmt.Sprintf("2001:db8:%x::/48", i), fmt.Sprintf("2001:db8:%x::%x", i, r.IntN(4)),
			fmt.Sprintf("2001:db8:%x:%x::/64", i, r.IntN(3)))
	}
	pick := func() string {
		if r.IntN(100) == 0 {
			return broad[r.IntN(len(broad))]
		}
		return prefixes[r.IntN(len(prefixes))]
	}
	spec := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Output: v1alpha1.ChainPolicyDrop}}
	for i := range 3000 {
		rule := v1alpha1.NodeFirewallRule{
			Policy: "p", Name: fmt.Sprintf("r%d", i),
			Chain:    []v1alpha1.Chain{v1alpha1.ChainInput, v1alpha1.ChainOutput}[i/1500],
			Action:   []v1alpha1.Action{v1alpha1.ActionAccept, v1alpha1.ActionDrop}[i/750%2],
			Protocol: []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolICMPv6, ""}[r.IntN(4)],
		}
		if rule.Protocol.HasPorts() && r.IntN(3) > 0 {
			rule.Ports = []v1alpha1.PortRange{{Port: int32(1 + r.IntN(40))}}
			if r.IntN(4) == 0 {
				rule.Ports[0].EndPort = rule.Ports[0].Port + int32(r.IntN(30))
			}
		}
		if r.IntN(6) > 0 {
			rule.Sources = []string{pick()}
			if r.IntN(5) == 0 {
				rule.Sources = append(rule.Sources, pick(), "10.0.0.0/8")
			}
		}
		// Every rule names an address: one without would cover the rest.
		if r.IntN(3) == 0 || len(rule.Sources) == 0 {
			rule.Destinations = []string{pick()}
		}
		spec.Rules = append(spec.Rules, rule)
	}
	opts := Options{SetLookups: true}
	rs, err := Compile(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkSets(t, rs)
	// Addresses at and around an address's edges, ports at and around a
	// port range's.
	edge := func(s string, or netip.Addr) netip.Addr {
		p, err := parseAddress(s)
		if err != nil {
			t.Fatal(err)
		}
		if p.Addr().Is4() {
			return or
		}
		sp := prefixSpan(p)
		return u128Addr([]u128{sp.lo, sp.hi, sp.lo.prev(), sp.hi.next()}[r.IntN(4)], FamilyIPv6)
	}
	somePrefix := func() string { return append(prefixes, broad...)[r.IntN(len(prefixes)+len(broad))] }
	for range 30000 {
		p := Packet{
			Family: FamilyIPv6, L4Proto: []uint8{protoTCP, protoUDP, protoICMPv6, protoSCTP}[r.IntN(4)],
			Transport: r.IntN(20) > 0, DPort: uint16(r.IntN(75)), Type: 128, CtState: CtStateNew,
			SAddr: edge(somePrefix(), netip.IPv6Unspecified()), DAddr: edge(somePrefix(), netip.IPv6Unspecified()),
		}
		// Mostly packets near a rule, where a wrong edge shows.
		if rule := &spec.Rules[r.IntN(len(spec.Rules))]; r.IntN(4) > 0 {
			if l4 := l4Proto(rule.Protocol); l4 != 0 {
				p.L4Proto = l4
			}
			if len(rule.Ports) > 0 {
				p.DPort = uint16([]int32{rule.Ports[0].Port, rule.Ports[0].Last(), rule.Ports[0].Port - 1, rule.Ports[0].Last() + 1}[r.IntN(4)])
			}
			if len(rule.Sources) > 0 {
				p.SAddr = edge(rule.Sources[r.IntN(len(rule.Sources))], p.SAddr)
			}
			if len(rule.Destinations) > 0 {
				p.DAddr = edge(rule.Destinations[r.IntN(len(rule.Destinations))], p.DAddr)
			}
		}
		for _, c := range []v1alpha1.Chain{v1alpha1.ChainInput, v1alpha1.ChainOutput} {
			q := p
			if c == v1alpha1.ChainInput {
				q.IIfName = "eth0"
			} else {
				q.OIfName = "eth0"
			}
			if got, want := rs.Eval(chainName(c), q), EvalSpec(spec, opts, c, q); got != want {
				t.Fatalf("chain %s, packet %+v: compiled %q, rules %q", c, q, got, want)
			}
		}
	}
}
