// Package controllers holds the central controller. It is thin: it lists
// the cluster's policies, nodes and node firewalls, hands them to the pure
// resolver and planner (internal/resolve) and status roll-up
// (internal/status), and writes only what they say changed.
package controllers

import (
	"context"
	"fmt"
	"strings"
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
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/revision"
	"github.com/nodefw/nodefw/internal/status"
)

const (
	// FieldManager is the controller's server-side field manager name.
	FieldManager = "nodefw-controller"

	// periodicResolve is the default longest time between two resolves.
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
	// RequestLimit is the largest NodeFirewall, in bytes as sent, that is
	// written; 0 means resolve.DefaultRequestLimit.
	RequestLimit int
	// RevisionLimit is the largest revision, in bytes as sent, that is
	// written; 0 means RequestLimit's.
	RevisionLimit int
	// Config keeps the cluster's settings from the NodeFirewallConfig
	// named default, or the manager's flags without it: the agents'
	// failsafe ports, whose shadows policies report.
	Config *clusterconfig.Tracker
	// PeriodicResolve is the longest time between two resolves, a safety
	// net under the watches; 0 means one minute.
	PeriodicResolve time.Duration

	// computed are the policy statuses of the last resolve, for the
	// policy watch's predicate.
	computed computedStatuses
	// applied are the policies each node's kernel held at its last
	// reported generation, for the status roll-up.
	applied appliedPolicies
	// own are the NodeFirewalls written and not yet in the cache.
	own ownWrites
	// progress paces the status writes that only count applied nodes.
	progress progressWrites
	// ownStatus are the policy statuses written and not yet in the cache.
	ownStatus ownStatuses
	// collectionPutOff is when a pass first put off deleting unreferenced
	// revisions, zero when none is pending.
	collectionPutOff time.Time
	// pacing spaces the passes that node reports start.
	pacing passPacing

	// RevisionNamespace, when set, is the namespace of the
	// ControllerRevisions that hold each policy's rules once: NodeFirewalls
	// name them instead of copying the rules. Empty copies the rules into
	// every NodeFirewall.
	RevisionNamespace string
	// APIReader reads from the API server without a cache: the revisions'
	// names, and the NodeFirewalls before revisions are deleted. Required
	// with RevisionNamespace.
	APIReader client.Reader
	// Shards, when set, writes the shards of the managed address sets
	// right after the sets, before a NodeFirewall names them; it is the
	// reconciler that keeps every set's shards.
	Shards *AddressSetShardReconciler
}

// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewallpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewallpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalls,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalls/finalizers,verbs=update
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalls/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewallconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewallconfigs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile lists everything, resolves it into the desired state, plans
// the NodeFirewall writes that reach it, writes them, and then each
// policy's status.
func (r *NodeFirewallPolicyReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	phases := newPhaseTimer()
	defer func(start time.Time) { r.pacing.ended(start, time.Now()) }(time.Now())
	var policies fwv1.NodeFirewallPolicyList
	if err := r.List(ctx, &policies); err != nil {
		return reconcile.Result{}, err
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return reconcile.Result{}, err
	}
	var nfws fwv1.NodeFirewallList
	if err := r.List(ctx, &nfws); err != nil {
		return reconcile.Result{}, err
	}
	nfws.Items = r.own.overlay(nfws.Items, time.Now())
	r.ownStatus.overlay(policies.Items, time.Now())
	var sets fwv1.NodeFirewallAddressSetList
	if err := r.List(ctx, &sets); err != nil {
		return reconcile.Result{}, err
	}
	r.applied.observe(nfws.Items)

	// Mark newly seen generations of policies as Reconciling first, so a
	// policy never reads Current, or Ready for its last generation, before
	// its nodes have been resolved.
	started, err := r.markReconciling(ctx, policies.Items)
	if err != nil {
		return retryOnConflict(err)
	}

	settings, err := r.settings(ctx)
	if err != nil {
		return retryOnConflict(err)
	}
	failsafes := resolve.Failsafes{Inbound: settings.FailsafeInbound, Outbound: settings.FailsafeOutbound}
	phases.done("list")
	in := resolve.Input{Policies: policies.Items, Nodes: nodes.Items, Current: nfws.Items, Failsafes: failsafes,
		RevisionNamespace: r.RevisionNamespace, RevisionLimit: r.revisionLimit()}
	var listed []metav1.PartialObjectMetadata
	if r.RevisionNamespace != "" {
		if listed, err = r.revisionList(ctx); err != nil {
			return reconcile.Result{}, err
		}
		in.CurrentRevisions = revision.Currents(listed)
	}
	desired := resolve.Resolve(in)
	phases.done("resolve")
	// Revisions first, so that no NodeFirewall names or follows one that
	// is not there. A revision too large for the API server is not written
	// and its policy is held on every node, as one over the controller's
	// own limit is.
	var revisions map[string]bool
	if r.RevisionNamespace != "" {
		revisions = revisionNames(listed)
		refused, err := r.ensureRevisions(ctx, revisions, desired.Revisions)
		if err != nil {
			return reconcile.Result{}, err
		}
		if len(refused) > 0 {
			in.RefusedRevisions = refused
			desired = resolve.Resolve(in)
		}
		if err := r.markCurrent(ctx, listed, desired.Current); err != nil {
			return reconcile.Result{}, err
		}
	}
	plan := resolve.Plan(desired.Nodes, nfws.Items, nodes.Items, time.Now())
	phases.done("plan")
	// Node peers: their sets are written before the NodeFirewalls that name
	// them, and deleted after those stop naming them.
	peerSets := resolve.AddressSetsFor(policies.Items, nodes.Items, sets.Items)
	desired.Problems = append(desired.Problems, peerSets.Problems...)
	setWrites := resolve.PlanAddressSets(peerSets.Managed, sets.Items)
	// A set too large for the API server is not written, and says so on
	// the policies whose node peers it holds; it keeps its addresses.
	heldSets := setWrites.HoldTooLarge(r.requestLimit())
	refusedSets, err := r.writeAddressSets(ctx, setWrites)
	if err != nil {
		return retryOnConflict(err)
	}
	heldSets = append(heldSets, refusedSets...)
	for _, t := range heldSets {
		desired.Problems = append(desired.Problems, t.Problems(policies.Items)...)
	}
	// A NodeFirewall too large for the API server is not written, and says
	// so on its policies; the other nodes' writes go ahead.
	held := plan.HoldTooLarge(r.requestLimit())
	current, rejected, err := r.writeNodeFirewalls(ctx, plan)
	if err != nil {
		return retryOnConflict(err)
	}
	phases.done("nodefirewalls")
	for _, t := range append(held, rejected...) {
		desired.Problems = append(desired.Problems, t.Problems()...)
	}
	if err := r.deleteAddressSets(ctx, setWrites); err != nil {
		return retryOnConflict(err)
	}
	if err := r.writeAddressSetStatuses(ctx, sets.Items, setWrites); err != nil {
		return retryOnConflict(err)
	}
	requeue, moving, err := r.writePolicyStatuses(ctx, policies.Items, desired, current)
	if err != nil {
		return retryOnConflict(err)
	}
	phases.done("status")
	// Revisions no NodeFirewall names are deleted in a pass that wrote no
	// NodeFirewall and saw no rollout start or move (more nodes applying a
	// policy's generation: the pass that reports it Ready comes soon), or
	// collectionPutOffLimit after a pass first put them off. It reads every
	// NodeFirewall from the API server, which would hold up the passes that
	// report the rollout. The limit counts from the end of the pass that put
	// them off: one that took longer, writing every node of a large cluster,
	// would otherwise make the next pass collect while the nodes report.
	if r.RevisionNamespace != "" && mayBeUnused(revisions, inUse(desired)) {
		// A new generation of a followed policy writes no NodeFirewall,
		// and its nodes have yet to report: its rollout starts.
		if collectNow(len(plan.Create)+len(plan.Update) > 0, started || moving, r.collectionPutOff, time.Now()) {
			if err := r.collectRevisions(ctx, revisions, inUse(desired)); err != nil {
				return reconcile.Result{}, err
			}
			r.collectionPutOff = time.Time{}
		} else {
			if r.collectionPutOff.IsZero() {
				r.collectionPutOff = time.Now()
			}
			if requeue == 0 || progressInterval < requeue {
				// Look again when the rollout may have settled.
				requeue = progressInterval
			}
		}
	} else {
		r.collectionPutOff = time.Time{}
	}
	phases.done("revisions")
	log.FromContext(ctx).V(1).Info("resolved", "policies", len(policies.Items), "nodes", len(nodes.Items),
		"created", len(plan.Create), "updated", len(plan.Update), "seconds", phases.total().Seconds(), "phases", phases.String())

	// Resolve again now and then even without events, so that a missed
	// watch event cannot leave a node or a status behind for long.
	periodic := r.PeriodicResolve
	if periodic <= 0 {
		periodic = periodicResolve
	}
	for _, d := range []time.Duration{plan.Requeue, periodic} {
		if d > 0 && (requeue == 0 || d < requeue) {
			requeue = d
		}
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// collectionPutOffLimit is how long revision collection waits for a
// rollout to settle: listing every NodeFirewall from the API server, in a
// cluster of thousands of nodes, takes seconds of its CPU and would slow
// the rollout it waits for.
const collectionPutOffLimit = 5 * time.Minute

// collectNow tells whether a pass deletes the revisions no node names:
// when it wrote no NodeFirewall and saw no rollout move, or when a pass
// first put the deletion off (putOff, zero if none did) over
// collectionPutOffLimit ago.
func collectNow(wrote, moving bool, putOff, now time.Time) bool {
	if wrote {
		return false
	}
	return !moving || (!putOff.IsZero() && now.Sub(putOff) > collectionPutOffLimit)
}

// requestLimit is the largest NodeFirewall the reconciler writes.
func (r *NodeFirewallPolicyReconciler) requestLimit() int {
	if r.RequestLimit > 0 {
		return r.RequestLimit
	}
	return resolve.DefaultRequestLimit
}

// revisionLimit is the largest revision the reconciler writes.
func (r *NodeFirewallPolicyReconciler) revisionLimit() int {
	if r.RevisionLimit > 0 {
		return r.RevisionLimit
	}
	return r.requestLimit()
}

// writeNodeFirewalls makes the writes and returns every node's
// NodeFirewall as written, for the status roll-up, and those the API
// server refused as too large (its own limit may be lower than ours).
func (r *NodeFirewallPolicyReconciler) writeNodeFirewalls(ctx context.Context, w resolve.Writes) (map[string]*fwv1.NodeFirewall, []resolve.TooLarge, error) {
	current := make(map[string]*fwv1.NodeFirewall, len(w.Create)+len(w.Update)+len(w.Unchanged))
	for _, nfw := range w.Unchanged {
		current[nfw.Name] = nfw
	}
	var (
		mu       sync.Mutex
		rejected []resolve.TooLarge
	)
	var written []*fwv1.NodeFirewall
	// done records the outcome of one create or update.
	done := func(nfw *fwv1.NodeFirewall, err error) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			current[nfw.Name] = nfw
			written = append(written, nfw)
		case isTooLarge(err):
			rejected = append(rejected, resolve.TooLarge{Node: nfw.Name, Bytes: resolve.SerializedSize(nfw), Limit: r.requestLimit(), Policies: resolve.PolicyNames(nfw)})
			return nil
		}
		return err
	}
	var writes []func(context.Context) error
	for _, nfw := range w.Create {
		writes = append(writes, func(ctx context.Context) error {
			return done(nfw, r.createNodeFirewall(ctx, nfw))
		})
	}
	for _, nfw := range w.Update {
		writes = append(writes, func(ctx context.Context) error {
			// Only the spec and metadata are written: the API server keeps
			// managed fields that are left out and ignores the status, so
			// the request stays small; the response fills both in again.
			nfw.ManagedFields, nfw.Status = nil, fwv1.NodeFirewallStatus{}
			return done(nfw, r.Update(ctx, nfw, client.FieldOwner(FieldManager)))
		})
	}
	for _, nfw := range w.Delete {
		writes = append(writes, func(ctx context.Context) error {
			return client.IgnoreNotFound(r.Delete(ctx, nfw))
		})
	}
	for _, nfw := range w.ReleaseFinalizer {
		writes = append(writes, func(ctx context.Context) error {
			patch := client.MergeFrom(nfw.DeepCopy())
			released := nfw.DeepCopy()
			controllerutil.RemoveFinalizer(released, fwv1.AgentFinalizer)
			return client.IgnoreNotFound(r.Patch(ctx, released, patch))
		})
	}
	err := r.parallel(ctx, writes)
	r.own.record(written, time.Now())
	deleted := make([]string, 0, len(w.Delete))
	for _, nfw := range w.Delete {
		deleted = append(deleted, nfw.Name)
	}
	r.own.forget(deleted)
	return current, rejected, err
}

// isTooLarge tells whether the API server or etcd refused a write for its
// size: HTTP 413, or etcd's "request is too large" passed through as an
// internal error.
func isTooLarge(err error) bool {
	return apierrors.IsRequestEntityTooLargeError(err) || (err != nil && strings.Contains(err.Error(), "request is too large"))
}

// writePolicyStatuses rolls the nodes' reports up into every policy's
// status, records the Events an operator acts on, and writes the statuses
// that changed. It returns when a status next needs a write (a progress
// deadline passing, progress held back), or 0, and whether a rollout moved.
func (r *NodeFirewallPolicyReconciler) writePolicyStatuses(ctx context.Context, policies []fwv1.NodeFirewallPolicy, desired resolve.Result, current map[string]*fwv1.NodeFirewall) (time.Duration, bool, error) {
	problems := map[string][]resolve.Problem{}
	for _, pr := range desired.Problems {
		problems[pr.Policy] = append(problems[pr.Policy], pr)
	}
	var (
		requeue time.Duration
		moving  bool
		writes  []func(context.Context) error
	)
	computed := make(map[string]fwv1.NodeFirewallPolicyStatus, len(policies))
	earlier := r.applied.earlier(current)
	for i := range policies {
		p := &policies[i]
		st := status.PolicySince(p, desired.Matches[p.Name], current, earlier, problems[p.Name])
		if left := status.ProgressDeadline(&st, time.Now(), r.ProgressDeadline); left > 0 && (requeue == 0 || left < requeue) {
			requeue = left
		}
		computed[p.Name] = st
		if equality.Semantic.DeepEqual(p.Status, st) {
			continue
		}
		moving = moving || progressOnly(p.Status, st)
		if wait := r.progress.wait(p, st, time.Now()); wait > 0 {
			if requeue == 0 || wait < requeue {
				requeue = wait
			}
			continue
		}
		r.recordTransitions(p, st)
		if len(problems[p.Name]) > 0 && !equality.Semantic.DeepEqual(p.Status.Conditions, st.Conditions) {
			for _, pr := range problems[p.Name] {
				r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, pr.Reason, "Resolve", "%s", pr.Message)
			}
		}
		writes = append(writes, func(ctx context.Context) error {
			return r.patchPolicyStatus(ctx, p, st)
		})
	}
	// Before the writes, whose events then find their status computed.
	r.computed.set(computed)
	return requeue, moving, r.parallel(ctx, writes)
}

// patchPolicyStatus writes st as p's status with a merge patch of the
// status fields that differ from p's, so that the request carries the
// status change and not the policy's rules, which may be hundreds of
// kilobytes. The patch names p's resource version: written against a
// policy that changed meanwhile, it conflicts as an update would.
func (r *NodeFirewallPolicyReconciler) patchPolicyStatus(ctx context.Context, p *fwv1.NodeFirewallPolicy, st fwv1.NodeFirewallPolicyStatus) error {
	patch, err := statusPatch(p.ResourceVersion, p.Status, st)
	if err != nil {
		return fmt.Errorf("status patch of policy %s: %w", p.Name, err)
	}
	// p becomes the policy as stored, with its new resource version.
	err = r.Status().Patch(ctx, p, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(FieldManager))
	switch {
	case err == nil:
		now := time.Now()
		r.progress.wrote(p.Name, now)
		r.ownStatus.record(p, now)
	case apierrors.IsConflict(err):
		r.ownStatus.forget(p.Name)
	}
	return client.IgnoreNotFound(err)
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
// generation has no status yet. A new policy needs none: until its first
// status it is served with observedGeneration 0, which reads as in
// progress.
func (r *NodeFirewallPolicyReconciler) markReconciling(ctx context.Context, policies []fwv1.NodeFirewallPolicy) (bool, error) {
	var writes []func(context.Context) error
	for i := range policies {
		p := &policies[i]
		if p.Status.ObservedGeneration == p.Generation || neverObserved(p.Status) {
			continue
		}
		writes = append(writes, func(ctx context.Context) error {
			return r.patchPolicyStatus(ctx, p, status.Reconciling(p))
		})
	}
	return len(writes) > 0, r.parallel(ctx, writes)
}

// createNodeFirewall creates nfw and then marks it Reconciling; on
// success nfw is the object as stored.
func (r *NodeFirewallPolicyReconciler) createNodeFirewall(ctx context.Context, nfw *fwv1.NodeFirewall) error {
	if err := r.Create(ctx, nfw, client.FieldOwner(FieldManager)); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// A stale cache: the next event brings the object and we update it then.
			return fmt.Errorf("creating NodeFirewall %s: %w", nfw.Name, err)
		}
		return err
	}
	// Reconciling until the agent reports, so kstatus never reads Current
	// before anything is in the kernel. Best effort: the agent may be first.
	nfw.Status = status.NodeWaiting(nfw)
	if err := r.Status().Update(ctx, nfw, client.FieldOwner(FieldManager)); err != nil && !apierrors.IsConflict(err) {
		return err
	}
	return nil
}

// parallel runs writes, WriteConcurrency at a time, and returns the first
// error.
func (r *NodeFirewallPolicyReconciler) parallel(ctx context.Context, writes []func(context.Context) error) error {
	return parallel(ctx, r.WriteConcurrency, writes)
}

// parallel runs writes, n at a time (at least one), and returns the first
// error.
func parallel(ctx context.Context, n int, writes []func(context.Context) error) error {
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

// SetupWithManager watches policies, nodes, node firewalls and the
// NodeFirewallConfig, and maps every event to the single cluster-wide
// work item.
func (r *NodeFirewallPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	toCluster := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{clusterKey}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("nodefirewallpolicy").
		// Status changes too: the status written is decided against the
		// cached one, so the cache catching up must resolve again (see
		// specOrStatusChanged and policyChanged).
		Watches(&fwv1.NodeFirewallPolicy{}, toCluster, builder.WithPredicates(policyChanged{computed: &r.computed})).
		Watches(&corev1.Node{}, toCluster, builder.WithPredicates(nodeChanged{})).
		Watches(&fwv1.NodeFirewall{}, r.nodeFirewallEvents()).
		Watches(&fwv1.NodeFirewallConfig{}, toCluster, builder.WithPredicates(specOrStatusChanged{})).
		// Address sets: user sets resolve peers, managed ones are restored;
		// their status is the controller's, so it passes like the others.
		Watches(&fwv1.NodeFirewallAddressSet{}, toCluster, builder.WithPredicates(predicate.Or[client.Object](specOrStatusChanged{}, predicate.LabelChangedPredicate{}))).
		// One work item: concurrency lives in the bounded parallel writes.
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// nodeChanged passes node creations, deletions, and changes of labels and
// of what node peers resolve to (addresses, pod CIDRs); status heartbeats
// are ignored.
type nodeChanged struct{ predicate.Funcs }

func (nodeChanged) Update(e event.UpdateEvent) bool {
	if !equality.Semantic.DeepEqual(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) {
		return true
	}
	// Node peers.
	old, okOld := e.ObjectOld.(*corev1.Node)
	cur, okNew := e.ObjectNew.(*corev1.Node)
	if !okOld || !okNew {
		return true
	}
	return !equality.Semantic.DeepEqual(old.Status.Addresses, cur.Status.Addresses) ||
		!equality.Semantic.DeepEqual(old.Spec.PodCIDRs, cur.Spec.PodCIDRs)
}
