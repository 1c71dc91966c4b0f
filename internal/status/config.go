package status

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/clusterconfig"
	"github.com/nodefw/nodefw/internal/text"
)

// Config is the status of the NodeFirewallConfig, given the settings in
// force after the controller's Tracker observed it: Ready when its
// generation is the one in force, else Ready False and Stalled with
// reason InvalidConfig, naming the settings kept.
func Config(cfg *fwv1.NodeFirewallConfig, in clusterconfig.State) fwv1.NodeFirewallConfigStatus {
	st := *cfg.Status.DeepCopy()
	st.ObservedGeneration = cfg.Generation
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: cfg.Generation})
	}
	if in.Err == nil {
		s := in.Settings
		set(fwv1.ConditionReady, metav1.ConditionTrue, fwv1.ReasonConfigValid,
			fmt.Sprintf("in use: %d inbound and %d outbound failsafe port ranges", len(s.FailsafeInbound), len(s.FailsafeOutbound)))
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionStalled)
		meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
		return st
	}
	kept := fmt.Sprintf("keeping generation %d", in.Generation)
	if in.Generation == 0 {
		kept = "keeping the settings of the controller's and agents' flags (no generation passed the checks yet)"
	}
	msg := text.Truncate(fmt.Sprintf("%s: %v", kept, in.Err), 32000)
	set(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonInvalidConfig, msg)
	set(fwv1.ConditionStalled, metav1.ConditionTrue, fwv1.ReasonInvalidConfig, msg)
	meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionReconciling)
	return st
}
