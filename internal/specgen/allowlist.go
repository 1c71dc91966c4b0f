package specgen

import (
	"fmt"
	"math/rand/v2"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Allowlist is a node with n Input rules, a large allowlist: n-1 rules
// accept a TCP or UDP port from a source of 10.0.0.0/8 (a host or a /24)
// or, one in four, from an IPv6 /48 of fd00::/8, and the last accepts TCP
// probePort from probeSources. Input drops the rest. The random rules
// never use probePort, and the same n gives the same spec.
func Allowlist(n int, probePort int32, probeSources ...string) v1alpha1.NodeFirewallSpec {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	spec := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop}}
	for i := range n - 1 {
		port := int32(1024 + r.IntN(64000))
		if port == probePort {
			port++
		}
		rule := v1alpha1.NodeFirewallRule{
			Policy: "bench", Mode: v1alpha1.PolicyModeEnforce, Name: fmt.Sprintf("r%d", i),
			Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
			Protocol: []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP}[r.IntN(2)],
			Ports:    []v1alpha1.PortRange{{Port: port}},
		}
		switch r.IntN(4) {
		case 0:
			rule.Sources = []string{fmt.Sprintf("fd%02x:%x:%x::/48", r.IntN(256), r.IntN(65536), r.IntN(65536))}
		case 1:
			rule.Sources = []string{fmt.Sprintf("10.%d.%d.0/24", r.IntN(256), r.IntN(256))}
		default:
			rule.Sources = []string{fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256))}
		}
		spec.Rules = append(spec.Rules, rule)
	}
	spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{
		Policy: "bench", Mode: v1alpha1.PolicyModeEnforce, Name: "probe",
		Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP,
		Ports:   []v1alpha1.PortRange{{Port: probePort}},
		Sources: probeSources,
	})
	return spec
}
