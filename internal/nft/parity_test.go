package nft

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// paritySpec uses every feature of the API.
func paritySpec() v1alpha1.NodeFirewallSpec {
	rule := func(r v1alpha1.NodeFirewallRule) v1alpha1.NodeFirewallRule {
		if r.Policy == "" {
			r.Policy, r.Mode = "features", v1alpha1.PolicyModeEnforce
		}
		return r
	}
	return v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			rule(v1alpha1.NodeFirewallRule{
				Name: "ssh-from-admins", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
				Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 22}, {Port: 2222}, {Port: 8000, EndPort: 8100}},
				Sources:     []string{"192.0.2.0/24", "198.51.100.7", "10.1.0.0/22", "2001:db8:ad::/48"},
				InInterface: "eth+", States: []v1alpha1.ConnState{v1alpha1.ConnStateNew}, Log: true,
			}),
			rule(v1alpha1.NodeFirewallRule{Name: "ping", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMP}),
			rule(v1alpha1.NodeFirewallRule{Name: "ping6", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMPv6, InInterface: "+"}),
			rule(v1alpha1.NodeFirewallRule{Name: "no-invalid", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, States: []v1alpha1.ConnState{v1alpha1.ConnStateInvalid}}),
			rule(v1alpha1.NodeFirewallRule{
				Name: "vxlan", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolUDP,
				Ports: []v1alpha1.PortRange{{Port: 8472}}, Sources: []string{"10.0.0.0/8", "172.16.0.0/12"}, Destinations: []string{"10.0.0.1"},
			}),
			rule(v1alpha1.NodeFirewallRule{
				Name: "dns", Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionAccept,
				Protocol: v1alpha1.ProtocolUDP, Ports: []v1alpha1.PortRange{{Port: 53}},
				InInterface: "cni0", OutInterface: "eth0", Destinations: []string{"10.96.0.10", "fd00:10:96::a"},
			}),
			rule(v1alpha1.NodeFirewallRule{
				Name: "sctp", Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionReject,
				Protocol: v1alpha1.ProtocolSCTP, Ports: []v1alpha1.PortRange{{Port: 3868, EndPort: 3870}},
			}),
			rule(v1alpha1.NodeFirewallRule{
				Name: "no-smtp", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionReject,
				Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 25}, {Port: 465}, {Port: 587}}, OutInterface: "wg0", Log: true,
			}),
			rule(v1alpha1.NodeFirewallRule{
				Name: "nodeports-from-lan", Chain: v1alpha1.ChainPreRouting, Action: v1alpha1.ActionAccept,
				Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}},
				Sources: []string{"192.168.0.0/16", "fd00::/8"},
			}),
			rule(v1alpha1.NodeFirewallRule{
				Name: "nodeports-elsewhere", Chain: v1alpha1.ChainPreRouting, Action: v1alpha1.ActionReject,
				Protocol: v1alpha1.ProtocolUDP, Ports: []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}},
				InInterface: "eth0", States: []v1alpha1.ConnState{v1alpha1.ConnStateNew}, Log: true,
			}),
			rule(v1alpha1.NodeFirewallRule{
				Policy: "audit", Mode: v1alpha1.PolicyModeAudit,
				Name: "metadata", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionDrop,
				Destinations: []string{"169.254.169.254", "fd00:ec2::254", "fd00:ec2::/64"},
			}),
		},
		DefaultActions: v1alpha1.DefaultActions{
			PreRouting: v1alpha1.ChainPolicyDrop, Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyDrop, Output: v1alpha1.ChainPolicyDrop,
		},
		AuditedChains: []v1alpha1.Chain{v1alpha1.ChainOutput},
	}
}

// TestParityWithRender programs a compiled ruleset over netlink in one
// namespace and loads its rendered text with nft in another: the kernel
// must list both the same.
func TestParityWithRender(t *testing.T) {
	checkParity(t, paritySpec())
}

// checkParity compiles spec, programs it over netlink in one namespace
// and loads its rendered text with nft in another, and checks that the
// kernel lists both the same.
func checkParity(t *testing.T, spec v1alpha1.NodeFirewallSpec) {
	t.Helper()
	rs, err := compile.Compile(spec, compile.Options{
		SetLookups:       true,
		FailsafeInbound:  compile.DefaultFailsafeInbound(),
		FailsafeOutbound: compile.DefaultFailsafeOutbound(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ns, p := target(t)
	if _, err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	mustInSync(t, p, rs, true)

	ref := netnstest.NewNS(t, "nft-ref")
	file := filepath.Join(t.TempDir(), "ruleset.nft")
	if err := os.WriteFile(file, []byte(compile.Render(rs)), 0o644); err != nil {
		t.Fatal(err)
	}
	ref.MustExec("nft", "-f", file)

	got, want := listTable(t, ns), listTable(t, ref)
	if got != want {
		gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("line %d:\nnetlink: %s\nnft -f:  %s", i+1, g, w)
			}
		}
	}
	// nft's own encoding is not ours: a table loaded from the rendered
	// text is never taken for in sync.
	q, err := New(ref.Path(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	mustInSync(t, q, rs, false)
}
