package status

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// TestNodeStatusUpdate: the body keeps what the API server checks a status
// update against (name, resource version, owners, finalizers) and the new
// status, drops the spec and managed fields, and leaves the stored object
// as it was.
func TestNodeStatusUpdate(t *testing.T) {
	stored := &fwv1.NodeFirewall{
		ObjectMeta: metav1.ObjectMeta{
			Name: "worker-1", ResourceVersion: "42", Generation: 3,
			Finalizers:      []string{fwv1.AgentFinalizer},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "worker-1", UID: "u1"}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "nodefw-controller"}},
		},
		Spec: fwv1.NodeFirewallSpec{Policies: []fwv1.PolicyReference{{Name: "web", Generation: 2, Revision: "web-1"}}},
	}
	before := stored.DeepCopy()
	st := NodeApplied(stored, nil, 7, metav1.Now())

	got := NodeStatusUpdate(stored, st)

	want := &fwv1.NodeFirewall{ObjectMeta: *before.ObjectMeta.DeepCopy(), Status: st}
	want.ManagedFields = nil
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NodeStatusUpdate (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, stored); diff != "" {
		t.Errorf("the stored object changed (-before +after):\n%s", diff)
	}
}
