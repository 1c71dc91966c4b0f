package reference

import (
	"errors"
	"fmt"
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
	if _, ok := protoNumbers[r.Protocol]; !ok && r.Protocol != "" {
		fail(path+".protocol", "%q is not TCP, UDP, SCTP, ICMP or ICMPv6", r.Protocol)
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
