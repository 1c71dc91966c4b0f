package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/resolve"
)

// longPolicy is a policy with a name of 240 characters: its reference on
// a node, which follows it, takes about 0.25 KiB, so some dozens take a
// NodeFirewall over the suite's request limit.
func longPolicy(prefix string, i int, selector metav1.LabelSelector) *fwv1.NodeFirewallPolicy {
	name := fmt.Sprintf("%s-%02d-", prefix, i)
	name += strings.Repeat("x", 240-len(name))
	return &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: selector, Rules: []fwv1.Rule{tcpRule("ssh", 22)}},
	}
}

// policyCount checks that node's NodeFirewall lists from least to most
// policies, and is within the request limit.
func policyCount(node string, least, most int) func() error {
	return func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, node)
		if err != nil {
			return err
		}
		if n := len(nfw.Spec.Policies); n < least || n > most {
			return fmt.Errorf("%s lists %d policies, want %d to %d", node, n, least, most)
		}
		if n := resolve.SerializedSize(nfw); n > suiteRequestLimit {
			return fmt.Errorf("the written NodeFirewall %s is %d bytes, over the limit", node, n)
		}
		return nil
	}
}

// TestOversizedNodeFirewallIsReported: a node whose NodeFirewall would be
// over the request limit keeps its last one, every contributing policy says
// why with the byte count and the limit, and other nodes still converge.
func TestOversizedNodeFirewallIsReported(t *testing.T) {
	newNode(t, "size-big", map[string]string{"size-big": "", "size-all": ""})
	newNode(t, "size-small", map[string]string{"size-all": ""})
	big := metav1.LabelSelector{MatchLabels: map[string]string{"size-big": ""}}
	all := metav1.LabelSelector{MatchLabels: map[string]string{"size-all": ""}}
	const n = 40
	for i := range n {
		newPolicy(t, longPolicy("size-a", i, big))
	}
	envtesting.Eventually(t, timeout, policyCount("size-big", n, n))

	// As many again, selecting both nodes, take size-big over the limit.
	for i := range n {
		newPolicy(t, longPolicy("size-d", i, all))
	}
	for _, p := range []*fwv1.NodeFirewallPolicy{longPolicy("size-a", 0, big), longPolicy("size-d", n-1, all)} {
		envtesting.Eventually(t, timeout, func() error {
			p, err := getPolicy(p.Name)
			if err != nil {
				return err
			}
			c := condition(p, fwv1.ConditionStalled)
			if c == nil || c.Reason != fwv1.ReasonNodeFirewallTooLarge {
				return fmt.Errorf("%s: Stalled = %+v, want reason %s", p.Name, c, fwv1.ReasonNodeFirewallTooLarge)
			}
			want := fmt.Sprintf("over the limit of %d bytes", suiteRequestLimit)
			if !strings.Contains(c.Message, "NodeFirewall size-big would be") || !strings.Contains(c.Message, want) {
				return fmt.Errorf("%s: message %q lacks the node, the size or %q", p.Name, c.Message, want)
			}
			return nil
		})
	}
	expectEvent(t, longPolicy("size-d", 0, all).Name, corev1.EventTypeWarning, fwv1.ReasonNodeFirewallTooLarge)

	// size-big keeps the last NodeFirewall that fitted (the first of the
	// new policies may have been written before the rest were created);
	// size-small gets all of its own.
	if err := policyCount("size-big", n, 2*n-1)(); err != nil {
		t.Errorf("after the oversized change: %v", err)
	}
	envtesting.Eventually(t, timeout, policyCount("size-small", n, n))
}

// TestOversizedRevisionIsReported: a policy whose rules make a revision
// over the request limit is not written; every node keeps the generation of
// the policy it has, the policy says why with the byte count and the limit
// (condition and Event), other policies on the same node still converge,
// and no write of the revision is tried until the policy changes.
func TestOversizedRevisionIsReported(t *testing.T) {
	newNode(t, "revsize-node", map[string]string{"revsize": ""})
	sel := metav1.LabelSelector{MatchLabels: map[string]string{"revsize": ""}}
	p := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "revsize-big"},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: sel, Rules: []fwv1.Rule{tcpRule("ssh", 22)}},
	})
	var first string
	envtesting.Eventually(t, timeout, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, "revsize-node")
		if err != nil {
			return err
		}
		spec, err := pinnedSpec(nfw)
		if err != nil {
			return err
		}
		if len(spec.Policies) != 1 || spec.Policies[0].Revision == "" {
			return fmt.Errorf("revsize-node lists %+v, want revsize-big with its revision", spec.Policies)
		}
		first = spec.Policies[0].Revision
		return nil
	})

	// 512 rules (the most a policy has) of one port and 32 /32s each:
	// about 320 KiB of revision.
	before := writesSnapshot()["*v1.ControllerRevision/create"]
	var big []fwv1.Rule
	for i := range 512 {
		r := tcpRule(fmt.Sprintf("r%03d", i), int32(1000+i))
		for j := range 32 {
			r.Sources = append(r.Sources, fmt.Sprintf("10.%d.%d.%d/32", i/256, i%256, j))
		}
		big = append(big, r)
	}
	updatePolicy(t, p.Name, func(p *fwv1.NodeFirewallPolicy) { p.Spec.Rules = big })
	envtesting.Eventually(t, timeout, func() error {
		p, err := getPolicy(p.Name)
		if err != nil {
			return err
		}
		c := condition(p, fwv1.ConditionStalled)
		if c == nil || c.Reason != fwv1.ReasonRevisionTooLarge || c.ObservedGeneration != p.Generation {
			return fmt.Errorf("Stalled = %+v, want reason %s for generation %d", c, fwv1.ReasonRevisionTooLarge, p.Generation)
		}
		want := fmt.Sprintf("bytes, over the limit of %d bytes", suiteRevisionLimit)
		if !strings.Contains(c.Message, "ControllerRevision revsize-big-") || !strings.Contains(c.Message, want) {
			return fmt.Errorf("message %q lacks the revision, the size or %q", c.Message, want)
		}
		if r := condition(p, fwv1.ConditionReady); r == nil || r.Status != metav1.ConditionFalse || r.Reason != fwv1.ReasonRevisionTooLarge {
			return fmt.Errorf("Ready = %+v, want False with reason %s", r, fwv1.ReasonRevisionTooLarge)
		}
		return nil
	})
	expectEvent(t, p.Name, corev1.EventTypeWarning, fwv1.ReasonRevisionTooLarge)

	// Another policy on the node converges; the node keeps the generation
	// of the big one it had, and its revision stays.
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "revsize-other"},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: sel, Rules: []fwv1.Rule{tcpRule("web", 443)}},
	})
	envtesting.Eventually(t, timeout, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, "revsize-node")
		if err != nil {
			return err
		}
		spec, err := pinnedSpec(nfw)
		if err != nil {
			return err
		}
		var got []string
		for _, ref := range spec.Policies {
			got = append(got, fmt.Sprintf("%s@%d:%s", ref.Name, ref.Generation, ref.Revision))
		}
		if len(got) != 2 || got[0] != "revsize-big@1:"+first || !strings.HasPrefix(got[1], "revsize-other@1:") {
			return fmt.Errorf("revsize-node lists %v, want revsize-big@1:%s and revsize-other", got, first)
		}
		return nil
	})
	if _, err := getRevision(first); err != nil {
		t.Errorf("the revision the node still names: %v", err)
	}
	if got := writesSnapshot()["*v1.ControllerRevision/create"] - before; got != 1 {
		t.Errorf("%d revisions created since the oversized change, want 1 (revsize-other's): the oversized one is never sent", got)
	}
}

// TestOversizedAddressSetIsReported: a node peer's managed set that would
// grow over the request limit is not written: it keeps the addresses it
// has, the policy says why with the byte count and the limit (condition
// and Event), and the set is not sent again while it is too large.
func TestOversizedAddressSetIsReported(t *testing.T) {
	ctx := context.Background()
	podNode := func(i int) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("setsize-%03d", i), Labels: map[string]string{"setsize": "yes"}},
			Spec: corev1.NodeSpec{PodCIDRs: []string{fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), fmt.Sprintf("fd10:1111:2222:3333:%x::/80", i)}}}
		n.Spec.PodCIDR = n.Spec.PodCIDRs[0]
		return n
	}
	create := func(from, to int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := from; i < to; i++ {
			n := podNode(i)
			t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), n) })
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := k8sClient.Create(ctx, n); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	create(0, 3)
	pods := fwv1.Peer{PodCIDRs: &metav1.LabelSelector{MatchLabels: map[string]string{"setsize": "yes"}}}
	set, err := pods.SetName()
	if err != nil {
		t.Fatal(err)
	}
	p := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "setsize-pods"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"setsize": "yes"}},
			Rules:        []fwv1.Rule{{Name: "from-pods", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, From: []fwv1.Peer{pods}}},
		},
	})
	small := []string{"10.100.0.0/24", "10.100.1.0/24", "10.100.2.0/24", "fd10:1111:2222:3333::/80", "fd10:1111:2222:3333:1::/80", "fd10:1111:2222:3333:2::/80"}
	expectSet(t, set, small, true)

	// Pod CIDRs of 400 nodes: about 20 KiB of set, over the suite's 16 KiB.
	create(3, 400)
	envtesting.Eventually(t, timeout, func() error {
		p, err := getPolicy(p.Name)
		if err != nil {
			return err
		}
		c := condition(p, fwv1.ConditionStalled)
		if c == nil || c.Reason != fwv1.ReasonAddressSetTooLarge {
			return fmt.Errorf("Stalled = %+v, want reason %s", c, fwv1.ReasonAddressSetTooLarge)
		}
		want := fmt.Sprintf("bytes, over the limit of %d bytes", suiteRequestLimit)
		if !strings.Contains(c.Message, "NodeFirewallAddressSet "+set) || !strings.Contains(c.Message, want) {
			return fmt.Errorf("message %q lacks the set, the size or %q", c.Message, want)
		}
		return nil
	})
	expectEvent(t, p.Name, corev1.EventTypeWarning, fwv1.ReasonAddressSetTooLarge)
	// The set keeps the last addresses that fitted (it grew while the
	// nodes were being created) and is not sent again.
	kept := &fwv1.NodeFirewallAddressSet{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: set}, kept); err != nil {
		t.Fatal(err)
	}
	if n := resolve.SetSize(kept); n > suiteRequestLimit || len(kept.Spec.Addresses) < len(small) {
		t.Errorf("the set holds %d addresses in %d bytes, want at least the first %d, within the limit", len(kept.Spec.Addresses), n, len(small))
	}
	before := writesSnapshot()["*v1alpha1.NodeFirewallAddressSet/update"]
	reconcileNow(t)
	reconcileNow(t)
	now := &fwv1.NodeFirewallAddressSet{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: set}, now); err != nil {
		t.Fatal(err)
	}
	if now.ResourceVersion != kept.ResourceVersion {
		t.Errorf("the set changed from resource version %s to %s while too large", kept.ResourceVersion, now.ResourceVersion)
	}
	if got := writesSnapshot()["*v1alpha1.NodeFirewallAddressSet/update"] - before; got != 0 {
		t.Errorf("%d updates of address sets sent while the set is too large, want none", got)
	}
}
