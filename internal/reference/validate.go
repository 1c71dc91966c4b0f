package reference

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Validate checks a spec for what the compiler relies on, as
// compile.Compile does, with the libraries' checks where the compiler has
// fast paths of its own: validation.IsDNS1123Subdomain and IsDNS1123Label
// for names, v1alpha1.ParseAddress for addresses. Its errors are
// Compile's, word for word: each names its field path, in field order.
func Validate(spec v1alpha1.NodeFirewallSpec) error {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	for i := range spec.Rules {
		validateRule(fmt.Sprintf("rules[%d]", i), &spec.Rules[i], fail)
	}
	for _, c := range v1alpha1.Chains {
		switch p := spec.DefaultActions.For(c); p {
		case "", v1alpha1.ChainPolicyAccept, v1alpha1.ChainPolicyDrop:
		default:
			fail("defaultActions."+strings.ToLower(string(c)[:1])+string(c)[1:], "%q is not Accept or Drop", p)
		}
	}
	for i, c := range spec.AuditedChains {
		if !validChain(c) {
			fail(fmt.Sprintf("auditedChains[%d]", i), "%q is not PreRouting, Input, Forward or Output", c)
		}
	}
	return errors.Join(errs...)
}

// validateRule checks one rule; path is its field path.
func validateRule(path string, r *v1alpha1.NodeFirewallRule, fail func(path, format string, args ...any)) {
	if msgs := validation.IsDNS1123Subdomain(r.Policy); len(msgs) > 0 {
		fail(path+".policy", "%q is not a policy name: %s", r.Policy, strings.Join(msgs, "; "))
	}
	switch r.Mode {
	case "", v1alpha1.PolicyModeEnforce, v1alpha1.PolicyModeAudit:
	default:
		fail(path+".mode", "%q is not Enforce or Audit", r.Mode)
	}
	if msgs := validation.IsDNS1123Label(r.Name); len(msgs) > 0 {
		fail(path+".name", "%q is not a rule name: %s", r.Name, strings.Join(msgs, "; "))
	}
	if !validChain(r.Chain) {
		fail(path+".chain", "%q is not PreRouting, Input, Forward or Output", r.Chain)
	}
	if _, ok := verdicts[r.Action]; !ok {
		fail(path+".action", "%q is not Accept, Drop or Reject", r.Action)
	}
	if !validProtocol(r.Protocol) {
		fail(path+".protocol", "%q is not TCP, UDP, SCTP, ICMP, ICMPv6, IGMP, GRE, ESP, AH, OSPF, PIM, VRRP, L2TP or the number of another IP protocol", r.Protocol)
	}
	validatePorts(path, r, fail)
	for j, a := range r.Sources {
		if _, err := v1alpha1.ParseAddress(a); err != nil {
			fail(fmt.Sprintf("%s.sources[%d]", path, j), "%v", err)
		}
	}
	for j, a := range r.Destinations {
		if _, err := v1alpha1.ParseAddress(a); err != nil {
			fail(fmt.Sprintf("%s.destinations[%d]", path, j), "%v", err)
		}
	}
	validateInterface(path+".inInterface", r.InInterface, r.Chain == v1alpha1.ChainOutput, "Output", fail)
	validateInterface(path+".outInterface", r.OutInterface, r.Chain == v1alpha1.ChainInput || r.Chain == v1alpha1.ChainPreRouting, string(r.Chain), fail)
	for j, s := range r.States {
		if _, ok := stateBits[s]; !ok {
			fail(fmt.Sprintf("%s.states[%d]", path, j), "%q is not New, Established, Related or Invalid", s)
		}
	}
	validateExtensions(path, r, fail)
}

// validProtocol reports whether p is empty (any protocol), a name of
// protoNumbers, or the decimal number, 1 to 255 without leading zeros, of
// a protocol without a name.
func validProtocol(p v1alpha1.Protocol) bool {
	if _, ok := protoNumbers[p]; ok || p == "" {
		return true
	}
	n, err := strconv.Atoi(string(p))
	if err != nil || n < 1 || n > 255 || strconv.Itoa(n) != string(p) {
		return false
	}
	for _, named := range protoNumbers {
		if int(named) == n {
			return false
		}
	}
	return true
}

// validateExtensions checks the fields of iptables' extensions: source
// ports as ports, ICMP types of the rule's ICMP protocol, an answer of a
// Reject rule (a TCP reset of a TCP rule), limits within iptables' bounds
// and no log with a rate limit.
func validateExtensions(path string, r *v1alpha1.NodeFirewallRule, fail func(path, format string, args ...any)) {
	if len(r.SourcePorts) > 0 && !r.Protocol.HasPorts() {
		fail(path+".sourcePorts", "sourcePorts require protocol TCP, UDP or SCTP, not %q", r.Protocol)
	}
	for j, p := range r.SourcePorts {
		pp := fmt.Sprintf("%s.sourcePorts[%d]", path, j)
		if p.Port < 1 || p.Port > 65535 {
			fail(pp+".port", "%d is not in 1-65535", p.Port)
		}
		switch {
		case p.EndPort == 0:
		case p.EndPort < p.Port:
			fail(pp+".endPort", "%d is below port %d", p.EndPort, p.Port)
		case p.EndPort > 65535:
			fail(pp+".endPort", "%d is above 65535", p.EndPort)
		}
	}
	icmp := r.Protocol == v1alpha1.ProtocolICMP || r.Protocol == v1alpha1.ProtocolICMPv6
	if len(r.ICMPTypes) > 0 && !icmp {
		fail(path+".icmpTypes", "icmpTypes require protocol ICMP or ICMPv6, not %q", r.Protocol)
	}
	for j, t := range r.ICMPTypes {
		if _, ok := t.Message(r.Protocol); icmp && !ok {
			fail(fmt.Sprintf("%s.icmpTypes[%d]", path, j),
				"%q is not a type of protocol %s: a name as iptables spells it, in CamelCase, or numbers type or type/code", t, r.Protocol)
		}
	}
	if r.RejectWith != "" {
		if _, ok := rejectVerdicts[r.RejectWith]; !ok {
			fail(path+".rejectWith", "%q is not PortUnreachable, TCPReset, HostUnreachable, AdminProhibited or NetUnreachable", r.RejectWith)
		}
		if r.Action != v1alpha1.ActionReject {
			fail(path+".rejectWith", "rejectWith requires action Reject, not %q", r.Action)
		}
		if r.RejectWith == v1alpha1.RejectWithTCPReset && r.Protocol != v1alpha1.ProtocolTCP {
			fail(path+".rejectWith", "rejectWith TCPReset requires protocol TCP, not %q", r.Protocol)
		}
	}
	if l := r.Limit; l != nil {
		if l.Rate < 1 || l.Rate > 10000 {
			fail(path+".limit.rate", "%d is not in 1-10000", l.Rate)
		}
		switch l.Per {
		case v1alpha1.RateUnitSecond, v1alpha1.RateUnitMinute, v1alpha1.RateUnitHour, v1alpha1.RateUnitDay:
		default:
			fail(path+".limit.per", "%q is not Second, Minute, Hour or Day", l.Per)
		}
		if l.Burst < 0 || l.Burst > 10000 {
			fail(path+".limit.burst", "%d is not in 1-10000", l.Burst)
		}
		if r.Log {
			fail(path+".log", "log cannot be combined with limit")
		}
	}
	if c := r.ConnLimit; c != nil && (c.Above < 0 || c.Above > 65535) {
		fail(path+".connLimit.above", "%d is not in 0-65535", c.Above)
	}
}

func validChain(c v1alpha1.Chain) bool {
	return c == v1alpha1.ChainInput || c == v1alpha1.ChainForward || c == v1alpha1.ChainOutput || c == v1alpha1.ChainPreRouting
}

// validatePorts checks a rule's ports: each from 1 to 65535, an end port
// not below its port, and a protocol that has ports.
func validatePorts(path string, r *v1alpha1.NodeFirewallRule, fail func(path, format string, args ...any)) {
	if len(r.Ports) > 0 && !r.Protocol.HasPorts() {
		fail(path+".ports", "ports require protocol TCP, UDP or SCTP, not %q", r.Protocol)
	}
	for j, p := range r.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", path, j)
		if p.Port < 1 || p.Port > 65535 {
			fail(pp+".port", "%d is not in 1-65535", p.Port)
		}
		switch {
		case p.EndPort == 0:
		case p.EndPort < p.Port:
			fail(pp+".endPort", "%d is below port %d", p.EndPort, p.Port)
		case p.EndPort > 65535:
			fail(pp+".endPort", "%d is above 65535", p.EndPort)
		}
	}
}

// validateInterface checks an interface field, if set: a name or pattern
// (see interfacePattern), on a chain that has that interface; banned says
// the rule's chain, named chain, has not.
func validateInterface(path, name string, banned bool, chain string, fail func(path, format string, args ...any)) {
	if name == "" {
		return
	}
	if !interfacePattern(name) {
		fail(path, "%q is not an interface name, name+ or +", name)
	}
	if banned {
		fail(path, "not allowed on the %s chain", chain)
	}
}

// interfacePattern reports whether s is what the CRD allows in
// inInterface and outInterface: a Linux interface name of 1 to 15 bytes,
// letters, digits and "_.@:-", with an optional trailing "+" wildcard, or
// "+" alone for any interface.
func interfacePattern(s string) bool {
	if s == "+" {
		return true
	}
	name := strings.TrimSuffix(s, "+")
	if len(name) == 0 || len(name) > 15 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("_.@:-", c) >= 0:
		default:
			return false
		}
	}
	return true
}
