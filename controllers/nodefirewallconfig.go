package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/status"
)

// settings reads the NodeFirewallConfig, returns the settings in force,
// and reports in the object's status (and, when a generation is refused,
// in an Event) whether its generation is the one in force.
func (r *NodeFirewallPolicyReconciler) settings(ctx context.Context) (clusterconfig.Settings, error) {
	cfg := &fwv1.NodeFirewallConfig{}
	if err := r.Get(ctx, client.ObjectKey{Name: fwv1.NodeFirewallConfigName}, cfg); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return clusterconfig.Settings{}, err
		}
		cfg = nil
	}
	in := r.Config.Observe(cfg)
	if cfg == nil {
		return in.Settings, nil
	}
	if in.Err != nil {
		log.FromContext(ctx).Error(in.Err, "NodeFirewallConfig refused; keeping the last good settings",
			"generation", cfg.Generation, "inForce", in.Generation)
	}
	st := status.Config(cfg, in)
	if equality.Semantic.DeepEqual(cfg.Status, st) {
		return in.Settings, nil
	}
	if in.Err != nil {
		was := meta.FindStatusCondition(cfg.Status.Conditions, fwv1.ConditionReady)
		now := meta.FindStatusCondition(st.Conditions, fwv1.ConditionReady)
		if was == nil || was.Status != metav1.ConditionFalse || was.Message != now.Message {
			r.Recorder.Eventf(cfg, nil, corev1.EventTypeWarning, fwv1.ReasonInvalidConfig, "Check", "Generation %d: %s", cfg.Generation, now.Message)
		}
	}
	updated := cfg.DeepCopy()
	updated.Status = st
	return in.Settings, client.IgnoreNotFound(r.Status().Update(ctx, updated, client.FieldOwner(FieldManager)))
}
