package reference

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// The iptables rendering of the matches and answers of iptables'
// extensions: source ports (-m PROTO --sport, -m multiport --sports), ICMP
// types (-m icmp --icmp-type, -m icmp6 --icmpv6-type), answers of REJECT
// (--reject-with), rate limits (-m limit, -m hashlimit) and connection
// limits (-m connlimit).

// restoreExtensions are the alternatives of a rule's source ports and ICMP
// types for a family: one iptables rule each, as iptables matches one ICMP
// type per rule and 15 ports per multiport match; [""] when the rule has
// neither.
func restoreExtensions(r v1alpha1.NodeFirewallRule, fam family) []string {
	if len(r.SourcePorts) > 0 {
		intervals := make([]compile.PortInterval, len(r.SourcePorts))
		for i, p := range r.SourcePorts {
			intervals[i] = compile.PortInterval{First: uint16(p.Port), Last: uint16(p.Last())}
		}
		return sourcePortMatches(protoNames[r.Protocol], compile.CanonicalPorts(intervals))
	}
	if len(r.ICMPTypes) > 0 {
		opt := "-m icmp --icmp-type "
		if fam == ipv6 {
			opt = "-m icmp6 --icmpv6-type "
		}
		var out []string
		for _, t := range r.ICMPTypes {
			m, ok := t.Message(r.Protocol)
			if !ok {
				// Written through for iptables-restore to refuse.
				out = append(out, opt+string(t))
				continue
			}
			v := strconv.Itoa(int(m.Type))
			if !m.AnyCode {
				v += "/" + strconv.Itoa(int(m.Code))
			}
			if !slices.Contains(out, opt+v) {
				out = append(out, opt+v)
			}
		}
		return out
	}
	return []string{""}
}

// sourcePortMatches renders source ports as portMatches renders
// destination ports.
func sourcePortMatches(proto string, ports []compile.PortInterval) []string {
	out := portMatches(proto, ports)
	for i, m := range out {
		m = strings.Replace(m, " --dports ", " --sports ", 1)
		out[i] = strings.Replace(m, " --dport ", " --sport ", 1)
	}
	return out
}

// rejectWith is the --reject-with of an answer in a family.
func rejectWith(rw v1alpha1.RejectWith, fam family) string {
	names := map[v1alpha1.RejectWith][2]string{
		"":                                 {"icmp-port-unreachable", "icmp6-port-unreachable"},
		v1alpha1.RejectWithPortUnreachable: {"icmp-port-unreachable", "icmp6-port-unreachable"},
		v1alpha1.RejectWithTCPReset:        {"tcp-reset", "tcp-reset"},
		v1alpha1.RejectWithHostUnreachable: {"icmp-host-unreachable", "icmp6-addr-unreachable"},
		v1alpha1.RejectWithAdminProhibited: {"icmp-admin-prohibited", "icmp6-adm-prohibited"},
		v1alpha1.RejectWithNetUnreachable:  {"icmp-net-unreachable", "icmp6-no-route"},
	}
	n, ok := names[rw]
	if !ok {
		// Written through for iptables-restore to refuse.
		return string(rw)
	}
	return n[fam]
}

// restoreLimits renders a rule's connection limit and rate limit, in the
// agent's order: the connection limit first, the rate last, so that only
// packets that match everything else take a token.
func restoreLimits(r v1alpha1.NodeFirewallRule, fam family) string {
	var parts []string
	if c := r.ConnLimit; c != nil {
		mask := 32
		if fam == ipv6 {
			mask = 128
		}
		parts = append(parts, fmt.Sprintf("-m connlimit --connlimit-above %d --connlimit-mask %d --connlimit-saddr", c.Above, mask))
	}
	if l := r.Limit; l != nil {
		rate := fmt.Sprintf("%d/%s", l.Rate, strings.ToLower(string(l.Per)))
		if !l.PerSource {
			parts = append(parts, fmt.Sprintf("-m limit --limit %s --limit-burst %d", rate, l.BurstOrDefault()))
		} else {
			// One table per rule, as the agent has one meter: the name
			// must be the same in every iptables rule of the rule.
			h := fnv.New32a()
			h.Write([]byte(r.Policy + "/" + r.Name))
			unit := map[v1alpha1.RateUnit]int64{v1alpha1.RateUnitSecond: 1, v1alpha1.RateUnitMinute: 60, v1alpha1.RateUnitHour: 3600, v1alpha1.RateUnitDay: 86400}[l.Per]
			expire := max(1, (int64(l.BurstOrDefault())*unit+int64(l.Rate)-1)/int64(l.Rate)) * 1000
			parts = append(parts, fmt.Sprintf("-m hashlimit --hashlimit-upto %s --hashlimit-burst %d --hashlimit-mode srcip --hashlimit-name nfw%08x --hashlimit-htable-expire %d",
				rate, l.BurstOrDefault(), h.Sum32(), expire))
		}
	}
	return strings.Join(parts, " ")
}
