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

// onNodeCase is what PolicyOnNodeSince should say of a generation of a
// policy on a node.
type onNodeCase struct {
	name   string
	nfw    *fwv1.NodeFirewall
	policy string
	gen    int64
	want   NodeState
}

func checkOnNode(t *testing.T, earlier AppliedRefs, cases []onNodeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := PolicyOnNodeSince(tc.nfw, tc.policy, tc.gen, earlier); got != tc.want {
				t.Errorf("PolicyOnNodeSince = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPolicyOnNodeSince(t *testing.T) {
	a1 := fwv1.PolicyReference{Name: "a", Generation: 1, Revision: "a-111"}
	a2 := fwv1.PolicyReference{Name: "a", Generation: 2, Revision: "a-222"}
	b1 := fwv1.PolicyReference{Name: "b", Generation: 1, Revision: "b-111"}
	// The node applied generation 4, which listed a at generation 1.
	earlier := AppliedRefsOf(nodeAt(4, 4, metav1.ConditionTrue, a1))
	checkOnNode(t, earlier, []onNodeCase{
		{"a kept while the node applies a new policy", nodeAt(5, 4, metav1.ConditionTrue, a1, b1), "a", 1, StateApplied},
		{"the new policy waits for the node", nodeAt(5, 4, metav1.ConditionTrue, a1, b1), "b", 1, StatePending},
		{"a new generation of a waits for the node", nodeAt(5, 4, metav1.ConditionTrue, a2), "a", 2, StatePending},
		{"a failed current generation fails a", nodeAt(5, 5, metav1.ConditionFalse, a1, b1), "a", 1, StateFailed},
		{"the current generation applied", nodeAt(5, 5, metav1.ConditionTrue, a1, b1), "b", 1, StateApplied},
		{"a no longer listed", nodeAt(5, 4, metav1.ConditionTrue, b1), "a", 1, StatePending},
	})
	if got := AppliedRefsOf(nodeAt(5, 4, metav1.ConditionTrue, a1)); got != nil {
		t.Errorf("AppliedRefsOf a NodeFirewall whose current generation is not applied = %v, want nil", got)
	}
	if got := AppliedRefsOf(nodeAt(5, 5, metav1.ConditionFalse, a1)); got != nil {
		t.Errorf("AppliedRefsOf a failed NodeFirewall = %v, want nil", got)
	}
}

// followingAt is nodeAt for a node that follows policy "f" and reports
// generation applied of it (0: none).
func followingAt(gen, observed int64, ready metav1.ConditionStatus, applied int64, refs ...fwv1.PolicyReference) *fwv1.NodeFirewall {
	nfw := nodeAt(gen, observed, ready, append([]fwv1.PolicyReference{{Name: "f", Follow: true}}, refs...)...)
	if applied > 0 {
		nfw.Status.PolicyGenerations = map[string]int64{"f": applied}
	}
	return nfw
}

// TestFollowedPolicyOnNode: a followed policy is applied on a node at the
// generation its agent reports, pending at any other while the node is
// Ready, and failed at any while the node's ruleset fails.
func TestFollowedPolicyOnNode(t *testing.T) {
	b1 := fwv1.PolicyReference{Name: "b", Generation: 1, Revision: "b-111"}
	// The node applied generation 4 of its NodeFirewall with f at 2.
	earlier := AppliedRefsOf(followingAt(4, 4, metav1.ConditionTrue, 2))
	checkOnNode(t, earlier, []onNodeCase{
		{"the generation reported", followingAt(4, 4, metav1.ConditionTrue, 2), "f", 2, StateApplied},
		{"a newer generation waits for the report", followingAt(4, 4, metav1.ConditionTrue, 2), "f", 3, StatePending},
		{"nothing reported yet", followingAt(4, 4, metav1.ConditionTrue, 0), "f", 1, StatePending},
		{"a failed ruleset fails it at any generation", followingAt(4, 4, metav1.ConditionFalse, 2), "f", 3, StateFailed},
		{"kept from the generation applied before while the NodeFirewall changes", followingAt(5, 4, metav1.ConditionTrue, 2, b1), "f", 2, StateApplied},
		{"the policy added meanwhile waits", followingAt(5, 4, metav1.ConditionTrue, 2, b1), "b", 1, StatePending},
		{"a newer generation while the NodeFirewall changes", followingAt(5, 4, metav1.ConditionTrue, 2, b1), "f", 3, StatePending},
	})
}
