package compile

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/internal/text"
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
	sets := make(map[string]*Set, len(rs.Sets))
	for i := range rs.Sets {
		s := &rs.Sets[i]
		sets[s.Name] = s
		renderSet(&b, s)
		b.WriteString("\n")
	}
	for _, m := range rs.Meters {
		renderMeter(&b, m)
		b.WriteString("\n")
	}
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
			b.WriteString(renderRule(r, sets[r.Lookup]))
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// renderSet writes a set declaration with one element per line.
func renderSet(b *strings.Builder, s *Set) {
	fmt.Fprintf(b, "\tset %s {\n", s.Name)
	types := make([]string, len(s.Fields))
	for i, f := range s.Fields {
		types[i] = fieldType(f, s.Family)
	}
	fmt.Fprintf(b, "\t\ttype %s\n", strings.Join(types, " . "))
	if !s.Exact {
		b.WriteString("\t\tflags interval\n")
	}
	if s.Counter {
		b.WriteString("\t\tcounter\n")
	}
	if len(s.Elements) > 0 {
		b.WriteString("\t\telements = {\n")
		for i, e := range s.Elements {
			b.WriteString("\t\t\t")
			if s.Exact {
				// A hash set holds the masked key: each address's first.
				e.SAddr.Last, e.DAddr.Last = e.SAddr.First, e.DAddr.First
			}
			b.WriteString(formatElement(e, s.Fields))
			if e.Rule != "" {
				b.WriteString(" comment " + text.Quote(e.Rule))
			}
			if i < len(s.Elements)-1 {
				b.WriteString(",")
			}
			b.WriteString("\n")
		}
		b.WriteString("\t\t}\n")
	}
	b.WriteString("\t}\n")
}

// fieldType is the nft data type of a set field.
func fieldType(f SetField, fam Family) string {
	switch f {
	case FieldL4Proto:
		return "inet_proto"
	case FieldDPort:
		return "inet_service"
	}
	if fam == FamilyIPv6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// fieldExpr is the nft expression that loads a set field.
func fieldExpr(f SetField, fam Family) string {
	switch f {
	case FieldSAddr, FieldDAddr:
		if fam == FamilyIPv6 {
			return "ip6 " + f.String()
		}
		return "ip " + f.String()
	}
	return f.String()
}

// formatElement renders a set element as nft reads it: a value, a prefix
// or a range per field.
func formatElement(e SetElement, fields []SetField) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		switch f {
		case FieldL4Proto:
			if e.L4Proto.First == e.L4Proto.Last {
				parts[i] = protoName(e.L4Proto.First)
			} else {
				parts[i] = fmt.Sprintf("%d-%d", e.L4Proto.First, e.L4Proto.Last)
			}
		case FieldDPort:
			parts[i] = formatPorts(e.DPort)
		case FieldSAddr:
			parts[i] = formatAddrRange(e.SAddr)
		case FieldDAddr:
			parts[i] = formatAddrRange(e.DAddr)
		}
	}
	return strings.Join(parts, " . ")
}

// formatAddrRange renders an address range as a prefix when it is one.
func formatAddrRange(r AddrRange) string {
	if p, ok := rangePrefix(r); ok {
		return formatPrefix(p)
	}
	return r.First.String() + "-" + r.Last.String()
}

// rangePrefix returns the prefix that is exactly r, if any.
func rangePrefix(r AddrRange) (netip.Prefix, bool) {
	bits := r.First.BitLen()
	for b := 0; b <= bits; b++ {
		p := netip.PrefixFrom(r.First, b)
		if p.Masked().Addr() != r.First {
			continue
		}
		if prefixSpan(p).hi == addrU128(r.Last) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// renderRule renders one rule; lookup is the set the rule looks up, if any.
func renderRule(r Rule, lookup *Set) string {
	parts := matchParts(r, lookup)
	if r.Lookup != "" {
		parts = append(parts, lookupParts(r.Lookup, lookup)...)
	}
	parts = append(parts, statementParts(r)...)
	return strings.Join(parts, " ")
}

// matchParts renders a rule's matches but its lookup.
func matchParts(r Rule, lookup *Set) []string {
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
	if family != FamilyAny && !addrs && len(r.ICMPTypes) == 0 && len(r.ICMPTypeCodes) == 0 && !lookupImpliesFamily(lookup) {
		add("meta nfproto", map[Family]string{FamilyIPv4: "ipv4", FamilyIPv6: "ipv6"}[family])
	}
	if r.DAddrType != DAddrTypeAny {
		add("fib daddr type", r.DAddrType.String())
	}
	// A lone "+" matches every name, and nft refuses an all-wildcard
	// string: it is no condition at all.
	if r.IIfName != "" && r.IIfName != "+" {
		add("iifname", text.Quote(ifnamePattern(r.IIfName)))
	}
	if r.OIfName != "" && r.OIfName != "+" {
		add("oifname", text.Quote(ifnamePattern(r.OIfName)))
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
	case len(r.ICMPTypeCodes) > 0:
		add(icmpTypeCodeParts(r)...)
	case r.L4Proto != 0:
		add("meta l4proto", protoName(r.L4Proto))
	}
	if len(r.DPorts) > 0 {
		add("th dport", set(r.DPorts, formatPorts))
	}
	if len(r.SPorts) > 0 {
		add("th sport", set(r.SPorts, formatPorts))
	}
	if r.CtStates != 0 {
		add("ct state", ctStateNames(r.CtStates))
	}
	return parts
}

// lookupParts renders the lookup of the named set: its key, each address
// masked as the set asks, then the set.
func lookupParts(name string, lookup *Set) []string {
	if lookup == nil {
		// A dangling lookup: nft names the missing set.
		return []string{"meta l4proto", "@" + name}
	}
	keys := make([]string, len(lookup.Fields))
	for i, f := range lookup.Fields {
		keys[i] = fieldExpr(f, lookup.Family)
		if bits := lookup.AddrBits(f); bits > 0 {
			keys[i] += " & " + AddrMask(lookup.Family, bits).String()
		}
	}
	return []string{strings.Join(keys, " . "), "@" + lookup.Name}
}

// statementParts renders what a matching rule does: count, log, its
// verdict, and its comment.
func statementParts(r Rule) []string {
	var parts []string
	add := func(s ...string) { parts = append(parts, s...) }
	add(statefulParts(r)...)
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
		add("log prefix", text.Quote(r.Log.Prefix), "group", strconv.Itoa(int(r.Log.Group)))
	}
	if r.Verdict != VerdictNone {
		add(string(r.Verdict))
	}
	if r.Comment != "" {
		add("comment", text.Quote(r.Comment))
	}
	return parts
}

// lookupImpliesFamily reports whether a set's key loads addresses, which
// restricts the rule to the set's family.
func lookupImpliesFamily(s *Set) bool {
	return s != nil && (slices.Contains(s.Fields, FieldSAddr) || slices.Contains(s.Fields, FieldDAddr))
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
