package reference

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// The matches and answers of iptables' extensions, read as the kernel
// reads them: IP protocols by number, source ports and ICMP types and
// codes from the transport header, which the packet must let be read, the
// answer of a Reject, and rate and connection limits, a packet taken to
// be under them.

// rejectVerdicts are the answers of a Reject rule, by rejectWith.
var rejectVerdicts = map[v1alpha1.RejectWith]compile.Verdict{
	"":                                 compile.VerdictReject,
	v1alpha1.RejectWithPortUnreachable: compile.VerdictReject,
	v1alpha1.RejectWithTCPReset:        compile.VerdictRejectTCPReset,
	v1alpha1.RejectWithHostUnreachable: compile.VerdictRejectHostUnreachable,
	v1alpha1.RejectWithAdminProhibited: compile.VerdictRejectAdminProhibited,
	v1alpha1.RejectWithNetUnreachable:  compile.VerdictRejectNetUnreachable,
}

// ruleVerdict is what a matching rule does: its action, and for Reject
// its answer.
func ruleVerdict(r *v1alpha1.NodeFirewallRule) compile.Verdict {
	if r.Action == v1alpha1.ActionReject {
		return rejectVerdicts[r.RejectWith]
	}
	return verdicts[r.Action]
}

// protoNumber is the IP protocol number of a rule's protocol: a name's,
// or the number itself.
func protoNumber(p v1alpha1.Protocol) uint8 {
	if n, ok := protoNumbers[p]; ok {
		return n
	}
	n, _ := strconv.Atoi(string(p))
	return uint8(n)
}

// extensionMatches are the stateless matches of iptables' extensions,
// after the others in the matches table.
var extensionMatches = []match{
	{"sourcePorts", func(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
		return len(r.SourcePorts) == 0 || p.Transport && slices.ContainsFunc(r.SourcePorts, func(pr v1alpha1.SourcePortRange) bool {
			return int32(p.SPort) >= pr.Port && int32(p.SPort) <= pr.Last()
		})
	}, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		ports := make([]string, len(r.SourcePorts))
		for i, pr := range r.SourcePorts {
			ports[i] = strconv.Itoa(int(pr.Port))
			if pr.Last() != pr.Port {
				ports[i] += "-" + strconv.Itoa(int(pr.Last()))
			}
		}
		got := strconv.Itoa(int(p.SPort))
		if !p.Transport {
			got = "no readable transport header"
		}
		return oneOf(ports), got
	}},
	{"icmpTypes", func(r *v1alpha1.NodeFirewallRule, p *Packet) bool {
		return len(r.ICMPTypes) == 0 || p.Transport && slices.ContainsFunc(r.ICMPTypes, func(t v1alpha1.ICMPType) bool {
			m, ok := t.Message(r.Protocol)
			return ok && m.Type == p.Type && (m.AnyCode || m.Code == p.Code)
		})
	}, func(r *v1alpha1.NodeFirewallRule, p *Packet) (string, string) {
		types := make([]string, len(r.ICMPTypes))
		for i, t := range r.ICMPTypes {
			types[i] = string(t)
		}
		got := fmt.Sprintf("type %d code %d", p.Type, p.Code)
		if !p.Transport {
			got = "no readable transport header"
		}
		return oneOf(types), got
	}},
}

// limitMatches are the stateful matches of iptables' extensions: a rate
// limit matches a packet under it, a connection limit (on the excess)
// does not.
var limitMatches = []statefulMatch{
	{"limit", func(r *v1alpha1.NodeFirewallRule) (bool, bool, string) {
		l := r.Limit
		if l == nil {
			return false, false, ""
		}
		note := fmt.Sprintf("%d a %s, burst %d", l.Rate, strings.ToLower(string(l.Per)), l.BurstOrDefault())
		if l.PerSource {
			note += ", per source address"
		}
		return true, true, note
	}},
	{"connLimit", func(r *v1alpha1.NodeFirewallRule) (bool, bool, string) {
		if r.ConnLimit == nil {
			return false, false, ""
		}
		return true, false, fmt.Sprintf("the source has at most %d connections", r.ConnLimit.Above)
	}},
}

// rulesetExtensionsMatch reports whether a packet meets a compiled rule's
// source ports, ICMP types with codes and limits, under every limit.
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
