package compile

import (
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/specgen"
)

// allowlistSpec is specgen.Allowlist with its last rule accepting TCP 5001
// from two hosts; with flipEvery > 0 the action alternates between Accept
// and Drop every flipEvery rules.
func allowlistSpec(n, flipEvery int) v1alpha1.NodeFirewallSpec {
	spec := specgen.Allowlist(n, 5001, "192.0.2.1", "2001:db8::1")
	if flipEvery > 0 {
		for i := range n - 1 {
			if (i/flipEvery)%2 == 1 {
				spec.Rules[i].Action = v1alpha1.ActionDrop
			}
		}
	}
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
