package resolve

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// nodeAt is a NodeFirewall at generation gen listing refs, its agent's
// report at observed (0: none) with the given Ready status.
func nodeAt(gen, observed int64, ready metav1.ConditionStatus, refs ...fwv1.PolicyReference) *fwv1.NodeFirewall {
	nfw := &fwv1.NodeFirewall{}
	nfw.Name, nfw.Generation = "n1", gen
	nfw.Spec.Policies = refs
	if observed > 0 {
		nfw.Status.ObservedGeneration = observed
		nfw.Status.Conditions = []metav1.Condition{{Type: fwv1.ConditionReady, Status: ready, ObservedGeneration: observed, Reason: "R"}}
	}
	return nfw
}

func TestPolicyOnNodeSince(t *testing.T) {
	a1 := fwv1.PolicyReference{Name: "a", Generation: 1, Revision: "a-111"}
	a2 := fwv1.PolicyReference{Name: "a", Generation: 2, Revision: "a-222"}
	b1 := fwv1.PolicyReference{Name: "b", Generation: 1, Revision: "b-111"}
	// The node applied generation 4, which listed a at generation 1.
	earlier := AppliedRefsOf(nodeAt(4, 4, metav1.ConditionTrue, a1))
	for _, tc := range []struct {
		name   string
		nfw    *fwv1.NodeFirewall
		policy string
		gen    int64
		want   NodeState
	}{
		{"a kept while the node applies a new policy", nodeAt(5, 4, metav1.ConditionTrue, a1, b1), "a", 1, StateApplied},
		{"the new policy waits for the node", nodeAt(5, 4, metav1.ConditionTrue, a1, b1), "b", 1, StatePending},
		{"a new generation of a waits for the node", nodeAt(5, 4, metav1.ConditionTrue, a2), "a", 2, StatePending},
		{"a failed current generation fails a", nodeAt(5, 5, metav1.ConditionFalse, a1, b1), "a", 1, StateFailed},
		{"the current generation applied", nodeAt(5, 5, metav1.ConditionTrue, a1, b1), "b", 1, StateApplied},
		{"a no longer listed", nodeAt(5, 4, metav1.ConditionTrue, b1), "a", 1, StatePending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PolicyOnNodeSince(tc.nfw, tc.policy, tc.gen, earlier); got != tc.want {
				t.Errorf("PolicyOnNodeSince = %v, want %v", got, tc.want)
			}
		})
	}
	if got := AppliedRefsOf(nodeAt(5, 4, metav1.ConditionTrue, a1)); got != nil {
		t.Errorf("AppliedRefsOf a NodeFirewall whose current generation is not applied = %v, want nil", got)
	}
	if got := AppliedRefsOf(nodeAt(5, 5, metav1.ConditionFalse, a1)); got != nil {
		t.Errorf("AppliedRefsOf a failed NodeFirewall = %v, want nil", got)
	}
}
