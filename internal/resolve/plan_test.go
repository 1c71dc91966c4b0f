package resolve

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestPlan(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	dropInput := fwv1.NodeFirewallSpec{DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept}}
	kubeletSpec := fwv1.NodeFirewallSpec{
		Rules:          []fwv1.NodeFirewallRule{resolved("worker", tcp("kubelet", 10250))},
		DefaultActions: allAccept,
		Policies:       []fwv1.PolicyReference{ref("worker", fwv1.PolicyModeEnforce, nil)},
	}
	withUID := func(n corev1.Node, uid types.UID) corev1.Node { n.UID = uid; return n }
	a, b := withUID(node("a", nil), "uid-a"), withUID(node("b", nil), "uid-b")
	owner := func(n corev1.Node) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
	}
	// nfw is a NodeFirewall with the given spec and owners; its agent has
	// reported, so its status must be kept by an update.
	nfw := func(name string, spec fwv1.NodeFirewallSpec, owners []metav1.OwnerReference) fwv1.NodeFirewall {
		return fwv1.NodeFirewall{
			ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 3, ResourceVersion: "42", OwnerReferences: owners},
			Spec:       spec,
			Status:     fwv1.NodeFirewallStatus{ObservedGeneration: 3, RuleCount: 1},
		}
	}
	// orphan is the NodeFirewall of a node that is gone, deleted the given
	// time ago (never if negative), with the given finalizers.
	orphan := func(name string, deletedAgo time.Duration, finalizers ...string) fwv1.NodeFirewall {
		o := nfw(name, kubeletSpec, nil)
		o.Finalizers = finalizers
		if deletedAgo >= 0 {
			o.DeletionTimestamp = &metav1.Time{Time: now.Add(-deletedAgo)}
		}
		return o
	}
	updated := func(o fwv1.NodeFirewall, spec fwv1.NodeFirewallSpec, owners []metav1.OwnerReference) *fwv1.NodeFirewall {
		o.Spec, o.OwnerReferences = spec, owners
		return &o
	}
	ptr := func(o fwv1.NodeFirewall) *fwv1.NodeFirewall { return &o }

	tests := []struct {
		name     string
		desired  map[string]fwv1.NodeFirewallSpec
		existing []fwv1.NodeFirewall
		nodes    []corev1.Node
		want     Writes
	}{{
		name:    "a node without a NodeFirewall gets one, owned by the node",
		desired: map[string]fwv1.NodeFirewallSpec{"a": kubeletSpec, "b": allAcceptSpec()},
		nodes:   []corev1.Node{b, a},
		want: Writes{Create: []*fwv1.NodeFirewall{
			{ObjectMeta: metav1.ObjectMeta{Name: "a", OwnerReferences: owner(a)}, Spec: kubeletSpec},
			{ObjectMeta: metav1.ObjectMeta{Name: "b", OwnerReferences: owner(b)}, Spec: allAcceptSpec()},
		}},
	}, {
		name:     "a NodeFirewall as desired is left alone",
		desired:  map[string]fwv1.NodeFirewallSpec{"a": kubeletSpec},
		existing: []fwv1.NodeFirewall{nfw("a", kubeletSpec, owner(a))},
		nodes:    []corev1.Node{a},
		want:     Writes{Unchanged: []*fwv1.NodeFirewall{ptr(nfw("a", kubeletSpec, owner(a)))}},
	}, {
		name:     "empty and absent lists are the same spec",
		desired:  map[string]fwv1.NodeFirewallSpec{"a": dropInput},
		existing: []fwv1.NodeFirewall{nfw("a", fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{}, DefaultActions: dropInput.DefaultActions, Policies: []fwv1.PolicyReference{}}, owner(a))},
		nodes:    []corev1.Node{a},
		want: Writes{Unchanged: []*fwv1.NodeFirewall{
			ptr(nfw("a", fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{}, DefaultActions: dropInput.DefaultActions, Policies: []fwv1.PolicyReference{}}, owner(a))),
		}},
	}, {
		name:     "a changed spec is updated, keeping metadata and status",
		desired:  map[string]fwv1.NodeFirewallSpec{"a": dropInput},
		existing: []fwv1.NodeFirewall{nfw("a", kubeletSpec, owner(a))},
		nodes:    []corev1.Node{a},
		want:     Writes{Update: []*fwv1.NodeFirewall{updated(nfw("a", kubeletSpec, owner(a)), dropInput, owner(a))}},
	}, {
		name:    "a missing or stale owner is set: the node was recreated under the same name",
		desired: map[string]fwv1.NodeFirewallSpec{"a": kubeletSpec, "b": kubeletSpec},
		existing: []fwv1.NodeFirewall{
			nfw("a", kubeletSpec, nil),
			nfw("b", kubeletSpec, owner(withUID(b, "uid-old"))),
		},
		nodes: []corev1.Node{a, b},
		want: Writes{Update: []*fwv1.NodeFirewall{
			updated(nfw("a", kubeletSpec, nil), kubeletSpec, owner(a)),
			updated(nfw("b", kubeletSpec, nil), kubeletSpec, owner(b)),
		}},
	}, {
		name:     "the NodeFirewall of a node that is gone is deleted",
		desired:  map[string]fwv1.NodeFirewallSpec{"a": kubeletSpec},
		existing: []fwv1.NodeFirewall{nfw("a", kubeletSpec, owner(a)), orphan("gone", -1, fwv1.AgentFinalizer)},
		nodes:    []corev1.Node{a},
		want: Writes{
			Unchanged: []*fwv1.NodeFirewall{ptr(nfw("a", kubeletSpec, owner(a)))},
			Delete:    []*fwv1.NodeFirewall{ptr(orphan("gone", -1, fwv1.AgentFinalizer))},
		},
	}, {
		name: "the agent of a node that is gone gets the grace period to release its finalizer; the first end of one is the requeue",
		existing: []fwv1.NodeFirewall{
			orphan("x", 10*time.Second, fwv1.AgentFinalizer),
			orphan("y", 25*time.Second, fwv1.AgentFinalizer),
			orphan("z", 0, fwv1.AgentFinalizer),
		},
		want: Writes{Requeue: 5 * time.Second},
	}, {
		name: "after the grace period the controller releases the agent's finalizer, and only that one",
		existing: []fwv1.NodeFirewall{
			orphan("late", orphanFinalizerGrace, fwv1.AgentFinalizer),
			orphan("later", time.Hour, "example.com/other", fwv1.AgentFinalizer),
			orphan("foreign", time.Hour, "example.com/other"),
		},
		want: Writes{ReleaseFinalizer: []*fwv1.NodeFirewall{
			ptr(orphan("late", orphanFinalizerGrace, fwv1.AgentFinalizer)),
			ptr(orphan("later", time.Hour, "example.com/other", fwv1.AgentFinalizer)),
		}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.desired, tc.existing, tc.nodes, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Plan() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPlanLeavesItsInputsAlone: the controller lists once and plans; the
// objects it listed stay as they were read.
func TestPlanLeavesItsInputsAlone(t *testing.T) {
	a := node("a", nil)
	existing := []fwv1.NodeFirewall{{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: allAcceptSpec()}}
	before := existing[0].DeepCopy()
	w := Plan(map[string]fwv1.NodeFirewallSpec{"a": {DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}}}, existing, []corev1.Node{a}, time.Now())
	if len(w.Update) != 1 {
		t.Fatalf("want one update, got %+v", w)
	}
	if diff := cmp.Diff(before, &existing[0]); diff != "" {
		t.Errorf("Plan changed the listed NodeFirewall (-before +after):\n%s", diff)
	}
}

func allAcceptSpec() fwv1.NodeFirewallSpec { return fwv1.NodeFirewallSpec{DefaultActions: allAccept} }
