package controllers

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/resolve"
)

// longPolicy is a policy with a name of 240 characters: its reference on
// a node, with the revision named after it, takes about 0.5 KiB, so a few
// dozen take a NodeFirewall over the suite's request limit.
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
	const n = 20
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
