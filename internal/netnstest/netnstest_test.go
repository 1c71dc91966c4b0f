package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
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

// TestRoutedWith wires a Routed topology with a plan of its own: other
// interface names, and a second source address on the client link, routed
// through the router's first address of each family.
func TestRoutedWith(t *testing.T) {
	RequireRoot(t)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	plan := RoutedPlan{
		ClientDev: "lan0", RouterClientDev: "rc0", RouterServerDev: "rs0", ServerDev: "wan0",
		Client:       []string{"10.9.1.10/24", "10.9.1.11/24", "fd09:1::10/64"},
		RouterClient: []string{"10.9.1.1/24", "10.9.3.1/24", "fd09:1::1/64"},
		RouterServer: []string{"fd09:2::1/64", "10.9.2.1/24"},
		Server:       []string{"10.9.2.10/24", "fd09:2::10/64"},
	}
	r, err := NewRoutedWith("with-"+hex.EncodeToString(b[:]), plan)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Server.ServeTCP(443); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"10.9.1.10", "10.9.1.11"} {
		ExpectTCP(t, r.Client, netip.MustParseAddr("10.9.2.10"), 443, Accepted, WithSource(netip.MustParseAddr(src)))
	}
	ExpectTCP(t, r.Client, netip.MustParseAddr("fd09:2::10"), 443, Accepted)
	for _, c := range []struct {
		ns    *NS
		want  string
		flags []string
	}{
		{r.Client, "default via 10.9.1.1 dev lan0", nil},
		{r.Client, "default via fd09:1::1 dev lan0", []string{"-6"}},
		{r.Server, "default via 10.9.2.1 dev wan0", nil},
		{r.Server, "default via fd09:2::1 dev wan0", []string{"-6"}},
	} {
		out := c.ns.MustExec(append(append([]string{"ip"}, c.flags...), "route", "show", "default")...)
		if !strings.Contains(out, c.want) {
			t.Errorf("%s: routes %q, want %q", c.ns, out, c.want)
		}
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

func TestCreateExact(t *testing.T) {
	RequireRoot(t)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	// Deliberately not under Prefix: the name is used as given.
	prefix := "nfwx-" + hex.EncodeToString(b[:]) + "-"
	for _, bad := range []string{"", "a/b", "a b"} {
		if _, err := CreateExact(bad); err == nil {
			t.Errorf("CreateExact(%q) succeeded", bad)
		}
	}
	a, err := CreateExact(prefix + "a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Name() != prefix+"a" {
		t.Errorf("name = %q, want %q", a.Name(), prefix+"a")
	}
	out := a.MustExec("ip", "-o", "link", "show", "lo")
	if !strings.Contains(out, "UP") {
		t.Errorf("lo not up: %s", out)
	}
	b2, err := CreateExact(prefix + "b")
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()

	if err := Delete(prefix + "missing"); err != nil {
		t.Errorf("deleting a missing namespace: %v", err)
	}
	deleted, err := DeleteWithPrefix(prefix)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deleted)
	if want := []string{prefix + "a", prefix + "b"}; !slices.Equal(deleted, want) {
		t.Errorf("deleted %v, want %v", deleted, want)
	}
	for _, ns := range []*NS{a, b2} {
		if _, err := os.Stat(ns.Path()); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", ns, err)
		}
	}
	if _, err := DeleteWithPrefix(""); err == nil {
		t.Error("DeleteWithPrefix with no prefix succeeded")
	}
}

// TestDeleteOrphaned deletes the namespaces of exited processes and of
// this one, and keeps those of live processes.
func TestDeleteOrphaned(t *testing.T) {
	RequireRoot(t)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	prefix := Prefix + "orph" + hex.EncodeToString(b[:]) + "-"
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	live := prefix + "1-init"
	names := []string{
		live,
		prefix + strconv.Itoa(exited.Process.Pid) + "-gone",
		OwnedName(prefix, "mine"),
		prefix + "nopid",
	}
	for _, n := range names {
		ns, err := CreateExact(n)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
	}
	deleted, err := DeleteOrphaned(prefix)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deleted)
	want := slices.Sorted(slices.Values(names[1:]))
	if !slices.Equal(deleted, want) {
		t.Errorf("deleted %v, want %v", deleted, want)
	}
	if _, err := os.Stat(NetnsDir + "/" + live); err != nil {
		t.Errorf("the namespace of a live process is gone: %v", err)
	}
	if _, err := DeleteOrphaned(""); err == nil {
		t.Error("DeleteOrphaned with no prefix succeeded")
	}
}

func TestServeUDPEchoOn(t *testing.T) {
	p := NewTestPair(t)
	if err := p.Host.AddAddr("eth0", "192.0.2.3/24", "2001:db8:1::3/64"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Host.ServeUDPEchoOn([]netip.Addr{HostV4, netip.MustParseAddr("2001:db8:1::3")}, 5353); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"192.0.2.3", "2001:db8:1::3"} {
		if err := WaitReachable(p.Client, netip.MustParseAddr(a), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ExpectUDP(t, p.Client, HostV4, 5353, Accepted)
	ExpectUDP(t, p.Client, netip.MustParseAddr("2001:db8:1::3"), 5353, Accepted)
	// Nothing listens on the other addresses.
	ExpectUDP(t, p.Client, netip.MustParseAddr("192.0.2.3"), 5353, Rejected)
	ExpectUDP(t, p.Client, HostV6, 5353, Rejected)
}

func TestServeTCPProxy(t *testing.T) {
	p := NewTestPair(t)
	// The upstream listens in the test's own namespace, on loopback.
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello"))
			c.Close()
		}
	}()
	proxy, err := p.Host.ServeTCPProxy(6443, up.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []netip.Addr{HostV4, HostV6} {
		var got []byte
		if err := p.Client.Do(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 6443).String(), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				return err
			}
			got, err = io.ReadAll(c)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if string(got) != "hello" {
			t.Errorf("through the proxy at %s: got %q, want %q", dst, got, "hello")
		}
	}
	if err := proxy.Close(); err != nil {
		t.Fatal(err)
	}
	ExpectTCP(t, p.Client, HostV4, 6443, Rejected)
}
