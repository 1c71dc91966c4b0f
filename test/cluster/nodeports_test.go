package cluster

import (
	"context"
	"net/netip"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/localcluster"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// checkNodePortRestriction applies the nodeports-from-cidr sample, whose
// PreRouting rules match NodePorts as the client sent them, before
// kube-proxy's DNAT, through both of kube-proxy's modes: as written, its
// clients (192.168.0.0/16) leave out the LAN client, whose NodePort
// probes are then dropped on every node, whether the backend pod is local
// or across VXLAN, while pod-to-pod traffic is untouched; with the LAN
// client's address as its clients, every NodePort answers again.
func checkNodePortRestriction(t *testing.T, ctx context.Context, c *localcluster.Cluster, w *workload) {
	sample := loadSample(t, "firewall_v1alpha1_nodefirewallpolicy_nodeports_from_cidr.yaml")
	if err := c.Client.Create(ctx, sample.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := c.Client.Delete(context.Background(), &fwv1.NodeFirewallPolicy{ObjectMeta: sample.ObjectMeta})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s: %v", sample.Name, err)
		}
		waitPoliciesReady(t, context.Background(), c)
	})
	waitPoliciesReady(t, ctx, c)
	expect(t, "NodePorts from outside the sample's clients", w.nodePortProbes(netnstest.Dropped)...)
	expect(t, "pod to pod with NodePorts restricted", w.podProbes(netnstest.Accepted)...)

	client32 := netip.PrefixFrom(localcluster.HostAddr, 32).String()
	for {
		var p fwv1.NodeFirewallPolicy
		if err := c.Client.Get(ctx, client.ObjectKey{Name: sample.Name}, &p); err != nil {
			t.Fatal(err)
		}
		for i := range p.Spec.Rules {
			if len(p.Spec.Rules[i].Sources) > 0 {
				p.Spec.Rules[i].Sources = []string{client32}
			}
		}
		err := c.Client.Update(ctx, &p)
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	waitPoliciesReady(t, ctx, c)
	expect(t, "NodePorts from the LAN client, now one of the clients", w.nodePortProbes(netnstest.Accepted)...)
}
