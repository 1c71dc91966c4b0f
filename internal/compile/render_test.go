package compile

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite golden files")

// policy gives rules the policy name and mode a resolver would stamp on them.
func policy(name string, mode v1alpha1.PolicyMode, rules ...v1alpha1.NodeFirewallRule) []v1alpha1.NodeFirewallRule {
	for i := range rules {
		rules[i].Policy, rules[i].Mode = name, mode
	}
	return rules
}

func tcpPort(name string, port, endPort int32) v1alpha1.NodeFirewallRule {
	return v1alpha1.NodeFirewallRule{
		Name: name, Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
		Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: port, EndPort: endPort}},
	}
}

func flannelVXLAN() v1alpha1.NodeFirewallRule {
	return v1alpha1.NodeFirewallRule{
		Name: "flannel-vxlan", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
		Protocol: v1alpha1.ProtocolUDP, Ports: []v1alpha1.PortRange{{Port: 8472}},
	}
}

func podCIDRForward() []v1alpha1.NodeFirewallRule {
	return []v1alpha1.NodeFirewallRule{
		{Name: "pod-cidr-from", Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionAccept, Sources: []string{"10.244.0.0/16"}},
		{Name: "pod-cidr-to", Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionAccept, Destinations: []string{"10.244.0.0/16"}},
	}
}

func controlPlaneRules() []v1alpha1.NodeFirewallRule {
	return policy("control-plane", v1alpha1.PolicyModeEnforce, append([]v1alpha1.NodeFirewallRule{
		flannelVXLAN(),
		tcpPort("kube-apiserver", 6443, 0),
		tcpPort("etcd", 2379, 2380),
		tcpPort("kubelet", 10250, 0),
		tcpPort("kube-scheduler", 10251, 0),
		tcpPort("kube-controller-manager", 10252, 0),
	}, podCIDRForward()...)...)
}

func workerRules() []v1alpha1.NodeFirewallRule {
	nodePorts := tcpPort("nodeports", 30000, 32767)
	nodePorts.Chain = v1alpha1.ChainPreRouting
	return policy("worker", v1alpha1.PolicyModeEnforce, append([]v1alpha1.NodeFirewallRule{
		flannelVXLAN(),
		tcpPort("kubelet", 10250, 0),
		nodePorts,
		tcpPort("nodeports-ipvs", 30000, 32767),
	}, podCIDRForward()...)...)
}

// nodePortsFromCIDRRules are the nodeports-from-cidr sample's rules.
func nodePortsFromCIDRRules() []v1alpha1.NodeFirewallRule {
	rule := func(name string, proto v1alpha1.Protocol, action v1alpha1.Action, sources ...string) v1alpha1.NodeFirewallRule {
		return v1alpha1.NodeFirewallRule{Name: name, Chain: v1alpha1.ChainPreRouting, Action: action, Protocol: proto,
			Ports: []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}}, Sources: sources}
	}
	return policy("nodeports-from-cidr", v1alpha1.PolicyModeEnforce,
		rule("tcp-from-clients", v1alpha1.ProtocolTCP, v1alpha1.ActionAccept, "192.168.0.0/16"),
		rule("udp-from-clients", v1alpha1.ProtocolUDP, v1alpha1.ActionAccept, "192.168.0.0/16"),
		rule("tcp-from-others", v1alpha1.ProtocolTCP, v1alpha1.ActionDrop),
		rule("udp-from-others", v1alpha1.ProtocolUDP, v1alpha1.ActionDrop),
	)
}

func strictOutputRules() []v1alpha1.NodeFirewallRule {
	return policy("strict-output", v1alpha1.PolicyModeAudit,
		v1alpha1.NodeFirewallRule{Name: "from-pod-cidr", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionAccept, Sources: []string{"10.244.0.0/16"}},
		v1alpha1.NodeFirewallRule{Name: "to-pod-cidr", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionAccept, Destinations: []string{"10.244.0.0/16"}},
		v1alpha1.NodeFirewallRule{Name: "to-control-plane", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionAccept, Destinations: []string{"192.168.0.10/32"}},
	)
}

// goldenSpecs are the resolved NodeFirewalls of the sample policies, as the
// controller would write them, plus one that uses every feature.
func goldenSpecs() map[string]v1alpha1.NodeFirewallSpec {
	accept, drop := v1alpha1.ChainPolicyAccept, v1alpha1.ChainPolicyDrop
	return map[string]v1alpha1.NodeFirewallSpec{
		"control-plane": {
			Rules:          controlPlaneRules(),
			DefaultActions: v1alpha1.DefaultActions{Input: drop, Forward: accept, Output: accept},
			Policies:       []v1alpha1.PolicyReference{{Name: "control-plane", Generation: 1}},
		},
		"worker": {
			Rules:          workerRules(),
			DefaultActions: v1alpha1.DefaultActions{Input: drop, Forward: accept, Output: accept},
			Policies:       []v1alpha1.PolicyReference{{Name: "worker", Generation: 1}},
		},
		"worker-strict-output": {
			Rules:          append(workerRules(), strictOutputRules()...),
			DefaultActions: v1alpha1.DefaultActions{Input: drop, Forward: accept, Output: drop},
			AuditedChains:  []v1alpha1.Chain{v1alpha1.ChainOutput},
			Policies: []v1alpha1.PolicyReference{
				{Name: "worker", Generation: 1},
				{Name: "strict-output", Generation: 1},
			},
		},
		// A worker with the nodeports-from-cidr sample (evaluated first), a
		// blocklist long enough to become a run of set lookups, a logged
		// Reject of new packets on one interface, and a Drop default.
		"prerouting": {
			Rules: slices.Concat(nodePortsFromCIDRRules(), policy("blocklist", v1alpha1.PolicyModeEnforce, func() []v1alpha1.NodeFirewallRule {
				var out []v1alpha1.NodeFirewallRule
				for i, src := range []string{"198.51.100.0/24", "203.0.113.7", "203.0.113.9", "203.0.113.64/26",
					"2001:db8:bad::/48", "192.0.2.1", "192.0.2.3", "2001:db8:bad:1::/64"} {
					out = append(out, v1alpha1.NodeFirewallRule{Name: fmt.Sprintf("block-%d", i), Chain: v1alpha1.ChainPreRouting,
						Action: v1alpha1.ActionDrop, Sources: []string{src}})
				}
				out = append(out, v1alpha1.NodeFirewallRule{Name: "no-new-from-wan", Chain: v1alpha1.ChainPreRouting, Action: v1alpha1.ActionReject,
					InInterface: "wan0", States: []v1alpha1.ConnState{v1alpha1.ConnStateNew}, Log: true})
				return out
			}()...), workerRules()),
			DefaultActions: v1alpha1.DefaultActions{PreRouting: drop, Input: drop, Forward: accept, Output: accept},
			Policies: []v1alpha1.PolicyReference{
				{Name: "nodeports-from-cidr", Generation: 1}, {Name: "blocklist", Generation: 1}, {Name: "worker", Generation: 1},
			},
		},
		"runs": {
			Rules: append(policy("allow", v1alpha1.PolicyModeEnforce,
				tcpPort("ssh", 22, 0), tcpPort("web", 80, 0), tcpPort("tls", 443, 0), tcpPort("alt", 8000, 8080),
				tcpPort("alt-overlap", 8080, 8443), flannelVXLAN(),
				v1alpha1.NodeFirewallRule{Name: "monitoring", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
					Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 9100}},
					Sources: []string{"10.0.0.0/8", "10.1.0.0/16", "fd00::/8"}},
				v1alpha1.NodeFirewallRule{Name: "admins", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
					Sources: []string{"192.0.2.0/25", "192.0.2.128/25", "2001:db8:ad::/48"}},
				v1alpha1.NodeFirewallRule{Name: "ping", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMP},
				v1alpha1.NodeFirewallRule{Name: "log-rest", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, Log: true},
			), policy("egress", v1alpha1.PolicyModeEnforce, func() []v1alpha1.NodeFirewallRule {
				var out []v1alpha1.NodeFirewallRule
				for i, d := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4",
					"198.51.100.0/24", "2001:db8:bad::/48", "203.0.113.5", "203.0.113.6"} {
					out = append(out, v1alpha1.NodeFirewallRule{Name: fmt.Sprintf("deny-%d", i), Chain: v1alpha1.ChainOutput,
						Action: v1alpha1.ActionReject, Destinations: []string{d}})
				}
				return out
			}()...)...),
			DefaultActions: v1alpha1.DefaultActions{Input: drop, Forward: drop, Output: accept},
		},
		"features": {
			Rules: append(policy("features", v1alpha1.PolicyModeEnforce,
				v1alpha1.NodeFirewallRule{
					Name: "ssh-from-admins", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
					Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 22}, {Port: 2222}},
					Sources:     []string{"192.0.2.0/24", "198.51.100.7", "2001:db8:ad::/48"},
					InInterface: "eth+", States: []v1alpha1.ConnState{v1alpha1.ConnStateNew}, Log: true,
				},
				v1alpha1.NodeFirewallRule{Name: "ping", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMP},
				v1alpha1.NodeFirewallRule{Name: "ping6", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMPv6, InInterface: "+"},
				v1alpha1.NodeFirewallRule{
					Name: "no-invalid", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop,
					States: []v1alpha1.ConnState{v1alpha1.ConnStateInvalid},
				},
				v1alpha1.NodeFirewallRule{
					Name: "dns", Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionAccept,
					Protocol: v1alpha1.ProtocolUDP, Ports: []v1alpha1.PortRange{{Port: 53}},
					InInterface: "cni0", OutInterface: "eth0", Destinations: []string{"10.96.0.10", "fd00:10:96::a"},
				},
				v1alpha1.NodeFirewallRule{
					Name: "sctp", Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionReject,
					Protocol: v1alpha1.ProtocolSCTP, Ports: []v1alpha1.PortRange{{Port: 3868, EndPort: 3870}},
				},
				v1alpha1.NodeFirewallRule{
					Name: "no-smtp", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionReject,
					Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 25}}, OutInterface: "wg0", Log: true,
				},
			), policy("audit", v1alpha1.PolicyModeAudit,
				v1alpha1.NodeFirewallRule{
					Name: "metadata", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionDrop,
					Destinations: []string{"169.254.169.254", "fd00:ec2::254"},
				},
			)...),
			DefaultActions: v1alpha1.DefaultActions{Input: drop, Forward: drop, Output: drop},
			AuditedChains:  []v1alpha1.Chain{v1alpha1.ChainOutput},
		},
		// Logging: a label and a rate of its own, the defaults, a logged
		// default Drop and an audited one, each named by its policy.
		"logs": {
			Rules: append(policy("hardening", v1alpha1.PolicyModeEnforce,
				v1alpha1.NodeFirewallRule{
					Name: "ssh-scan", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop,
					Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 22}}, Sources: []string{"198.51.100.0/24"},
					Log: true, LogLabel: "ssh-scan", LogRatePerMinute: 120, LogBurst: 20,
				},
				v1alpha1.NodeFirewallRule{Name: "telnet", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionReject,
					Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 23}}, Log: true},
				v1alpha1.NodeFirewallRule{Name: "web", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
					Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 443}}},
			), policy("egress-audit", v1alpha1.PolicyModeAudit,
				v1alpha1.NodeFirewallRule{Name: "smtp", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionDrop,
					Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 25}}},
			)...),
			DefaultActions: v1alpha1.DefaultActions{Input: drop, Forward: drop, Output: drop},
			AuditedChains:  []v1alpha1.Chain{v1alpha1.ChainOutput},
			Policies: []v1alpha1.PolicyReference{
				{Name: "hardening", Generation: 1, DefaultActions: &v1alpha1.DefaultActions{Input: drop, LogDrops: true}},
				{Name: "egress-audit", Generation: 1, Mode: v1alpha1.PolicyModeAudit, DefaultActions: &v1alpha1.DefaultActions{Forward: drop, Output: drop}},
			},
		},
		"matches": matchesSpec(),
	}
}

// matchesSpec uses every match and answer of iptables' extensions.
func matchesSpec() v1alpha1.NodeFirewallSpec {
	in, fwd, out := v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput
	accept, drop, reject := v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject
	r := func(name string, chain v1alpha1.Chain, action v1alpha1.Action, proto v1alpha1.Protocol, edit func(*v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallRule {
		rule := v1alpha1.NodeFirewallRule{Name: name, Chain: chain, Action: action, Protocol: proto}
		if edit != nil {
			edit(&rule)
		}
		return rule
	}
	rules := []v1alpha1.NodeFirewallRule{
		r("ssh-conns", in, reject, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
			r.Ports = []v1alpha1.PortRange{{Port: 22}}
			r.ConnLimit = &v1alpha1.ConnLimit{Above: 3}
			r.RejectWith, r.Log = v1alpha1.RejectWithTCPReset, true
		}),
		r("ssh", in, accept, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
			r.Ports = []v1alpha1.PortRange{{Port: 22}}
			r.Limit = &v1alpha1.RateLimit{Rate: 3, Per: v1alpha1.RateUnitMinute, PerSource: true}
		}),
		r("ping", in, accept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"}
			r.Limit = &v1alpha1.RateLimit{Rate: 5, Per: v1alpha1.RateUnitSecond, Burst: 10}
		}),
		r("icmp-errors", in, accept, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"TimeExceeded", "FragmentationNeeded", "3/13", "PortUnreachable", "3/2"}
		}),
		r("icmp-whole-types", in, drop, v1alpha1.ProtocolICMP, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"Redirect", "HostRedirect", "TimestampRequest"}
		}),
		r("ping6", in, accept, v1alpha1.ProtocolICMPv6, func(r *v1alpha1.NodeFirewallRule) {
			r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "PortUnreachable", "PacketTooBig"}
			r.Sources = []string{"2001:db8::/32"}
		}),
		r("ipsec-esp", in, accept, v1alpha1.ProtocolESP, nil),
		r("ipsec-ah", in, accept, v1alpha1.ProtocolAH, func(r *v1alpha1.NodeFirewallRule) { r.Sources = []string{"192.0.2.0/24"} }),
		r("vrrp", in, accept, v1alpha1.ProtocolVRRP, func(r *v1alpha1.NodeFirewallRule) { r.Destinations = []string{"224.0.0.18"} }),
		r("six-in-four", in, accept, "41", nil),
		r("dns-replies", in, accept, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}, {Port: 5353}}
			r.Ports = []v1alpha1.PortRange{{Port: 1024, EndPort: 65535}}
		}),
		r("ntp", in, accept, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 123}}
		}),
		r("conns-per-source", fwd, drop, "", func(r *v1alpha1.NodeFirewallRule) {
			r.ConnLimit = &v1alpha1.ConnLimit{Above: 100}
			r.Sources = []string{"10.0.0.0/8"}
		}),
		r("unreachable", fwd, reject, "", func(r *v1alpha1.NodeFirewallRule) {
			r.RejectWith = v1alpha1.RejectWithHostUnreachable
			r.Destinations = []string{"10.99.0.0/16"}
		}),
		r("no-route", fwd, reject, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.RejectWith = v1alpha1.RejectWithNetUnreachable
		}),
		r("port-unreachable", fwd, reject, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.RejectWith = v1alpha1.RejectWithPortUnreachable
			r.Ports = []v1alpha1.PortRange{{Port: 9}}
		}),
	}
	// A run of rejects with one answer, which becomes set lookups, then
	// one with another answer, which does not join it.
	for i := range 8 {
		rules = append(rules, r(fmt.Sprintf("deny-%d", i), out, reject, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
			r.Destinations = []string{fmt.Sprintf("203.0.113.%d", i+1)}
			r.RejectWith = v1alpha1.RejectWithAdminProhibited
		}))
	}
	rules = append(rules, r("deny-reset", out, reject, v1alpha1.ProtocolTCP, func(r *v1alpha1.NodeFirewallRule) {
		r.Destinations = []string{"203.0.113.100"}
		r.RejectWith = v1alpha1.RejectWithTCPReset
	}))
	audit := []v1alpha1.NodeFirewallRule{
		r("flood", in, drop, v1alpha1.ProtocolUDP, func(r *v1alpha1.NodeFirewallRule) {
			r.Limit = &v1alpha1.RateLimit{Rate: 100, Per: v1alpha1.RateUnitHour, Burst: 200, PerSource: true}
		}),
	}
	return v1alpha1.NodeFirewallSpec{
		Rules:          append(policy("matches", v1alpha1.PolicyModeEnforce, rules...), policy("audit", v1alpha1.PolicyModeAudit, audit...)...),
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}
}

func TestRenderGolden(t *testing.T) {
	for name, spec := range goldenSpecs() {
		t.Run(name, func(t *testing.T) {
			got := Render(mustCompile(t, spec))
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Render differs from %s (-want +got; -update rewrites it):\n%s", path, diff)
			}
			nftCheck(t, got)
		})
	}
}

func TestRenderRule(t *testing.T) {
	tests := []struct {
		rule Rule
		want string
	}{
		{Rule{Verdict: VerdictAccept}, "accept"},
		{Rule{Family: FamilyIPv4, Verdict: VerdictDrop}, "meta nfproto ipv4 drop"},
		{Rule{Family: FamilyIPv6, L4Proto: 58, Counter: true, Verdict: VerdictReject}, "meta nfproto ipv6 meta l4proto ipv6-icmp counter reject"},
		{Rule{Family: FamilyIPv6, L4Proto: 58, ICMPTypes: []uint8{1, 135}}, "icmpv6 type { 1, nd-neighbor-solicit }"},
		{Rule{Family: FamilyIPv4, L4Proto: 1, ICMPTypes: []uint8{8}}, "icmp type 8"},
		{Rule{L4Proto: 47}, "meta l4proto 47"},
		{
			Rule{IIfName: "eth+", OIfName: "+", Verdict: VerdictAccept},
			`iifname "eth*" accept`,
		},
		{
			Rule{Family: FamilyIPv4, SAddrs: prefixes("10.0.0.0/8", "192.0.2.1/32"), DAddrs: prefixes("192.0.2.0/24")},
			"ip saddr { 10.0.0.0/8, 192.0.2.1 } ip daddr 192.0.2.0/24",
		},
		{Rule{DAddrs: prefixes("::/0")}, "ip6 daddr ::/0"},
		{
			Rule{L4Proto: 6, DPorts: []PortInterval{ports(22, 22), ports(1000, 2000)}, CtStates: CtStateNew | CtStateInvalid | CtStateRelated | CtStateEstablished},
			"meta l4proto tcp th dport { 22, 1000-2000 } ct state invalid,established,related,new",
		},
		{
			Rule{Counter: true, Log: &Log{Prefix: "x: ", Group: 100, RatePerMinute: 10, Burst: 5}, Comment: "a/b"},
			`counter limit rate 10/minute burst 5 packets log prefix "x: " group 100 comment "a/b"`,
		},
		{Rule{Log: &Log{Prefix: "x"}}, `log prefix "x" group 0`},
		{Rule{Log: &Log{Prefix: "x", RatePerMinute: 1, Group: 7}}, `limit rate 1/minute log prefix "x" group 7`},
		{Rule{Comment: "say \"hi\"\n\\"}, `comment "say _hi___"`},
	}
	for _, tt := range tests {
		if got := renderRule(tt.rule, nil); got != tt.want {
			t.Errorf("renderRule(%+v)\n got %s\nwant %s", tt.rule, got, tt.want)
		}
	}
	// Every form above must also be something nft accepts.
	rs := &Ruleset{Table: "nodefw", Chains: []Chain{{Name: "input", Hook: HookInput, Priority: ChainPriority}}}
	for _, tt := range tests {
		rs.Chains[0].Rules = append(rs.Chains[0].Rules, tt.rule)
	}
	nftCheck(t, Render(rs))
}

func TestRenderEmptyRuleset(t *testing.T) {
	want := "table inet nodefw\ndelete table inet nodefw\n\ntable inet nodefw {\n}\n"
	if got := Render(&Ruleset{}); got != want {
		t.Errorf("Render(empty) = %q, want %q", got, want)
	}
}

// nftCheck has nft parse and check the rendered text without committing it
// (`nft -c` needs CAP_NET_ADMIN). A root run without nft fails: that is how
// CI runs, and it must check.
func nftCheck(t *testing.T, text string) {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nft", "/sbin/nft"} {
			if _, statErr := os.Stat(p); statErr == nil {
				nft, err = p, nil
				break
			}
		}
	}
	switch {
	case err != nil && os.Getuid() == 0:
		t.Fatalf("nft not found: install nftables so the rendered ruleset can be checked with nft -c")
	case err != nil:
		t.Logf("nft not found; rendered ruleset not checked")
		return
	case os.Getuid() != 0:
		t.Logf("not root; nft -c needs CAP_NET_ADMIN, rendered ruleset not checked")
		return
	}
	cmd := exec.Command(nft, "-c", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("nft -c -f - rejected the ruleset: %v\n%s\nruleset:\n%s", err, out, numbered(text))
	}
}

func numbered(text string) string {
	var b strings.Builder
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fmt.Fprintf(&b, "%4d  %s\n", i+1, line)
	}
	return b.String()
}
