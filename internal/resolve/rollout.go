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
	var found *fwv1.PolicyReference
	for i, ref := range nfw.Spec.Policies {
		if ref.Name == policy && (ref.Follow || ref.Generation == generation) {
			found = &nfw.Spec.Policies[i]
			break
		}
	}
	if found == nil || nfw.Status.ObservedGeneration != nfw.Generation {
		return StatePending
	}
	ready := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
	switch {
	case ready == nil || ready.ObservedGeneration != nfw.Generation:
		return StatePending
	case ready.Status == metav1.ConditionTrue:
		if referencedGeneration(nfw, *found) != generation {
			// A followed policy whose generation the node has yet to apply.
			return StatePending
		}
		return StateApplied
	default:
		// A failed ruleset fails every policy on the node, the followed
		// ones at any generation: the node applies none until it is fixed.
		return StateFailed
	}
}

// referencedGeneration is the generation of a policy that ref puts on
// nfw's node: the one it names, or, for a policy the node follows, the one
// the agent reports applied (0 before it reports one).
func referencedGeneration(nfw *fwv1.NodeFirewall, ref fwv1.PolicyReference) int64 {
	if ref.Follow {
		return nfw.Status.PolicyGenerations[ref.Name]
	}
	return ref.Generation
}

// GenerationOn is the generation of a policy that nfw's node is given:
// the one its reference names, or, for a policy the node follows, the one
// its agent reports applied; 0 when nfw does not list the policy.
func GenerationOn(nfw *fwv1.NodeFirewall, policy string) int64 {
	for _, ref := range nfw.Spec.Policies {
		if ref.Name == policy {
			return referencedGeneration(nfw, ref)
		}
	}
	return 0
}

// AppliedRefs are the policy references of a NodeFirewall generation whose
// agent reported it applied, each keyed by policy name, generation and
// revision: what that node's kernel holds.
type AppliedRefs map[string]bool

// appliedKey identifies what a reference puts in the kernel: a policy's
// generation fixes its rules, mode and defaults, and the revision says
// where the rules come from.
func appliedKey(policy string, generation int64, revision string) string {
	return fmt.Sprintf("%s/%d/%s", policy, generation, revision)
}

// AppliedRefsOf are nfw's references when its agent reports its current
// generation applied, or nil.
func AppliedRefsOf(nfw *fwv1.NodeFirewall) AppliedRefs {
	if nfw == nil || nfw.Status.ObservedGeneration != nfw.Generation {
		return nil
	}
	ready := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
	if ready == nil || ready.ObservedGeneration != nfw.Generation || ready.Status != metav1.ConditionTrue {
		return nil
	}
	refs := make(AppliedRefs, len(nfw.Spec.Policies))
	for _, ref := range nfw.Spec.Policies {
		refs[appliedKey(ref.Name, referencedGeneration(nfw, ref), ref.Revision)] = true
	}
	return refs
}

// PolicyOnNodeSince is PolicyOnNode, except that a policy nfw lists at the
// generation and revision it had in earlier, a generation of nfw the node
// applied before, counts as applied while the node has not reported on its
// current generation yet: its rules are in the kernel all along, and a
// change to another policy does not take them out of it. A current
// generation that failed fails every policy, as in PolicyOnNode.
func PolicyOnNodeSince(nfw *fwv1.NodeFirewall, policy string, generation int64, earlier AppliedRefs) NodeState {
	state := PolicyOnNode(nfw, policy, generation)
	if state != StatePending || len(earlier) == 0 {
		return state
	}
	for _, ref := range nfw.Spec.Policies {
		if ref.Name == policy && ref.Follow && earlier[appliedKey(ref.Name, generation, "")] {
			return StateApplied
		}
		if ref.Name == policy && ref.Generation == generation && earlier[appliedKey(ref.Name, ref.Generation, ref.Revision)] {
			return StateApplied
		}
	}
	return state
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
