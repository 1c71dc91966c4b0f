package compile

import (
	"fmt"
	"regexp"
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
}

// String returns the failsafe in flag syntax, e.g. "tcp:2379-2380".
func (f Failsafe) String() string {
	s := strings.ToLower(string(f.Protocol)) + ":" + strconv.Itoa(int(f.Ports.First))
	if f.Ports.Last != f.Ports.First {
		s += "-" + strconv.Itoa(int(f.Ports.Last))
	}
	return s
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

// validateFailsafe checks a failsafe built in code rather than parsed.
func validateFailsafe(f Failsafe) error {
	if !f.Protocol.HasPorts() {
		return fmt.Errorf("protocol %q must be TCP, UDP or SCTP", f.Protocol)
	}
	if f.Ports.First == 0 || f.Ports.Last < f.Ports.First {
		return fmt.Errorf("ports %d-%d are not a range within 1-65535", f.Ports.First, f.Ports.Last)
	}
	return nil
}
