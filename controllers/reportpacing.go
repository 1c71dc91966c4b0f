package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// reportPassGap is how long after a pass, at least, the reports of node
// agents (NodeFirewall status updates) wait before they start the next
// one; after a longer pass they wait as long as it took. A change that
// thousands of nodes apply brings thousands of reports over tens of
// seconds, and every pass lists, resolves and rolls up the whole cluster:
// without a gap the controller would resolve back to back and take the
// CPU the API server needs to store the reports. The roll-up is written at
// most once a progressInterval while nodes report anyway.
const reportPassGap = progressInterval

// passPacing remembers when the last pass ended and how long it took.
type passPacing struct {
	mu   sync.Mutex
	last time.Time
	took time.Duration
}

// ended records a pass that ran from start to end.
func (p *passPacing) ended(start, end time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last, p.took = end, end.Sub(start)
}

// reportWait is how long a node report arriving at now waits before it
// starts a pass: until reportPassGap, or as long as the last pass took,
// after it ended. Reports then cost the controller at most half of its
// time.
func (p *passPacing) reportWait(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(0, p.last.Add(max(reportPassGap, p.took)).Sub(now))
}

// nodeFirewallEvents queues the one work item for every NodeFirewall
// event: at once for a creation, a deletion or a change of the spec or
// metadata, after reportWait for an update that changes only the status,
// an agent's report.
func (r *NodeFirewallPolicyReconciler) nodeFirewallEvents() handler.TypedEventHandler[client.Object, reconcile.Request] {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) { q.Add(clusterKey) }
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		CreateFunc: func(_ context.Context, _ event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		DeleteFunc: func(_ context.Context, _ event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		GenericFunc: func(_ context.Context, _ event.TypedGenericEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q)
		},
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if !onlyStatusChanged(e.ObjectOld, e.ObjectNew) {
				add(q)
				return
			}
			if wait := r.pacing.reportWait(time.Now()); wait > 0 {
				q.AddAfter(clusterKey, wait)
				return
			}
			add(q)
		},
	}
}

// onlyStatusChanged tells whether an update of a NodeFirewall changed
// neither its generation nor its metadata's deletion, finalizers or
// labels: an agent's status report.
func onlyStatusChanged(old, cur client.Object) bool {
	if old == nil || cur == nil {
		return false
	}
	return old.GetGeneration() == cur.GetGeneration() &&
		old.GetDeletionTimestamp().Equal(cur.GetDeletionTimestamp()) &&
		equality.Semantic.DeepEqual(old.GetFinalizers(), cur.GetFinalizers()) &&
		equality.Semantic.DeepEqual(old.GetLabels(), cur.GetLabels())
}
