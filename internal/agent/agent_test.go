package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/nft"
)

// fakeFirewall stands in for the kernel: it holds one ruleset, and keeps
// the committed one as nft.Programmer does.
type fakeFirewall struct {
	table     *compile.Ruleset
	committed *compile.Ruleset
	applies   int
	deletes   int
	applyErr  error
}

func (f *fakeFirewall) Apply(rs *compile.Ruleset) (nft.ApplyStats, error) {
	if f.applyErr != nil {
		return nft.ApplyStats{}, f.applyErr
	}
	f.applies++
	f.table, f.committed = rs, rs
	return nft.ApplyStats{Batches: 1}, nil
}

func (f *fakeFirewall) Drift(rs *compile.Ruleset) (string, error) {
	if f.table == nil {
		return "table is missing", nil
	}
	if !rs.Equal(f.table) {
		return "table differs: want\n" + compile.Render(rs) + "got\n" + compile.Render(f.table), nil
	}
	f.committed = rs
	return "", nil
}

func (f *fakeFirewall) Committed() *compile.Ruleset { return f.committed }

func (f *fakeFirewall) Delete() error {
	f.deletes++
	f.table, f.committed = nil, nil
	return nil
}

const (
	node = "worker-1"
	// shardNamespace holds the address sets' shards.
	shardNamespace = "nodefw-system"
)

func kubelet() fwv1.NodeFirewallRule {
	return fwv1.NodeFirewallRule{Policy: "worker", Mode: fwv1.PolicyModeEnforce, Name: "kubelet", Chain: fwv1.ChainInput,
		Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 10250}}}
}

func setup(t *testing.T, spec fwv1.NodeFirewallSpec) (*Reconciler, *fakeFirewall, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	utilruntime.Must(fwv1.AddToScheme(scheme))
	utilruntime.Must(appsv1.AddToScheme(scheme))
	nfw := &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: node, Generation: 1}, Spec: spec}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(nfw).WithStatusSubresource(&fwv1.NodeFirewall{}).Build()
	fw := &fakeFirewall{}
	return &Reconciler{
		Client: c, Firewall: fw, Metrics: NewMetrics(nil), NodeName: node, ResyncPeriod: time.Second, ShardNamespace: shardNamespace,
	}, fw, c
}

func reconcileOnce(t *testing.T, r *Reconciler) error {
	t.Helper()
	res, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: node}})
	if err == nil && res.RequeueAfter != r.ResyncPeriod {
		t.Errorf("RequeueAfter = %v, want the resync period %v", res.RequeueAfter, r.ResyncPeriod)
	}
	return err
}

func get(t *testing.T, c client.Client) *fwv1.NodeFirewall {
	t.Helper()
	nfw := &fwv1.NodeFirewall{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: node}, nfw); err != nil {
		t.Fatal(err)
	}
	return nfw
}

func ready(nfw *fwv1.NodeFirewall) metav1.Condition {
	if c := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func TestAppliesAndReports(t *testing.T) {
	spec := fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}, DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}}
	r, fw, c := setup(t, spec)
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	want, err := compile.Compile(spec, r.Compile)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, fw.table); diff != "" {
		t.Errorf("kernel table (-want +got):\n%s", diff)
	}
	nfw := get(t, c)
	if got := ready(nfw); got.Status != metav1.ConditionTrue || got.Reason != fwv1.ReasonApplied || got.ObservedGeneration != nfw.Generation {
		t.Errorf("Ready = %+v, want True/Applied at generation %d", got, nfw.Generation)
	}
	if nfw.Status.ObservedGeneration != nfw.Generation || nfw.Status.RuleCount != int32(want.RuleCount()) || nfw.Status.LastAppliedTime == nil {
		t.Errorf("status = %+v", nfw.Status)
	}
	if !sliceHas(nfw.Finalizers, fwv1.AgentFinalizer) {
		t.Errorf("finalizers = %v, want %s", nfw.Finalizers, fwv1.AgentFinalizer)
	}
	if got := testutil.ToFloat64(r.Metrics.Applies); got != 1 {
		t.Errorf("applies metric = %v, want 1", got)
	}

	// A second pass with nothing changed neither applies nor writes.
	rv := nfw.ResourceVersion
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if fw.applies != 1 || get(t, c).ResourceVersion != rv {
		t.Errorf("idle resync applied %d times and moved resourceVersion %s -> %s", fw.applies, rv, get(t, c).ResourceVersion)
	}
}

func TestRepairsDrift(t *testing.T) {
	r, fw, _ := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}})
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	fw.table = nil // someone ran `nft flush ruleset`
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if fw.table == nil || fw.applies != 2 {
		t.Fatalf("table not restored: applies=%d", fw.applies)
	}
	if got := testutil.ToFloat64(r.Metrics.DriftRepairs); got != 1 {
		t.Errorf("drift repairs metric = %v, want 1", got)
	}
}

func TestAdoptsExistingTableWithoutReapplying(t *testing.T) {
	spec := fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}}
	r, fw, c := setup(t, spec)
	rs, _ := compile.Compile(spec, r.Compile)
	fw.table = rs // left by the previous agent process (fail-static)
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if fw.applies != 0 {
		t.Errorf("restart re-applied an up-to-date table %d times", fw.applies)
	}
	if got := ready(get(t, c)); got.Status != metav1.ConditionTrue {
		t.Errorf("Ready = %+v after adoption", got)
	}
}

func TestRefusesInvalidSpecAndKeepsPreviousRuleset(t *testing.T) {
	r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}})
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	good := fw.table

	// A hand-written NodeFirewall that bypasses the policy's validation.
	nfw := get(t, c)
	bad := kubelet()
	bad.Sources = []string{"10.0.0.300/8"}
	nfw.Spec.Rules = []fwv1.NodeFirewallRule{bad}
	nfw.Generation = 2
	if err := c.Update(context.Background(), nfw); err != nil {
		t.Fatal(err)
	}
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(good, fw.table) {
		t.Error("the previous ruleset was replaced by an invalid one")
	}
	got := get(t, c)
	if c := ready(got); c.Status != metav1.ConditionFalse || c.Reason != fwv1.ReasonInvalidSpec {
		t.Errorf("Ready = %+v, want False/InvalidSpec", c)
	}
	if got.Status.LastError == "" {
		t.Error("lastError is empty")
	}
}

func TestApplyFailureIsReported(t *testing.T) {
	r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}})
	fw.applyErr = errors.New("netlink receive: no buffer space available")
	if err := reconcileOnce(t, r); err == nil {
		t.Fatal("Reconcile succeeded although the apply failed")
	}
	if got := ready(get(t, c)); got.Status != metav1.ConditionFalse || got.Reason != fwv1.ReasonApplyFailed {
		t.Errorf("Ready = %+v, want False/ApplyFailed", got)
	}
	if got := testutil.ToFloat64(r.Metrics.ApplyErrors); got != 1 {
		t.Errorf("apply errors metric = %v, want 1", got)
	}
}

func TestDeletionRemovesOnlyTheTableAndFinalizer(t *testing.T) {
	r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}})
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(context.Background(), get(t, c)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKey{Name: node}}); err != nil {
		t.Fatal(err)
	}
	if fw.deletes != 1 || fw.table != nil {
		t.Errorf("table not deleted: deletes=%d", fw.deletes)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Name: node}, &fwv1.NodeFirewall{}); err == nil {
		t.Error("NodeFirewall still present after its finalizer was released")
	}
}

func TestMissingNodeFirewallKeepsRules(t *testing.T) {
	r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}})
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	// The object vanishes without the finalizer running (for example it
	// was force-removed): the rules stay, fail-static.
	nfw := get(t, c)
	nfw.Finalizers = nil
	if err := c.Update(context.Background(), nfw); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(context.Background(), nfw); err != nil {
		t.Fatal(err)
	}
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if fw.table == nil || fw.deletes != 0 {
		t.Error("rules were removed although no cleanup was asked for")
	}
}

func sliceHas(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// apiConfirmer is reachable unless the fake kernel holds a rule from the
// policy "lockout", standing in for a rule that drops the API server.
type apiConfirmer struct{ fw *fakeFirewall }

func (c apiConfirmer) Reachable(context.Context) bool {
	if c.fw.table == nil {
		return true
	}
	for _, ch := range c.fw.table.Chains {
		for _, r := range ch.Rules {
			if r.Comment == "lockout/drop-api" {
				return false
			}
		}
	}
	return true
}

func TestRevertsARulesetThatCutsOffTheControlPlane(t *testing.T) {
	r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()}})
	r.Confirm, r.ConfirmTimeout = apiConfirmer{fw}, 300*time.Millisecond
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	good := fw.table

	nfw := get(t, c)
	nfw.Spec.Rules = append(nfw.Spec.Rules, fwv1.NodeFirewallRule{Policy: "lockout", Name: "drop-api", Chain: fwv1.ChainOutput,
		Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 6443}}})
	nfw.Generation = 2
	if err := c.Update(context.Background(), nfw); err != nil {
		t.Fatal(err)
	}
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(good, fw.table) {
		t.Fatal("the ruleset that cut off the control plane was not reverted")
	}
	got := get(t, c)
	if cond := ready(got); cond.Status != metav1.ConditionFalse || cond.Reason != fwv1.ReasonReverted || cond.ObservedGeneration != 2 {
		t.Errorf("Ready = %+v, want False/Reverted at generation 2", cond)
	}
	// The refused generation is not retried in a loop.
	applies := fw.applies
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if fw.applies != applies {
		t.Errorf("the reverted generation was applied again")
	}
}

func TestRuleCountersCollector(t *testing.T) {
	c := NewRuleCounters(func() ([]nft.RuleCounter, error) {
		return []nft.RuleCounter{
			{Chain: "input", Comment: "audit/drop-web", Packets: 3, Bytes: 180},
			{Chain: "input", Comment: "audit/drop-web", Packets: 1, Bytes: 60}, // the IPv6 half
			{Chain: "input", Comment: "nodefw: failsafe tcp", Packets: 7, Bytes: 420},
		}, nil
	})
	want := `
# HELP nodefw_agent_rule_packets_total Packets matched by a counted rule of the agent's table.
# TYPE nodefw_agent_rule_packets_total counter
nodefw_agent_rule_packets_total{chain="input",rule="audit/drop-web"} 4
nodefw_agent_rule_packets_total{chain="input",rule="nodefw: failsafe tcp"} 7
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "nodefw_agent_rule_packets_total"); err != nil {
		t.Error(err)
	}
}
