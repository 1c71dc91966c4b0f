package suite

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed"
)

func TestNodesOf(t *testing.T) {
	host := func(name string) *testbed.Host { return &testbed.Host{Name: name} }
	checks := []testbed.Check{
		{From: host("worker-2/pod"), To: host("cp-1")},
		{From: host("worker-1"), To: host("worker-2")},
		{From: host("cp-1/pod"), To: host("worker-1/pod")},
	}
	if diff := cmp.Diff([]string{"cp-1", "worker-1", "worker-2"}, nodesOf(checks)); diff != "" {
		t.Errorf("nodesOf (-want +got):\n%s", diff)
	}
}

func TestMatchedAndStatusLine(t *testing.T) {
	p := &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Generation: 3},
		Status: fwv1.NodeFirewallPolicyStatus{
			ObservedGeneration: 3, MatchedNodes: 2, AppliedNodes: 1,
			Conditions: []metav1.Condition{{Type: fwv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Progressing"}},
		},
	}
	if Matched(2)(p) {
		t.Error("Matched(2) holds with one of two nodes applied")
	}
	const want = "Ready=False Progressing, generation 3, observed 3, matched 2, applied 1"
	if got := statusLine(p); got != want {
		t.Errorf("statusLine = %q, want %q", got, want)
	}
	p.Status.AppliedNodes = 2
	if !Matched(2)(p) || Matched(1)(p) {
		t.Errorf("with two of two nodes applied: Matched(2) %v, Matched(1) %v", Matched(2)(p), Matched(1)(p))
	}
}
