package policytest

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
)

// Packet describes a packet as a person writes it: the flags of `nodefw
// trace`, the packet of a case in a `nodefw test` file, the packet of a
// pkg/nodefwtest assertion. Names are case-insensitive.
type Packet struct {
	// Chain is the chain that sees the packet: Input (the default) for a
	// packet to the node, Forward for one it routes, Output for one it
	// sends.
	Chain string `json:"chain,omitempty"`
	// Proto is tcp, udp, sctp, icmp, icmpv6 or an IP protocol number.
	Proto string `json:"proto"`
	// From is the source address, with a port if one matters: 10.0.0.1,
	// 10.0.0.1:40000, [fd00::1]:40000.
	From string `json:"from"`
	// To is the destination address, with the port for tcp, udp and sctp:
	// 10.0.0.2:6443, [fd00::2]:6443.
	To string `json:"to"`
	// InInterface is the interface the packet came in on (Input and
	// Forward); OutInterface the one it leaves on (Forward and Output).
	InInterface  string `json:"inInterface,omitempty"`
	OutInterface string `json:"outInterface,omitempty"`
	// State is the conntrack state: new (the default), established,
	// related or invalid.
	State string `json:"state,omitempty"`
	// ICMPType is the type of an icmp or icmpv6 packet, by number or name
	// (echo-request, the default; echo-reply, destination-unreachable,
	// nd-neighbor-solicit, ...).
	ICMPType string `json:"icmpType,omitempty"`
}

// Parsed is a Packet read: the chain, the packet as the reference
// semantics take it, and its source port (0 when not given, which no
// match reads).
type Parsed struct {
	Chain  v1alpha1.Chain
	Packet reference.Packet
	SPort  uint16
}

// Chains are the chains a packet may name: every chain of the API, each
// of which the reference semantics evaluate. A chain kept out of
// v1alpha1.Chains would be appended here.
var Chains = v1alpha1.Chains

// protocols are the protocols a packet may name, by IP protocol number.
var protocols = map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}

// icmpTypes name the ICMP (IPv4) and ICMPv6 types, as nft does.
var icmpTypes = map[compile.Family]map[string]uint8{
	compile.FamilyIPv4: {
		"echo-reply": 0, "destination-unreachable": 3, "redirect": 5, "echo-request": 8,
		"router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11, "parameter-problem": 12,
	},
	compile.FamilyIPv6: {
		"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
		"echo-request": 128, "echo-reply": 129, "nd-router-solicit": 133, "nd-router-advert": 134,
		"nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "nd-redirect": 137,
	},
}

// states are the conntrack states a packet may be in.
var states = map[string]compile.CtState{
	"new": compile.CtStateNew, "established": compile.CtStateEstablished,
	"related": compile.CtStateRelated, "invalid": compile.CtStateInvalid,
}

// Parse reads the packet. Errors name the field, as the flag or the key
// of a test file spells it.
func (d Packet) Parse() (Parsed, error) {
	var out Parsed
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	out.Chain = v1alpha1.ChainInput
	if d.Chain != "" {
		out.Chain = ""
		for _, c := range Chains {
			if strings.EqualFold(d.Chain, string(c)) {
				out.Chain = c
			}
		}
		if out.Chain == "" {
			fail("chain", "%q is not one of %s", d.Chain, chainList())
		}
	}

	p := &out.Packet
	proto := strings.ToLower(d.Proto)
	if n, ok := protocols[proto]; ok {
		p.L4Proto = n
	} else if n, err := strconv.ParseUint(proto, 10, 8); err == nil {
		p.L4Proto = uint8(n)
	} else {
		fail("proto", "%q is not tcp, udp, sctp, icmp, icmpv6 or an IP protocol number", d.Proto)
	}
	// The packet is whole: its transport header can be read.
	p.Transport = true
	hasPorts := v1alpha1.Protocol(strings.ToUpper(protoName(p.L4Proto))).HasPorts()

	src, sport, err := parseEndpoint(d.From)
	if err != nil {
		fail("from", "%v", err)
	}
	if sport != 0 && !hasPorts {
		fail("from", "%s has no ports", protoName(p.L4Proto))
	}
	dst, dport, err := parseEndpoint(d.To)
	switch {
	case err != nil:
		fail("to", "%v", err)
	case hasPorts && dport == 0:
		fail("to", "%s needs a port: ADDR:PORT, or [ADDR]:PORT for IPv6", protoName(p.L4Proto))
	case !hasPorts && dport != 0:
		fail("to", "%s has no ports", protoName(p.L4Proto))
	}
	p.SAddr, p.DAddr, p.DPort, out.SPort = src, dst, dport, sport
	if src.IsValid() && dst.IsValid() {
		if src.Is4() != dst.Is4() {
			fail("to", "%s and %s are not of one IP family", src, dst)
		}
		p.Family = compile.FamilyIPv6
		if dst.Is4() {
			p.Family = compile.FamilyIPv4
		}
	}

	if d.ICMPType != "" && p.L4Proto != 1 && p.L4Proto != 58 {
		fail("icmpType", "only icmp and icmpv6 packets have a type")
	}
	if p.L4Proto == 1 || p.L4Proto == 58 {
		if (p.L4Proto == 1) != (p.Family == compile.FamilyIPv4) && p.Family != 0 {
			fail("proto", "%s packets are IPv%s", protoName(p.L4Proto), map[uint8]string{1: "4", 58: "6"}[p.L4Proto])
		}
		name := strings.ToLower(d.ICMPType)
		if name == "" {
			name = "echo-request"
		}
		if t, ok := icmpTypes[p.Family][name]; ok {
			p.Type = t
		} else if n, err := strconv.ParseUint(name, 10, 8); err == nil {
			p.Type = uint8(n)
		} else if p.Family != 0 {
			fail("icmpType", "%q is neither a number from 0 to 255 nor an %s type name", d.ICMPType, protoName(p.L4Proto))
		}
	}

	p.IIfName, p.OIfName = d.InInterface, d.OutInterface
	if out.Chain == v1alpha1.ChainInput && d.OutInterface != "" {
		fail("outInterface", "packets on Input have no output interface")
	}
	if out.Chain == v1alpha1.ChainOutput && d.InInterface != "" {
		fail("inInterface", "packets on Output have no input interface")
	}

	p.CtState = compile.CtStateNew
	if d.State != "" {
		s, ok := states[strings.ToLower(d.State)]
		if !ok {
			fail("state", "%q is not new, established, related or invalid", d.State)
		}
		p.CtState = s
	}
	return out, errors.Join(errs...)
}

// parseEndpoint reads ADDR, ADDR:PORT or [ADDR]:PORT; the port is 0 when
// not given.
func parseEndpoint(s string) (netip.Addr, uint16, error) {
	if s == "" {
		return netip.Addr{}, 0, errors.New("an address is required")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, 0, fmt.Errorf("%q: addresses have no zone here", s)
		}
		return a, 0, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Addr().Zone() != "" {
		return netip.Addr{}, 0, fmt.Errorf("%q is not ADDR, ADDR:PORT or [ADDR]:PORT", s)
	}
	if ap.Port() == 0 {
		return netip.Addr{}, 0, fmt.Errorf("%q: port 0 is not a port packets go to", s)
	}
	return ap.Addr(), ap.Port(), nil
}

func chainList() string {
	names := make([]string, len(Chains))
	for i, c := range Chains {
		names[i] = string(c)
	}
	return strings.Join(names, ", ")
}

// protoName names an IP protocol in lower case, as the proto field does.
func protoName(n uint8) string {
	for name, num := range protocols {
		if num == n {
			return name
		}
	}
	return strconv.Itoa(int(n))
}

// Describe is the packet as it was read, every field spelled out: what
// `nodefw trace -o json` prints.
func (p Parsed) Describe() Packet {
	pk := p.Packet
	d := Packet{
		Chain: string(p.Chain), Proto: protoName(pk.L4Proto),
		From: endpoint(pk.SAddr, p.SPort), To: endpoint(pk.DAddr, pk.DPort),
		InInterface: pk.IIfName, OutInterface: pk.OIfName,
	}
	for name, bit := range states {
		if bit == pk.CtState {
			d.State = name
		}
	}
	if pk.L4Proto == 1 || pk.L4Proto == 58 {
		d.ICMPType = strconv.Itoa(int(pk.Type))
		for name, t := range icmpTypes[pk.Family] {
			if t == pk.Type {
				d.ICMPType = name
			}
		}
	}
	return d
}

// String is the packet on one line: chain, protocol, source and
// destination, interfaces, state.
func (p Parsed) String() string {
	d := p.Describe()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s -> %s", d.Chain, d.Proto, d.From, d.To)
	if d.ICMPType != "" {
		fmt.Fprintf(&b, " type %s", d.ICMPType)
	}
	if d.InInterface != "" {
		fmt.Fprintf(&b, " in %s", d.InInterface)
	}
	if d.OutInterface != "" {
		fmt.Fprintf(&b, " out %s", d.OutInterface)
	}
	fmt.Fprintf(&b, " %s", d.State)
	return b.String()
}

func endpoint(a netip.Addr, port uint16) string {
	if port == 0 {
		return a.String()
	}
	return netip.AddrPortFrom(a, port).String()
}
