package v1alpha1

import "strconv"

// IP protocols beyond TCP, UDP, SCTP, ICMP and ICMPv6 that a rule may name.
// Any other protocol is written as its number (`protocol: "41"`), as
// `iptables -p 41` takes it.
const (
	ProtocolIGMP Protocol = "IGMP"
	ProtocolGRE  Protocol = "GRE"
	ProtocolESP  Protocol = "ESP"
	ProtocolAH   Protocol = "AH"
	ProtocolOSPF Protocol = "OSPF"
	ProtocolPIM  Protocol = "PIM"
	ProtocolVRRP Protocol = "VRRP"
	ProtocolL2TP Protocol = "L2TP"
)

// ProtocolNumbers are the IP protocol numbers (IANA, /etc/protocols) of
// the protocols a rule may name. A number of one of them is written by
// name, so that each protocol has one spelling.
var ProtocolNumbers = map[Protocol]uint8{
	ProtocolICMP:   1,
	ProtocolIGMP:   2,
	ProtocolTCP:    6,
	ProtocolUDP:    17,
	ProtocolGRE:    47,
	ProtocolESP:    50,
	ProtocolAH:     51,
	ProtocolICMPv6: 58,
	ProtocolOSPF:   89,
	ProtocolPIM:    103,
	ProtocolVRRP:   112,
	ProtocolL2TP:   115,
	ProtocolSCTP:   132,
}

// Number returns the IP protocol number of p: that of a name, or p read
// as a number from 1 to 255 that is not the number of a name. ok is false
// for "" (any protocol) and for anything else.
func (p Protocol) Number() (n uint8, ok bool) {
	if n, ok := ProtocolNumbers[p]; ok {
		return n, true
	}
	if p == "" || len(p) > 3 || p[0] == '0' {
		return 0, false
	}
	v, err := strconv.Atoi(string(p))
	if err != nil || v < 1 || v > 255 {
		return 0, false
	}
	for _, named := range ProtocolNumbers {
		if int(named) == v {
			return 0, false
		}
	}
	return uint8(v), true
}

// ProtocolFor is the spelling of IP protocol number n in a rule: its name
// when it has one, else the number; "" for 0 (any protocol).
func ProtocolFor(n uint8) Protocol {
	if n == 0 {
		return ""
	}
	for p, v := range ProtocolNumbers {
		if v == n {
			return p
		}
	}
	return Protocol(strconv.Itoa(int(n)))
}
