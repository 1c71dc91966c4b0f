package reference

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// Implicit rules of every rendering without failsafes.
const (
	established = `-A %s -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "nodefw: established,related" -j ACCEPT` + "\n"
	loopbackIn  = `-A INPUT -i lo -m comment --comment "nodefw: loopback" -j ACCEPT` + "\n"
	loopbackOut = `-A OUTPUT -o lo -m comment --comment "nodefw: loopback" -j ACCEPT` + "\n"
)

func est(chain string) string { return fmt.Sprintf(established, chain) }

func nd(chain string) string {
	var b strings.Builder
	for _, t := range []int{133, 134, 135, 136, 137} {
		fmt.Fprintf(&b, `-A %s -p ipv6-icmp -m icmp6 --icmpv6-type %d -m comment --comment "nodefw: icmpv6 neighbour discovery" -j ACCEPT`+"\n", chain, t)
	}
	return b.String()
}

// file assembles a restore file: policies of INPUT, FORWARD and OUTPUT,
// then each chain's rules after its implicit ones.
func file(v6 bool, policies [3]string, input, forward, output string) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for i, c := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		fmt.Fprintf(&b, ":%s %s [0:0]\n", c, policies[i])
	}
	b.WriteString(est("INPUT") + loopbackIn)
	if v6 {
		b.WriteString(nd("INPUT"))
	}
	b.WriteString(input)
	b.WriteString(est("FORWARD"))
	b.WriteString(forward)
	b.WriteString(est("OUTPUT") + loopbackOut)
	if v6 {
		b.WriteString(nd("OUTPUT"))
	}
	b.WriteString(output)
	b.WriteString("COMMIT\n")
	return b.String()
}

var allAccept = [3]string{"ACCEPT", "ACCEPT", "ACCEPT"}

func rule(chain v1alpha1.Chain, name string, action v1alpha1.Action, f func(r *v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallRule {
	r := v1alpha1.NodeFirewallRule{Policy: "p", Mode: v1alpha1.PolicyModeEnforce, Name: name, Chain: chain, Action: action}
	if f != nil {
		f(&r)
	}
	return r
}

func TestIPTablesRestore(t *testing.T) {
	tests := []struct {
		name   string
		spec   v1alpha1.NodeFirewallSpec
		opts   compile.Options
		v4, v6 string
	}{
		{
			name: "empty",
			v4:   file(false, allAccept, "", "", ""),
			v6:   file(true, allAccept, "", "", ""),
		},
		{
			name: "default failsafes",
			opts: compile.Options{FailsafeInbound: compile.DefaultFailsafeInbound(), FailsafeOutbound: compile.DefaultFailsafeOutbound()},
			v4: file(false, allAccept,
				`-A INPUT -p tcp -m multiport --dports 22,2379:2380,6443,10250 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT
-A INPUT -p udp -m udp --dport 67:68 -m comment --comment "nodefw: failsafe udp" -j ACCEPT
`, "",
				`-A OUTPUT -p tcp -m multiport --dports 53,6443 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT
-A OUTPUT -p udp -m multiport --dports 53,67:68 -m comment --comment "nodefw: failsafe udp" -j ACCEPT
`),
			v6: file(true, allAccept,
				`-A INPUT -p tcp -m multiport --dports 22,2379:2380,6443,10250 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT
-A INPUT -p udp -m udp --dport 67:68 -m comment --comment "nodefw: failsafe udp" -j ACCEPT
`, "",
				`-A OUTPUT -p tcp -m multiport --dports 53,6443 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT
-A OUTPUT -p udp -m multiport --dports 53,67:68 -m comment --comment "nodefw: failsafe udp" -j ACCEPT
`),
		},
		{
			name: "sctp failsafe and merged ports",
			opts: compile.Options{FailsafeInbound: []compile.Failsafe{
				{Protocol: v1alpha1.ProtocolSCTP, Ports: compile.PortInterval{First: 3868, Last: 3868}},
				{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{First: 10, Last: 20}},
				{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{First: 21, Last: 21}},
			}},
			v4: file(false, allAccept,
				`-A INPUT -p tcp -m tcp --dport 10:21 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT
-A INPUT -p sctp -m sctp --dport 3868 -m comment --comment "nodefw: failsafe sctp" -j ACCEPT
`, "", ""),
			v6: file(true, allAccept,
				`-A INPUT -p tcp -m tcp --dport 10:21 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT
-A INPUT -p sctp -m sctp --dport 3868 -m comment --comment "nodefw: failsafe sctp" -j ACCEPT
`, "", ""),
		},
		{
			name: "failsafes restricted to addresses, by family",
			opts: compile.Options{FailsafeInbound: []compile.Failsafe{
				{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{First: 22, Last: 22}},
				{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{First: 2379, Last: 2380},
					Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("2001:db8::/64")}},
				{Protocol: v1alpha1.ProtocolUDP, Ports: compile.PortInterval{First: 4789, Last: 4789},
					Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Destinations: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
			}},
			v4: file(false, allAccept,
				`-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT
-A INPUT -p tcp -s 10.0.0.0/24 -m tcp --dport 2379:2380 -m comment --comment "nodefw: failsafe tcp by address" -j ACCEPT
-A INPUT -p udp -s 10.0.0.0/8 -d 10.0.0.1/32 -m udp --dport 4789 -m comment --comment "nodefw: failsafe udp by address" -j ACCEPT
`, "", ""),
			v6: file(true, allAccept,
				`-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT
-A INPUT -p tcp -s 2001:db8::/64 -m tcp --dport 2379:2380 -m comment --comment "nodefw: failsafe tcp by address" -j ACCEPT
`, "", ""),
		},
		{
			name: "ports, protocols and actions",
			spec: v1alpha1.NodeFirewallSpec{
				Rules: []v1alpha1.NodeFirewallRule{
					rule(v1alpha1.ChainInput, "vxlan", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
						r.Protocol = v1alpha1.ProtocolUDP
						r.Ports = []v1alpha1.PortRange{{Port: 8472}}
					}),
					rule(v1alpha1.ChainInput, "nodeports", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
						r.Protocol = v1alpha1.ProtocolTCP
						r.Ports = []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}}
					}),
					rule(v1alpha1.ChainInput, "web", v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) {
						r.Protocol = v1alpha1.ProtocolTCP
						r.Ports = []v1alpha1.PortRange{{Port: 443}, {Port: 80}, {Port: 8000, EndPort: 8080}, {Port: 8080, EndPort: 8090}}
					}),
					rule(v1alpha1.ChainForward, "all", v1alpha1.ActionReject, nil),
					rule(v1alpha1.ChainOutput, "ping", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
						r.Protocol = v1alpha1.ProtocolICMP
					}),
					rule(v1alpha1.ChainOutput, "ping6", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
						r.Protocol = v1alpha1.ProtocolICMPv6
					}),
				},
				DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyDrop},
			},
			v4: file(false, [3]string{"DROP", "ACCEPT", "DROP"},
				`-A INPUT -p udp -m udp --dport 8472 -m comment --comment "p/vxlan" -j ACCEPT
-A INPUT -p tcp -m tcp --dport 30000:32767 -m comment --comment "p/nodeports" -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443,8000:8090 -m comment --comment "p/web" -j DROP
`,
				`-A FORWARD -m comment --comment "p/all" -j REJECT --reject-with icmp-port-unreachable
`,
				`-A OUTPUT -p icmp -m comment --comment "p/ping" -j ACCEPT
`),
			v6: file(true, [3]string{"DROP", "ACCEPT", "DROP"},
				`-A INPUT -p udp -m udp --dport 8472 -m comment --comment "p/vxlan" -j ACCEPT
-A INPUT -p tcp -m tcp --dport 30000:32767 -m comment --comment "p/nodeports" -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443,8000:8090 -m comment --comment "p/web" -j DROP
`,
				`-A FORWARD -m comment --comment "p/all" -j REJECT --reject-with icmp6-port-unreachable
`,
				`-A OUTPUT -p ipv6-icmp -m comment --comment "p/ping6" -j ACCEPT
`),
		},
		{
			name: "addresses by family",
			spec: v1alpha1.NodeFirewallSpec{
				Rules: []v1alpha1.NodeFirewallRule{
					rule(v1alpha1.ChainForward, "mixed", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
						// Host bits masked, covered prefixes dropped, as the
						// agent's sets.
						r.Sources = []string{"10.1.2.3/8", "10.9.0.1", "2001:db8::/32", "192.0.2.7", "2001:db8:1::1"}
						r.Destinations = []string{"198.51.100.0/24", "fd00::1"}
					}),
					rule(v1alpha1.ChainForward, "v4-only", v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) {
						r.Destinations = []string{"203.0.113.0/24"}
					}),
					rule(v1alpha1.ChainForward, "no-family", v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) {
						// IPv4 sources, IPv6 destinations: nothing matches.
						r.Sources = []string{"10.0.0.0/8"}
						r.Destinations = []string{"fd00::/8"}
					}),
					rule(v1alpha1.ChainInput, "icmp-v6-addr", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
						// ICMP is IPv4 only: an IPv6 source leaves nothing.
						r.Protocol = v1alpha1.ProtocolICMP
						r.Sources = []string{"fd00::1"}
					}),
				},
			},
			v4: file(false, allAccept, "",
				`-A FORWARD -s 10.0.0.0/8 -d 198.51.100.0/24 -m comment --comment "p/mixed" -j ACCEPT
-A FORWARD -s 192.0.2.7/32 -d 198.51.100.0/24 -m comment --comment "p/mixed" -j ACCEPT
-A FORWARD -d 203.0.113.0/24 -m comment --comment "p/v4-only" -j DROP
`, ""),
			v6: file(true, allAccept, "",
				`-A FORWARD -s 2001:db8::/32 -d fd00::1/128 -m comment --comment "p/mixed" -j ACCEPT
`, ""),
		},
		{
			name: "interfaces, states, log and reject",
			spec: v1alpha1.NodeFirewallSpec{
				Rules: []v1alpha1.NodeFirewallRule{
					rule(v1alpha1.ChainInput, "ssh", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
						r.InInterface = "eth+"
						r.Protocol = v1alpha1.ProtocolTCP
						r.Ports = []v1alpha1.PortRange{{Port: 22}, {Port: 2222}}
						r.Sources = []string{"192.0.2.0/24", "198.51.100.7"}
						r.States = []v1alpha1.ConnState{v1alpha1.ConnStateNew}
						r.Log = true
					}),
					rule(v1alpha1.ChainForward, "dns", v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) {
						r.InInterface = "cni0"
						r.OutInterface = "+"
						r.Protocol = v1alpha1.ProtocolUDP
						r.Ports = []v1alpha1.PortRange{{Port: 53}}
						r.States = []v1alpha1.ConnState{v1alpha1.ConnStateEstablished, v1alpha1.ConnStateNew, v1alpha1.ConnStateInvalid, v1alpha1.ConnStateRelated}
					}),
					rule(v1alpha1.ChainOutput, "smtp", v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) {
						r.OutInterface = "wg0"
						r.Protocol = v1alpha1.ProtocolTCP
						r.Ports = []v1alpha1.PortRange{{Port: 25}}
						r.Log = true
					}),
				},
				DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop},
			},
			v4: file(false, [3]string{"DROP", "ACCEPT", "ACCEPT"},
				`-A INPUT -s 192.0.2.0/24 -i eth+ -p tcp -m multiport --dports 22,2222 -m conntrack --ctstate NEW -m limit --limit 10/min --limit-burst 5 -m comment --comment "p/ssh" -j LOG --log-prefix "nodefw p/ssh: "
-A INPUT -s 192.0.2.0/24 -i eth+ -p tcp -m multiport --dports 22,2222 -m conntrack --ctstate NEW -m comment --comment "p/ssh" -j ACCEPT
-A INPUT -s 198.51.100.7/32 -i eth+ -p tcp -m multiport --dports 22,2222 -m conntrack --ctstate NEW -m limit --limit 10/min --limit-burst 5 -m comment --comment "p/ssh" -j LOG --log-prefix "nodefw p/ssh: "
-A INPUT -s 198.51.100.7/32 -i eth+ -p tcp -m multiport --dports 22,2222 -m conntrack --ctstate NEW -m comment --comment "p/ssh" -j ACCEPT
`,
				`-A FORWARD -i cni0 -o + -p udp -m udp --dport 53 -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED -m comment --comment "p/dns" -j REJECT --reject-with icmp-port-unreachable
`,
				`-A OUTPUT -o wg0 -p tcp -m tcp --dport 25 -m limit --limit 10/min --limit-burst 5 -m comment --comment "p/smtp" -j LOG --log-prefix "nodefw p/smtp: "
-A OUTPUT -o wg0 -p tcp -m tcp --dport 25 -m comment --comment "p/smtp" -j REJECT --reject-with icmp-port-unreachable
`),
			v6: file(true, [3]string{"DROP", "ACCEPT", "ACCEPT"}, "",
				`-A FORWARD -i cni0 -o + -p udp -m udp --dport 53 -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED -m comment --comment "p/dns" -j REJECT --reject-with icmp6-port-unreachable
`,
				`-A OUTPUT -o wg0 -p tcp -m tcp --dport 25 -m limit --limit 10/min --limit-burst 5 -m comment --comment "p/smtp" -j LOG --log-prefix "nodefw p/smtp: "
-A OUTPUT -o wg0 -p tcp -m tcp --dport 25 -m comment --comment "p/smtp" -j REJECT --reject-with icmp6-port-unreachable
`),
		},
		{
			name: "audit mode and audited chain",
			spec: v1alpha1.NodeFirewallSpec{
				Rules: []v1alpha1.NodeFirewallRule{
					rule(v1alpha1.ChainOutput, "metadata", v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) {
						r.Policy = "strict-output"
						r.Mode = v1alpha1.PolicyModeAudit
						r.Destinations = []string{"169.254.169.254"}
						r.Log = true // Audit logs anyway: no second LOG rule.
					}),
					rule(v1alpha1.ChainOutput, "pods", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
						// Accept is enforced in Audit mode too.
						r.Policy = "strict-output"
						r.Mode = v1alpha1.PolicyModeAudit
						r.Destinations = []string{"10.244.0.0/16"}
					}),
					rule(v1alpha1.ChainInput, "drop-all", v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) {
						r.Mode = v1alpha1.PolicyModeAudit
					}),
				},
				DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyDrop, Output: v1alpha1.ChainPolicyDrop},
				AuditedChains:  []v1alpha1.Chain{v1alpha1.ChainOutput},
			},
			v4: file(false, [3]string{"DROP", "DROP", "ACCEPT"},
				`-A INPUT -m limit --limit 10/min --limit-burst 5 -m comment --comment "p/drop-all" -j LOG --log-prefix "nodefw-audit p/drop-all: "
`, "",
				`-A OUTPUT -d 169.254.169.254/32 -m limit --limit 10/min --limit-burst 5 -m comment --comment "strict-output/metadata" -j LOG --log-prefix "nodefw-audit strict-output/: "
-A OUTPUT -d 10.244.0.0/16 -m comment --comment "strict-output/pods" -j ACCEPT
-A OUTPUT -m limit --limit 10/min --limit-burst 5 -m comment --comment "nodefw: audit default-drop" -j LOG --log-prefix "nodefw-audit default-drop o: "
`),
			v6: file(true, [3]string{"DROP", "DROP", "ACCEPT"},
				`-A INPUT -m limit --limit 10/min --limit-burst 5 -m comment --comment "p/drop-all" -j LOG --log-prefix "nodefw-audit p/drop-all: "
`, "",
				`-A OUTPUT -m limit --limit 10/min --limit-burst 5 -m comment --comment "nodefw: audit default-drop" -j LOG --log-prefix "nodefw-audit default-drop o: "
`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v4, v6 := IPTablesRestore(tt.spec, tt.opts)
			if diff := cmp.Diff(tt.v4, v4); diff != "" {
				t.Errorf("v4 (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.v6, v6); diff != "" {
				t.Errorf("v6 (-want +got):\n%s", diff)
			}
		})
	}
}

// extensionsSpec uses every match and answer of iptables' extensions.
func extensionsSpec() v1alpha1.NodeFirewallSpec {
	return v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
		rule(v1alpha1.ChainInput, "dns-replies", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
			r.Protocol = v1alpha1.ProtocolUDP
			r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}, {Port: 5353}}
			r.Ports = []v1alpha1.PortRange{{Port: 1024, EndPort: 65535}}
		}),
		rule(v1alpha1.ChainInput, "ping", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
			r.Protocol = v1alpha1.ProtocolICMP
			r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "FragmentationNeeded", "8"}
			r.Limit = &v1alpha1.RateLimit{Rate: 5, Per: v1alpha1.RateUnitSecond}
		}),
		rule(v1alpha1.ChainInput, "ping6", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
			r.Protocol = v1alpha1.ProtocolICMPv6
			r.ICMPTypes = []v1alpha1.ICMPType{"PacketTooBig", "1/4"}
		}),
		rule(v1alpha1.ChainInput, "ssh", v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) {
			r.Protocol = v1alpha1.ProtocolTCP
			r.Ports = []v1alpha1.PortRange{{Port: 22}}
			r.ConnLimit = &v1alpha1.ConnLimit{Above: 3}
			r.Limit = &v1alpha1.RateLimit{Rate: 3, Per: v1alpha1.RateUnitMinute, Burst: 6, PerSource: true}
			r.RejectWith = v1alpha1.RejectWithTCPReset
		}),
		rule(v1alpha1.ChainForward, "gre", v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) {
			r.Protocol = v1alpha1.ProtocolGRE
			r.RejectWith = v1alpha1.RejectWithAdminProhibited
		}),
		rule(v1alpha1.ChainForward, "esp", v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) {
			r.Protocol = v1alpha1.ProtocolESP
			r.RejectWith = v1alpha1.RejectWithHostUnreachable
		}),
		rule(v1alpha1.ChainOutput, "sit", v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) {
			r.Protocol = "41"
			r.RejectWith = v1alpha1.RejectWithNetUnreachable
		}),
	}}
}

// TestRestoreExtensions checks the rendering of iptables' extensions: one
// rule per ICMP type, source ports as --sport, limits after the other
// matches, the connection limit first, and each answer in its family.
func TestRestoreExtensions(t *testing.T) {
	v4, v6 := IPTablesRestore(extensionsSpec(), compile.Options{})
	ssh := `-A INPUT -p tcp -m tcp --dport 22 -m connlimit --connlimit-above 3 --connlimit-mask %d --connlimit-saddr -m hashlimit --hashlimit-upto 3/minute --hashlimit-burst 6 --hashlimit-mode srcip --hashlimit-name nfw5ba039d2 --hashlimit-htable-expire 120000 -m comment --comment "p/ssh" -j REJECT --reject-with tcp-reset
`
	dns := `-A INPUT -p udp -m udp --dport 1024:65535 -m multiport --sports 53,5353 -m comment --comment "p/dns-replies" -j ACCEPT
`
	want4 := file(false, allAccept, dns+
		`-A INPUT -p icmp -m icmp --icmp-type 8 -m limit --limit 5/second --limit-burst 5 -m comment --comment "p/ping" -j ACCEPT
-A INPUT -p icmp -m icmp --icmp-type 3/4 -m limit --limit 5/second --limit-burst 5 -m comment --comment "p/ping" -j ACCEPT
`+fmt.Sprintf(ssh, 32),
		`-A FORWARD -p 47 -m comment --comment "p/gre" -j REJECT --reject-with icmp-admin-prohibited
-A FORWARD -p 50 -m comment --comment "p/esp" -j REJECT --reject-with icmp-host-unreachable
`,
		`-A OUTPUT -p 41 -m comment --comment "p/sit" -j REJECT --reject-with icmp-net-unreachable
`)
	want6 := file(true, allAccept, dns+
		`-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 2 -m comment --comment "p/ping6" -j ACCEPT
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 1/4 -m comment --comment "p/ping6" -j ACCEPT
`+fmt.Sprintf(ssh, 128),
		`-A FORWARD -p 47 -m comment --comment "p/gre" -j REJECT --reject-with icmp6-adm-prohibited
-A FORWARD -p 50 -m comment --comment "p/esp" -j REJECT --reject-with icmp6-addr-unreachable
`,
		`-A OUTPUT -p 41 -m comment --comment "p/sit" -j REJECT --reject-with icmp6-no-route
`)
	if diff := cmp.Diff(want4, v4); diff != "" {
		t.Errorf("v4 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want6, v6); diff != "" {
		t.Errorf("v6 (-want +got):\n%s", diff)
	}
}

// TestRestoreMultiportBlocks checks that more ports than one multiport
// match holds are split over several rules, ranges counting twice.
func TestRestoreMultiportBlocks(t *testing.T) {
	var ports []v1alpha1.PortRange
	for p := int32(1000); p < 1016; p += 2 { // 8 single ports
		ports = append(ports, v1alpha1.PortRange{Port: p})
	}
	for p := int32(2000); p < 2050; p += 10 { // 5 ranges
		ports = append(ports, v1alpha1.PortRange{Port: p, EndPort: p + 5})
	}
	spec := v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
		rule(v1alpha1.ChainForward, "many", v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) {
			r.Protocol = v1alpha1.ProtocolUDP
			r.Ports = ports
			r.Destinations = []string{"192.0.2.1", "192.0.2.2"}
		}),
	}}
	v4, _ := IPTablesRestore(spec, compile.Options{})
	want := file(false, allAccept, "",
		`-A FORWARD -d 192.0.2.1/32 -p udp -m multiport --dports 1000,1002,1004,1006,1008,1010,1012,1014,2000:2005,2010:2015,2020:2025 -m comment --comment "p/many" -j DROP
-A FORWARD -d 192.0.2.1/32 -p udp -m multiport --dports 2030:2035,2040:2045 -m comment --comment "p/many" -j DROP
-A FORWARD -d 192.0.2.2/32 -p udp -m multiport --dports 1000,1002,1004,1006,1008,1010,1012,1014,2000:2005,2010:2015,2020:2025 -m comment --comment "p/many" -j DROP
-A FORWARD -d 192.0.2.2/32 -p udp -m multiport --dports 2030:2035,2040:2045 -m comment --comment "p/many" -j DROP
`, "")
	if diff := cmp.Diff(want, v4); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLogPrefix(t *testing.T) {
	tests := []struct{ head, name, want string }{
		{"nodefw ", "p/r", "nodefw p/r: "},
		{"nodefw ", "control-plane/kube-apiserver", "nodefw control-plane/kube-a: "},
		{"nodefw-audit ", "default-drop input", "nodefw-audit default-drop i: "},
		{"nodefw ", "p/xäääääääää", "nodefw p/xääääääää: "},
		{"nodefw ", "p/ääääääääääää", "nodefw p/äääääääää: "},
	}
	for _, tt := range tests {
		got := logPrefix(tt.head, tt.name)
		if got != tt.want {
			t.Errorf("logPrefix(%q, %q) = %q, want %q", tt.head, tt.name, got, tt.want)
		}
		if len(got) > maxLogPrefix {
			t.Errorf("logPrefix(%q, %q) = %q: %d bytes, more than %d", tt.head, tt.name, got, len(got), maxLogPrefix)
		}
	}
}

// TestRestoreWritesThroughInvalid checks that values the renderer cannot
// parse reach the file, so that iptables-restore refuses it rather than
// loading a rule without them.
func TestRestoreWritesThroughInvalid(t *testing.T) {
	spec := v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{
		rule(v1alpha1.ChainInput, "bad", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
			r.Sources = []string{"10.0.0.300"}
		}),
	}}
	v4, v6 := IPTablesRestore(spec, compile.Options{})
	for _, f := range []string{v4, v6} {
		if !strings.Contains(f, "-s 10.0.0.300 ") {
			t.Errorf("invalid source not written through:\n%s", f)
		}
	}
}

// TestRestorePreRouting checks the mangle table of a spec that uses
// PreRouting: Input's implicit accepts, every rule and the default Drop
// guarded by addrtype LOCAL, and a Reject marked there and rejected first
// thing in INPUT and FORWARD.
func TestRestorePreRouting(t *testing.T) {
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			rule(v1alpha1.ChainPreRouting, "lan", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
				r.Protocol, r.Ports, r.Sources = v1alpha1.ProtocolTCP, []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}}, []string{"192.168.0.0/16"}
			}),
			rule(v1alpha1.ChainPreRouting, "others", v1alpha1.ActionReject, func(r *v1alpha1.NodeFirewallRule) {
				r.Protocol, r.Ports, r.InInterface = v1alpha1.ProtocolTCP, []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}}, "eth0"
			}),
		},
		DefaultActions: v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop},
	}
	opts := compile.Options{FailsafeInbound: []compile.Failsafe{{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{First: 22, Last: 22}}}}
	marked := func(chain, reject string) string {
		return `-A ` + chain + ` -m mark --mark 0x10000000/0x10000000 -m comment --comment "nodefw: rejected in prerouting" -j REJECT --reject-with ` + reject + "\n"
	}
	failsafe := func(chain string) string {
		return `-A ` + chain + ` -p tcp -m tcp --dport 22 -m comment --comment "nodefw: failsafe tcp" -j ACCEPT` + "\n"
	}
	mangle := func(v6 bool) string {
		var b strings.Builder
		b.WriteString("*mangle\n:PREROUTING ACCEPT [0:0]\n:NODEFW-REJECT - [0:0]\n")
		b.WriteString(est("PREROUTING"))
		b.WriteString(`-A PREROUTING -i lo -m comment --comment "nodefw: loopback" -j ACCEPT` + "\n")
		if v6 {
			b.WriteString(nd("PREROUTING"))
		}
		b.WriteString(failsafe("PREROUTING"))
		if !v6 {
			b.WriteString(`-A PREROUTING -m addrtype --dst-type LOCAL -s 192.168.0.0/16 -p tcp -m tcp --dport 30000:32767 -m comment --comment "p/lan" -j ACCEPT` + "\n")
		}
		b.WriteString(`-A PREROUTING -m addrtype --dst-type LOCAL -i eth0 -p tcp -m tcp --dport 30000:32767 -m comment --comment "p/others" -j NODEFW-REJECT` + "\n")
		b.WriteString(`-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "nodefw: default-drop" -j DROP` + "\n")
		b.WriteString("-A NODEFW-REJECT -j MARK --or-mark 0x10000000\n-A NODEFW-REJECT -j ACCEPT\nCOMMIT\n")
		return b.String()
	}
	// The filter table with the marked rejects ahead of INPUT and FORWARD.
	filter := func(v6 bool, reject string) string {
		f := file(v6, allAccept, "", "", "")
		f = strings.Replace(f, est("INPUT"), marked("INPUT", reject)+est("INPUT"), 1)
		return strings.Replace(f, est("FORWARD"), marked("FORWARD", reject)+est("FORWARD"), 1)
	}
	v4, v6 := IPTablesRestore(spec, opts)
	wantV4 := strings.Replace(filter(false, "icmp-port-unreachable"), loopbackIn, loopbackIn+failsafe("INPUT"), 1) + mangle(false)
	wantV6 := strings.Replace(filter(true, "icmp6-port-unreachable"), nd("INPUT"), nd("INPUT")+failsafe("INPUT"), 1) + mangle(true)
	if diff := cmp.Diff(wantV4, v4); diff != "" {
		t.Errorf("v4 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantV6, v6); diff != "" {
		t.Errorf("v6 (-want +got):\n%s", diff)
	}

	// Audited: the Reject and the default Drop only log; nothing is marked.
	for i := range spec.Rules {
		spec.Rules[i].Mode = v1alpha1.PolicyModeAudit
	}
	spec.AuditedChains = []v1alpha1.Chain{v1alpha1.ChainPreRouting}
	v4, _ = IPTablesRestore(spec, compile.Options{})
	for _, s := range []string{"MARK", "--mark", "-j DROP"} {
		if strings.Contains(v4, s) {
			t.Errorf("audited PreRouting writes %q:\n%s", s, v4)
		}
	}
	if !strings.Contains(v4, `-A PREROUTING -m addrtype --dst-type LOCAL -m limit --limit 10/min --limit-burst 5 -m comment --comment "nodefw: audit default-drop" -j LOG --log-prefix "nodefw-audit default-drop p: "`) {
		t.Errorf("audited default Drop does not log:\n%s", v4)
	}

	// Without PreRouting there is no mangle table.
	v4, _ = IPTablesRestore(v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyAccept}}, compile.Options{})
	if strings.Contains(v4, "*mangle") {
		t.Errorf("a spec without PreRouting writes a mangle table:\n%s", v4)
	}
}
