package netnstest

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// LinkUp brings an interface of the namespace up.
func (n *NS) LinkUp(dev string) error {
	return n.ip("link", "set", dev, "up")
}

// AddAddr adds addresses in CIDR form ("192.0.2.1/24", "2001:db8::1/64")
// to an interface. IPv6 addresses skip duplicate address detection, so
// every address is usable at once. Extra addresses on one interface serve as
// additional probe sources (see WithSource).
func (n *NS) AddAddr(dev string, prefixes ...string) error {
	for _, s := range prefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return err
		}
		args := []string{"addr", "add", p.String(), "dev", dev}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		if err := n.ip(args...); err != nil {
			return err
		}
	}
	return nil
}

// AddRoute adds a route: dst is a CIDR or "default"; via is a gateway
// address. A "default" route goes to the family of via.
func (n *NS) AddRoute(dst, via string) error {
	gw, err := netip.ParseAddr(via)
	if err != nil {
		return err
	}
	args := []string{"route", "add", dst, "via", gw.String()}
	if gw.Is6() {
		args = append([]string{"-6"}, args...)
	}
	return n.ip(args...)
}

// EnableForwarding turns on IPv4 and IPv6 forwarding in the namespace.
func (n *NS) EnableForwarding() error {
	return n.Do(func() error {
		if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
		return writeSysctl("net/ipv6/conf/all/forwarding", "1")
	})
}

// Veth joins two namespaces with a veth pair, aDev in a and bDev in b, and
// brings both ends up. The pair is created directly inside the namespaces
// and disappears with them.
func Veth(a *NS, aDev string, b *NS, bDev string) error {
	if err := a.ip("link", "add", aDev, "type", "veth", "peer", "name", bDev, "netns", b.name); err != nil {
		return err
	}
	if err := a.LinkUp(aDev); err != nil {
		return err
	}
	return b.LinkUp(bDev)
}

// Addresses of the topologies, from the documentation ranges.
var (
	ClientV4 = netip.MustParseAddr("192.0.2.1")
	HostV4   = netip.MustParseAddr("192.0.2.2")
	ClientV6 = netip.MustParseAddr("2001:db8:1::1")
	HostV6   = netip.MustParseAddr("2001:db8:1::2")

	RouterClientV4 = netip.MustParseAddr("192.0.2.254")
	RouterClientV6 = netip.MustParseAddr("2001:db8:1::fe")
	RouterServerV4 = netip.MustParseAddr("198.51.100.254")
	RouterServerV6 = netip.MustParseAddr("2001:db8:2::fe")
	ServerV4       = netip.MustParseAddr("198.51.100.1")
	ServerV6       = netip.MustParseAddr("2001:db8:2::1")
)

// Pair is a client namespace and a host namespace joined by one veth pair,
// both called "eth0": client 192.0.2.1 and 2001:db8:1::1, host 192.0.2.2
// and 2001:db8:1::2. The host plays the node whose firewall is tested.
type Pair struct {
	Client, Host *NS
}

// NewPair creates a Pair, or fails; the caller must Close it.
func NewPair(name string) (*Pair, error) {
	c, err := Create(name + "-client")
	if err != nil {
		return nil, err
	}
	h, err := Create(name + "-host")
	if err != nil {
		c.Close()
		return nil, err
	}
	p := &Pair{Client: c, Host: h}
	if err := p.wire(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// NewTestPair creates a Pair for a test and deletes it when the test ends.
func NewTestPair(tb testing.TB) *Pair {
	tb.Helper()
	p := &Pair{Client: NewNS(tb, "client"), Host: NewNS(tb, "host")}
	if err := p.wire(); err != nil {
		tb.Fatal(err)
	}
	if err := p.waitLinked(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// waitLinked waits until the client reaches the host over both families.
func (p *Pair) waitLinked() error {
	for _, dst := range []netip.Addr{HostV4, HostV6} {
		if err := WaitReachable(p.Client, dst, 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// WaitReachable waits until from reaches dst: a TCP connection to a closed
// port of dst is refused. On a loaded machine the first neighbour
// resolution of an address (IPv6's above all) can outlast a probe's
// timeout, which would read as a drop; a test that adds an address waits
// for it before probing it.
func WaitReachable(from *NS, dst netip.Addr, within time.Duration) error {
	const closedPort = 9
	deadline := time.Now().Add(within)
	for {
		v, err := ProbeTCP(from, dst, closedPort)
		if err == nil && v == Rejected {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netnstest: %s cannot reach %s: %v %v", from.Name(), dst, v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Pair) wire() error {
	if err := Veth(p.Client, "eth0", p.Host, "eth0"); err != nil {
		return err
	}
	if err := p.Client.AddAddr("eth0", prefix(ClientV4, 24), prefix(ClientV6, 64)); err != nil {
		return err
	}
	return p.Host.AddAddr("eth0", prefix(HostV4, 24), prefix(HostV6, 64))
}

// Close deletes both namespaces.
func (p *Pair) Close() error {
	err1 := p.Client.Close()
	err2 := p.Host.Close()
	if err1 != nil {
		return err1
	}
	return err2
}

// Routed is client — router — server: the router forwards between a
// client link and a server link, and plays the node whose Forward chain is
// tested. Its addressing is a RoutedPlan; NewRouted and NewTestRouted use
// DefaultRoutedPlan.
type Routed struct {
	Client, Router, Server *NS
}

// RoutedPlan is the addressing of a Routed topology: the interface names
// of the two links and the addresses of each end. The router's first IPv4
// and first IPv6 address on a link are the default gateways of the
// namespace behind it.
type RoutedPlan struct {
	// ClientDev is the client's end of the client link, RouterClientDev
	// the router's; RouterServerDev and ServerDev are the ends of the
	// server link.
	ClientDev, RouterClientDev, RouterServerDev, ServerDev string
	// Client, RouterClient, RouterServer and Server are the addresses of
	// those ends in CIDR form, as AddAddr takes them.
	Client, RouterClient, RouterServer, Server []string
}

// DefaultRoutedPlan: the client link is "eth0" in the client and "eth-c" in
// the router (192.0.2.0/24, 2001:db8:1::/64), the server link "eth-s" in
// the router and "eth0" in the server (198.51.100.0/24, 2001:db8:2::/64);
// the router owns .254 and ::fe on both links.
var DefaultRoutedPlan = RoutedPlan{
	ClientDev: "eth0", RouterClientDev: "eth-c", RouterServerDev: "eth-s", ServerDev: "eth0",
	Client:       []string{prefix(ClientV4, 24), prefix(ClientV6, 64)},
	RouterClient: []string{prefix(RouterClientV4, 24), prefix(RouterClientV6, 64)},
	RouterServer: []string{prefix(RouterServerV4, 24), prefix(RouterServerV6, 64)},
	Server:       []string{prefix(ServerV4, 24), prefix(ServerV6, 64)},
}

// NewRouted creates a Routed topology with DefaultRoutedPlan, or fails; the
// caller must Close it.
func NewRouted(name string) (*Routed, error) { return NewRoutedWith(name, DefaultRoutedPlan) }

// NewRoutedWith creates a Routed topology with the given addressing, its
// namespaces called name plus "-client", "-router" and "-server" (see
// Create), or fails; the caller must Close it.
func NewRoutedWith(name string, plan RoutedPlan) (*Routed, error) {
	r := &Routed{}
	var err error
	if r.Client, err = Create(name + "-client"); err != nil {
		return nil, err
	}
	if r.Router, err = Create(name + "-router"); err != nil {
		r.Close()
		return nil, err
	}
	if r.Server, err = Create(name + "-server"); err != nil {
		r.Close()
		return nil, err
	}
	if err := r.wire(plan); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// NewTestRouted creates a Routed topology with DefaultRoutedPlan for a test
// and deletes it when the test ends.
func NewTestRouted(tb testing.TB) *Routed {
	tb.Helper()
	r := &Routed{Client: NewNS(tb, "client"), Router: NewNS(tb, "router"), Server: NewNS(tb, "server")}
	if err := r.wire(DefaultRoutedPlan); err != nil {
		tb.Fatal(err)
	}
	return r
}

func (r *Routed) wire(plan RoutedPlan) error {
	steps := []func() error{
		func() error { return Veth(r.Client, plan.ClientDev, r.Router, plan.RouterClientDev) },
		func() error { return Veth(r.Server, plan.ServerDev, r.Router, plan.RouterServerDev) },
		func() error { return r.Client.AddAddr(plan.ClientDev, plan.Client...) },
		func() error { return r.Server.AddAddr(plan.ServerDev, plan.Server...) },
		func() error { return r.Router.AddAddr(plan.RouterClientDev, plan.RouterClient...) },
		func() error { return r.Router.AddAddr(plan.RouterServerDev, plan.RouterServer...) },
		func() error { return r.Router.EnableForwarding() },
		func() error { return addDefaultRoutes(r.Client, plan.RouterClient) },
		func() error { return addDefaultRoutes(r.Server, plan.RouterServer) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// addDefaultRoutes routes both families of ns through the first IPv4 and
// the first IPv6 address of gateways.
func addDefaultRoutes(ns *NS, gateways []string) error {
	var v4, v6 bool
	for _, s := range gateways {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return err
		}
		if is6 := p.Addr().Is6(); is6 && !v6 || !is6 && !v4 {
			if err := ns.AddRoute("default", p.Addr().String()); err != nil {
				return err
			}
			v4, v6 = v4 || !is6, v6 || is6
		}
	}
	return nil
}

// Close deletes the three namespaces.
func (r *Routed) Close() error {
	var first error
	for _, ns := range []*NS{r.Client, r.Router, r.Server} {
		if ns == nil {
			continue
		}
		if err := ns.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func prefix(a netip.Addr, bits int) string {
	return fmt.Sprintf("%s/%d", a, bits)
}
