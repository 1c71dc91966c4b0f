package resolve

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/text"
)

// NodeState is what a node's NodeFirewall says about one generation of a policy.
type NodeState int

const (
	// StatePending: the node has not been given this generation, or has not
	// reported on it yet.
	StatePending NodeState = iota
	// StateApplied: the node reports this generation in its kernel.
	StateApplied
	// StateFailed: the node reports that it could not apply it, or reverted it.
	StateFailed
)

// PolicyOnNode reports what nfw says about the given generation of a policy.
func PolicyOnNode(nfw *fwv1.NodeFirewall, policy string, generation int64) NodeState {
	if nfw == nil {
		return StatePending
	}
	found := false
	for _, ref := range nfw.Spec.Policies {
		if ref.Name == policy && ref.Generation == generation {
			found = true
			break
		}
	}
	if !found || nfw.Status.ObservedGeneration != nfw.Generation {
		return StatePending
	}
	ready := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
	switch {
	case ready == nil || ready.ObservedGeneration != nfw.Generation:
		return StatePending
	case ready.Status == metav1.ConditionTrue:
		return StateApplied
	default:
		return StateFailed
	}
}

// hasGeneration reports whether nfw was given the generation of a policy.
func hasGeneration(nfw *fwv1.NodeFirewall, policy string, generation int64) bool {
	if nfw == nil {
		return false
	}
	for _, ref := range nfw.Spec.Policies {
		if ref.Name == policy {
			return ref.Generation == generation
		}
	}
	return false
}

// stage decides which matched nodes a staged rollout holds back: at most
// maxUnavailable nodes may have the new generation without having applied
// it, and none is added once a node has failed it.
func stage(cp *preparedPolicy, matched []string, current map[string]*fwv1.NodeFirewall) []Problem {
	p := cp.policy
	var candidates, failed []string
	inflight := 0
	for _, n := range matched {
		nfw := current[n]
		if !hasGeneration(nfw, p.Name, p.Generation) {
			candidates = append(candidates, n)
			continue
		}
		switch PolicyOnNode(nfw, p.Name, p.Generation) {
		case StatePending:
			inflight++
		case StateFailed:
			failed = append(failed, n)
		}
	}
	budget := int(p.Spec.Rollout.MaxUnavailable) - inflight - len(failed)
	if len(failed) > 0 {
		budget = 0
	}
	if budget < 0 {
		budget = 0
	}
	if budget >= len(candidates) {
		return nil
	}
	cp.heldBack = make(map[string]bool, len(candidates)-budget)
	for _, n := range candidates[budget:] {
		cp.heldBack[n] = true
	}
	if len(failed) == 0 {
		return nil
	}
	return []Problem{{
		Policy: p.Name,
		Reason: fwv1.ReasonRolloutHalted,
		Message: fmt.Sprintf("rollout of generation %d halted: %d node(s) failed or reverted it (%s); %d node(s) held on their previous generation",
			p.Generation, len(failed), text.ListSome(failed, 3), len(cp.heldBack)),
	}}
}
