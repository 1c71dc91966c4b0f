package importer

import (
	"fmt"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// The options of iptables' extensions: protocol names, ICMP types, the
// answers of REJECT, and the limit, hashlimit and connlimit matches.

// protocolNames are the names iptables takes and prints for IP protocols:
// its own, and those of /etc/protocols (Debian's netbase), which
// iptables-save prints for numbers it finds there ("-p ipv6" is 41, IPv6
// in IPv4, not ICMPv6).
var protocolNames = map[string]uint8{
	"icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "st": 5, "tcp": 6, "egp": 8, "igp": 9, "pup": 12,
	"udp": 17, "hmp": 20, "xns-idp": 22, "rdp": 27, "iso-tp4": 29, "dccp": 33, "xtp": 36, "ddp": 37,
	"idpr-cmtp": 38, "ipv6": 41, "ipv6-route": 43, "ipv6-frag": 44, "idrp": 45, "rsvp": 46, "gre": 47,
	"esp": 50, "ah": 51, "skip": 57, "ipv6-icmp": 58, "icmpv6": 58, "icmp6": 58, "ipv6-nonxt": 59,
	"ipv6-opts": 60, "rspf": 73, "vmtp": 81, "eigrp": 88, "ospf": 89, "ax.25": 93, "ipip": 94,
	"etherip": 97, "encap": 98, "pim": 103, "ipcomp": 108, "vrrp": 112, "l2tp": 115, "isis": 124,
	"sctp": 132, "fc": 133, "mobility-header": 135, "mh": 135, "ipv6-mh": 135, "udplite": 136,
	"mpls-in-ip": 137, "manet": 138, "hip": 139, "shim6": 140, "wesp": 141, "rohc": 142, "ethernet": 143,
}

// protocolOf is the API's protocol of a -p value: a name iptables knows
// or a number, "" for any (all, 0).
func protocolOf(v string) (v1alpha1.Protocol, bool) {
	if v == "all" {
		return "", true
	}
	n, ok := protocolNames[v]
	if !ok {
		num, err := parseUint(v, 255)
		if err != nil {
			return "", false
		}
		n = uint8(num)
	}
	return v1alpha1.ProtocolFor(n), true
}

// icmpWords are the words of iptables' ICMP type names that the API
// spells in capitals.
var icmpWords = map[string]string{"tos": "TOS", "ttl": "TTL", "ip": "IP", "mld": "MLD"}

// icmpAliases are iptables' other names of ICMP types.
var icmpAliases = map[string]string{
	"ping": "EchoRequest", "pong": "EchoReply", "ttl-exceeded": "TimeExceeded",
	"mld-listener-reduction": "MLDListenerDone",
}

// parseICMPType reads an --icmp-type or --icmpv6-type value: a name of
// iptables', which becomes the API's CamelCase, or numbers. "any" matches
// every type: no type at all.
func parseICMPType(opt, v string) (v1alpha1.ICMPType, string) {
	lower := strings.ToLower(v)
	if lower == "any" {
		return "", ""
	}
	if isDigits(strings.Replace(v, "/", "", 1)) {
		return v1alpha1.ICMPType(v), ""
	}
	if a, ok := icmpAliases[lower]; ok {
		return v1alpha1.ICMPType(a), ""
	}
	var b strings.Builder
	for _, w := range strings.Split(lower, "-") {
		if w == "" {
			return "", fmt.Sprintf("%s %s is not an ICMP type", opt, v)
		}
		if up, ok := icmpWords[w]; ok {
			b.WriteString(up)
			continue
		}
		b.WriteString(strings.ToUpper(w[:1]) + w[1:])
	}
	return v1alpha1.ICMPType(b.String()), ""
}

// rejectAnswers maps --reject-with values to the API's answers; those
// marked approximate answer with another ICMP code of the same kind.
var rejectAnswers = map[string]struct {
	rw          v1alpha1.RejectWith
	approximate bool
}{
	"icmp-port-unreachable": {v1alpha1.RejectWithPortUnreachable, false}, "port-unreach": {v1alpha1.RejectWithPortUnreachable, false},
	"icmp6-port-unreachable": {v1alpha1.RejectWithPortUnreachable, false},
	"tcp-reset":              {v1alpha1.RejectWithTCPReset, false}, "tcp-rst": {v1alpha1.RejectWithTCPReset, false},
	"icmp-host-unreachable": {v1alpha1.RejectWithHostUnreachable, false}, "host-unreach": {v1alpha1.RejectWithHostUnreachable, false},
	"icmp6-addr-unreachable": {v1alpha1.RejectWithHostUnreachable, false}, "addr-unreach": {v1alpha1.RejectWithHostUnreachable, false},
	"icmp-net-unreachable": {v1alpha1.RejectWithNetUnreachable, false}, "net-unreach": {v1alpha1.RejectWithNetUnreachable, false},
	"icmp6-no-route": {v1alpha1.RejectWithNetUnreachable, false}, "no-route": {v1alpha1.RejectWithNetUnreachable, false},
	"icmp-admin-prohibited": {v1alpha1.RejectWithAdminProhibited, false}, "admin-prohib": {v1alpha1.RejectWithAdminProhibited, false},
	"icmp6-adm-prohibited": {v1alpha1.RejectWithAdminProhibited, false}, "adm-prohibited": {v1alpha1.RejectWithAdminProhibited, false},
	"icmp-host-prohibited": {v1alpha1.RejectWithAdminProhibited, true}, "host-prohib": {v1alpha1.RejectWithAdminProhibited, true},
	"icmp-net-prohibited": {v1alpha1.RejectWithAdminProhibited, true}, "net-prohib": {v1alpha1.RejectWithAdminProhibited, true},
	"icmp-proto-unreachable": {v1alpha1.RejectWithPortUnreachable, true}, "proto-unreach": {v1alpha1.RejectWithPortUnreachable, true},
	"icmp6-policy-fail": {v1alpha1.RejectWithAdminProhibited, true}, "policy-fail": {v1alpha1.RejectWithAdminProhibited, true},
	"icmp6-reject-route": {v1alpha1.RejectWithAdminProhibited, true}, "reject-route": {v1alpha1.RejectWithAdminProhibited, true},
}

// parseRejectWith reads a --reject-with value: the API's answer, and a
// note when the answer is another code of the same kind.
func parseRejectWith(v string) (v1alpha1.RejectWith, string, string) {
	a, ok := rejectAnswers[strings.ToLower(v)]
	if !ok {
		return "", "", fmt.Sprintf("--reject-with %s is not supported", v)
	}
	if a.approximate {
		return a.rw, fmt.Sprintf("REJECT --reject-with %s imported as rejectWith %s: the client sees the same refusal, with another ICMP code", v, a.rw), ""
	}
	return a.rw, "", ""
}

// limitFlags are the options of the limit, hashlimit and connlimit
// matches, and whether each takes a value.
var limitFlags = map[string]bool{
	"--limit": true, "--limit-burst": true,
	"--hashlimit-upto": true, "--hashlimit": true, "--hashlimit-above": true, "--hashlimit-burst": true,
	"--hashlimit-mode": true, "--hashlimit-name": true, "--hashlimit-srcmask": true, "--hashlimit-dstmask": true,
	"--hashlimit-htable-size": true, "--hashlimit-htable-max": true, "--hashlimit-htable-expire": true,
	"--hashlimit-htable-gcinterval": true, "--hashlimit-rate-match": false, "--hashlimit-rate-interval": true,
	"--connlimit-above": true, "--connlimit-upto": true, "--connlimit-mask": true,
	"--connlimit-saddr": false, "--connlimit-daddr": false,
}

// limitOptions collects the options of the limit, hashlimit and connlimit
// matches of one rule.
type limitOptions map[string]string

func (l *limitOptions) option(opt string) bool {
	_, ok := limitFlags[opt]
	return ok
}

func (l *limitOptions) set(opt, v string) {
	if *l == nil {
		*l = limitOptions{}
	}
	(*l)[opt] = v
}

func (l limitOptions) has(prefix string) bool {
	for k := range l {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// apply sets r's limit and connection limit from the options, or returns
// why they do not translate.
func (l limitOptions) apply(r *v1alpha1.Rule, matches map[string]bool, notes *[]string) string {
	switch {
	case l.has("--limit") && !matches["limit"]:
		return "--limit needs -m limit"
	case l.has("--hashlimit") && !matches["hashlimit"]:
		return "--hashlimit options need -m hashlimit"
	case l.has("--connlimit") && !matches["connlimit"]:
		return "--connlimit options need -m connlimit"
	case matches["limit"] && matches["hashlimit"]:
		return "-m limit and -m hashlimit together are not supported: a rule has one rate limit"
	}
	if matches["limit"] {
		rate := l["--limit"]
		if rate == "" {
			rate = "3/hour" // iptables' default
		}
		lim, err := parseLimit(rate, l["--limit-burst"])
		if err != "" {
			return err
		}
		r.Limit = lim
	}
	if matches["hashlimit"] {
		if err := l.hashlimit(r, notes); err != "" {
			return err
		}
	}
	if matches["connlimit"] {
		if err := l.connlimit(r); err != "" {
			return err
		}
	}
	return ""
}

// hashlimit sets r's limit from -m hashlimit: per source address with
// --hashlimit-mode srcip, one bucket without a mode.
func (l limitOptions) hashlimit(r *v1alpha1.Rule, notes *[]string) string {
	switch {
	case l.has("--hashlimit-above"):
		return "--hashlimit-above is not supported: a rule's limit matches up to its rate, as --hashlimit-upto"
	case l.has("--hashlimit-rate-match"), l.has("--hashlimit-rate-interval"):
		return "--hashlimit-rate-match is not supported"
	}
	rate := l["--hashlimit-upto"]
	if rate == "" {
		rate = l["--hashlimit"]
	}
	if rate == "" {
		return "-m hashlimit needs --hashlimit-upto"
	}
	lim, err := parseLimit(rate, l["--hashlimit-burst"])
	if err != "" {
		return err
	}
	switch mode := l["--hashlimit-mode"]; mode {
	case "":
	case "srcip":
		lim.PerSource = true
	default:
		return fmt.Sprintf("--hashlimit-mode %s is not supported: only srcip", mode)
	}
	if m, ok := l["--hashlimit-srcmask"]; ok && m != "32" && m != "128" {
		return fmt.Sprintf("--hashlimit-srcmask %s is not supported: only whole addresses (32, 128)", m)
	}
	if lim.PerSource {
		expire := 10000 // ms, iptables' default
		if v, ok := l["--hashlimit-htable-expire"]; ok {
			n, perr := parseUint(v, 1<<31)
			if perr != nil {
				return fmt.Sprintf("invalid --hashlimit-htable-expire %q", v)
			}
			expire = n
		}
		unit := map[v1alpha1.RateUnit]int64{v1alpha1.RateUnitSecond: 1, v1alpha1.RateUnitMinute: 60, v1alpha1.RateUnitHour: 3600, v1alpha1.RateUnitDay: 86400}[lim.Per]
		if refill := int64(lim.BurstOrDefault()) * unit * 1000 / int64(lim.Rate); int64(expire) < refill {
			*notes = append(*notes, fmt.Sprintf("hashlimit forgets a source after %dms without packets, refilling its bucket at once; nodefw keeps it until it would have refilled at the rate (%dms)", expire, refill))
		}
	}
	r.Limit = lim
	return ""
}

// connlimit sets r's connection limit from -m connlimit.
func (l limitOptions) connlimit(r *v1alpha1.Rule) string {
	switch {
	case l.has("--connlimit-upto"):
		return "--connlimit-upto is not supported: a connection limit matches above its count, as --connlimit-above"
	case l.has("--connlimit-daddr"):
		return "--connlimit-daddr is not supported: connections are counted per source address"
	}
	if m, ok := l["--connlimit-mask"]; ok && m != "32" && m != "128" {
		return fmt.Sprintf("--connlimit-mask %s is not supported: only whole addresses (32, 128)", m)
	}
	v, ok := l["--connlimit-above"]
	if !ok {
		return "-m connlimit needs --connlimit-above"
	}
	n, err := parseUint(v, 65535)
	if err != nil {
		return fmt.Sprintf("--connlimit-above %s is not in 0-65535", v)
	}
	r.ConnLimit = &v1alpha1.ConnLimit{Above: int32(n)}
	return ""
}

// parseLimit reads a rate, "N/unit" (unit second, minute, hour or day, or
// a prefix of one; per second without one), and a burst ("" for the
// default).
func parseLimit(rate, burst string) (*v1alpha1.RateLimit, string) {
	num, unit, hasUnit := strings.Cut(rate, "/")
	n, err := parseUint(num, 10000)
	if err != nil || n == 0 {
		return nil, fmt.Sprintf("rate %s is not 1 to 10000 packets per unit", rate)
	}
	lim := &v1alpha1.RateLimit{Rate: int32(n), Per: v1alpha1.RateUnitSecond}
	if hasUnit {
		u := strings.ToLower(unit)
		switch {
		case u != "" && strings.HasPrefix("second", u), u == "sec":
		case u != "" && strings.HasPrefix("minute", u):
			lim.Per = v1alpha1.RateUnitMinute
		case u != "" && strings.HasPrefix("hour", u):
			lim.Per = v1alpha1.RateUnitHour
		case u != "" && strings.HasPrefix("day", u):
			lim.Per = v1alpha1.RateUnitDay
		default:
			return nil, fmt.Sprintf("rate %s: unknown unit %q", rate, unit)
		}
	}
	if burst != "" {
		b, err := parseUint(burst, 10000)
		if err != nil || b == 0 {
			return nil, fmt.Sprintf("burst %s is not 1 to 10000", burst)
		}
		if b != int(v1alpha1.DefaultLimitBurst) {
			lim.Burst = int32(b)
		}
	}
	return lim, ""
}

// logSettings are the API's log settings of a LOG rule taken in by the
// rule after it, and a note on what they keep of the LOG.
type logSettings struct {
	logLabel          string
	logRate, logBurst int32
	logNote           string
}

// logSettingsOf reads a LOG rule's prefix as a label and its -m limit as
// the log's rate when the rate is a whole number a minute; the defaults
// (10 a minute, burst 5) are left unset.
func logSettingsOf(lg parsed) logSettings {
	var s logSettings
	if label := sanitize(lg.logPrefix); label != "" {
		if len(label) > maxLogLabel {
			label = strings.TrimRight(label[:maxLogLabel], "-")
		}
		s.logLabel = label
		s.logNote = fmt.Sprintf(" %q", label)
	}
	l := lg.match.Limit
	if l == nil {
		s.logNote += ", and no rate limit of its own: nodefw's is 10 a minute"
		return s
	}
	perMinute := map[v1alpha1.RateUnit]int64{v1alpha1.RateUnitSecond: int64(l.Rate) * 60, v1alpha1.RateUnitMinute: int64(l.Rate)}[l.Per]
	if perMinute == 0 && l.Per == v1alpha1.RateUnitHour && l.Rate%60 == 0 {
		perMinute = int64(l.Rate / 60)
	}
	switch {
	case perMinute == 0 || perMinute > 60000:
		s.logNote += fmt.Sprintf(", at nodefw's 10 a minute: %d a %s is not a whole number a minute", l.Rate, strings.ToLower(string(l.Per)))
	case perMinute != 10:
		s.logRate = int32(perMinute)
	}
	if b := l.BurstOrDefault(); b != 5 {
		s.logBurst = b
	}
	return s
}

// maxLogLabel is the longest logLabel the API accepts.
const maxLogLabel = 32

// withoutLimit is r without its rate limit: a LOG's limit gates only the
// log.
func withoutLimit(r v1alpha1.Rule) v1alpha1.Rule {
	r.Limit = nil
	return r
}
