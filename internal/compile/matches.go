package compile

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// The matches and answers of iptables' extensions: source ports, ICMP
// types with codes, rate limits (-m limit, -m hashlimit), connection
// limits (-m connlimit) and the answers of REJECT (--reject-with). Their
// model, their compilation from the API's rules, and their checks.

// ICMPTypeCode is an ICMP or ICMPv6 type with an inclusive range of its
// codes: 0-255 is every code.
type ICMPTypeCode struct {
	Type                uint8
	FirstCode, LastCode uint8
}

// RateUnit is the time unit of a rate, as nft spells it.
type RateUnit string

const (
	RateSecond RateUnit = "second"
	RateMinute RateUnit = "minute"
	RateHour   RateUnit = "hour"
	RateDay    RateUnit = "day"
)

// Seconds is the length of the unit.
func (u RateUnit) Seconds() uint64 {
	switch u {
	case RateMinute:
		return 60
	case RateHour:
		return 3600
	case RateDay:
		return 86400
	}
	return 1
}

// RateLimit is a token bucket that holds Burst packets and refills at
// Rate packets per Unit: a packet matches while the bucket has a token
// for it, and takes it. With Meter set, every source address has a bucket
// of its own, kept in that meter.
type RateLimit struct {
	Rate  uint32
	Unit  RateUnit
	Burst uint32
	Meter string
}

// ConnLimit matches a packet whose source address has more than Above
// connections in conntrack, the packet's own included; Meter is the meter
// that counts them per source.
type ConnLimit struct {
	Above uint32
	Meter string
}

// Meter is a named set of source addresses of one family that the kernel
// fills as packets come (a dynamic set): each element holds a source's
// bucket or connection count. Elements of a meter with a Timeout go after
// that long without packets; those of a meter without one stay.
type Meter struct {
	Name    string
	Family  Family
	Timeout time.Duration
}

// MeterSize is how many sources a meter holds, as nft's meters by
// default: a packet of a source that finds its meter full does not match.
const MeterSize = 65535

func (r *Rule) equalMatches(o *Rule) bool {
	return slices.Equal(r.SPorts, o.SPorts) && slices.Equal(r.ICMPTypeCodes, o.ICMPTypeCodes) &&
		(r.Limit == nil) == (o.Limit == nil) && (r.Limit == nil || *r.Limit == *o.Limit) &&
		(r.ConnLimit == nil) == (o.ConnLimit == nil) && (r.ConnLimit == nil || *r.ConnLimit == *o.ConnLimit)
}

// ruleVerdict is the verdict of an API rule's action and answer.
func ruleVerdict(r *v1alpha1.NodeFirewallRule) Verdict {
	if r.Action == v1alpha1.ActionReject {
		return rejectVerdicts[r.RejectWith]
	}
	return verdicts[r.Action]
}

var rejectVerdicts = map[v1alpha1.RejectWith]Verdict{
	"":                                 VerdictReject,
	v1alpha1.RejectWithPortUnreachable: VerdictReject,
	v1alpha1.RejectWithTCPReset:        VerdictRejectTCPReset,
	v1alpha1.RejectWithHostUnreachable: VerdictRejectHostUnreachable,
	v1alpha1.RejectWithAdminProhibited: VerdictRejectAdminProhibited,
	v1alpha1.RejectWithNetUnreachable:  VerdictRejectNetUnreachable,
}

// hasMeters reports whether an API rule keeps state per source address.
func hasMeters(r *v1alpha1.NodeFirewallRule) bool {
	return r.ConnLimit != nil || (r.Limit != nil && r.Limit.PerSource)
}

// sourcePorts are a rule's source ports in canonical form.
func sourcePorts(r *v1alpha1.NodeFirewallRule) []PortInterval {
	if len(r.SourcePorts) == 0 {
		return nil
	}
	ports := make([]PortInterval, len(r.SourcePorts))
	for i, p := range r.SourcePorts {
		ports[i] = PortInterval{First: uint16(p.Port), Last: uint16(p.Last())}
	}
	return compactPorts(ports)
}

// icmpMatch is a rule's ICMP types: the types alone when every entry
// names a whole type, else types with ranges of codes.
func icmpMatch(r *v1alpha1.NodeFirewallRule) ([]uint8, []ICMPTypeCode) {
	if len(r.ICMPTypes) == 0 {
		return nil, nil
	}
	codes := make([]ICMPTypeCode, 0, len(r.ICMPTypes))
	for _, t := range r.ICMPTypes {
		m, _ := t.Message(r.Protocol)
		c := ICMPTypeCode{Type: m.Type, FirstCode: m.Code, LastCode: m.Code}
		if m.AnyCode {
			c.FirstCode, c.LastCode = 0, 255
		}
		codes = append(codes, c)
	}
	codes = CanonicalICMPTypeCodes(codes)
	if slices.ContainsFunc(codes, func(c ICMPTypeCode) bool { return c.FirstCode != 0 || c.LastCode != 255 }) {
		return nil, codes
	}
	types := make([]uint8, len(codes))
	for i, c := range codes {
		types[i] = c.Type
	}
	return types, nil
}

// CanonicalICMPTypeCodes sorts types with their codes and merges the
// ranges of one type that overlap or touch, as Rule.ICMPTypeCodes holds
// them.
func CanonicalICMPTypeCodes(cs []ICMPTypeCode) []ICMPTypeCode {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b ICMPTypeCode) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.FirstCode, b.FirstCode), cmp.Compare(a.LastCode, b.LastCode))
	})
	out := cs[:0]
	for _, c := range cs {
		if n := len(out); n > 0 && out[n-1].Type == c.Type && uint16(c.FirstCode) <= uint16(out[n-1].LastCode)+1 {
			out[n-1].LastCode = max(out[n-1].LastCode, c.LastCode)
			continue
		}
		out = append(out, c)
	}
	return out
}

var rateUnits = map[v1alpha1.RateUnit]RateUnit{
	v1alpha1.RateUnitSecond: RateSecond,
	v1alpha1.RateUnitMinute: RateMinute,
	v1alpha1.RateUnitHour:   RateHour,
	v1alpha1.RateUnitDay:    RateDay,
}

// meterMaker declares the meters of one chain's rules, numbered per
// chain and kind in rule order: "input-limit-1-v4" for the first rule of
// chain input with a per-source limit, "input-connlimit-2-v6" for the
// second with a connection limit.
type meterMaker struct {
	rs                 *Ruleset
	chain              string
	limits, connLimits int
	// peers declares the peer sets rules look up, for the whole ruleset.
	peers *peerSetMaker
}

// statefulMatches returns the limit and connection limit of an API rule's
// nftables rules, per family (indexed by Family), declaring the meters
// they fill in the families of fams.
func (m *meterMaker) statefulMatches(r *v1alpha1.NodeFirewallRule, fams []Family) (limits [3]*RateLimit, conns [3]*ConnLimit) {
	declare := func(kind string, n int, fam Family, timeout time.Duration) string {
		name := m.chain + "-" + kind + "-" + strconv.Itoa(n) + "-" + fam.String()
		m.rs.Meters = append(m.rs.Meters, Meter{Name: name, Family: fam, Timeout: timeout})
		return name
	}
	if l := r.Limit; l != nil {
		base := RateLimit{Rate: uint32(l.Rate), Unit: rateUnits[l.Per], Burst: uint32(l.BurstOrDefault())}
		if l.PerSource {
			m.limits++
		}
		for _, fam := range fams {
			lim := base
			if l.PerSource {
				lim.Meter = declare("limit", m.limits, fam, refillTime(lim))
			}
			limits[fam] = &lim
		}
	}
	if c := r.ConnLimit; c != nil {
		m.connLimits++
		for _, fam := range fams {
			conns[fam] = &ConnLimit{Above: uint32(c.Above), Meter: declare("connlimit", m.connLimits, fam, 0)}
		}
	}
	return limits, conns
}

// refillTime is how long an empty bucket of l takes to fill, in whole
// seconds, at least one: a source's bucket may go after that long without
// packets, since a new one, full, is the same.
func refillTime(l RateLimit) time.Duration {
	secs := (uint64(l.Burst)*l.Unit.Seconds() + uint64(l.Rate) - 1) / uint64(l.Rate)
	return time.Duration(max(secs, 1)) * time.Second
}

// validateMatches checks the fields of iptables' extensions of rule i.
func validateMatches(i int, r *v1alpha1.NodeFirewallRule, fail func(path, format string, args ...any)) {
	path := func() string { return rulePath(i) }
	if len(r.SourcePorts) > 0 && !r.Protocol.HasPorts() {
		fail(path()+".sourcePorts", "sourcePorts require protocol TCP, UDP or SCTP, not %q", r.Protocol)
	}
	for j, p := range r.SourcePorts {
		pp := func() string { return fmt.Sprintf("%s.sourcePorts[%d]", path(), j) }
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
	if len(r.ICMPTypes) > 0 && r.Protocol != v1alpha1.ProtocolICMP && r.Protocol != v1alpha1.ProtocolICMPv6 {
		fail(path()+".icmpTypes", "icmpTypes require protocol ICMP or ICMPv6, not %q", r.Protocol)
	} else {
		for j, t := range r.ICMPTypes {
			if _, ok := t.Message(r.Protocol); !ok {
				fail(fmt.Sprintf("%s.icmpTypes[%d]", path(), j),
					"%q is not a type of protocol %s: a name as iptables spells it, in CamelCase, or numbers type or type/code", t, r.Protocol)
			}
		}
	}
	if r.RejectWith != "" {
		if _, ok := rejectVerdicts[r.RejectWith]; !ok {
			fail(path()+".rejectWith", "%q is not PortUnreachable, TCPReset, HostUnreachable, AdminProhibited or NetUnreachable", r.RejectWith)
		}
		if r.Action != v1alpha1.ActionReject {
			fail(path()+".rejectWith", "rejectWith requires action Reject, not %q", r.Action)
		}
		if r.RejectWith == v1alpha1.RejectWithTCPReset && r.Protocol != v1alpha1.ProtocolTCP {
			fail(path()+".rejectWith", "rejectWith TCPReset requires protocol TCP, not %q", r.Protocol)
		}
	}
	if l := r.Limit; l != nil {
		if l.Rate < 1 || l.Rate > 10000 {
			fail(path()+".limit.rate", "%d is not in 1-10000", l.Rate)
		}
		if _, ok := rateUnits[l.Per]; !ok {
			fail(path()+".limit.per", "%q is not Second, Minute, Hour or Day", l.Per)
		}
		if l.Burst < 0 || l.Burst > 10000 {
			fail(path()+".limit.burst", "%d is not in 1-10000", l.Burst)
		}
		if r.Log {
			fail(path()+".log", "log cannot be combined with limit")
		}
	}
	if c := r.ConnLimit; c != nil && (c.Above < 0 || c.Above > 65535) {
		fail(path()+".connLimit.above", "%d is not in 0-65535", c.Above)
	}
}

// renderMeter writes a meter's declaration.
func renderMeter(b *strings.Builder, m Meter) {
	fmt.Fprintf(b, "\tset %s {\n", m.Name)
	fmt.Fprintf(b, "\t\ttype %s\n", fieldType(FieldSAddr, m.Family))
	fmt.Fprintf(b, "\t\tsize %d\n", MeterSize)
	if m.Timeout > 0 {
		b.WriteString("\t\tflags dynamic,timeout\n")
		fmt.Fprintf(b, "\t\ttimeout %ds\n", int64(m.Timeout/time.Second))
	} else {
		b.WriteString("\t\tflags dynamic\n")
	}
	b.WriteString("\t}\n")
}

// icmpTypeCodeParts renders ICMP types with codes as one lookup of the
// type and code in an anonymous set, even of one element: nft reads
// "type . code" against a single value otherwise.
func icmpTypeCodeParts(r Rule) []string {
	head := "icmp type . icmp code"
	if r.L4Proto == protoICMPv6 {
		head = "icmpv6 type . icmpv6 code"
	}
	elems := make([]string, len(r.ICMPTypeCodes))
	for i, c := range r.ICMPTypeCodes {
		code := strconv.Itoa(int(c.FirstCode))
		if c.LastCode != c.FirstCode {
			code += "-" + strconv.Itoa(int(c.LastCode))
		}
		elems[i] = strconv.Itoa(int(c.Type)) + " . " + code
	}
	return []string{head, "{ " + strings.Join(elems, ", ") + " }"}
}

// statefulParts renders a rule's connection limit and rate limit, in that
// order, after its other matches.
func statefulParts(r Rule) []string {
	var parts []string
	// A rule with a meter is of the meter's family.
	saddr := fieldExpr(FieldSAddr, r.Family)
	if c := r.ConnLimit; c != nil {
		parts = append(parts, "add @"+c.Meter, "{", saddr, "ct count over", strconv.FormatUint(uint64(c.Above), 10), "}")
	}
	if l := r.Limit; l != nil {
		limit := []string{"limit rate", fmt.Sprintf("%d/%s", l.Rate, l.Unit), "burst", fmt.Sprintf("%d packets", l.Burst)}
		if l.Meter == "" {
			parts = append(parts, limit...)
		} else {
			parts = append(parts, "update @"+l.Meter, "{", saddr)
			parts = append(parts, limit...)
			parts = append(parts, "}")
		}
	}
	return parts
}
