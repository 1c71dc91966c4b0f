package v1alpha1_test

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// TestPeerSetName: equal peers share a set, whatever the order of their
// labels or their except; peers that select other addresses do not.
func TestPeerSetName(t *testing.T) {
	name := func(p v1alpha1.Peer) string {
		t.Helper()
		n, err := p.SetName()
		if err != nil {
			t.Fatalf("SetName(%+v): %v", p, err)
		}
		return n
	}
	ab := &metav1.LabelSelector{MatchLabels: map[string]string{"a": "1", "b": "2"}}
	ba := &metav1.LabelSelector{MatchLabels: map[string]string{"b": "2", "a": "1"}}
	xy := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "x", Operator: metav1.LabelSelectorOpExists},
		{Key: "y", Operator: metav1.LabelSelectorOpIn, Values: []string{"2", "1"}},
	}}
	yx := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "y", Operator: metav1.LabelSelectorOpIn, Values: []string{"1", "2"}},
		{Key: "x", Operator: metav1.LabelSelectorOpExists},
	}}
	if a, b := name(v1alpha1.Peer{PodCIDRs: xy}), name(v1alpha1.Peer{PodCIDRs: yx}); a != b {
		t.Errorf("expressions in another order name %q and %q, want one set", a, b)
	}

	nodes := name(v1alpha1.Peer{NodeSelector: ab})
	if !strings.HasPrefix(nodes, v1alpha1.ManagedNodesSetPrefix) || len(nodes) != len(v1alpha1.ManagedNodesSetPrefix)+16 {
		t.Errorf("node peer set %q: want %s and 16 hex digits", nodes, v1alpha1.ManagedNodesSetPrefix)
	}
	same := []v1alpha1.Peer{
		{NodeSelector: ab, AddressType: v1alpha1.NodeAddressInternalIP},
		{NodeSelector: ab, Except: []string{"10.0.0.1"}},
		{NodeSelector: ba},
	}
	for _, p := range same {
		if got := name(p); got != nodes {
			t.Errorf("SetName(%+v) = %q, want %q", p, got, nodes)
		}
	}
	others := []v1alpha1.Peer{
		{NodeSelector: ab, AddressType: v1alpha1.NodeAddressExternalIP},
		{PodCIDRs: ab},
		{NodeSelector: &metav1.LabelSelector{}},
	}
	seen := map[string]bool{nodes: true}
	for _, p := range others {
		n := name(p)
		if seen[n] {
			t.Errorf("SetName(%+v) = %q, shared with another peer", p, n)
		}
		seen[n] = true
	}
	if got := name(v1alpha1.Peer{AddressSet: "office"}); got != "office" {
		t.Errorf("address set peer names %q, want office", got)
	}
	bad := v1alpha1.Peer{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}
	if n, err := bad.SetName(); err == nil {
		t.Errorf("SetName of an invalid selector = %q, want an error", n)
	}
}
