package resolve

import (
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// orphanFinalizerGrace is how long the agent of a node that is gone gets to
// run its cleanup before the controller releases the agent's finalizer
// itself, so that the NodeFirewall does not linger.
const orphanFinalizerGrace = 30 * time.Second

// Writes are what the controller writes so that the cluster's
// NodeFirewalls are the desired ones. Every list is sorted by name.
type Writes struct {
	// Create are new NodeFirewalls, owned by their node, for nodes that
	// have none.
	Create []*fwv1.NodeFirewall
	// Update are copies of existing NodeFirewalls with the desired spec and
	// their node as owner, where either differs.
	Update []*fwv1.NodeFirewall
	// Unchanged are the existing NodeFirewalls already as desired.
	Unchanged []*fwv1.NodeFirewall
	// Delete are the NodeFirewalls of nodes that are gone.
	Delete []*fwv1.NodeFirewall
	// ReleaseFinalizer are NodeFirewalls of nodes that are gone, deleted
	// longer than orphanFinalizerGrace ago, whose agent has not released its
	// finalizer.
	ReleaseFinalizer []*fwv1.NodeFirewall
	// Requeue is how long until the next grace period ends, 0 when no
	// NodeFirewall waits for one.
	Requeue time.Duration
}

// Plan decides the writes that take the existing NodeFirewalls to the
// desired specs (Result.Nodes, which has every node) at time now.
func Plan(desired map[string]fwv1.NodeFirewallSpec, existing []fwv1.NodeFirewall, nodes []corev1.Node, now time.Time) Writes {
	var w Writes
	nfws := byName(existing)
	isNode := make(map[string]bool, len(nodes))
	for i := range nodes {
		node := &nodes[i]
		isNode[node.Name] = true
		spec, nfw := desired[node.Name], nfws[node.Name]
		switch {
		case nfw == nil:
			created := &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: node.Name}, Spec: spec}
			setOwner(created, node)
			w.Create = append(w.Create, created)
		case !equality.Semantic.DeepEqual(nfw.Spec, spec) || !hasOwner(nfw, node):
			updated := nfw.DeepCopy()
			updated.Spec = spec
			setOwner(updated, node)
			w.Update = append(w.Update, updated)
		default:
			w.Unchanged = append(w.Unchanged, nfw)
		}
	}
	for i := range existing {
		nfw := &existing[i]
		if !isNode[nfw.Name] {
			w.planOrphan(nfw, now)
		}
	}
	for _, list := range [][]*fwv1.NodeFirewall{w.Create, w.Update, w.Unchanged, w.Delete, w.ReleaseFinalizer} {
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	}
	return w
}

// planOrphan plans the end of a NodeFirewall whose node is gone: delete it;
// once deleted, give its agent the grace period to clean up (the agent may
// be gone with its node), then release the agent's finalizer.
func (w *Writes) planOrphan(nfw *fwv1.NodeFirewall, now time.Time) {
	if nfw.DeletionTimestamp == nil {
		w.Delete = append(w.Delete, nfw)
		return
	}
	if wait := orphanFinalizerGrace - now.Sub(nfw.DeletionTimestamp.Time); wait > 0 {
		if w.Requeue == 0 || wait < w.Requeue {
			w.Requeue = wait
		}
		return
	}
	if slices.Contains(nfw.Finalizers, fwv1.AgentFinalizer) {
		w.ReleaseFinalizer = append(w.ReleaseFinalizer, nfw)
	}
}

// setOwner makes the Node own its NodeFirewall, so that the garbage collector
// removes it with the node in a real cluster.
func setOwner(nfw *fwv1.NodeFirewall, node *corev1.Node) {
	nfw.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
	}}
}

func hasOwner(nfw *fwv1.NodeFirewall, node *corev1.Node) bool {
	refs := nfw.OwnerReferences
	return len(refs) == 1 && refs[0].Kind == "Node" && refs[0].Name == node.Name && refs[0].UID == node.UID
}
