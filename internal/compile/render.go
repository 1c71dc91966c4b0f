package compile

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Render returns the ruleset in the syntax `nft -f` reads, for review,
// golden files and benchmarks. The leading "table" and "delete table" lines
// make loading it replace the table in one transaction, whether or not the
// table exists.
func Render(rs *Ruleset) string {
	table := rs.Table
	if table == "" {
		table = DefaultTable
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n\ntable inet %s {\n", table, table, table)
	for i, c := range rs.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		policy := c.Policy
		if policy == VerdictNone {
			policy = VerdictAccept
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		fmt.Fprintf(&b, "\t\ttype filter hook %s priority %d; policy %s;\n", c.Hook, c.Priority, policy)
		for _, r := range c.Rules {
			b.WriteString("\t\t")
			b.WriteString(renderRule(r))
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func renderRule(r Rule) string {
	var parts []string
	add := func(s ...string) { parts = append(parts, s...) }

	family := r.Family
	addrs := len(r.SAddrs) > 0 || len(r.DAddrs) > 0
	switch {
	case family != FamilyAny:
	case len(r.SAddrs) > 0:
		family = prefixFamily(r.SAddrs[0])
	case len(r.DAddrs) > 0:
		family = prefixFamily(r.DAddrs[0])
	}
	// Address and ICMP type matches imply the family; say it only when
	// nothing else does.
	if family != FamilyAny && !addrs && len(r.ICMPTypes) == 0 {
		add("meta nfproto", map[Family]string{FamilyIPv4: "ipv4", FamilyIPv6: "ipv6"}[family])
	}
	// A lone "+" matches every name, and nft refuses an all-wildcard
	// string: it is no condition at all.
	if r.IIfName != "" && r.IIfName != "+" {
		add("iifname", quote(ifnamePattern(r.IIfName)))
	}
	if r.OIfName != "" && r.OIfName != "+" {
		add("oifname", quote(ifnamePattern(r.OIfName)))
	}
	ip := "ip"
	if family == FamilyIPv6 {
		ip = "ip6"
	}
	if len(r.SAddrs) > 0 {
		add(ip, "saddr", set(r.SAddrs, formatPrefix))
	}
	if len(r.DAddrs) > 0 {
		add(ip, "daddr", set(r.DAddrs, formatPrefix))
	}
	switch {
	case len(r.ICMPTypes) > 0 && r.L4Proto == protoICMPv6:
		add("icmpv6 type", set(r.ICMPTypes, icmpv6TypeName))
	case len(r.ICMPTypes) > 0:
		add("icmp type", set(r.ICMPTypes, func(t uint8) string { return strconv.Itoa(int(t)) }))
	case r.L4Proto != 0:
		add("meta l4proto", protoName(r.L4Proto))
	}
	if len(r.DPorts) > 0 {
		add("th dport", set(r.DPorts, formatPorts))
	}
	if r.CtStates != 0 {
		add("ct state", ctStateNames(r.CtStates))
	}
	if r.Counter {
		add("counter")
	}
	if r.Log != nil {
		if r.Log.RatePerMinute > 0 {
			add("limit rate", fmt.Sprintf("%d/minute", r.Log.RatePerMinute))
			if r.Log.Burst > 0 {
				add("burst", fmt.Sprintf("%d packets", r.Log.Burst))
			}
		}
		add("log prefix", quote(r.Log.Prefix))
	}
	if r.Verdict != VerdictNone {
		add(string(r.Verdict))
	}
	if r.Comment != "" {
		add("comment", quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

func prefixFamily(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return FamilyIPv4
	}
	return FamilyIPv6
}

// ifnamePattern turns iptables' trailing "+" wildcard into nft's "*".
func ifnamePattern(name string) string {
	if base, ok := strings.CutSuffix(name, "+"); ok {
		return base + "*"
	}
	return name
}

// set renders one element bare and several as an anonymous set.
func set[T any](elems []T, format func(T) string) string {
	if len(elems) == 1 {
		return format(elems[0])
	}
	s := make([]string, len(elems))
	for i, e := range elems {
		s[i] = format(e)
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

func formatPrefix(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func formatPorts(p PortInterval) string {
	if p.First == p.Last {
		return strconv.Itoa(int(p.First))
	}
	return fmt.Sprintf("%d-%d", p.First, p.Last)
}

func protoName(p uint8) string {
	switch p {
	case protoICMP:
		return "icmp"
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMPv6:
		return "ipv6-icmp"
	case protoSCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

func icmpv6TypeName(t uint8) string {
	switch t {
	case 133:
		return "nd-router-solicit"
	case 134:
		return "nd-router-advert"
	case 135:
		return "nd-neighbor-solicit"
	case 136:
		return "nd-neighbor-advert"
	case 137:
		return "nd-redirect"
	}
	return strconv.Itoa(int(t))
}

// ctStateNames lists states in the order nft prints them.
func ctStateNames(s CtState) string {
	var names []string
	for _, st := range []struct {
		bit  CtState
		name string
	}{
		{CtStateInvalid, "invalid"},
		{CtStateEstablished, "established"},
		{CtStateRelated, "related"},
		{CtStateNew, "new"},
	} {
		if s&st.bit != 0 {
			names = append(names, st.name)
		}
	}
	return strings.Join(names, ",")
}

// quote makes an nft string. nft has no escapes, so characters that would
// end or break the string are replaced.
func quote(s string) string {
	return `"` + strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, s) + `"`
}
