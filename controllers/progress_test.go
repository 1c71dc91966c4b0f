package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestProgressWritesWait(t *testing.T) {
	cond := func(typ string, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: 2}
	}
	progressing := func(applied int32) fwv1.NodeFirewallPolicyStatus {
		return fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 2, MatchedNodes: 10, AppliedNodes: applied, Conditions: []metav1.Condition{
			cond(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonProgressing, "applied on some"),
			cond(fwv1.ConditionReconciling, metav1.ConditionTrue, fwv1.ReasonProgressing, "applied on some"),
		}}
	}
	ready := fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 2, MatchedNodes: 10, AppliedNodes: 10, Conditions: []metav1.Condition{
		cond(fwv1.ConditionReady, metav1.ConditionTrue, fwv1.ReasonApplied, "applied on all 10 matched nodes"),
	}}
	failed := progressing(5)
	failed.FailedNodes = 1
	// The placeholder written when the generation is first seen: no node
	// counted yet.
	resolving := progressing(0)
	resolving.MatchedNodes = 0
	renamed := progressing(3)
	renamed.Conditions[0].Message = "another message"
	now := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name       string
		stored, st fwv1.NodeFirewallPolicyStatus
		wroteAgo   time.Duration
		wantWaitOK bool
	}{
		{"more nodes applied, just written: waits", progressing(3), progressing(5), 200 * time.Millisecond, true},
		{"more nodes applied, written a while ago: now", progressing(3), progressing(5), 2 * progressInterval, false},
		{"every node applied: Ready at once", progressing(3), ready, 200 * time.Millisecond, false},
		{"a node failed: at once", progressing(3), failed, 200 * time.Millisecond, false},
		{"the first count after the placeholder, just written: waits", resolving, progressing(0), 200 * time.Millisecond, true},
		{"only a message changed: at once", progressing(3), renamed, 200 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &progressWrites{}
			w.wrote("web", now.Add(-tc.wroteAgo))
			p := &fwv1.NodeFirewallPolicy{Status: tc.stored}
			p.Name = "web"
			wait := w.wait(p, tc.st, now)
			if got := wait > 0; got != tc.wantWaitOK {
				t.Errorf("wait = %v, want waiting %v", wait, tc.wantWaitOK)
			}
			if wait > progressInterval {
				t.Errorf("wait = %v, over %v", wait, progressInterval)
			}
		})
	}
	never := &fwv1.NodeFirewallPolicy{Status: progressing(3)}
	never.Name = "new"
	if wait := (&progressWrites{}).wait(never, progressing(4), now); wait != 0 {
		t.Errorf("a policy never written waits %v", wait)
	}
}

func TestFirstStatusWait(t *testing.T) {
	now := time.Unix(1700000000, 0)
	created := func(ago time.Duration) *fwv1.NodeFirewallPolicy {
		p := &fwv1.NodeFirewallPolicy{}
		p.Name, p.Generation, p.CreationTimestamp = "web", 1, metav1.NewTime(now.Add(-ago))
		return p
	}
	cond := func(typ string, s metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s, Reason: reason, ObservedGeneration: 1}
	}
	reconciling := fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 1, MatchedNodes: 1, Conditions: []metav1.Condition{
		cond(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonProgressing),
		cond(fwv1.ConditionReconciling, metav1.ConditionTrue, fwv1.ReasonProgressing),
	}}
	ready := fwv1.NodeFirewallPolicyStatus{ObservedGeneration: 1, MatchedNodes: 1, AppliedNodes: 1, Conditions: []metav1.Condition{
		cond(fwv1.ConditionReady, metav1.ConditionTrue, fwv1.ReasonApplied),
	}}
	observed := created(100 * time.Millisecond)
	observed.Status = reconciling
	for _, tc := range []struct {
		name string
		p    *fwv1.NodeFirewallPolicy
		st   fwv1.NodeFirewallPolicyStatus
		want time.Duration
	}{
		{"new, still in progress: until the delay", created(300 * time.Millisecond), reconciling, firstStatusDelay - 300*time.Millisecond},
		{"new, older than the delay: now", created(firstStatusDelay + time.Second), reconciling, 0},
		{"new and already Ready: now", created(300 * time.Millisecond), ready, 0},
		{"a status written before: not the first", observed, reconciling, 0},
		{"created in the controller's future: at most the delay", created(-time.Hour), reconciling, firstStatusDelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := firstStatusWait(tc.p, tc.st, now); got != tc.want {
				t.Errorf("firstStatusWait = %v, want %v", got, tc.want)
			}
		})
	}
}
