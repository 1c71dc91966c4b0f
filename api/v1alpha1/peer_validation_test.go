package v1alpha1_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// controlPlane selects the control-plane nodes.
func controlPlane() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpExists,
	}}}
}

func TestPeersRejectInvalid(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(r *v1alpha1.Rule)
		field string
		msg   string
	}{
		{
			name:  "peer names nothing",
			edit:  func(r *v1alpha1.Rule) { r.From = []v1alpha1.Peer{{Except: []string{"10.0.0.1"}}} },
			field: "spec.rules[0].from",
			msg:   "each peer sets exactly one of nodeSelector, podCIDRs and addressSet",
		},
		{
			name: "peer names two things",
			edit: func(r *v1alpha1.Rule) {
				r.To = []v1alpha1.Peer{{NodeSelector: controlPlane(), AddressSet: "office"}}
			},
			field: "spec.rules[0].to",
			msg:   "each peer sets exactly one of nodeSelector, podCIDRs and addressSet",
		},
		{
			name: "addressType without nodeSelector",
			edit: func(r *v1alpha1.Rule) {
				r.From = []v1alpha1.Peer{{PodCIDRs: &metav1.LabelSelector{}, AddressType: v1alpha1.NodeAddressExternalIP}}
			},
			field: "spec.rules[0].from",
			msg:   "addressType requires nodeSelector",
		},
		{
			name: "unknown addressType",
			edit: func(r *v1alpha1.Rule) {
				r.From = []v1alpha1.Peer{{NodeSelector: controlPlane(), AddressType: "Hostname"}}
			},
			field: "spec.rules[0].from[0].addressType",
			msg:   "Unsupported value",
		},
		{
			name: "except not a CIDR",
			edit: func(r *v1alpha1.Rule) {
				r.From = []v1alpha1.Peer{{PodCIDRs: &metav1.LabelSelector{}, Except: []string{"10.0.0.0/40"}}}
			},
			field: "spec.rules[0].from",
			msg:   "except must be IP addresses or CIDRs",
		},
		{
			name: "addressSet not a name",
			edit: func(r *v1alpha1.Rule) {
				r.From = []v1alpha1.Peer{{AddressSet: "Office_Ranges"}}
			},
			field: "spec.rules[0].from[0].addressSet",
			msg:   "should match",
		},
		{
			name: "from with sources",
			edit: func(r *v1alpha1.Rule) {
				r.Sources = []string{"10.0.0.1"}
				r.From = []v1alpha1.Peer{{AddressSet: "office"}}
			},
			field: "spec.rules[0].from",
			msg:   "a rule takes sources or from, not both",
		},
		{
			name: "to with destinations",
			edit: func(r *v1alpha1.Rule) {
				r.Destinations = []string{"10.0.0.1"}
				r.To = []v1alpha1.Peer{{AddressSet: "office"}}
			},
			field: "spec.rules[0].to",
			msg:   "a rule takes destinations or to, not both",
		},
		{
			name: "too many peers",
			edit: func(r *v1alpha1.Rule) {
				for i := range v1alpha1.MaxPeers + 1 {
					r.From = append(r.From, v1alpha1.Peer{AddressSet: fmt.Sprintf("set-%d", i)})
				}
			},
			field: "spec.rules[0].from",
			msg:   "must have at most 8 items",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := basePolicy(fmt.Sprintf("invalid-peer-%d", i))
			tc.edit(rule(p))
			wantInvalid(t, createRaw(t, toUnstructured(t, p)), tc.field, tc.msg)
		})
	}
}

// TestPeersAcceptValid: every kind of peer is stored as sent, in a policy
// of the largest size, so that the CEL rules of peers stay within the API
// server's cost budget.
func TestPeersAcceptValid(t *testing.T) {
	p := basePolicy("valid-peers")
	p.Spec.Rules = rules(v1alpha1.MaxPolicyRules)
	for i := range p.Spec.Rules {
		r := &p.Spec.Rules[i]
		for j := range v1alpha1.MaxPeers {
			r.From = append(r.From, v1alpha1.Peer{
				NodeSelector: controlPlane(),
				AddressType:  v1alpha1.NodeAddressExternalIP,
				Except:       repeat(v1alpha1.MaxPeerExcepts, func(k int) string { return fmt.Sprintf("10.%d.%d.0/24", j, k) }),
			})
			r.To = append(r.To, v1alpha1.Peer{AddressSet: fmt.Sprintf("set-%d", j)})
		}
	}
	p.Spec.Rules[0].From = []v1alpha1.Peer{{PodCIDRs: &metav1.LabelSelector{}, Except: []string{"fd00::/64", "10.244.0.0/24"}}}
	if err := k8sClient.Create(context.Background(), p, client.DryRunAll); err != nil {
		t.Fatalf("create: %v", err)
	}
	small := basePolicy("valid-peers-small")
	rule(small).From = []v1alpha1.Peer{{NodeSelector: controlPlane()}, {PodCIDRs: &metav1.LabelSelector{}}}
	rule(small).To = []v1alpha1.Peer{{AddressSet: "office.ranges"}}
	want := small.Spec.Rules[0].DeepCopy()
	cleanup(t, small)
	if err := k8sClient.Create(context.Background(), small); err != nil {
		t.Fatalf("create: %v", err)
	}
	got := &v1alpha1.NodeFirewallPolicy{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(small), got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(*want, got.Spec.Rules[0]); diff != "" {
		t.Errorf("stored rule differs (-sent +stored):\n%s", diff)
	}
}

// addressSet is a NodeFirewallAddressSet of the given addresses.
func addressSet(name string, addrs ...string) *v1alpha1.NodeFirewallAddressSet {
	s := &v1alpha1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		s.Spec.Addresses = append(s.Spec.Addresses, v1alpha1.AddressSetEntry(a))
	}
	return s
}

// blocklist returns n distinct addresses and CIDRs of both families, the
// mix of a threat-intelligence list.
func blocklist(n int) []string {
	out := make([]string, n)
	for i := range out {
		switch i % 4 {
		case 0:
			out[i] = fmt.Sprintf("198.%d.%d.%d", 18+i/65536%2, i/256%256, i%256)
		case 1:
			out[i] = fmt.Sprintf("100.%d.%d.0/24", 64+i/65536%64, i/256%256)
		case 2:
			out[i] = fmt.Sprintf("2001:db8:%x::/48", i)
		default:
			out[i] = fmt.Sprintf("2001:db8:ffff:%x::/64", i)
		}
	}
	return out
}

// TestAddressSetHoldsFiftyThousand stores a set of 50,000 entries of both
// families, within the CEL cost budgets and etcd's request size.
func TestAddressSetHoldsFiftyThousand(t *testing.T) {
	s := addressSet("blocklist-50k", blocklist(50000)...)
	cleanup(t, s)
	if err := k8sClient.Create(context.Background(), s); err != nil {
		t.Fatalf("create: %v", err)
	}
	got := &v1alpha1.NodeFirewallAddressSet{}
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(s), got); err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.Addresses) != 50000 || got.Spec.Addresses[49999] != s.Spec.Addresses[49999] {
		t.Fatalf("stored %d addresses, want 50000", len(got.Spec.Addresses))
	}
	max := addressSet("blocklist-max", blocklist(v1alpha1.MaxAddressSetEntries)...)
	if err := k8sClient.Create(context.Background(), max, client.DryRunAll); err != nil {
		t.Fatalf("create of %d entries: %v", v1alpha1.MaxAddressSetEntries, err)
	}
	over := addressSet("blocklist-over", blocklist(v1alpha1.MaxAddressSetEntries+1)...)
	wantInvalid(t, k8sClient.Create(context.Background(), over, client.DryRunAll), "spec.addresses", "must have at most 60000 items")
}

func TestAddressSetRejectsInvalid(t *testing.T) {
	cases := []struct {
		name, addr, field, msg string
	}{
		{"prefix too long", "10.0.0.0/33", "spec.addresses[1]", "addresses must be IP addresses or CIDRs"},
		{"IPv6 prefix too long", "fd00::/129", "spec.addresses[1]", "addresses must be IP addresses or CIDRs"},
		{"octet out of range", "10.0.0.256", "spec.addresses[1]", "addresses must be IP addresses or CIDRs"},
		{"host name", "example.com", "spec.addresses[1]", "should match"},
		{"empty", "", "spec.addresses[1]", "should be at least 2 chars long"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := addressSet(fmt.Sprintf("invalid-set-%d", i), "192.0.2.1", tc.addr)
			cleanup(t, s)
			wantInvalid(t, k8sClient.Create(context.Background(), s), tc.field, tc.msg)
		})
	}
}
