package agent

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/addressshard"
)

// CacheOptions make an agent's informer watch only its own node's
// NodeFirewall, filtered by the API server with a field selector, so that no
// agent receives the updates of other nodes: 5,000 agents each watching the
// whole cluster would turn every change into 5,000 deliveries. Of the
// NodeFirewallConfigs it watches the one named default; of the
// ControllerRevisions, the address sets' shards in shardNamespace (the
// controller's), by their label. The manager SetupWithManager registers
// with is built with them.
func CacheOptions(nodeName, shardNamespace string) cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&fwv1.NodeFirewall{}:       {Field: fields.OneTermEqualSelector("metadata.name", nodeName)},
			&fwv1.NodeFirewallConfig{}: {Field: fields.OneTermEqualSelector("metadata.name", fwv1.NodeFirewallConfigName)},
			&appsv1.ControllerRevision{}: {
				Namespaces: map[string]cache.Config{shardNamespace: {}},
				Label:      addressshard.Selector(),
			},
		},
	}
}

// SetupWithManager registers the Reconciler with mgr, whose cache should
// come from CacheOptions: one reconcile at a time, and errors retried with
// a backoff of at most ResyncPeriod, so that there is no hot loop while
// the API server is away and no long stall after it returns. With Config
// set, a change of the NodeFirewallConfig reconciles the node's
// NodeFirewall too.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	limiter := workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](200*time.Millisecond, r.ResyncPeriod)
	b := ctrl.NewControllerManagedBy(mgr).
		Named("nodefirewall-agent").
		For(&fwv1.NodeFirewall{})
	if r.Config != nil {
		toNode := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: r.NodeName}}}
		})
		b = b.Watches(&fwv1.NodeFirewallConfig{}, toNode, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	}
	// Followed policies: a revision marked current, from the metadata of
	// the marked revisions alone (CurrentRevisionsCache).
	if r.CurrentRevisions != nil {
		b = b.WatchesRawSource(r.currentRevisionSource())
	}
	// Peers: a shard created or deleted of a set the rules look up
	// updates its elements. Shards never change.
	if r.ShardNamespace != "" {
		b = b.Watches(&appsv1.ControllerRevision{}, handler.EnqueueRequestsFromMapFunc(r.addressSetRequests))
	}
	return b.WithOptions(controller.Options{MaxConcurrentReconciles: 1, RateLimiter: limiter}).Complete(r)
}
