package importer

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// parsed is one rule line read: what it matches, as the fields of a Rule
// without chain, name or action, and what it does with a match.
type parsed struct {
	match v1alpha1.Rule
	// target is the -j or -g target: ACCEPT, DROP, REJECT, LOG, RETURN, an
	// extension target or a chain; "" for none.
	target string
	// gotoChain says the target came with -g.
	gotoChain bool
	// rejectWith is the answer of a REJECT.
	rejectWith v1alpha1.RejectWith
	// logPrefix is the --log-prefix of a LOG.
	logPrefix string
	// addrtype says the rule matched -m addrtype; dstType is its
	// --dst-type, "!" prefixed when negated. Only PREROUTING takes them
	// (see prerouting.go).
	addrtype bool
	dstType  string
	comment  string
	// notes are caveats of a translated rule.
	notes []string
	// err says why the rule cannot be translated.
	err string
}

// interfacePattern is the API's pattern for inInterface and outInterface.
var interfacePattern = regexp.MustCompile(`^([A-Za-z0-9_.@:-]{1,15}\+?|\+)$`)

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
	"icmp": true, "icmp6": true, "icmpv6": true, "set": true,
	"limit": true, "hashlimit": true, "connlimit": true,
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

// options of the LOG target, which only shape the log line.
var logOptions = map[string]bool{
	"--log-prefix": true, "--log-level": true, "--log-tcp-sequence": false, "--log-tcp-options": false,
	"--log-ip-options": false, "--log-uid": false, "--log-macdecode": false,
}

// parseRule reads the arguments of a rule (everything after the chain name
// and rule number). A rule is translated whole or not at all: err names
// the first thing that does not translate.
func parseRule(args []string) parsed {
	var (
		t        parsed
		r        = &t.match
		firstErr string
		proto    string
		matches  = map[string]bool{}
		seen     = map[string]bool{}
		stateOpt string
		lim      limitOptions
		// negated says a "!" came before --dst-type.
		negated bool
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
		if opt == "!" && i+1 < len(args) && args[i+1] == "--match-set" {
			fail("! --match-set is not supported: a peer cannot match addresses outside an address set")
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
		if lim.option(opt) {
			v := ""
			if limitFlags[opt] {
				var ok bool
				if v, ok = value(); !ok {
					continue
				}
			}
			if !once(opt) {
				continue
			}
			lim.set(opt, v)
			continue
		}
		if takes, ok := logOptions[opt]; ok {
			v := ""
			if takes {
				var ok bool
				if v, ok = value(); !ok {
					continue
				}
			}
			if opt == "--log-prefix" {
				t.logPrefix = v
			}
			continue
		}
		switch opt {
		case "-p", "--protocol":
			v, ok := value()
			if !ok || !once("-p") {
				continue
			}
			proto = strings.ToLower(v)
			p, ok := protocolOf(proto)
			if !ok {
				fail("protocol %s is not known: use its number", v)
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
		case "-j", "--jump", "-g", "--goto":
			v, ok := value()
			if !ok || !once("-j") {
				continue
			}
			t.target = v
			t.gotoChain = opt == "-g" || opt == "--goto"
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
		case "--dport", "--destination-port", "--dports", "--destination-ports",
			"--sport", "--source-port", "--sports", "--source-ports":
			v, ok := value()
			source := strings.HasPrefix(opt, "--s")
			key := "--dport"
			if source {
				key = "--sport"
			}
			if !ok || !once(key) {
				continue
			}
			multi := strings.HasSuffix(opt, "s")
			if multi && !matches["multiport"] {
				fail("%s needs -m multiport", opt)
				continue
			}
			if !multi && strings.Contains(v, ",") {
				fail("%s takes one port or range; use -m multiport %ss for a list", opt, key)
				continue
			}
			ports, notes, err := parsePorts(v)
			if err != "" {
				fail("%s", err)
				continue
			}
			if source {
				for _, p := range ports {
					r.SourcePorts = append(r.SourcePorts, v1alpha1.SourcePortRange(p))
				}
			} else {
				r.Ports = ports
			}
			t.notes = append(t.notes, notes...)
		case "--ports":
			value()
			fail("multiport --ports (source or destination) is not supported")
		case "--icmp-type", "--icmpv6-type":
			v, ok := value()
			if !ok || !once("--icmp-type") {
				continue
			}
			ty, err := parseICMPType(opt, v)
			if err != "" {
				fail("%s", err)
				continue
			}
			if ty != "" {
				r.ICMPTypes = []v1alpha1.ICMPType{ty}
			}
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
		case "--match-set":
			name, ok := value()
			if !ok {
				continue
			}
			flags, ok := value()
			if !ok {
				continue
			}
			if !matches["set"] {
				fail("--match-set needs -m set")
				continue
			}
			peers := []v1alpha1.Peer{{AddressSet: name}}
			switch flags {
			case "src":
				if !once("--match-set src") {
					continue
				}
				r.From = peers
			case "dst":
				if !once("--match-set dst") {
					continue
				}
				r.To = peers
			default:
				fail("--match-set %s %s is not supported: only sets of addresses matched by src or dst; a set of several dimensions (ports, interfaces) cannot be a peer", name, flags)
				continue
			}
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
			t.dstType = v
		case "--src-type", "--limit-iface-in", "--limit-iface-out":
			fail("addrtype %s is not supported: only --dst-type LOCAL, in PREROUTING", opt)
		case "--reject-with":
			v, ok := value()
			if !ok || !once("--reject-with") {
				continue
			}
			rw, note, err := parseRejectWith(v)
			if err != "" {
				fail("%s", err)
				continue
			}
			t.rejectWith = rw
			if note != "" {
				t.notes = append(t.notes, note)
			}
		default:
			if strings.HasPrefix(opt, "-") {
				fail("option %s is not supported", opt)
			} else {
				fail("unexpected argument %q", opt)
			}
		}
	}
	if firstErr == "" {
		firstErr = lim.apply(r, matches, &t.notes)
	}
	t.addrtype = matches["addrtype"]
	// The target decides first: a rule that does what nodefw does not is
	// not translated, whatever it matches.
	if extensionTargets[t.target] {
		firstErr = fmt.Sprintf("target %s is not supported: only ACCEPT, DROP, REJECT, LOG, RETURN and user-defined chains", t.target)
	}
	if firstErr != "" {
		t.err = firstErr
		return t
	}
	t.err = checkParsed(&t, proto)
	return t
}

// checkParsed checks what the API asks of a translated rule that the
// options alone do not show.
func checkParsed(t *parsed, proto string) string {
	r := &t.match
	switch {
	case t.target != "REJECT" && t.rejectWith != "":
		return "--reject-with needs -j REJECT"
	case t.rejectWith == v1alpha1.RejectWithTCPReset && r.Protocol != v1alpha1.ProtocolTCP:
		return "--reject-with tcp-reset needs -p tcp"
	case len(r.Sources) > 0 && len(r.From) > 0:
		return "-s with --match-set src is not supported: a rule takes addresses or an address set, not both"
	case len(r.Destinations) > 0 && len(r.To) > 0:
		return "-d with --match-set dst is not supported: a rule takes addresses or an address set, not both"
	case len(r.Ports) > 0 && !r.Protocol.HasPorts():
		return "destination ports need -p tcp, udp or sctp"
	case len(r.SourcePorts) > 0 && !r.Protocol.HasPorts():
		return "source ports need -p tcp, udp or sctp"
	case len(r.ICMPTypes) > 0 && r.Protocol != v1alpha1.ProtocolICMP && r.Protocol != v1alpha1.ProtocolICMPv6:
		return "--icmp-type needs -p icmp (--icmpv6-type -p ipv6-icmp)"
	}
	if len(r.ICMPTypes) > 0 {
		m, ok := r.ICMPTypes[0].Message(r.Protocol)
		if !ok {
			return fmt.Sprintf("ICMP type %s is not a type of protocol %s", r.ICMPTypes[0], proto)
		}
		// The API's spelling: the name when the type has one.
		r.ICMPTypes[0] = v1alpha1.ICMPTypeFor(r.Protocol, m)
	}
	return ""
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

// parsePorts parses a --dport, --dports, --sport or --sports value: ports
// and first:last ranges, comma separated.
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
