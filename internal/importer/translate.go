package importer

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// translation is the outcome of translating one rule's arguments.
type translation struct {
	rule    *v1alpha1.Rule
	comment string
	// notes are caveats of a translated rule.
	notes []string
	// ownedJump is set when the rule jumps into an owned chain.
	ownedJump string
	// localOnly says the rule matched only packets addressed to the node
	// (-m addrtype --dst-type LOCAL, in PREROUTING).
	localOnly bool
	// notLocalAccept says the rule is PREROUTING's `-m addrtype !
	// --dst-type LOCAL -j ACCEPT` and nothing else, which nodefw's
	// PreRouting chain does ahead of every rule.
	notLocalAccept bool
	// err says why the rule was not translated.
	err string
}

// interfacePattern is the API's pattern for inInterface and outInterface.
var interfacePattern = regexp.MustCompile(`^([A-Za-z0-9_.@:-]{1,15}\+?|\+)$`)

var protocols = map[string]v1alpha1.Protocol{
	"tcp": v1alpha1.ProtocolTCP, "6": v1alpha1.ProtocolTCP,
	"udp": v1alpha1.ProtocolUDP, "17": v1alpha1.ProtocolUDP,
	"sctp": v1alpha1.ProtocolSCTP, "132": v1alpha1.ProtocolSCTP,
	"icmp": v1alpha1.ProtocolICMP, "1": v1alpha1.ProtocolICMP,
	"ipv6-icmp": v1alpha1.ProtocolICMPv6, "icmpv6": v1alpha1.ProtocolICMPv6,
	"icmp6": v1alpha1.ProtocolICMPv6, "58": v1alpha1.ProtocolICMPv6,
}

var connStates = map[string]v1alpha1.ConnState{
	"NEW":         v1alpha1.ConnStateNew,
	"ESTABLISHED": v1alpha1.ConnStateEstablished,
	"RELATED":     v1alpha1.ConnStateRelated,
	"INVALID":     v1alpha1.ConnStateInvalid,
}

// supportedMatches are the -m modules whose options translate.
var supportedMatches = map[string]bool{
	"tcp": true, "udp": true, "sctp": true, "multiport": true,
	"state": true, "conntrack": true, "comment": true,
	"icmp": true, "icmp6": true, "icmpv6": true,
	// Only in PREROUTING, and only as --dst-type LOCAL (see prerouting.go).
	"addrtype": true,
}

// extensionTargets are the iptables targets other than ACCEPT, DROP,
// REJECT, LOG and RETURN; any other name is a user-defined chain.
var extensionTargets = map[string]bool{}

func init() {
	for _, t := range strings.Fields(`AUDIT CHECKSUM CLASSIFY CLUSTERIP CONNMARK
		CONNSECMARK CT DNAT DNPT DSCP ECN HL HMARK IDLETIMER LED MARK MASQUERADE
		MIRROR NETMAP NFLOG NFQUEUE NOTRACK QUEUE RATEEST REDIRECT SAME SECMARK
		SET SNAT SNPT SYNPROXY TCPMSS TCPOPTSTRIP TEE TOS TPROXY TRACE TTL ULOG`) {
		extensionTargets[t] = true
	}
}

// Reject types that answer as the API's Reject does.
var portUnreachable = map[string]bool{
	"icmp-port-unreachable": true, "icmp6-port-unreachable": true, "port-unreach": true,
}

// translate translates the arguments of a rule of chain c of table
// (everything after the chain name and rule number). A rule is translated
// whole or not at all.
func translate(table string, c v1alpha1.Chain, args []string) translation {
	var (
		r        = v1alpha1.Rule{Chain: c}
		t        translation
		firstErr string
		target   string
		proto    string
		matches  = map[string]bool{}
		seen     = map[string]bool{}
		rejectW  string
		stateOpt string
		// addrType is --dst-type's value, "!" prefixed when negated.
		addrType string
		negated  bool
	)
	fail := func(format string, a ...any) {
		if firstErr == "" {
			firstErr = fmt.Sprintf(format, a...)
		}
	}
	for i := 0; i < len(args); i++ {
		opt := args[i]
		if opt == "!" && i+1 < len(args) && args[i+1] == "--dst-type" && matches["addrtype"] {
			// The one negation that can translate: see --dst-type.
			negated = true
			continue
		}
		if opt == "!" {
			fail("negation (!) is not supported")
			continue
		}
		// value returns the option's argument.
		value := func() (string, bool) {
			if i+1 < len(args) && args[i+1] == "!" {
				// The old form: -s ! ADDRESS.
				fail("negation (!) is not supported")
				i = min(i+2, len(args)-1)
				return "", false
			}
			if i+1 >= len(args) {
				fail("option %s needs a value", opt)
				return "", false
			}
			i++
			return args[i], true
		}
		// once rejects an option given twice.
		once := func(key string) bool {
			if seen[key] {
				fail("option %s given twice", opt)
				return false
			}
			seen[key] = true
			return true
		}
		switch opt {
		case "-p", "--protocol":
			v, ok := value()
			if !ok || !once("-p") {
				continue
			}
			proto = strings.ToLower(v)
			if proto == "all" || proto == "0" {
				continue
			}
			p, ok := protocols[proto]
			if !ok {
				fail("protocol %s is not supported: only tcp, udp, sctp, icmp and ipv6-icmp", v)
				continue
			}
			r.Protocol = p
		case "-s", "--source", "--src", "-d", "--destination", "--dst":
			v, ok := value()
			src := opt == "-s" || opt == "--source" || opt == "--src"
			key := "-d"
			if src {
				key = "-s"
			}
			if !ok || !once(key) {
				continue
			}
			addrs, err := parseAddresses(v)
			if err != "" {
				fail("%s", err)
				continue
			}
			if src {
				r.Sources = addrs
			} else {
				r.Destinations = addrs
			}
		case "-i", "--in-interface", "-o", "--out-interface":
			v, ok := value()
			in := opt == "-i" || opt == "--in-interface"
			key := "-o"
			if in {
				key = "-i"
			}
			if !ok || !once(key) {
				continue
			}
			if !interfacePattern.MatchString(v) {
				fail("interface name %q is not supported", v)
				continue
			}
			if in {
				r.InInterface = v
			} else {
				r.OutInterface = v
			}
		case "-m", "--match":
			v, ok := value()
			if !ok {
				continue
			}
			if !supportedMatches[v] {
				fail("match -m %s is not supported", v)
				continue
			}
			matches[v] = true
		case "-j", "--jump":
			v, ok := value()
			if !ok || !once("-j") {
				continue
			}
			target = v
		case "-g", "--goto":
			v, _ := value()
			if chainOwner(v) != "" {
				t.ownedJump = v
			}
			fail("goto (-g) is not supported")
		case "-f", "--fragment":
			fail("fragment matching (-f) is not supported")
		case "-c", "--set-counters":
			if i+2 >= len(args) {
				fail("option %s needs two values", opt)
				i = len(args)
				continue
			}
			i += 2
		case "-w", "--wait":
			if i+1 < len(args) && isDigits(args[i+1]) {
				i++
			}
		case "--dport", "--destination-port", "--dports", "--destination-ports":
			v, ok := value()
			if !ok || !once("--dport") {
				continue
			}
			multi := strings.HasSuffix(opt, "s")
			if multi && !matches["multiport"] {
				fail("%s needs -m multiport", opt)
				continue
			}
			if !multi && strings.Contains(v, ",") {
				fail("%s takes one port or range; use -m multiport --dports for a list", opt)
				continue
			}
			ports, notes, err := parsePorts(v)
			if err != "" {
				fail("%s", err)
				continue
			}
			r.Ports = ports
			t.notes = append(t.notes, notes...)
		case "--sport", "--source-port", "--sports", "--source-ports":
			value()
			fail("source port matching (%s) is not supported", opt)
		case "--ports":
			value()
			fail("multiport --ports (source or destination) is not supported")
		case "--state", "--ctstate":
			v, ok := value()
			if !ok {
				continue
			}
			if stateOpt != "" {
				if stateOpt != opt {
					fail("--state and --ctstate together are not supported")
				} else {
					fail("option %s given twice", opt)
				}
				continue
			}
			stateOpt = opt
			if opt == "--state" && !matches["state"] {
				fail("--state needs -m state")
				continue
			}
			if opt == "--ctstate" && !matches["conntrack"] {
				fail("--ctstate needs -m conntrack")
				continue
			}
			states, err := parseStates(v)
			if err != "" {
				fail("%s", err)
				continue
			}
			r.States = states
		case "--comment":
			v, ok := value()
			if !ok || !once("--comment") {
				continue
			}
			if !matches["comment"] {
				fail("--comment needs -m comment")
				continue
			}
			t.comment = v
		case "--dst-type":
			v, ok := value()
			if !ok || !once("--dst-type") {
				continue
			}
			if !matches["addrtype"] {
				fail("--dst-type needs -m addrtype")
				continue
			}
			if negated {
				v = "!" + v
			}
			addrType = v
		case "--src-type", "--limit-iface-in", "--limit-iface-out":
			fail("addrtype %s is not supported: only --dst-type LOCAL, in PREROUTING", opt)
		case "--reject-with":
			v, ok := value()
			if !ok || !once("--reject-with") {
				continue
			}
			rejectW = v
		default:
			if strings.HasPrefix(opt, "-") {
				fail("option %s is not supported", opt)
			} else {
				fail("unexpected argument %q", opt)
			}
		}
	}

	// The target decides first: a rule that does not accept, drop or
	// reject is not translated, whatever it matches.
	switch target {
	case "":
		if t.ownedJump != "" {
			return t
		}
		if firstErr == "" {
			firstErr = "rule without a target (-j) only counts packets: not imported"
		}
		t.err = firstErr
		return t
	case "ACCEPT":
		r.Action = v1alpha1.ActionAccept
	case "DROP":
		r.Action = v1alpha1.ActionDrop
	case "REJECT":
		r.Action = v1alpha1.ActionReject
	case "LOG":
		t.err = "LOG target is not supported: set log: true on the rule that accepts, drops or rejects these packets"
		return t
	case "RETURN":
		t.err = "RETURN target is not supported"
		return t
	default:
		if chainOwner(target) != "" {
			t.ownedJump = target
			return t
		}
		if extensionTargets[target] {
			t.err = fmt.Sprintf("target %s is not supported: only ACCEPT, DROP and REJECT", target)
		} else {
			t.err = fmt.Sprintf("jump to user-defined chain %s is not supported: its rules are not imported", target)
		}
		return t
	}
	if firstErr != "" {
		t.err = firstErr
		return t
	}
	if err := preRoutingMatch(table, c, &r, addrType, matches["addrtype"], &t); err != "" {
		t.err = err
		return t
	}
	if t.notLocalAccept {
		return t
	}
	if rejectW != "" {
		switch {
		case r.Action != v1alpha1.ActionReject:
			t.err = "--reject-with needs -j REJECT"
			return t
		case !portUnreachable[rejectW]:
			t.notes = append(t.notes, fmt.Sprintf("REJECT --reject-with %s imported as Reject, which answers with ICMP port-unreachable", rejectW))
		}
	}
	if len(r.Ports) > 0 && !r.Protocol.HasPorts() {
		t.err = "destination ports need -p tcp, udp or sctp"
		return t
	}
	if r.InInterface != "" && c == v1alpha1.ChainOutput {
		t.err = "-i is not allowed on OUTPUT (iptables refuses it)"
		return t
	}
	if r.OutInterface != "" && c == v1alpha1.ChainInput {
		t.err = "-o is not allowed on INPUT (iptables refuses it)"
		return t
	}
	if r.OutInterface != "" && c == v1alpha1.ChainPreRouting {
		t.err = "-o is not allowed on PREROUTING (iptables refuses it)"
		return t
	}
	t.rule = &r
	return t
}

// parseAddresses parses a -s or -d value: addresses or CIDRs, comma
// separated. They are kept as given, except that a dotted netmask becomes a
// prefix length.
func parseAddresses(v string) ([]string, string) {
	parts := strings.Split(v, ",")
	if len(parts) > 32 {
		return nil, fmt.Sprintf("%d addresses in one rule: at most 32", len(parts))
	}
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		a, err := normalizeAddress(p)
		if err != "" {
			return nil, err
		}
		out = append(out, a)
	}
	return out, ""
}

func normalizeAddress(s string) (string, string) {
	if addr, mask, ok := strings.Cut(s, "/"); ok {
		if strings.Contains(mask, ".") {
			m, err := netip.ParseAddr(mask)
			if err != nil || !m.Is4() {
				return "", fmt.Sprintf("address %q is not an IP address or CIDR", s)
			}
			bits, ok := maskBits(m.As4())
			if !ok {
				return "", fmt.Sprintf("netmask %s is not contiguous: not supported", mask)
			}
			s = addr + "/" + strconv.Itoa(bits)
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return "", fmt.Sprintf("address %q is not an IP address or CIDR (host names are not supported)", s)
		}
		if p.Addr().Zone() != "" {
			return "", fmt.Sprintf("address %q has a zone: not supported", s)
		}
		return s, ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Sprintf("address %q is not an IP address or CIDR (host names are not supported)", s)
	}
	if a.Zone() != "" {
		return "", fmt.Sprintf("address %q has a zone: not supported", s)
	}
	return s, ""
}

func maskBits(m [4]byte) (int, bool) {
	v := uint32(m[0])<<24 | uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3])
	bits := 0
	for v&(1<<31) != 0 {
		bits++
		v <<= 1
	}
	return bits, v == 0
}

// parsePorts parses a --dport or --dports value: ports and first:last
// ranges, comma separated.
func parsePorts(v string) ([]v1alpha1.PortRange, []string, string) {
	parts := strings.Split(v, ",")
	if len(parts) > 32 {
		return nil, nil, fmt.Sprintf("%d port ranges in one rule: at most 32", len(parts))
	}
	var (
		out   []v1alpha1.PortRange
		notes []string
	)
	for _, p := range parts {
		first, last, isRange := strings.Cut(p, ":")
		lo, hi := 0, 65535
		var err error
		if first != "" || !isRange {
			if lo, err = parseUint(first, 65535); err != nil {
				return nil, nil, portError(p, first)
			}
		}
		if !isRange {
			hi = lo
		} else if last != "" {
			if hi, err = parseUint(last, 65535); err != nil {
				return nil, nil, portError(p, last)
			}
		}
		if lo > hi {
			return nil, nil, fmt.Sprintf("port range %s is reversed", p)
		}
		if hi == 0 {
			return nil, nil, "port 0 cannot be matched: not supported"
		}
		if lo == 0 {
			lo = 1
			notes = append(notes, fmt.Sprintf("port range %s imported as %d:%d: port 0 cannot be expressed", p, lo, hi))
		}
		pr := v1alpha1.PortRange{Port: int32(lo)}
		if hi != lo {
			pr.EndPort = int32(hi)
		}
		out = append(out, pr)
	}
	return out, notes, ""
}

func portError(part, s string) string {
	if s != "" && !isDigits(s) {
		return fmt.Sprintf("port %q is not a number: service names are not supported", s)
	}
	return fmt.Sprintf("invalid port %q", part)
}

// parseUint parses a decimal number no greater than max.
func parseUint(s string, max int) (int, error) {
	if !isDigits(s) || len(s) > 10 {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > max {
		return 0, fmt.Errorf("out of range: %q", s)
	}
	return n, nil
}

// parseStates parses a --state or --ctstate value.
func parseStates(v string) ([]v1alpha1.ConnState, string) {
	var out []v1alpha1.ConnState
	seen := map[v1alpha1.ConnState]bool{}
	for _, s := range strings.Split(v, ",") {
		cs, ok := connStates[strings.ToUpper(s)]
		if !ok {
			return nil, fmt.Sprintf("connection state %s is not supported: only NEW, ESTABLISHED, RELATED and INVALID", s)
		}
		if !seen[cs] {
			seen[cs] = true
			out = append(out, cs)
		}
	}
	return out, ""
}
