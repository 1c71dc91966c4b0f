package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/revision"
)

// TestRevisionsFetchedOnceAndForgotten: the agent reads each revision its
// NodeFirewall names once, compiles their rules in the references' order,
// and forgets those no longer named.
func TestRevisionsFetchedOnceAndForgotten(t *testing.T) {
	const ns = "nodefw-system"
	ssh := fwv1.Rule{Name: "ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 22}}}
	web := fwv1.Rule{Name: "web", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 443}}}
	a := revision.For(&fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "a", Generation: 1}, Spec: fwv1.NodeFirewallPolicySpec{Rules: []fwv1.Rule{ssh}}}, ns)
	b := revision.For(&fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 1}, Spec: fwv1.NodeFirewallPolicySpec{Rules: []fwv1.Rule{web}}}, ns)

	scheme := runtime.NewScheme()
	utilruntime.Must(appsv1.AddToScheme(scheme))
	gets := map[string]int{}
	reader := interceptor.NewClient(fake.NewClientBuilder().WithScheme(scheme).WithObjects(a, b).Build(), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			gets[key.Name]++
			return c.Get(ctx, key, obj, opts...)
		},
	})
	v := &Revisions{Reader: reader, Namespace: ns}
	spec := fwv1.NodeFirewallSpec{Policies: []fwv1.PolicyReference{{Name: "b", Revision: b.Name}, {Name: "a", Revision: a.Name, Mode: fwv1.PolicyModeAudit}}}
	for range 2 {
		got, err := v.Expand(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		want := []fwv1.NodeFirewallRule{web.NodeRule("b", fwv1.PolicyModeEnforce), ssh.NodeRule("a", fwv1.PolicyModeAudit)}
		if d := cmp.Diff(want, got.Rules); d != "" {
			t.Errorf("rules (-want +got):\n%s", d)
		}
	}
	if d := cmp.Diff(map[string]int{a.Name: 1, b.Name: 1}, gets); d != "" {
		t.Errorf("gets per revision (-want +got):\n%s", d)
	}
	spec.Policies = spec.Policies[1:]
	if _, err := v.Expand(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if _, kept := v.rules[b.Name]; kept || len(v.rules) != 1 {
		t.Errorf("kept %d revisions, want only %s", len(v.rules), a.Name)
	}
}

// TestMissingRevisionKeepsTheRuleset: a revision that cannot be read
// leaves the kernel alone, reports RevisionUnavailable and is retried.
func TestMissingRevisionKeepsTheRuleset(t *testing.T) {
	r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}})
	scheme := runtime.NewScheme()
	utilruntime.Must(appsv1.AddToScheme(scheme))
	r.Revisions = &Revisions{Reader: fake.NewClientBuilder().WithScheme(scheme).Build(), Namespace: "nodefw-system"}
	req := reconcile.Request{NamespacedName: client.ObjectKey{Name: node}}
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	applies := fw.applies
	nfw := &fwv1.NodeFirewall{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: node}, nfw); err != nil {
		t.Fatal(err)
	}
	nfw.Spec = fwv1.NodeFirewallSpec{Policies: []fwv1.PolicyReference{{Name: "worker", Revision: "worker-0123456789"}}}
	nfw.Generation = 2
	if err := c.Update(context.Background(), nfw); err != nil {
		t.Fatal(err)
	}
	_, err := r.Reconcile(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "worker-0123456789") {
		t.Fatalf("error %v, want one naming the missing revision", err)
	}
	if fw.applies != applies {
		t.Errorf("the kernel was written %d times more", fw.applies-applies)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Name: node}, nfw); err != nil {
		t.Fatal(err)
	}
	if nfw.Status.LastError == "" || !strings.Contains(nfw.Status.LastError, "worker-0123456789") {
		t.Errorf("status %+v, want the missing revision as the last error", nfw.Status)
	}
}
