package compile

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// interfaceName is the CRD's pattern for inInterface and outInterface: a
// Linux interface name (at most 15 bytes) with an optional trailing "+"
// wildcard, or "+" alone for any interface.
var interfaceName = regexp.MustCompile(`^([A-Za-z0-9_.@:-]{1,15}\+?|\+)$`)

// Validate checks the invariants the compiler relies on. The CRD enforces
// most of them for policies, but a hand-written NodeFirewall bypasses that
// validation, so the agent checks again. Errors name the field path, e.g.
// "rules[3].ports[0].endPort: ...", and come in field order.
func Validate(spec v1alpha1.NodeFirewallSpec) error {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	for i := range spec.Rules {
		validateRule("rules["+strconv.Itoa(i)+"]", &spec.Rules[i], fail)
	}
	for _, c := range v1alpha1.Chains {
		switch p := spec.DefaultActions.For(c); p {
		case "", v1alpha1.ChainPolicyAccept, v1alpha1.ChainPolicyDrop:
		default:
			fail("defaultActions."+chainName(c), "%q is not Accept or Drop", p)
		}
	}
	for i, c := range spec.AuditedChains {
		if !validChain(c) {
			fail(fmt.Sprintf("auditedChains[%d]", i), "%q is not Input, Forward or Output", c)
		}
	}
	return errors.Join(errs...)
}

func validateRule(path string, r *v1alpha1.NodeFirewallRule, fail func(path, format string, args ...any)) {
	if !isDNS1123Subdomain(r.Policy) {
		msgs := validation.IsDNS1123Subdomain(r.Policy)
		fail(path+".policy", "%q is not a policy name: %s", r.Policy, strings.Join(msgs, "; "))
	}
	switch r.Mode {
	case "", v1alpha1.PolicyModeEnforce, v1alpha1.PolicyModeAudit:
	default:
		fail(path+".mode", "%q is not Enforce or Audit", r.Mode)
	}
	if !isDNS1123Label(r.Name) {
		msgs := validation.IsDNS1123Label(r.Name)
		fail(path+".name", "%q is not a rule name: %s", r.Name, strings.Join(msgs, "; "))
	}
	if !validChain(r.Chain) {
		fail(path+".chain", "%q is not Input, Forward or Output", r.Chain)
	}
	switch r.Action {
	case v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject:
	default:
		fail(path+".action", "%q is not Accept, Drop or Reject", r.Action)
	}
	switch r.Protocol {
	case "", v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP,
		v1alpha1.ProtocolICMP, v1alpha1.ProtocolICMPv6:
	default:
		fail(path+".protocol", "%q is not TCP, UDP, SCTP, ICMP or ICMPv6", r.Protocol)
	}
	if len(r.Ports) > 0 && !r.Protocol.HasPorts() {
		fail(path+".ports", "ports require protocol TCP, UDP or SCTP, not %q", r.Protocol)
	}
	for i, p := range r.Ports {
		pp := func() string { return fmt.Sprintf("%s.ports[%d]", path, i) }
		if p.Port < 1 || p.Port > 65535 {
			fail(pp()+".port", "%d is not in 1-65535", p.Port)
		}
		switch {
		case p.EndPort == 0:
		case p.EndPort < p.Port:
			fail(pp()+".endPort", "%d is below port %d", p.EndPort, p.Port)
		case p.EndPort > 65535:
			fail(pp()+".endPort", "%d is above 65535", p.EndPort)
		}
	}
	for i, a := range r.Sources {
		if _, err := parseAddress(a); err != nil {
			fail(fmt.Sprintf("%s.sources[%d]", path, i), "%v", err)
		}
	}
	for i, a := range r.Destinations {
		if _, err := parseAddress(a); err != nil {
			fail(fmt.Sprintf("%s.destinations[%d]", path, i), "%v", err)
		}
	}
	if r.InInterface != "" {
		if !interfaceName.MatchString(r.InInterface) {
			fail(path+".inInterface", "%q is not an interface name, name+ or +", r.InInterface)
		}
		if r.Chain == v1alpha1.ChainOutput {
			fail(path+".inInterface", "not allowed on the Output chain")
		}
	}
	if r.OutInterface != "" {
		if !interfaceName.MatchString(r.OutInterface) {
			fail(path+".outInterface", "%q is not an interface name, name+ or +", r.OutInterface)
		}
		if r.Chain == v1alpha1.ChainInput {
			fail(path+".outInterface", "not allowed on the Input chain")
		}
	}
	for i, s := range r.States {
		if _, ok := ctStates[s]; !ok {
			fail(fmt.Sprintf("%s.states[%d]", path, i), "%q is not New, Established, Related or Invalid", s)
		}
	}
}

func validChain(c v1alpha1.Chain) bool {
	return c == v1alpha1.ChainInput || c == v1alpha1.ChainForward || c == v1alpha1.ChainOutput
}

// parseAddress parses an IP address or CIDR. Host bits in a CIDR are
// masked off, as iptables does with -s 10.1.2.3/8.
func parseAddress(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// isDNS1123Label is a fast check of what validation.IsDNS1123Label
// accepts: at most 63 lower-case alphanumerics or '-', starting and ending
// with an alphanumeric. The library, which uses a regular expression, only
// explains failures.
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > validation.DNS1123LabelMaxLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// isDNS1123Subdomain is a fast check of what
// validation.IsDNS1123Subdomain accepts: dot-separated labels, at most 253
// bytes in all.
func isDNS1123Subdomain(s string) bool {
	if len(s) > validation.DNS1123SubdomainMaxLength {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			case c == '-' && i > 0 && i < len(label)-1:
			default:
				return false
			}
		}
	}
	return true
}
