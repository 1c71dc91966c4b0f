package controllers

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/revision"
)

// TestEnsureRevisionsReportsRefusals: a revision the API server refuses as
// too large (its limit lower than the controller's) is returned with its
// size and not counted as existing; the others are created.
func TestEnsureRevisionsReportsRefusals(t *testing.T) {
	const ns = "nodefw-system"
	small := revision.For(&fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "small"}, Spec: fwv1.NodeFirewallPolicySpec{Rules: []fwv1.Rule{tcpRule("ssh", 22)}}}, ns)
	big := revision.For(&fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "big"}, Spec: fwv1.NodeFirewallPolicySpec{Rules: []fwv1.Rule{tcpRule("web", 443)}}}, ns)
	c := fake.NewClientBuilder().WithScheme(envtesting.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if obj.GetName() == big.Name {
				return apierrors.NewRequestEntityTooLargeError("limit is 3145728")
			}
			return c.Create(ctx, obj, opts...)
		},
	}).Build()
	r := &NodeFirewallPolicyReconciler{Client: c, APIReader: c, RevisionNamespace: ns, WriteConcurrency: 2}
	existing := map[string]bool{}
	refused, err := r.ensureRevisions(context.Background(), existing, []*appsv1.ControllerRevision{big, small})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]bool{small.Name: true}, existing); diff != "" {
		t.Errorf("existing (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{big.Name: resolve.RevisionSize(big)}, refused); diff != "" {
		t.Errorf("refused (-want +got):\n%s", diff)
	}
	var list appsv1.ControllerRevisionList
	if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != small.Name {
		t.Errorf("stored revisions %v, want %s alone", list.Items, small.Name)
	}
}
