package nft

import (
	"fmt"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// matchesSpec uses every match and answer of iptables' extensions, in
// every combination the compiler encodes differently.
func matchesSpec() v1alpha1.NodeFirewallSpec {
	in, fwd, out := v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput
	rule := func(name string, chain v1alpha1.Chain, action v1alpha1.Action, proto v1alpha1.Protocol, edit func(*v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallRule {
		r := v1alpha1.NodeFirewallRule{Policy: "matches", Mode: v1alpha1.PolicyModeEnforce, Name: name, Chain: chain, Action: action, Protocol: proto}
		if edit != nil {
			edit(&r)
		}
		return r
	}
	accept, drop, reject := v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject
	rules := []v1alpha1.NodeFirewallRule{
		rule("ssh-conns", in, reject, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
			r.Ports = []v1alpha1.PortRange{{Port: 22}}
			r.ConnLimit = &v1alpha1.ConnLimit{Above: 3}
			r.RejectWith, r.Log = v1alpha1.RejectWithTCPReset, true
		}),
		rule("ssh", in, accept, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
			r.Ports = []v1alpha1.PortRange{{Port: 22}}
			r.Limit = &v1alpha1.RateLimit{Rate: 3, Per: v1alpha1.RateUnitMinute, PerSource: true}
			r.InInterface = "eth+"
		}),
		rule("web", in, accept, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
			r.Ports = []v1alpha1.PortRange{{Port: 443}}
			r.Sources = []string{"10.0.0.0/8", "2001:db8::/32"}
			r.Limit = &v1alpha1.RateLimit{Rate: 100, Per: v1alpha1.RateUnitSecond, Burst: 400, PerSource: true}
			r.ConnLimit = &v1alpha1.ConnLimit{Above: 50}
		}),
		rule("ping", in, accept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"}
			r.Limit = &v1alpha1.RateLimit{Rate: 5, Per: v1alpha1.RateUnitSecond, Burst: 10}
		}),
		rule("ping-slowly", in, accept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
			r.Limit = &v1alpha1.RateLimit{Rate: 2, Per: v1alpha1.RateUnitDay, Burst: 5}
		}),
		rule("icmp-errors", in, accept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"TimeExceeded", "FragmentationNeeded", "3/13", "PortUnreachable", "3/2"}
		}),
		rule("one-code", in, accept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"HostRedirect"}
			r.Sources = []string{"192.0.2.1"}
		}),
		rule("icmp-whole-types", in, drop, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"Redirect", "HostRedirect", "TimestampRequest"}
		}),
		rule("ping6", in, accept, v1alpha1.ProtocolICMPv6, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "PortUnreachable", "PacketTooBig", "NoRoute"}
			r.Sources = []string{"2001:db8::/32"}
		}),
		rule("mld", in, accept, v1alpha1.ProtocolICMPv6, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"MLDListenerQuery", "MLDListenerReport", "130"}
		}),
		rule("ipsec-esp", in, accept, v1alpha1.ProtocolESP, nil),
		rule("ipsec-ah", in, accept, v1alpha1.ProtocolAH, func(r *v1alpha1.NodeFirewallRule) { r.Sources = []string{"192.0.2.0/24"} }),
		rule("vrrp", in, accept, v1alpha1.ProtocolVRRP, func(r *v1alpha1.NodeFirewallRule) { r.Destinations = []string{"224.0.0.18"} }),
		rule("gre", in, accept, v1alpha1.ProtocolGRE, nil),
		rule("six-in-four", in, accept, "41", nil),
		rule("dns-replies", in, accept, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}, {Port: 5353}}
			r.Ports = []v1alpha1.PortRange{{Port: 1024, EndPort: 65535}}
		}),
		rule("ntp", in, accept, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 123}}
		}),
		rule("bgp", in, accept, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
			r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 179, EndPort: 180}}
			r.Sources = []string{"198.51.100.1"}
		}),
		rule("conns-per-source", fwd, drop, "", func(r *v1alpha1.NodeFirewallRule) {
			r.ConnLimit = &v1alpha1.ConnLimit{Above: 100}
			r.Sources = []string{"10.0.0.0/8"}
		}),
		rule("conns-any-family", fwd, drop, "", func(r *v1alpha1.NodeFirewallRule) {
			r.ConnLimit = &v1alpha1.ConnLimit{Above: 1000}
			r.InInterface, r.OutInterface = "cni0", "eth0"
		}),
		rule("unreachable", fwd, reject, "", func(r *v1alpha1.NodeFirewallRule) {
			r.RejectWith = v1alpha1.RejectWithHostUnreachable
			r.Destinations = []string{"10.99.0.0/16", "fd99::/64"}
		}),
		rule("no-route", fwd, reject, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.RejectWith = v1alpha1.RejectWithNetUnreachable
		}),
		rule("prohibited", fwd, reject, v1alpha1.ProtocolSCTP, func(r *v1alpha1.NodeFirewallRule) {
			r.RejectWith = v1alpha1.RejectWithAdminProhibited
		}),
		rule("port-unreachable", fwd, reject, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.RejectWith = v1alpha1.RejectWithPortUnreachable
			r.Ports = []v1alpha1.PortRange{{Port: 9}}
		}),
	}
	for i := range 8 {
		rules = append(rules, rule(fmt.Sprintf("deny-%d", i), out, reject, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
			r.Destinations = []string{fmt.Sprintf("203.0.113.%d", i+1)}
			r.RejectWith = v1alpha1.RejectWithAdminProhibited
		}))
	}
	rules = append(rules, rule("deny-reset", out, reject, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
		r.Destinations = []string{"203.0.113.100"}
		r.RejectWith = v1alpha1.RejectWithTCPReset
	}), rule("flood", out, drop, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
		r.Policy, r.Mode = "audit", v1alpha1.PolicyModeAudit
		r.Limit = &v1alpha1.RateLimit{Rate: 100, Per: v1alpha1.RateUnitHour, Burst: 200, PerSource: true}
	}))
	return v1alpha1.NodeFirewallSpec{
		Rules:          rules,
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}
}

// TestParityOfMatches is TestParityWithRender for the matches and answers
// of iptables' extensions.
func TestParityOfMatches(t *testing.T) {
	checkParity(t, matchesSpec())
}
