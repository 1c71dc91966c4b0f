package policytest

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
)

// webPolicies are two policies: "web" on nodes labelled role=web opens
// tcp/443 and drops the rest of Input; "lockdown", evaluated first on
// every node, rejects tcp/8080 and drops tcp/22, which a failsafe shadows.
func webPolicies() []v1alpha1.NodeFirewallPolicy {
	return []v1alpha1.NodeFirewallPolicy{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: v1alpha1.NodeFirewallPolicySpec{
				NodeSelector:   metav1.LabelSelector{MatchLabels: map[string]string{"role": "web"}},
				Priority:       100,
				Mode:           v1alpha1.PolicyModeEnforce,
				DefaultActions: &v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop},
				Rules: []v1alpha1.Rule{
					{Name: "https", Chain: v1alpha1.ChainInput, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 443}}, Action: v1alpha1.ActionAccept},
				},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "lockdown"},
			Spec: v1alpha1.NodeFirewallPolicySpec{
				Priority: 10,
				Mode:     v1alpha1.PolicyModeEnforce,
				Rules: []v1alpha1.Rule{
					{Name: "no-alt-http", Chain: v1alpha1.ChainInput, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 8080}}, Action: v1alpha1.ActionReject},
					{Name: "no-ssh", Chain: v1alpha1.ChainInput, Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 22}}, Action: v1alpha1.ActionDrop},
				},
			},
		},
	}
}

const webTests = `
nodes:
  - metadata: {name: web-1, labels: {role: web}}
  - metadata: {name: db-1, labels: {role: db}}
cases:
  - name: https on web
    node: web-1
    packet: {proto: tcp, from: 192.0.2.1, to: "10.0.0.1:443"}
    verdict: Accept
    decidedBy: web/https
  - name: https on db
    node: db-1
    packet: {proto: tcp, from: 192.0.2.1, to: "10.0.0.2:443"}
    verdict: accept
    decidedBy: default
  - name: alt http on a labelled node
    nodeLabels: {role: web}
    packet: {proto: tcp, from: 192.0.2.1, to: "10.0.0.3:8080"}
    verdict: reject
    decidedBy: lockdown/no-alt-http
  - name: ssh, wrongly expected dropped by the rule
    node: web-1
    packet: {proto: tcp, from: 192.0.2.1, to: "10.0.0.1:22"}
    verdict: Drop
    decidedBy: lockdown/no-ssh
  - name: udp on web, wrongly expected accepted by the https rule
    node: web-1
    packet: {proto: udp, from: 192.0.2.1, to: "10.0.0.1:443"}
    verdict: Accept
    decidedBy: web/https
`

func TestRun(t *testing.T) {
	f, err := ParseFile([]byte(webTests))
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		Node, DecidedBy string
		Pass            bool
		Failures        []string
	}
	summarise := func(results []Result) []outcome {
		var out []outcome
		for _, r := range results {
			out = append(out, outcome{r.Trace.Node, r.Trace.DecidedBy, r.Pass, r.Failures})
		}
		return out
	}
	shadow := resolve.Problem{
		Policy: "lockdown", Reason: v1alpha1.ReasonFailsafeShadowed,
		Message: "spec.rules[1] (no-ssh) would drop failsafe port(s) tcp:22, which nodes accept before any rule",
	}
	tests := []struct {
		name         string
		overrides    Overrides
		want         []outcome
		wantProblems []resolve.Problem
	}{
		{
			name: "the agents' default failsafes",
			want: []outcome{
				{"web-1", "web/https", true, nil},
				{"db-1", "default", true, nil},
				{"node", "lockdown/no-alt-http", true, nil},
				{"web-1", "failsafe", false, []string{"verdict accept, want drop", "decided by failsafe, want lockdown/no-ssh"}},
				{"web-1", "default", false, []string{"verdict drop, want accept", "decided by default, want web/https"}},
			},
			wantProblems: []resolve.Problem{shadow},
		},
		{
			name:      "no inbound failsafes",
			overrides: Overrides{FailsafeInbound: "none"},
			want: []outcome{
				{"web-1", "web/https", true, nil},
				{"db-1", "default", true, nil},
				{"node", "lockdown/no-alt-http", true, nil},
				{"web-1", "lockdown/no-ssh", true, nil},
				{"web-1", "default", false, []string{"verdict drop, want accept", "decided by default, want web/https"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			results, problems, err := Run(f, webPolicies(), tt.overrides)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, summarise(results)); diff != "" {
				t.Errorf("results (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantProblems, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunFileFailsafes(t *testing.T) {
	f, err := ParseFile([]byte("failsafeInbound: tcp:2222\n" + webTests))
	if err != nil {
		t.Fatal(err)
	}
	results, _, err := Run(f, webPolicies(), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if r := results[3]; !r.Pass {
		t.Errorf("with the file's failsafe tcp:2222, ssh should be dropped by the rule: %v", r.Failures)
	}
	if _, _, err := Run(f, webPolicies(), Overrides{FailsafeOutbound: "tcp:x"}); err == nil || !strings.Contains(err.Error(), "--failsafe-outbound") {
		t.Errorf("a bad override: error %v, want one naming --failsafe-outbound", err)
	}
}

func TestParseFileErrors(t *testing.T) {
	packet := `{proto: tcp, from: 10.0.0.1, to: "10.0.0.2:80"}`
	tests := []struct {
		name, file string
		want       []string
	}{
		{"unknown key", "cases:\n  - {name: a, nodeLabels: {}, packet: " + packet + ", verdict: Accept, decided: x}\n", []string{`unknown field "decided"`}},
		{"no cases", "nodes: []\n", []string{"cases: the file has none"}},
		{"bad failsafes", "failsafeInbound: ssh\ncases:\n  - {name: a, nodeLabels: {}, packet: " + packet + ", verdict: Accept}\n", []string{"failsafeInbound: failsafe \"ssh\""}},
		{
			"nodes",
			"nodes:\n  - metadata: {labels: {a: b}}\n  - metadata: {name: node-a}\n  - metadata: {name: node-a}\ncases:\n  - {name: a, node: node-a, packet: " + packet + ", verdict: Accept}\n",
			[]string{"nodes[0]: metadata.name is required", `nodes[2]: a second node named "node-a"`},
		},
		{
			"cases",
			"nodes:\n  - metadata: {name: node-a}\ncases:\n" +
				"  - {node: node-a, packet: " + packet + ", verdict: Accept}\n" +
				"  - {name: b, packet: " + packet + ", verdict: Accept}\n" +
				"  - {name: b, node: node-a, nodeLabels: {}, packet: " + packet + ", verdict: Accept}\n" +
				"  - {name: c, node: node-m, packet: " + packet + ", verdict: Accept}\n" +
				"  - {name: d, nodeLabels: {'a b': c}, packet: {proto: tcp, from: 10.0.0.1, to: 10.0.0.2}, verdict: Pass, decidedBy: a/b/c}\n",
			[]string{
				"cases[0] (): name is required",
				"cases[1] (b): set node (a node of nodes) or nodeLabels",
				"cases[2] (b): a second case of that name",
				"cases[2] (b): set node or nodeLabels, not both",
				`cases[3] (c): node "node-m" is not among the file's nodes`,
				"cases[4] (d): nodeLabels:",
				"cases[4] (d): packet: to: tcp needs a port",
				`cases[4] (d): verdict "Pass" is not Accept, Drop or Reject`,
				`cases[4] (d): decidedBy: "a/b/c" is not policy/rule, default, or an implicit accept (established, loopback, neighbour-discovery, failsafe)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFile([]byte(tt.file))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestCaseNodeNames: a case's own node never takes the name of a file's
// node, which the policies may also select.
func TestCaseNodeNames(t *testing.T) {
	f, err := ParseFile([]byte(`
nodes:
  - metadata: {name: node}
  - metadata: {name: node-2}
cases:
  - {name: a, nodeLabels: {role: web}, packet: {proto: tcp, from: 10.0.0.1, to: "10.0.0.2:443"}, verdict: Accept}
`))
	if err != nil {
		t.Fatal(err)
	}
	nodes, name := f.caseNode(f.Cases[0])
	if name != "node-3" || len(nodes) != 3 || nodes[2].Name != "node-3" || nodes[2].Labels["role"] != "web" {
		t.Errorf("caseNode = %q, %+v", name, nodes)
	}
	if len(f.Nodes) != 2 {
		t.Errorf("caseNode changed the file's nodes: %+v", f.Nodes)
	}
}
