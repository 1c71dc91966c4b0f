// Package controllers holds the central controller. It is thin: it lists
// the cluster's policies, nodes and node firewalls, calls the pure resolver
// and status roll-up in internal/, and writes only what changed.
package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/status"
)

const (
	// FieldManager is the controller's server-side field manager name.
	FieldManager = "nodefw-controller"

	// AgentFinalizer is owned by the node agent: it removes its nftables
	// table before letting its NodeFirewall go.
	AgentFinalizer = "firewall.nodefw.io/agent-cleanup"

	// orphanFinalizerGrace is how long a deleted node's agent gets to run its
	// cleanup before the controller drops the agent finalizer itself.
	orphanFinalizerGrace = 30 * time.Second

	// periodicResolve is the longest time between two resolves.
	periodicResolve = time.Minute
)

// clusterKey is the one work item: every event leads to a full resolve, as
// the desired state of a node depends on all policies.
var clusterKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "cluster"}}

// NodeFirewallPolicyReconciler resolves policies into per-node NodeFirewalls
// and rolls the agents' reports up into each policy's status.
type NodeFirewallPolicyReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// WriteConcurrency bounds parallel NodeFirewall and status writes.
	WriteConcurrency int
	// ProgressDeadline is how long a policy may stay Reconciling before it
	// is reported Stalled; 0 means no deadline.
	ProgressDeadline time.Duration
	// FailsafeInbound and FailsafeOutbound are the agents' failsafe ports,
	// used to warn about rules they shadow.
	FailsafeInbound, FailsafeOutbound []compile.Failsafe
}

// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewallpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewallpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalls,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalls/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile lists everything, resolves, and writes the differences.
func (r *NodeFirewallPolicyReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)

	var policies fwv1.NodeFirewallPolicyList
	if err := r.List(ctx, &policies); err != nil {
		return reconcile.Result{}, err
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return reconcile.Result{}, err
	}
	var nfwList fwv1.NodeFirewallList
	if err := r.List(ctx, &nfwList); err != nil {
		return reconcile.Result{}, err
	}

	// Mark newly seen generations as Reconciling first, so a policy never
	// reads Current before its nodes have been resolved.
	if err := r.markReconciling(ctx, policies.Items); err != nil {
		return retryOnConflict(err)
	}

	desired := resolve.Resolve(resolve.Input{Policies: policies.Items, Nodes: nodes.Items, Current: nfwList.Items})

	existing := make(map[string]*fwv1.NodeFirewall, len(nfwList.Items))
	for i := range nfwList.Items {
		existing[nfwList.Items[i].Name] = &nfwList.Items[i]
	}
	nodeByName := make(map[string]*corev1.Node, len(nodes.Items))
	for i := range nodes.Items {
		nodeByName[nodes.Items[i].Name] = &nodes.Items[i]
	}

	var (
		mu      sync.Mutex
		current = make(map[string]*fwv1.NodeFirewall, len(nodes.Items))
		requeue time.Duration
	)
	var writes []func(context.Context) error
	for name, spec := range desired.Nodes {
		node, nfw := nodeByName[name], existing[name]
		switch {
		case nfw == nil:
			writes = append(writes, func(ctx context.Context) error {
				created, err := r.createNodeFirewall(ctx, node, spec)
				if err == nil {
					mu.Lock()
					current[name] = created
					mu.Unlock()
				}
				return err
			})
		case !equality.Semantic.DeepEqual(nfw.Spec, spec) || !hasOwner(nfw, node):
			writes = append(writes, func(ctx context.Context) error {
				updated := nfw.DeepCopy()
				updated.Spec = spec
				setOwner(updated, node)
				if err := r.Update(ctx, updated, client.FieldOwner(FieldManager)); err != nil {
					return err
				}
				mu.Lock()
				current[name] = updated
				mu.Unlock()
				return nil
			})
		default:
			current[name] = nfw
		}
	}
	for name, nfw := range existing {
		if _, ok := nodeByName[name]; ok {
			continue
		}
		if nfw.DeletionTimestamp == nil {
			writes = append(writes, func(ctx context.Context) error {
				return client.IgnoreNotFound(r.Delete(ctx, nfw))
			})
			continue
		}
		// The node is gone; its agent may be gone too. After a grace period,
		// release the agent's finalizer so the object does not linger.
		if wait := orphanFinalizerGrace - time.Since(nfw.DeletionTimestamp.Time); wait > 0 {
			if requeue == 0 || wait < requeue {
				requeue = wait
			}
		} else if controllerutil.ContainsFinalizer(nfw, AgentFinalizer) {
			writes = append(writes, func(ctx context.Context) error {
				patch := client.MergeFrom(nfw.DeepCopy())
				updated := nfw.DeepCopy()
				controllerutil.RemoveFinalizer(updated, AgentFinalizer)
				return client.IgnoreNotFound(r.Patch(ctx, updated, patch))
			})
		}
	}
	if err := r.parallel(ctx, writes); err != nil {
		return retryOnConflict(err)
	}

	problems := map[string][]resolve.Problem{}
	for _, pr := range desired.Problems {
		problems[pr.Policy] = append(problems[pr.Policy], pr)
	}
	for i := range policies.Items {
		p := &policies.Items[i]
		problems[p.Name] = append(problems[p.Name], resolve.FailsafeShadows(p, r.FailsafeInbound, r.FailsafeOutbound)...)
	}
	writes = writes[:0]
	for i := range policies.Items {
		p := &policies.Items[i]
		st := status.Policy(p, desired.Matches[p.Name], current, problems[p.Name])
		if left := status.ProgressDeadline(&st, time.Now(), r.ProgressDeadline); left > 0 && (requeue == 0 || left < requeue) {
			requeue = left
		}
		if equality.Semantic.DeepEqual(p.Status, st) {
			continue
		}
		r.recordTransitions(p, st)
		if len(problems[p.Name]) > 0 && !equality.Semantic.DeepEqual(p.Status.Conditions, st.Conditions) {
			for _, pr := range problems[p.Name] {
				r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, string(pr.Reason), "Resolve", "%s", pr.Message)
			}
		}
		writes = append(writes, func(ctx context.Context) error {
			updated := p.DeepCopy()
			updated.Status = st
			return client.IgnoreNotFound(r.Status().Update(ctx, updated, client.FieldOwner(FieldManager)))
		})
	}
	if err := r.parallel(ctx, writes); err != nil {
		return retryOnConflict(err)
	}
	logger.V(1).Info("resolved", "policies", len(policies.Items), "nodes", len(nodes.Items))
	// Resolve again now and then even without events, so that a missed
	// watch event cannot leave a node or a status behind for long.
	if requeue == 0 || requeue > periodicResolve {
		requeue = periodicResolve
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// recordTransitions records an Event when a policy becomes Ready or
// Stalled, the moments an operator acts on.
func (r *NodeFirewallPolicyReconciler) recordTransitions(p *fwv1.NodeFirewallPolicy, st fwv1.NodeFirewallPolicyStatus) {
	became := func(t string) *metav1.Condition {
		now := meta.FindStatusCondition(st.Conditions, t)
		if now == nil || now.Status != metav1.ConditionTrue {
			return nil
		}
		was := meta.FindStatusCondition(p.Status.Conditions, t)
		if was != nil && was.Status == metav1.ConditionTrue && was.ObservedGeneration == now.ObservedGeneration && was.Reason == now.Reason {
			return nil
		}
		return now
	}
	if c := became(fwv1.ConditionReady); c != nil {
		r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, c.Reason, "Rollup", "Generation %d: %s", p.Generation, c.Message)
	}
	if c := became(fwv1.ConditionStalled); c != nil {
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, c.Reason, "Rollup", "Generation %d: %s", p.Generation, c.Message)
	}
}

// retryOnConflict turns an optimistic-concurrency conflict (an agent wrote
// status between our read and our write) into a quiet, quick retry.
func retryOnConflict(err error) (reconcile.Result, error) {
	if apierrors.IsConflict(err) {
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	return reconcile.Result{}, err
}

// markReconciling writes Reconciling=True for policies whose current
// generation has no status yet.
func (r *NodeFirewallPolicyReconciler) markReconciling(ctx context.Context, policies []fwv1.NodeFirewallPolicy) error {
	var writes []func(context.Context) error
	for i := range policies {
		p := &policies[i]
		if p.Status.ObservedGeneration == p.Generation {
			continue
		}
		writes = append(writes, func(ctx context.Context) error {
			p.Status = status.Reconciling(p)
			if err := r.Status().Update(ctx, p, client.FieldOwner(FieldManager)); err != nil {
				return client.IgnoreNotFound(err)
			}
			return nil
		})
	}
	return r.parallel(ctx, writes)
}

func (r *NodeFirewallPolicyReconciler) createNodeFirewall(ctx context.Context, node *corev1.Node, spec fwv1.NodeFirewallSpec) (*fwv1.NodeFirewall, error) {
	nfw := &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: node.Name}, Spec: spec}
	setOwner(nfw, node)
	if err := r.Create(ctx, nfw, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// A stale cache: the next event brings the object and we update it then.
			return nil, fmt.Errorf("creating NodeFirewall %s: %w", node.Name, err)
		}
		return nil, err
	}
	// Reconciling until the agent reports, so kstatus never reads Current
	// before anything is in the kernel. Best effort: the agent may be first.
	nfw.Status = status.NodeWaiting(nfw)
	if err := r.Status().Update(ctx, nfw, client.FieldOwner(FieldManager)); err != nil && !apierrors.IsConflict(err) {
		return nil, err
	}
	return nfw, nil
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

// parallel runs writes with bounded concurrency and returns the first error.
func (r *NodeFirewallPolicyReconciler) parallel(ctx context.Context, writes []func(context.Context) error) error {
	n := r.WriteConcurrency
	if n < 1 {
		n = 1
	}
	sem := make(chan struct{}, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, w := range writes {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := w(ctx); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// SetupWithManager watches policies, nodes and node firewalls, and maps
// every event to the single cluster-wide work item.
func (r *NodeFirewallPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toCluster := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{clusterKey}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("nodefirewallpolicy").
		Watches(&fwv1.NodeFirewallPolicy{}, toCluster, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Node{}, toCluster, builder.WithPredicates(nodeChanged{})).
		Watches(&fwv1.NodeFirewall{}, toCluster).
		// One work item: concurrency lives in the bounded parallel writes.
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// nodeChanged passes node creations, deletions, and label or UID changes;
// status heartbeats are ignored.
type nodeChanged struct{ predicate.Funcs }

func (nodeChanged) Update(e event.UpdateEvent) bool {
	return !equality.Semantic.DeepEqual(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
}
