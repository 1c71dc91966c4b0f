package nft

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// randomSpec is a node with long runs of simple rules mixed with other
// rules, over values that overlap, nest and touch, in every chain.
func randomSpec(r *rand.Rand) v1alpha1.NodeFirewallSpec {
	addrs := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "10.1.2.0/24", "192.0.2.0/24", "0.0.0.0/0",
		"::/0", "2001:db8::/32", "2001:db8::1", "fd00::/8", "::ffff:10.1.2.3", "255.255.255.255"}
	protos := []v1alpha1.Protocol{"", v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP,
		v1alpha1.ProtocolICMP, v1alpha1.ProtocolICMPv6}
	var spec v1alpha1.NodeFirewallSpec
	action := map[v1alpha1.Chain]v1alpha1.Action{}
	for i := range r.IntN(120) {
		c := v1alpha1.Chains[r.IntN(3)]
		if _, ok := action[c]; !ok || r.IntN(30) == 0 {
			action[c] = []v1alpha1.Action{v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject}[r.IntN(3)]
		}
		rule := v1alpha1.NodeFirewallRule{Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: c, Action: action[c],
			Protocol: protos[r.IntN(len(protos))]}
		if rule.Protocol.HasPorts() && r.IntN(4) > 0 {
			first := int32(1 + r.IntN(65535))
			rule.Ports = []v1alpha1.PortRange{{Port: first, EndPort: min(65535, first+int32(r.IntN(3)*r.IntN(5000)))}}
		}
		for range r.IntN(3) {
			rule.Sources = append(rule.Sources, addrs[r.IntN(len(addrs))])
		}
		for range r.IntN(2) {
			rule.Destinations = append(rule.Destinations, addrs[r.IntN(len(addrs))])
		}
		if r.IntN(20) == 0 {
			rule.Log = true
		}
		spec.Rules = append(spec.Rules, rule)
	}
	return spec
}

// TestRandomRulesetsEncode encodes many compiled random specs: whatever
// Compile emits, the encoder takes.
func TestRandomRulesetsEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := range 500 {
		spec := randomSpec(r)
		rs, err := compile.Compile(spec, compile.Options{FailsafeInbound: compile.DefaultFailsafeInbound(), SetLookups: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := buildPlan(rs, "t"); err != nil {
			t.Fatalf("spec %d: %v\n%s", i, err, compile.Render(rs))
		}
	}
}

// TestRandomRulesetsLoad programs compiled random specs into the kernel,
// each over the previous one: the kernel takes every set (no overlapping
// elements) and the table reads back in sync.
func TestRandomRulesetsLoad(t *testing.T) {
	_, p := target(t)
	r := rand.New(rand.NewPCG(13, 14))
	n := 40
	if testing.Short() {
		n = 10
	}
	for i := range n {
		rs, err := compile.Compile(randomSpec(r), compile.Options{SetLookups: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Apply(rs); err != nil {
			t.Fatalf("spec %d: %v\n%s", i, err, compile.Render(rs))
		}
		mustInSync(t, p, rs, true)
	}
}
