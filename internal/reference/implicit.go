package reference

import (
	"slices"
	"strconv"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// implicitAccept is one of the accepts a chain makes ahead of its rules.
type implicitAccept struct {
	name Implicit
	// test returns nil when the accept takes the packet, with notes that
	// say how; otherwise the first of its matches the packet failed.
	test func(p *Packet) (*Mismatch, []string)
}

// implicitAccepts are the accepts a chain makes ahead of its rules, in
// the order the compiled chain makes them: established and related on
// every chain; loopback, ICMPv6 neighbour discovery and the failsafe ports
// on Input and Output.
func implicitAccepts(chain v1alpha1.Chain, opts compile.Options) []implicitAccept {
	out := []implicitAccept{{ImplicitEstablished, acceptsEstablished}}
	var failsafes []compile.Failsafe
	switch chain {
	case v1alpha1.ChainInput:
		out = append(out, implicitAccept{ImplicitLoopback, loopbackOn("inInterface", func(p *Packet) string { return p.IIfName })})
		failsafes = opts.FailsafeInbound
	case v1alpha1.ChainOutput:
		out = append(out, implicitAccept{ImplicitLoopback, loopbackOn("outInterface", func(p *Packet) string { return p.OIfName })})
		failsafes = opts.FailsafeOutbound
	default:
		return out
	}
	out = append(out, implicitAccept{ImplicitNeighbourDiscovery, acceptsNeighbourDiscovery})
	if len(failsafes) > 0 {
		out = append(out, implicitAccept{ImplicitFailsafe, acceptsFailsafe(failsafes)})
	}
	return out
}

func acceptsEstablished(p *Packet) (*Mismatch, []string) {
	if p.CtState&(compile.CtStateEstablished|compile.CtStateRelated) != 0 {
		return nil, nil
	}
	return &Mismatch{Field: "state", Want: "Established or Related", Got: stateName(p.CtState)}, nil
}

func loopbackOn(field string, ifname func(p *Packet) string) func(p *Packet) (*Mismatch, []string) {
	return func(p *Packet) (*Mismatch, []string) {
		if name := ifname(p); name != "lo" {
			return &Mismatch{Field: field, Want: "lo", Got: interfaceName(name)}, nil
		}
		return nil, nil
	}
}

// ndTypes are the ICMPv6 neighbour discovery types (RFC 4861) that Input
// and Output accept ahead of any rule: router solicitation and
// advertisement, neighbour solicitation and advertisement, redirect.
var ndTypes = []uint8{133, 134, 135, 136, 137}

func acceptsNeighbourDiscovery(p *Packet) (*Mismatch, []string) {
	switch {
	case p.Family != compile.FamilyIPv6 || p.L4Proto != protoICMPv6:
		return &Mismatch{Field: "protocol", Want: "ICMPv6", Got: protocolName(p)}, nil
	case !p.Transport:
		return &Mismatch{Field: "icmpType", Want: "133-137 (neighbour discovery)", Got: "unreadable (no ICMPv6 header)"}, nil
	case !slices.Contains(ndTypes, p.Type):
		return &Mismatch{Field: "icmpType", Want: "133-137 (neighbour discovery)", Got: strconv.Itoa(int(p.Type))}, nil
	}
	return nil, nil
}

func acceptsFailsafe(failsafes []compile.Failsafe) func(p *Packet) (*Mismatch, []string) {
	return func(p *Packet) (*Mismatch, []string) {
		for _, f := range failsafes {
			if p.L4Proto == protoNumbers[f.Protocol] && p.Transport && f.Ports.First <= p.DPort && p.DPort <= f.Ports.Last {
				return nil, []string{"failsafe " + f.String()}
			}
		}
		names := make([]string, len(failsafes))
		for i, f := range failsafes {
			names[i] = f.String()
		}
		return &Mismatch{Field: "ports", Want: oneOf(names), Got: protocolAndPort(p)}, nil
	}
}
