package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// progressInterval is how often a policy's status is written while only
// its count of applied nodes moves. Each write of a policy's status costs
// the API server the whole policy (decoding, validating every rule,
// storing), so a rollout to a thousand nodes, whose acknowledgements come
// in over seconds, writes its progress once a second rather than in every
// resolve; a change of generation, of a condition's status or reason, or
// the last node applying (Ready) is written at once.
const progressInterval = time.Second

// firstStatusDelay is how old a new policy gets before its first status
// is written while that status would say no more than Reconciling: the
// API server serves it as in progress meanwhile (observedGeneration 0),
// and a policy whose nodes apply it within this time is written once,
// Ready, rather than twice.
const firstStatusDelay = 3 * time.Second

// progressWrites remembers when each policy's status was last written.
type progressWrites struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// wait is how long the write of st over p's status should wait: a new
// policy's first status until firstStatusWait, progress until
// progressInterval after p's last write; 0 to write now.
func (w *progressWrites) wait(p *fwv1.NodeFirewallPolicy, st fwv1.NodeFirewallPolicyStatus, now time.Time) time.Duration {
	if first := firstStatusWait(p, st, now); first > 0 {
		return first
	}
	if !progressOnly(p.Status, st) {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if left := w.last[p.Name].Add(progressInterval).Sub(now); left > 0 {
		return left
	}
	return 0
}

// wrote records a write of name's status at now.
func (w *progressWrites) wrote(name string, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = map[string]time.Time{}
	}
	w.last[name] = now
}

// progressOnly tells whether st differs from stored only in how far the
// rollout of one generation has come while it is still under way: the
// same generation and failed nodes, the same conditions with the same
// status and reason (their messages count the nodes), none of them Ready;
// the counts of matched and applied nodes may move. The first status of a
// generation, Reconciling while it resolves, and the one that counts its
// nodes are the same rollout, so the second waits its turn as well.
func progressOnly(stored, st fwv1.NodeFirewallPolicyStatus) bool {
	if stored.ObservedGeneration != st.ObservedGeneration || stored.FailedNodes != st.FailedNodes ||
		len(stored.Conditions) != len(st.Conditions) {
		return false
	}
	if stored.MatchedNodes == st.MatchedNodes && stored.AppliedNodes == st.AppliedNodes {
		// Nothing counted moved: a change of message alone is not progress.
		return false
	}
	for i, c := range st.Conditions {
		s := stored.Conditions[i]
		if s.Type != c.Type || s.Status != c.Status || s.Reason != c.Reason || s.ObservedGeneration != c.ObservedGeneration {
			return false
		}
		if c.Type == fwv1.ConditionReady && c.Status == "True" {
			return false
		}
	}
	return true
}

// firstStatusWait is how long the first status of policy p, st, should
// wait: a policy the controller never wrote a status for reads as in
// progress by its default status (observedGeneration 0), so while st says
// no more than that (Reconciling), its write waits until p is
// firstStatusDelay old. Each write of a policy of hundreds of rules costs
// the API server the whole policy. 0 means write now.
func firstStatusWait(p *fwv1.NodeFirewallPolicy, st fwv1.NodeFirewallPolicyStatus, now time.Time) time.Duration {
	if !neverObserved(p.Status) || !meta.IsStatusConditionTrue(st.Conditions, fwv1.ConditionReconciling) {
		return 0
	}
	left := p.CreationTimestamp.Add(firstStatusDelay).Sub(now)
	// Clocks apart: never longer than the delay.
	return max(0, min(left, firstStatusDelay))
}

// neverObserved tells whether st is the status of a policy the controller
// has not written a status for: observedGeneration 0 and no conditions.
func neverObserved(st fwv1.NodeFirewallPolicyStatus) bool {
	return st.ObservedGeneration == 0 && len(st.Conditions) == 0
}
