package v1alpha1

import (
	"strconv"
	"strings"
)

// ICMPType names an ICMP or ICMPv6 message type, with or without a code,
// as `iptables --icmp-type` and `ip6tables --icmpv6-type` do: a name of
// theirs in CamelCase (echo-request is EchoRequest, fragmentation-needed
// is FragmentationNeeded, TOS-host-redirect is TOSHostRedirect), or
// numbers, "type" or "type/code", each 0-255. A name without a code, such
// as DestinationUnreachable, matches every code of its type.
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:Pattern=`^([A-Z][A-Za-z0-9]*|(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))?)$`
type ICMPType string

// ICMPMessage is an ICMP or ICMPv6 type and a code, or every code of the
// type when AnyCode is set.
type ICMPMessage struct {
	Type, Code uint8
	AnyCode    bool
}

// icmpName is one name of iptables' table of ICMP or ICMPv6 types.
type icmpName struct {
	name string
	msg  ICMPMessage
}

func anyCode(t uint8) ICMPMessage     { return ICMPMessage{Type: t, AnyCode: true} }
func withCode(t, c uint8) ICMPMessage { return ICMPMessage{Type: t, Code: c} }

// icmpv4Names are the names `iptables -p icmp -h` lists, in its order,
// without the aliases pong, ping and ttl-exceeded.
var icmpv4Names = []icmpName{
	{"EchoReply", anyCode(0)},
	{"DestinationUnreachable", anyCode(3)},
	{"NetworkUnreachable", withCode(3, 0)},
	{"HostUnreachable", withCode(3, 1)},
	{"ProtocolUnreachable", withCode(3, 2)},
	{"PortUnreachable", withCode(3, 3)},
	{"FragmentationNeeded", withCode(3, 4)},
	{"SourceRouteFailed", withCode(3, 5)},
	{"NetworkUnknown", withCode(3, 6)},
	{"HostUnknown", withCode(3, 7)},
	{"NetworkProhibited", withCode(3, 9)},
	{"HostProhibited", withCode(3, 10)},
	{"TOSNetworkUnreachable", withCode(3, 11)},
	{"TOSHostUnreachable", withCode(3, 12)},
	{"CommunicationProhibited", withCode(3, 13)},
	{"HostPrecedenceViolation", withCode(3, 14)},
	{"PrecedenceCutoff", withCode(3, 15)},
	{"SourceQuench", anyCode(4)},
	{"Redirect", anyCode(5)},
	{"NetworkRedirect", withCode(5, 0)},
	{"HostRedirect", withCode(5, 1)},
	{"TOSNetworkRedirect", withCode(5, 2)},
	{"TOSHostRedirect", withCode(5, 3)},
	{"EchoRequest", anyCode(8)},
	{"RouterAdvertisement", anyCode(9)},
	{"RouterSolicitation", anyCode(10)},
	{"TimeExceeded", anyCode(11)},
	{"TTLZeroDuringTransit", withCode(11, 0)},
	{"TTLZeroDuringReassembly", withCode(11, 1)},
	{"ParameterProblem", anyCode(12)},
	{"IPHeaderBad", withCode(12, 0)},
	{"RequiredOptionMissing", withCode(12, 1)},
	{"TimestampRequest", anyCode(13)},
	{"TimestampReply", anyCode(14)},
	{"AddressMaskRequest", anyCode(17)},
	{"AddressMaskReply", anyCode(18)},
}

// icmpv6Names are the names `ip6tables -p ipv6-icmp -h` lists, in its
// order, without the aliases ping, pong and ttl-exceeded, and with the
// neighbour types spelt Neighbor as well as Neighbour.
var icmpv6Names = []icmpName{
	{"DestinationUnreachable", anyCode(1)},
	{"NoRoute", withCode(1, 0)},
	{"CommunicationProhibited", withCode(1, 1)},
	{"BeyondScope", withCode(1, 2)},
	{"AddressUnreachable", withCode(1, 3)},
	{"PortUnreachable", withCode(1, 4)},
	{"FailedPolicy", withCode(1, 5)},
	{"RejectRoute", withCode(1, 6)},
	{"PacketTooBig", anyCode(2)},
	{"TimeExceeded", anyCode(3)},
	{"TTLZeroDuringTransit", withCode(3, 0)},
	{"TTLZeroDuringReassembly", withCode(3, 1)},
	{"ParameterProblem", anyCode(4)},
	{"BadHeader", withCode(4, 0)},
	{"UnknownHeaderType", withCode(4, 1)},
	{"UnknownOption", withCode(4, 2)},
	{"EchoRequest", anyCode(128)},
	{"EchoReply", anyCode(129)},
	{"MLDListenerQuery", anyCode(130)},
	{"MLDListenerReport", anyCode(131)},
	{"MLDListenerDone", anyCode(132)},
	{"RouterSolicitation", anyCode(133)},
	{"RouterAdvertisement", anyCode(134)},
	{"NeighbourSolicitation", anyCode(135)},
	{"NeighbourAdvertisement", anyCode(136)},
	{"NeighborSolicitation", anyCode(135)},
	{"NeighborAdvertisement", anyCode(136)},
	{"Redirect", anyCode(137)},
}

// ICMPTypeNames lists the names of protocol ICMP or ICMPv6, in iptables'
// order; nil for other protocols.
func ICMPTypeNames(p Protocol) []string {
	var names []string
	for _, n := range icmpNames(p) {
		names = append(names, n.name)
	}
	return names
}

func icmpNames(p Protocol) []icmpName {
	switch p {
	case ProtocolICMP:
		return icmpv4Names
	case ProtocolICMPv6:
		return icmpv6Names
	}
	return nil
}

// Message returns the type and code t names for protocol p (ICMP or
// ICMPv6); ok is false when t is neither a name of p nor numbers.
func (t ICMPType) Message(p Protocol) (m ICMPMessage, ok bool) {
	for _, n := range icmpNames(p) {
		if n.name == string(t) {
			return n.msg, true
		}
	}
	if p != ProtocolICMP && p != ProtocolICMPv6 {
		return ICMPMessage{}, false
	}
	typ, code, hasCode := strings.Cut(string(t), "/")
	tv, ok := icmpNumber(typ)
	if !ok {
		return ICMPMessage{}, false
	}
	if !hasCode {
		return anyCode(tv), true
	}
	cv, ok := icmpNumber(code)
	if !ok {
		return ICMPMessage{}, false
	}
	return withCode(tv, cv), true
}

// icmpNumber reads a type or code: 0 to 255, without leading zeros.
func icmpNumber(s string) (uint8, bool) {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || v > 255 {
		return 0, false
	}
	return uint8(v), true
}

// ICMPTypeFor is the spelling of a message of protocol p in a rule: its
// name when it has one, else its numbers ("42" or "3/8").
func ICMPTypeFor(p Protocol, m ICMPMessage) ICMPType {
	for _, n := range icmpNames(p) {
		if n.msg == m {
			return ICMPType(n.name)
		}
	}
	if m.AnyCode {
		return ICMPType(strconv.Itoa(int(m.Type)))
	}
	return ICMPType(strconv.Itoa(int(m.Type)) + "/" + strconv.Itoa(int(m.Code)))
}
