// Package agent is the node agent's reconcile loop: it turns its node's
// NodeFirewall into the kernel ruleset through a Firewall, repairs drift,
// and reports back in NodeFirewall.status. The kernel side sits behind the
// Firewall interface so the loop is tested without root.
package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/status"
)

// FieldManager is the agent's field manager name.
const FieldManager = "nodefw-agent"

// Firewall is the kernel side: one nftables table, replaced atomically.
type Firewall interface {
	// Apply makes the table rs: packets meet the old ruleset or the new
	// one, never a mix or an empty table.
	Apply(rs *compile.Ruleset) error
	// InSync reports whether the kernel's table equals rs.
	InSync(rs *compile.Ruleset) (bool, error)
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

	mu sync.Mutex
	// applied is the ruleset last committed by this process and the
	// NodeFirewall generation it came from; nil until the first apply or
	// adoption. It is what drift repair restores.
	applied    *compile.Ruleset
	appliedGen int64
	// revertedGen is a generation that cut the node off and was reverted;
	// it is not tried again until the NodeFirewall changes.
	revertedGen int64
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
	logger := log.FromContext(ctx)
	resync := reconcile.Result{RequeueAfter: r.ResyncPeriod}

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
	if !controllerutil.ContainsFinalizer(nfw, fwv1.AgentFinalizer) {
		patch := client.MergeFrom(nfw.DeepCopy())
		controllerutil.AddFinalizer(nfw, fwv1.AgentFinalizer)
		if err := r.Client.Patch(ctx, nfw, patch, client.FieldOwner(FieldManager)); err != nil {
			return reconcile.Result{}, err
		}
	}

	rs, err := compile.Compile(nfw.Spec, r.Compile)
	if err != nil {
		// Refuse a NodeFirewall that fails our own checks: keep the last
		// good ruleset and say why.
		logger.Error(err, "refusing invalid NodeFirewall; keeping the previous ruleset")
		r.Metrics.ApplyErrors.Inc()
		r.event(nfw, corev1.EventTypeWarning, fwv1.ReasonInvalidSpec, "Refused: %v", err)
		if derr := r.repairDrift(ctx, nfw); derr != nil {
			logger.Error(derr, "repairing drift of the previous ruleset")
		}
		return resync, r.writeStatus(ctx, nfw, status.NodeFailed(nfw, fwv1.ReasonInvalidSpec, err))
	}

	if nfw.Generation == r.revertedGen {
		// Keep the ruleset we reverted to until the NodeFirewall changes.
		if err := r.repairDrift(ctx, nfw); err != nil {
			logger.Error(err, "repairing drift of the previous ruleset")
		}
		return resync, nil
	}

	inSync, err := r.Firewall.InSync(rs)
	if err != nil {
		logger.Error(err, "reading the kernel ruleset")
	}
	switch {
	case inSync && r.applied == nil:
		// A restart finds its own table already right: adopt it.
		r.applied, r.appliedGen = rs, nfw.Generation
		logger.Info("adopted the existing table", "generation", nfw.Generation)
	case inSync:
		r.applied, r.appliedGen = rs, nfw.Generation
	default:
		drift := r.applied != nil && r.appliedGen == nfw.Generation
		reachableBefore := !drift && r.Confirm != nil && r.Confirm.Reachable(ctx)
		previous := r.applied
		if err := r.apply(rs); err != nil {
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
		r.applied, r.appliedGen = rs, nfw.Generation
		if drift {
			r.Metrics.DriftRepairs.Inc()
			r.event(nfw, corev1.EventTypeWarning, "DriftRepaired", "Restored table %s after an outside change", rs.Table)
			logger.Info("repaired drift", "table", rs.Table)
		} else {
			r.event(nfw, corev1.EventTypeNormal, fwv1.ReasonApplied, "Applied generation %d: %d rules", nfw.Generation, rs.RuleCount())
			logger.Info("applied", "generation", nfw.Generation, "rules", rs.RuleCount())
		}
		nfw.Status = status.NodeApplied(nfw, rs.RuleCount(), metav1.Now())
		return resync, r.writeStatus(ctx, nfw, nfw.Status)
	}
	r.Metrics.RulesProgrammed.Set(float64(rs.RuleCount()))

	// In the kernel already: make sure the status says so.
	if !appliedStatus(nfw, rs.RuleCount()) {
		at := metav1.Now()
		if nfw.Status.LastAppliedTime != nil {
			at = *nfw.Status.LastAppliedTime
		}
		return resync, r.writeStatus(ctx, nfw, status.NodeApplied(nfw, rs.RuleCount(), at))
	}
	return resync, nil
}

// appliedStatus reports whether the status already says this generation is applied.
func appliedStatus(nfw *fwv1.NodeFirewall, rules int) bool {
	ready := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == nfw.Generation &&
		nfw.Status.ObservedGeneration == nfw.Generation && nfw.Status.RuleCount == int32(rules) && nfw.Status.LastError == ""
}

// apply commits a ruleset and records metrics.
func (r *Reconciler) apply(rs *compile.Ruleset) error {
	start := time.Now()
	err := r.Firewall.Apply(rs)
	r.Metrics.ApplyDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		r.Metrics.ApplyErrors.Inc()
		return err
	}
	r.Metrics.Applies.Inc()
	r.Metrics.RulesProgrammed.Set(float64(rs.RuleCount()))
	return nil
}

// confirm waits up to ConfirmTimeout for the control plane to be reachable
// under the new ruleset.
func (r *Reconciler) confirm(ctx context.Context) bool {
	deadline := time.Now().Add(r.ConfirmTimeout)
	for {
		if r.Confirm.Reachable(ctx) {
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
		err = r.apply(previous)
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
	r.applied, r.revertedGen = previous, nfw.Generation
	cause := fmt.Errorf("generation %d cut the node off from its control plane within %v; reverted to the previous ruleset", nfw.Generation, r.ConfirmTimeout)
	logger.Error(cause, "reverted")
	r.event(nfw, corev1.EventTypeWarning, fwv1.ReasonReverted, "%v", cause)
	return r.writeStatus(ctx, nfw, status.NodeFailed(nfw, fwv1.ReasonReverted, cause))
}

// repairDrift restores the last applied ruleset if the kernel lost it.
func (r *Reconciler) repairDrift(ctx context.Context, nfw *fwv1.NodeFirewall) error {
	if r.applied == nil {
		return nil
	}
	inSync, err := r.Firewall.InSync(r.applied)
	if err != nil || inSync {
		return err
	}
	if err := r.apply(r.applied); err != nil {
		return err
	}
	r.Metrics.DriftRepairs.Inc()
	log.FromContext(ctx).Info("repaired drift", "table", r.applied.Table)
	if nfw != nil {
		r.event(nfw, corev1.EventTypeWarning, "DriftRepaired", "Restored table %s after an outside change", r.applied.Table)
	}
	return nil
}

// cleanup removes the table and releases the finalizer.
func (r *Reconciler) cleanup(ctx context.Context, nfw *fwv1.NodeFirewall) error {
	if !controllerutil.ContainsFinalizer(nfw, fwv1.AgentFinalizer) {
		return nil
	}
	if err := r.Firewall.Delete(); err != nil {
		return fmt.Errorf("deleting table: %w", err)
	}
	r.applied, r.appliedGen = nil, 0
	r.Metrics.RulesProgrammed.Set(0)
	log.FromContext(ctx).Info("NodeFirewall deleted: removed the table")
	patch := client.MergeFrom(nfw.DeepCopy())
	controllerutil.RemoveFinalizer(nfw, fwv1.AgentFinalizer)
	return client.IgnoreNotFound(r.Client.Patch(ctx, nfw, patch, client.FieldOwner(FieldManager)))
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
	stored.Status = st
	return r.Client.Status().Update(ctx, stored, client.FieldOwner(FieldManager))
}

func (r *Reconciler) event(nfw *fwv1.NodeFirewall, kind, reason, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(nfw, nil, kind, reason, reason, note, args...)
	}
}
