package diff

import (
	"fmt"
	"slices"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// runRule is a rule of policy "runs" with only protocol, ports and
// addresses: the kind the compiler may merge with its neighbours into set
// lookups.
func runRule(chain v1alpha1.Chain, action v1alpha1.Action, proto v1alpha1.Protocol, ports []v1alpha1.PortRange, srcs, dsts []string) v1alpha1.NodeFirewallRule {
	return v1alpha1.NodeFirewallRule{
		Policy: "runs", Mode: v1alpha1.PolicyModeEnforce, Chain: chain, Action: action,
		Protocol: proto, Ports: ports, Sources: srcs, Destinations: dsts,
	}
}

func ports(p ...int32) []v1alpha1.PortRange {
	out := make([]v1alpha1.PortRange, 0, len(p)/2)
	for i := 0; i+1 < len(p); i += 2 {
		out = append(out, v1alpha1.PortRange{Port: p[i], EndPort: p[i+1]})
	}
	return out
}

func named(rules []v1alpha1.NodeFirewallRule) []v1alpha1.NodeFirewallRule {
	for i := range rules {
		rules[i].Name = fmt.Sprintf("r%d", i+1)
	}
	return rules
}

// TestLongRuns compares rule sets whose chains hold long runs of plain
// rules with one verdict, well past the length at which the compiler turns
// a run into set lookups: overlapping and adjacent ports, ranges up to
// 65535, rules with and without ports, prefixes of every size, IPv4 and
// IPv6 together, and runs of every verdict next to each other.
func TestLongRuns(t *testing.T) {
	tp := env(t)
	const (
		tcp = v1alpha1.ProtocolTCP
		udp = v1alpha1.ProtocolUDP
		in  = v1alpha1.ChainInput
		fwd = v1alpha1.ChainForward
		out = v1alpha1.ChainOutput
		acc = v1alpha1.ActionAccept
		drp = v1alpha1.ActionDrop
		rej = v1alpha1.ActionReject
	)
	var rules []v1alpha1.NodeFirewallRule
	// Input: 16 accepts, one drop, 10 rejects; default drop.
	rules = append(rules,
		runRule(in, acc, tcp, ports(2379, 2380), nil, nil),
		runRule(in, acc, tcp, ports(6443, 0), nil, nil),
		runRule(in, acc, tcp, ports(10250, 10252), nil, nil),
		runRule(in, acc, udp, ports(8472, 0), nil, nil),
		runRule(in, acc, tcp, ports(4010, 0, 4012, 4013), []string{"10.77.1.10", "fd77:1::10"}, nil),
		runRule(in, acc, tcp, ports(4011, 4012), []string{"10.77.1.12/31"}, nil),
		runRule(in, acc, udp, ports(4020, 4025), nil, []string{"10.77.2.1", "fd77:2::/64"}),
		runRule(in, acc, udp, ports(4024, 4028), []string{"10.77.1.11"}, []string{"10.77.1.0/24"}),
		runRule(in, acc, tcp, ports(4055, 65535), []string{"10.77.1.13/32"}, nil),
		runRule(in, acc, tcp, ports(1, 4002), []string{"fd77:1::11"}, nil),
		runRule(in, acc, "", nil, []string{"10.244.0.0/16"}, nil),
		runRule(in, acc, udp, nil, []string{"10.77.1.12/30"}, []string{"10.77.2.1"}),
		runRule(in, acc, tcp, ports(4030, 4031), []string{"10.77.0.0/16"}, []string{"10.77.1.1"}),
		runRule(in, acc, tcp, ports(4032, 4033), []string{"10.77.1.8/29"}, []string{"10.77.2.0/24"}),
		runRule(in, acc, tcp, ports(4034, 0), []string{"fd77::/16"}, nil),
		runRule(in, acc, udp, ports(4035, 4036), []string{"0.0.0.0/0"}, []string{"10.77.2.1"}),
		runRule(in, drp, tcp, ports(4040, 4041), nil, nil),
		runRule(in, rej, tcp, ports(4040, 4045), nil, nil),
		runRule(in, rej, udp, ports(4040, 4045), []string{"10.77.1.10", "10.77.1.11"}, nil),
		runRule(in, rej, udp, ports(4046, 0), nil, nil),
		runRule(in, rej, tcp, ports(4047, 4049), []string{"::/0"}, nil),
		runRule(in, rej, tcp, ports(4047, 4049), []string{"10.77.1.12/30"}, nil),
		runRule(in, rej, "", nil, []string{"10.77.1.13"}, []string{"10.77.2.1"}),
		runRule(in, rej, udp, ports(4050, 4054), nil, []string{"10.77.1.1"}),
		runRule(in, rej, tcp, ports(4050, 4052), nil, []string{"fd77:1::1"}),
		runRule(in, rej, tcp, ports(4053, 4054), []string{"10.77.1.11"}, nil),
		runRule(in, rej, udp, ports(4060, 4063), nil, nil),
	)
	// Forward: 10 drops, then 8 accepts; default accept.
	for i, src := range []string{"10.77.1.10", "10.77.1.11/32", "10.77.1.12/31", "fd77:1::11", "10.244.1.0/24"} {
		rules = append(rules, runRule(fwd, drp, tcp, ports(int32(4010+2*i), int32(4011+2*i)), []string{src}, nil))
	}
	rules = append(rules,
		runRule(fwd, drp, udp, ports(4010, 4019), nil, []string{"10.77.2.20"}),
		runRule(fwd, drp, udp, ports(4015, 4025), nil, []string{"10.77.2.10", "fd77:2::10"}),
		runRule(fwd, drp, "", nil, []string{"10.77.1.13"}, []string{"10.244.2.0/24"}),
		runRule(fwd, drp, tcp, ports(4030, 4040), []string{"10.77.2.0/24"}, []string{"10.77.1.0/24"}),
		runRule(fwd, drp, udp, nil, []string{"10.77.2.10"}, []string{"10.77.1.13"}),
	)
	for i := range 8 {
		rules = append(rules, runRule(fwd, acc, []v1alpha1.Protocol{tcp, udp}[i%2], ports(int32(4040+i), 0), nil, nil))
	}
	// Output: 10 rejects; default drop.
	for i, dst := range []string{"10.77.1.10", "10.77.1.13/32", "10.244.1.0/24", "fd77:1::10", "10.77.2.20/30"} {
		rules = append(rules,
			runRule(out, rej, tcp, ports(int32(4010+3*i), int32(4012+3*i)), nil, []string{dst}),
			runRule(out, rej, udp, ports(int32(4011+3*i), int32(4013+3*i)), []string{"10.77.2.1", "fd77:2::1"}, []string{dst}))
	}
	rules = append(rules, runRule(out, acc, "", nil, nil, nil))
	spec := v1alpha1.NodeFirewallSpec{
		Rules:          named(rules),
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyDrop},
	}
	var probePorts []uint16
	for p := uint16(universeFirst); p <= universeLast; p++ {
		probePorts = append(probePorts, p)
	}
	var st stats
	tp.check(t, newRuleCase("long runs", spec), matrix(pairs(true), slices.Concat(probePorts, seedTCPPorts), probePorts), &st)
	t.Log(&st)
}

// TestRunWithMappedAddress checks a run one of whose rules names an
// IPv4-mapped IPv6 address, which the API accepts and which matches only
// IPv6 packets that carry it (none here).
func TestRunWithMappedAddress(t *testing.T) {
	tp := env(t)
	var rules []v1alpha1.NodeFirewallRule
	for i := range 9 {
		rules = append(rules, runRule(v1alpha1.ChainInput, v1alpha1.ActionAccept, v1alpha1.ProtocolTCP, ports(int32(4010+i), 0), nil, nil))
	}
	rules = append(rules, runRule(v1alpha1.ChainInput, v1alpha1.ActionAccept, v1alpha1.ProtocolTCP, ports(4030, 4031), []string{"::ffff:10.77.1.10"}, nil))
	spec := v1alpha1.NodeFirewallSpec{
		Rules:          named(rules),
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}
	var st stats
	p := []uint16{4009, 4010, 4018, 4019, 4030, 4031}
	tp.check(t, newRuleCase("run with a mapped address", spec), matrix(pairs(true), p, p), &st)
}
