package importer

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// TestUserChains takes user-defined chains in at their jumps.
func TestUserChains(t *testing.T) {
	const (
		tcp    = v1alpha1.ProtocolTCP
		udp    = v1alpha1.ProtocolUDP
		in     = v1alpha1.ChainInput
		fwd    = v1alpha1.ChainForward
		accept = v1alpha1.ActionAccept
		drop   = v1alpha1.ActionDrop
		reject = v1alpha1.ActionReject
	)
	tests := []struct {
		name     string
		input    string
		want     []v1alpha1.Rule
		warnings []int // lines warned about, the implicit accepts' aside
		summary  Summary
	}{
		{
			name: "conditions of the jump and of each rule combined",
			input: `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:SERVICES - [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i eth0 -s 192.168.0.0/16 -j SERVICES
-A INPUT -p icmp -j ACCEPT
-A FORWARD -o eth1 -p tcp -j SERVICES
-A SERVICES -p tcp -m multiport --dports 22,80:90 -j ACCEPT
-A SERVICES -p udp --dport 53 -s 192.168.1.0/24,10.0.0.0/8 -j ACCEPT
-A SERVICES -i eth+ -p tcp --dport 81 -j REJECT --reject-with tcp-reset
COMMIT
`,
			want: []v1alpha1.Rule{
				{Name: "input-related-established", Chain: in, Action: accept, States: []v1alpha1.ConnState{v1alpha1.ConnStateRelated, v1alpha1.ConnStateEstablished}},
				{Name: "input-tcp-22-80-90-in-eth0-from-192-168-0-0-16", Chain: in, Action: accept, Protocol: tcp, Ports: ports(22, 0, 80, 90), InInterface: "eth0", Sources: []string{"192.168.0.0/16"}},
				{Name: "input-udp-53-in-eth0-from-192-168-1-0-24", Chain: in, Action: accept, Protocol: udp, Ports: ports(53, 0), InInterface: "eth0", Sources: []string{"192.168.1.0/24"}},
				{Name: "input-tcp-81-in-eth0-from-192-168-0-0-16-reject", Chain: in, Action: reject, Protocol: tcp, Ports: ports(81, 0), InInterface: "eth0",
					Sources: []string{"192.168.0.0/16"}, RejectWith: v1alpha1.RejectWithTCPReset},
				{Name: "input-icmp", Chain: in, Action: accept, Protocol: v1alpha1.ProtocolICMP},
				{Name: "forward-tcp-22-80-90-out-eth1", Chain: fwd, Action: accept, Protocol: tcp, Ports: ports(22, 0, 80, 90), OutInterface: "eth1"},
				// The UDP rule meets no TCP packet of the jump.
				{Name: "forward-tcp-81-in-eth-out-eth1-reject", Chain: fwd, Action: reject, Protocol: tcp, Ports: ports(81, 0), InInterface: "eth+",
					OutInterface: "eth1", RejectWith: v1alpha1.RejectWithTCPReset},
			},
			summary: Summary{Rules: 7, Imported: 7, Differences: 1},
		},
		{
			// A RETURN that matches some packets sends them on after the
			// jump: what follows the jump is written for them first,
			// ending with the chain's policy.
			name: "conditional RETURN",
			input: `*filter
:INPUT DROP [0:0]
:TCPCHAIN - [0:0]
-A INPUT -p tcp -j TCPCHAIN
-A INPUT -p tcp --dport 22 -j ACCEPT
-A TCPCHAIN -s 10.0.0.0/8 -j RETURN
-A TCPCHAIN -p tcp --dport 80 -j ACCEPT
-A TCPCHAIN -j DROP
COMMIT
`,
			want: []v1alpha1.Rule{
				{Name: "input-tcp-22-from-10-0-0-0-8", Chain: in, Action: accept, Protocol: tcp, Ports: ports(22, 0), Sources: []string{"10.0.0.0/8"}},
				{Name: "input-tcp-from-10-0-0-0-8-drop", Chain: in, Action: drop, Protocol: tcp, Sources: []string{"10.0.0.0/8"}},
				{Name: "input-tcp-80", Chain: in, Action: accept, Protocol: tcp, Ports: ports(80, 0)},
				{Name: "input-tcp-drop", Chain: in, Action: drop, Protocol: tcp},
				{Name: "input-tcp-22", Chain: in, Action: accept, Protocol: tcp, Ports: ports(22, 0)},
			},
			summary: Summary{Rules: 5, Imported: 5, Differences: 1},
		},
		{
			name: "unconditional RETURN ends the chain, nested chains, goto",
			input: `*filter
:INPUT ACCEPT [0:0]
:OUTER - [0:0]
:INNER - [0:0]
:GONE - [0:0]
-A INPUT -p udp -j OUTER
-A INPUT -p udp --dport 9 -j DROP
-A INPUT -p tcp -g GONE
-A INPUT -p tcp --dport 9 -j DROP
-A OUTER --dport 53 -p udp -j INNER
-A OUTER -j RETURN
-A OUTER -p udp -j DROP
-A INNER -s 10.0.0.0/8 -j ACCEPT
-A GONE --dport 22 -p tcp -j ACCEPT
COMMIT
`,
			want: []v1alpha1.Rule{
				{Name: "input-udp-53-from-10-0-0-0-8", Chain: in, Action: accept, Protocol: udp, Ports: ports(53, 0), Sources: []string{"10.0.0.0/8"}},
				{Name: "input-udp-9-drop", Chain: in, Action: drop, Protocol: udp, Ports: ports(9, 0)},
				{Name: "input-tcp-22", Chain: in, Action: accept, Protocol: tcp, Ports: ports(22, 0)},
				// What reaches GONE's end returns where INPUT would return
				// it: to INPUT's policy.
				{Name: "input-tcp", Chain: in, Action: accept, Protocol: tcp},
				{Name: "input-tcp-9-drop", Chain: in, Action: drop, Protocol: tcp, Ports: ports(9, 0)},
			},
			// The DROP after OUTER's RETURN is never reached.
			summary: Summary{Rules: 9, Imported: 8, Unused: 1, Differences: 1},
		},
		{
			name: "loops refused, untranslatable lines skipped one by one, unused chains reported",
			input: `*filter
:INPUT ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
:ORPHAN - [0:0]
-A INPUT -j A
-A A -p tcp --dport 1 -j ACCEPT
-A A -j B
-A A -m mac --mac-source 00:11:22:33:44:55 -j DROP
-A A -p tcp --dport 2 -j ACCEPT
-A B -p tcp --dport 3 -j ACCEPT
-A B -j A
-A ORPHAN -j DROP
COMMIT
`,
			want: []v1alpha1.Rule{
				{Name: "input-tcp-1", Chain: in, Action: accept, Protocol: tcp, Ports: ports(1, 0)},
				{Name: "input-tcp-3", Chain: in, Action: accept, Protocol: tcp, Ports: ports(3, 0)},
				{Name: "input-tcp-2", Chain: in, Action: accept, Protocol: tcp, Ports: ports(2, 0)},
			},
			warnings: []int{9, 12, 13},
			summary:  Summary{Rules: 8, Imported: 5, Skipped: 2, Unused: 1},
		},
		{
			name: "a chain taken in twice is reported once",
			input: `*filter
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:COMMON - [0:0]
-A INPUT -j COMMON
-A OUTPUT -j COMMON
-A COMMON -p tcp --dport 23 -m recent --set -j DROP
-A COMMON -p tcp --dport 24 -j DROP
COMMIT
`,
			want: []v1alpha1.Rule{
				{Name: "input-tcp-24-drop", Chain: in, Action: drop, Protocol: tcp, Ports: ports(24, 0)},
				{Name: "output-tcp-24-drop", Chain: v1alpha1.ChainOutput, Action: drop, Protocol: tcp, Ports: ports(24, 0)},
			},
			warnings: []int{7},
			summary:  Summary{Rules: 4, Imported: 3, Skipped: 1, Differences: 2},
		},
		{
			name: "LOG before the rule that decides",
			input: `*filter
:INPUT DROP [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp --dport 23 -m limit --limit 5/min -j LOG --log-prefix "telnet: " --log-level 4
-A INPUT -p tcp --dport 23 -j DROP
-A INPUT -j LOG --log-prefix "dropped: "
COMMIT
`,
			want: []v1alpha1.Rule{
				{Name: "input-related-established", Chain: in, Action: accept, States: []v1alpha1.ConnState{v1alpha1.ConnStateRelated, v1alpha1.ConnStateEstablished}},
				{Name: "input-tcp-23-drop", Chain: in, Action: drop, Protocol: tcp, Ports: ports(23, 0), Log: true, LogLabel: "telnet", LogRatePerMinute: 5},
			},
			// The last LOG of INPUT, which drops by default, logs the
			// default's drops: defaultActions.logDrops.
			warnings: []int{4, 6},
			summary:  Summary{Rules: 4, Imported: 4, Changed: 2},
		},
		{
			name: "LOG rates that are not a whole number a minute, and a LOG before a rule of its own",
			input: `*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 23 -m limit --limit 3/hour --limit-burst 7 -j LOG
-A INPUT -p tcp --dport 23 -j DROP
-A INPUT -p tcp --dport 24 -m limit --limit 2/sec -j LOG --log-prefix "[A VERY LONG PREFIX OF FORTY CHARACTERS!]"
-A INPUT -p tcp --dport 24 -j REJECT
-A INPUT -p tcp --dport 25 -j LOG
-A INPUT -p tcp --dport 26 -j DROP
COMMIT
`,
			want: []v1alpha1.Rule{
				{Name: "input-tcp-23-drop", Chain: in, Action: drop, Protocol: tcp, Ports: ports(23, 0), Log: true, LogBurst: 7},
				{Name: "input-tcp-24-reject", Chain: in, Action: reject, Protocol: tcp, Ports: ports(24, 0), Log: true,
					LogLabel: "a-very-long-prefix-of-forty-char", LogRatePerMinute: 120},
				{Name: "input-tcp-26-drop", Chain: in, Action: drop, Protocol: tcp, Ports: ports(26, 0)},
			},
			warnings: []int{3, 5, 7},
			summary:  Summary{Rules: 6, Imported: 5, Changed: 2, Skipped: 1, Differences: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Import(strings.NewReader(tc.input), Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, tc.input, res)
			if diff := cmp.Diff(tc.want, res.Policy.Spec.Rules); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
			var lines []int
			for _, w := range withoutImplicitAcceptWarnings(res.Warnings) {
				lines = append(lines, w.Line)
			}
			if diff := cmp.Diff(tc.warnings, lines); diff != "" {
				t.Errorf("warned lines (-want +got):\n%s\n%v", diff, res.Warnings)
			}
			if diff := cmp.Diff(tc.summary, res.Summary); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOwnedChainsThatAccept warns, naming the traffic, when a chain whose
// default is Drop jumps into a chain left to another component that
// accepts: nodefw's own Drop would drop it.
func TestOwnedChainsThatAccept(t *testing.T) {
	input := `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:KUBE-FORWARD - [0:0]
-A INPUT -j KUBE-FORWARD
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -j KUBE-FORWARD
-A DOCKER-USER -j RETURN
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A KUBE-FORWARD -s 10.244.0.0/16 -m comment --comment "kubernetes forwarding rules" -j ACCEPT
COMMIT
`
	res, err := Import(strings.NewReader(input), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range res.Warnings {
		if strings.Contains(w.Reason, "accepts traffic") {
			got = append(got, w.String())
		}
	}
	want := []string{
		"line 9: FORWARD drops by default and jumps to DOCKER, which is left to Docker and accepts traffic (line 12: -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT): nodefw's default Drop will drop that traffic unless a rule accepts it (-A FORWARD -o docker0 -j DOCKER)",
		`line 10: FORWARD drops by default and jumps to KUBE-FORWARD, which is left to Kubernetes (kube-proxy, kubelet) and accepts traffic (line 13: -A KUBE-FORWARD -s 10.244.0.0/16 -m comment --comment "kubernetes forwarding rules" -j ACCEPT): nodefw's default Drop will drop that traffic unless a rule accepts it (-A FORWARD -j KUBE-FORWARD)`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s\nall: %v", diff, res.Warnings)
	}
	// A third difference: FORWARD drops what nodefw accepts first.
	if res.Summary.Differences != 3 || res.Summary.Owned != 3 || res.Summary.Skipped != 7 {
		t.Errorf("summary %+v: want 3 differences, 7 skipped (3 lines of the chains, 4 jumps)", res.Summary)
	}
}

func TestSummaryString(t *testing.T) {
	for _, tt := range []struct {
		s    Summary
		want string
	}{
		{Summary{Rules: 10, Imported: 10}, "10 of 10 filter rules imported, 0 skipped"},
		{Summary{Rules: 40, Imported: 12, Skipped: 28, Owned: 25, Changed: 1, Unused: 0, Differences: 2},
			"12 of 40 filter rules imported, 28 skipped (25 in chains left to other components); 1 imported with a change, 2 other differences"},
		{Summary{Rules: 3, Imported: 1, Changed: 1, Skipped: 1, Unused: 1}, "1 of 3 filter rules imported, 1 skipped; 1 imported with a change, 1 never reached"},
		{Summary{Rules: 7, PreRouting: 3, Imported: 6, Skipped: 1}, "6 of 7 filter and PREROUTING rules imported, 1 skipped"},
	} {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.s, got, tt.want)
		}
	}
	if !(Summary{Rules: 2, Imported: 1, Unused: 1}).Exact() || (Summary{Changed: 1}).Exact() || (Summary{Differences: 1}).Exact() {
		t.Error("Exact")
	}
}
