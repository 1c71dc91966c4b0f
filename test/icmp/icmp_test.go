// Package icmp proves what a node's default-Drop Input does to ICMP, as
// the README states it: errors about the node's own connections (path MTU
// discovery's fragmentation-needed and packet-too-big among them) pass as
// related to those connections, whatever the rules; an echo request
// follows the rules like any other packet; an error about no connection
// of the node is dropped like one.
//
// The node is the server of a client — router — server topology; the link
// from the router to the client is narrower than the client's advertised
// segment size, so the router answers the server's full segments with
// fragmentation-needed (IPv4) and packet-too-big (IPv6). The tests run as
// root.
package icmp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/nft"
)

// Sizes of the path: the client link's MTU, and the segment size the
// client advertises, more than that link carries.
const (
	narrowMTU = 1280
	clientMSS = 1400
	bulkPort  = 7000
	bulkBytes = 256 << 10
)

// node is the topology with nodefw programming the server.
type node struct {
	*netnstest.Routed
	prog *nft.Programmer
}

// newNode builds the topology and programs the server with a default-Drop
// Input whose only rule accepts TCP to bulkPort, plus rules.
func newNode(t *testing.T, rules ...v1alpha1.NodeFirewallRule) *node {
	t.Helper()
	r := netnstest.NewTestRouted(t)
	for _, step := range []struct {
		ns   *netnstest.NS
		args []string
	}{
		{r.Client, []string{"link", "set", "eth0", "mtu", fmt.Sprint(narrowMTU)}},
		{r.Router, []string{"link", "set", "eth-c", "mtu", fmt.Sprint(narrowMTU)}},
		{r.Client, []string{"route", "change", "default", "via", netnstest.RouterClientV4.String(), "advmss", fmt.Sprint(clientMSS)}},
		{r.Client, []string{"-6", "route", "change", "default", "via", netnstest.RouterClientV6.String(), "advmss", fmt.Sprint(clientMSS)}},
	} {
		if err := step.ns.IP(step.args...); err != nil {
			t.Fatal(err)
		}
	}
	// Every error answered: the kernel otherwise answers about one a
	// second per peer.
	for _, ns := range []*netnstest.NS{r.Client, r.Router, r.Server} {
		for _, kv := range [][2]string{{"net/ipv4/icmp_ratemask", "0"}, {"net/ipv6/icmp/ratelimit", "0"}} {
			if err := ns.Sysctl(kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	p, err := nft.New(r.Server.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	spec := v1alpha1.NodeFirewallSpec{
		Rules: append([]v1alpha1.NodeFirewallRule{{
			Policy: "node", Mode: v1alpha1.PolicyModeEnforce, Name: "bulk", Chain: v1alpha1.ChainInput,
			Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: bulkPort}},
		}}, rules...),
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	serveBulk(t, r.Server)
	return &node{Routed: r, prog: p}
}

// serveBulk listens on bulkPort in ns and writes bulkBytes to every
// connection, then closes it.
func serveBulk(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", bulkPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		data := bytes.Repeat([]byte("x"), bulkBytes)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write(data)
			}()
		}
	}()
}

// fetch connects from the client to the server's bulk port and returns
// how many bytes arrive within the timeout.
func fetch(t *testing.T, client *netnstest.NS, dst netip.Addr, timeout time.Duration) int {
	t.Helper()
	var n int64
	if err := client.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, bulkPort).String(), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		n, err = io.Copy(io.Discard, c)
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// TestPathMTUDiscovery fetches more than fits the narrow link from the
// node, over IPv4 and IPv6: the router's fragmentation-needed and
// packet-too-big reach the node, whose default-Drop Input has no rule for
// them, as related to the connection; the node shrinks its segments and
// the whole transfer arrives. First, as a control, the same errors are
// dropped by a table of their own ahead of nodefw's: the transfer stalls,
// so the errors are what carries it.
func TestPathMTUDiscovery(t *testing.T) {
	n := newNode(t)
	const blackhole = `table inet blackhole {
	chain input {
		type filter hook input priority -5; policy accept;
		icmp type destination-unreachable drop
		icmpv6 type packet-too-big drop
	}
}
`
	file := filepath.Join(t.TempDir(), "blackhole.nft")
	if err := os.WriteFile(file, []byte(blackhole), 0o644); err != nil {
		t.Fatal(err)
	}
	n.Server.MustExec("nft", "-f", file)
	for _, dst := range []netip.Addr{netnstest.ServerV4, netnstest.ServerV6} {
		if got := fetch(t, n.Client, dst, 2*time.Second); got >= bulkBytes {
			t.Fatalf("control: with the errors dropped, %d of %d bytes from %v arrived: the path does not need them", got, bulkBytes, dst)
		}
	}
	n.Server.MustExec("nft", "delete", "table", "inet", "blackhole")
	for _, dst := range []netip.Addr{netnstest.ServerV4, netnstest.ServerV6} {
		if got := fetch(t, n.Client, dst, 10*time.Second); got != bulkBytes {
			t.Errorf("from %v: %d of %d bytes arrived: path MTU discovery is broken", dst, got, bulkBytes)
		}
	}
}

// TestRelatedErrorsPass sends the node's own UDP and TCP to closed ports
// of the client: the client's port-unreachable and reset come back through
// the default-Drop Input as related to, and part of, those connections.
func TestRelatedErrorsPass(t *testing.T) {
	n := newNode(t)
	for _, dst := range []netip.Addr{netnstest.ClientV4, netnstest.ClientV6} {
		netnstest.ExpectUDP(t, n.Server, dst, 9999, netnstest.Rejected)
		netnstest.ExpectTCP(t, n.Server, dst, 9999, netnstest.Rejected)
	}
}

// TestEchoFollowsTheRules: without a rule the node drops an echo request,
// as any packet; its own echoes are answered, the replies being part of
// its exchange; an error about no connection of the node is dropped; and
// a rule that accepts echo requests lets them in.
func TestEchoFollowsTheRules(t *testing.T) {
	echo4 := netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 8}
	echo6 := netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: 128}
	fragNeeded := netnstest.IPMessage{Protocol: netnstest.ProtoICMP, Type: 3, Code: 4}
	tooBig := netnstest.IPMessage{Protocol: netnstest.ProtoICMPv6, Type: 2}
	probe := func(n *node, dst netip.Addr, msg netnstest.IPMessage, want netnstest.Verdict) {
		t.Helper()
		src := netnstest.ClientV4
		if dst.Is6() {
			src = netnstest.ClientV6
		}
		got, err := netnstest.ProbeIP(n.Client, n.Server, dst, msg, netnstest.WithSource(src), netnstest.WithTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%v to %v: %v, want %v", msg, dst, got, want)
		}
	}

	n := newNode(t)
	probe(n, netnstest.ServerV4, echo4, netnstest.Dropped)
	probe(n, netnstest.ServerV6, echo6, netnstest.Dropped)
	probe(n, netnstest.ServerV4, fragNeeded, netnstest.Dropped)
	probe(n, netnstest.ServerV6, tooBig, netnstest.Dropped)
	for _, dst := range []netip.Addr{netnstest.ClientV4, netnstest.ClientV6} {
		if !pingAnswered(t, n.Server, dst) {
			t.Errorf("the node's echo request to %v got no reply through its Input", dst)
		}
	}

	n = newNode(t,
		v1alpha1.NodeFirewallRule{Policy: "node", Mode: v1alpha1.PolicyModeEnforce, Name: "ping", Chain: v1alpha1.ChainInput,
			Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMP, ICMPTypes: []v1alpha1.ICMPType{"EchoRequest"}},
		v1alpha1.NodeFirewallRule{Policy: "node", Mode: v1alpha1.PolicyModeEnforce, Name: "ping6", Chain: v1alpha1.ChainInput,
			Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMPv6, ICMPTypes: []v1alpha1.ICMPType{"EchoRequest"}},
	)
	probe(n, netnstest.ServerV4, echo4, netnstest.Accepted)
	probe(n, netnstest.ServerV6, echo6, netnstest.Accepted)
	probe(n, netnstest.ServerV4, fragNeeded, netnstest.Dropped)
}

// pingAnswered sends an echo request from ns to dst and reports whether
// the reply reaches a raw socket of ns, past its Input, within a second.
func pingAnswered(t *testing.T, ns *netnstest.NS, dst netip.Addr) bool {
	t.Helper()
	network, typ, replyType := "ip4:1", byte(8), byte(0)
	if dst.Is6() {
		network, typ, replyType = "ip6:58", 128, 129
	}
	var answered bool
	if err := ns.Do(func() error {
		c, err := net.ListenPacket(network, "")
		if err != nil {
			return err
		}
		defer c.Close()
		id := byte(time.Now().UnixNano())
		msg := []byte{typ, 0, 0, 0, 0x4e, id, 0, 1, 'n', 'f', 'w'}
		if dst.Is4() {
			sum := checksum(msg)
			msg[2], msg[3] = byte(sum>>8), byte(sum)
		}
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		deadline := time.Now().Add(time.Second)
		buf := make([]byte, 1500)
		for time.Now().Before(deadline) {
			_ = c.SetReadDeadline(deadline)
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				return nil
			}
			if k >= 8 && buf[0] == replyType && buf[4] == 0x4e && buf[5] == id {
				answered = true
				return nil
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return answered
}

// checksum is the Internet checksum of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
