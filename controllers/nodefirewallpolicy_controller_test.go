package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/revision"
	"github.com/nodefw/nodefw/internal/status"
)

const timeout = 15 * time.Second

func getPolicy(name string) (*fwv1.NodeFirewallPolicy, error) {
	p := &fwv1.NodeFirewallPolicy{}
	err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, p)
	return p, err
}

// updatePolicy applies change to the stored policy called name and writes
// it, again on a conflict: the controller's status writes move the
// policy's resourceVersion at any time. It returns the policy as written.
func updatePolicy(t *testing.T, name string, change func(*fwv1.NodeFirewallPolicy)) *fwv1.NodeFirewallPolicy {
	t.Helper()
	var cur *fwv1.NodeFirewallPolicy
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var err error
		if cur, err = getPolicy(name); err != nil {
			return err
		}
		change(cur)
		return k8sClient.Update(context.Background(), cur)
	})
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

// ack simulates a node agent reporting its NodeFirewall's generation
// applied, with the current revisions of the policies it follows (or
// failed).
func ack(t *testing.T, node string, ok bool) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, node)
		if err != nil {
			return err
		}
		if ok {
			spec, err := expandedSpec(nfw)
			if err != nil {
				return err
			}
			nfw.Status = status.NodeApplied(nfw, revision.FollowedGenerations(&spec), len(spec.Rules), metav1.Now())
		} else {
			nfw.Status = status.NodeFailed(nfw, fwv1.ReasonApplyFailed, fmt.Errorf("netlink: operation not permitted"))
		}
		return k8sClient.Status().Update(context.Background(), nfw)
	})
}

func ruleNames(spec fwv1.NodeFirewallSpec) []string {
	var out []string
	for _, r := range spec.Rules {
		out = append(out, r.Policy+"/"+r.Name)
	}
	return out
}

func expectRules(t *testing.T, node string, want []string) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, node)
		if err != nil {
			return err
		}
		spec, err := expandedSpec(nfw)
		if err != nil {
			return err
		}
		if diff := cmp.Diff(want, ruleNames(spec)); diff != "" {
			return fmt.Errorf("rules of %s (-want +got):\n%s", node, diff)
		}
		return nil
	})
}

func condition(p *fwv1.NodeFirewallPolicy, t string) *metav1.Condition {
	return meta.FindStatusCondition(p.Status.Conditions, t)
}

type wantStatus struct {
	matched, applied, failed int32
	ready                    metav1.ConditionStatus
	reason                   string
	reconciling, stalled     bool
}

func expectStatus(t *testing.T, name string, want wantStatus) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		p, err := getPolicy(name)
		if err != nil {
			return err
		}
		ready := condition(p, fwv1.ConditionReady)
		got := wantStatus{matched: p.Status.MatchedNodes, applied: p.Status.AppliedNodes, failed: p.Status.FailedNodes,
			reconciling: meta.IsStatusConditionTrue(p.Status.Conditions, fwv1.ConditionReconciling),
			stalled:     meta.IsStatusConditionTrue(p.Status.Conditions, fwv1.ConditionStalled)}
		if ready != nil {
			got.ready, got.reason = ready.Status, ready.Reason
			if ready.ObservedGeneration != p.Generation {
				return fmt.Errorf("Ready.observedGeneration %d, generation %d", ready.ObservedGeneration, p.Generation)
			}
		}
		if p.Status.ObservedGeneration != p.Generation {
			return fmt.Errorf("status.observedGeneration %d, generation %d", p.Status.ObservedGeneration, p.Generation)
		}
		for _, c := range p.Status.Conditions {
			if (c.Type == fwv1.ConditionReconciling || c.Type == fwv1.ConditionStalled) && c.Status != metav1.ConditionTrue {
				return fmt.Errorf("condition %s present while %s; kstatus wants it only while True", c.Type, c.Status)
			}
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(wantStatus{})); diff != "" {
			return fmt.Errorf("status of %s (-want +got):\n%s", name, diff)
		}
		return nil
	})
}

func tcpRule(name string, port int32) fwv1.Rule {
	return fwv1.Rule{Name: name, Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: port}}}
}

func selectorFor(key string, op metav1.LabelSelectorOperator) metav1.LabelSelector {
	return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op}}}
}

func TestResolvesPoliciesIntoNodeFirewalls(t *testing.T) {
	role := "test1.nodefw.io/control-plane"
	newNode(t, "t1-cp", map[string]string{role: ""})
	newNode(t, "t1-worker", map[string]string{"t1": "worker"})
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t1-cp"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector:   selectorFor(role, metav1.LabelSelectorOpExists),
			Priority:       ptr.To[int32](100),
			DefaultActions: &fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop},
			Rules:          []fwv1.Rule{tcpRule("kube-apiserver", 6443), tcpRule("kubelet", 10250)},
		},
	})
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t1-worker"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t1": "worker"}},
			Priority:     ptr.To[int32](100),
			Rules:        []fwv1.Rule{tcpRule("kubelet", 10250)},
		},
	})

	expectRules(t, "t1-cp", []string{"t1-cp/kube-apiserver", "t1-cp/kubelet"})
	expectRules(t, "t1-worker", []string{"t1-worker/kubelet"})
	nfw, err := envtesting.GetNodeFirewall(k8sClient, "t1-cp")
	if err != nil {
		t.Fatal(err)
	}
	if nfw.Spec.DefaultActions.Input != fwv1.ChainPolicyDrop || nfw.Spec.DefaultActions.Output != fwv1.ChainPolicyAccept {
		t.Errorf("defaultActions = %+v, want input Drop, output Accept", nfw.Spec.DefaultActions)
	}
	if refs := nfw.OwnerReferences; len(refs) != 1 || refs[0].Kind != "Node" || refs[0].Name != "t1-cp" {
		t.Errorf("ownerReferences = %+v, want the Node t1-cp", refs)
	}

	// Until the agent reports, the policy is Reconciling.
	expectStatus(t, "t1-cp", wantStatus{matched: 1, ready: metav1.ConditionFalse, reason: fwv1.ReasonProgressing, reconciling: true})
	ack(t, "t1-cp", true)
	expectStatus(t, "t1-cp", wantStatus{matched: 1, applied: 1, ready: metav1.ConditionTrue, reason: fwv1.ReasonApplied})

	// A failing node stalls the worker policy.
	ack(t, "t1-worker", false)
	expectStatus(t, "t1-worker", wantStatus{matched: 1, failed: 1, ready: metav1.ConditionFalse, reason: fwv1.ReasonApplyFailed, stalled: true})
	ack(t, "t1-worker", true)
	expectStatus(t, "t1-worker", wantStatus{matched: 1, applied: 1, ready: metav1.ConditionTrue, reason: fwv1.ReasonApplied})

	// A spec change makes the policy progress again until the node acks the new generation.
	updatePolicy(t, "t1-cp", func(p *fwv1.NodeFirewallPolicy) { p.Spec.Rules = append(p.Spec.Rules, tcpRule("etcd", 2379)) })
	expectRules(t, "t1-cp", []string{"t1-cp/kube-apiserver", "t1-cp/kubelet", "t1-cp/etcd"})
	expectStatus(t, "t1-cp", wantStatus{matched: 1, ready: metav1.ConditionFalse, reason: fwv1.ReasonProgressing, reconciling: true})
	ack(t, "t1-cp", true)
	expectStatus(t, "t1-cp", wantStatus{matched: 1, applied: 1, ready: metav1.ConditionTrue, reason: fwv1.ReasonApplied})

	// The transitions an operator acts on are recorded as Events.
	expectEvent(t, "t1-cp", corev1.EventTypeNormal, fwv1.ReasonApplied)
	expectEvent(t, "t1-worker", corev1.EventTypeWarning, fwv1.ReasonApplyFailed)
}

func expectEvent(t *testing.T, regarding, kind, reason string) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		var evs eventsv1.EventList
		if err := k8sClient.List(context.Background(), &evs); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == regarding && e.Type == kind && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("no %s event %s regarding %s", kind, reason, regarding)
	})
}

func TestReactsToNodeChanges(t *testing.T) {
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t2-gpu"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t2": "gpu"}},
			Rules:        []fwv1.Rule{tcpRule("dcgm", 9400)},
		},
	})
	// No node yet: Ready with a reason that says so, never stuck Reconciling.
	expectStatus(t, "t2-gpu", wantStatus{ready: metav1.ConditionTrue, reason: fwv1.ReasonNoMatchingNodes})

	// A new node gets its NodeFirewall.
	n := newNode(t, "t2-node", map[string]string{"t2": "cpu"})
	expectRules(t, "t2-node", nil)

	// Relabelling it brings the policy's rules.
	n.Labels["t2"] = "gpu"
	if err := k8sClient.Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	expectRules(t, "t2-node", []string{"t2-gpu/dcgm"})
	expectStatus(t, "t2-gpu", wantStatus{matched: 1, ready: metav1.ConditionFalse, reason: fwv1.ReasonProgressing, reconciling: true})
	ack(t, "t2-node", true)
	expectStatus(t, "t2-gpu", wantStatus{matched: 1, applied: 1, ready: metav1.ConditionTrue, reason: fwv1.ReasonApplied})

	// Deleting the node deletes its NodeFirewall (envtest has no garbage
	// collector, so this is the controller's own doing).
	if err := k8sClient.Delete(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	envtesting.Eventually(t, timeout, func() error {
		if _, err := envtesting.GetNodeFirewall(k8sClient, "t2-node"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("NodeFirewall t2-node still there: %v", err)
		}
		return nil
	})
	expectStatus(t, "t2-gpu", wantStatus{ready: metav1.ConditionTrue, reason: fwv1.ReasonNoMatchingNodes})
}

func TestPolicyDeleteRemovesRules(t *testing.T) {
	newNode(t, "t3-node", map[string]string{"t3": "yes"})
	p := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t3-policy"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t3": "yes"}},
			Rules:        []fwv1.Rule{tcpRule("ssh", 22)},
		},
	})
	expectRules(t, "t3-node", []string{"t3-policy/ssh"})
	if err := k8sClient.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	expectRules(t, "t3-node", nil)
}

// TestDefaultActionConflictIsReported: a default Accept evaluated first
// (priority 0, sent as an explicit 0 by a typed client) loses to a later
// default Drop, and both policies carry the conflict, naming each other.
func TestDefaultActionConflictIsReported(t *testing.T) {
	newNode(t, "t4-node", map[string]string{"t4": "yes"})
	sel := metav1.LabelSelector{MatchLabels: map[string]string{"t4": "yes"}}
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t4-open"},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: sel, Priority: ptr.To[int32](0), DefaultActions: &fwv1.DefaultActions{Input: fwv1.ChainPolicyAccept}},
	})
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t4-lockdown"},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: sel, Priority: ptr.To[int32](20), DefaultActions: &fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop}},
	})
	want := map[string]struct{ reason, names string }{
		"t4-open":     {fwv1.ReasonDefaultActionOverridden, `overridden by policy "t4-lockdown"`},
		"t4-lockdown": {fwv1.ReasonDefaultActionConflict, `overrides policy "t4-open"`},
	}
	for name, w := range want {
		envtesting.Eventually(t, timeout, func() error {
			p, err := getPolicy(name)
			if err != nil {
				return err
			}
			c := condition(p, fwv1.ConditionDefaultActionConflict)
			if c == nil || c.Status != metav1.ConditionTrue || c.Reason != w.reason || !strings.Contains(c.Message, w.names) {
				return fmt.Errorf("%s: want DefaultActionConflict=True, reason %s, naming the other policy: %+v", name, w.reason, p.Status.Conditions)
			}
			return nil
		})
	}
	open, err := getPolicy("t4-open")
	if err != nil {
		t.Fatal(err)
	}
	if open.Spec.Priority == nil || *open.Spec.Priority != 0 {
		t.Errorf("stored priority %v, want the 0 that was sent", open.Spec.Priority)
	}
	nfw, err := envtesting.GetNodeFirewall(k8sClient, "t4-node")
	if err != nil {
		t.Fatal(err)
	}
	if nfw.Spec.DefaultActions.Input != fwv1.ChainPolicyDrop {
		t.Errorf("input default = %s, want Drop, the more restrictive", nfw.Spec.DefaultActions.Input)
	}
	if got := nfw.Spec.Policies; len(got) != 2 || got[0].Name != "t4-open" {
		t.Errorf("policies %+v, want t4-open (priority 0) first", got)
	}
}

// TestResyncWithNothingChangedWritesNothing checks that a resolve over an
// unchanged cluster moves no resourceVersion and never touches a policy spec.
func TestResyncWithNothingChangedWritesNothing(t *testing.T) {
	newNode(t, "t5-node", map[string]string{"t5": "yes"})
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t5-policy"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t5": "yes"}},
			Rules:        []fwv1.Rule{tcpRule("ssh", 22)},
		},
	})
	expectRules(t, "t5-node", []string{"t5-policy/ssh"})
	ack(t, "t5-node", true)
	expectStatus(t, "t5-policy", wantStatus{matched: 1, applied: 1, ready: metav1.ConditionTrue, reason: fwv1.ReasonApplied})

	versions := func() map[string]string {
		out := map[string]string{}
		var ps fwv1.NodeFirewallPolicyList
		var ns fwv1.NodeFirewallList
		if err := k8sClient.List(context.Background(), &ps); err != nil {
			t.Fatal(err)
		}
		if err := k8sClient.List(context.Background(), &ns); err != nil {
			t.Fatal(err)
		}
		for _, p := range ps.Items {
			out["nfp/"+p.Name] = p.ResourceVersion
		}
		for _, n := range ns.Items {
			out["nfw/"+n.Name] = n.ResourceVersion
		}
		return out
	}
	// Let other tests' writes settle, then resolve twice by hand.
	var before map[string]string
	envtesting.Eventually(t, timeout, func() error {
		before = versions()
		time.Sleep(time.Second)
		if diff := cmp.Diff(before, versions()); diff != "" {
			return fmt.Errorf("cluster still settling: %s", diff)
		}
		return nil
	})
	for range 2 {
		if _, err := reconciler.Reconcile(context.Background(), clusterKey); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(before, versions()); diff != "" {
		t.Errorf("a no-op resync moved resourceVersions (-before +after):\n%s", diff)
	}

	// The controller's field manager owns only status on the policy.
	p, err := getPolicy("t5-policy")
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range p.ManagedFields {
		if mf.Manager == FieldManager && mf.Subresource != "status" {
			t.Errorf("controller manages %q fields outside status: %s", mf.Operation, mf.FieldsV1.String())
		}
	}
}

func TestInvalidSelectorStalls(t *testing.T) {
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t6-bad"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "not a valid key", Operator: metav1.LabelSelectorOpExists}}},
		},
	})
	expectStatus(t, "t6-bad", wantStatus{ready: metav1.ConditionFalse, reason: fwv1.ReasonInvalidSelector, stalled: true})
}

func TestFailsafeShadowIsReported(t *testing.T) {
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t7-no-ssh"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t7": "none"}},
			Rules: []fwv1.Rule{{Name: "no-ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP,
				Ports: []fwv1.PortRange{{Port: 22}}}},
		},
	})
	envtesting.Eventually(t, timeout, func() error {
		p, err := getPolicy("t7-no-ssh")
		if err != nil {
			return err
		}
		c := condition(p, fwv1.ConditionFailsafeShadowed)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "no-ssh") {
			return fmt.Errorf("no FailsafeShadowed condition naming the rule: %+v", p.Status.Conditions)
		}
		// A warning, not a failure: the policy is still Ready.
		if !meta.IsStatusConditionTrue(p.Status.Conditions, fwv1.ConditionReady) {
			return fmt.Errorf("policy not Ready: %+v", p.Status.Conditions)
		}
		return nil
	})
}

func policyGeneration(t *testing.T, node, policy string) int64 {
	t.Helper()
	nfw, err := envtesting.GetNodeFirewall(k8sClient, node)
	if err != nil {
		return -1
	}
	spec, err := pinnedSpec(nfw)
	if err != nil {
		return -1
	}
	for _, ref := range spec.Policies {
		if ref.Name == policy {
			return ref.Generation
		}
	}
	return 0
}

func TestStagedRolloutAdvancesAndHalts(t *testing.T) {
	sel := metav1.LabelSelector{MatchLabels: map[string]string{"t8": "yes"}}
	nodes := []string{"t8-a", "t8-b", "t8-c"}
	for _, n := range nodes {
		newNode(t, n, map[string]string{"t8": "yes"})
	}
	p := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t8-staged"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: sel,
			Rollout:      &fwv1.RolloutStrategy{MaxUnavailable: 1},
			Rules:        []fwv1.Rule{tcpRule("v1", 1111)},
		},
	})
	gens := func() []int64 {
		var out []int64
		for _, n := range nodes {
			out = append(out, policyGeneration(t, n, p.Name))
		}
		return out
	}
	expectGens := func(want ...int64) {
		t.Helper()
		envtesting.Eventually(t, timeout, func() error {
			if diff := cmp.Diff(want, gens()); diff != "" {
				return fmt.Errorf("policy generation per node (-want +got):\n%s", diff)
			}
			return nil
		})
	}
	// A new policy also rolls out one node at a time.
	expectGens(1, 0, 0)
	ack(t, "t8-a", true)
	expectGens(1, 1, 0)
	ack(t, "t8-b", true)
	expectGens(1, 1, 1)
	ack(t, "t8-c", true)
	expectStatus(t, p.Name, wantStatus{matched: 3, applied: 3, ready: metav1.ConditionTrue, reason: fwv1.ReasonApplied})

	// A change: the first node takes generation 2, fails, and the rollout halts.
	updatePolicy(t, p.Name, func(p *fwv1.NodeFirewallPolicy) { p.Spec.Rules = []fwv1.Rule{tcpRule("v2", 2222)} })
	expectGens(2, 1, 1)
	expectRules(t, "t8-b", []string{"t8-staged/v1"})
	ack(t, "t8-a", false)
	expectStatus(t, p.Name, wantStatus{matched: 3, failed: 1, ready: metav1.ConditionFalse, reason: fwv1.ReasonRolloutHalted, stalled: true})
	// Halted means halted: the other nodes stay on generation 1.
	time.Sleep(time.Second)
	if diff := cmp.Diff([]int64{2, 1, 1}, gens()); diff != "" {
		t.Errorf("the rollout went on after a failure (-want +got):\n%s", diff)
	}
}
