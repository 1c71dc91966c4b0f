package fuzz

import (
	"net/netip"
	"strconv"
	"testing"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
)

// bytes hands out the fuzzer's bytes, then zeros.
type bytes struct{ b []byte }

func (b *bytes) byte() uint8 {
	if len(b.b) == 0 {
		return 0
	}
	v := b.b[0]
	b.b = b.b[1:]
	return v
}

func (b *bytes) uint16() uint16 { return uint16(b.byte())<<8 | uint16(b.byte()) }

func pick[T any](b *bytes, list ...T) T { return list[int(b.byte())%len(list)] }

// port is near a failsafe more often than not.
func (b *bytes) port() int32 {
	if b.byte()%4 == 0 {
		return 1 + int32(b.uint16()%65535)
	}
	return pick(b, int32(1), 21, 22, 23, 52, 53, 54, 66, 67, 68, 69, 2378, 2379, 2380, 2381, 6442, 6443, 6444, 10249, 10250, 10251, 65535)
}

var (
	addrs = []string{
		"10.0.0.0/8", "10.244.1.0/24", "192.0.2.1", "0.0.0.0/0", "172.30.77.11/32", "10.1.2.3/8",
		"::/0", "fd00::/8", "2001:db8::1", "::ffff:10.0.0.1", "fe80::/10",
	}
	ifaces = []string{"", "", "", "eth0", "eth+", "+", "cni0", "lo"}
)

// genRule decodes one rule that the API accepts: its protocol, ports and
// addresses lean towards the failsafes.
func genRule(b *bytes, i int) fwv1.NodeFirewallRule {
	r := fwv1.NodeFirewallRule{
		Policy:   pick(b, "a", "b", "c"),
		Mode:     pick(b, fwv1.PolicyModeEnforce, fwv1.PolicyModeEnforce, fwv1.PolicyModeEnforce, fwv1.PolicyModeAudit),
		Name:     "r" + strconv.Itoa(i),
		Chain:    pick(b, fwv1.ChainInput, fwv1.ChainOutput, fwv1.ChainForward, fwv1.ChainPreRouting),
		Action:   pick(b, fwv1.ActionDrop, fwv1.ActionReject, fwv1.ActionDrop, fwv1.ActionAccept),
		Protocol: pick(b, "", fwv1.ProtocolTCP, fwv1.ProtocolUDP, fwv1.ProtocolSCTP, fwv1.ProtocolICMP, fwv1.ProtocolICMPv6),
		Log:      b.byte()%8 == 0,
	}
	if r.Protocol.HasPorts() {
		for range int(b.byte() % 4) {
			first := b.port()
			last := first
			if b.byte()%2 == 0 {
				last = min(65535, first+int32(b.byte()))
			}
			r.Ports = append(r.Ports, fwv1.PortRange{Port: first, EndPort: last})
		}
	}
	for range int(b.byte() % 3) {
		r.Sources = append(r.Sources, pick(b, addrs...))
	}
	for range int(b.byte() % 3) {
		r.Destinations = append(r.Destinations, pick(b, addrs...))
	}
	if r.Chain != fwv1.ChainOutput {
		r.InInterface = pick(b, ifaces...)
	}
	if r.Chain != fwv1.ChainInput && r.Chain != fwv1.ChainPreRouting {
		r.OutInterface = pick(b, ifaces...)
	}
	if b.byte()%4 == 0 {
		r.States = append(r.States, pick(b, fwv1.ConnStateNew, fwv1.ConnStateInvalid, fwv1.ConnStateEstablished, fwv1.ConnStateRelated))
	}
	return r
}

// genFailsafes decodes a failsafe list: the default or a made-up one.
func genFailsafes(b *bytes, def []compile.Failsafe) []compile.Failsafe {
	if b.byte()%2 == 0 {
		return def
	}
	var out []compile.Failsafe
	for range int(b.byte() % 5) {
		first := uint16(b.port())
		last := first
		if b.byte()%2 == 0 {
			last = uint16(min(65535, int(first)+int(b.byte())))
		}
		fs := compile.Failsafe{
			Protocol: pick(b, fwv1.ProtocolTCP, fwv1.ProtocolUDP, fwv1.ProtocolSCTP),
			Ports:    compile.PortInterval{First: first, Last: last},
		}
		// Some failsafes accept only from (or to) some addresses.
		for range int(b.byte() % 3) {
			fs.Sources = append(fs.Sources, pick(b, failsafeNets...))
		}
		for range int(b.byte() % 3) {
			fs.Destinations = append(fs.Destinations, pick(b, failsafeNets...))
		}
		if compile.ValidateFailsafe(fs) != nil {
			fs.Destinations = nil // no family in common with the sources
		}
		out = append(out, fs)
	}
	return out
}

// failsafeNets are the prefixes a fuzzed failsafe may be restricted to.
var failsafeNets = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.0.2.7/32"),
	netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("2001:db8::/32"),
}

// within puts a packet's addresses inside a restricted failsafe's lists,
// in a family both lists have: the packets the failsafe must accept.
func within(b *bytes, fs compile.Failsafe, p *reference.Packet) {
	if len(fs.Sources) == 0 && len(fs.Destinations) == 0 {
		return
	}
	of := func(ps []netip.Prefix, v4 bool) []netip.Prefix {
		var out []netip.Prefix
		for _, q := range ps {
			if q.Addr().Is4() == v4 {
				out = append(out, q)
			}
		}
		return out
	}
	var v4s []bool
	for _, v4 := range []bool{true, false} {
		if (len(fs.Sources) == 0 || len(of(fs.Sources, v4)) > 0) && (len(fs.Destinations) == 0 || len(of(fs.Destinations, v4)) > 0) {
			v4s = append(v4s, v4)
		}
	}
	v4 := pick(b, v4s...)
	if v4 != (p.Family == compile.FamilyIPv4) {
		if v4 {
			p.Family, p.SAddr, p.DAddr = compile.FamilyIPv4, netip.AddrFrom4([4]byte{10, 9, 9, b.byte()}), netip.AddrFrom4([4]byte{172, 16, 0, b.byte()})
		} else {
			p.Family, p.SAddr, p.DAddr = compile.FamilyIPv6, netip.MustParseAddr("fd00::9"), netip.MustParseAddr("2001:db8::9")
		}
	}
	if ps := of(fs.Sources, v4); len(ps) > 0 {
		p.SAddr = pick(b, ps...).Addr()
	}
	if ps := of(fs.Destinations, v4); len(ps) > 0 {
		p.DAddr = pick(b, ps...).Addr()
	}
}

var l4 = map[fwv1.Protocol]uint8{fwv1.ProtocolTCP: 6, fwv1.ProtocolUDP: 17, fwv1.ProtocolSCTP: 132}

// FuzzFailsafeNeverDropped compiles fuzzed rules (Drop and Reject first
// among them, every default action Drop by choice) with fuzzed failsafe
// lists, some restricted to sources or destinations, and sends packets to
// every failsafe port through the compiled ruleset: each must be accepted,
// whatever its addresses (within a restricted failsafe's), interfaces or
// conntrack state, both by the ruleset as the kernel evaluates it and by
// the reference semantics.
func FuzzFailsafeNeverDropped(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 1, 0, 0, 0, 1, 2, 1, 22, 0, 0})
	f.Add([]byte("drop everything on every chain, then some more rules to make runs of sets"))
	f.Add([]byte{7, 1, 0, 1, 1, 2, 1, 3, 9, 22, 4, 1, 200, 1, 5, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Fuzz(func(t *testing.T, data []byte) {
		b := &bytes{b: data}
		drop := func() fwv1.ChainPolicy {
			return pick(b, fwv1.ChainPolicyDrop, fwv1.ChainPolicyDrop, fwv1.ChainPolicyAccept)
		}
		spec := fwv1.NodeFirewallSpec{DefaultActions: fwv1.DefaultActions{Input: drop(), Forward: drop(), Output: drop(), PreRouting: drop()}}
		if b.byte()%4 == 0 {
			spec.AuditedChains = []fwv1.Chain{pick(b, fwv1.ChainInput, fwv1.ChainOutput, fwv1.ChainPreRouting)}
		}
		opts := compile.Options{
			FailsafeInbound:  genFailsafes(b, compile.DefaultFailsafeInbound()),
			FailsafeOutbound: genFailsafes(b, compile.DefaultFailsafeOutbound()),
		}
		for i := range int(b.byte() % 48) {
			spec.Rules = append(spec.Rules, genRule(b, i))
		}
		if err := reference.Validate(spec); err != nil {
			t.Fatalf("the generator made an invalid spec: %v", err)
		}
		rs, err := compile.Compile(spec, opts)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}

		for _, c := range []struct {
			chain     fwv1.Chain
			name      string
			failsafes []compile.Failsafe
		}{
			{fwv1.ChainInput, compile.ChainInput, opts.FailsafeInbound},
			{fwv1.ChainPreRouting, compile.ChainPreRouting, opts.FailsafeInbound},
			{fwv1.ChainOutput, compile.ChainOutput, opts.FailsafeOutbound},
		} {
			for _, fs := range c.failsafes {
				span := int(fs.Ports.Last) - int(fs.Ports.First)
				for _, port := range []uint16{fs.Ports.First, fs.Ports.Last, fs.Ports.First + uint16(int(b.byte())%(span+1))} {
					p := reference.Packet{
						L4Proto: l4[fs.Protocol], Transport: true, DPort: port,
						CtState: pick(b, compile.CtStateNew, compile.CtStateInvalid, compile.CtState(0)),
					}
					if b.byte()%2 == 0 {
						p.Family = compile.FamilyIPv4
						p.SAddr = netip.AddrFrom4([4]byte{10, b.byte(), b.byte(), b.byte()})
						p.DAddr = netip.AddrFrom4([4]byte{pick(b, uint8(10), 172, 192), b.byte(), b.byte(), b.byte()})
					} else {
						p.Family = compile.FamilyIPv6
						p.SAddr = netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b.byte(), b.byte()})
						p.DAddr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b.byte()})
					}
					within(b, fs, &p)
					switch c.chain {
					case fwv1.ChainPreRouting:
						p.IIfName = pick(b, "eth0", "cni0", "eth1", "")
						p.DAddrLocal = true
					case fwv1.ChainInput:
						p.IIfName = pick(b, "eth0", "cni0", "eth1", "")
					case fwv1.ChainOutput:
						p.OIfName = pick(b, "eth0", "cni0", "eth1", "")
					}
					if v := reference.EvalRuleset(rs, c.name, p); v != compile.VerdictAccept {
						t.Fatalf("%s: packet to failsafe %s: the compiled ruleset says %q\npacket: %+v\nruleset:\n%s",
							c.chain, fs, v, p, compile.Render(rs))
					}
					if v := reference.EvalSpec(spec, opts, c.chain, p); v != compile.VerdictAccept {
						t.Fatalf("%s: packet to failsafe %s: the reference semantics say %q\npacket: %+v", c.chain, fs, v, p)
					}
				}
			}
		}
	})
}
