package resolve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// TestDefaultActionsFailSafe: whatever the priorities, a default Drop wins
// over a default Accept, and both policies are told, each naming the other.
func TestDefaultActionsFailSafe(t *testing.T) {
	drop, accept := fwv1.ChainPolicyDrop, fwv1.ChainPolicyAccept
	zoneA := metav1.LabelSelector{MatchLabels: map[string]string{"zone": "a"}}
	nodes := []corev1.Node{node("a-1", map[string]string{"zone": "a"}), node("a-2", map[string]string{"zone": "a"}), node("b-1", nil)}
	type chains struct {
		defaults fwv1.DefaultActions
		audited  []fwv1.Chain
	}
	tests := []struct {
		name     string
		policies []fwv1.NodeFirewallPolicy
		// want is every node's resolved defaults and audited chains.
		want     map[string]chains
		problems []Problem
	}{{
		name: "a priority-0 Accept does not switch off a later Drop",
		policies: []fwv1.NodeFirewallPolicy{
			policy("open-everything", 0, metav1.LabelSelector{}, withDefaults(fwv1.DefaultActions{Input: accept})),
			policy("lockdown", 100, metav1.LabelSelector{}, withDefaults(fwv1.DefaultActions{Input: drop})),
		},
		want: map[string]chains{
			"a-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: accept}},
			"a-2": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: accept}},
			"b-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: accept}},
		},
		problems: []Problem{{
			Policy: "lockdown", Reason: fwv1.ReasonDefaultActionConflict,
			Message: `spec.defaultActions.input=Drop overrides policy "open-everything", which sets Accept: the more restrictive default wins, on 3 node(s): a-1, a-2, b-1`,
		}, {
			Policy: "open-everything", Reason: fwv1.ReasonDefaultActionOverridden,
			Message: `spec.defaultActions.input=Accept is overridden by policy "lockdown", which sets Drop: the more restrictive default wins, on 3 node(s): a-1, a-2, b-1`,
		}},
	}, {
		name: "policies that agree have no conflict",
		policies: []fwv1.NodeFirewallPolicy{
			policy("one", 1, metav1.LabelSelector{}, withDefaults(fwv1.DefaultActions{Input: drop, Output: accept})),
			policy("two", 2, metav1.LabelSelector{}, withDefaults(fwv1.DefaultActions{Input: drop, Forward: drop})),
		},
		want: map[string]chains{
			"a-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: drop, Output: accept}},
			"a-2": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: drop, Output: accept}},
			"b-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: drop, Output: accept}},
		},
	}, {
		name: "a conflict is reported only where both policies select the node, per chain",
		policies: []fwv1.NodeFirewallPolicy{
			policy("zone-a", 1, zoneA, withDefaults(fwv1.DefaultActions{Input: accept, Output: drop})),
			policy("all", 2, metav1.LabelSelector{}, withDefaults(fwv1.DefaultActions{Input: drop, Output: accept})),
		},
		want: map[string]chains{
			"a-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: drop}},
			"a-2": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: drop}},
			"b-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: accept}},
		},
		problems: []Problem{{
			Policy: "all", Reason: fwv1.ReasonDefaultActionConflict,
			Message: `spec.defaultActions.input=Drop overrides policy "zone-a", which sets Accept: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}, {
			Policy: "all", Reason: fwv1.ReasonDefaultActionOverridden,
			Message: `spec.defaultActions.output=Accept is overridden by policy "zone-a", which sets Drop: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}, {
			Policy: "zone-a", Reason: fwv1.ReasonDefaultActionConflict,
			Message: `spec.defaultActions.output=Drop overrides policy "all", which sets Accept: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}, {
			Policy: "zone-a", Reason: fwv1.ReasonDefaultActionOverridden,
			Message: `spec.defaultActions.input=Accept is overridden by policy "all", which sets Drop: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}},
	}, {
		name: "every Accept is told of every Drop",
		policies: []fwv1.NodeFirewallPolicy{
			policy("accept-1", 1, zoneA, withDefaults(fwv1.DefaultActions{Forward: accept})),
			policy("accept-2", 2, zoneA, withDefaults(fwv1.DefaultActions{Forward: accept})),
			policy("drop", 3, zoneA, withDefaults(fwv1.DefaultActions{Forward: drop})),
		},
		want: map[string]chains{
			"a-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: accept, Forward: drop, Output: accept}},
			"a-2": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: accept, Forward: drop, Output: accept}},
			"b-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: accept, Forward: accept, Output: accept}},
		},
		problems: []Problem{{
			Policy: "accept-1", Reason: fwv1.ReasonDefaultActionOverridden,
			Message: `spec.defaultActions.forward=Accept is overridden by policy "drop", which sets Drop: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}, {
			Policy: "accept-2", Reason: fwv1.ReasonDefaultActionOverridden,
			Message: `spec.defaultActions.forward=Accept is overridden by policy "drop", which sets Drop: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}, {
			Policy: "drop", Reason: fwv1.ReasonDefaultActionConflict,
			Message: `spec.defaultActions.forward=Drop overrides policy "accept-1", which sets Accept: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}, {
			Policy: "drop", Reason: fwv1.ReasonDefaultActionConflict,
			Message: `spec.defaultActions.forward=Drop overrides policy "accept-2", which sets Accept: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}},
	}, {
		name: "an audited Drop still wins over an Accept, and stays audited",
		policies: []fwv1.NodeFirewallPolicy{
			policy("open", 0, zoneA, withDefaults(fwv1.DefaultActions{Output: accept})),
			policy("trial", 5, zoneA, withMode(fwv1.PolicyModeAudit), withDefaults(fwv1.DefaultActions{Output: drop})),
		},
		want: map[string]chains{
			"a-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: accept, Forward: accept, Output: drop}, audited: []fwv1.Chain{fwv1.ChainOutput}},
			"a-2": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: accept, Forward: accept, Output: drop}, audited: []fwv1.Chain{fwv1.ChainOutput}},
			"b-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: accept, Forward: accept, Output: accept}},
		},
		problems: []Problem{{
			Policy: "open", Reason: fwv1.ReasonDefaultActionOverridden,
			Message: `spec.defaultActions.output=Accept is overridden by policy "trial", which sets Drop: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}, {
			Policy: "trial", Reason: fwv1.ReasonDefaultActionConflict,
			Message: `spec.defaultActions.output=Drop overrides policy "open", which sets Accept: the more restrictive default wins, on 2 node(s): a-1, a-2`,
		}},
	}, {
		name: "a Drop is audited only when every policy that sets it is in Audit mode",
		policies: []fwv1.NodeFirewallPolicy{
			policy("trial", 1, metav1.LabelSelector{}, withMode(fwv1.PolicyModeAudit), withDefaults(fwv1.DefaultActions{Input: drop, Output: drop})),
			policy("enforced", 2, zoneA, withDefaults(fwv1.DefaultActions{Input: drop})),
		},
		want: map[string]chains{
			"a-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: drop}, audited: []fwv1.Chain{fwv1.ChainOutput}},
			"a-2": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: drop}, audited: []fwv1.Chain{fwv1.ChainOutput}},
			"b-1": {defaults: fwv1.DefaultActions{PreRouting: accept, Input: drop, Forward: accept, Output: drop}, audited: []fwv1.Chain{fwv1.ChainInput, fwv1.ChainOutput}},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Resolve(Input{Policies: tc.policies, Nodes: nodes})
			got := map[string]chains{}
			for name, spec := range res.Nodes {
				got[name] = chains{defaults: spec.DefaultActions, audited: spec.AuditedChains}
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(chains{})); diff != "" {
				t.Errorf("defaults (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.problems, res.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
