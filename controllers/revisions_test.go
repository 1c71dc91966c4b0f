package controllers

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/revision"
)

// revisionRules caches the rules of the revisions read by the tests, by
// name: revisions never change.
var revisionRules sync.Map // name -> []fwv1.Rule

// pinnedSpec is nfw's spec with the policies it follows pinned to the
// revisions marked current, as the agent pins them.
func pinnedSpec(nfw *fwv1.NodeFirewall) (fwv1.NodeFirewallSpec, error) {
	return envtesting.PinFollowed(context.Background(), k8sClient, revisionNamespace, nfw.Spec)
}

// expandedSpec is the spec nfw's agent compiles: the rules of the
// revisions it names or follows in place.
func expandedSpec(nfw *fwv1.NodeFirewall) (fwv1.NodeFirewallSpec, error) {
	spec, err := pinnedSpec(nfw)
	if err != nil {
		return fwv1.NodeFirewallSpec{}, err
	}
	rules := map[string][]fwv1.Rule{}
	for _, name := range revision.Names(&spec) {
		if rs, ok := revisionRules.Load(name); ok {
			rules[name] = rs.([]fwv1.Rule)
			continue
		}
		cr, err := getRevision(name)
		if err != nil {
			return fwv1.NodeFirewallSpec{}, err
		}
		rs, err := revision.Rules(cr)
		if err != nil {
			return fwv1.NodeFirewallSpec{}, err
		}
		revisionRules.Store(name, rs)
		rules[name] = rs
	}
	return revision.Expand(spec, rules)
}

func getRevision(name string) (*appsv1.ControllerRevision, error) {
	cr := &appsv1.ControllerRevision{}
	err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: revisionNamespace, Name: name}, cr)
	return cr, err
}

// policyRevisions are the names of the revisions of a policy.
func policyRevisions(t *testing.T, policy string) []string {
	t.Helper()
	var list appsv1.ControllerRevisionList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(revisionNamespace),
		client.MatchingLabels{revision.LabelPolicy: policy, revision.LabelManagedBy: revision.ManagedBy}); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, cr := range list.Items {
		out = append(out, cr.Name)
	}
	sort.Strings(out)
	return out
}

// nodeRevision is the revision a node's NodeFirewall names for a policy,
// or the current one of a policy it follows.
func nodeRevision(node, policy string) (string, error) {
	nfw, err := envtesting.GetNodeFirewall(k8sClient, node)
	if err != nil {
		return "", err
	}
	spec, err := pinnedSpec(nfw)
	if err != nil {
		return "", err
	}
	for _, ref := range spec.Policies {
		if ref.Name == policy {
			return ref.Revision, nil
		}
	}
	return "", fmt.Errorf("NodeFirewall %s does not list policy %s: %+v", node, policy, nfw.Spec.Policies)
}

func expectNodeRevision(t *testing.T, node, policy, want string) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		got, err := nodeRevision(node, policy)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s names revision %q of %s, want %q", node, got, policy, want)
		}
		return nil
	})
}

func expectRevisions(t *testing.T, policy string, want ...string) {
	t.Helper()
	sort.Strings(want)
	envtesting.Eventually(t, timeout, func() error {
		if d := cmp.Diff(want, policyRevisions(t, policy)); d != "" {
			return fmt.Errorf("revisions of %s (-want +got):\n%s", policy, d)
		}
		return nil
	})
}

// revisionOf is the name of the revision of p's rules as it is stored.
func revisionOf(t *testing.T, name string) string {
	t.Helper()
	p, err := getPolicy(name)
	if err != nil {
		t.Fatal(err)
	}
	return revision.For(p, revisionNamespace).Name
}

// TestRevisionsAreSharedReusedAndCollected: one revision per distinct
// rule list of a policy, named by every node it selects, which carry no
// rules of their own; a change that keeps the rules reuses it; one that
// changes them gets a new one, and the old one goes once no NodeFirewall
// names it.
func TestRevisionsAreSharedReusedAndCollected(t *testing.T) {
	ctx := context.Background()
	for _, n := range []string{"rv-a", "rv-b"} {
		newNode(t, n, map[string]string{"rv": "yes", "rv-" + n: ""})
	}
	p := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "rv-policy"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"rv": "yes"}},
			Rules:        []fwv1.Rule{tcpRule("ssh", 22), tcpRule("web", 443)},
		},
	})
	first := revisionOf(t, p.Name)
	for _, n := range []string{"rv-a", "rv-b"} {
		expectNodeRevision(t, n, p.Name, first)
		expectRules(t, n, []string{"rv-policy/ssh", "rv-policy/web"})
		nfw, err := envtesting.GetNodeFirewall(k8sClient, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(nfw.Spec.Rules) > 0 {
			t.Errorf("NodeFirewall %s copies %d rules", n, len(nfw.Spec.Rules))
		}
	}
	expectRevisions(t, p.Name, first)
	cr, err := getRevision(first)
	if err != nil {
		t.Fatal(err)
	}
	if cr.Revision != 1 || revision.Policy(cr) != p.Name || cr.Labels[revision.LabelHash] == "" {
		t.Errorf("revision %s: revision %d, policy %q, labels %v", cr.Name, cr.Revision, revision.Policy(cr), cr.Labels)
	}
	rules, err := revision.Rules(cr)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(p.Spec.Rules, rules); d != "" {
		t.Errorf("revision's rules (-policy +revision):\n%s", d)
	}

	// Audit mode and one node less: a new generation, the same rules, the
	// same revision.
	cur := updatePolicy(t, p.Name, func(p *fwv1.NodeFirewallPolicy) {
		p.Spec.Mode = fwv1.PolicyModeAudit
		p.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: map[string]string{"rv-rv-a": ""}}
	})
	envtesting.Eventually(t, timeout, func() error {
		if g := policyGeneration(t, "rv-a", p.Name); g != 2 {
			return fmt.Errorf("rv-a has generation %d, want 2", g)
		}
		if g := policyGeneration(t, "rv-b", p.Name); g != 0 {
			return fmt.Errorf("rv-b still lists the policy, at generation %d", g)
		}
		return nil
	})
	expectNodeRevision(t, "rv-a", p.Name, first)
	expectRevisions(t, p.Name, first)
	envtesting.Eventually(t, timeout, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, "rv-a")
		if err != nil {
			return err
		}
		spec, err := expandedSpec(nfw)
		if err != nil {
			return err
		}
		for _, r := range spec.Rules {
			if r.Mode != fwv1.PolicyModeAudit {
				return fmt.Errorf("rule %s in mode %q, want Audit", r.Name, r.Mode)
			}
		}
		return nil
	})

	// Other rules: a new revision, and the first one is collected.
	cur = updatePolicy(t, p.Name, func(p *fwv1.NodeFirewallPolicy) { p.Spec.Rules = []fwv1.Rule{tcpRule("ssh", 2222)} })
	second := revisionOf(t, p.Name)
	if second == first {
		t.Fatalf("new rules kept revision %s", first)
	}
	expectNodeRevision(t, "rv-a", p.Name, second)
	expectRules(t, "rv-a", []string{"rv-policy/ssh"})
	expectRevisions(t, p.Name, second)

	// Deleting the policy deletes its last revision.
	if err := k8sClient.Delete(ctx, cur); err != nil {
		t.Fatal(err)
	}
	expectRevisions(t, p.Name)
}

// TestStagedRolloutAcrossRevisions: nodes a rollout holds back keep the
// older revision, which stays until the last of them has moved on.
func TestStagedRolloutAcrossRevisions(t *testing.T) {
	nodes := []string{"rs-a", "rs-b"}
	for _, n := range nodes {
		newNode(t, n, map[string]string{"rs": "yes"})
	}
	p := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "rs-staged"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"rs": "yes"}},
			Rollout:      &fwv1.RolloutStrategy{MaxUnavailable: 1},
			Rules:        []fwv1.Rule{tcpRule("v1", 1111)},
		},
	})
	old := revisionOf(t, p.Name)
	expectNodeRevision(t, "rs-a", p.Name, old)
	ack(t, "rs-a", true)
	expectNodeRevision(t, "rs-b", p.Name, old)
	ack(t, "rs-b", true)
	expectStatus(t, p.Name, wantStatus{matched: 2, applied: 2, ready: metav1.ConditionTrue, reason: fwv1.ReasonApplied})

	updatePolicy(t, p.Name, func(p *fwv1.NodeFirewallPolicy) { p.Spec.Rules = []fwv1.Rule{tcpRule("v2", 2222)} })
	latest := revisionOf(t, p.Name)
	expectNodeRevision(t, "rs-a", p.Name, latest)
	expectNodeRevision(t, "rs-b", p.Name, old)
	expectRules(t, "rs-b", []string{"rs-staged/v1"})
	// rs-b still names the older revision: both stay.
	expectRevisions(t, p.Name, old, latest)
	for range 3 {
		if _, err := getRevision(old); err != nil {
			t.Fatalf("revision %s that rs-b names: %v", old, err)
		}
		reconcileNow(t)
	}

	ack(t, "rs-a", true)
	expectNodeRevision(t, "rs-b", p.Name, latest)
	expectRevisions(t, p.Name, latest)
	if _, err := getRevision(old); !apierrors.IsNotFound(err) {
		t.Errorf("revision %s no node names: %v, want it deleted", old, err)
	}
}

var pokes atomic.Int64

// reconcileNow makes the controller resolve again, by touching a node's
// labels it watches, and waits for a pass to finish.
func reconcileNow(t *testing.T) {
	t.Helper()
	n := newNode(t, fmt.Sprintf("rs-poke-%d", pokes.Add(1)), nil)
	envtesting.Eventually(t, timeout, func() error {
		_, err := envtesting.GetNodeFirewall(k8sClient, n.Name)
		return err
	})
}
