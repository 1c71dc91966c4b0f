package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed"
	"github.com/nodefw/nodefw/internal/testbed/suite"
)

var (
	apiServer  = testbed.Port{Proto: testbed.TCP, Port: 6443, Note: "kube-apiserver"}
	etcdClient = testbed.Port{Proto: testbed.TCP, Port: 2379, Note: "etcd client"}
	etcdPeer   = testbed.Port{Proto: testbed.TCP, Port: 2380, Note: "etcd peer"}
)

// controlPlanePeer selects the control-plane nodes, as kubeadm labels them.
func controlPlanePeer() []fwv1.Peer {
	return []fwv1.Peer{{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: testbed.LabelControlPlane, Operator: metav1.LabelSelectorOpExists},
	}}}}
}

// TestControlPlanePeers: the control plane accepts etcd and the API server
// only from the control-plane nodes, named by a nodeSelector peer rather
// than by address. A node that becomes a control-plane node reaches those
// ports only once its address is in the peer's set: labelled while its
// kubelet has not reported an address yet, it is still dropped; its
// InternalIP reported, it is accepted within seconds, by an element added
// to the control plane's set. Workers stay dropped throughout.
//
// The agents confirm a new ruleset by reaching cp-1's API server port from
// their node; a worker that could not reach it before its own change
// keeps its ruleset, so the restriction does not trip that check. The
// control-plane sample comes back before the labels do, so that no node
// loses the API server port between its check and its change.
func TestControlPlanePeers(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()
	worker2 := c.Node("worker-2")
	t.Cleanup(func() {
		// Before the baseline: the sample accepts the ports from anyone
		// again, and worker-2's kubelet reports its address.
		if err := setInternalIP(ctx, c, "worker-2", worker2.Addr.String()); err != nil {
			t.Errorf("restoring worker-2's InternalIP: %v", err)
		}
		c.RestoreSample(t, "control-plane")
		c.WaitPolicy(t, "control-plane", "sample restored", nil)
	})

	guarded := []testbed.Port{apiServer, etcdClient, etcdPeer}
	c.Expect(t, "the sample accepts the control-plane ports from every node", concat(
		c.Checks("worker-1", "cp-1", accepted, guarded...),
		c.Checks("worker-2", "cp-1", accepted, guarded...),
	))

	start := c.Update(t, "control-plane", func(p *fwv1.NodeFirewallPolicy) {
		for i := range p.Spec.Rules {
			if r := &p.Spec.Rules[i]; r.Name == "kube-apiserver" || r.Name == "etcd" {
				r.From = controlPlanePeer()
			}
		}
	})
	workersOut := concat(
		c.Checks("worker-1", "cp-1", dropped, guarded...),
		c.Checks("worker-2", "cp-1", dropped, guarded...),
		// The rest of the control plane's rules are untouched.
		c.Checks("worker-1", "cp-1", accepted, kubelet, vxlan),
		c.Checks("worker-2", "cp-1", accepted, kubelet),
	)
	c.Converge(t, "etcd and the API server only from control-plane peers", workersOut, start, changeWithin)
	c.WaitPolicy(t, "control-plane", "peer restriction applied", suite.Matched(1))

	// worker-2 joins the control plane: its kubelet has not reported an
	// address yet, so the peer set does not hold it.
	if err := setInternalIP(ctx, c, "worker-2", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.SetNodeLabel(ctx, "worker-2", testbed.LabelControlPlane, new(string)); err != nil {
		t.Fatal(err)
	}
	c.WaitPolicy(t, "control-plane", "selects cp-1 and worker-2", suite.Matched(2))
	c.Hold(t, "worker-2 labelled, its address not in the peer set: still dropped", concat(
		c.Checks("worker-2", "cp-1", dropped, guarded...),
		c.Checks("worker-1", "cp-1", dropped, guarded...),
	), 2*resyncPeriod)

	start = time.Now()
	if err := setInternalIP(ctx, c, "worker-2", worker2.Addr.String()); err != nil {
		t.Fatal(err)
	}
	took := c.Converge(t, "worker-2's InternalIP in the peer set: etcd and the API server accept it", concat(
		c.Checks("worker-2", "cp-1", accepted, guarded...),
		c.Checks("worker-1", "cp-1", dropped, guarded...),
	), start, changeWithin)
	t.Logf("node address reported to packets accepted by the control plane: %s", took.Round(time.Millisecond))
}

// setInternalIP writes a node's InternalIP into its status, as its kubelet
// reports it; "" removes it, as before the kubelet's first report.
func setInternalIP(ctx context.Context, c *suite.Cluster, name, addr string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n := &corev1.Node{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
			return err
		}
		n.Status.Addresses = slices.DeleteFunc(n.Status.Addresses, func(a corev1.NodeAddress) bool { return a.Type == corev1.NodeInternalIP })
		if addr != "" {
			n.Status.Addresses = append([]corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}, n.Status.Addresses...)
		}
		return c.Client.Status().Update(ctx, n)
	})
}

// TestAddressSetRemoval: an address removed from a NodeFirewallAddressSet
// gets its new verdict within changeWithin of the API edit, whether the
// set feeds a Drop rule (the address is accepted again by the rules after
// it) or an Accept rule (the address falls to the default Drop), while the
// addresses that stay keep theirs. The edit changes the set only: cp-1's
// NodeFirewall is not written.
func TestAddressSetRemoval(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()
	w1, w2 := c.Node("worker-1").Addr.String(), c.Node("worker-2").Addr.String()
	blocked := &fwv1.NodeFirewallAddressSet{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-blocked"},
		Spec:       fwv1.NodeFirewallAddressSetSpec{Addresses: []fwv1.AddressSetEntry{"192.0.2.0/24", fwv1.AddressSetEntry(w1), fwv1.AddressSetEntry(w2), "2001:db8::/64"}},
	}
	allowed := &fwv1.NodeFirewallAddressSet{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-allowed"},
		Spec:       fwv1.NodeFirewallAddressSetSpec{Addresses: []fwv1.AddressSetEntry{fwv1.AddressSetEntry(w1), "198.51.100.7", fwv1.AddressSetEntry(w2)}},
	}
	policy := &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-sets"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": "cp-1"}},
			// Before the control-plane sample, which accepts the kubelet.
			Priority: ptr.To[int32](50),
			Rules: []fwv1.Rule{
				{Name: "blocked-kubelet", Chain: fwv1.ChainInput, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 10250}},
					From: []fwv1.Peer{{AddressSet: blocked.Name}}, Action: fwv1.ActionDrop},
				{Name: "allowed-8080", Chain: fwv1.ChainInput, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 8080}},
					From: []fwv1.Peer{{AddressSet: allowed.Name}}, Action: fwv1.ActionAccept},
			},
		},
	}
	t.Cleanup(func() {
		if err := c.DeletePolicy(ctx, policy.Name); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting policy %s: %v", policy.Name, err)
		}
		for _, s := range []*fwv1.NodeFirewallAddressSet{blocked, allowed} {
			if err := c.Client.Delete(ctx, &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: s.Name}}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting NodeFirewallAddressSet %s: %v", s.Name, err)
			}
		}
	})
	for _, s := range []*fwv1.NodeFirewallAddressSet{blocked, allowed} {
		if err := c.Client.Create(ctx, s.DeepCopy()); err != nil {
			t.Fatalf("creating NodeFirewallAddressSet %s: %v", s.Name, err)
		}
	}
	start := time.Now()
	if err := c.ApplyPolicy(ctx, policy); err != nil {
		t.Fatalf("creating policy %s: %v", policy.Name, err)
	}
	c.Converge(t, "both workers in both sets", concat(
		c.Checks("worker-1", "cp-1", dropped, kubelet),
		c.Checks("worker-2", "cp-1", dropped, kubelet),
		c.Checks("worker-1", "cp-1", accepted, unlisted),
		c.Checks("worker-2", "cp-1", accepted, unlisted),
	), start, changeWithin)
	c.WaitPolicy(t, policy.Name, "Ready on cp-1", suite.Matched(1))
	generation := nodeFirewallGeneration(t, c, "cp-1")

	took := removeAndConverge(t, c, blocked.Name, w1, "worker-1 out of the Drop rule's set: the kubelet accepts it again", concat(
		c.Checks("worker-1", "cp-1", accepted, kubelet),
		c.Checks("worker-2", "cp-1", dropped, kubelet),
		c.Checks("worker-1", "cp-1", accepted, unlisted),
		c.Checks("worker-2", "cp-1", accepted, unlisted),
	))
	t.Logf("Drop rule's set: API edit to new verdict in %s", took.Round(time.Millisecond))

	took = removeAndConverge(t, c, allowed.Name, w1, "worker-1 out of the Accept rule's set: the default Drop drops it", concat(
		c.Checks("worker-1", "cp-1", dropped, unlisted),
		c.Checks("worker-2", "cp-1", accepted, unlisted),
		c.Checks("worker-1", "cp-1", accepted, kubelet),
		c.Checks("worker-2", "cp-1", dropped, kubelet),
	))
	t.Logf("Accept rule's set: API edit to new verdict in %s", took.Round(time.Millisecond))

	if got := nodeFirewallGeneration(t, c, "cp-1"); got != generation {
		t.Errorf("NodeFirewall cp-1 went from generation %d to %d on set edits: a set's change must not rewrite the node's spec", generation, got)
	}
}

// removeAndConverge removes addr from the set and waits, at most
// changeWithin from the edit, until the checks pass.
func removeAndConverge(t *testing.T, c *suite.Cluster, set, addr, what string, checks []testbed.Check) time.Duration {
	t.Helper()
	ctx := context.Background()
	var start time.Time
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s := &fwv1.NodeFirewallAddressSet{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: set}, s); err != nil {
			return err
		}
		s.Spec.Addresses = slices.DeleteFunc(s.Spec.Addresses, func(a fwv1.AddressSetEntry) bool { return string(a) == addr })
		start = time.Now()
		return c.Client.Update(ctx, s)
	})
	if err != nil {
		t.Fatalf("removing %s from NodeFirewallAddressSet %s: %v", addr, set, err)
	}
	return c.Converge(t, what, checks, start, changeWithin)
}

func nodeFirewallGeneration(t *testing.T, c *suite.Cluster, node string) int64 {
	t.Helper()
	nfw := &fwv1.NodeFirewall{}
	if err := c.Client.Get(context.Background(), client.ObjectKey{Name: node}, nfw); err != nil {
		t.Fatal(err)
	}
	return nfw.Generation
}
