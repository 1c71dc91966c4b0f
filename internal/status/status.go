// Package status computes the kstatus-style status of policies and node
// firewalls. It is pure: the controller and agent call it and write the
// result only when it differs from what is stored.
//
// Conditions follow kstatus and cluster-api: Ready is always present with
// the current observedGeneration; Reconciling and Stalled appear only while
// true, so Argo CD and Flux read InProgress, Current and Failed correctly.
package status

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/text"
)

// Policy computes a policy's status from the nodes it matches, their
// NodeFirewalls (by node name) and the resolver's problems for it. It
// starts from the stored conditions so unchanged ones keep their times.
func Policy(p *fwv1.NodeFirewallPolicy, matched []string, nfws map[string]*fwv1.NodeFirewall, problems []resolve.Problem) fwv1.NodeFirewallPolicyStatus {
	return PolicySince(p, matched, nfws, nil, problems)
}

// PolicySince is Policy, also counting as applied on a node a policy that
// the node's current NodeFirewall lists unchanged from the generation of
// it the node applied before, whose references earlier holds by node name
// (see resolve.PolicyOnNodeSince): a change to one policy does not turn
// every other policy on its nodes back to Reconciling, and rewrite their
// statuses twice, while the nodes apply it.
func PolicySince(p *fwv1.NodeFirewallPolicy, matched []string, nfws map[string]*fwv1.NodeFirewall, earlier map[string]resolve.AppliedRefs, problems []resolve.Problem) fwv1.NodeFirewallPolicyStatus {
	gen := p.Generation
	st := fwv1.NodeFirewallPolicyStatus{
		ObservedGeneration: gen,
		MatchedNodes:       int32(len(matched)),
		Conditions:         append([]metav1.Condition(nil), p.Status.Conditions...),
	}
	var failed []string
	for _, n := range matched {
		switch resolve.PolicyOnNodeSince(nfws[n], p.Name, gen, earlier[n]) {
		case resolve.StateApplied:
			st.AppliedNodes++
		case resolve.StateFailed:
			st.FailedNodes++
			failed = append(failed, n)
		}
	}

	var invalid, conflicts, shadowed, halted, tooLarge, unresolved []string
	conflictReason := fwv1.ReasonDefaultActionConflict
	// A revision or an address set too large to write names itself;
	// NodeFirewalls too large are shared with other policies.
	tooLargeReason := fwv1.ReasonNodeFirewallTooLarge
	for _, pr := range problems {
		switch pr.Reason {
		case fwv1.ReasonInvalidSelector:
			invalid = append(invalid, pr.Message)
		case fwv1.ReasonDefaultActionConflict:
			conflicts = append(conflicts, pr.Message)
		case fwv1.ReasonDefaultActionOverridden:
			// The reason says this policy's own default does not apply.
			conflicts = append(conflicts, pr.Message)
			conflictReason = fwv1.ReasonDefaultActionOverridden
		case fwv1.ReasonFailsafeShadowed:
			shadowed = append(shadowed, pr.Message)
		case fwv1.ReasonRolloutHalted:
			halted = append(halted, pr.Message)
		case fwv1.ReasonNodeFirewallTooLarge:
			tooLarge = append(tooLarge, pr.Message)
		case fwv1.ReasonRevisionTooLarge, fwv1.ReasonAddressSetTooLarge:
			tooLarge = append(tooLarge, pr.Message)
			tooLargeReason = pr.Reason
		case fwv1.ReasonUnresolvedPeers:
			unresolved = append(unresolved, pr.Message)
		}
	}

	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	switch {
	case len(invalid) > 0:
		msg := strings.Join(invalid, "; ")
		set(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonInvalidSelector, msg)
		set(fwv1.ConditionStalled, metav1.ConditionTrue, fwv1.ReasonInvalidSelector, msg)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	case len(halted) > 0:
		msg := strings.Join(halted, "; ")
		set(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonRolloutHalted, msg)
		set(fwv1.ConditionStalled, metav1.ConditionTrue, fwv1.ReasonRolloutHalted, msg)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	case len(tooLarge) > 0:
		msg := strings.Join(tooLarge, "; ")
		set(fwv1.ConditionReady, metav1.ConditionFalse, tooLargeReason, msg)
		set(fwv1.ConditionStalled, metav1.ConditionTrue, tooLargeReason, msg)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	case len(failed) > 0:
		msg := fmt.Sprintf("%d of %d matched nodes failed to apply: %s", len(failed), len(matched), text.ListSome(failed, 5))
		set(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonApplyFailed, msg)
		set(fwv1.ConditionStalled, metav1.ConditionTrue, fwv1.ReasonApplyFailed, msg)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	case len(matched) == 0:
		set(fwv1.ConditionReady, metav1.ConditionTrue, fwv1.ReasonNoMatchingNodes, "spec.nodeSelector matches no node")
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionStalled)
	case int(st.AppliedNodes) == len(matched):
		set(fwv1.ConditionReady, metav1.ConditionTrue, fwv1.ReasonApplied, fmt.Sprintf("applied on all %d matched nodes", len(matched)))
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionStalled)
	case deadlinePassed(p.Status.Conditions, gen):
		// Still no progress since the deadline passed: stay Stalled rather
		// than restart the clock.
		msg := fmt.Sprintf("applied on %d of %d matched nodes; the progress deadline has passed", st.AppliedNodes, len(matched))
		set(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonProgressDeadlineExceeded, msg)
		set(fwv1.ConditionStalled, metav1.ConditionTrue, fwv1.ReasonProgressDeadlineExceeded, msg)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	default:
		msg := fmt.Sprintf("applied on %d of %d matched nodes", st.AppliedNodes, len(matched))
		set(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonProgressing, msg)
		set(fwv1.ConditionReconciling, metav1.ConditionTrue, fwv1.ReasonProgressing, msg)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionStalled)
	}
	// Warnings that do not stop the policy from being Ready: present only
	// while true.
	for _, w := range []struct {
		condition, reason string
		messages          []string
	}{
		{fwv1.ConditionDefaultActionConflict, conflictReason, conflicts},
		{fwv1.ConditionFailsafeShadowed, fwv1.ReasonFailsafeShadowed, shadowed},
		{fwv1.ConditionUnresolvedPeers, fwv1.ReasonUnresolvedPeers, unresolved},
	} {
		if len(w.messages) > 0 {
			set(w.condition, metav1.ConditionTrue, w.reason, strings.Join(w.messages, "; "))
		} else {
			meta.RemoveStatusCondition(&st.Conditions, w.condition)
		}
	}
	return st
}

// deadlinePassed reports whether generation gen already missed its
// progress deadline.
func deadlinePassed(conds []metav1.Condition, gen int64) bool {
	c := meta.FindStatusCondition(conds, fwv1.ConditionStalled)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == fwv1.ReasonProgressDeadlineExceeded && c.ObservedGeneration == gen
}

// ProgressDeadline turns a policy that has been Reconciling for longer than
// deadline into Stalled, so that GitOps tools report it as failed rather
// than progressing forever. It returns how long until the deadline passes
// while still Reconciling (to check again then), or 0.
func ProgressDeadline(st *fwv1.NodeFirewallPolicyStatus, now time.Time, deadline time.Duration) time.Duration {
	rec := meta.FindStatusCondition(st.Conditions, fwv1.ConditionReconciling)
	if deadline <= 0 || rec == nil || rec.Status != metav1.ConditionTrue {
		return 0
	}
	left := rec.LastTransitionTime.Add(deadline).Sub(now)
	if left > 0 {
		return left
	}
	msg := fmt.Sprintf("no progress within %v: %s", deadline, rec.Message)
	meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	for _, t := range []string{fwv1.ConditionReady, fwv1.ConditionStalled} {
		s := metav1.ConditionFalse
		if t == fwv1.ConditionStalled {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: fwv1.ReasonProgressDeadlineExceeded,
			Message: msg, ObservedGeneration: st.ObservedGeneration})
	}
	return 0
}

// Reconciling marks a policy as seen but not yet acted on, so that kstatus
// reads InProgress from the first moment rather than Current.
func Reconciling(p *fwv1.NodeFirewallPolicy) fwv1.NodeFirewallPolicyStatus {
	st := *p.Status.DeepCopy()
	st.ObservedGeneration = p.Generation
	for _, t := range []string{fwv1.ConditionReady, fwv1.ConditionReconciling} {
		s := metav1.ConditionFalse
		if t == fwv1.ConditionReconciling {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: fwv1.ReasonProgressing, Message: "resolving", ObservedGeneration: p.Generation})
	}
	// The previous generation's failure does not describe this one; kstatus
	// would read a leftover Stalled as Failed.
	meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionStalled)
	st.AppliedNodes, st.FailedNodes = 0, 0
	return st
}

// NodeStatusUpdate is the body of a status update that writes st on
// stored: its metadata without the managed fields, which the API server
// keeps when they are left out, and no spec, which a status update cannot
// change. The API server decodes and checks every byte of a request: a
// report without the node's policy references costs it less.
func NodeStatusUpdate(stored *fwv1.NodeFirewall, st fwv1.NodeFirewallStatus) *fwv1.NodeFirewall {
	out := &fwv1.NodeFirewall{TypeMeta: stored.TypeMeta, ObjectMeta: *stored.ObjectMeta.DeepCopy(), Status: st}
	out.ManagedFields = nil
	return out
}

// NodeApplied is the status of a NodeFirewall whose generation is in the
// kernel, with followed the generations of the policies it follows
// (revision.FollowedGenerations).
func NodeApplied(nfw *fwv1.NodeFirewall, followed map[string]int64, rules int, at metav1.Time) fwv1.NodeFirewallStatus {
	st := *nfw.Status.DeepCopy()
	st.ObservedGeneration = nfw.Generation
	st.PolicyGenerations = followed
	st.RuleCount = int32(rules)
	st.LastAppliedTime = &at
	st.LastError = ""
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: fwv1.ConditionReady, Status: metav1.ConditionTrue, Reason: fwv1.ReasonApplied,
		Message: fmt.Sprintf("%d rules programmed", rules), ObservedGeneration: nfw.Generation,
	})
	meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionStalled)
	return st
}

// NodeFailed is the status of a NodeFirewall whose generation could not be
// programmed; the previous ruleset stays in the kernel.
func NodeFailed(nfw *fwv1.NodeFirewall, reason string, err error) fwv1.NodeFirewallStatus {
	st := *nfw.Status.DeepCopy()
	st.ObservedGeneration = nfw.Generation
	st.LastError = err.Error()
	msg := text.Truncate(fmt.Sprintf("keeping the previous ruleset: %v", err), 32000)
	for _, t := range []string{fwv1.ConditionReady, fwv1.ConditionStalled} {
		s := metav1.ConditionFalse
		if t == fwv1.ConditionStalled {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: nfw.Generation})
	}
	meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	return st
}

// NodeWaiting is the status of a NodeFirewall the controller just created:
// Reconciling until the node's agent reports, so that kstatus reads
// InProgress rather than Current before anything is in the kernel.
func NodeWaiting(nfw *fwv1.NodeFirewall) fwv1.NodeFirewallStatus {
	st := *nfw.Status.DeepCopy()
	for _, t := range []string{fwv1.ConditionReady, fwv1.ConditionReconciling} {
		s := metav1.ConditionFalse
		if t == fwv1.ConditionReconciling {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: fwv1.ReasonProgressing,
			Message: "waiting for the node agent", ObservedGeneration: nfw.Generation})
	}
	return st
}
