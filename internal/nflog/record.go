package nflog

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Record is one logged packet, as its JSON line shows it.
type Record struct {
	Time time.Time `json:"time"`
	// Kind is always "packet", so that log tools can tell these lines
	// from the agent's other output.
	Kind    string `json:"kind"`
	Node    string `json:"node,omitempty"`
	Policy  string `json:"policy"`
	Rule    string `json:"rule"`
	Label   string `json:"label,omitempty"`
	Verdict string `json:"verdict"`
	Chain   string `json:"chain,omitempty"`
	// Prefix is the raw log prefix, only when it names no known rule.
	Prefix       string      `json:"prefix,omitempty"`
	Family       string      `json:"family"`
	Protocol     string      `json:"protocol,omitempty"`
	Source       *netip.Addr `json:"source,omitempty"`
	Destination  *netip.Addr `json:"destination,omitempty"`
	SourcePort   *uint16     `json:"sourcePort,omitempty"`
	DestPort     *uint16     `json:"destinationPort,omitempty"`
	InInterface  string      `json:"inInterface,omitempty"`
	OutInterface string      `json:"outInterface,omitempty"`
	ICMPType     *uint8      `json:"icmpType,omitempty"`
	ICMPCode     *uint8      `json:"icmpCode,omitempty"`
	Length       int         `json:"length,omitempty"`

	// Interface indexes, named by the writer (a lookup the reader must
	// not wait for).
	inIndex, outIndex uint32
}

// IP protocol numbers and their names as nft prints them.
var protoNames = map[uint8]string{1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah", 58: "icmpv6", 112: "vrrp", 132: "sctp", 136: "udplite"}

func protoName(p uint8) string {
	if n, ok := protoNames[p]; ok {
		return n
	}
	return "ip-proto-" + itoa(int(p))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [4]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// parsePayload fills r's addresses, protocol, ports and ICMP type from the
// packet, which starts at its IP header. It reads only what is there: a
// truncated or non-first fragment leaves the transport fields out.
func (r *Record) parsePayload(p []byte) {
	if len(p) < 1 {
		return
	}
	var proto uint8
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		r.Family = "ipv4"
		if len(p) < 20 {
			return
		}
		ihl := int(p[0]&0x0f) * 4
		src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		r.Source, r.Destination = &src, &dst
		proto = p[9]
		r.Length = int(binary.BigEndian.Uint16(p[2:4]))
		// Only the first fragment carries the transport header.
		if binary.BigEndian.Uint16(p[6:8])&0x1fff == 0 && ihl >= 20 && len(p) >= ihl {
			l4 = p[ihl:]
		}
	case 6:
		r.Family = "ipv6"
		if len(p) < 40 {
			return
		}
		src, dst := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		r.Source, r.Destination = &src, &dst
		r.Length = 40 + int(binary.BigEndian.Uint16(p[4:6]))
		proto, l4 = skipIPv6Extensions(p[6], p[40:])
	default:
		return
	}
	r.Protocol = protoName(proto)
	switch proto {
	case 6, 17, 132, 136:
		if len(l4) >= 4 {
			sp, dp := binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
			r.SourcePort, r.DestPort = &sp, &dp
		}
	case 1, 58:
		if len(l4) >= 2 {
			t, c := l4[0], l4[1]
			r.ICMPType, r.ICMPCode = &t, &c
		}
	}
}

// skipIPv6Extensions follows the extension headers that come before a
// transport header: hop-by-hop, routing, destination options and fragment
// (a non-first fragment has no transport header).
func skipIPv6Extensions(next uint8, p []byte) (uint8, []byte) {
	for {
		switch next {
		case 0, 43, 60:
			if len(p) < 8 {
				return next, nil
			}
			n := (int(p[1]) + 1) * 8
			if len(p) < n {
				return p[0], nil
			}
			next, p = p[0], p[n:]
		case 44:
			if len(p) < 8 {
				return next, nil
			}
			if binary.BigEndian.Uint16(p[2:4])&0xfff8 != 0 {
				return p[0], nil
			}
			next, p = p[0], p[8:]
		default:
			return next, p
		}
	}
}
