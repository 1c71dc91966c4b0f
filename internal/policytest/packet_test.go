package policytest

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
)

func TestPacketParse(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name string
		in   Packet
		want Parsed
	}{
		{
			name: "defaults: Input, new",
			in:   Packet{Proto: "tcp", From: "10.0.0.1", To: "10.0.0.2:6443"},
			want: Parsed{Chain: v1alpha1.ChainInput, Packet: reference.Packet{
				Family: compile.FamilyIPv4, SAddr: a("10.0.0.1"), DAddr: a("10.0.0.2"), L4Proto: 6, Transport: true, DPort: 6443,
				CtState: compile.CtStateNew,
			}},
		},
		{
			name: "every field, names in any case",
			in: Packet{Chain: "forward", Proto: "UDP", From: "10.0.0.1:5353", To: "10.244.1.2:53",
				InInterface: "eth0", OutInterface: "cni0", State: "Established"},
			want: Parsed{Chain: v1alpha1.ChainForward, SPort: 5353, Packet: reference.Packet{
				Family: compile.FamilyIPv4, SAddr: a("10.0.0.1"), DAddr: a("10.244.1.2"), L4Proto: 17, Transport: true, DPort: 53,
				IIfName: "eth0", OIfName: "cni0", CtState: compile.CtStateEstablished,
			}},
		},
		{
			name: "IPv6 with ports",
			in:   Packet{Chain: "Output", Proto: "sctp", From: "[fd00::1]:4000", To: "[fd00::2]:3868", OutInterface: "eth0", State: "invalid"},
			want: Parsed{Chain: v1alpha1.ChainOutput, SPort: 4000, Packet: reference.Packet{
				Family: compile.FamilyIPv6, SAddr: a("fd00::1"), DAddr: a("fd00::2"), L4Proto: 132, Transport: true, DPort: 3868,
				OIfName: "eth0", CtState: compile.CtStateInvalid,
			}},
		},
		{
			name: "ICMP: echo-request by default",
			in:   Packet{Proto: "icmp", From: "10.0.0.1", To: "10.0.0.2"},
			want: Parsed{Chain: v1alpha1.ChainInput, Packet: reference.Packet{
				Family: compile.FamilyIPv4, SAddr: a("10.0.0.1"), DAddr: a("10.0.0.2"), L4Proto: 1, Transport: true, Type: 8,
				CtState: compile.CtStateNew,
			}},
		},
		{
			name: "ICMPv6 by type name",
			in:   Packet{Proto: "icmpv6", ICMPType: "nd-neighbor-solicit", From: "fe80::1", To: "ff02::1:ff00:2"},
			want: Parsed{Chain: v1alpha1.ChainInput, Packet: reference.Packet{
				Family: compile.FamilyIPv6, SAddr: a("fe80::1"), DAddr: a("ff02::1:ff00:2"), L4Proto: 58, Transport: true, Type: 135,
				CtState: compile.CtStateNew,
			}},
		},
		{
			name: "ICMP type by number, protocol by number",
			in:   Packet{Proto: "1", ICMPType: "13", From: "10.0.0.1", To: "10.0.0.2"},
			want: Parsed{Chain: v1alpha1.ChainInput, Packet: reference.Packet{
				Family: compile.FamilyIPv4, SAddr: a("10.0.0.1"), DAddr: a("10.0.0.2"), L4Proto: 1, Transport: true, Type: 13,
				CtState: compile.CtStateNew,
			}},
		},
		{
			name: "a protocol without ports",
			in:   Packet{Proto: "47", From: "10.0.0.1", To: "10.0.0.2"},
			want: Parsed{Chain: v1alpha1.ChainInput, Packet: reference.Packet{
				Family: compile.FamilyIPv4, SAddr: a("10.0.0.1"), DAddr: a("10.0.0.2"), L4Proto: 47, Transport: true,
				CtState: compile.CtStateNew,
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Parse()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			// Describe spells out what Parse read: it reads back the same.
			again, err := got.Describe().Parse()
			if err != nil {
				t.Fatalf("Describe gives %+v, which does not parse: %v", got.Describe(), err)
			}
			if diff := cmp.Diff(got, again, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("Parse(Describe) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPacketParseErrors(t *testing.T) {
	tcp := func(change func(p *Packet)) Packet {
		p := Packet{Proto: "tcp", From: "10.0.0.1", To: "10.0.0.2:80"}
		change(&p)
		return p
	}
	tests := []struct {
		name string
		in   Packet
		want []string
	}{
		{"unknown chain", tcp(func(p *Packet) { p.Chain = "Postrouting" }), []string{`chain: "Postrouting" is not one of Input, Forward, Output`}},
		{"unknown protocol", tcp(func(p *Packet) { p.Proto = "gre" }), []string{`proto: "gre" is not tcp`}},
		{"no protocol", tcp(func(p *Packet) { p.Proto = "" }), []string{`proto: "" is not tcp`}},
		{"no source", tcp(func(p *Packet) { p.From = "" }), []string{"from: an address is required"}},
		{"bad source", tcp(func(p *Packet) { p.From = "10.0.0.300" }), []string{`from: "10.0.0.300" is not ADDR`}},
		{"zone", tcp(func(p *Packet) { p.From = "fe80::1%eth0" }), []string{"from: \"fe80::1%eth0\": addresses have no zone here"}},
		{"TCP without a port", tcp(func(p *Packet) { p.To = "10.0.0.2" }), []string{"to: tcp needs a port"}},
		{"port 0", tcp(func(p *Packet) { p.To = "10.0.0.2:0" }), []string{"to: \"10.0.0.2:0\": port 0"}},
		{"ICMP with a port", Packet{Proto: "icmp", From: "10.0.0.1:1", To: "10.0.0.2:80"}, []string{"from: icmp has no ports", "to: icmp has no ports"}},
		{"two families", tcp(func(p *Packet) { p.From = "fd00::1" }), []string{"to: fd00::1 and 10.0.0.2 are not of one IP family"}},
		{"ICMP over IPv6", Packet{Proto: "icmp", From: "fd00::1", To: "fd00::2"}, []string{"proto: icmp packets are IPv4"}},
		{"unknown ICMP type", Packet{Proto: "icmp", ICMPType: "nd-neighbor-solicit", From: "10.0.0.1", To: "10.0.0.2"}, []string{`icmpType: "nd-neighbor-solicit" is neither`}},
		{"a type for TCP", tcp(func(p *Packet) { p.ICMPType = "8" }), []string{"icmpType: only icmp and icmpv6 packets have a type"}},
		{"out interface on Input", tcp(func(p *Packet) { p.OutInterface = "eth0" }), []string{"outInterface: packets on Input have no output interface"}},
		{"in interface on Output", tcp(func(p *Packet) { p.Chain, p.InInterface = "Output", "eth0" }), []string{"inInterface: packets on Output have no input interface"}},
		{"unknown state", tcp(func(p *Packet) { p.State = "untracked" }), []string{`state: "untracked" is not new`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.in.Parse()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestParsedString(t *testing.T) {
	tests := []struct {
		in   Packet
		want string
	}{
		{Packet{Proto: "tcp", From: "10.0.0.1", To: "10.0.0.2:6443"}, "Input tcp 10.0.0.1 -> 10.0.0.2:6443 new"},
		{
			Packet{Chain: "forward", Proto: "udp", From: "[fd00::1]:53", To: "[fd00::2]:53", InInterface: "eth0", OutInterface: "cni0", State: "related"},
			"Forward udp [fd00::1]:53 -> [fd00::2]:53 in eth0 out cni0 related",
		},
		{Packet{Proto: "icmpv6", ICMPType: "128", From: "fd00::1", To: "fd00::2"}, "Input icmpv6 fd00::1 -> fd00::2 type echo-request new"},
	}
	for _, tt := range tests {
		p, err := tt.in.Parse()
		if err != nil {
			t.Fatal(err)
		}
		if got := p.String(); got != tt.want {
			t.Errorf("%+v: String = %q, want %q", tt.in, got, tt.want)
		}
	}
}
