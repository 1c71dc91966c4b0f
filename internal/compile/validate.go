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
	_, err := validate(spec, false)
	return err
}

// validate is Validate that, with keep, also returns the rules as Compile
// reads them, split by chain in the order of v1alpha1.Chains: with their
// addresses parsed in the same pass as the checks, so that Compile reads
// each rule once.
func validate(spec v1alpha1.NodeFirewallSpec, keep bool) ([][]parsedRule, error) {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	var rules []parsedRule
	var addrs []netip.Prefix
	perChain := make([]int, len(v1alpha1.Chains))
	if keep {
		rules = make([]parsedRule, len(spec.Rules))
		// Most rules name one address or none.
		addrs = make([]netip.Prefix, 0, len(spec.Rules)+len(spec.Rules)/8+8)
		// Parse every address first, in a loop short enough that the
		// processor reads several rules' addresses at once. A failure
		// leaves the zero Prefix, for validateRule to report.
		for i := range spec.Rules {
			r := &spec.Rules[i]
			for _, a := range r.Sources {
				p, _ := parseAddress(a)
				addrs = append(addrs, p)
			}
			for _, a := range r.Destinations {
				p, _ := parseAddress(a)
				addrs = append(addrs, p)
			}
		}
	}
	next := 0
	validPolicy := "" // the last policy name found valid
	for i := range spec.Rules {
		r := &spec.Rules[i]
		var parsed []netip.Prefix
		if keep {
			n := len(r.Sources) + len(r.Destinations)
			parsed = addrs[next : next+n : next+n]
			next += n
		}
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
		if keep {
			rules[i].parse(r, parsed)
			if c := chainIndex(r.Chain); c >= 0 {
				perChain[c]++
			}
		}
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
	if len(errs) > 0 || !keep {
		return nil, errors.Join(errs...)
	}
	return splitByChain(rules, perChain), nil
}

// rulePath is the field path of rule i.
func rulePath(i int) string { return "rules[" + strconv.Itoa(i) + "]" }

// validateRule checks rule i but for its policy name. parsed, if not nil,
// are its sources and then its destinations as parseAddress made them,
// invalid where it failed. Field paths are built only for errors: most
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
		fail(path()+".chain", "%q is not Input, Forward or Output", r.Chain)
	}
	switch r.Action {
	case v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject:
	default:
		fail(path()+".action", "%q is not Accept, Drop or Reject", r.Action)
	}
	switch r.Protocol {
	case "", v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP,
		v1alpha1.ProtocolICMP, v1alpha1.ProtocolICMPv6:
	default:
		fail(path()+".protocol", "%q is not TCP, UDP, SCTP, ICMP or ICMPv6", r.Protocol)
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
		if parsed != nil && parsed[j].IsValid() {
			continue
		}
		if _, err := parseAddress(a); err != nil {
			fail(fmt.Sprintf("%s.sources[%d]", path(), j), "%v", err)
		}
	}
	for j, a := range r.Destinations {
		if parsed != nil && parsed[len(r.Sources)+j].IsValid() {
			continue
		}
		if _, err := parseAddress(a); err != nil {
			fail(fmt.Sprintf("%s.destinations[%d]", path(), j), "%v", err)
		}
	}
	if r.InInterface != "" {
		if !interfaceName.MatchString(r.InInterface) {
			fail(path()+".inInterface", "%q is not an interface name, name+ or +", r.InInterface)
		}
		if r.Chain == v1alpha1.ChainOutput {
			fail(path()+".inInterface", "not allowed on the Output chain")
		}
	}
	if r.OutInterface != "" {
		if !interfaceName.MatchString(r.OutInterface) {
			fail(path()+".outInterface", "%q is not an interface name, name+ or +", r.OutInterface)
		}
		if r.Chain == v1alpha1.ChainInput {
			fail(path()+".outInterface", "not allowed on the Input chain")
		}
	}
	for j, s := range r.States {
		if _, ok := ctStates[s]; !ok {
			fail(fmt.Sprintf("%s.states[%d]", path(), j), "%q is not New, Established, Related or Invalid", s)
		}
	}
}

func validChain(c v1alpha1.Chain) bool {
	return c == v1alpha1.ChainInput || c == v1alpha1.ChainForward || c == v1alpha1.ChainOutput
}

// parseAddress parses an IP address or CIDR. Host bits in a CIDR are
// masked off, as iptables does with -s 10.1.2.3/8.
func parseAddress(s string) (netip.Prefix, error) {
	if p, ok := parseIPv4Prefix(s); ok {
		return p, nil
	}
	return netipAddress(s)
}

// netipAddress is parseAddress through netip alone: what the fast path
// hands everything else to, and the reference its tests compare it with.
func netipAddress(s string) (netip.Prefix, error) {
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

// parseIPv4Prefix parses the common forms, a dotted quad with or without a
// prefix length, in one pass. It takes only what netip takes, to the same
// prefix, and leaves anything else, errors included, to netip (ok false).
func parseIPv4Prefix(s string) (p netip.Prefix, ok bool) {
	var ip [4]byte
	field, val, digits := 0, 0, 0
	i := 0
	for ; i < len(s) && s[i] != '/'; i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			if digits == 1 && val == 0 {
				return p, false // a leading zero
			}
			val, digits = val*10+int(c-'0'), digits+1
			if val > 255 {
				return p, false
			}
		case c == '.' && digits > 0 && field < 3:
			ip[field] = byte(val)
			field, val, digits = field+1, 0, 0
		default:
			return p, false
		}
	}
	if field != 3 || digits == 0 {
		return p, false
	}
	ip[3] = byte(val)
	return prefixOf(netip.AddrFrom4(ip), s[i:])
}

// prefixOf is the masked prefix of an address and what follows it in the
// string it was parsed from: nothing, or "/" and a length without sign or
// leading zero, at most the address's (ok false otherwise), as
// netip.ParsePrefix takes it.
func prefixOf(addr netip.Addr, rest string) (p netip.Prefix, ok bool) {
	if rest == "" {
		return netip.PrefixFrom(addr, addr.BitLen()), true
	}
	if rest[0] != '/' || len(rest) < 2 || len(rest) > 4 || len(rest) > 2 && rest[1] == '0' {
		return p, false
	}
	n := 0
	for _, c := range []byte(rest[1:]) {
		if c < '0' || c > '9' {
			return p, false
		}
		n = n*10 + int(c-'0')
	}
	if n > addr.BitLen() {
		return p, false
	}
	return netip.PrefixFrom(addr, n).Masked(), true
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
