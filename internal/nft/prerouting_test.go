package nft

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// nodePortDNAT emulates kube-proxy's NodePorts in the router of a
// netnstest.Routed topology: a nat chain at priority dstnat, in a table of
// its own, sends TCP 30080 addressed to the router to the server's 8080 (a
// pod on another node: the packet is forwarded) and TCP 30081 to the
// router's own 8081 (a backend in the host network: the packet goes on to
// input). As kube-proxy does, it matches only packets addressed to the
// node.
const nodePortDNAT = `table inet kube-proxy-emulation {
	chain nodeports {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local meta nfproto ipv4 tcp dport 30080 dnat ip to 198.51.100.1:8080
		fib daddr type local meta nfproto ipv6 tcp dport 30080 dnat ip6 to [2001:db8:2::1]:8080
		fib daddr type local tcp dport 30081 redirect to :8081
	}
}
`

// TestPreRoutingBeforeDNAT proves what the PreRouting chain is for: a
// PreRouting Drop (or Reject) on a NodePort stops one client before
// kube-proxy's DNAT, while a client of another CIDR still connects, to a
// forwarded backend and to one on the node alike. An Input rule on the
// same NodePort stops nobody: the DNATed packet reaches Input (or Forward)
// at the backend's port.
func TestPreRoutingBeforeDNAT(t *testing.T) {
	r := netnstest.NewTestRouted(t)
	// A second client address, in another CIDR of the same link.
	if err := r.Client.AddAddr("eth0", "192.0.2.7/32", "2001:db8:1::7/128"); err != nil {
		t.Fatal(err)
	}
	blockedV4, blockedV6 := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8:1::7")
	for _, s := range []struct {
		ns   *netnstest.NS
		port uint16
	}{{r.Server, 8080}, {r.Router, 8081}} {
		c, err := s.ns.ServeTCP(s.port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	file := filepath.Join(t.TempDir(), "dnat.nft")
	if err := os.WriteFile(file, []byte(nodePortDNAT), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Router.MustExec("nft", "-f", file)
	p, err := New(r.Router.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	type probe struct {
		src, dst netip.Addr
		port     uint16
		want     netnstest.Verdict
	}
	expect := func(t *testing.T, probes []probe) {
		t.Helper()
		for _, pr := range probes {
			netnstest.ExpectTCP(t, r.Client, pr.dst, pr.port, pr.want, netnstest.WithSource(pr.src))
		}
	}
	// every is each client, family and NodePort: allowed clients get
	// allowed, the blocked ones blocked.
	every := func(allowed, blocked netnstest.Verdict) []probe {
		var out []probe
		for _, port := range []uint16{30080, 30081} {
			out = append(out,
				probe{netnstest.ClientV4, netnstest.RouterClientV4, port, allowed},
				probe{netnstest.ClientV6, netnstest.RouterClientV6, port, allowed},
				probe{blockedV4, netnstest.RouterClientV4, port, blocked},
				probe{blockedV6, netnstest.RouterClientV6, port, blocked},
			)
		}
		return out
	}
	apply := func(t *testing.T, spec v1alpha1.NodeFirewallSpec, failsafes ...compile.Failsafe) {
		t.Helper()
		rs, err := compile.Compile(spec, compile.Options{SetLookups: true, FailsafeInbound: failsafes})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Apply(rs); err != nil {
			t.Fatal(err)
		}
		mustInSync(t, p, rs, true)
	}
	nodePorts := []v1alpha1.PortRange{{Port: 30080, EndPort: 30081}}
	blockedSources := []string{blockedV4.String(), blockedV6.String()}
	// Input: the host backend's port only.
	hostBackend := v1alpha1.NodeFirewallRule{
		Policy: "hosts", Name: "backend", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
		Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 8081}},
	}
	inputDrop := v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop}

	t.Run("DNAT without nodefw", func(t *testing.T) {
		expect(t, every(netnstest.Accepted, netnstest.Accepted))
	})
	t.Run("Input rule on the NodePort stops nobody", func(t *testing.T) {
		apply(t, v1alpha1.NodeFirewallSpec{
			Rules: []v1alpha1.NodeFirewallRule{{
				Policy: "nodeports", Name: "blocked", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop,
				Protocol: v1alpha1.ProtocolTCP, Ports: nodePorts, Sources: blockedSources,
			}, hostBackend},
			DefaultActions: inputDrop,
		})
		expect(t, every(netnstest.Accepted, netnstest.Accepted))
	})
	for _, tc := range []struct {
		action v1alpha1.Action
		want   netnstest.Verdict
	}{{v1alpha1.ActionDrop, netnstest.Dropped}, {v1alpha1.ActionReject, netnstest.Rejected}} {
		t.Run("PreRouting "+string(tc.action), func(t *testing.T) {
			apply(t, v1alpha1.NodeFirewallSpec{
				Rules: []v1alpha1.NodeFirewallRule{{
					Policy: "nodeports", Name: "blocked", Chain: v1alpha1.ChainPreRouting, Action: tc.action,
					Protocol: v1alpha1.ProtocolTCP, Ports: nodePorts, Sources: blockedSources,
				}, hostBackend},
				DefaultActions: inputDrop,
			})
			expect(t, every(netnstest.Accepted, tc.want))
		})
	}
	t.Run("PreRouting Accept for one CIDR, then Drop", func(t *testing.T) {
		// The nodeports-from-cidr sample's shape: the allowed clients
		// first, everyone else dropped; Accept leaves the packet to Input
		// or Forward.
		apply(t, v1alpha1.NodeFirewallSpec{
			Rules: []v1alpha1.NodeFirewallRule{
				{
					Policy: "nodeports", Name: "from-lan", Chain: v1alpha1.ChainPreRouting, Action: v1alpha1.ActionAccept,
					Protocol: v1alpha1.ProtocolTCP, Ports: nodePorts, Sources: []string{"192.0.2.0/30", "2001:db8:1::/126"},
				},
				{
					Policy: "nodeports", Name: "from-elsewhere", Chain: v1alpha1.ChainPreRouting, Action: v1alpha1.ActionDrop,
					Protocol: v1alpha1.ProtocolTCP, Ports: nodePorts,
				},
				hostBackend,
			},
			DefaultActions: inputDrop,
		})
		expect(t, every(netnstest.Accepted, netnstest.Dropped))
		// Input still decides after PreRouting accepts: without the host
		// backend's rule, 30081 is dropped for everyone, while 30080,
		// forwarded, still passes.
		apply(t, v1alpha1.NodeFirewallSpec{
			Rules: []v1alpha1.NodeFirewallRule{{
				Policy: "nodeports", Name: "from-lan", Chain: v1alpha1.ChainPreRouting, Action: v1alpha1.ActionAccept,
				Protocol: v1alpha1.ProtocolTCP, Ports: nodePorts, Sources: []string{"192.0.2.0/30"},
			}},
			DefaultActions: inputDrop,
		})
		expect(t, []probe{
			{netnstest.ClientV4, netnstest.RouterClientV4, 30080, netnstest.Accepted},
			{netnstest.ClientV4, netnstest.RouterClientV4, 30081, netnstest.Dropped},
		})
	})
	t.Run("PreRouting default Drop spares failsafe, forwarded and the node's own traffic", func(t *testing.T) {
		spec := v1alpha1.NodeFirewallSpec{
			Rules: []v1alpha1.NodeFirewallRule{{
				Policy: "nodeports", Name: "from-lan", Chain: v1alpha1.ChainPreRouting, Action: v1alpha1.ActionAccept,
				Protocol: v1alpha1.ProtocolTCP, Ports: nodePorts, Sources: []string{"192.0.2.0/30", "2001:db8:1::/126"},
			}},
			DefaultActions: v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop},
		}
		apply(t, spec)
		expect(t, every(netnstest.Accepted, netnstest.Dropped))
		// A failsafe port, as the client sends to it, passes before any
		// rule and the default.
		apply(t, spec, compile.Failsafe{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{First: 30081, Last: 30081}})
		expect(t, []probe{
			{blockedV4, netnstest.RouterClientV4, 30081, netnstest.Accepted},
			{blockedV6, netnstest.RouterClientV6, 30081, netnstest.Accepted},
			{blockedV4, netnstest.RouterClientV4, 30080, netnstest.Dropped},
		})
		// Forwarded traffic is not the chain's: the client still reaches
		// the server directly.
		expect(t, []probe{{blockedV4, netnstest.ServerV4, 8080, netnstest.Accepted}})
		// The router's own connections still get their answers.
		netnstest.ExpectTCP(t, r.Router, netnstest.ServerV4, 8080, netnstest.Accepted)
	})
}

// TestPreRoutingChainComesAndGoes: the prerouting chain, with a run of
// set lookups, is added to a live table when a spec starts using
// PreRouting, and deleted, sets and all, when it stops.
func TestPreRoutingChainComesAndGoes(t *testing.T) {
	ns, p := target(t)
	without := v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{{
		Policy: "p", Name: "ssh", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
		Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 22}},
	}}}
	with := *without.DeepCopy()
	for i := range 8 {
		with.Rules = append(with.Rules, v1alpha1.NodeFirewallRule{
			Policy: "p", Name: fmt.Sprintf("block-%d", i), Chain: v1alpha1.ChainPreRouting, Action: v1alpha1.ActionDrop,
			Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}},
			Sources: []string{fmt.Sprintf("203.0.113.%d", 2*i)},
		})
	}
	for i, step := range []struct {
		spec  v1alpha1.NodeFirewallSpec
		chain bool
	}{{without, false}, {with, true}, {without, false}, {with, true}} {
		rs, err := compile.Compile(step.spec, compile.Options{SetLookups: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Apply(rs); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		mustInSync(t, p, rs, true)
		listed := listTable(t, ns)
		if got := strings.Contains(listed, "chain prerouting"); got != step.chain {
			t.Errorf("step %d: prerouting chain listed: %v, want %v\n%s", i, got, step.chain, listed)
		}
		if got := strings.Contains(listed, "set prerouting-run-1-v4"); got != step.chain {
			t.Errorf("step %d: prerouting set listed: %v, want %v\n%s", i, got, step.chain, listed)
		}
		if step.chain && !strings.Contains(listed, "type filter hook prerouting priority dstnat - 10; policy accept;") {
			t.Errorf("step %d: prerouting chain not at dstnat - 10:\n%s", i, listed)
		}
	}
}
