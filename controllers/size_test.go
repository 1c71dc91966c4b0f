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

// bigPolicy is a policy of MaxPolicyRules rules of 32 sources each, about
// 0.45 MiB once resolved: four of them on one node go over the request limit.
func bigPolicy(name string, selector metav1.LabelSelector) *fwv1.NodeFirewallPolicy {
	rules := make([]fwv1.Rule, fwv1.MaxPolicyRules)
	for i := range rules {
		r := tcpRule(fmt.Sprintf("rule-%03d", i), int32(1000+i))
		for j := range 32 {
			r.Sources = append(r.Sources, fmt.Sprintf("fd00:%x:%x::%x/128", i/256, i%256, j))
		}
		rules[i] = r
	}
	return &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       fwv1.NodeFirewallPolicySpec{NodeSelector: selector, Rules: rules},
	}
}

// TestOversizedNodeFirewallIsReported: a node whose NodeFirewall would be
// over the request limit keeps its last one, every contributing policy says
// why with the byte count and the limit, and other nodes still converge.
func TestOversizedNodeFirewallIsReported(t *testing.T) {
	newNode(t, "size-big", map[string]string{"size-big": "", "size-all": ""})
	newNode(t, "size-small", map[string]string{"size-all": ""})
	big := metav1.LabelSelector{MatchLabels: map[string]string{"size-big": ""}}
	for _, name := range []string{"size-a", "size-b", "size-c"} {
		newPolicy(t, bigPolicy(name, big))
	}
	envtesting.Eventually(t, timeout, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, "size-big")
		if err != nil {
			return err
		}
		if n := len(nfw.Spec.Rules); n != 3*fwv1.MaxPolicyRules {
			return fmt.Errorf("size-big has %d rules, want %d", n, 3*fwv1.MaxPolicyRules)
		}
		if n := resolve.SerializedSize(nfw); n > resolve.DefaultRequestLimit {
			return fmt.Errorf("the written NodeFirewall is %d bytes, over the limit", n)
		}
		return nil
	})

	// A fourth policy, selecting both nodes, takes size-big over the limit.
	newPolicy(t, bigPolicy("size-d", metav1.LabelSelector{MatchLabels: map[string]string{"size-all": ""}}))
	for _, name := range []string{"size-a", "size-d"} {
		envtesting.Eventually(t, timeout, func() error {
			p, err := getPolicy(name)
			if err != nil {
				return err
			}
			c := condition(p, fwv1.ConditionStalled)
			if c == nil || c.Reason != fwv1.ReasonNodeFirewallTooLarge {
				return fmt.Errorf("%s: Stalled = %+v, want reason %s", name, c, fwv1.ReasonNodeFirewallTooLarge)
			}
			want := fmt.Sprintf("over the limit of %d bytes", resolve.DefaultRequestLimit)
			if !strings.Contains(c.Message, "NodeFirewall size-big would be") || !strings.Contains(c.Message, want) {
				return fmt.Errorf("%s: message %q lacks the node, the size or %q", name, c.Message, want)
			}
			return nil
		})
	}
	expectEvent(t, "size-d", corev1.EventTypeWarning, fwv1.ReasonNodeFirewallTooLarge)

	// size-big keeps its last NodeFirewall; size-small gets its own.
	nfw, err := envtesting.GetNodeFirewall(k8sClient, "size-big")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(nfw.Spec.Rules); n != 3*fwv1.MaxPolicyRules {
		t.Errorf("size-big has %d rules after the oversized change, want the last written %d", n, 3*fwv1.MaxPolicyRules)
	}
	envtesting.Eventually(t, timeout, func() error {
		nfw, err := envtesting.GetNodeFirewall(k8sClient, "size-small")
		if err != nil {
			return err
		}
		if n := len(nfw.Spec.Rules); n != fwv1.MaxPolicyRules {
			return fmt.Errorf("size-small has %d rules, want %d", n, fwv1.MaxPolicyRules)
		}
		return nil
	})
}
