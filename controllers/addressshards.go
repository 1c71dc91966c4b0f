package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/addressshard"
)

// shardResync is how often a set's shards are checked without an event,
// in case one was deleted from outside.
const shardResync = 10 * time.Minute

// AddressSetShardReconciler keeps the shards the agents read of every
// NodeFirewallAddressSet, the users' and the managed ones
// (internal/addressshard): one set at a time, apart from the policies'
// resolve, so that a set change reaches the agents in a few small writes.
type AddressSetShardReconciler struct {
	client.Client
	// APIReader lists the shards there are, from the API server.
	APIReader client.Reader
	// Namespace holds the shards: the controller's, as for the policies'
	// revisions.
	Namespace string
	// WriteConcurrency bounds parallel shard writes.
	WriteConcurrency int

	// locks keeps two writers of one set's shards (this reconciler and
	// the policies' reconciler, for a managed set it just wrote) apart:
	// the second then finds the shards written and has nothing to do.
	locks sync.Map // set name -> *sync.Mutex
}

// Reconcile brings the shards of one set in line with its spec, or
// deletes them when the set is gone.
func (r *AddressSetShardReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	s := &fwv1.NodeFirewallAddressSet{}
	if err := r.Get(ctx, req.NamespacedName, s); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
		s = nil
	}
	if err := r.Write(ctx, req.Name, s); err != nil {
		return reconcile.Result{}, err
	}
	if s == nil {
		// The set's shards are gone, and so is its lock: a writer that
		// still holds it has nothing left to write.
		r.locks.Delete(req.Name)
		return reconcile.Result{}, nil
	}
	return reconcile.Result{RequeueAfter: shardResync}, nil
}

// Write makes the shards of the set called name those of s, or none when
// s is nil or being deleted.
func (r *AddressSetShardReconciler) Write(ctx context.Context, name string, s *fwv1.NodeFirewallAddressSet) error {
	l, _ := r.locks.LoadOrStore(name, &sync.Mutex{})
	mu := l.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	w := shardWriter{c: r.Client, reader: r.APIReader, namespace: r.Namespace, concurrency: r.WriteConcurrency}
	return w.sync(ctx, name, s)
}

// SetupWithManager reconciles every set on a change of its spec, its
// creation and its deletion.
func (r *AddressSetShardReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("addresssetshards").
		For(&fwv1.NodeFirewallAddressSet{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// shardWriter writes the shards of sets.
type shardWriter struct {
	c           client.Client
	reader      client.Reader
	namespace   string
	concurrency int
}

// sync makes the shards of the set called name those of s (none when s is
// nil or being deleted): it creates the missing ones, and only then
// deletes the ones they replace, so that an agent always finds the set
// whole. A cached s older than the shards there are is left to the event
// of its newer generation, which the cache is about to deliver.
func (w shardWriter) sync(ctx context.Context, name string, s *fwv1.NodeFirewallAddressSet) error {
	existing, err := w.list(ctx, name)
	if err != nil {
		return err
	}
	var desired []*appsv1.ControllerRevision
	if s != nil && s.DeletionTimestamp.IsZero() {
		for _, ref := range existing {
			if ref.UID == s.UID && ref.Generation > s.Generation {
				return nil
			}
		}
		current := 0
		if sel := addressshard.Select(existing); sel != nil {
			current = sel[0].K
		}
		desired = addressshard.For(s, w.namespace, current)
	}
	have := make(map[string]bool, len(existing))
	for _, ref := range existing {
		have[ref.Name] = true
	}
	keep := make(map[string]bool, len(desired))
	var creates []func(context.Context) error
	for _, cr := range desired {
		keep[cr.Name] = true
		if have[cr.Name] {
			continue
		}
		creates = append(creates, func(ctx context.Context) error {
			if err := w.c.Create(ctx, cr, client.FieldOwner(FieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating shard %s of address set %s: %w", cr.Name, name, err)
			}
			return nil
		})
	}
	if err := parallel(ctx, w.concurrency, creates); err != nil {
		return err
	}
	var deletes []func(context.Context) error
	for _, ref := range existing {
		if keep[ref.Name] {
			continue
		}
		deletes = append(deletes, func(ctx context.Context) error {
			cr := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: w.namespace}}
			return client.IgnoreNotFound(w.c.Delete(ctx, cr))
		})
	}
	if len(creates)+len(deletes) > 0 {
		log.FromContext(ctx).V(1).Info("wrote address set shards", "set", name, "created", len(creates), "deleted", len(deletes))
	}
	return parallel(ctx, w.concurrency, deletes)
}

// list reads the metadata of the shards of the set called name from the
// API server: the labels and annotations say all sync needs.
func (w shardWriter) list(ctx context.Context, name string) ([]addressshard.Ref, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ControllerRevisionList"))
	if err := w.reader.List(ctx, list, client.InNamespace(w.namespace),
		client.MatchingLabels{addressshard.LabelSet: addressshard.SetHash(name)}); err != nil {
		return nil, fmt.Errorf("listing the shards of address set %s: %w", name, err)
	}
	out := make([]addressshard.Ref, 0, len(list.Items))
	for i := range list.Items {
		if ref, ok := addressshard.RefOf(&list.Items[i]); ok && ref.Set == name {
			out = append(out, ref)
		}
	}
	return out, nil
}
