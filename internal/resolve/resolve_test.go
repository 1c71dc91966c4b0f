package resolve

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

const controlPlaneLabel = "node-role.kubernetes.io/control-plane"

func node(name string, lbls map[string]string) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
}

func policy(name string, prio int32, sel metav1.LabelSelector, mutate ...func(*fwv1.NodeFirewallPolicy)) fwv1.NodeFirewallPolicy {
	p := fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: sel, Priority: &prio, Mode: fwv1.PolicyModeEnforce},
	}
	for _, m := range mutate {
		m(&p)
	}
	return p
}

func withRules(rules ...fwv1.Rule) func(*fwv1.NodeFirewallPolicy) {
	return func(p *fwv1.NodeFirewallPolicy) { p.Spec.Rules = rules }
}

func withDefaults(d fwv1.DefaultActions) func(*fwv1.NodeFirewallPolicy) {
	return func(p *fwv1.NodeFirewallPolicy) { p.Spec.DefaultActions = &d }
}

func withMode(m fwv1.PolicyMode) func(*fwv1.NodeFirewallPolicy) {
	return func(p *fwv1.NodeFirewallPolicy) { p.Spec.Mode = m }
}

func tcp(name string, port int32) fwv1.Rule {
	return fwv1.Rule{Name: name, Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: port}}}
}

func resolved(policy string, r fwv1.Rule) fwv1.NodeFirewallRule {
	return r.NodeRule(policy, fwv1.PolicyModeEnforce)
}

// ref is a reference as the resolver writes it: mode "" is Enforce.
func ref(name string, mode fwv1.PolicyMode, d *fwv1.DefaultActions) fwv1.PolicyReference {
	return fwv1.PolicyReference{Name: name, Generation: 1, Mode: mode, DefaultActions: d}
}

var (
	allAccept = fwv1.DefaultActions{PreRouting: fwv1.ChainPolicyAccept, Input: fwv1.ChainPolicyAccept, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept}
	cpSel     = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: controlPlaneLabel, Operator: metav1.LabelSelectorOpExists}}}
	workerSel = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: controlPlaneLabel, Operator: metav1.LabelSelectorOpDoesNotExist}}}
)

func TestResolve(t *testing.T) {
	apiserver, etcd, kubelet := tcp("kube-apiserver", 6443), tcp("etcd", 2379), tcp("kubelet", 10250)
	dropSSH := fwv1.Rule{Name: "no-ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 22}}}
	dropAll := fwv1.Rule{Name: "all-out", Chain: fwv1.ChainOutput, Action: fwv1.ActionReject}
	etcd.Ports = []fwv1.PortRange{{Port: 2379, EndPort: 2380}}
	nodes := []corev1.Node{
		node("cp-1", map[string]string{controlPlaneLabel: ""}),
		node("worker-1", map[string]string{"zone": "a"}),
		node("worker-2", nil),
	}
	tests := []struct {
		name      string
		policies  []fwv1.NodeFirewallPolicy
		nodes     []corev1.Node
		failsafes Failsafes
		want      Result
	}{{
		name:  "no policies: every node gets an accept-all spec",
		nodes: nodes,
		want: Result{
			Nodes:   map[string]fwv1.NodeFirewallSpec{"cp-1": {DefaultActions: allAccept}, "worker-1": {DefaultActions: allAccept}, "worker-2": {DefaultActions: allAccept}},
			Matches: map[string][]string{},
		},
	}, {
		name: "matchExpressions split control plane and workers",
		policies: []fwv1.NodeFirewallPolicy{
			policy("cp", 100, cpSel, withRules(apiserver, etcd), withDefaults(fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop})),
			policy("worker", 100, workerSel, withRules(kubelet)),
		},
		nodes: nodes,
		want: Result{
			Nodes: map[string]fwv1.NodeFirewallSpec{
				"cp-1": {
					Rules:          []fwv1.NodeFirewallRule{resolved("cp", apiserver), resolved("cp", etcd)},
					DefaultActions: fwv1.DefaultActions{PreRouting: fwv1.ChainPolicyAccept, Input: fwv1.ChainPolicyDrop, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept},
					Policies:       []fwv1.PolicyReference{ref("cp", "", &fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop})},
				},
				"worker-1": {Rules: []fwv1.NodeFirewallRule{resolved("worker", kubelet)}, DefaultActions: allAccept, Policies: []fwv1.PolicyReference{ref("worker", "", nil)}},
				"worker-2": {Rules: []fwv1.NodeFirewallRule{resolved("worker", kubelet)}, DefaultActions: allAccept, Policies: []fwv1.PolicyReference{ref("worker", "", nil)}},
			},
			Matches: map[string][]string{"cp": {"cp-1"}, "worker": {"worker-1", "worker-2"}},
		},
	}, {
		name: "priority orders rules, ties broken by name, and a default Drop wins over an Accept with the conflict reported to both",
		policies: []fwv1.NodeFirewallPolicy{
			policy("b-late", 500, metav1.LabelSelector{}, withRules(kubelet), withDefaults(fwv1.DefaultActions{Input: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyDrop})),
			policy("a-tie", 10, metav1.LabelSelector{}, withRules(etcd)),
			policy("z-first", 10, metav1.LabelSelector{MatchLabels: map[string]string{"zone": "a"}}, withRules(apiserver), withDefaults(fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop})),
		},
		nodes: nodes[1:2],
		want: Result{
			Nodes: map[string]fwv1.NodeFirewallSpec{
				"worker-1": {
					Rules:          []fwv1.NodeFirewallRule{resolved("a-tie", etcd), resolved("z-first", apiserver), resolved("b-late", kubelet)},
					DefaultActions: fwv1.DefaultActions{PreRouting: fwv1.ChainPolicyAccept, Input: fwv1.ChainPolicyDrop, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyDrop},
					Policies: []fwv1.PolicyReference{ref("a-tie", "", nil), ref("z-first", "", &fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}),
						ref("b-late", "", &fwv1.DefaultActions{Input: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyDrop})},
				},
			},
			Matches: map[string][]string{"a-tie": {"worker-1"}, "b-late": {"worker-1"}, "z-first": {"worker-1"}},
			Problems: []Problem{{
				Policy: "b-late", Reason: fwv1.ReasonDefaultActionOverridden,
				Message: `spec.defaultActions.input=Accept is overridden by policy "z-first", which sets Drop: the more restrictive default wins, on 1 node(s): worker-1`,
			}, {
				Policy: "z-first", Reason: fwv1.ReasonDefaultActionConflict,
				Message: `spec.defaultActions.input=Drop overrides policy "b-late", which sets Accept: the more restrictive default wins, on 1 node(s): worker-1`,
			}},
		},
	}, {
		name: "an audit policy's default drop marks the chain audited",
		policies: []fwv1.NodeFirewallPolicy{
			policy("audit", 1, metav1.LabelSelector{}, withMode(fwv1.PolicyModeAudit), withDefaults(fwv1.DefaultActions{Output: fwv1.ChainPolicyDrop}), withRules(kubelet)),
		},
		nodes: nodes[2:],
		want: Result{
			Nodes: map[string]fwv1.NodeFirewallSpec{
				"worker-2": {
					Rules:          []fwv1.NodeFirewallRule{func() fwv1.NodeFirewallRule { r := resolved("audit", kubelet); r.Mode = fwv1.PolicyModeAudit; return r }()},
					DefaultActions: fwv1.DefaultActions{PreRouting: fwv1.ChainPolicyAccept, Input: fwv1.ChainPolicyAccept, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyDrop},
					AuditedChains:  []fwv1.Chain{fwv1.ChainOutput},
					Policies:       []fwv1.PolicyReference{ref("audit", fwv1.PolicyModeAudit, &fwv1.DefaultActions{Output: fwv1.ChainPolicyDrop})},
				},
			},
			Matches: map[string][]string{"audit": {"worker-2"}},
		},
	}, {
		name: "an invalid selector selects nothing and is reported",
		policies: []fwv1.NodeFirewallPolicy{
			policy("bad", 1, metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn}}}, withRules(kubelet)),
		},
		nodes: nodes[1:2],
		want: Result{
			Nodes:   map[string]fwv1.NodeFirewallSpec{"worker-1": {DefaultActions: allAccept}},
			Matches: map[string][]string{"bad": {}},
			Problems: []Problem{{
				Policy: "bad", Reason: fwv1.ReasonInvalidSelector,
				Message: "spec.nodeSelector: values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
			}},
		},
	}, {
		name: "a policy that matches nothing has an empty match list",
		policies: []fwv1.NodeFirewallPolicy{
			policy("nothing", 1, metav1.LabelSelector{MatchLabels: map[string]string{"gpu": "true"}}, withRules(kubelet)),
		},
		nodes: nodes[1:2],
		want: Result{
			Nodes:   map[string]fwv1.NodeFirewallSpec{"worker-1": {DefaultActions: allAccept}},
			Matches: map[string][]string{"nothing": {}},
		},
	}, {
		name: "failsafe shadows are reported with the other problems, by policy and reason, each policy's in rule order",
		policies: []fwv1.NodeFirewallPolicy{
			policy("first", 1, metav1.LabelSelector{}, withDefaults(fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop})),
			policy("second", 2, metav1.LabelSelector{}, withDefaults(fwv1.DefaultActions{Input: fwv1.ChainPolicyAccept}),
				withRules(tcp("a", 1), tcp("b", 2), dropSSH, tcp("c", 3), tcp("d", 4), tcp("e", 5), tcp("f", 6), tcp("g", 7), tcp("h", 8), tcp("i", 9), dropAll)),
			policy("bad", 3, metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn}}}, withRules(dropSSH)),
		},
		nodes:     nodes[1:2],
		failsafes: Failsafes{Inbound: compile.DefaultFailsafeInbound(), Outbound: compile.DefaultFailsafeOutbound()},
		want: Result{
			Nodes: map[string]fwv1.NodeFirewallSpec{
				"worker-1": {
					Rules: []fwv1.NodeFirewallRule{resolved("second", tcp("a", 1)), resolved("second", tcp("b", 2)), resolved("second", dropSSH),
						resolved("second", tcp("c", 3)), resolved("second", tcp("d", 4)), resolved("second", tcp("e", 5)), resolved("second", tcp("f", 6)),
						resolved("second", tcp("g", 7)), resolved("second", tcp("h", 8)), resolved("second", tcp("i", 9)), resolved("second", dropAll)},
					DefaultActions: fwv1.DefaultActions{PreRouting: fwv1.ChainPolicyAccept, Input: fwv1.ChainPolicyDrop, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept},
					Policies: []fwv1.PolicyReference{ref("first", "", &fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}),
						ref("second", "", &fwv1.DefaultActions{Input: fwv1.ChainPolicyAccept})},
				},
			},
			Matches: map[string][]string{"bad": {}, "first": {"worker-1"}, "second": {"worker-1"}},
			Problems: []Problem{{
				Policy: "bad", Reason: fwv1.ReasonFailsafeShadowed,
				Message: "spec.rules[0] (no-ssh) would drop failsafe port(s) tcp:22, which nodes accept before any rule",
			}, {
				Policy: "bad", Reason: fwv1.ReasonInvalidSelector,
				Message: "spec.nodeSelector: values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
			}, {
				Policy: "first", Reason: fwv1.ReasonDefaultActionConflict,
				Message: `spec.defaultActions.input=Drop overrides policy "second", which sets Accept: the more restrictive default wins, on 1 node(s): worker-1`,
			}, {
				Policy: "second", Reason: fwv1.ReasonDefaultActionOverridden,
				Message: `spec.defaultActions.input=Accept is overridden by policy "first", which sets Drop: the more restrictive default wins, on 1 node(s): worker-1`,
			}, {
				Policy: "second", Reason: fwv1.ReasonFailsafeShadowed,
				Message: "spec.rules[2] (no-ssh) would drop failsafe port(s) tcp:22, which nodes accept before any rule",
			}, {
				Policy: "second", Reason: fwv1.ReasonFailsafeShadowed,
				Message: "spec.rules[10] (all-out) would reject failsafe port(s) udp:53, tcp:53, tcp:6443, udp:67-68, which nodes accept before any rule",
			}},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Resolve(Input{Policies: tc.policies, Nodes: tc.nodes, Failsafes: tc.failsafes})
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Resolve() mismatch (-want +got):\n%s", diff)
			}
			// Deterministic: the same input in reverse order gives the same result.
			rev := make([]fwv1.NodeFirewallPolicy, len(tc.policies))
			for i := range tc.policies {
				rev[len(rev)-1-i] = tc.policies[i]
			}
			if diff := cmp.Diff(got, Resolve(Input{Policies: rev, Nodes: tc.nodes, Failsafes: tc.failsafes})); diff != "" {
				t.Errorf("Resolve() depends on input order (-first +reversed):\n%s", diff)
			}
		})
	}
}

// TestResolvePreRoutingDefault: defaultActions.preRouting resolves as the
// other chains' do, an audit policy's Drop marks the chain audited, and a
// conflict names the field as users write it.
func TestResolvePreRoutingDefault(t *testing.T) {
	node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"zone": "a"}}}
	got := Resolve(Input{
		Policies: []fwv1.NodeFirewallPolicy{
			policy("first", 1, metav1.LabelSelector{}, withMode(fwv1.PolicyModeAudit), withDefaults(fwv1.DefaultActions{PreRouting: fwv1.ChainPolicyDrop})),
			policy("second", 2, metav1.LabelSelector{}, withDefaults(fwv1.DefaultActions{PreRouting: fwv1.ChainPolicyAccept})),
		},
		Nodes: []corev1.Node{node},
	})
	spec := got.Nodes["n"]
	if spec.DefaultActions.PreRouting != fwv1.ChainPolicyDrop || !slices.Equal(spec.AuditedChains, []fwv1.Chain{fwv1.ChainPreRouting}) {
		t.Errorf("default actions %+v, audited %v; want preRouting Drop, audited", spec.DefaultActions, spec.AuditedChains)
	}
	want := []Problem{{
		Policy: "first", Reason: fwv1.ReasonDefaultActionConflict,
		Message: `spec.defaultActions.preRouting=Drop overrides policy "second", which sets Accept: the more restrictive default wins, on 1 node(s): n`,
	}, {
		Policy: "second", Reason: fwv1.ReasonDefaultActionOverridden,
		Message: `spec.defaultActions.preRouting=Accept is overridden by policy "first", which sets Drop: the more restrictive default wins, on 1 node(s): n`,
	}}
	if diff := cmp.Diff(want, got.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}
