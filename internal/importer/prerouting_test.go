package importer

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// savedPreRouting is iptables-save output restricting NodePorts before
// kube-proxy's DNAT, in mangle, with kube-proxy's own mangle chain beside
// it, a raw rule and a nat table that is not imported.
const savedPreRouting = `*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -s 203.0.113.0/24 -j DROP
-A OUTPUT -p udp --dport 53 -j CT --notrack
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
-A PREROUTING -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PREROUTING -s 192.168.0.0/16 -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30000:32767 -m comment --comment "nodeports from the LAN" -j ACCEPT
-A PREROUTING -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30000:32767 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
COMMIT
*filter
:INPUT DROP [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p udp -m udp --dport 8472 -j ACCEPT
COMMIT
`

func TestImportPreRouting(t *testing.T) {
	const (
		pre = v1alpha1.ChainPreRouting
		tcp = v1alpha1.ProtocolTCP
	)
	established := []v1alpha1.ConnState{v1alpha1.ConnStateRelated, v1alpha1.ConnStateEstablished}
	tests := []struct {
		name     string
		input    string
		rules    []v1alpha1.Rule
		defaults *v1alpha1.DefaultActions
		warnings []Warning
		summary  Summary
	}{
		{
			name:  "iptables-save with raw, mangle and nat",
			input: savedPreRouting,
			rules: []v1alpha1.Rule{
				{Name: "prerouting-from-203-0-113-0-24-drop", Chain: pre, Action: v1alpha1.ActionDrop, Sources: []string{"203.0.113.0/24"}},
				{Name: "prerouting-related-established", Chain: pre, Action: v1alpha1.ActionAccept, States: established},
				{Name: "nodeports-from-the-lan", Chain: pre, Action: v1alpha1.ActionAccept, Protocol: tcp, Ports: ports(30000, 32767), Sources: []string{"192.168.0.0/16"}},
				{Name: "prerouting-tcp-30000-32767-drop", Chain: pre, Action: v1alpha1.ActionDrop, Protocol: tcp, Ports: ports(30000, 32767)},
				{Name: "input-related-established", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, States: established},
				{Name: "input-udp-8472", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolUDP, Ports: ports(8472, 0)},
			},
			defaults: &v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyAccept, Input: v1alpha1.ChainPolicyDrop},
			warnings: []Warning{
				{Line: 4, Text: "-A PREROUTING -m addrtype --dst-type LOCAL -s 203.0.113.0/24 -j DROP",
					Reason: "PREROUTING drops without first accepting ESTABLISHED,RELATED: nodefw accepts established and related connections, loopback, ICMPv6 neighbour discovery and the failsafe ports before any rule, so some traffic dropped here will pass"},
				{Line: 5, Text: "-A OUTPUT -p udp --dport 53 -j CT --notrack",
					Reason: "chain OUTPUT of table raw is not imported: " + importedChains},
				{Line: 13, Text: ":KUBE-IPTABLES-HINT - [0:0]", Reason: "chain KUBE-IPTABLES-HINT belongs to Kubernetes (kube-proxy, kubelet): skipped"},
				{Line: 14, Text: "-A PREROUTING -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
					Reason: "the PREROUTING rules of raw and of mangle are imported into the one PreRouting chain, raw's first: a packet a raw rule accepts no longer meets mangle's rules"},
				{Line: 18, Text: "*nat", Reason: "table nat skipped: " + importedChains},
			},
			// raw's OUTPUT and the nat table are reported, not counted.
			summary: Summary{Rules: 6, PreRouting: 4, Imported: 6, Differences: 2},
		},
		{
			name: "commands with -t, an unguarded drop and a DROP policy",
			input: `iptables -t mangle -P PREROUTING DROP
iptables -t mangle -A PREROUTING -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -t mangle -A PREROUTING -p udp --dport 30000:32767 -j DROP
iptables -t mangle -I PREROUTING 2 -p tcp --dport 22 -j ACCEPT
`,
			rules: []v1alpha1.Rule{
				{Name: "prerouting-established-related", Chain: pre, Action: v1alpha1.ActionAccept, States: []v1alpha1.ConnState{v1alpha1.ConnStateEstablished, v1alpha1.ConnStateRelated}},
				{Name: "prerouting-tcp-22", Chain: pre, Action: v1alpha1.ActionAccept, Protocol: tcp, Ports: ports(22, 0)},
				{Name: "prerouting-udp-30000-32767-drop", Chain: pre, Action: v1alpha1.ActionDrop, Protocol: v1alpha1.ProtocolUDP, Ports: ports(30000, 32767)},
			},
			defaults: &v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop},
			warnings: []Warning{
				{Line: 1, Text: "iptables -t mangle -P PREROUTING DROP",
					Reason: "PREROUTING's DROP policy is imported as defaultActions.preRouting: Drop, which drops only packets addressed to the node: the forwarded packets it dropped pass (a Forward Drop sees them after DNAT)"},
				{Line: 3, Text: "iptables -t mangle -A PREROUTING -p udp --dport 30000:32767 -j DROP",
					Reason: "imported into PreRouting, which sees only packets addressed to the node: the forwarded packets this rule drops pass (match them in Forward, which sees them after DNAT; -m addrtype --dst-type LOCAL says the same as PreRouting)"},
			},
			summary: Summary{Rules: 3, PreRouting: 3, Imported: 3, Changed: 1, Differences: 1},
		},
		{
			name: "the not-local accept is nodefw's own, and a DROP policy after it stays exact",
			input: `*mangle
:PREROUTING DROP [0:0]
-A PREROUTING -m addrtype ! --dst-type LOCAL -j ACCEPT
-A PREROUTING -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A PREROUTING -p tcp -m tcp --dport 30080 -j ACCEPT
COMMIT
`,
			rules: []v1alpha1.Rule{
				{Name: "prerouting-related-established", Chain: pre, Action: v1alpha1.ActionAccept, States: established},
				{Name: "prerouting-tcp-30080", Chain: pre, Action: v1alpha1.ActionAccept, Protocol: tcp, Ports: ports(30080, 0)},
			},
			defaults: &v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop},
			warnings: []Warning{
				{Line: 3, Text: "-A PREROUTING -m addrtype ! --dst-type LOCAL -j ACCEPT",
					Reason: "not imported as a rule: nodefw's PreRouting chain lets packets not addressed to the node go before any rule"},
			},
			// The not-local accept is exact without a rule.
			summary: Summary{Rules: 3, PreRouting: 3, Imported: 3},
		},
		{
			name: "a RETURN of raw goes on to mangle, a not-local accept covers its own table, a LOG is taken in",
			input: `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -m addrtype ! --dst-type LOCAL -j ACCEPT
-A PREROUTING -s 10.0.0.0/8 -j RETURN
-A PREROUTING -p tcp -m tcp --dport 22 -j DROP
COMMIT
*mangle
:PREROUTING DROP [0:0]
-A PREROUTING -p tcp -m tcp --dport 80 -j LOG --log-prefix "web: "
-A PREROUTING -p tcp -m tcp --dport 80 -j DROP
-A PREROUTING -j MYCHAIN
-A PREROUTING -p tcp -m addrtype --dst-type LOCAL -j ACCEPT
COMMIT
`,
			rules: []v1alpha1.Rule{
				// What raw returns meets mangle's rules, then the policy.
				{Name: "prerouting-tcp-80-from-10-0-0-0-8-drop", Chain: pre, Action: v1alpha1.ActionDrop, Protocol: tcp, Ports: ports(80, 0), Sources: []string{"10.0.0.0/8"}, Log: true, LogLabel: "web"},
				{Name: "prerouting-tcp-from-10-0-0-0-8", Chain: pre, Action: v1alpha1.ActionAccept, Protocol: tcp, Sources: []string{"10.0.0.0/8"}},
				{Name: "prerouting-from-10-0-0-0-8-drop", Chain: pre, Action: v1alpha1.ActionDrop, Sources: []string{"10.0.0.0/8"}},
				{Name: "prerouting-tcp-22-drop", Chain: pre, Action: v1alpha1.ActionDrop, Protocol: tcp, Ports: ports(22, 0)},
				{Name: "prerouting-tcp-80-drop", Chain: pre, Action: v1alpha1.ActionDrop, Protocol: tcp, Ports: ports(80, 0), Log: true, LogLabel: "web"},
				{Name: "prerouting-tcp", Chain: pre, Action: v1alpha1.ActionAccept, Protocol: tcp},
			},
			defaults: &v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop},
			warnings: []Warning{
				{Line: 3, Text: "-A PREROUTING -m addrtype ! --dst-type LOCAL -j ACCEPT",
					Reason: "not imported as a rule: nodefw's PreRouting chain lets packets not addressed to the node go before any rule"},
				{Line: 8, Text: ":PREROUTING DROP [0:0]",
					Reason: "PREROUTING drops without first accepting ESTABLISHED,RELATED: nodefw accepts established and related connections, loopback, ICMPv6 neighbour discovery and the failsafe ports before any rule, so some traffic dropped here will pass"},
				// raw's ACCEPT sent the forwarded packets on to mangle.
				{Line: 8, Text: ":PREROUTING DROP [0:0]",
					Reason: "PREROUTING's DROP policy is imported as defaultActions.preRouting: Drop, which drops only packets addressed to the node: the forwarded packets it dropped pass (a Forward Drop sees them after DNAT)"},
				{Line: 9, Text: `-A PREROUTING -p tcp -m tcp --dport 80 -j LOG --log-prefix "web: "`,
					Reason: `LOG imported as log: true on the rule of line 10: the agent writes a JSON line per packet, with the prefix as logLabel "web", and no rate limit of its own: nodefw's is 10 a minute`},
				{Line: 10, Text: "-A PREROUTING -p tcp -m tcp --dport 80 -j DROP",
					Reason: "imported into PreRouting, which sees only packets addressed to the node: the forwarded packets this rule drops pass (match them in Forward, which sees them after DNAT; -m addrtype --dst-type LOCAL says the same as PreRouting)"},
				{Line: 10, Text: "-A PREROUTING -p tcp -m tcp --dport 80 -j DROP",
					Reason: "the PREROUTING rules of raw and of mangle are imported into the one PreRouting chain, raw's first: a packet a raw rule accepts no longer meets mangle's rules"},
				{Line: 11, Text: "-A PREROUTING -j MYCHAIN",
					Reason: "jump to user-defined chain MYCHAIN of table mangle is not imported: " + importedChains},
			},
			// Line 5's DROP comes after raw's not-local accept: exact.
			summary: Summary{Rules: 7, PreRouting: 7, Imported: 6, Changed: 2, Skipped: 1, Differences: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Import(strings.NewReader(tt.input), Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, tt.input, res)
			if diff := cmp.Diff(tt.rules, res.Policy.Spec.Rules); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.defaults, res.Policy.Spec.DefaultActions); diff != "" {
				t.Errorf("default actions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.warnings, res.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.summary, res.Summary); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
			checkSkippedLines(t, res)
		})
	}
}

// TestImportPreRoutingUnsupported: what PREROUTING cannot carry is
// reported on its line and not imported.
func TestImportPreRoutingUnsupported(t *testing.T) {
	for _, tc := range []struct{ text, reason string }{
		{"iptables -t raw -A PREROUTING -m conntrack --ctstate NEW -j DROP", "conntrack states in the raw table"},
		{"iptables -t mangle -A PREROUTING -p tcp --dport 22 -j REJECT", "REJECT in table mangle is refused by iptables"},
		{"iptables -t mangle -A PREROUTING -o eth0 -j DROP", "-o is not allowed on PREROUTING"},
		{"iptables -t mangle -A PREROUTING -m addrtype --dst-type BROADCAST -j DROP", "addrtype --dst-type BROADCAST is not supported: only LOCAL"},
		{"iptables -t mangle -A PREROUTING -m addrtype --src-type LOCAL -j DROP", "addrtype --src-type is not supported"},
		{"iptables -t mangle -A PREROUTING -m addrtype --dst-type LOCAL --limit-iface-in -j DROP", "addrtype --limit-iface-in is not supported"},
		{"iptables -t mangle -A PREROUTING -m addrtype -j DROP", "-m addrtype without --dst-type LOCAL"},
		{"iptables -t mangle -A PREROUTING -m addrtype ! --dst-type LOCAL -p tcp -j ACCEPT", "supported only alone with -j ACCEPT"},
		{"iptables -t mangle -A PREROUTING --dst-type LOCAL -j DROP", "--dst-type needs -m addrtype"},
		{"iptables -A INPUT -m addrtype --dst-type LOCAL -j DROP", "only as --dst-type LOCAL, in PREROUTING"},
		{"iptables -t mangle -A PREROUTING -j MARK --set-mark 1", "target MARK is not supported"},
		{"iptables -t mangle -A POSTROUTING -j DROP", "chain POSTROUTING of table mangle is not imported"},
		{"iptables -t mangle -A MY-CHAIN -j DROP", "rule in user-defined chain MY-CHAIN of table mangle not imported"},
		{"iptables -t mangle -N MY-CHAIN", "user-defined chain MY-CHAIN of table mangle is not imported"},
		{"iptables -t mangle -P FORWARD DROP", "policy DROP of chain FORWARD of table mangle is not imported"},
		{"iptables -t security -A INPUT -j DROP", "table security skipped"},
		{"iptables -A PREROUTING -j DROP", "chain PREROUTING is not a filter table chain"},
		{"iptables -t mangle -A PREROUTING -m addrtype ! --dst-type LOCAL -j RETURN", "supported only alone with -j ACCEPT"},
		{"iptables -t mangle -A PREROUTING -j MY-CHAIN", "jump to user-defined chain MY-CHAIN of table mangle is not imported"},
		{"iptables -t raw -A PREROUTING -j OUTPUT", "jump to built-in chain OUTPUT"},
		{"iptables -t raw -F OUTPUT", "flush of chain OUTPUT of table raw not imported"},
		{"iptables -t raw -P PREROUTING QUEUE", "chain policy QUEUE is not supported"},
		{"iptables -N MY-CHAIN\niptables -A MY-CHAIN -m addrtype --dst-type LOCAL -j DROP\niptables -A INPUT -j MY-CHAIN", "only as --dst-type LOCAL, in PREROUTING"},
	} {
		res, err := Import(strings.NewReader(tc.text+"\n"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, tc.text, res)
		if len(res.Policy.Spec.Rules) != 0 {
			t.Errorf("%q: imported %+v", tc.text, res.Policy.Spec.Rules)
		}
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].Reason, tc.reason) {
			t.Errorf("%q: warnings %v, want one containing %q", tc.text, res.Warnings, tc.reason)
		}
	}
}

// TestImportPreRoutingFlush: -F flushes only its own table's chains.
func TestImportPreRoutingFlush(t *testing.T) {
	input := `iptables -t mangle -A PREROUTING -p tcp --dport 1 -j ACCEPT
iptables -A INPUT -p tcp --dport 2 -j ACCEPT
iptables -t mangle -F
iptables -t raw -A PREROUTING -p tcp --dport 3 -j ACCEPT
iptables -t mangle -A PREROUTING -p tcp --dport 4 -j ACCEPT
iptables -t raw -F PREROUTING
`
	res, err := Import(strings.NewReader(input), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res.Policy.Spec.Rules {
		got = append(got, r.Name)
	}
	if diff := cmp.Diff([]string{"prerouting-tcp-4", "input-tcp-2"}, got); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	// The lines flushed no longer count.
	if want := (Summary{Rules: 2, PreRouting: 1, Imported: 2}); res.Summary != want {
		t.Errorf("summary %+v, want %+v", res.Summary, want)
	}
}

// TestImportPreRoutingLogBeforeRefused: a LOG is not said to be taken in
// by a rule PREROUTING refuses.
func TestImportPreRoutingLogBeforeRefused(t *testing.T) {
	input := `iptables -t mangle -A PREROUTING -p tcp --dport 22 -j LOG --log-prefix "ssh: "
iptables -t mangle -A PREROUTING -p tcp --dport 22 -j REJECT
`
	res, err := Import(strings.NewReader(input), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Warning{
		{Line: 1, Text: `iptables -t mangle -A PREROUTING -p tcp --dport 22 -j LOG --log-prefix "ssh: "`,
			Reason: "LOG is imported only right before a rule that matches the same packets and accepts, drops or rejects them: set log: true on the rule that decides"},
		{Line: 2, Text: "iptables -t mangle -A PREROUTING -p tcp --dport 22 -j REJECT",
			Reason: "REJECT in table mangle is refused by iptables: it is allowed only in the filter table"},
	}
	if diff := cmp.Diff(want, res.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	if want := (Summary{Rules: 2, PreRouting: 2, Skipped: 2}); res.Summary != want {
		t.Errorf("summary %+v, want %+v", res.Summary, want)
	}
}
