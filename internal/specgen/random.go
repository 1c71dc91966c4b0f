package specgen

import (
	"fmt"
	"math/rand/v2"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Universe is what Random draws from: the addresses, interface names and
// ports that mean something where the rule sets are loaded.
type Universe struct {
	// Policy names the policy of the rules; audit-mode rules belong to
	// policy "audit".
	Policy string
	// Sources and Destinations are the addresses and prefixes the rules
	// match, as a rule writes them.
	Sources, Destinations []string
	// InInterfaces and OutInterfaces are the interface names and "+"
	// wildcards the rules match.
	InInterfaces, OutInterfaces []string
	// FirstPort and LastPort bound the rules' ports.
	FirstPort, LastPort int32

	// Matches of iptables' extensions, drawn only when set.

	// FirstSourcePort and LastSourcePort bound the rules' source ports;
	// 0 draws none.
	FirstSourcePort, LastSourcePort int32
	// Protocols are the IP protocols other than TCP, UDP, SCTP, ICMP and
	// ICMPv6 that rules match, by name or number.
	Protocols []v1alpha1.Protocol
	// ICMPTypes and ICMPv6Types are the types that ICMP and ICMPv6 rules
	// match.
	ICMPTypes, ICMPv6Types []v1alpha1.ICMPType
	// RejectAnswers draws answers of Reject rules other than the default.
	RejectAnswers bool
	// Limits draws rate limits and connection limits, so high that the
	// rule sets' probes never reach them.
	Limits bool
}

// Random draws a rule set from u: 1 to 12 rules over all four chains,
// with random actions, protocols, ports, addresses, interfaces, states,
// logging and audit mode, and random default actions. Half the sets have 8
// to 12 rules clustered in one chain with one main action and few extra
// matches, so that long runs of plain rules with the same verdict, which
// the compiler turns into set lookups, come up often. The same rng state
// and universe give the same rule set.
func Random(rng *rand.Rand, u Universe) v1alpha1.NodeFirewallSpec {
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
			Policy: u.Policy,
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
		case x < 0.78 && len(u.Protocols) > 0:
			r.Protocol = u.Protocols[rng.IntN(len(u.Protocols))]
		}
		if r.Protocol.HasPorts() && chance(0.75) {
			for range 1 + rng.IntN(3) {
				first := u.FirstPort + int32(rng.IntN(int(u.LastPort-u.FirstPort+1)))
				pr := v1alpha1.PortRange{Port: first}
				if chance(0.5) {
					pr.EndPort = min(first+1+int32(rng.IntN(12)), u.LastPort)
					if pr.EndPort == first {
						pr.EndPort = 0
					}
				}
				r.Ports = append(r.Ports, pr)
			}
		}
		if chance(0.35) {
			r.Sources = picks(u.Sources)
		}
		if chance(0.25) {
			r.Destinations = picks(u.Destinations)
		}
		switch r.Chain {
		case v1alpha1.ChainInput, v1alpha1.ChainPreRouting:
			if chance(0.25 * extra) {
				r.InInterface = pick(u.InInterfaces)
			}
		case v1alpha1.ChainForward:
			if chance(0.2 * extra) {
				r.InInterface = pick(u.InInterfaces)
			}
			if chance(0.2 * extra) {
				r.OutInterface = pick(u.OutInterfaces)
			}
		case v1alpha1.ChainOutput:
			if chance(0.25 * extra) {
				r.OutInterface = pick(u.OutInterfaces)
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
		drawExtensions(rng, u, &r, extra)
		spec.Rules = append(spec.Rules, r)
	}
	for _, c := range v1alpha1.Chains {
		p := v1alpha1.ChainPolicyAccept
		// PreRouting's Drop hides Input from every probe it drops: less often.
		drop := 0.5
		if c == v1alpha1.ChainPreRouting {
			drop = 0.25
		}
		if chance(drop) {
			p = v1alpha1.ChainPolicyDrop
			if chance(0.2) {
				spec.AuditedChains = append(spec.AuditedChains, c)
			}
		}
		spec.DefaultActions.Set(c, p)
	}
	return spec
}

// drawExtensions gives a rule some of the universe's matches and answers
// of iptables' extensions: source ports, ICMP types, an answer of Reject,
// limits. extra scales the odds, as for interfaces and states.
func drawExtensions(rng *rand.Rand, u Universe, r *v1alpha1.NodeFirewallRule, extra float64) {
	chance := func(p float64) bool { return rng.Float64() < p }
	if u.FirstSourcePort > 0 && r.Protocol.HasPorts() && chance(0.3*extra) {
		for range 1 + rng.IntN(2) {
			first := u.FirstSourcePort + int32(rng.IntN(int(u.LastSourcePort-u.FirstSourcePort+1)))
			pr := v1alpha1.SourcePortRange{Port: first}
			if chance(0.5) {
				if end := min(first+1+int32(rng.IntN(4)), u.LastSourcePort); end > first {
					pr.EndPort = end
				}
			}
			r.SourcePorts = append(r.SourcePorts, pr)
		}
	}
	types := map[v1alpha1.Protocol][]v1alpha1.ICMPType{v1alpha1.ProtocolICMP: u.ICMPTypes, v1alpha1.ProtocolICMPv6: u.ICMPv6Types}[r.Protocol]
	if len(types) > 0 && chance(0.6) {
		for range 1 + rng.IntN(3) {
			r.ICMPTypes = append(r.ICMPTypes, types[rng.IntN(len(types))])
		}
	}
	if u.RejectAnswers && r.Action == v1alpha1.ActionReject && chance(0.4) {
		answers := []v1alpha1.RejectWith{v1alpha1.RejectWithPortUnreachable, v1alpha1.RejectWithHostUnreachable,
			v1alpha1.RejectWithAdminProhibited, v1alpha1.RejectWithNetUnreachable}
		if r.Protocol == v1alpha1.ProtocolTCP {
			answers = append(answers, v1alpha1.RejectWithTCPReset, v1alpha1.RejectWithTCPReset)
		}
		r.RejectWith = answers[rng.IntN(len(answers))]
	}
	if u.Limits {
		switch x := rng.Float64() / extra; {
		case x < 0.05 && !r.Log:
			r.Limit = &v1alpha1.RateLimit{Rate: 10000, Per: v1alpha1.RateUnitSecond, Burst: 10000, PerSource: chance(0.5)}
		case x < 0.1:
			r.ConnLimit = &v1alpha1.ConnLimit{Above: 10000}
		}
	}
}
