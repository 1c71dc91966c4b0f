package resolve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// nfwAt is a node's current firewall holding generation gen of the "staged"
// policy with the given rule, in the given agent state.
func nfwAt(node string, gen int64, rule fwv1.Rule, state NodeState) fwv1.NodeFirewall {
	nfw := fwv1.NodeFirewall{
		ObjectMeta: metav1.ObjectMeta{Name: node, Generation: 5},
		Spec: fwv1.NodeFirewallSpec{
			Rules:    []fwv1.NodeFirewallRule{resolved("staged", rule)},
			Policies: []fwv1.PolicyReference{{Name: "staged", Generation: gen, Mode: fwv1.PolicyModeEnforce}},
		},
	}
	switch state {
	case StateApplied, StateFailed:
		s := metav1.ConditionTrue
		if state == StateFailed {
			s = metav1.ConditionFalse
		}
		nfw.Status.ObservedGeneration = 5
		nfw.Status.Conditions = []metav1.Condition{{Type: fwv1.ConditionReady, Status: s, ObservedGeneration: 5, Reason: "R"}}
	}
	return nfw
}

func TestStagedRollout(t *testing.T) {
	oldRule, newRule := tcp("old", 1111), tcp("new", 2222)
	p := policy("staged", 1, metav1.LabelSelector{}, withRules(newRule))
	p.Generation = 2
	p.Spec.Rollout = &fwv1.RolloutStrategy{MaxUnavailable: 1}
	nodes := []corev1.Node{node("a", nil), node("b", nil), node("c", nil)}

	tests := []struct {
		name         string
		current      []fwv1.NodeFirewall
		wantGen      map[string]int64
		wantProblems []Problem
	}{{
		name: "first node admitted, the others keep the old generation",
		current: []fwv1.NodeFirewall{
			nfwAt("a", 1, oldRule, StateApplied), nfwAt("b", 1, oldRule, StateApplied), nfwAt("c", 1, oldRule, StateApplied),
		},
		wantGen: map[string]int64{"a": 2, "b": 1, "c": 1},
	}, {
		name: "no second node while the first has not applied",
		current: []fwv1.NodeFirewall{
			nfwAt("a", 2, newRule, StatePending), nfwAt("b", 1, oldRule, StateApplied), nfwAt("c", 1, oldRule, StateApplied),
		},
		wantGen: map[string]int64{"a": 2, "b": 1, "c": 1},
	}, {
		name: "the next node once the first applied",
		current: []fwv1.NodeFirewall{
			nfwAt("a", 2, newRule, StateApplied), nfwAt("b", 1, oldRule, StateApplied), nfwAt("c", 1, oldRule, StateApplied),
		},
		wantGen: map[string]int64{"a": 2, "b": 2, "c": 1},
	}, {
		name: "a failure halts the rollout",
		current: []fwv1.NodeFirewall{
			nfwAt("a", 2, newRule, StateFailed), nfwAt("b", 1, oldRule, StateApplied), nfwAt("c", 1, oldRule, StateApplied),
		},
		wantGen: map[string]int64{"a": 2, "b": 1, "c": 1},
		wantProblems: []Problem{{Policy: "staged", Reason: fwv1.ReasonRolloutHalted,
			Message: "rollout of generation 2 halted: 1 node(s) failed or reverted it (a); 2 node(s) held on their previous generation"}},
	}, {
		name:    "a node that never had the policy is held without it",
		current: []fwv1.NodeFirewall{nfwAt("a", 2, newRule, StatePending)},
		wantGen: map[string]int64{"a": 2},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Resolve(Input{Policies: []fwv1.NodeFirewallPolicy{p}, Nodes: nodes, Current: tc.current})
			gotGen := map[string]int64{}
			for n, spec := range res.Nodes {
				for _, ref := range spec.Policies {
					gotGen[n] = ref.Generation
				}
				// The rules follow the generation.
				want := map[int64]string{1: "old", 2: "new"}[gotGen[n]]
				if len(spec.Policies) > 0 && (len(spec.Rules) != 1 || spec.Rules[0].Name != want) {
					t.Errorf("node %s at generation %d has rules %+v, want %q", n, gotGen[n], spec.Rules, want)
				}
			}
			if diff := cmp.Diff(tc.wantGen, gotGen); diff != "" {
				t.Errorf("generations per node (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantProblems, res.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
