package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// setNodeAddresses writes a node's InternalIPs, as its kubelet would.
func setNodeAddresses(t *testing.T, n *corev1.Node, internal ...string) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		cur := &corev1.Node{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(n), cur); err != nil {
			return err
		}
		cur.Status.Addresses = nil
		for _, a := range internal {
			cur.Status.Addresses = append(cur.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		return k8sClient.Status().Update(context.Background(), cur)
	})
}

// expectSet waits for the NodeFirewallAddressSet name to hold want, and,
// for a managed set, to carry the managed-by label, and then for its
// shards, which the agents read, to hold it too; with want nil, for the
// set and its shards to be gone.
func expectSet(t *testing.T, name string, want []string, managed bool) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		s := &fwv1.NodeFirewallAddressSet{}
		err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, s)
		if want == nil {
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("set %s still there: %v", name, err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if managed && s.Labels[fwv1.LabelManagedBy] != fwv1.ManagedByController {
			return fmt.Errorf("set %s labels %v", name, s.Labels)
		}
		got := []string{}
		for _, a := range s.Spec.Addresses {
			got = append(got, string(a))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			return fmt.Errorf("set %s (-want +got):\n%s", name, diff)
		}
		ready := meta.FindStatusCondition(s.Status.Conditions, fwv1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != s.Generation ||
			s.Status.ObservedGeneration != s.Generation || int(s.Status.Count) != len(want) {
			return fmt.Errorf("set %s status %+v at generation %d", name, s.Status, s.Generation)
		}
		return nil
	})
	var sorted []string
	if want != nil {
		sorted = append([]string{}, want...)
		slices.Sort(sorted)
	}
	expectAgentInput(t, name, sorted)
}

// nodeFirewallGeneration is the generation of a node's NodeFirewall: it
// moves only when its spec does.
func nodeFirewallGeneration(t *testing.T, node string) int64 {
	t.Helper()
	var gen int64
	envtesting.Eventually(t, timeout, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, node)
		if err != nil {
			return err
		}
		gen = nfw.Generation
		return nil
	})
	return gen
}

// expectUnresolved waits for the policy's UnresolvedPeers condition to
// say each of want, or, with want empty, to be gone.
func expectUnresolved(t *testing.T, policy string, want ...string) {
	t.Helper()
	envtesting.Eventually(t, timeout, func() error {
		p, err := getPolicy(policy)
		if err != nil {
			return err
		}
		c := condition(p, fwv1.ConditionUnresolvedPeers)
		if len(want) == 0 {
			if c != nil {
				return fmt.Errorf("UnresolvedPeers still there: %s", c.Message)
			}
			return nil
		}
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != fwv1.ReasonUnresolvedPeers {
			return fmt.Errorf("no UnresolvedPeers condition: %+v", p.Status.Conditions)
		}
		for _, w := range want {
			if !strings.Contains(c.Message, w) {
				return fmt.Errorf("UnresolvedPeers %q does not say %q", c.Message, w)
			}
		}
		return nil
	})
}

// TestNodePeersFollowNodes: the managed set of a control-plane peer
// follows control-plane nodes as they are added, relabelled, renumbered
// and deleted, without a NodeFirewall spec written; an unresolved peer is
// reported; the set goes when no policy needs it.
func TestNodePeersFollowNodes(t *testing.T) {
	const role = "t14.nodefw.io/control-plane"
	cp := fwv1.Peer{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: role, Operator: metav1.LabelSelectorOpExists}}}}
	pods := fwv1.Peer{PodCIDRs: &metav1.LabelSelector{MatchLabels: map[string]string{"t14": "yes"}}}
	cpSet, _ := cp.SetName()
	podsSet, _ := pods.SetName()
	etcd := fwv1.Rule{Name: "etcd", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP,
		Ports: []fwv1.PortRange{{Port: 2379, EndPort: 2380}}, From: []fwv1.Peer{cp}}
	toPods := fwv1.Rule{Name: "to-pods", Chain: fwv1.ChainForward, Action: fwv1.ActionAccept, To: []fwv1.Peer{pods}}
	p := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t14-peers"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t14": "yes"}},
			Rules:        []fwv1.Rule{etcd, toPods},
		},
	})
	expectUnresolved(t, p.Name, `rule etcd from[0]: selector "`+role+`" matches no node`)

	cp1 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "t14-cp-1", Labels: map[string]string{"t14": "yes", role: ""}},
		Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.14.0/24", "fd14:244::/64"}, PodCIDR: "10.244.14.0/24"}}
	if err := k8sClient.Create(context.Background(), cp1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), cp1) })
	setNodeAddresses(t, cp1, "10.14.0.1", "fd14::1")
	expectSet(t, cpSet, []string{"10.14.0.1", "fd14::1"}, true)
	expectSet(t, podsSet, []string{"10.244.14.0/24", "fd14:244::/64"}, true)
	expectUnresolved(t, p.Name)
	expectRules(t, "t14-cp-1", []string{"t14-peers/etcd", "t14-peers/to-pods"})
	gen := nodeFirewallGeneration(t, "t14-cp-1")
	// The rule names the set, never the addresses.
	nfw, err := envtesting.GetNodeFirewall(k8sClient, "t14-cp-1")
	if err != nil {
		t.Fatal(err)
	}
	// Nor does the revision that holds the rules.
	spec, err := expandedSpec(nfw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprint(nfw.Spec), "10.14.0.1") || len(spec.Rules) == 0 {
		t.Fatalf("NodeFirewall %+v (rules %+v): want a reference to %s and no address", nfw.Spec, spec.Rules, cpSet)
	}
	if names, _ := spec.Rules[0].From[0].SetName(); names != cpSet || strings.Contains(fmt.Sprint(spec), "10.14.0.1") {
		t.Errorf("NodeFirewall rule %+v: want a reference to %s and no address", spec.Rules[0], cpSet)
	}

	// A second control-plane node joins.
	cp2 := newNode(t, "t14-cp-2", map[string]string{"t14": "yes", role: ""})
	setNodeAddresses(t, cp2, "10.14.0.2")
	expectSet(t, cpSet, []string{"10.14.0.1", "10.14.0.2", "fd14::1"}, true)

	// It stops being one.
	envtesting.Eventually(t, timeout, func() error {
		cur := &corev1.Node{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(cp2), cur); err != nil {
			return err
		}
		delete(cur.Labels, role)
		return k8sClient.Update(context.Background(), cur)
	})
	expectSet(t, cpSet, []string{"10.14.0.1", "fd14::1"}, true)

	// The first is renumbered.
	setNodeAddresses(t, cp1, "10.14.0.9", "fd14::9")
	expectSet(t, cpSet, []string{"10.14.0.9", "fd14::9"}, true)
	if got := nodeFirewallGeneration(t, "t14-cp-1"); got != gen {
		t.Errorf("NodeFirewall t14-cp-1 went from generation %d to %d: peers' changes must not rewrite rules", gen, got)
	}

	// It is deleted: the set is empty, and the peer reported.
	if err := k8sClient.Delete(context.Background(), cp1); err != nil {
		t.Fatal(err)
	}
	expectSet(t, cpSet, []string{}, true)
	expectUnresolved(t, p.Name, `rule etcd from[0]: selector "`+role+`" matches no node`)
	expectSet(t, podsSet, []string{}, true)

	// No policy needs the sets any more: they go.
	if err := k8sClient.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	expectSet(t, cpSet, nil, true)
	expectSet(t, podsSet, nil, true)
}

// TestAddressSetEditKeepsRules: a user's set is reported missing until it
// exists; edits of it change its status, never a NodeFirewall.
func TestAddressSetEditKeepsRules(t *testing.T) {
	newNode(t, "t14b-node", map[string]string{"t14b": "yes"})
	p := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t14b-office"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t14b": "yes"}},
			Rules: []fwv1.Rule{{Name: "ssh", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP,
				Ports: []fwv1.PortRange{{Port: 22}}, From: []fwv1.Peer{{AddressSet: "t14b-office"}}}},
		},
	})
	expectRules(t, "t14b-node", []string{"t14b-office/ssh"})
	expectUnresolved(t, p.Name, "rule ssh from[0]: NodeFirewallAddressSet t14b-office not found")

	set := &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: "t14b-office"},
		Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: []fwv1.AddressSetEntry{"192.0.2.0/24"}}}
	if err := k8sClient.Create(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), set) })
	expectUnresolved(t, p.Name)
	expectSet(t, "t14b-office", []string{"192.0.2.0/24"}, false)
	gen := nodeFirewallGeneration(t, "t14b-node")

	envtesting.Eventually(t, timeout, func() error {
		cur := &fwv1.NodeFirewallAddressSet{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(set), cur); err != nil {
			return err
		}
		cur.Spec.Addresses = append(cur.Spec.Addresses, "2001:db8::/48")
		return k8sClient.Update(context.Background(), cur)
	})
	expectSet(t, "t14b-office", []string{"192.0.2.0/24", "2001:db8::/48"}, false)
	if got := nodeFirewallGeneration(t, "t14b-node"); got != gen {
		t.Errorf("NodeFirewall went from generation %d to %d on a set edit", gen, got)
	}
}
