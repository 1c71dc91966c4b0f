package compile

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// Failsafe is a destination port range that every ruleset accepts ahead of
// the policy rules, so that no policy can cut a node off from its operators
// or its control plane.
type Failsafe struct {
	Protocol v1alpha1.Protocol
	Ports    PortInterval
	// Sources and Destinations, when set, restrict the failsafe to packets
	// from (and to) one of these prefixes, as a rule's sources and
	// destinations do: "etcd only from the control plane". The failsafe
	// then matches only the IP families both allow. Empty means any.
	Sources, Destinations []netip.Prefix
}

// String returns the failsafe in flag syntax, e.g. "tcp:2379-2380",
// followed by its addresses, if any: "tcp:2379-2380 from 10.0.0.0/24".
func (f Failsafe) String() string {
	s := strings.ToLower(string(f.Protocol)) + ":" + strconv.Itoa(int(f.Ports.First))
	if f.Ports.Last != f.Ports.First {
		s += "-" + strconv.Itoa(int(f.Ports.Last))
	}
	if len(f.Sources) > 0 {
		s += " from " + formatPrefixes(f.Sources)
	}
	if len(f.Destinations) > 0 {
		s += " to " + formatPrefixes(f.Destinations)
	}
	return s
}

// formatPrefixes lists prefixes as a failsafe's String does: comma
// separated, a single address without its prefix length.
func formatPrefixes(ps []netip.Prefix) string {
	items := make([]string, len(ps))
	for i, p := range ps {
		if p.IsSingleIP() {
			items[i] = p.Addr().String()
		} else {
			items[i] = p.String()
		}
	}
	return strings.Join(items, ",")
}

// Restricted reports whether the failsafe matches only some addresses.
func (f Failsafe) Restricted() bool {
	return len(f.Sources) > 0 || len(f.Destinations) > 0
}

// appendFailsafeRules appends the rules that accept the failsafe ports:
// those without addresses share one rule per protocol, in a fixed protocol
// order whatever the order given; those with addresses follow, one rule per
// protocol, address lists and IP family, in the order given.
func appendFailsafeRules(rules []Rule, failsafes []Failsafe) []Rule {
	for _, p := range []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP} {
		var ports []PortInterval
		for _, f := range failsafes {
			if f.Protocol == p && !f.Restricted() {
				ports = append(ports, f.Ports)
			}
		}
		if len(ports) == 0 {
			continue
		}
		rules = append(rules, Rule{
			L4Proto: l4Proto(p),
			DPorts:  CanonicalPorts(ports),
			Counter: true,
			Verdict: VerdictAccept,
			Comment: "nodefw: failsafe " + protoName(l4Proto(p)),
		})
	}
	// Restricted failsafes with the same protocol and addresses share
	// their rules, as one entry of several port ranges does.
	type group struct {
		f     Failsafe
		ports []PortInterval
	}
	var groups []*group
	for _, f := range failsafes {
		if !f.Restricted() {
			continue
		}
		i := slices.IndexFunc(groups, func(g *group) bool {
			return g.f.Protocol == f.Protocol && slices.Equal(g.f.Sources, f.Sources) && slices.Equal(g.f.Destinations, f.Destinations)
		})
		if i < 0 {
			groups = append(groups, &group{f: f})
			i = len(groups) - 1
		}
		groups[i].ports = append(groups[i].ports, f.Ports)
	}
	for _, g := range groups {
		src, dst := splitByFamily(slices.Clone(g.f.Sources)), splitByFamily(slices.Clone(g.f.Destinations))
		for _, fam := range families {
			if (len(g.f.Sources) > 0 && len(src[fam]) == 0) || (len(g.f.Destinations) > 0 && len(dst[fam]) == 0) {
				continue // no address of this family to match
			}
			rules = append(rules, Rule{
				Family:  fam,
				L4Proto: l4Proto(g.f.Protocol),
				DPorts:  CanonicalPorts(g.ports),
				SAddrs:  src[fam],
				DAddrs:  dst[fam],
				Counter: true,
				Verdict: VerdictAccept,
				Comment: "nodefw: failsafe " + protoName(l4Proto(g.f.Protocol)) + " by address",
			})
		}
	}
	return rules
}

// DefaultFailsafeInbound keeps a node reachable whatever its policies say:
//   - TCP 22: SSH, the way back in after a bad policy;
//   - TCP 6443: the API server, so agents and kubectl can still reach a
//     control-plane node to fetch or push the fix;
//   - TCP 2379-2380: etcd client and peer traffic, so the control plane
//     keeps quorum;
//   - TCP 10250: the kubelet, which the API server needs for logs, exec
//     and health;
//   - UDP 67-68: DHCP, so the node keeps its address.
func DefaultFailsafeInbound() []Failsafe {
	return []Failsafe{
		{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{22, 22}},
		{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{6443, 6443}},
		{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{2379, 2380}},
		{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{10250, 10250}},
		{Protocol: v1alpha1.ProtocolUDP, Ports: PortInterval{67, 68}},
	}
}

// DefaultFailsafeOutbound keeps a node able to find and reach its control
// plane whatever its policies say:
//   - UDP and TCP 53: DNS;
//   - TCP 6443: the API server, so the agent can always fetch a corrected
//     policy (clusters that serve the API on another port should add it);
//   - UDP 67-68: DHCP, so the node keeps its address.
func DefaultFailsafeOutbound() []Failsafe {
	return []Failsafe{
		{Protocol: v1alpha1.ProtocolUDP, Ports: PortInterval{53, 53}},
		{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{53, 53}},
		{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{6443, 6443}},
		{Protocol: v1alpha1.ProtocolUDP, Ports: PortInterval{67, 68}},
	}
}

// failsafeSyntax is one flag item: protocol, colon, port or port range.
var failsafeSyntax = regexp.MustCompile(`^([A-Za-z]+):([0-9]+)(?:-([0-9]+))?$`)

// ParseFailsafes parses the flag syntax "tcp:22,tcp:2379-2380,udp:53".
// Protocols are tcp, udp or sctp in any case; "none" or "" means no
// failsafes.
func ParseFailsafes(s string) ([]Failsafe, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "none") {
		return nil, nil
	}
	var out []Failsafe
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		m := failsafeSyntax.FindStringSubmatch(item)
		if m == nil {
			return nil, fmt.Errorf("failsafe %q: want protocol:port or protocol:first-last", item)
		}
		var f Failsafe
		switch strings.ToLower(m[1]) {
		case "tcp":
			f.Protocol = v1alpha1.ProtocolTCP
		case "udp":
			f.Protocol = v1alpha1.ProtocolUDP
		case "sctp":
			f.Protocol = v1alpha1.ProtocolSCTP
		default:
			return nil, fmt.Errorf("failsafe %q: protocol must be tcp, udp or sctp", item)
		}
		first, err := parsePort(m[2])
		if err != nil {
			return nil, fmt.Errorf("failsafe %q: %w", item, err)
		}
		last := first
		if m[3] != "" {
			if last, err = parsePort(m[3]); err != nil {
				return nil, fmt.Errorf("failsafe %q: %w", item, err)
			}
		}
		if last < first {
			return nil, fmt.Errorf("failsafe %q: range ends below its start", item)
		}
		f.Ports = PortInterval{First: first, Last: last}
		out = append(out, f)
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %s is not in 1-65535", s)
	}
	return uint16(n), nil
}

// FormatFailsafes is the inverse of ParseFailsafes; no failsafes format as
// "none" so that a flag's default reads as a choice.
func FormatFailsafes(fs []Failsafe) string {
	if len(fs) == 0 {
		return "none"
	}
	items := make([]string, len(fs))
	for i, f := range fs {
		items[i] = f.String()
	}
	return strings.Join(items, ",")
}

// ValidateFailsafe checks a failsafe built in code rather than parsed.
func ValidateFailsafe(f Failsafe) error {
	if !f.Protocol.HasPorts() {
		return fmt.Errorf("protocol %q must be TCP, UDP or SCTP", f.Protocol)
	}
	if f.Ports.First == 0 || f.Ports.Last < f.Ports.First {
		return fmt.Errorf("ports %d-%d are not a range within 1-65535", f.Ports.First, f.Ports.Last)
	}
	for _, l := range []struct {
		name string
		ps   []netip.Prefix
	}{{"sources", f.Sources}, {"destinations", f.Destinations}} {
		for _, p := range l.ps {
			if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
				return fmt.Errorf("%s: %v is not an IPv4 or IPv6 prefix", l.name, p)
			}
			if p != p.Masked() {
				return fmt.Errorf("%s: %v has bits set beyond its prefix length (%v)", l.name, p, p.Masked())
			}
		}
	}
	if len(f.Sources) > 0 && len(f.Destinations) > 0 && !sharesFamily(f.Sources, f.Destinations) {
		return fmt.Errorf("sources and destinations have no IP family in common, so the failsafe matches nothing")
	}
	return nil
}

// sharesFamily reports whether two prefix lists have an IP family in common.
func sharesFamily(a, b []netip.Prefix) bool {
	for _, p := range a {
		for _, q := range b {
			if p.Addr().Is4() == q.Addr().Is4() {
				return true
			}
		}
	}
	return false
}
