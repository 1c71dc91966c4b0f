package diff

import (
	"math/rand/v2"
	"slices"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/specgen"
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

// randomUniverse is what the random rule sets draw from: the pools above,
// and ports inside the served universe, one port away from its ends, so
// that every edge probe has a listener.
var randomUniverse = specgen.Universe{
	Policy:          "diff",
	Sources:         sourcePool,
	Destinations:    destinationPool,
	InInterfaces:    inPool,
	OutInterfaces:   outPool,
	FirstPort:       universeFirst + 1,
	LastPort:        universeLast - 1,
	FirstSourcePort: sourceFirst + 1,
	LastSourcePort:  sourceLast - 1,
	Protocols:       []v1alpha1.Protocol{v1alpha1.ProtocolGRE, v1alpha1.ProtocolESP, "253"},
	ICMPTypes: []v1alpha1.ICMPType{"EchoRequest", "DestinationUnreachable", "FragmentationNeeded", "PortUnreachable",
		"3/13", "TimeExceeded", "TTLZeroDuringReassembly", "TimestampRequest", "0"},
	ICMPv6Types: []v1alpha1.ICMPType{"EchoRequest", "PacketTooBig", "DestinationUnreachable", "1/4", "NoRoute",
		"AddressUnreachable", "TimeExceeded", "ParameterProblem"},
	RejectAnswers: true,
	Limits:        true,
}

// Source ports of the probes: free in every namespace (no listener, not
// ephemeral), so that any probe may take one.
const (
	sourceFirst = 5000
	sourceLast  = 5031
)

// maxProbeSourcePorts bounds the source ports probed for a rule set.
const maxProbeSourcePorts = 4

// probeSourcePorts are the source ports to probe for a rule set whose
// rules match some: the first and last port of every range and their
// outer neighbours, at most maxProbeSourcePorts of them; none for a rule
// set without source ports.
func probeSourcePorts(rng *rand.Rand, spec v1alpha1.NodeFirewallSpec) []uint16 {
	var cand []uint16
	add := func(p int32) {
		if p >= sourceFirst && p <= sourceLast && !slices.Contains(cand, uint16(p)) {
			cand = append(cand, uint16(p))
		}
	}
	for _, r := range spec.Rules {
		for _, pr := range r.SourcePorts {
			add(pr.Port - 1)
			add(pr.Port)
			add(pr.Last())
			add(pr.Last() + 1)
		}
	}
	rng.Shuffle(len(cand), func(i, j int) { cand[i], cand[j] = cand[j], cand[i] })
	if len(cand) > maxProbeSourcePorts {
		cand = cand[:maxProbeSourcePorts]
	}
	slices.Sort(cand)
	return cand
}

// probeMessages are the IP messages to probe for a rule set: ICMP and
// ICMPv6 messages of the types the universe's rules name and their
// neighbours, when a rule matches ICMP, and a packet of each other
// protocol the rules match and of one they do not.
func probeMessages(spec v1alpha1.NodeFirewallSpec) []netnstest.IPMessage {
	icmp, others := false, false
	for _, r := range spec.Rules {
		switch {
		case r.Protocol == v1alpha1.ProtocolICMP, r.Protocol == v1alpha1.ProtocolICMPv6:
			icmp = true
		case r.Protocol != "" && !r.Protocol.HasPorts():
			others = true
		}
	}
	var out []netnstest.IPMessage
	if icmp {
		for _, tc := range [][2]uint8{{8, 0}, {3, 3}, {3, 4}, {3, 13}, {11, 0}, {11, 1}, {13, 0}} {
			out = append(out, netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: tc[0], Code: tc[1]})
		}
		for _, tc := range [][2]uint8{{128, 0}, {2, 0}, {1, 0}, {1, 3}, {1, 4}, {3, 0}, {4, 1}} {
			out = append(out, netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: tc[0], Code: tc[1]})
		}
	}
	if others {
		for _, p := range []uint8{47, 50, 253, 254} {
			out = append(out, netnstest.IPMessage{Protocol: p})
		}
	}
	return out
}

// maxProbePorts bounds the ports probed for a random rule set.
const maxProbePorts = 8

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
