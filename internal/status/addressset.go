package status

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// AddressSet computes a NodeFirewallAddressSet's status: the count of its
// addresses and Ready, False while an address does not parse (a set
// stored past validation), so kstatus reads Current or Failed. It starts
// from the stored conditions so an unchanged Ready keeps its time.
func AddressSet(s *fwv1.NodeFirewallAddressSet) fwv1.NodeFirewallAddressSetStatus {
	st := fwv1.NodeFirewallAddressSetStatus{
		ObservedGeneration: s.Generation,
		Count:              int32(len(s.Spec.Addresses)),
		Conditions:         append([]metav1.Condition(nil), s.Status.Conditions...),
	}
	set := func(t string, cs metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: cs, Reason: reason, Message: msg, ObservedGeneration: s.Generation})
	}
	for i, a := range s.Spec.Addresses {
		if _, err := fwv1.ParseAddress(string(a)); err != nil {
			msg := fmt.Sprintf("spec.addresses[%d]: %v; rules naming the set match nothing from it", i, err)
			set(fwv1.ConditionReady, metav1.ConditionFalse, fwv1.ReasonInvalidAddresses, msg)
			set(fwv1.ConditionStalled, metav1.ConditionTrue, fwv1.ReasonInvalidAddresses, msg)
			return st
		}
	}
	set(fwv1.ConditionReady, metav1.ConditionTrue, fwv1.ReasonAddressesValid, fmt.Sprintf("%d addresses", len(s.Spec.Addresses)))
	meta.RemoveStatusCondition(&st.Conditions, fwv1.ConditionStalled)
	return st
}
