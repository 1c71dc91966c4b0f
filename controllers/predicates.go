package controllers

import (
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// specOrStatusChanged passes creations, deletions, and updates that change
// an object's generation or its status; metadata-only updates are ignored.
// The NodeFirewallConfig's and address sets' watches use it; the policies' uses policyChanged,
// its refinement.
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
	case *fwv1.NodeFirewallAddressSet:
		n, ok := cur.(*fwv1.NodeFirewallAddressSet)
		return !ok || !equality.Semantic.DeepEqual(o.Status, n.Status)
	}
	return true
}

// policyChanged passes creations, deletions, generation changes, and the
// status changes that bring a status other than the one the controller
// computed last for that policy. It is specOrStatusChanged without the
// resolve that each of the controller's own status writes would cost when
// the cache has caught up with it: that event brings the status computed
// last, and nothing is left to correct.
type policyChanged struct {
	predicate.Funcs
	computed *computedStatuses
}

func (p policyChanged) Update(e event.UpdateEvent) bool {
	if e.ObjectOld == nil || e.ObjectNew == nil {
		return true
	}
	if e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() {
		return true
	}
	if !statusChanged(e.ObjectOld, e.ObjectNew) {
		return false
	}
	n, ok := e.ObjectNew.(*fwv1.NodeFirewallPolicy)
	return !ok || !p.computed.is(n.Name, n.Status)
}

// computedStatuses are the statuses the controller computed last, by
// policy name, whether it wrote them or found them in its cache.
type computedStatuses struct {
	mu sync.Mutex
	m  map[string]fwv1.NodeFirewallPolicyStatus
}

// set records the statuses of one resolve, which saw every policy.
func (c *computedStatuses) set(m map[string]fwv1.NodeFirewallPolicyStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = m
}

// is tells whether st is the status computed last for the policy.
func (c *computedStatuses) is(name string, st fwv1.NodeFirewallPolicyStatus) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, ok := c.m[name]
	return ok && equality.Semantic.DeepEqual(last, st)
}
