package specgen

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/reference"
)

var testUniverse = Universe{
	Policy:        "random",
	Sources:       []string{"10.0.0.1", "10.0.0.0/24", "2001:db8::/64"},
	Destinations:  []string{"10.0.1.1", "2001:db8:1::1"},
	InInterfaces:  []string{"eth0", "eth+"},
	OutInterfaces: []string{"eth1", "+"},
	FirstPort:     4001,
	LastPort:      4062,
}

// TestRandom draws many rule sets: each is valid, draws only from the
// universe, comes out the same from the same seed, and long runs of one
// chain and one action come up.
func TestRandom(t *testing.T) {
	u := testUniverse
	longRuns := 0
	for i := range 500 {
		spec := Random(rand.New(rand.NewPCG(1, uint64(i))), u)
		if err := reference.Validate(spec); err != nil {
			t.Fatalf("set %d is invalid: %v", i, err)
		}
		if again := Random(rand.New(rand.NewPCG(1, uint64(i))), u); !cmp.Equal(spec, again) {
			t.Fatalf("set %d differs when drawn again from the same seed:\n%s", i, cmp.Diff(spec, again))
		}
		if n := len(spec.Rules); n < 1 || n > 12 {
			t.Errorf("set %d has %d rules, want 1 to 12", i, n)
		}
		same := map[[2]string]int{}
		for _, r := range spec.Rules {
			if r.Policy != u.Policy && r.Policy != "audit" {
				t.Errorf("set %d rule %s: policy %q", i, r.Name, r.Policy)
			}
			for _, p := range r.Ports {
				if p.Port < u.FirstPort || p.Last() > u.LastPort {
					t.Errorf("set %d rule %s: ports %d-%d outside %d-%d", i, r.Name, p.Port, p.Last(), u.FirstPort, u.LastPort)
				}
			}
			for _, in := range []struct {
				got  []string
				pool []string
			}{
				{r.Sources, u.Sources}, {r.Destinations, u.Destinations},
				{nonEmpty(r.InInterface), u.InInterfaces}, {nonEmpty(r.OutInterface), u.OutInterfaces},
			} {
				for _, v := range in.got {
					if !slices.Contains(in.pool, v) {
						t.Errorf("set %d rule %s: %q is not in %v", i, r.Name, v, in.pool)
					}
				}
			}
			same[[2]string{string(r.Chain), string(r.Action)}]++
		}
		for _, n := range same {
			if n >= 8 {
				longRuns++
				break
			}
		}
	}
	if longRuns < 100 {
		t.Errorf("%d of 500 sets have 8 rules of one chain and action; want the clustered half to give many", longRuns)
	}
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// TestRandomDefaults: every chain gets a default action, and audited chains
// are ones that drop.
func TestRandomDefaults(t *testing.T) {
	for i := range 200 {
		spec := Random(rand.New(rand.NewPCG(2, uint64(i))), testUniverse)
		for _, c := range v1alpha1.Chains {
			if spec.DefaultActions.For(c) == "" {
				t.Fatalf("set %d: no default action for %s", i, c)
			}
		}
		for _, c := range spec.AuditedChains {
			if spec.DefaultActions.For(c) != v1alpha1.ChainPolicyDrop {
				t.Errorf("set %d: chain %s is audited with default %s", i, c, spec.DefaultActions.For(c))
			}
		}
	}
}

// extensionsUniverse is testUniverse with iptables' extensions.
var extensionsUniverse = func() Universe {
	u := testUniverse
	u.FirstSourcePort, u.LastSourcePort = 5000, 5031
	u.Protocols = []v1alpha1.Protocol{v1alpha1.ProtocolGRE, "253"}
	u.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "FragmentationNeeded", "3/13"}
	u.ICMPv6Types = []v1alpha1.ICMPType{"EchoRequest", "PacketTooBig", "1/4"}
	u.RejectAnswers, u.Limits = true, true
	return u
}()

// TestRandomExtensions draws rule sets with iptables' extensions: each is
// valid, draws only from the universe, and every extension comes up.
func TestRandomExtensions(t *testing.T) {
	u := extensionsUniverse
	seen := map[string]int{}
	for i := range 500 {
		spec := Random(rand.New(rand.NewPCG(3, uint64(i))), u)
		if err := reference.Validate(spec); err != nil {
			t.Fatalf("set %d is invalid: %v", i, err)
		}
		for _, r := range spec.Rules {
			for _, p := range r.SourcePorts {
				seen["sourcePorts"]++
				if p.Port < u.FirstSourcePort || p.Last() > u.LastSourcePort {
					t.Errorf("set %d rule %s: source ports %d-%d outside the universe", i, r.Name, p.Port, p.Last())
				}
			}
			if slices.Contains(u.Protocols, r.Protocol) {
				seen["protocols"]++
			}
			for _, ty := range r.ICMPTypes {
				seen["icmpTypes"]++
				if !slices.Contains(append(slices.Clone(u.ICMPTypes), u.ICMPv6Types...), ty) {
					t.Errorf("set %d rule %s: ICMP type %s outside the universe", i, r.Name, ty)
				}
			}
			if r.RejectWith != "" {
				seen["rejectWith "+string(r.RejectWith)]++
			}
			if r.Limit != nil {
				seen["limit"]++
				if r.Limit.Rate < 10000 {
					t.Errorf("set %d rule %s: a limit probes could reach: %+v", i, r.Name, r.Limit)
				}
			}
			if r.ConnLimit != nil {
				seen["connLimit"]++
			}
		}
	}
	for _, k := range []string{"sourcePorts", "protocols", "icmpTypes", "limit", "connLimit", "rejectWith TCPReset",
		"rejectWith HostUnreachable", "rejectWith AdminProhibited", "rejectWith NetUnreachable", "rejectWith PortUnreachable"} {
		if seen[k] < 10 {
			t.Errorf("%s drawn %d times in 500 sets", k, seen[k])
		}
	}
	// A universe without extensions draws none.
	for i := range 100 {
		for _, r := range Random(rand.New(rand.NewPCG(3, uint64(i))), testUniverse).Rules {
			if len(r.SourcePorts) > 0 || len(r.ICMPTypes) > 0 || r.RejectWith != "" || r.Limit != nil || r.ConnLimit != nil {
				t.Fatalf("set %d rule %s has extensions: %+v", i, r.Name, r)
			}
		}
	}
}
