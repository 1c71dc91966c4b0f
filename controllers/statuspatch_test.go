package controllers

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestStatusPatch(t *testing.T) {
	ready := metav1.Condition{Type: fwv1.ConditionReady, Status: metav1.ConditionTrue, Reason: fwv1.ReasonApplied, Message: "applied on all 3 matched nodes",
		ObservedGeneration: 2, LastTransitionTime: metav1.Unix(1700000000, 0).Rfc3339Copy()}
	for _, tc := range []struct {
		name     string
		old, cur fwv1.NodeFirewallPolicyStatus
		want     string
	}{{
		name: "counts change",
		old:  fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 2, MatchedNodes: 3, AppliedNodes: 1},
		cur:  fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 2, MatchedNodes: 3, AppliedNodes: 3},
		want: `{"metadata":{"resourceVersion":"42"},"status":{"appliedNodes":3}}`,
	}, {
		name: "a field left out is cleared, not kept",
		old:  fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 2, MatchedNodes: 3, FailedNodes: 1, Conditions: []metav1.Condition{ready}},
		cur:  fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 2, MatchedNodes: 3},
		want: `{"metadata":{"resourceVersion":"42"},"status":{"conditions":null,"failedNodes":0}}`,
	}, {
		name: "conditions go whole: a merge patch replaces lists",
		old:  fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 2},
		cur:  fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 2, Conditions: []metav1.Condition{ready}},
		want: `{"metadata":{"resourceVersion":"42"},"status":{"conditions":[{"lastTransitionTime":"2023-11-14T22:13:20Z",` +
			`"message":"applied on all 3 matched nodes","observedGeneration":2,"reason":"Applied","status":"True","type":"Ready"}]}}`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := statusPatch("42", tc.old, tc.cur)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("statusPatch (-want +got):\n%s", diff)
			}
		})
	}
}
