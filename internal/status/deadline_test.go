package status

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestProgressDeadline(t *testing.T) {
	p := &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "slow", Generation: 3}}
	// One matched node whose agent never reports.
	st := Policy(p, []string{"silent-node"}, nil, nil)
	rec := meta.FindStatusCondition(st.Conditions, fwv1.ConditionReconciling)
	if rec == nil {
		t.Fatal("a policy waiting for its node is not Reconciling")
	}
	start := rec.LastTransitionTime.Time

	if left := ProgressDeadline(&st, start.Add(time.Minute), 10*time.Minute); left != 9*time.Minute {
		t.Errorf("before the deadline: check again in %v, want 9m", left)
	}
	if meta.IsStatusConditionTrue(st.Conditions, fwv1.ConditionStalled) {
		t.Fatal("Stalled before the deadline")
	}

	ProgressDeadline(&st, start.Add(11*time.Minute), 10*time.Minute)
	stalled := meta.FindStatusCondition(st.Conditions, fwv1.ConditionStalled)
	if stalled == nil || stalled.Status != metav1.ConditionTrue || stalled.Reason != fwv1.ReasonProgressDeadlineExceeded {
		t.Fatalf("after the deadline: Stalled = %+v", stalled)
	}
	if meta.FindStatusCondition(st.Conditions, fwv1.ConditionReconciling) != nil {
		t.Error("Reconciling still present beside Stalled")
	}

	// The next roll-up keeps it Stalled instead of restarting the clock.
	p.Status = st
	next := Policy(p, []string{"silent-node"}, nil, nil)
	if !meta.IsStatusConditionTrue(next.Conditions, fwv1.ConditionStalled) || meta.FindStatusCondition(next.Conditions, fwv1.ConditionReconciling) != nil {
		t.Errorf("the roll-up after the deadline went back to Reconciling: %+v", next.Conditions)
	}

	// A new generation starts a new clock.
	p.Generation = 4
	p.Status = Reconciling(p)
	fresh := Policy(p, []string{"silent-node"}, nil, nil)
	if !meta.IsStatusConditionTrue(fresh.Conditions, fwv1.ConditionReconciling) || meta.FindStatusCondition(fresh.Conditions, fwv1.ConditionStalled) != nil {
		t.Errorf("a new generation did not start over: %+v", fresh.Conditions)
	}
}
