package controllers

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
)

// appliedPolicies remembers, per node, the policy references of the
// newest NodeFirewall generation the controller saw its agent report
// applied: what the node's kernel holds while it applies a later one. It
// lives in memory only; after a restart a node's policies wait for its
// current generation, as they would without it.
type appliedPolicies struct {
	mu    sync.Mutex
	nodes map[string]nodeApplied
}

// nodeApplied are the references a node applied, of the NodeFirewall with
// this UID: one deleted and created again starts over.
type nodeApplied struct {
	uid  types.UID
	refs resolve.AppliedRefs
}

// observe records the references of every NodeFirewall reported applied
// at its generation, and forgets the nodes that have none.
func (a *appliedPolicies) observe(nfws []fwv1.NodeFirewall) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := make(map[string]nodeApplied, len(nfws))
	for i := range nfws {
		nfw := &nfws[i]
		if refs := resolve.AppliedRefsOf(nfw); refs != nil {
			seen[nfw.Name] = nodeApplied{uid: nfw.UID, refs: refs}
		} else if prev, ok := a.nodes[nfw.Name]; ok && prev.uid == nfw.UID {
			seen[nfw.Name] = prev
		}
	}
	a.nodes = seen
}

// earlier are, by node name, the references each node of current applied
// before, for status.PolicySince.
func (a *appliedPolicies) earlier(current map[string]*fwv1.NodeFirewall) map[string]resolve.AppliedRefs {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]resolve.AppliedRefs, len(a.nodes))
	for name, nfw := range current {
		if prev, ok := a.nodes[name]; ok && nfw != nil && prev.uid == nfw.UID {
			out[name] = prev.refs
		}
	}
	return out
}
