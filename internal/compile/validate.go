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

// validate checks the invariants the compiler relies on, and returns the
// rules as Compile reads them, split by chain in the order of
// v1alpha1.Chains, with their addresses parsed in the same pass as the
// checks, so that Compile reads each rule once. The CRD enforces most of
// the invariants for policies, but a hand-written NodeFirewall bypasses
// that validation, so the agent checks again. Errors name the field path,
// e.g. "rules[3].ports[0].endPort: ...", and come in field order.
func validate(spec v1alpha1.NodeFirewallSpec) ([][]parsedRule, error) {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	addrs := parseAddresses(spec.Rules)
	rules := make([]parsedRule, len(spec.Rules))
	perChain := make([]int, len(v1alpha1.Chains))
	next := 0
	validPolicy := "" // the last policy name found valid
	for i := range spec.Rules {
		r := &spec.Rules[i]
		n := len(r.Sources) + len(r.Destinations)
		parsed := addrs[next : next+n : next+n]
		next += n
		// A policy's rules come one after the other: check its name once.
		if validPolicy == "" || r.Policy != validPolicy {
			if isDNS1123Subdomain(r.Policy) {
				validPolicy = r.Policy
			} else {
				msgs := validation.IsDNS1123Subdomain(r.Policy)
				fail(rulePath(i)+".policy", "%q is not a policy name: %s", r.Policy, strings.Join(msgs, "; "))
			}
		}
		validateRule(i, r, fail, parsed)
		rules[i].parse(r, parsed)
		if c := chainIndex(r.Chain); c >= 0 {
			perChain[c]++
		}
	}
	validateChains(spec, fail)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return splitByChain(rules, perChain), nil
}

// parseAddresses parses every rule's sources, then destinations, into one
// slice, in a loop short enough that the processor reads several rules'
// addresses at once. A failure leaves the zero Prefix, for validateRule to
// report.
func parseAddresses(rules []v1alpha1.NodeFirewallRule) []netip.Prefix {
	// Most rules name one address or none.
	addrs := make([]netip.Prefix, 0, len(rules)+len(rules)/8+8)
	for i := range rules {
		r := &rules[i]
		for _, a := range r.Sources {
			p, _ := parseAddress(a)
			addrs = append(addrs, p)
		}
		for _, a := range r.Destinations {
			p, _ := parseAddress(a)
			addrs = append(addrs, p)
		}
	}
	return addrs
}

// validateChains checks the default actions and the audited chains.
func validateChains(spec v1alpha1.NodeFirewallSpec, fail func(path, format string, args ...any)) {
	for _, c := range v1alpha1.Chains {
		switch p := spec.DefaultActions.For(c); p {
		case "", v1alpha1.ChainPolicyAccept, v1alpha1.ChainPolicyDrop:
		default:
			fail("defaultActions."+defaultActionField(c), "%q is not Accept or Drop", p)
		}
	}
	for i, c := range spec.AuditedChains {
		if !validChain(c) {
			fail(fmt.Sprintf("auditedChains[%d]", i), "%q is not %s", c, chainList)
		}
	}
}

// rulePath is the field path of rule i.
func rulePath(i int) string { return "rules[" + strconv.Itoa(i) + "]" }

// validateRule checks rule i but for its policy name. parsed are its
// sources and then its destinations as parseAddress made them, invalid
// where it failed. Field paths are built only for errors: most
// rules have none.
func validateRule(i int, r *v1alpha1.NodeFirewallRule, fail func(path, format string, args ...any), parsed []netip.Prefix) {
	path := func() string { return rulePath(i) }
	switch r.Mode {
	case "", v1alpha1.PolicyModeEnforce, v1alpha1.PolicyModeAudit:
	default:
		fail(path()+".mode", "%q is not Enforce or Audit", r.Mode)
	}
	if !isDNS1123Label(r.Name) {
		msgs := validation.IsDNS1123Label(r.Name)
		fail(path()+".name", "%q is not a rule name: %s", r.Name, strings.Join(msgs, "; "))
	}
	if !validChain(r.Chain) {
		fail(path()+".chain", "%q is not %s", r.Chain, chainList)
	}
	switch r.Action {
	case v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject:
	default:
		fail(path()+".action", "%q is not Accept, Drop or Reject", r.Action)
	}
	if _, ok := r.Protocol.Number(); !ok && r.Protocol != "" {
		fail(path()+".protocol", "%q is not TCP, UDP, SCTP, ICMP, ICMPv6, IGMP, GRE, ESP, AH, OSPF, PIM, VRRP, L2TP or the number of another IP protocol", r.Protocol)
	}
	if len(r.Ports) > 0 && !r.Protocol.HasPorts() {
		fail(path()+".ports", "ports require protocol TCP, UDP or SCTP, not %q", r.Protocol)
	}
	for j, p := range r.Ports {
		pp := func() string { return fmt.Sprintf("%s.ports[%d]", path(), j) }
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
	for j, a := range r.Sources {
		if parsed[j].IsValid() {
			continue
		}
		if _, err := parseAddress(a); err != nil {
			fail(fmt.Sprintf("%s.sources[%d]", path(), j), "%v", err)
		}
	}
	for j, a := range r.Destinations {
		if parsed[len(r.Sources)+j].IsValid() {
			continue
		}
		if _, err := parseAddress(a); err != nil {
			fail(fmt.Sprintf("%s.destinations[%d]", path(), j), "%v", err)
		}
	}
	validateInterface(i, ".inInterface", r.InInterface, r.Chain == v1alpha1.ChainOutput, "Output", fail)
	validateInterface(i, ".outInterface", r.OutInterface, r.Chain == v1alpha1.ChainInput || r.Chain == v1alpha1.ChainPreRouting, string(r.Chain), fail)
	for j, s := range r.States {
		if _, ok := ctStates[s]; !ok {
			fail(fmt.Sprintf("%s.states[%d]", path(), j), "%q is not New, Established, Related or Invalid", s)
		}
	}
	validateLog(path, r, fail)
	validateMatches(i, r, fail)
	validatePeers(path, r, fail)
}

// validateInterface checks field of rule i, an interface name, if set:
// it must match the CRD's pattern, on a chain that has that interface;
// banned says the rule's chain, named chain, has not.
func validateInterface(i int, field, name string, banned bool, chain string, fail func(path, format string, args ...any)) {
	if name == "" {
		return
	}
	if !interfaceName.MatchString(name) {
		fail(rulePath(i)+field, "%q is not an interface name, name+ or +", name)
	}
	if banned {
		fail(rulePath(i)+field, "not allowed on the %s chain", chain)
	}
}

func validChain(c v1alpha1.Chain) bool {
	return c == v1alpha1.ChainInput || c == v1alpha1.ChainForward || c == v1alpha1.ChainOutput || c == v1alpha1.ChainPreRouting
}

// chainList names the valid chains in errors.
const chainList = "PreRouting, Input, Forward or Output"

// defaultActionField is the JSON name of a chain's default action.
func defaultActionField(c v1alpha1.Chain) string {
	if c == v1alpha1.ChainPreRouting {
		return "preRouting"
	}
	return chainName(c)
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
	start := 0 // of the current label
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if i == start {
				return false
			}
			start = i + 1
			continue
		}
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > start && i+1 < len(s) && s[i+1] != '.':
		default:
			return false
		}
	}
	return true
}
