package resolve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/revision"
)

// TestSharedRulesExpandToTheCopiedOnes: with a revision namespace, node
// specs name revisions and carry no rules, and expanded with those
// revisions they are the specs resolved with the rules copied.
func TestSharedRulesExpandToTheCopiedOnes(t *testing.T) {
	in := Input{
		Nodes: []corev1.Node{node("cp", map[string]string{controlPlaneLabel: ""}), node("w1", nil), node("w2", nil)},
		Policies: []fwv1.NodeFirewallPolicy{
			policy("base", 100, metav1.LabelSelector{}, withRules(tcp("ssh", 22)), withDefaults(fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop})),
			policy("cp", 200, cpSel, withRules(tcp("api", 6443), tcp("etcd", 2379))),
			policy("audit", 300, workerSel, withMode(fwv1.PolicyModeAudit), withRules(tcp("web", 443))),
			policy("empty", 400, metav1.LabelSelector{}),
		},
	}
	copied := Resolve(in)
	in.RevisionNamespace = "nodefw-system"
	shared := Resolve(in)

	rules := map[string][]fwv1.Rule{}
	var names []string
	for _, cr := range shared.Revisions {
		names = append(names, revision.Policy(cr))
		rs, err := revision.Rules(cr)
		if err != nil {
			t.Fatal(err)
		}
		rules[cr.Name] = rs
		if cr.Namespace != "nodefw-system" {
			t.Errorf("revision %s in namespace %q", cr.Name, cr.Namespace)
		}
	}
	if len(names) != 4 {
		t.Errorf("revisions of %v, want one of each of the 4 policies", names)
	}
	for node, spec := range shared.Nodes {
		if len(spec.Rules) > 0 {
			t.Errorf("node %s carries %d rules of its own", node, len(spec.Rules))
		}
		for _, ref := range spec.Policies {
			if !ref.Follow || ref.Revision != "" || ref.Generation != 0 {
				t.Errorf("node %s: policy reference %+v, want it followed", node, ref)
			}
		}
		pinned, err := revision.Pin(spec, shared.Current)
		if err != nil {
			t.Fatal(err)
		}
		got, err := revision.Expand(pinned, rules)
		if err != nil {
			t.Fatal(err)
		}
		// The references follow the current revisions; all else is as copied.
		want := copied.Nodes[node]
		for i := range got.Policies {
			got.Policies[i].Revision, got.Policies[i].Follow = "", false
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("node %s expanded (-copied +got):\n%s", node, d)
		}
	}
	if d := cmp.Diff(copied.Problems, shared.Problems); d != "" {
		t.Errorf("problems (-copied +shared):\n%s", d)
	}
}

// TestStagedRolloutKeepsTheOlderRevision: a node a rollout holds back
// keeps the revision of the generation it has, pinned from following it.
func TestStagedRolloutKeepsTheOlderRevision(t *testing.T) {
	const ns = "nodefw-system"
	gen1 := policy("web", 100, metav1.LabelSelector{}, withRules(tcp("web", 80)))
	nodes := []corev1.Node{node("n1", nil), node("n2", nil)}
	first := Resolve(Input{Policies: []fwv1.NodeFirewallPolicy{gen1}, Nodes: nodes, RevisionNamespace: ns})
	old := first.Revisions[0].Name

	// Both nodes follow web and applied generation 1, its revision marked
	// current.
	var current []fwv1.NodeFirewall
	for _, n := range []string{"n1", "n2"} {
		nfw := fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: n, Generation: 1}, Spec: first.Nodes[n]}
		nfw.Status.ObservedGeneration = 1
		nfw.Status.PolicyGenerations = map[string]int64{"web": 1}
		nfw.Status.Conditions = []metav1.Condition{{Type: fwv1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: 1}}
		current = append(current, nfw)
	}
	gen2 := *gen1.DeepCopy()
	gen2.Generation = 2
	gen2.Spec.Rules = []fwv1.Rule{tcp("web", 8080)}
	gen2.Spec.Rollout = &fwv1.RolloutStrategy{MaxUnavailable: 1}
	second := Resolve(Input{Policies: []fwv1.NodeFirewallPolicy{gen2}, Nodes: nodes, Current: current, RevisionNamespace: ns,
		CurrentRevisions: first.Current})
	latest := second.Revisions[0].Name
	if latest == old {
		t.Fatalf("generation 2 reuses revision %s of other rules", old)
	}
	got := map[string]fwv1.PolicyReference{}
	for n, spec := range second.Nodes {
		got[n] = spec.Policies[0]
	}
	want := map[string]fwv1.PolicyReference{
		"n1": {Name: "web", Generation: 2, Revision: latest},
		"n2": {Name: "web", Generation: 1, Revision: old},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("references (-want +got):\n%s", d)
	}
}
