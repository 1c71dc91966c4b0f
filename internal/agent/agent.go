// Package agent is the node agent's reconcile loop: it turns its node's
// NodeFirewall into the kernel ruleset through a Firewall, repairs drift,
// and reports back in NodeFirewall.status. The kernel side sits behind the
// Firewall interface so the loop is tested without root.
package agent

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/nft"
	"github.com/nodefw/nodefw/internal/revision"
	"github.com/nodefw/nodefw/internal/status"
)

// fieldManager is the agent's field manager name.
const fieldManager = "nodefw-agent"

// Firewall is the kernel side: one nftables table, replaced atomically.
// It, not the Reconciler, keeps the ruleset committed last: the Reconciler
// asks Committed, and keeps only the generation that ruleset came from.
type Firewall interface {
	// Apply makes the table rs: packets meet the old ruleset or the new
	// one, never a mix or an empty table.
	Apply(rs *compile.Ruleset) (nft.ApplyStats, error)
	// Drift describes how the kernel's table differs from rs, or returns
	// "" when it is exactly rs, which then becomes the committed ruleset.
	Drift(rs *compile.Ruleset) (string, error)
	// Committed is the ruleset last applied, or found by Drift to be the
	// table; nil before either and after Delete. A failed Apply leaves it
	// as it was.
	Committed() *compile.Ruleset
	// Delete removes the table, and nothing else; absent is not an error.
	Delete() error
}

// Reconciler programs one node's NodeFirewall.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Firewall Firewall
	Metrics  *Metrics

	NodeName     string
	Compile      compile.Options
	ResyncPeriod time.Duration

	// Confirm, when set, is asked after each new ruleset; if the control
	// plane was reachable before and stays unreachable for ConfirmTimeout,
	// the previous ruleset is restored and the generation is refused.
	Confirm        Confirmer
	ConfirmTimeout time.Duration

	// Config, when set, keeps the cluster's settings from the
	// NodeFirewallConfig named default, read at every reconcile so that a
	// change applies without a restart: its failsafes, set lookups,
	// resync period and confirm timeout stand in for the fields above,
	// which apply while there is no such object.
	Config *clusterconfig.Tracker
	// ConfirmerFor makes the Confirmer for a NodeFirewallConfig's
	// confirmEndpoint; without it the endpoint is ignored and Confirm
	// stays.
	ConfirmerFor func(endpoint string) Confirmer

	// Revisions fetches the ControllerRevisions holding the policies'
	// rules that the NodeFirewall names; without it such a NodeFirewall
	// is not applied.
	Revisions *Revisions

	// CurrentRevisions, when set, is the cache of the revisions marked
	// current (CurrentRevisionsCache), in Revisions.Namespace, which the
	// policies the NodeFirewall follows are pinned to; without it they are
	// read from the API server at each reconcile.
	CurrentRevisions cache.Cache

	// ShardNamespace is the namespace of the shards holding the address
	// sets' contents (internal/addressshard), the controller's, which the
	// cache watches (CacheOptions); empty, every set is missing.
	ShardNamespace string

	// LogSources, when set, is given the log prefixes of every ruleset
	// committed, for the drop-log reader to name policies and rules.
	LogSources func(map[string]compile.LogSource)

	mu sync.Mutex
	// cur are the settings of the reconcile under way, or of the last one.
	cur settings
	// refusedConfigGen is the NodeFirewallConfig generation last logged as
	// refused.
	refusedConfigGen int64
	// committed are the generations of the Firewall's committed ruleset,
	// the one drift repair restores: the same generations and a table that
	// differs mean a change from outside.
	committed generations
	// reverted are generations that cut the node off and were reverted;
	// they are not tried again until the NodeFirewall, the
	// NodeFirewallConfig or a followed policy's current revision changes.
	reverted generations

	// setRefs are the address sets the rules last looked up (sets.go),
	// shards the entries of the shards they were made of, and parsed
	// their contents (setcache.go).
	setRefs addressSetRefs
	shards  shardEntries
	parsed  parsedSets

	// lastPinned are the current revisions of the followed policies last
	// pinned, kept for a policy that is gone.
	lastPinned map[string]revision.Current
}

// The agent's RBAC. Patch on nodefirewalls is only for the agent's own
// finalizer; the admission policy in config/agent keeps an agent to its own
// node's object and to metadata.finalizers and status.
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalls,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalls/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=firewall.nodefw.io,resources=nodefirewalls/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings the kernel in line with the node's NodeFirewall.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur = r.currentSettings(ctx)
	resync := reconcile.Result{RequeueAfter: r.cur.resync}

	nfw := &fwv1.NodeFirewall{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: r.NodeName}, nfw); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, err
		}
		// No NodeFirewall (yet): fail-static. Whatever the kernel holds
		// stays, and drift repair keeps restoring what we last applied.
		return resync, r.repairDrift(ctx, nil)
	}
	if !nfw.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, r.cleanup(ctx, nfw)
	}
	if err := r.ensureFinalizer(ctx, nfw); err != nil {
		return reconcile.Result{}, err
	}
	spec, err := r.expand(ctx, nfw)
	if err != nil {
		return reconcile.Result{}, r.revisionUnavailable(ctx, nfw, err)
	}
	// Peers: the contents of the address sets the rules look up.
	sets, setGens, err := r.addressSets(ctx, spec)
	if err != nil {
		return reconcile.Result{}, err
	}
	r.cur.compile.AddressSets, r.cur.addressSets = sets, setGens
	rs, err := compile.Compile(spec, r.cur.compile)
	if err != nil {
		return resync, r.refuse(ctx, nfw, err)
	}
	if r.generations(nfw) == r.reverted {
		// Keep the ruleset we reverted to until the NodeFirewall or the
		// NodeFirewallConfig changes.
		if err := r.repairDrift(ctx, nfw); err != nil {
			log.FromContext(ctx).Error(err, "repairing drift of the previous ruleset")
		}
		return resync, nil
	}
	return r.sync(ctx, nfw, rs)
}

// ensureFinalizer adds the agent's finalizer, so that the table goes
// before the NodeFirewall does.
func (r *Reconciler) ensureFinalizer(ctx context.Context, nfw *fwv1.NodeFirewall) error {
	if controllerutil.ContainsFinalizer(nfw, fwv1.AgentFinalizer) {
		return nil
	}
	patch := client.MergeFrom(nfw.DeepCopy())
	controllerutil.AddFinalizer(nfw, fwv1.AgentFinalizer)
	return r.Client.Patch(ctx, nfw, patch, client.FieldOwner(fieldManager))
}

// expand is the NodeFirewall's spec with the rules of the revisions it
// names or follows in place: what the compiler takes.
func (r *Reconciler) expand(ctx context.Context, nfw *fwv1.NodeFirewall) (fwv1.NodeFirewallSpec, error) {
	pinned, err := r.pin(ctx, nfw)
	if err != nil {
		return fwv1.NodeFirewallSpec{}, err
	}
	v := r.Revisions
	if v == nil {
		v = &Revisions{}
	}
	return v.Expand(ctx, pinned)
}

// revisionUnavailable keeps the last good ruleset while a revision the
// NodeFirewall names cannot be read (not yet visible, or no access), says
// why, and returns err so that the read is retried with a backoff.
func (r *Reconciler) revisionUnavailable(ctx context.Context, nfw *fwv1.NodeFirewall, err error) error {
	logger := log.FromContext(ctx)
	logger.Error(err, "reading the NodeFirewall's revisions; keeping the previous ruleset")
	r.event(nfw, corev1.EventTypeWarning, ReasonRevisionUnavailable, "%v", err)
	if derr := r.repairDrift(ctx, nfw); derr != nil {
		logger.Error(derr, "repairing drift of the previous ruleset")
	}
	if serr := r.writeStatus(ctx, nfw, status.NodeFailed(nfw, ReasonRevisionUnavailable, err)); serr != nil {
		logger.Error(serr, "writing status")
	}
	return err
}

// refuse keeps the last good ruleset for a NodeFirewall that fails the
// agent's own checks, and says why.
func (r *Reconciler) refuse(ctx context.Context, nfw *fwv1.NodeFirewall, err error) error {
	logger := log.FromContext(ctx)
	logger.Error(err, "refusing invalid NodeFirewall; keeping the previous ruleset")
	r.Metrics.ApplyErrors.Inc()
	r.event(nfw, corev1.EventTypeWarning, fwv1.ReasonInvalidSpec, "Refused: %v", err)
	if derr := r.repairDrift(ctx, nfw); derr != nil {
		logger.Error(derr, "repairing drift of the previous ruleset")
	}
	return r.writeStatus(ctx, nfw, status.NodeFailed(nfw, fwv1.ReasonInvalidSpec, err))
}

// sync brings the kernel to rs, the node's NodeFirewall compiled, and the
// status in line with it: a table that is rs already is kept (adopted
// after a restart), any other is replaced.
func (r *Reconciler) sync(ctx context.Context, nfw *fwv1.NodeFirewall, rs *compile.Ruleset) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	previous := r.Firewall.Committed()
	drift, err := r.Firewall.Drift(rs)
	if err != nil {
		logger.Error(err, "reading the kernel ruleset")
	}
	if err != nil || drift != "" {
		return r.applyChange(ctx, nfw, rs, previous, drift)
	}
	if previous == nil {
		// A restart finds its own table already right: adopt it.
		logger.Info("adopted the existing table", "generation", nfw.Generation)
	}
	r.committed = r.generations(nfw)
	r.Metrics.RulesProgrammed.Set(float64(rs.RuleCount()))

	// In the kernel already: make sure the status says so.
	resync := reconcile.Result{RequeueAfter: r.cur.resync}
	if !r.appliedStatus(nfw, rs.RuleCount()) {
		at := metav1.Now()
		if nfw.Status.LastAppliedTime != nil {
			at = *nfw.Status.LastAppliedTime
		}
		return resync, r.writeStatus(ctx, nfw, status.NodeApplied(nfw, r.cur.followed, rs.RuleCount(), at))
	}
	return resync, nil
}

// applyChange commits rs, which the kernel does not hold: a new
// generation, or the committed one again after a change from outside
// (drift, described by how). A new generation that cuts the node off from
// its control plane is reverted to previous.
func (r *Reconciler) applyChange(ctx context.Context, nfw *fwv1.NodeFirewall, rs, previous *compile.Ruleset, how string) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	resync := reconcile.Result{RequeueAfter: r.cur.resync}
	drift := previous != nil && r.committed == r.generations(nfw)
	reachableBefore := !drift && r.cur.confirm != nil && r.cur.confirm.Reachable(ctx)
	stats, err := r.apply(rs)
	if err != nil {
		logger.Error(err, "applying ruleset")
		r.event(nfw, corev1.EventTypeWarning, fwv1.ReasonApplyFailed, "Apply failed: %v", err)
		if serr := r.writeStatus(ctx, nfw, status.NodeFailed(nfw, fwv1.ReasonApplyFailed, err)); serr != nil {
			logger.Error(serr, "writing status")
		}
		return reconcile.Result{}, err
	}
	if reachableBefore && !r.confirm(ctx) {
		return resync, r.revert(ctx, nfw, previous)
	}
	r.committed = r.generations(nfw)
	if drift {
		r.Metrics.DriftRepairs.Inc()
		r.event(nfw, corev1.EventTypeWarning, "DriftRepaired", "Restored table %s after an outside change", rs.Table)
		logger.Info("repaired drift", "table", rs.Table, "drift", how, "batch", stats)
	} else {
		r.event(nfw, corev1.EventTypeNormal, fwv1.ReasonApplied, "Applied generation %d: %d rules", nfw.Generation, rs.RuleCount())
		logger.Info("applied", "generation", nfw.Generation, "rules", rs.RuleCount(), "batch", stats)
	}
	nfw.Status = status.NodeApplied(nfw, r.cur.followed, rs.RuleCount(), metav1.Now())
	return resync, r.writeStatus(ctx, nfw, nfw.Status)
}

// appliedStatus reports whether the status already says this generation,
// with the followed policies' generations pinned, is applied.
func (r *Reconciler) appliedStatus(nfw *fwv1.NodeFirewall, rules int) bool {
	ready := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == nfw.Generation &&
		nfw.Status.ObservedGeneration == nfw.Generation && nfw.Status.RuleCount == int32(rules) && nfw.Status.LastError == "" &&
		maps.Equal(nfw.Status.PolicyGenerations, r.cur.followed)
}

// generations are the generations a ruleset compiled now comes from.
func (r *Reconciler) generations(nfw *fwv1.NodeFirewall) generations {
	return generations{nfw: nfw.Generation, config: r.cur.configGen, addressSets: r.cur.addressSets, policies: generationsKey(r.cur.followed)}
}

// confirm waits up to the confirm timeout for the control plane to be
// reachable under the new ruleset.
func (r *Reconciler) confirm(ctx context.Context) bool {
	deadline := time.Now().Add(r.cur.confirmTimeout)
	for {
		if r.cur.confirm.Reachable(ctx) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// revert restores the ruleset that was in place before a generation that
// cut the node off from its control plane, and reports Reverted.
func (r *Reconciler) revert(ctx context.Context, nfw *fwv1.NodeFirewall, previous *compile.Ruleset) error {
	logger := log.FromContext(ctx)
	var err error
	if previous != nil {
		_, err = r.apply(previous)
	} else {
		// There was no ruleset of ours before: going back means none.
		err = r.Firewall.Delete()
	}
	if err != nil {
		return fmt.Errorf("reverting after losing the control plane: %w", err)
	}
	if previous == nil {
		r.Metrics.RulesProgrammed.Set(0)
	}
	r.reverted = r.generations(nfw)
	cause := fmt.Errorf("generation %d cut the node off from its control plane within %v; reverted to the previous ruleset", nfw.Generation, r.cur.confirmTimeout)
	logger.Error(cause, "reverted")
	r.event(nfw, corev1.EventTypeWarning, fwv1.ReasonReverted, "%v", cause)
	return r.writeStatus(ctx, nfw, status.NodeFailed(nfw, fwv1.ReasonReverted, cause))
}

// repairDrift restores the committed ruleset if the kernel lost it.
func (r *Reconciler) repairDrift(ctx context.Context, nfw *fwv1.NodeFirewall) error {
	rs := r.Firewall.Committed()
	if rs == nil {
		return nil
	}
	drift, err := r.Firewall.Drift(rs)
	if err != nil || drift == "" {
		return err
	}
	stats, err := r.apply(rs)
	if err != nil {
		return err
	}
	r.Metrics.DriftRepairs.Inc()
	log.FromContext(ctx).Info("repaired drift", "table", rs.Table, "drift", drift, "batch", stats)
	if nfw != nil {
		r.event(nfw, corev1.EventTypeWarning, "DriftRepaired", "Restored table %s after an outside change", rs.Table)
	}
	return nil
}

// apply commits a ruleset and records metrics.
func (r *Reconciler) apply(rs *compile.Ruleset) (nft.ApplyStats, error) {
	start := time.Now()
	stats, err := r.Firewall.Apply(rs)
	r.Metrics.ApplyDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		r.Metrics.ApplyErrors.Inc()
		return nft.ApplyStats{}, err
	}
	r.Metrics.Applies.Inc()
	r.Metrics.RulesProgrammed.Set(float64(rs.RuleCount()))
	if r.LogSources != nil {
		r.LogSources(rs.LogSources)
	}
	return stats, nil
}

// cleanup removes the table and releases the finalizer.
func (r *Reconciler) cleanup(ctx context.Context, nfw *fwv1.NodeFirewall) error {
	if !controllerutil.ContainsFinalizer(nfw, fwv1.AgentFinalizer) {
		return nil
	}
	if err := r.Firewall.Delete(); err != nil {
		return fmt.Errorf("deleting table: %w", err)
	}
	r.committed = generations{}
	r.Metrics.RulesProgrammed.Set(0)
	log.FromContext(ctx).Info("NodeFirewall deleted: removed the table")
	patch := client.MergeFrom(nfw.DeepCopy())
	controllerutil.RemoveFinalizer(nfw, fwv1.AgentFinalizer)
	return client.IgnoreNotFound(r.Client.Patch(ctx, nfw, patch, client.FieldOwner(fieldManager)))
}

// writeStatus writes st if it differs from what is stored.
func (r *Reconciler) writeStatus(ctx context.Context, nfw *fwv1.NodeFirewall, st fwv1.NodeFirewallStatus) error {
	stored := &fwv1.NodeFirewall{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: nfw.Name}, stored); err != nil {
		return client.IgnoreNotFound(err)
	}
	if equality.Semantic.DeepEqual(stored.Status, st) {
		return nil
	}
	return r.Client.Status().Update(ctx, status.NodeStatusUpdate(stored, st), client.FieldOwner(fieldManager))
}

func (r *Reconciler) event(nfw *fwv1.NodeFirewall, kind, reason, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(nfw, nil, kind, reason, reason, note, args...)
	}
}
