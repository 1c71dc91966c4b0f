package reference

import (
	"net/netip"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// tcpIn is a new IPv4 TCP packet to port 80 of the node, from 10.1.2.3 on
// eth0; cases change what they test.
func tcpIn(change func(p *Packet)) Packet {
	p := Packet{
		Family: compile.FamilyIPv4, SAddr: netip.MustParseAddr("10.1.2.3"), DAddr: netip.MustParseAddr("192.0.2.2"),
		L4Proto: 6, Transport: true, DPort: 80, IIfName: "eth0", CtState: compile.CtStateNew,
	}
	if change != nil {
		change(&p)
	}
	return p
}

func TestEvalSpec(t *testing.T) {
	in, fwd := v1alpha1.ChainInput, v1alpha1.ChainForward
	rule := func(action v1alpha1.Action, change func(r *v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallRule {
		r := v1alpha1.NodeFirewallRule{Policy: "p", Name: "r", Chain: in, Action: action}
		if change != nil {
			change(&r)
		}
		return r
	}
	dropAll := v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyDrop}
	failsafes := compile.Options{FailsafeInbound: []compile.Failsafe{{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{First: 22, Last: 22}}}}
	tests := []struct {
		name  string
		spec  v1alpha1.NodeFirewallSpec
		opts  compile.Options
		chain v1alpha1.Chain
		p     Packet
		want  compile.Verdict
	}{
		{name: "nothing: accept", chain: in, p: tcpIn(nil), want: compile.VerdictAccept},
		{name: "default drop", spec: v1alpha1.NodeFirewallSpec{DefaultActions: dropAll}, chain: in, p: tcpIn(nil), want: compile.VerdictDrop},
		{
			name:  "audited chain accepts",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll, AuditedChains: []v1alpha1.Chain{in}},
			chain: in, p: tcpIn(nil), want: compile.VerdictAccept,
		},
		{
			name:  "established before any rule",
			spec:  v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{rule(v1alpha1.ActionDrop, nil)}},
			chain: in, p: tcpIn(func(p *Packet) { p.CtState = compile.CtStateEstablished }), want: compile.VerdictAccept,
		},
		{
			name:  "loopback on input",
			spec:  v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{rule(v1alpha1.ActionDrop, nil)}},
			chain: in, p: tcpIn(func(p *Packet) { p.IIfName = "lo" }), want: compile.VerdictAccept,
		},
		{
			name:  "no loopback accept on forward",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll},
			chain: fwd, p: tcpIn(func(p *Packet) { p.IIfName = "lo" }), want: compile.VerdictDrop,
		},
		{
			name:  "neighbour discovery on input",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll},
			chain: in, p: Packet{Family: compile.FamilyIPv6, L4Proto: 58, Transport: true, Type: 135, CtState: compile.CtStateNew},
			want: compile.VerdictAccept,
		},
		{
			name:  "no neighbour discovery accept on forward",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll},
			chain: fwd, p: Packet{Family: compile.FamilyIPv6, L4Proto: 58, Transport: true, Type: 135, CtState: compile.CtStateNew},
			want: compile.VerdictDrop,
		},
		{
			name:  "failsafe port before any rule",
			spec:  v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{rule(v1alpha1.ActionDrop, nil)}},
			opts:  failsafes,
			chain: in, p: tcpIn(func(p *Packet) { p.DPort = 22 }), want: compile.VerdictAccept,
		},
		{
			name:  "failsafe needs the port",
			spec:  v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{rule(v1alpha1.ActionDrop, nil)}},
			opts:  failsafes,
			chain: in, p: tcpIn(func(p *Packet) { p.DPort, p.Transport = 22, false }), want: compile.VerdictDrop,
		},
		{
			name: "first match decides",
			spec: v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
				rule(v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) { r.Sources = []string{"10.1.2.3/8"} }),
				rule(v1alpha1.ActionAccept, nil),
			}},
			chain: in, p: tcpIn(func(p *Packet) { p.SAddr = netip.MustParseAddr("10.200.0.1") }), want: compile.VerdictReject,
		},
		{
			name: "audited drop decides nothing",
			spec: v1alpha1.NodeFirewallSpec{DefaultActions: dropAll, Rules: []v1alpha1.NodeFirewallRule{
				rule(v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) { r.Mode = v1alpha1.PolicyModeAudit }),
				rule(v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) { r.Protocol = v1alpha1.ProtocolTCP }),
			}},
			chain: in, p: tcpIn(nil), want: compile.VerdictAccept,
		},
		{
			name: "ports need the transport header",
			spec: v1alpha1.NodeFirewallSpec{DefaultActions: dropAll, Rules: []v1alpha1.NodeFirewallRule{
				rule(v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
					r.Protocol, r.Ports = v1alpha1.ProtocolTCP, []v1alpha1.PortRange{{Port: 1, EndPort: 65535}}
				}),
			}},
			chain: in, p: tcpIn(func(p *Packet) { p.Transport = false }), want: compile.VerdictDrop,
		},
		{
			name: "ICMP is IPv4 only",
			spec: v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
				rule(v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) { r.Protocol = v1alpha1.ProtocolICMP }),
			}},
			chain: in, p: Packet{Family: compile.FamilyIPv6, L4Proto: 1, Transport: true, CtState: compile.CtStateNew},
			want: compile.VerdictAccept,
		},
		{
			name: "interface wildcard",
			spec: v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
				rule(v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) { r.InInterface = "eth+" }),
			}},
			chain: in, p: tcpIn(nil), want: compile.VerdictDrop,
		},
		{
			name: "interface mismatch",
			spec: v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
				rule(v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) { r.InInterface = "eth1+" }),
			}},
			chain: in, p: tcpIn(nil), want: compile.VerdictAccept,
		},
		{
			name: "states",
			spec: v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
				rule(v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) { r.States = []v1alpha1.ConnState{v1alpha1.ConnStateInvalid} }),
			}},
			chain: in, p: tcpIn(func(p *Packet) { p.CtState = compile.CtStateInvalid }), want: compile.VerdictDrop,
		},
	}
	pre := v1alpha1.ChainPreRouting
	local := func(change func(p *Packet)) Packet {
		return tcpIn(func(p *Packet) {
			p.DAddrLocal = true
			if change != nil {
				change(p)
			}
		})
	}
	preDrop := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop}}
	tests = append(tests, []struct {
		name  string
		spec  v1alpha1.NodeFirewallSpec
		opts  compile.Options
		chain v1alpha1.Chain
		p     Packet
		want  compile.Verdict
	}{
		{name: "prerouting default drop", spec: preDrop, chain: pre, p: local(nil), want: compile.VerdictDrop},
		{name: "prerouting lets go what is not the node's", spec: preDrop, chain: pre, p: tcpIn(nil), want: compile.VerdictAccept},
		{
			name:  "prerouting rule",
			spec:  v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{rule(v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) { r.Chain = pre })}},
			chain: pre, p: local(nil), want: compile.VerdictReject,
		},
		{
			name:  "prerouting rules are not input's",
			spec:  v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{rule(v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) { r.Chain = pre })}},
			chain: in, p: local(nil), want: compile.VerdictAccept,
		},
		{name: "prerouting loopback", spec: preDrop, chain: pre, p: local(func(p *Packet) { p.IIfName = "lo" }), want: compile.VerdictAccept},
		{name: "prerouting established", spec: preDrop, chain: pre, p: local(func(p *Packet) { p.CtState = compile.CtStateRelated }), want: compile.VerdictAccept},
		{name: "prerouting failsafe", spec: preDrop, opts: failsafes, chain: pre, p: local(func(p *Packet) { p.DPort = 22 }), want: compile.VerdictAccept},
		{
			name: "prerouting neighbour discovery", spec: preDrop, chain: pre,
			p:    Packet{Family: compile.FamilyIPv6, L4Proto: 58, Transport: true, Type: 136, CtState: compile.CtStateNew, DAddrLocal: true},
			want: compile.VerdictAccept,
		},
		{
			name:  "prerouting audited default",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: preDrop.DefaultActions, AuditedChains: []v1alpha1.Chain{pre}},
			chain: pre, p: local(nil), want: compile.VerdictAccept,
		},
	}...)
	for _, tt := range tests {
		if got := EvalSpec(tt.spec, tt.opts, tt.chain, tt.p); got != tt.want {
			t.Errorf("%s: EvalSpec = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestEvalRuleset(t *testing.T) {
	prefix := func(s string) compile.AddrRange {
		p := netip.MustParsePrefix(s)
		last := p.Addr().As4()
		for i := p.Bits(); i < 32; i++ {
			last[i/8] |= 0x80 >> (i % 8)
		}
		return compile.AddrRange{First: p.Addr(), Last: netip.AddrFrom4(last)}
	}
	rs := &compile.Ruleset{
		Chains: []compile.Chain{{
			Name: compile.ChainInput, Policy: compile.VerdictDrop,
			Rules: []compile.Rule{
				{Counter: true, Comment: "log only"},
				{Family: compile.FamilyIPv4, Lookup: "ports", Verdict: compile.VerdictAccept, Comment: "lookup"},
				{L4Proto: 17, Verdict: compile.VerdictReject, Comment: "udp"},
			},
		}},
		Sets: []compile.Set{{
			Name: "ports", Family: compile.FamilyIPv4,
			Fields: []compile.SetField{compile.FieldDPort, compile.FieldSAddr, compile.FieldL4Proto},
			Elements: []compile.SetElement{{
				L4Proto: compile.ProtoRange{First: 6, Last: 6}, DPort: compile.PortInterval{First: 80, Last: 81},
				SAddr: prefix("10.0.0.0/8"),
			}},
		}},
	}
	tests := []struct {
		name  string
		chain string
		p     Packet
		want  compile.Verdict
		rule  string
	}{
		{"in the set", compile.ChainInput, tcpIn(nil), compile.VerdictAccept, "lookup"},
		{"port outside", compile.ChainInput, tcpIn(func(p *Packet) { p.DPort = 82 }), compile.VerdictDrop, ""},
		{"source outside", compile.ChainInput, tcpIn(func(p *Packet) { p.SAddr = netip.MustParseAddr("11.0.0.1") }), compile.VerdictDrop, ""},
		{"port unreadable", compile.ChainInput, tcpIn(func(p *Packet) { p.Transport = false }), compile.VerdictDrop, ""},
		{"other family", compile.ChainInput, tcpIn(func(p *Packet) { p.Family = compile.FamilyIPv6 }), compile.VerdictDrop, ""},
		{"linear rule", compile.ChainInput, tcpIn(func(p *Packet) { p.L4Proto = 17 }), compile.VerdictReject, "udp"},
		{"unknown chain", "prerouting", tcpIn(nil), compile.VerdictAccept, ""},
	}
	for _, tt := range tests {
		if got := EvalRuleset(rs, tt.chain, tt.p); got != tt.want {
			t.Errorf("%s: EvalRuleset = %q, want %q", tt.name, got, tt.want)
		}
		got := ""
		if r := DecidingRule(rs, tt.chain, tt.p); r != nil {
			got = r.Comment
		}
		if got != tt.rule {
			t.Errorf("%s: decided by rule %q, want %q", tt.name, got, tt.rule)
		}
	}
}

// TestFailsafesByAddress: a failsafe restricted to addresses accepts its
// ports only from (and to) them, in the spec's semantics and in the
// compiled ruleset alike, with a default Drop behind.
func TestFailsafesByAddress(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	tcp, udp := v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP
	controlPlane := pfx("10.0.0.0/24", "2001:db8::/64", "10.0.1.5/32")
	opts := compile.Options{FailsafeInbound: []compile.Failsafe{
		{Protocol: tcp, Ports: compile.PortInterval{First: 22, Last: 22}},
		{Protocol: tcp, Ports: compile.PortInterval{First: 2379, Last: 2380}, Sources: controlPlane},
		{Protocol: tcp, Ports: compile.PortInterval{First: 10250, Last: 10250}, Sources: pfx("10.0.0.0/8")},
		{Protocol: tcp, Ports: compile.PortInterval{First: 6443, Last: 6443}, Sources: controlPlane},
		{Protocol: udp, Ports: compile.PortInterval{First: 4789, Last: 4789}, Sources: pfx("10.0.0.0/8", "2001:db8::/32"), Destinations: pfx("2001:db8:1::1/128")},
	}}
	spec := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop}}
	rs, err := compile.Compile(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		saddr, daddr string
		port         uint16
		proto        uint8
		want         compile.Verdict
	}{
		{"10.0.0.7", "10.9.9.9", 2379, 6, compile.VerdictAccept},
		{"10.0.1.5", "10.9.9.9", 6443, 6, compile.VerdictAccept},
		{"10.0.1.6", "10.9.9.9", 6443, 6, compile.VerdictDrop},
		{"192.0.2.1", "10.9.9.9", 2380, 6, compile.VerdictDrop},
		{"2001:db8::5", "2001:db8::9", 2380, 6, compile.VerdictAccept},
		{"2001:db8:0:1::5", "2001:db8::9", 2380, 6, compile.VerdictDrop},
		{"192.0.2.1", "10.9.9.9", 22, 6, compile.VerdictAccept},
		{"10.200.0.1", "10.9.9.9", 10250, 6, compile.VerdictAccept},
		{"10.200.0.1", "10.9.9.9", 10250, 17, compile.VerdictDrop},
		{"2001:db8::5", "2001:db8:1::1", 4789, 17, compile.VerdictAccept},
		{"2001:db8::5", "2001:db8:1::2", 4789, 17, compile.VerdictDrop},
		{"10.0.0.1", "10.0.0.2", 4789, 17, compile.VerdictDrop},
	} {
		p := tcpIn(func(p *Packet) {
			p.SAddr, p.DAddr = netip.MustParseAddr(tc.saddr), netip.MustParseAddr(tc.daddr)
			p.L4Proto, p.DPort = tc.proto, tc.port
			if p.SAddr.Is6() {
				p.Family = compile.FamilyIPv6
			}
		})
		if got := EvalSpec(spec, opts, v1alpha1.ChainInput, p); got != tc.want {
			t.Errorf("EvalSpec: %s -> %s port %d/%d: %s, want %s", tc.saddr, tc.daddr, tc.port, tc.proto, got, tc.want)
		}
		if got := EvalRuleset(rs, compile.ChainInput, p); got != tc.want {
			t.Errorf("EvalRuleset: %s -> %s port %d/%d: %s, want %s", tc.saddr, tc.daddr, tc.port, tc.proto, got, tc.want)
		}
	}
}

// TestEvalInbound follows a packet through PreRouting, kube-proxy's DNAT
// and Input or Forward: PreRouting matches the NodePort the client used,
// Input and Forward the backend.
func TestEvalInbound(t *testing.T) {
	pre, in, fwd := v1alpha1.ChainPreRouting, v1alpha1.ChainInput, v1alpha1.ChainForward
	nodePort := func(src string) Packet {
		return tcpIn(func(p *Packet) {
			p.SAddr, p.DPort, p.DAddrLocal = netip.MustParseAddr(src), 30080, true
		})
	}
	toPod := &DNAT{DAddr: netip.MustParseAddr("10.244.1.5"), DPort: 8080, OIfName: "cni0"}
	toHost := &DNAT{DAddr: netip.MustParseAddr("192.0.2.2"), DPort: 8443, Local: true}
	tcp := func(name string, chain v1alpha1.Chain, action v1alpha1.Action, port int32, sources ...string) v1alpha1.NodeFirewallRule {
		return v1alpha1.NodeFirewallRule{Policy: "p", Name: name, Chain: chain, Action: action,
			Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: port}}, Sources: sources}
	}
	// NodePort 30080 from 10.0.0.0/8 only, as the nodeports-from-cidr
	// sample does; Input drops by default and accepts the host backend's
	// port; Forward rejects one pod port.
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			tcp("nodeport-lan", pre, v1alpha1.ActionAccept, 30080, "10.0.0.0/8"),
			tcp("nodeport-others", pre, v1alpha1.ActionDrop, 30080),
			tcp("host-backend", in, v1alpha1.ActionAccept, 8443),
			tcp("no-pod-8081", fwd, v1alpha1.ActionReject, 8081),
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop},
	}
	tests := []struct {
		name      string
		p         Packet
		dnat      *DNAT
		want      compile.Verdict
		wantChain v1alpha1.Chain
	}{
		{"allowed client to a pod", nodePort("10.1.2.3"), toPod, compile.VerdictAccept, fwd},
		{"other client dropped before DNAT", nodePort("198.51.100.9"), toPod, compile.VerdictDrop, pre},
		{"allowed client to a host backend", nodePort("10.1.2.3"), toHost, compile.VerdictAccept, in},
		{"other client to a host backend", nodePort("198.51.100.9"), toHost, compile.VerdictDrop, pre},
		{
			"forward still decides after a prerouting accept", nodePort("10.1.2.3"),
			&DNAT{DAddr: netip.MustParseAddr("10.244.1.5"), DPort: 8081, OIfName: "cni0"}, compile.VerdictReject, fwd,
		},
		{"input still decides without DNAT", nodePort("10.1.2.3"), nil, compile.VerdictDrop, in},
		{
			"not addressed to the node: prerouting lets it go", tcpIn(func(p *Packet) { p.DPort, p.OIfName = 30080, "eth1" }),
			nil, compile.VerdictAccept, fwd,
		},
	}
	rs, err := compile.Compile(spec, compile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		got, chain := EvalInbound(spec, compile.Options{}, tt.p, tt.dnat)
		if got != tt.want || chain != tt.wantChain {
			t.Errorf("%s: EvalInbound = %q in %s, want %q in %s", tt.name, got, chain, tt.want, tt.wantChain)
		}
		got, chain = EvalRulesetInbound(rs, tt.p, tt.dnat)
		if got != tt.want || chain != tt.wantChain {
			t.Errorf("%s: EvalRulesetInbound = %q in %s, want %q in %s", tt.name, got, chain, tt.want, tt.wantChain)
		}
	}
}
