package diff

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/policytest"
	"github.com/nodefw/nodefw/internal/reference"
)

// The third side of every comparison: what `nodefw trace` says of a
// probe's first packet, reference.TraceSpec over the rule set, must be
// what the kernel did to it on both routers. The probe's later packets
// (the answer, the rest of the connection) are Established, which every
// chain accepts, so the first packet's verdict is the probe's. A packet
// that arrives at the router meets PreRouting first, then Input or
// Forward: the trace follows it through both (tracePath).

// traceOptions are the options of the trace: the agent's path loads the
// rule set without failsafes.
var traceOptions = compile.Options{}

// tracePacket is a probe's first packet as the router's chain sees it: a
// new connection, in on the link it comes from and out on the link its
// destination is on.
func tracePacket(p probe) policytest.Parsed {
	pk := reference.Packet{
		Family: compile.FamilyIPv4, SAddr: p.src, DAddr: p.dst, L4Proto: 6, Transport: true, DPort: p.port,
		CtState: compile.CtStateNew,
	}
	if p.dst.Is6() {
		pk.Family = compile.FamilyIPv6
	}
	switch p.proto {
	case v1alpha1.ProtocolUDP:
		pk.L4Proto = 17
	case "":
		pk = messagePacket(pk, p.msg)
	}
	pk.SPort = p.sport
	if p.proto == "" {
		pk.SPort = uint16(p.msg.Type)<<8 | uint16(p.msg.Code)
	}
	if p.chain != v1alpha1.ChainOutput {
		pk.IIfName = linkOf(p.src)
	}
	if p.chain != v1alpha1.ChainInput {
		pk.OIfName = linkOf(p.dst)
	}
	return policytest.Parsed{Chain: p.chain, Packet: pk}
}

// messagePacket is the packet of an IP message probe: its protocol, type
// and code, and the conntrack state conntrack gives it. An ICMP or ICMPv6
// error about no connection, or a message that starts no exchange (an
// echo reply unasked), is invalid; a query, or a packet of a protocol
// conntrack follows generically, is new.
func messagePacket(pk reference.Packet, m netnstest.IPMessage) reference.Packet {
	pk.L4Proto, pk.Type, pk.Code, pk.DPort = m.Protocol, m.Type, m.Code, 0
	queries := map[uint8][]uint8{netnstest.ProtoICMP: {8, 13, 15, 17}, netnstest.ProtoICMPv6: {128, 139}}
	if q, icmp := queries[m.Protocol]; icmp && !slices.Contains(q, m.Type) {
		pk.CtState = compile.CtStateInvalid
	}
	return pk
}

// linkOf is the router's link to the subnet of an address.
func linkOf(a netip.Addr) string {
	for _, cidr := range plan.RouterClient {
		if netip.MustParsePrefix(cidr).Masked().Contains(a) {
			return plan.RouterClientDev
		}
	}
	return plan.RouterServerDev
}

// kernelVerdicts are what a probe gets for each verdict of the trace; every
// answer of a reject is a reject.
var kernelVerdicts = map[compile.Verdict]netnstest.Verdict{
	compile.VerdictAccept:                netnstest.Accepted,
	compile.VerdictDrop:                  netnstest.Dropped,
	compile.VerdictReject:                netnstest.Rejected,
	compile.VerdictRejectTCPReset:        netnstest.Rejected,
	compile.VerdictRejectHostUnreachable: netnstest.Rejected,
	compile.VerdictRejectAdminProhibited: netnstest.Rejected,
	compile.VerdictRejectNetUnreachable:  netnstest.Rejected,
}

// tracePath is the chains a probe's first packet meets on the router, in
// order, and the packet as each sees it. A packet the router sends meets
// Output alone. One that arrives meets PreRouting as sent (it decides
// only those addressed to the router itself), then Input or Forward; the
// probes of TestPreRoutingDNAT, which name PreRouting, meet the emulated
// kube-proxy's DNAT in between (see inbound).
func tracePath(p probe) []policytest.Parsed {
	if p.chain == v1alpha1.ChainOutput {
		return []policytest.Parsed{tracePacket(p)}
	}
	var pre reference.Packet
	var dnat *reference.DNAT
	if p.chain == v1alpha1.ChainPreRouting {
		pre, dnat = inbound(p)
	} else {
		pre = tracePacket(p).Packet
		pre.OIfName = ""
		pre.DAddrLocal = routerAddr(p.dst)
	}
	next, chain := reference.AfterPreRouting(pre, dnat)
	if chain == v1alpha1.ChainForward && next.OIfName == "" {
		next.OIfName = linkOf(next.DAddr)
	}
	return []policytest.Parsed{{Chain: v1alpha1.ChainPreRouting, Packet: pre}, {Chain: chain, Packet: next}}
}

// routerAddr reports whether an address is one of the router's own.
func routerAddr(a netip.Addr) bool {
	for _, cidr := range slices.Concat(plan.RouterClient, plan.RouterServer) {
		if netip.MustParsePrefix(cidr).Addr() == a {
			return true
		}
	}
	return false
}

// traceVerdict is what the probe sees of the verdict the trace of its
// first packet foretells: the first chain on its path that does not
// accept it decides.
func traceVerdict(spec v1alpha1.NodeFirewallSpec, sets compile.AddressSets, p probe) netnstest.Verdict {
	opts := traceOptions
	opts.AddressSets = sets
	v := compile.VerdictAccept
	for _, pk := range tracePath(p) {
		if v = reference.TraceSpec(spec, opts, pk.Chain, pk.Packet).Verdict; v != compile.VerdictAccept {
			break
		}
	}
	return seen(v, p)
}

// seen is what a probe sees of a verdict. A UDP datagram or an IP message
// that the sender's own Output chain rejects looks dropped: the kernel
// answers the send with EPERM, as for a drop, before the ICMP error it
// also makes could reach the socket (TCP retries the SYN and sees the
// error). A rejected ICMP error looks dropped too: no error answers one.
func seen(v compile.Verdict, p probe) netnstest.Verdict {
	if v.IsReject() && p.chain == v1alpha1.ChainOutput && (p.proto == v1alpha1.ProtocolUDP || p.proto == "") {
		return netnstest.Dropped
	}
	if v.IsReject() && p.proto == "" && p.msg.IsICMPError() {
		return netnstest.Dropped
	}
	return kernelVerdicts[v]
}

// describeTrace is the trace of a probe as `nodefw trace` prints it,
// chain by chain along its path.
func describeTrace(spec v1alpha1.NodeFirewallSpec, sets compile.AddressSets, p probe) string {
	opts := traceOptions
	opts.AddressSets = sets
	var b strings.Builder
	for _, pk := range tracePath(p) {
		t := policytest.TraceNode(policytest.Node{Name: "router", Spec: spec}, opts, pk)
		if err := policytest.WriteTrace(&b, t, policytest.Style{}); err != nil {
			return err.Error()
		}
		if t.Verdict != compile.VerdictAccept {
			break
		}
	}
	return b.String()
}

func TestSeen(t *testing.T) {
	udpOut := probe{chain: v1alpha1.ChainOutput, proto: v1alpha1.ProtocolUDP}
	tcpOut := probe{chain: v1alpha1.ChainOutput, proto: v1alpha1.ProtocolTCP}
	udpIn := probe{chain: v1alpha1.ChainInput, proto: v1alpha1.ProtocolUDP}
	echoIn := probe{chain: v1alpha1.ChainInput, msg: netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 8}}
	echoOut := probe{chain: v1alpha1.ChainOutput, msg: echoIn.msg}
	errorIn := probe{chain: v1alpha1.ChainInput, msg: netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: 1, Code: 4}}
	greIn := probe{chain: v1alpha1.ChainInput, msg: netnstest.IPMessage{Protocol: 47}}
	for _, tt := range []struct {
		v    compile.Verdict
		p    probe
		want netnstest.Verdict
	}{
		{compile.VerdictReject, udpOut, netnstest.Dropped},
		{compile.VerdictReject, tcpOut, netnstest.Rejected},
		{compile.VerdictReject, udpIn, netnstest.Rejected},
		{compile.VerdictAccept, udpOut, netnstest.Accepted},
		{compile.VerdictDrop, udpIn, netnstest.Dropped},
		{compile.VerdictRejectTCPReset, tcpOut, netnstest.Rejected},
		{compile.VerdictRejectAdminProhibited, udpIn, netnstest.Rejected},
		{compile.VerdictRejectHostUnreachable, udpOut, netnstest.Dropped},
		{compile.VerdictReject, echoIn, netnstest.Rejected},
		{compile.VerdictRejectNetUnreachable, echoOut, netnstest.Dropped},
		{compile.VerdictReject, errorIn, netnstest.Dropped},
		{compile.VerdictAccept, errorIn, netnstest.Accepted},
		{compile.VerdictReject, greIn, netnstest.Rejected},
	} {
		if got := seen(tt.v, tt.p); got != tt.want {
			t.Errorf("seen(%s, %v %v) = %v, want %v", tt.v, tt.p.chain, tt.p.proto, got, tt.want)
		}
	}
}

func TestTracePacket(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		p        probe
		wantIn   string
		wantOut  string
		wantFam  compile.Family
		wantProt uint8
	}{
		{probe{chain: v1alpha1.ChainInput, proto: v1alpha1.ProtocolTCP, src: a("10.77.1.10"), dst: a("10.77.2.1"), port: 4000}, "ethc0", "", compile.FamilyIPv4, 6},
		{probe{chain: v1alpha1.ChainForward, proto: v1alpha1.ProtocolUDP, src: a("10.244.1.10"), dst: a("10.244.2.10"), port: 4000}, "ethc0", "eths0", compile.FamilyIPv4, 17},
		{probe{chain: v1alpha1.ChainForward, proto: v1alpha1.ProtocolTCP, src: a("fd77:2::10"), dst: a("fd77:1::10"), port: 4000}, "eths0", "ethc0", compile.FamilyIPv6, 6},
		{probe{chain: v1alpha1.ChainOutput, proto: v1alpha1.ProtocolTCP, src: a("10.77.2.1"), dst: a("10.244.1.10"), port: 4000}, "", "ethc0", compile.FamilyIPv4, 6},
		{probe{chain: v1alpha1.ChainOutput, proto: v1alpha1.ProtocolUDP, src: a("10.77.1.1"), dst: a("10.77.2.20"), port: 4000}, "", "eths0", compile.FamilyIPv4, 17},
	}
	for _, tt := range tests {
		got := tracePacket(tt.p).Packet
		if got.IIfName != tt.wantIn || got.OIfName != tt.wantOut || got.Family != tt.wantFam || got.L4Proto != tt.wantProt ||
			got.DPort != tt.p.port || got.CtState != compile.CtStateNew || !got.Transport {
			t.Errorf("%v: packet %+v, want in %q out %q family %d protocol %d", tt.p, got, tt.wantIn, tt.wantOut, tt.wantFam, tt.wantProt)
		}
	}
}

// TestTracePath: a packet the router sends meets Output alone; one that
// arrives meets PreRouting, which decides it only when it is addressed to
// the router, then Input or Forward; a probe of the DNAT test meets the
// emulated kube-proxy's DNAT in between.
func TestTracePath(t *testing.T) {
	a := netip.MustParseAddr
	type step struct {
		chain   v1alpha1.Chain
		dst     netip.Addr
		port    uint16
		local   bool
		in, out string
	}
	tests := []struct {
		p    probe
		want []step
	}{
		{probe{chain: v1alpha1.ChainOutput, proto: v1alpha1.ProtocolTCP, src: a("10.77.1.1"), dst: a("10.77.1.10"), port: 4000},
			[]step{{v1alpha1.ChainOutput, a("10.77.1.10"), 4000, false, "", "ethc0"}}},
		{probe{chain: v1alpha1.ChainInput, proto: v1alpha1.ProtocolTCP, src: a("10.77.1.10"), dst: a("10.77.2.1"), port: 4000},
			[]step{{v1alpha1.ChainPreRouting, a("10.77.2.1"), 4000, true, "ethc0", ""}, {v1alpha1.ChainInput, a("10.77.2.1"), 4000, true, "ethc0", ""}}},
		{probe{chain: v1alpha1.ChainForward, proto: v1alpha1.ProtocolUDP, src: a("10.77.1.10"), dst: a("10.77.2.10"), port: 4000},
			[]step{{v1alpha1.ChainPreRouting, a("10.77.2.10"), 4000, false, "ethc0", ""}, {v1alpha1.ChainForward, a("10.77.2.10"), 4000, false, "ethc0", "eths0"}}},
		{probe{chain: v1alpha1.ChainPreRouting, proto: v1alpha1.ProtocolTCP, src: a("10.77.1.10"), dst: a("10.77.2.1"), port: nodePortToServer},
			[]step{{v1alpha1.ChainPreRouting, a("10.77.2.1"), nodePortToServer, true, "ethc0", ""}, {v1alpha1.ChainForward, serverV4[0], backendServer, false, "ethc0", "eths0"}}},
		{probe{chain: v1alpha1.ChainPreRouting, proto: v1alpha1.ProtocolUDP, src: a("fd77:1::10"), dst: a("fd77:2::1"), port: nodePortToRouter},
			[]step{{v1alpha1.ChainPreRouting, a("fd77:2::1"), nodePortToRouter, true, "ethc0", ""}, {v1alpha1.ChainInput, routerClientV6, backendRouter, true, "ethc0", ""}}},
	}
	for _, tt := range tests {
		var got []step
		for _, pk := range tracePath(tt.p) {
			q := pk.Packet
			got = append(got, step{pk.Chain, q.DAddr, q.DPort, q.DAddrLocal, q.IIfName, q.OIfName})
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%v: path %+v, want %+v", tt.p, got, tt.want)
		}
	}
}

func TestTraceMessagePacket(t *testing.T) {
	a := netip.MustParseAddr
	for _, tt := range []struct {
		msg       netnstest.IPMessage
		wantState compile.CtState
	}{
		{netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 8}, compile.CtStateNew},
		{netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 13}, compile.CtStateNew},
		{netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 0}, compile.CtStateInvalid},
		{netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 3, Code: 4}, compile.CtStateInvalid},
		{netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: 128}, compile.CtStateNew},
		{netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: 2}, compile.CtStateInvalid},
		{netnstest.IPMessage{Protocol: 47}, compile.CtStateNew},
		{netnstest.IPMessage{Protocol: 50}, compile.CtStateNew},
	} {
		dst := a("10.77.1.1")
		if tt.msg.Protocol == netnstest.ProtoICMPv6 {
			dst = a("fd77:1::1")
		}
		p := probe{chain: v1alpha1.ChainInput, msg: tt.msg, src: a("10.77.1.10"), dst: dst}
		got := tracePacket(p).Packet
		if got.L4Proto != tt.msg.Protocol || got.Type != tt.msg.Type || got.Code != tt.msg.Code || got.DPort != 0 ||
			got.SPort != uint16(tt.msg.Type)<<8|uint16(tt.msg.Code) || got.CtState != tt.wantState {
			t.Errorf("%+v: packet %+v, want state %v", tt.msg, got, tt.wantState)
		}
	}
}
