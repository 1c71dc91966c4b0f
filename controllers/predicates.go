package controllers

import (
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// specOrStatusChanged passes creations, deletions, and updates that change
// an object's generation or its status; metadata-only updates are ignored.
//
// Status changes must pass, although the controller writes them itself:
// whether a status is written is decided by comparing the status computed
// with the one in the informer's cache, and the cache may lag the
// controller's own last write. A resolve in that window computes the
// status the cache still holds, finds nothing to write and leaves the
// stored status wrong; the event that brings the cache up to date is the
// only signal left to resolve again, and a generation predicate drops it.
type specOrStatusChanged struct{ predicate.Funcs }

func (specOrStatusChanged) Update(e event.UpdateEvent) bool {
	if e.ObjectOld == nil || e.ObjectNew == nil {
		return true
	}
	if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() {
		return true
	}
	return statusChanged(e.ObjectOld, e.ObjectNew)
}

// statusChanged compares the status of the kinds whose status the
// controller writes; for any other kind it reports a change.
func statusChanged(old, cur client.Object) bool {
	switch o := old.(type) {
	case *fwv1.NodeFirewallPolicy:
		n, ok := cur.(*fwv1.NodeFirewallPolicy)
		return !ok || !equality.Semantic.DeepEqual(o.Status, n.Status)
	case *fwv1.NodeFirewallConfig:
		n, ok := cur.(*fwv1.NodeFirewallConfig)
		return !ok || !equality.Semantic.DeepEqual(o.Status, n.Status)
	}
	return true
}
