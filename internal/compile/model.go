// Package compile turns a node's resolved NodeFirewallSpec into the nftables
// ruleset its agent programs. It is pure: no kernel and no API calls. The
// Ruleset model is what both the text renderer (golden files, `nodefw render`)
// and the netlink adapter in internal/nft consume.
package compile

import (
	"net/netip"
	"slices"
	"strconv"
)

// Names of everything nodefw creates. The table is configurable per agent
// (--table); the chains are fixed.
const (
	DefaultTable = "nodefw"

	ChainInput   = "input"
	ChainForward = "forward"
	ChainOutput  = "output"
	// ChainPreRouting is only in rulesets whose spec uses the PreRouting
	// chain (see prerouting.go).
	ChainPreRouting = "prerouting"
)

// Hook is the netfilter hook a base chain attaches to.
type Hook string

const (
	HookInput      Hook = "input"
	HookForward    Hook = "forward"
	HookOutput     Hook = "output"
	HookPreRouting Hook = "prerouting"
)

// Verdict is what a rule or chain policy does with a packet.
type Verdict string

const (
	// VerdictNone means the rule has no verdict: evaluation continues
	// (used for log-only and audit rules).
	VerdictNone   Verdict = ""
	VerdictAccept Verdict = "accept"
	VerdictDrop   Verdict = "drop"
	// VerdictReject answers like iptables' default REJECT: ICMP (or ICMPv6)
	// port-unreachable, for every protocol.
	VerdictReject Verdict = "reject"

	// The other answers of REJECT (--reject-with): a TCP reset, for TCP
	// packets only; and ICMP or ICMPv6 host-unreachable (address
	// unreachable), administratively prohibited and network-unreachable
	// (no route), each in the packet's family (nft's icmpx).
	VerdictRejectTCPReset        Verdict = "reject with tcp reset"
	VerdictRejectHostUnreachable Verdict = "reject with icmpx host-unreachable"
	VerdictRejectAdminProhibited Verdict = "reject with icmpx admin-prohibited"
	VerdictRejectNetUnreachable  Verdict = "reject with icmpx no-route"
)

// IsReject reports whether v is one of the reject verdicts.
func (v Verdict) IsReject() bool {
	switch v {
	case VerdictReject, VerdictRejectTCPReset, VerdictRejectHostUnreachable,
		VerdictRejectAdminProhibited, VerdictRejectNetUnreachable:
		return true
	}
	return false
}

// Family restricts a rule to one IP family.
type Family uint8

const (
	FamilyAny Family = iota
	FamilyIPv4
	FamilyIPv6
)

// String returns "v4", "v6" or "any".
func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "v4"
	case FamilyIPv6:
		return "v6"
	}
	return "any"
}

// CtState bits, as the kernel's conntrack state mask.
type CtState uint32

const (
	CtStateInvalid     CtState = 1 << 0
	CtStateEstablished CtState = 1 << 1
	CtStateRelated     CtState = 1 << 2
	CtStateNew         CtState = 1 << 3
)

// PortInterval is an inclusive range of ports.
type PortInterval struct {
	First, Last uint16
}

// Log asks a rule to log matches, rate-limited.
type Log struct {
	// Prefix is the log prefix, at most 127 bytes (see LogPrefix).
	Prefix string
	// Group is the NFLOG group the packet goes to.
	Group uint16
	// RatePerMinute limits logged packets; 0 means no limit. The limit
	// gates only the log: a rule's Counter comes before it and counts
	// every match (counter, limit, log, in that order).
	RatePerMinute uint32
	// Burst is the limit's burst, in packets.
	Burst uint32
}

// Rule is one nftables rule. Every set field must match (AND); within a
// list any element may match (OR). Empty fields match anything.
//
// A Rule with Log always has VerdictNone: an over-limit packet stops at the
// limit, so a verdict in the same rule would be skipped for it. Compile
// emits a separate log rule ahead of the verdict rule instead.
//
// Compile emits lists in canonical form: DPorts and SPorts sorted, merged
// and non-overlapping; SAddrs and DAddrs masked, sorted and
// non-overlapping (adjacent prefixes may remain); ICMPTypes sorted;
// ICMPTypeCodes sorted, merged and non-overlapping.
type Rule struct {
	// Family restricts the rule to IPv4 or IPv6. It is set whenever
	// addresses or an ICMP protocol are matched.
	Family Family
	// L4Proto is the IP protocol number (meta l4proto); 0 means any.
	L4Proto uint8
	// DPorts are destination port intervals (th dport); needs L4Proto.
	DPorts []PortInterval
	// ICMPTypes match ICMP or ICMPv6 types, per L4Proto.
	ICMPTypes []uint8
	// SAddrs and DAddrs are source and destination prefixes, all of Family.
	SAddrs []netip.Prefix
	DAddrs []netip.Prefix
	// IIfName and OIfName match interface names; a trailing "+" matches
	// any name with that prefix, as iptables' -i/-o do.
	IIfName string
	OIfName string
	// CtStates matches any of the given conntrack states; 0 means any.
	CtStates CtState
	// DAddrType matches what the routing table says of the destination
	// address (fib daddr type): whether it is one of the node's own. The
	// prerouting chain's guard is its only user (see prerouting.go).
	DAddrType DAddrType
	// Counter counts packets and bytes.
	Counter bool
	// Log logs matches, rate-limited, before the verdict.
	Log *Log
	// Lookup names a set of the ruleset: the rule matches when the packet,
	// of the set's family, has a key (the set's Fields, in order) inside
	// one of the set's elements. A packet whose destination port cannot be
	// read (no transport header, or not the first fragment) never matches
	// a set keyed on FieldDPort.
	Lookup string
	// Verdict is the rule's verdict; VerdictNone lets evaluation go on.
	Verdict Verdict
	// Comment says where the rule came from (policy/rule), < 128 bytes.
	Comment string

	// Matches of iptables' extensions (see matches.go). They come after
	// the others, in this order: a packet is counted against a limit only
	// once everything else of the rule matched.

	// SPorts are source port intervals (th sport); needs L4Proto.
	SPorts []PortInterval
	// ICMPTypeCodes match ICMP or ICMPv6 types with ranges of their codes,
	// per L4Proto; a rule has them or ICMPTypes, not both.
	ICMPTypeCodes []ICMPTypeCode
	// ConnLimit matches packets whose source has more connections than
	// its limit.
	ConnLimit *ConnLimit
	// Limit matches packets up to a rate; those over it do not match.
	Limit *RateLimit
}

// Chain is a base chain of the nodefw table.
type Chain struct {
	Name     string
	Hook     Hook
	Priority int32
	// Policy is the chain's default verdict: accept or drop.
	Policy Verdict
	Rules  []Rule
}

// SetField is one field of a set's key.
type SetField uint8

const (
	// FieldL4Proto is the IP protocol (meta l4proto), one byte.
	FieldL4Proto SetField = iota + 1
	// FieldDPort is the destination port (th dport), two bytes.
	FieldDPort
	// FieldSAddr and FieldDAddr are the source and destination address of
	// the set's family (ip or ip6 saddr and daddr).
	FieldSAddr
	FieldDAddr
)

// String returns the field's nft expression for an IP family.
func (f SetField) String() string {
	switch f {
	case FieldL4Proto:
		return "meta l4proto"
	case FieldDPort:
		return "th dport"
	case FieldSAddr:
		return "saddr"
	case FieldDAddr:
		return "daddr"
	}
	return "field(" + strconv.Itoa(int(f)) + ")"
}

// ProtoRange is an inclusive range of IP protocol numbers; 0-255 is any.
type ProtoRange struct {
	First, Last uint8
}

// AddrRange is an inclusive range of addresses of one family.
type AddrRange struct {
	First, Last netip.Addr
}

// SetElement is one element of a concatenated interval set: an inclusive
// range per field. Only the set's Fields are matched; Compile gives the
// others their whole range.
type SetElement struct {
	L4Proto ProtoRange
	DPort   PortInterval
	SAddr   AddrRange
	DAddr   AddrRange
	// Rule names the rule whose packets the element counts, in a set with
	// Counter: the comment ("<policy>/<rule>") of the first rule of the
	// run to match every key of the element. The kernel holds it as the
	// element's comment.
	Rule string
}

// Set is a named set whose key concatenates Fields (at least two). An
// interval set is the kernel's pipapo: Compile emits its elements disjoint,
// as the kernel refuses elements that overlap, and sorted by key. A set
// may be empty (a port block no rule reaches yet).
type Set struct {
	Name string
	// Family is FamilyIPv4 or FamilyIPv6: the family of the addresses.
	Family   Family
	Fields   []SetField
	Elements []SetElement
	// Exact says the set is a hash set rather than an interval set: every
	// element is one protocol, one port and address prefixes of the
	// lengths SAddrBits and DAddrBits, and the kernel adds and removes its
	// elements in constant time, where an interval set costs in
	// proportion to its size.
	Exact bool
	// SAddrBits and DAddrBits, in an exact set, mask the packet's source
	// and destination address to that many leading bits before the
	// lookup, and every element's address is a prefix of that length; 0
	// leaves the address whole, and the elements' addresses are single.
	SAddrBits, DAddrBits int
	// Counter gives every element a packet and byte counter of its own,
	// so that each rule of a run is counted apart (see SetElement.Rule);
	// the rule that looks the set up then has none.
	Counter bool
}

// AddrBits is the prefix length an exact set masks an address field to;
// 0 for other fields and unmasked addresses.
func (s *Set) AddrBits(f SetField) int {
	switch {
	case !s.Exact:
		return 0
	case f == FieldSAddr:
		return s.SAddrBits
	case f == FieldDAddr:
		return s.DAddrBits
	}
	return 0
}

// AddrMask is the netmask of a prefix length, as an address of the family.
func AddrMask(fam Family, bits int) netip.Addr {
	if fam == FamilyIPv6 {
		var b [16]byte
		for i := range bits {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	for i := range bits {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// Ruleset is the whole table one agent owns.
type Ruleset struct {
	Table  string
	Chains []Chain
	// Sets are the named sets the chains' Lookup rules refer to, in the
	// order of the rules that first use them.
	Sets []Set
	// Meters are the named sets that rules' per-source limits and
	// connection limits fill, in the order of the rules that use them.
	Meters []Meter
	// LogSources maps the prefix of every log rule to what it logs, for
	// the agent's log reader; nil when no rule logs. Equal ignores it: it
	// follows from the rules.
	LogSources map[string]LogSource
}

// Set returns the named set, or nil.
func (r *Ruleset) Set(name string) *Set {
	for i := range r.Sets {
		if r.Sets[i].Name == name {
			return &r.Sets[i]
		}
	}
	return nil
}

// RuleCount is the number of rules in all chains; a lookup in a set counts
// as one rule.
func (r *Ruleset) RuleCount() int {
	n := 0
	for _, c := range r.Chains {
		n += len(c.Rules)
	}
	return n
}

// Equal reports whether two rulesets are the same, field by field.
func (r *Ruleset) Equal(o *Ruleset) bool {
	if r == nil || o == nil {
		return r == o
	}
	// LogSources is not compared: it follows from the rules' log prefixes.
	if r.Table != o.Table || len(r.Chains) != len(o.Chains) || len(r.Sets) != len(o.Sets) {
		return false
	}
	for i := range r.Chains {
		a, b := &r.Chains[i], &o.Chains[i]
		if a.Name != b.Name || a.Hook != b.Hook || a.Priority != b.Priority || a.Policy != b.Policy || len(a.Rules) != len(b.Rules) {
			return false
		}
		for j := range a.Rules {
			if !a.Rules[j].equal(&b.Rules[j]) {
				return false
			}
		}
	}
	if !slices.Equal(r.Meters, o.Meters) {
		return false
	}
	for i := range r.Sets {
		a, b := &r.Sets[i], &o.Sets[i]
		if a.Name != b.Name || a.Family != b.Family || a.Exact != b.Exact || a.Counter != b.Counter || a.SAddrBits != b.SAddrBits ||
			a.DAddrBits != b.DAddrBits || !slices.Equal(a.Fields, b.Fields) || !slices.Equal(a.Elements, b.Elements) {
			return false
		}
	}
	return true
}

func (r *Rule) equal(o *Rule) bool {
	return r.Family == o.Family && r.L4Proto == o.L4Proto && slices.Equal(r.DPorts, o.DPorts) &&
		slices.Equal(r.ICMPTypes, o.ICMPTypes) && slices.Equal(r.SAddrs, o.SAddrs) && slices.Equal(r.DAddrs, o.DAddrs) &&
		r.IIfName == o.IIfName && r.OIfName == o.OIfName && r.CtStates == o.CtStates && r.DAddrType == o.DAddrType && r.Counter == o.Counter &&
		(r.Log == nil) == (o.Log == nil) && (r.Log == nil || *r.Log == *o.Log) && r.Lookup == o.Lookup &&
		r.Verdict == o.Verdict && r.Comment == o.Comment && r.equalMatches(o)
}

// prefixFamily is the IP family of a prefix.
func prefixFamily(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return FamilyIPv4
	}
	return FamilyIPv6
}

// IP protocol numbers, as Rule.L4Proto holds them.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// protoName is the name nft gives a protocol number.
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
