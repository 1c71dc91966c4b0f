package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestPolicyChanged(t *testing.T) {
	policy := func(gen int64, applied int32, labels map[string]string) *fwv1.NodeFirewallPolicy {
		return &fwv1.NodeFirewallPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: gen, Labels: labels},
			Status:     fwv1.NodeFirewallPolicyStatus{ObservedGeneration: gen, MatchedNodes: 1, AppliedNodes: applied},
		}
	}
	computed := &computedStatuses{}
	computed.set(map[string]fwv1.NodeFirewallPolicyStatus{"p": policy(1, 1, nil).Status})
	pred := policyChanged{computed: computed}
	for _, tc := range []struct {
		name     string
		old, cur *fwv1.NodeFirewallPolicy
		want     bool
	}{
		{"generation", policy(1, 1, nil), policy(2, 1, nil), true},
		{"labels only", policy(1, 1, nil), policy(1, 1, map[string]string{"a": "b"}), false},
		{"the status computed last, written", policy(1, 0, nil), policy(1, 1, nil), false},
		{"another status than the one computed last", policy(1, 1, nil), policy(1, 0, nil), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pred.Update(event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.cur}); got != tc.want {
				t.Errorf("Update = %v, want %v", got, tc.want)
			}
		})
	}
	unknown := policyChanged{computed: &computedStatuses{}}
	if !unknown.Update(event.UpdateEvent{ObjectOld: policy(1, 1, nil), ObjectNew: policy(1, 0, nil)}) {
		t.Error("a status change of a policy never resolved was dropped")
	}
}
