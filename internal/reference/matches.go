package reference

import (
	"slices"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// The matches of iptables' extensions, read as the kernel reads them:
// source ports and ICMP types and codes from the transport header, which
// the packet must let be read; a packet under every limit (see EvalSpec).

// specExtensionsMatch reports whether a packet meets an API rule's
// source ports, ICMP types and limits.
func specExtensionsMatch(r v1alpha1.NodeFirewallRule, p Packet) bool {
	if len(r.SourcePorts) > 0 && (!p.Transport || !slices.ContainsFunc(r.SourcePorts, func(pr v1alpha1.SourcePortRange) bool {
		return int32(p.SPort) >= pr.Port && int32(p.SPort) <= pr.Last()
	})) {
		return false
	}
	if len(r.ICMPTypes) > 0 && (!p.Transport || !slices.ContainsFunc(r.ICMPTypes, func(t v1alpha1.ICMPType) bool {
		m, ok := t.Message(r.Protocol)
		return ok && m.Type == p.Type && (m.AnyCode || m.Code == p.Code)
	})) {
		return false
	}
	// Under the limit: a connection limit does not match.
	return r.ConnLimit == nil
}

// rulesetExtensionsMatch reports whether a packet meets a compiled rule's
// source ports, ICMP types with codes and limits.
func rulesetExtensionsMatch(rule *compile.Rule, p Packet) bool {
	if len(rule.SPorts) > 0 && (!p.Transport || !slices.ContainsFunc(rule.SPorts, func(pi compile.PortInterval) bool {
		return pi.First <= p.SPort && p.SPort <= pi.Last
	})) {
		return false
	}
	if len(rule.ICMPTypeCodes) > 0 && (!p.Transport || !slices.ContainsFunc(rule.ICMPTypeCodes, func(c compile.ICMPTypeCode) bool {
		return c.Type == p.Type && c.FirstCode <= p.Code && p.Code <= c.LastCode
	})) {
		return false
	}
	// Under the limit: a rate limit matches, a connection limit does not.
	return rule.ConnLimit == nil
}
