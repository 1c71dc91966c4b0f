package diff

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Pools the random rule sets draw from. Addresses come from the probes'
// subnets: single hosts, prefixes from /31 to /16 that cover some of the
// probe addresses, host bits that must be masked off, and prefixes that
// cover none of them; IPv4 and IPv6 mixed.
var (
	sourcePool = []string{
		"10.77.1.10", "10.77.1.11/32", "10.77.1.12/31", "10.77.1.13/30", "10.77.1.8/29",
		"10.77.1.0/24", "10.77.0.0/16", "10.244.0.0/16", "10.244.1.10/32",
		"10.77.2.0/24", "10.77.2.1", "10.77.1.1/32", "10.77.3.0/24", "192.0.2.10",
		"fd77:1::10", "fd77:1::11/128", "fd77:1::10/127", "fd77:1::/64", "fd77::/16",
		"fd77:2::/64", "fd99::/64",
	}
	destinationPool = []string{
		"10.77.1.1", "10.77.2.1/32", "10.77.2.10", "10.77.2.20/30", "10.77.2.0/24",
		"10.244.2.0/24", "10.77.1.12/30", "10.77.1.0/24", "10.77.0.0/16", "10.99.0.1",
		"fd77:1::1", "fd77:2::/64", "fd77:1::10/128", "fd77::/16", "fd99::1",
	}
	// Interface names: exact names of the router's links, "+" wildcards
	// matching one, both or neither, a prefix that is not a name, and "+"
	// alone.
	inPool  = []string{"ethc0", "ethc0", "eths0", "eth+", "ethc+", "eths+", "e+", "+", "lo", "ethc", "wg0"}
	outPool = []string{"eths0", "eths0", "ethc0", "eth+", "eths+", "ethc+", "e+", "+", "lo", "eths", "wg+"}
)

// Ports of the random rule sets lie inside the served universe, one port
// away from its ends, so that every edge probe has a listener.
const (
	rulePortFirst = universeFirst + 1
	rulePortLast  = universeLast - 1
	maxProbePorts = 8
)

// randomSpec draws a rule set: 1 to 12 rules over all three chains, with
// random actions, protocols, ports, addresses, interfaces, states, logging
// and audit mode, and random default actions. Half the sets have 8 to 12
// rules clustered in one chain with one main action and few extra matches,
// so that long runs of plain rules with the same verdict, which the
// compiler turns into set lookups, come up often.
func randomSpec(rng *rand.Rand) v1alpha1.NodeFirewallSpec {
	chance := func(p float64) bool { return rng.Float64() < p }
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	picks := func(s []string) []string {
		n := 1 + rng.IntN(3)
		out := make([]string, n)
		for i := range out {
			out[i] = pick(s)
		}
		return out
	}
	actions := []v1alpha1.Action{v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject}

	clustered := chance(0.5)
	mainChain := v1alpha1.Chains[rng.IntN(len(v1alpha1.Chains))]
	mainAction := actions[rng.IntN(len(actions))]
	extra := 1.0 // scales the odds of interfaces, states, logging and audit
	n := 1 + rng.IntN(12)
	if clustered {
		extra, n = 0.1, 8+rng.IntN(5)
	}
	var spec v1alpha1.NodeFirewallSpec
	for i := range n {
		r := v1alpha1.NodeFirewallRule{
			Policy: "diff",
			Mode:   v1alpha1.PolicyModeEnforce,
			Name:   fmt.Sprintf("r%d", i+1),
			Chain:  v1alpha1.Chains[rng.IntN(len(v1alpha1.Chains))],
			Action: actions[rng.IntN(len(actions))],
		}
		if clustered && chance(0.95) {
			r.Chain = mainChain
		}
		if clustered && chance(0.95) {
			r.Action = mainAction
		}
		if chance(0.1 * extra) {
			r.Policy, r.Mode = "audit", v1alpha1.PolicyModeAudit
		}
		switch x := rng.Float64(); {
		case x < 0.4:
			r.Protocol = v1alpha1.ProtocolTCP
		case x < 0.7:
			r.Protocol = v1alpha1.ProtocolUDP
		case x < 0.73:
			// Matches none of the probes, but the ICMP errors of rejects.
			r.Protocol = v1alpha1.ProtocolICMP
		case x < 0.75:
			r.Protocol = v1alpha1.ProtocolICMPv6
		}
		if r.Protocol.HasPorts() && chance(0.75) {
			for range 1 + rng.IntN(3) {
				first := int32(rulePortFirst + rng.IntN(rulePortLast-rulePortFirst+1))
				pr := v1alpha1.PortRange{Port: first}
				if chance(0.5) {
					pr.EndPort = min(first+1+int32(rng.IntN(12)), rulePortLast)
					if pr.EndPort == first {
						pr.EndPort = 0
					}
				}
				r.Ports = append(r.Ports, pr)
			}
		}
		if chance(0.35) {
			r.Sources = picks(sourcePool)
		}
		if chance(0.25) {
			r.Destinations = picks(destinationPool)
		}
		switch r.Chain {
		case v1alpha1.ChainInput:
			if chance(0.25 * extra) {
				r.InInterface = pick(inPool)
			}
		case v1alpha1.ChainForward:
			if chance(0.2 * extra) {
				r.InInterface = pick(inPool)
			}
			if chance(0.2 * extra) {
				r.OutInterface = pick(outPool)
			}
		case v1alpha1.ChainOutput:
			if chance(0.25 * extra) {
				r.OutInterface = pick(outPool)
			}
		}
		switch x := rng.Float64() / extra; {
		case x < 0.12:
			r.States = []v1alpha1.ConnState{v1alpha1.ConnStateNew}
		case x < 0.15:
			r.States = []v1alpha1.ConnState{v1alpha1.ConnStateNew, v1alpha1.ConnStateEstablished}
		case x < 0.17:
			r.States = []v1alpha1.ConnState{v1alpha1.ConnStateInvalid}
		}
		r.Log = chance(0.1 * extra)
		spec.Rules = append(spec.Rules, r)
	}
	for _, c := range v1alpha1.Chains {
		p := v1alpha1.ChainPolicyAccept
		if chance(0.5) {
			p = v1alpha1.ChainPolicyDrop
			if chance(0.2) {
				spec.AuditedChains = append(spec.AuditedChains, c)
			}
		}
		spec.DefaultActions.Set(c, p)
	}
	return spec
}

// probePorts are the ports to probe for a rule set: the first and last
// port of every range and their outer neighbours, a port inside each
// range, and two random ones, at most maxProbePorts of them.
func probePorts(rng *rand.Rand, spec v1alpha1.NodeFirewallSpec) []uint16 {
	var cand []uint16
	add := func(p int32) {
		if p >= universeFirst && p <= universeLast && !slices.Contains(cand, uint16(p)) {
			cand = append(cand, uint16(p))
		}
	}
	for _, r := range spec.Rules {
		for _, pr := range r.Ports {
			add(pr.Port - 1)
			add(pr.Port)
			add(pr.Last())
			add(pr.Last() + 1)
			add((pr.Port + pr.Last()) / 2)
		}
	}
	rng.Shuffle(len(cand), func(i, j int) { cand[i], cand[j] = cand[j], cand[i] })
	if len(cand) > maxProbePorts-2 {
		cand = cand[:maxProbePorts-2]
	}
	for len(cand) < maxProbePorts {
		add(int32(universeFirst + rng.IntN(universeLast-universeFirst+1)))
	}
	slices.Sort(cand)
	return cand
}
