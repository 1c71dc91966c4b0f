package nft

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// applySpec compiles spec without failsafes and programs it into p.
func applySpec(t *testing.T, p *Programmer, spec v1alpha1.NodeFirewallSpec) *compile.Ruleset {
	t.Helper()
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(rs); err != nil {
		t.Fatalf("%v\n%s", err, compile.Render(rs))
	}
	mustInSync(t, p, rs, true)
	return rs
}

func inputRule(name string, action v1alpha1.Action, proto v1alpha1.Protocol, edit func(*v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallRule {
	r := v1alpha1.NodeFirewallRule{Policy: "p", Mode: v1alpha1.PolicyModeEnforce, Name: name, Chain: v1alpha1.ChainInput, Action: action, Protocol: proto}
	if edit != nil {
		edit(&r)
	}
	return r
}

// TestMatchesPackets sends real packets through rules with every
// deterministic match and answer of iptables' extensions: source ports,
// ICMP and ICMPv6 types with and without codes, IP protocols by name and
// number, and each rejectWith, whose ICMP answer the sender's socket
// reports as its own errno.
func TestMatchesPackets(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	client, host := pair.Client, pair.Host
	p, err := New(host.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	unlimitICMPErrors(t, host)
	if _, err := host.ServeTCP(8001, 8002, 8003); err != nil {
		t.Fatal(err)
	}
	if _, err := host.ServeUDPEcho(9001, 9002, 9003, 9004, 9005, 9006); err != nil {
		t.Fatal(err)
	}
	accept, reject := v1alpha1.ActionAccept, v1alpha1.ActionReject
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			inputRule("tcp-from-5000", accept, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 8001}}
				r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 5000, EndPort: 5001}}
			}),
			inputRule("udp-from-5000", accept, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
				r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 5000}, {Port: 5010}}
			}),
			inputRule("reset", reject, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 8002}}
				r.RejectWith = v1alpha1.RejectWithTCPReset
			}),
			inputRule("host-unreachable", reject, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 9002}}
				r.RejectWith = v1alpha1.RejectWithHostUnreachable
			}),
			inputRule("net-unreachable", reject, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 9003}}
				r.RejectWith = v1alpha1.RejectWithNetUnreachable
			}),
			inputRule("admin-prohibited", reject, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 9004}}
				r.RejectWith = v1alpha1.RejectWithAdminProhibited
			}),
			inputRule("port-unreachable", reject, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 9005}}
				r.RejectWith = v1alpha1.RejectWithPortUnreachable
			}),
			inputRule("ping", accept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "FragmentationNeeded", "TimeExceeded"}
			}),
			inputRule("ping6", accept, v1alpha1.ProtocolICMPv6, func(r *v1alpha1.NodeFirewallRule) {
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "1/4"}
			}),
			inputRule("gre", accept, v1alpha1.ProtocolGRE, nil),
			inputRule("experimental", reject, "253", func(r *v1alpha1.NodeFirewallRule) {
				r.RejectWith = v1alpha1.RejectWithAdminProhibited
			}),
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop},
	}
	applySpec(t, p, spec)

	sport := func(port uint16) netnstest.ProbeOption { return netnstest.WithSourcePort(port) }
	for _, dst := range []netip.Addr{netnstest.HostV4, netnstest.HostV6} {
		netnstest.ExpectTCP(t, client, dst, 8001, netnstest.Accepted, sport(5000))
		netnstest.ExpectTCP(t, client, dst, 8001, netnstest.Accepted, sport(5001))
		netnstest.ExpectTCP(t, client, dst, 8001, netnstest.Dropped, sport(5002))
		netnstest.ExpectTCP(t, client, dst, 8001, netnstest.Dropped)
		netnstest.ExpectUDP(t, client, dst, 9001, netnstest.Accepted, sport(5000))
		netnstest.ExpectUDP(t, client, dst, 9001, netnstest.Accepted, sport(5010))
		netnstest.ExpectUDP(t, client, dst, 9001, netnstest.Dropped, sport(5001))
		netnstest.ExpectTCP(t, client, dst, 8002, netnstest.Rejected)
		netnstest.ExpectTCP(t, client, dst, 8003, netnstest.Dropped)
	}

	// Each answer, as the sender's socket reports it.
	for _, tt := range []struct {
		dst  netip.Addr
		port uint16
		want syscall.Errno
	}{
		{netnstest.HostV4, 9002, syscall.EHOSTUNREACH},
		{netnstest.HostV4, 9003, syscall.ENETUNREACH},
		{netnstest.HostV4, 9004, syscall.EHOSTUNREACH}, // ICMP 3/13 reads as EHOSTUNREACH
		{netnstest.HostV4, 9005, syscall.ECONNREFUSED},
		{netnstest.HostV6, 9002, syscall.EHOSTUNREACH},
		{netnstest.HostV6, 9003, syscall.ENETUNREACH},
		{netnstest.HostV6, 9004, syscall.EACCES},
		{netnstest.HostV6, 9005, syscall.ECONNREFUSED},
	} {
		if got := udpErrno(t, client, tt.dst, tt.port); got != tt.want {
			t.Errorf("udp %v: errno %v, want %v", netip.AddrPortFrom(tt.dst, tt.port), got, tt.want)
		}
	}
	// A TCP reset is no ICMP message: nothing in the socket's error queue.
	if got := tcpErrno(t, client, netnstest.HostV4, 8002); got != syscall.ECONNREFUSED {
		t.Errorf("tcp reset: errno %v, want ECONNREFUSED", got)
	}

	icmp := func(typ, code uint8) netnstest.IPMessage {
		return netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: typ, Code: code}
	}
	icmpv6 := func(typ, code uint8) netnstest.IPMessage {
		return netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: typ, Code: code}
	}
	for _, tt := range []struct {
		dst  netip.Addr
		msg  netnstest.IPMessage
		want netnstest.Verdict
	}{
		{netnstest.HostV4, icmp(8, 0), netnstest.Accepted},
		{netnstest.HostV4, icmp(8, 1), netnstest.Accepted}, // any code of a named type
		{netnstest.HostV4, icmp(3, 4), netnstest.Accepted},
		{netnstest.HostV4, icmp(3, 3), netnstest.Dropped},
		{netnstest.HostV4, icmp(11, 1), netnstest.Accepted},
		{netnstest.HostV4, icmp(13, 0), netnstest.Dropped},
		{netnstest.HostV6, icmpv6(128, 0), netnstest.Accepted},
		{netnstest.HostV6, icmpv6(1, 4), netnstest.Accepted},
		{netnstest.HostV6, icmpv6(1, 3), netnstest.Dropped},
		{netnstest.HostV6, icmpv6(2, 0), netnstest.Dropped},
		{netnstest.HostV4, netnstest.IPMessage{Protocol: 47}, netnstest.Accepted},
		{netnstest.HostV6, netnstest.IPMessage{Protocol: 47}, netnstest.Accepted},
		{netnstest.HostV4, netnstest.IPMessage{Protocol: 50}, netnstest.Dropped},
		{netnstest.HostV4, netnstest.IPMessage{Protocol: 253}, netnstest.Rejected},
		{netnstest.HostV6, netnstest.IPMessage{Protocol: 253}, netnstest.Rejected},
	} {
		src := netnstest.ClientV4
		if tt.dst.Is6() {
			src = netnstest.ClientV6
		}
		got, err := netnstest.ProbeIP(client, host, tt.dst, tt.msg, netnstest.WithSource(src))
		if err != nil {
			t.Fatalf("%v to %v: %v", tt.msg, tt.dst, err)
		}
		if got != tt.want {
			t.Errorf("%v to %v: %v, want %v", tt.msg, tt.dst, got, tt.want)
		}
	}
}

// unlimitICMPErrors lets ns answer every rejected packet: the kernel
// otherwise answers about one a second per peer, and the others would
// look dropped.
func unlimitICMPErrors(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	for _, kv := range [][2]string{{"net/ipv4/icmp_ratemask", "0"}, {"net/ipv6/icmp/ratelimit", "0"}} {
		if err := ns.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
}

// udpErrno sends a datagram to dst:port and returns the error the socket
// reports, 0 for none within a second. The socket asks for every ICMP
// error (IP_RECVERR), not only those UDP takes as fatal.
func udpErrno(t *testing.T, from *netnstest.NS, dst netip.Addr, port uint16) syscall.Errno {
	t.Helper()
	var errno syscall.Errno
	if err := from.Do(func() error {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				if dst.Is4() {
					_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1)
				} else {
					_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVERR, 1)
				}
			})
		}}
		c, err := d.Dial("udp", netip.AddrPortFrom(dst, port).String())
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, err = c.Read(make([]byte, 16))
		errors.As(err, &errno)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return errno
}

// tcpErrno connects to dst:port and returns the connection's error, 0
// when it succeeds.
func tcpErrno(t *testing.T, from *netnstest.NS, dst netip.Addr, port uint16) syscall.Errno {
	t.Helper()
	var errno syscall.Errno
	if err := from.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, port).String(), time.Second)
		if err == nil {
			c.Close()
		}
		errors.As(err, &errno)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return errno
}

// TestLimitsPackets checks the stateful matches with real packets: a rate
// limit lets its burst through and no more, per rule or per source
// address, the packets over it going on to the next rule; a connection
// limit matches the connections of a source beyond its count.
func TestLimitsPackets(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	client, host := pair.Client, pair.Host
	p, err := New(host.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	unlimitICMPErrors(t, host)
	const second = "192.0.2.11"
	if err := client.AddAddr("eth0", second+"/24"); err != nil {
		t.Fatal(err)
	}
	if _, err := host.ServeTCP(8001, 8002); err != nil {
		t.Fatal(err)
	}
	hold := holdTCP(t, host, 8005)
	accept, reject := v1alpha1.ActionAccept, v1alpha1.ActionReject
	minute := v1alpha1.RateUnitMinute
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			inputRule("ping", accept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"}
				r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: minute, Burst: 2, PerSource: true}
			}),
			// Pings over the limit go on to this rule.
			inputRule("ping-over", reject, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"}
				r.RejectWith = v1alpha1.RejectWithAdminProhibited
			}),
			inputRule("ping6", accept, v1alpha1.ProtocolICMPv6, func(r *v1alpha1.NodeFirewallRule) {
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"}
				r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: minute, Burst: 3}
			}),
			inputRule("web", accept, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 8001}}
				r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: minute, Burst: 2}
			}),
			inputRule("conns", reject, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 8005}}
				r.ConnLimit = &v1alpha1.ConnLimit{Above: 2}
				r.RejectWith = v1alpha1.RejectWithTCPReset
			}),
			inputRule("held", accept, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
				r.Ports = []v1alpha1.PortRange{{Port: 8005}}
			}),
		},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop},
	}
	rs := applySpec(t, p, spec)

	ping := netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 8}
	pings := func(what string) {
		t.Helper()
		for _, src := range []string{netnstest.ClientV4.String(), second} {
			var got []netnstest.Verdict
			for range 4 {
				v, err := netnstest.ProbeIP(client, host, netnstest.HostV4, ping, netnstest.WithSource(netip.MustParseAddr(src)))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, v)
			}
			want := []netnstest.Verdict{netnstest.Accepted, netnstest.Accepted, netnstest.Rejected, netnstest.Rejected}
			if !equalVerdicts(got, want) {
				t.Errorf("%s: pings from %s: %v, want %v (a bucket of 2 per source)", what, src, got, want)
			}
		}
	}
	pings("first ruleset")
	// The sources the kernel put in the meter are no drift.
	if out := listTable(t, host); !strings.Contains(out, "elements = { 192.0.2.1") && !strings.Contains(out, "elements = { 192.0.2.11") {
		t.Errorf("the meter holds no source:\n%s", out)
	}
	mustInSync(t, p, rs, true)
	var got []netnstest.Verdict
	for range 5 {
		v, err := netnstest.ProbeIP(client, host, netnstest.HostV6, netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: 128})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if want := []netnstest.Verdict{netnstest.Accepted, netnstest.Accepted, netnstest.Accepted, netnstest.Dropped, netnstest.Dropped}; !equalVerdicts(got, want) {
		t.Errorf("pings over IPv6: %v, want %v (a bucket of 3)", got, want)
	}
	// One bucket for the rule: both sources share it.
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8001, netnstest.Accepted)
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8001, netnstest.Accepted, netnstest.WithSource(netip.MustParseAddr(second)))
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8001, netnstest.Dropped)

	// Two connections of a source held open: its third is reset, another
	// source's first is not, and once the server closes them the source
	// may connect again.
	c1, c2 := dialHeld(t, client, "", 8005), dialHeld(t, client, "", 8005)
	hold.wait(t, 2)
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8005, netnstest.Rejected)
	c3 := dialHeld(t, client, second, 8005)
	hold.wait(t, 3)
	c1.Close()
	hold.closeAll()
	time.Sleep(100 * time.Millisecond)
	netnstest.ExpectTCP(t, client, netnstest.HostV4, 8005, netnstest.Accepted)
	c2.Close()
	c3.Close()

	// A rewrite starts every meter afresh, in the other slot's names.
	spec.Rules = append(spec.Rules, inputRule("dns", accept, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
		r.Ports = []v1alpha1.PortRange{{Port: 53}}
	}))
	rs = applySpec(t, p, spec)
	if names := kernelSetNames(t, host); !slices.Contains(names, "input-limit-1-v4"+slotSuffix) {
		t.Errorf("after the rewrite, sets %v: want the meter in slot 1", names)
	}
	pings("rewritten ruleset")
	mustInSync(t, p, rs, true)
}

func equalVerdicts(a, b []netnstest.Verdict) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// heldServer accepts TCP connections and keeps them open.
type heldServer struct {
	conns chan net.Conn
	held  []net.Conn
}

// holdTCP listens on port in ns and keeps every connection open until
// closeAll or the end of the test.
func holdTCP(t *testing.T, ns *netnstest.NS, port uint16) *heldServer {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp", netip.AddrPortFrom(netip.IPv6Unspecified(), port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := &heldServer{conns: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.conns <- c
		}
	}()
	t.Cleanup(func() { l.Close(); h.closeAll() })
	return h
}

// wait waits until the server holds n connections.
func (h *heldServer) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(2 * time.Second)
	for len(h.held) < n {
		select {
		case c := <-h.conns:
			h.held = append(h.held, c)
		case <-deadline:
			t.Fatalf("the server holds %d connections, want %d", len(h.held), n)
		}
	}
}

// closeAll closes every connection the server holds.
func (h *heldServer) closeAll() {
	for _, c := range h.held {
		c.Close()
	}
	h.held = nil
}

// dialHeld opens a TCP connection from ns (from source src, if set) to
// the host's port, and leaves it open.
func dialHeld(t *testing.T, ns *netnstest.NS, src string, port uint16) net.Conn {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() error {
		d := net.Dialer{Timeout: time.Second}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var err error
		c, err = d.Dial("tcp", netip.AddrPortFrom(netnstest.HostV4, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
