package compile

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/text"
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
			lookups := 0
			for _, r := range in.Rules[implicit:] {
				if r.Lookup != "" && r.Family == FamilyIPv4 && (len(r.DPorts) == 0 || slices.ContainsFunc(r.DPorts, func(pi PortInterval) bool {
					return pi.First <= port && port <= pi.Last
				})) {
					lookups++
				}
			}
			if lookups > 2*tc.runs+exact4 {
				t.Errorf("%d rules in %d runs: port %d meets %d lookups", tc.n, tc.runs, port, lookups)
			}
		}
		if elementCount(rs) < tc.n/2 {
			t.Errorf("%d rules became only %d elements", tc.n, elementCount(rs))
		}
	}
}

// TestSetsAreCanonical checks that, with merged counters, the elements
// depend only on what the rules match together, not on how the rules
// split it.
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
		v1alpha1.PortRange{Port: 31}, v1alpha1.PortRange{Port: 40}), Options{minRunLen: 1, MergedRunCounters: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compile(mk(v1alpha1.PortRange{Port: 40}, v1alpha1.PortRange{Port: 10, EndPort: 12},
		v1alpha1.PortRange{Port: 13, EndPort: 31}, v1alpha1.PortRange{Port: 20}), Options{minRunLen: 1, MergedRunCounters: true})
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

// TestSetElementsCountFirstRule checks that every element of a run's sets
// counts for the rule a packet inside it meets first, and that elements
// of one rule that touch are one.
func TestSetElementsCountFirstRule(t *testing.T) {
	mk := func(ports ...[]v1alpha1.PortRange) v1alpha1.NodeFirewallSpec {
		var spec v1alpha1.NodeFirewallSpec
		for i, p := range ports {
			spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{
				Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
				Protocol: v1alpha1.ProtocolTCP, Ports: p, Sources: []string{"192.0.2.0/24"},
			})
		}
		return spec
	}
	pr := func(first, last int32) v1alpha1.PortRange { return v1alpha1.PortRange{Port: first, EndPort: last} }
	for _, tt := range []struct {
		name  string
		ports [][]v1alpha1.PortRange
		want  []string
	}{{
		name:  "overlapping ranges",
		ports: [][]v1alpha1.PortRange{{pr(10, 20)}, {pr(15, 30)}, {{Port: 31}}, {{Port: 40}}},
		want: []string{`10-20 . 192.0.2.0/24 . tcp comment "p/r0"`, `21-30 . 192.0.2.0/24 . tcp comment "p/r1"`,
			`31 . 192.0.2.0/24 . tcp comment "p/r2"`, `40 . 192.0.2.0/24 . tcp comment "p/r3"`},
	}, {
		name:  "a later rule around an earlier one",
		ports: [][]v1alpha1.PortRange{{pr(15, 20)}, {pr(10, 30)}},
		want: []string{`10-14 . 192.0.2.0/24 . tcp comment "p/r1"`, `15-20 . 192.0.2.0/24 . tcp comment "p/r0"`,
			`21-30 . 192.0.2.0/24 . tcp comment "p/r1"`},
	}, {
		name:  "a shadowed rule counts nothing",
		ports: [][]v1alpha1.PortRange{{pr(10, 30)}, {pr(15, 20)}, {{Port: 31}, {Port: 32}}},
		want:  []string{`10-30 . 192.0.2.0/24 . tcp comment "p/r0"`, `31-32 . 192.0.2.0/24 . tcp comment "p/r2"`},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Compile(mk(tt.ports...), Options{minRunLen: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(rs.Sets) != 1 || !rs.Sets[0].Counter {
				t.Fatalf("want one counting set, got %+v", rs.Sets)
			}
			var got []string
			for _, e := range rs.Sets[0].Elements {
				got = append(got, formatElement(e, rs.Sets[0].Fields)+" comment "+text.Quote(e.Rule))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("elements (-want +got):\n%s", diff)
			}
			if r := rs.Chains[0].Rules[len(rs.Chains[0].Rules)-1]; r.Lookup == "" || r.Counter {
				t.Errorf("last input rule %+v: want the lookup, without a counter of its own", r)
			}
		})
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

// TestRunsOfExtensions checks which rules of iptables' extensions join
// runs: protocols by number and answers of Reject do, a run keeping one
// answer; source ports, ICMP types, limits, connection limits and TCP
// resets stay linear.
func TestRunsOfExtensions(t *testing.T) {
	eight := func(edit func(i int, r *v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallSpec {
		var spec v1alpha1.NodeFirewallSpec
		for i := range 8 {
			r := v1alpha1.NodeFirewallRule{Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput,
				Action: v1alpha1.ActionReject, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: int32(1000 + i)}}}
			edit(i, &r)
			spec.Rules = append(spec.Rules, r)
		}
		return spec
	}
	tests := []struct {
		name    string
		spec    v1alpha1.NodeFirewallSpec
		lookups []Verdict // verdicts of the lookup rules, in order, one per run (of both families)
	}{
		{"protocol numbers", eight(func(i int, r *v1alpha1.NodeFirewallRule) { r.Protocol, r.Ports = "41", nil }), []Verdict{VerdictReject}},
		{"one answer", eight(func(i int, r *v1alpha1.NodeFirewallRule) { r.RejectWith = v1alpha1.RejectWithAdminProhibited }),
			[]Verdict{VerdictRejectAdminProhibited}},
		{"answers that differ", eight(func(i int, r *v1alpha1.NodeFirewallRule) {
			if i == 4 {
				r.RejectWith = v1alpha1.RejectWithHostUnreachable
			}
		}), nil},
		{"port-unreachable is the default answer", eight(func(i int, r *v1alpha1.NodeFirewallRule) {
			if i%2 == 0 {
				r.RejectWith = v1alpha1.RejectWithPortUnreachable
			}
		}), []Verdict{VerdictReject}},
		{"TCP resets", eight(func(i int, r *v1alpha1.NodeFirewallRule) { r.RejectWith = v1alpha1.RejectWithTCPReset }), nil},
		{"source ports", eight(func(i int, r *v1alpha1.NodeFirewallRule) {
			r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}}
		}), nil},
		{"ICMP types", eight(func(i int, r *v1alpha1.NodeFirewallRule) {
			r.Protocol, r.Ports, r.ICMPTypes = v1alpha1.ProtocolICMP, nil, []v1alpha1.ICMPType{v1alpha1.ICMPType(fmt.Sprint(i))}
		}), nil},
		{"rate limits", eight(func(i int, r *v1alpha1.NodeFirewallRule) {
			r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: v1alpha1.RateUnitSecond}
		}), nil},
		{"connection limits", eight(func(i int, r *v1alpha1.NodeFirewallRule) { r.ConnLimit = &v1alpha1.ConnLimit{Above: 1} }), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Compile(tt.spec, Options{SetLookups: true})
			if err != nil {
				t.Fatal(err)
			}
			var got []Verdict
			for _, r := range chainOf(t, rs, ChainInput).Rules {
				if r.Lookup != "" {
					got = append(got, r.Verdict)
				}
			}
			if got = slices.Compact(got); !slices.Equal(got, tt.lookups) {
				t.Errorf("lookups with verdicts %v, want %v\n%s", got, tt.lookups, Render(rs))
			}
		})
	}
}
