package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed"
)

// startNodePort creates the demo's NodePort Service and its EndpointSlice
// and waits until every node's kube-proxy answers it.
func (d *demo) startNodePort(ctx context.Context) error {
	c := d.c
	start := time.Now()
	if err := c.CreateNodePortService(ctx, nodePortService, nodePort, nodePortBackend); err != nil {
		return err
	}
	backend := c.Node(nodePortBackend).Pod.Addr
	fmt.Printf("    Service %s: NodePort %d on every node -> %s's pod %s:%d (its EndpointSlice written through the API)\n",
		nodePortService, nodePort, nodePortBackend, backend, testbed.PodTCPPort)
	took, rs, err := c.AwaitChecks(ctx, d.nodePortChecks(testbed.Accepted, testbed.Accepted), start, 30*time.Second)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("the NodePort does not answer: %w\n%s%s", err, rs.Table(), c.Diagnose(ctx, rs))
	}
	fmt.Printf("    kube-proxy answers NodePort %d on every node after %s\n", nodePort, round(took))
	return nil
}

// nodePortChecks probe NodePort through cp-1 (kube-proxy in nftables
// mode) and worker-1 (iptables mode): from the other one of the two, with
// allowed, and from worker-2, with others. Every connection is DNATed to
// worker-2's pod and crosses VXLAN.
func (d *demo) nodePortChecks(allowed, others testbed.Verdict) []testbed.Check {
	c := d.c
	note := func(via string) string {
		n := c.Node(via)
		return fmt.Sprintf("NodePort: kube-proxy %s DNAT to %s's pod over VXLAN", n.ProxyMode, nodePortBackend)
	}
	return []testbed.Check{
		c.NodePortCheck("worker-1", "cp-1", nodePort, allowed, note("cp-1")),
		c.NodePortCheck("cp-1", "worker-1", nodePort, allowed, note("worker-1")),
		c.NodePortCheck("worker-2", "cp-1", nodePort, others, note("cp-1")),
		c.NodePortCheck("worker-2", "worker-1", nodePort, others, note("worker-1")),
	}
}

// restrictNodePorts applies the nodeports-from-cidr sample with cp-1 and
// worker-1 as its clients: its PreRouting rules see the NodePort the
// client used, before kube-proxy's DNAT, and drop worker-2's connections
// through both kube-proxy modes while the others still connect.
func (d *demo) restrictNodePorts(ctx context.Context, sample *fwv1.NodeFirewallPolicy) error {
	c := d.c
	clients := []string{
		netip.PrefixFrom(c.Node("cp-1").Addr, 32).String(),
		netip.PrefixFrom(c.Node("worker-1").Addr, 32).String(),
	}
	d.header("Restricting NodePorts live, in PreRouting: %s with clients cp-1 and worker-1 only", sample.Name)
	p := sample.DeepCopy()
	for i := range p.Spec.Rules {
		if len(p.Spec.Rules[i].Sources) > 0 {
			p.Spec.Rules[i].Sources = clients
		}
	}
	start := time.Now()
	if err := c.ApplyPolicy(ctx, p); err != nil {
		return fmt.Errorf("applying %s: %w", p.Name, err)
	}
	fmt.Printf("    kubectl apply -f config/samples/firewall_v1alpha1_nodefirewallpolicy_nodeports_from_cidr.yaml   # sources %v\n", clients)
	if err := d.await(ctx, "worker-2's NodePort connections are dropped, cp-1's and worker-1's still connect,",
		d.nodePortChecks(testbed.Accepted, testbed.Dropped), start); err != nil {
		return err
	}
	return d.waitReady(ctx)
}
