package compile

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// TestCompilePreRouting checks the prerouting chain: its hook and
// priority, the implicit rules (established, the guard that lets go what is
// not addressed to the node, then Input's loopback, neighbour discovery
// and inbound failsafes), the rules and the default action.
func TestCompilePreRouting(t *testing.T) {
	opts := Options{FailsafeInbound: []Failsafe{{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{22, 22}}}}
	r := rule("nodeports-elsewhere", v1alpha1.ChainPreRouting, v1alpha1.ActionReject)
	r.Protocol, r.Ports, r.Sources = v1alpha1.ProtocolTCP, []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}}, []string{"192.0.2.0/24"}
	spec := v1alpha1.NodeFirewallSpec{
		Rules:          []v1alpha1.NodeFirewallRule{r},
		DefaultActions: v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop},
	}
	want := Chain{
		Name: "prerouting", Hook: HookPreRouting, Priority: -110, Policy: VerdictDrop,
		Rules: []Rule{
			{CtStates: CtStateEstablished | CtStateRelated, Verdict: VerdictAccept, Comment: "nodefw: established,related"},
			{DAddrType: DAddrTypeNotLocal, Verdict: VerdictAccept, Comment: "nodefw: not addressed to the node"},
			{IIfName: "lo", Verdict: VerdictAccept, Comment: "nodefw: loopback"},
			{Family: FamilyIPv6, L4Proto: 58, ICMPTypes: []uint8{133, 134, 135, 136, 137}, Verdict: VerdictAccept, Comment: "nodefw: icmpv6 neighbour discovery"},
			{L4Proto: 6, DPorts: []PortInterval{ports(22, 22)}, Counter: true, Verdict: VerdictAccept, Comment: "nodefw: failsafe tcp"},
			{Family: FamilyIPv4, L4Proto: 6, DPorts: []PortInterval{ports(30000, 32767)}, SAddrs: prefixes("192.0.2.0/24"),
				Counter: true, Verdict: VerdictReject, Comment: "pol/nodeports-elsewhere"},
		},
	}
	rs, err := Compile(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Chains[0].Name != ChainPreRouting {
		t.Fatalf("chains %v: prerouting is not first, where packets meet it", chainNames(rs))
	}
	if diff := cmp.Diff(want, rs.Chains[0], cmpOpts); diff != "" {
		t.Errorf("prerouting chain (-want +got):\n%s", diff)
	}
	checkInvariants(t, rs)
	text := Render(rs)
	for _, line := range []string{
		"type filter hook prerouting priority -110; policy drop;",
		`fib daddr type != local accept comment "nodefw: not addressed to the node"`,
		`ip saddr 192.0.2.0/24 meta l4proto tcp th dport 30000-32767 counter reject comment "pol/nodeports-elsewhere"`,
	} {
		if !strings.Contains(text, line) {
			t.Errorf("rendered ruleset lacks %q:\n%s", line, text)
		}
	}
	nftCheck(t, text)
}

// TestCompilePreRoutingRuns: a run of PreRouting rules becomes set
// lookups of the prerouting chain, keyed as Input's (source first).
func TestCompilePreRoutingRuns(t *testing.T) {
	var spec v1alpha1.NodeFirewallSpec
	for i := range minRunRules {
		r := rule(fmt.Sprintf("block-%d", i), v1alpha1.ChainPreRouting, v1alpha1.ActionDrop)
		r.Protocol, r.Ports = v1alpha1.ProtocolTCP, []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}}
		r.Sources = []string{fmt.Sprintf("203.0.113.%d", 2*i)}
		spec.Rules = append(spec.Rules, r)
	}
	rs, err := Compile(spec, Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	s := rs.Set("prerouting-run-1-v4")
	if s == nil {
		t.Fatalf("no set prerouting-run-1-v4 in\n%s", Render(rs))
	}
	if want := []SetField{FieldDPort, FieldSAddr, FieldL4Proto}; !slices.Equal(s.Fields, want) {
		t.Errorf("set fields %v, want %v", s.Fields, want)
	}
	if len(s.Elements) != minRunRules {
		t.Errorf("set has %d elements, want %d", len(s.Elements), minRunRules)
	}
	pre := chainOf(t, rs, ChainPreRouting)
	last := pre.Rules[len(pre.Rules)-1]
	if last.Lookup != s.Name || last.Verdict != VerdictDrop {
		t.Errorf("last prerouting rule %+v, want a drop looking up %s", last, s.Name)
	}
	checkInvariants(t, rs)
	nftCheck(t, Render(rs))
}

func chainNames(rs *Ruleset) []string {
	var out []string
	for _, c := range rs.Chains {
		out = append(out, c.Name)
	}
	return out
}
