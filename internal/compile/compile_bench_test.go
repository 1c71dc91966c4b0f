package compile

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// allowlistSpec is a node with n Input rules, a large allowlist: n-1
// rules accept a TCP or UDP port from a source of 10.0.0.0/8 (a host or a
// /24) or, one in four, from an IPv6 /48 of fd00::/8, and the last accepts
// TCP 5001 from two hosts. Input drops the rest. With flipEvery > 0 the
// action alternates between Accept and Drop every flipEvery rules.
func allowlistSpec(n, flipEvery int) v1alpha1.NodeFirewallSpec {
	const probePort = 5001
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
		if flipEvery > 0 && (i/flipEvery)%2 == 1 {
			rule.Action = v1alpha1.ActionDrop
		}
		spec.Rules = append(spec.Rules, rule)
	}
	spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{
		Policy: "bench", Mode: v1alpha1.PolicyModeEnforce, Name: "probe",
		Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP,
		Ports:   []v1alpha1.PortRange{{Port: probePort}},
		Sources: []string{"192.0.2.1", "2001:db8::1"},
	})
	return spec
}

// benchOptions are an agent's defaults with set lookups.
func benchOptions() Options {
	return Options{FailsafeInbound: DefaultFailsafeInbound(), FailsafeOutbound: DefaultFailsafeOutbound(), SetLookups: true}
}

func benchmarkCompile(b *testing.B, spec v1alpha1.NodeFirewallSpec) {
	opts := benchOptions()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(spec, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompile1k(b *testing.B)  { benchmarkCompile(b, allowlistSpec(1000, 0)) }
func BenchmarkCompile10k(b *testing.B) { benchmarkCompile(b, allowlistSpec(10000, 0)) }
func BenchmarkCompile50k(b *testing.B) { benchmarkCompile(b, allowlistSpec(50000, 0)) }

// BenchmarkCompile10kAlternating changes the action every 2,500 rules:
// four runs, each its own sets.
func BenchmarkCompile10kAlternating(b *testing.B) { benchmarkCompile(b, allowlistSpec(10000, 2500)) }
