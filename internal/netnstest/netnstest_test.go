package netnstest

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNSLifecycle(t *testing.T) {
	ns := NewNS(t, "life")
	if !strings.HasPrefix(ns.Name(), Prefix+"life-") {
		t.Errorf("name %q lacks prefix", ns.Name())
	}
	if _, err := os.Stat(ns.Path()); err != nil {
		t.Fatal(err)
	}
	out := ns.MustExec("ip", "-o", "link", "show", "lo")
	if !strings.Contains(out, "UP") && !strings.Contains(out, "LOOPBACK,UP") {
		t.Errorf("lo not up: %s", out)
	}
	// Do runs in the namespace: it sees only lo.
	var names []string
	if err := ns.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "lo" {
		t.Errorf("interfaces in namespace = %v, want [lo]", names)
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ns.Path()); !os.IsNotExist(err) {
		t.Errorf("namespace file still there after Close: %v", err)
	}
	if err := ns.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPairProbes(t *testing.T) {
	p := NewTestPair(t)
	if _, err := p.Host.ServeTCP(8080); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Host.ServeUDPEcho(5353); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []netip.Addr{HostV4, HostV6} {
		ExpectTCP(t, p.Client, dst, 8080, Accepted)
		ExpectUDP(t, p.Client, dst, 5353, Accepted)
		// Nothing listens: a TCP reset and an ICMP port unreachable.
		ExpectTCP(t, p.Client, dst, 8081, Rejected)
		ExpectUDP(t, p.Client, dst, 5354, Rejected)
	}

	// A second client address: the host drops everything from it, and
	// rejects TCP 8080 from the primary IPv4 address.
	const second = "192.0.2.11"
	if err := p.Client.AddAddr("eth0", second+"/24"); err != nil {
		t.Fatal(err)
	}
	// Extra address on the host: echo replies must leave from it.
	if err := p.Host.AddAddr("eth0", "192.0.2.3/24"); err != nil {
		t.Fatal(err)
	}
	ExpectUDP(t, p.Client, netip.MustParseAddr("192.0.2.3"), 5353, Accepted)

	nftIn(t, p.Host, `table inet harness {
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr `+second+` drop
		tcp dport 8080 ip saddr 192.0.2.1 reject
		tcp dport 8080 ip6 saddr 2001:db8:1::1 reject
	}
}`)
	src := WithSource(netip.MustParseAddr(second))
	ExpectTCP(t, p.Client, HostV4, 8080, Dropped, src)
	ExpectUDP(t, p.Client, HostV4, 5353, Dropped, src)
	ExpectTCP(t, p.Client, HostV4, 8080, Rejected)
	ExpectUDP(t, p.Client, HostV4, 5353, Accepted)
	// An ICMPv6 unreachable for a SYN shows at once, not at the next
	// retransmission a second later.
	start := time.Now()
	ExpectTCP(t, p.Client, HostV6, 8080, Rejected, WithTimeout(3*time.Second))
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("rejection took %v", d)
	}
	if err := p.Host.AddAddr("eth0", "2001:db8:1::3/64"); err != nil {
		t.Fatal(err)
	}
	ExpectUDP(t, p.Client, netip.MustParseAddr("2001:db8:1::3"), 5353, Accepted)

	// Probes run in parallel.
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ExpectUDP(t, p.Client, HostV6, 5353, Accepted)
			ExpectUDP(t, p.Client, HostV4, 5353, Accepted, WithSource(ClientV4))
			ExpectTCP(t, p.Client, HostV6, 8081, Rejected, WithTimeout(time.Second))
		}()
	}
	wg.Wait()
}

func TestRouted(t *testing.T) {
	r := NewTestRouted(t)
	if _, err := r.Server.ServeTCP(443); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Server.ServeUDPEcho(53); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []netip.Addr{ServerV4, ServerV6} {
		ExpectTCP(t, r.Client, dst, 443, Accepted)
		ExpectUDP(t, r.Client, dst, 53, Accepted)
	}
	nftIn(t, r.Router, `table inet harness {
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		iifname "eth-c" udp dport 53 accept
	}
}`)
	for _, dst := range []netip.Addr{ServerV4, ServerV6} {
		ExpectTCP(t, r.Client, dst, 443, Dropped)
		ExpectUDP(t, r.Client, dst, 53, Accepted)
	}
}

func nftIn(t *testing.T, ns *NS, ruleset string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(ruleset); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ns.MustExec("nft", "-f", f.Name())
}
