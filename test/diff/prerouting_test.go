package diff

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
	"github.com/nodefw/nodefw/internal/specgen"
)

// The PreRouting chain against iptables' mangle PREROUTING, with a DNAT in
// between as kube-proxy's: both routers get the same nat chain at
// priority dstnat, which sends a "NodePort" of the router to the server
// (forwarded, as to a pod on another node) and another to a port of the
// router itself (as to a backend in the host network). PreRouting must
// see the port the client used, Input and Forward the backend's.

// Ports of the emulated NodePorts and their backends, inside the served
// universe so that random rules match both sides of the DNAT.
const (
	nodePortToServer = 4060
	nodePortToRouter = 4061
	backendServer    = 4052
	backendRouter    = 4053
)

// dnatTable is the emulated kube-proxy: like kube-proxy's, it rewrites only
// packets addressed to the node.
var dnatTable = fmt.Sprintf(`table inet nfwdiff-kube-proxy {
	chain nodeports {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local meta nfproto ipv4 meta l4proto { tcp, udp } th dport %[1]d dnat ip to %[3]s:%[4]d
		fib daddr type local meta nfproto ipv6 meta l4proto { tcp, udp } th dport %[1]d dnat ip6 to [%[5]s]:%[4]d
		fib daddr type local meta l4proto { tcp, udp } th dport %[2]d redirect to :%[6]d
	}
}
`, nodePortToServer, nodePortToRouter, serverV4[0], backendServer, serverV6[0], backendRouter)

// dnatPorts are the ports probed: both NodePorts, both backends (which a
// client may also reach directly) and neighbours no DNAT touches.
var dnatPorts = []uint16{backendServer - 1, backendServer, backendRouter, nodePortToServer, nodePortToRouter, nodePortToRouter + 1}

// dnatUniverse draws rules whose ports are around the NodePorts and the
// backends.
var dnatUniverse = func() specgen.Universe {
	u := randomUniverse
	u.FirstPort, u.LastPort = backendServer-3, nodePortToRouter+1
	return u
}()

// withDNAT installs the emulated kube-proxy in both routers for the test.
func withDNAT(t *testing.T, tp *topology) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "dnat.nft")
	if err := os.WriteFile(file, []byte(dnatTable), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*side{tp.ipt, tp.nfw} {
		if _, err := s.Router.Exec("nft", "-f", file); err != nil {
			t.Fatalf("%s: %v", s.Router, err)
		}
		t.Cleanup(func() {
			if _, err := s.Router.Exec("nft", "delete", "table", "inet", "nfwdiff-kube-proxy"); err != nil {
				t.Errorf("%s: %v", s.Router, err)
			}
		})
	}
}

// dnatProbes are every client address to the router's addresses on the
// DNAT ports, over TCP and UDP: the packets PreRouting decides.
func dnatProbes() []probe {
	var ps []pair
	for _, d := range []netip.Addr{routerClientV4, routerServerV4} {
		for _, s := range clientV4 {
			ps = append(ps, pair{chain: v1alpha1.ChainPreRouting, from: client, src: s, dst: d})
		}
	}
	for _, d := range []netip.Addr{routerClientV6, routerServerV6} {
		for _, s := range clientV6 {
			ps = append(ps, pair{chain: v1alpha1.ChainPreRouting, from: client, src: s, dst: d})
		}
	}
	return matrix(ps, dnatPorts, dnatPorts)
}

// inbound is a probe of dnatProbes as the reference sees it arrive at the
// router, and the DNAT it meets.
func inbound(p probe) (reference.Packet, *reference.DNAT) {
	pkt := reference.Packet{
		Family: compile.FamilyIPv4, SAddr: p.src, DAddr: p.dst, L4Proto: 6, Transport: true, DPort: p.port,
		IIfName: plan.RouterClientDev, CtState: compile.CtStateNew, DAddrLocal: true,
	}
	if p.proto == v1alpha1.ProtocolUDP {
		pkt.L4Proto = 17
	}
	server, self := serverV4[0], routerClientV4
	if p.dst.Is6() {
		pkt.Family, server, self = compile.FamilyIPv6, serverV6[0], routerClientV6
	}
	switch p.port {
	case nodePortToServer:
		return pkt, &reference.DNAT{DAddr: server, DPort: backendServer, OIfName: plan.RouterServerDev}
	case nodePortToRouter:
		// redirect: to the first address of the interface the packet came in by.
		return pkt, &reference.DNAT{DAddr: self, DPort: backendRouter, Local: true}
	}
	return pkt, nil
}

// TestPreRoutingDNAT compares PreRouting with mangle PREROUTING around an
// emulated kube-proxy: NodePort restrictions of the nodeports-from-cidr
// sample's shape, each action, a default Drop, Audit mode and logging,
// then random rule sets of every chain. The trace of every probe, through
// PreRouting, the DNAT and Input or Forward (tracePath), must foretell
// what both kernels did.
func TestPreRoutingDNAT(t *testing.T) {
	tp := env(t)
	withDNAT(t, tp)
	const (
		pre = v1alpha1.ChainPreRouting
		in  = v1alpha1.ChainInput
		fwd = v1alpha1.ChainForward
		tcp = v1alpha1.ProtocolTCP
		udp = v1alpha1.ProtocolUDP
	)
	nodePorts := ports(nodePortToServer, nodePortToRouter)
	lan := []string{"10.77.1.10/31", "fd77:1::10"}
	rule := func(chain v1alpha1.Chain, action v1alpha1.Action, proto v1alpha1.Protocol, ps []v1alpha1.PortRange, srcs []string) v1alpha1.NodeFirewallRule {
		return runRule(chain, action, proto, ps, srcs, nil)
	}
	// Input drops by default but for the backend on the router; Forward
	// rejects one port of the server, which only PreRouting can tell
	// from the NodePort it came by.
	inputAndForward := []v1alpha1.NodeFirewallRule{
		rule(in, v1alpha1.ActionAccept, tcp, ports(backendRouter, 0), nil),
		rule(in, v1alpha1.ActionAccept, udp, ports(backendRouter, 0), nil),
		rule(fwd, v1alpha1.ActionReject, udp, ports(backendServer, 0), []string{"10.77.1.12/30"}),
	}
	restrict := func(action v1alpha1.Action, mode v1alpha1.PolicyMode) []v1alpha1.NodeFirewallRule {
		rs := []v1alpha1.NodeFirewallRule{
			rule(pre, v1alpha1.ActionAccept, tcp, nodePorts, lan),
			rule(pre, v1alpha1.ActionAccept, udp, nodePorts, lan),
			rule(pre, action, tcp, nodePorts, nil),
			rule(pre, action, udp, nodePorts, nil),
		}
		for i := range rs {
			rs[i].Mode = mode
			if mode == v1alpha1.PolicyModeAudit {
				rs[i].Policy = "audit"
			}
		}
		return rs
	}
	inputDrop := v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop}
	cases := []struct {
		name string
		spec v1alpha1.NodeFirewallSpec
	}{
		{"NodePorts from a CIDR, others dropped", v1alpha1.NodeFirewallSpec{
			Rules: named(append(restrict(v1alpha1.ActionDrop, v1alpha1.PolicyModeEnforce), inputAndForward...)), DefaultActions: inputDrop,
		}},
		{"NodePorts from a CIDR, others rejected", v1alpha1.NodeFirewallSpec{
			Rules: named(append(restrict(v1alpha1.ActionReject, v1alpha1.PolicyModeEnforce), inputAndForward...)), DefaultActions: inputDrop,
		}},
		{"NodePorts restricted in Audit mode", v1alpha1.NodeFirewallSpec{
			Rules: named(append(restrict(v1alpha1.ActionDrop, v1alpha1.PolicyModeAudit), inputAndForward...)), DefaultActions: inputDrop,
		}},
		{"PreRouting default Drop, one backend port allowed before DNAT", v1alpha1.NodeFirewallSpec{
			Rules: named([]v1alpha1.NodeFirewallRule{
				rule(pre, v1alpha1.ActionAccept, tcp, ports(nodePortToServer, 0), nil),
				rule(pre, v1alpha1.ActionAccept, udp, ports(backendRouter, 0), []string{"10.77.1.0/24"}),
			}),
			DefaultActions: v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop},
		}},
		{"PreRouting default Drop audited, logged reject of new packets", v1alpha1.NodeFirewallSpec{
			Rules: named([]v1alpha1.NodeFirewallRule{func() v1alpha1.NodeFirewallRule {
				r := rule(pre, v1alpha1.ActionReject, "", nil, []string{"10.77.1.13", "fd77:1::11"})
				r.States, r.Log, r.InInterface = []v1alpha1.ConnState{v1alpha1.ConnStateNew}, true, "eth+"
				return r
			}()}),
			DefaultActions: v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop},
			AuditedChains:  []v1alpha1.Chain{pre},
		}},
		{"eight blocked sources become a set run", v1alpha1.NodeFirewallSpec{
			Rules: named(func() []v1alpha1.NodeFirewallRule {
				var rs []v1alpha1.NodeFirewallRule
				for _, s := range []string{"10.77.1.10", "10.77.1.12", "192.0.2.1", "192.0.2.3", "192.0.2.5", "fd77:1::11", "fd99::1", "fd99::3"} {
					rs = append(rs, rule(pre, v1alpha1.ActionDrop, tcp, nodePorts, []string{s}))
				}
				return rs
			}()),
		}},
	}
	var st stats
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp.check(t, newRuleCase(tc.name, tc.spec), dnatProbes(), &st)
		})
	}
	seed := *seedFlag
	start := time.Now()
	for i := range max(*countFlag/5, 1) {
		rng := rand.New(rand.NewPCG(seed, uint64(1_000_000+i)))
		spec := specgen.Random(rng, dnatUniverse)
		if err := reference.Validate(spec); err != nil {
			t.Fatalf("set %d: the generator made an invalid rule set: %v", i, err)
		}
		tp.check(t, newRuleCase(fmt.Sprintf("DNAT set %d (-diff.seed=%d)", i, seed), spec), dnatProbes(), &st)
	}
	t.Logf("%v, random sets in %v", &st, time.Since(start).Round(time.Millisecond))
}
