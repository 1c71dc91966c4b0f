package resolve

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// failsafeShadows reports the policy's Drop and Reject rules that would
// match traffic to a failsafe port. The failsafe accept comes first in the
// kernel, so such a rule never drops that traffic; the user should know
// their rule is partly without effect.
func failsafeShadows(p *fwv1.NodeFirewallPolicy, fs Failsafes) []Problem {
	var out []Problem
	for i, r := range p.Spec.Rules {
		if r.Action == fwv1.ActionAccept {
			continue
		}
		var failsafes []compile.Failsafe
		switch r.Chain {
		case fwv1.ChainInput, fwv1.ChainPreRouting:
			failsafes = fs.Inbound
		case fwv1.ChainOutput:
			failsafes = fs.Outbound
		}
		var hit []string
		for _, f := range failsafes {
			if shadows(r, f) {
				hit = append(hit, f.String())
			}
		}
		if len(hit) > 0 {
			out = append(out, Problem{
				Policy: p.Name,
				Reason: fwv1.ReasonFailsafeShadowed,
				Message: fmt.Sprintf("spec.rules[%d] (%s) would %s failsafe port(s) %s, which nodes accept before any rule",
					i, r.Name, strings.ToLower(string(r.Action)), strings.Join(hit, ", ")),
			})
		}
	}
	return out
}

// shadows reports whether rule r matches some traffic to failsafe f: its
// protocol, a port, and addresses side by side (sidesMeet). Interfaces
// and states do not matter: the rule would still drop some of that
// traffic.
func shadows(r fwv1.Rule, f compile.Failsafe) bool {
	if r.Protocol != "" && r.Protocol != f.Protocol {
		return false
	}
	if len(r.Ports) > 0 && !slices.ContainsFunc(r.Ports, func(pr fwv1.PortRange) bool {
		return pr.Port <= int32(f.Ports.Last) && pr.Last() >= int32(f.Ports.First)
	}) {
		return false
	}
	return sidesMeet(r.Sources, r.From, f.Sources) && sidesMeet(r.Destinations, r.To, f.Destinations)
}

// sidesMeet reports whether a rule's addresses on one side (literal, or
// peers) and a failsafe's may hold an address in common: the failsafe's
// are unset; or the rule's literal ones overlap them (an IPv4 source list
// and an IPv6 destination list count as meeting, as the failsafe-warning
// admission policy, which must agree, cannot tell them apart cheaply); or
// the rule has neither. Peers' addresses follow the cluster and are not
// in the policy, which is all the admission policy sees: a rule on peers
// meets only a failsafe that takes every address on that side.
func sidesMeet(addrs []string, peers []fwv1.Peer, failsafe []netip.Prefix) bool {
	switch {
	case len(failsafe) == 0:
		return true
	case len(addrs) > 0:
		return overlap(rulePrefixes(addrs), failsafe)
	}
	return len(peers) == 0
}

// overlap reports whether two address lists, each empty for any address,
// have an address in common.
func overlap(a, b []netip.Prefix) bool {
	return len(a) == 0 || len(b) == 0 || slices.ContainsFunc(a, func(p netip.Prefix) bool {
		return slices.ContainsFunc(b, p.Overlaps)
	})
}

// rulePrefixes parses a rule's addresses; what does not parse (which the
// API's validation refuses) is left out.
func rulePrefixes(addrs []string) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a); err == nil {
			out = append(out, p.Masked())
		} else if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out
}
