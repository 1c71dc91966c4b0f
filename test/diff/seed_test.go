package diff

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/policytest"
	"github.com/nodefw/nodefw/internal/resolve"
)

// samplesDir holds the sample policies and their kustomization.
const samplesDir = "../../config/samples"

// samplePolicies reads the policies config/samples/kustomization.yaml lists.
func samplePolicies(t *testing.T) []v1alpha1.NodeFirewallPolicy {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(samplesDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	var out []v1alpha1.NodeFirewallPolicy
	for _, res := range k.Resources {
		data, err := os.ReadFile(filepath.Join(samplesDir, res))
		if err != nil {
			t.Fatal(err)
		}
		var p v1alpha1.NodeFirewallPolicy
		if err := yaml.UnmarshalStrict(data, &p); err != nil {
			t.Fatalf("%s: %v", res, err)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatal("no sample policies")
	}
	return out
}

// The sample policies' port matrix: flannel's VXLAN port, the API server,
// etcd, the kubelet, scheduler and controller-manager, and the NodePort
// range, each with its neighbours.
var (
	seedTCPPorts = []uint16{2378, 2379, 2380, 2381, 6443, 8472, 10249, 10250, 10251, 10252, 10253, 29999, 30000, 32767, 32768}
	seedUDPPorts = []uint16{2379, 6443, 8471, 8472, 8473, 10250, 30000}
)

// TestSamplePolicies resolves the sample policies for a control-plane node
// and a worker node and compares both renderings of each node's firewall
// on the samples' port matrix.
func TestSamplePolicies(t *testing.T) {
	tp := env(t)
	policies := samplePolicies(t)
	// The samples' peers resolve from the nodes: the control plane at the
	// server's addresses, and pod CIDRs on both sides of the router.
	nodes := []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "control-plane", Labels: map[string]string{
			"kubernetes.io/hostname": "control-plane", "node-role.kubernetes.io/control-plane": "",
		}}, Spec: corev1.NodeSpec{PodCIDRs: []string{"198.51.100.0/25", "2001:db8:2::/64"}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: netnstest.ServerV4.String()},
				{Type: corev1.NodeInternalIP, Address: netnstest.ServerV6.String()}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "worker", Labels: map[string]string{
			"kubernetes.io/hostname": "worker",
		}}, Spec: corev1.NodeSpec{PodCIDRs: []string{"192.0.2.0/26"}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: netnstest.ClientV4.String()}}}},
	}
	res := resolve.Resolve(resolve.Input{Policies: policies, Nodes: nodes})
	sets, peerProblems, err := policytest.AddressSetsFor(policies, nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(res.Problems, peerProblems...) {
		t.Errorf("resolving the samples: %s: %s: %s", p.Policy, p.Reason, p.Message)
	}
	var st stats
	for _, n := range nodes {
		spec := res.Nodes[n.Name]
		if len(spec.Rules) == 0 || spec.DefaultActions.Input != v1alpha1.ChainPolicyDrop {
			t.Fatalf("node %s: the samples resolve to %d rules, input %q: not the samples this test is about",
				n.Name, len(spec.Rules), spec.DefaultActions.Input)
		}
		t.Run(n.Name, func(t *testing.T) {
			c := newPeersRuleCase("sample policies on "+n.Name, spec, sets)
			tp.check(t, c, matrix(pairs(true), seedTCPPorts, seedUDPPorts), &st)
		})
	}
	t.Log(&st)
}
