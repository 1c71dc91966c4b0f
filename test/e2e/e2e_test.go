package e2e

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/testbed"
	"github.com/nodefw/nodefw/internal/testbed/suite"
)

// Shorthands for the verdicts.
const (
	accepted = testbed.Accepted
	dropped  = testbed.Dropped
)

var (
	kubelet = testbed.Port{Proto: testbed.TCP, Port: 10250, Note: "kubelet"}
	// inRange is a port of the node itself in the NodePort range: nothing
	// DNATs it, so it is no NodePort. Workers accept it on Input, as
	// kube-proxy's IPVS mode needs; control-plane nodes drop it.
	inRange  = testbed.Port{Proto: testbed.TCP, Port: 30000, Note: "node's own port in the NodePort range"}
	unlisted = testbed.Port{Proto: testbed.TCP, Port: 8080, Note: "not listed"}
	below    = testbed.Port{Proto: testbed.TCP, Port: 29999, Note: "below NodePort range"}
	vxlan    = testbed.Port{Proto: testbed.UDP, Port: 8472, Note: "flannel VXLAN"}
)

func concat(parts ...[]testbed.Check) []testbed.Check { return slices.Concat(parts...) }

// TestControlPlaneIngress: a control-plane node accepts exactly the
// hardening table's ports from a worker.
func TestControlPlaneIngress(t *testing.T) {
	c := bed.Cluster(t)
	var checks []testbed.Check
	for _, from := range []string{"worker-1", "worker-2"} {
		checks = concat(checks,
			c.Checks(from, "cp-1", accepted, testbed.ControlPlaneAccepted...),
			c.Checks(from, "cp-1", dropped, testbed.ControlPlaneDropped...))
	}
	c.Expect(t, "control-plane ingress", checks)
}

// TestWorkerIngress: a worker accepts VXLAN, the kubelet and its own ports
// in the NodePort range (Input's accept for IPVS mode; these are no
// NodePorts: TestNodePortPreRouting probes those), and nothing else.
func TestWorkerIngress(t *testing.T) {
	c := bed.Cluster(t)
	var checks []testbed.Check
	for _, to := range []string{"worker-1", "worker-2"} {
		checks = concat(checks,
			c.Checks("cp-1", to, accepted, testbed.WorkerAccepted...),
			c.Checks("cp-1", to, dropped, testbed.WorkerDropped...))
	}
	checks = concat(checks,
		c.Checks("worker-2", "worker-1", accepted, testbed.WorkerAccepted...),
		c.Checks("worker-2", "worker-1", dropped, testbed.WorkerDropped...))
	c.Expect(t, "worker ingress", checks)
}

// TestForward: pod traffic crosses nodes through the Forward accepts; with
// a default Drop and no accepts, pods on different nodes cannot talk.
func TestForward(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	pods := func(want testbed.Verdict) []testbed.Check {
		return []testbed.Check{
			c.PodCheck("worker-1/pod", "worker-2/pod", want),
			c.PodCheck("worker-2/pod", "cp-1/pod", want),
			c.PodCheck("cp-1/pod", "worker-1/pod", want),
			c.PodCheck("cp-1", "worker-2/pod", want),
		}
	}
	c.Expect(t, "pods across nodes", pods(accepted))

	// A default Drop on the workers' Forward chain: the accepts still let
	// the pod range through.
	c.Update(t, "worker", func(p *fwv1.NodeFirewallPolicy) {
		if p.Spec.DefaultActions == nil {
			p.Spec.DefaultActions = &fwv1.DefaultActions{}
		}
		p.Spec.DefaultActions.Forward = fwv1.ChainPolicyDrop
	})
	c.WaitPolicy(t, "worker", "forward default Drop applied", suite.Matched(2))
	c.Expect(t, "forward Drop with the pod-range accepts", pods(accepted))

	// Without the accepts the default Drop cuts pods on different nodes off.
	start := c.Update(t, "worker", func(p *fwv1.NodeFirewallPolicy) {
		testbed.RemoveRules(p, "pod-cidr-from", "pod-cidr-to")
	})
	c.Converge(t, "forward accepts removed: pods cut off", pods(dropped), start, changeWithin)
	c.WaitPolicy(t, "worker", "accepts removal applied", suite.Matched(2))

	start = c.RestoreSample(t, "worker")
	c.Converge(t, "worker policy restored: pods reach each other", pods(accepted), start, changeWithin)
}

// TestOutput: a default Drop on one node's Output chain with accepts for
// the pod range and the control plane lets that node reach only those.
func TestOutput(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()

	// Failsafe outbound ports (53, 6443, 67-68) pass anyway: probe others.
	cp := c.Node("cp-1").Addr
	restricted := concat(
		c.Checks("worker-1", "cp-1", accepted, kubelet, vxlan),
		c.Checks("worker-1", "worker-2", dropped, kubelet, vxlan),
		[]testbed.Check{
			c.PodCheck("worker-1", "worker-1/pod", accepted),
			c.PodCheck("worker-1", "worker-2/pod", accepted),
			c.PodCheck("worker-1", "cp-1/pod", accepted),
		},
		// Other nodes are unaffected, and so is traffic to worker-1 (its
		// replies are established) and through it (Forward, not Output).
		c.Checks("worker-2", "worker-1", accepted, kubelet, vxlan),
		c.Checks("worker-2", "cp-1", accepted, kubelet),
		c.Checks("cp-1", "worker-2", accepted, kubelet),
		[]testbed.Check{c.PodCheck("worker-2/pod", "worker-1/pod", accepted)},
	)
	open := concat(
		c.Checks("worker-1", "worker-2", accepted, kubelet, vxlan),
		c.Checks("worker-1", "cp-1", accepted, kubelet),
	)
	c.Expect(t, "worker-1 egress before", open)

	egress := &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-egress"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector:   metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": "worker-1"}},
			Priority:       ptr.To[int32](50),
			Mode:           fwv1.PolicyModeEnforce,
			DefaultActions: &fwv1.DefaultActions{Output: fwv1.ChainPolicyDrop},
			Rules: []fwv1.Rule{
				{Name: "to-pods", Chain: fwv1.ChainOutput, Destinations: []string{testbed.PodNetwork.String()}, Action: fwv1.ActionAccept},
				{Name: "to-control-plane", Chain: fwv1.ChainOutput, Destinations: []string{netip.PrefixFrom(cp, 32).String()}, Action: fwv1.ActionAccept},
			},
		},
	}
	start := time.Now()
	if err := c.ApplyPolicy(ctx, egress); err != nil {
		t.Fatalf("creating policy e2e-egress: %v", err)
	}
	c.Converge(t, "worker-1 output default Drop", restricted, start, changeWithin)
	c.WaitPolicy(t, "e2e-egress", "Ready on worker-1", suite.Matched(1))

	start = time.Now()
	if err := c.DeletePolicy(ctx, "e2e-egress"); err != nil {
		t.Fatalf("deleting policy e2e-egress: %v", err)
	}
	c.Converge(t, "egress policy deleted: worker-1 reaches everything again", open, start, changeWithin)
}

// TestLiveChanges: a policy edit, a node relabel and a policy delete each
// reach the kernel of every affected node within seconds, and the status
// reports them.
func TestLiveChanges(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()

	t.Run("PolicyEdit", func(t *testing.T) {
		edited := concat(
			c.Checks("cp-1", "worker-1", dropped, kubelet),
			c.Checks("cp-1", "worker-2", dropped, kubelet),
			// The rest of the policy and the other policies are untouched.
			c.Checks("cp-1", "worker-1", accepted, vxlan),
			c.Checks("worker-1", "cp-1", accepted, kubelet),
		)
		start := c.Update(t, "worker", func(p *fwv1.NodeFirewallPolicy) { testbed.RemoveRules(p, "kubelet") })
		c.Converge(t, "kubelet rule removed from the worker policy", edited, start, changeWithin)
		p := c.WaitPolicy(t, "worker", "edit applied on both workers", suite.Matched(2))
		for _, n := range []string{"worker-1", "worker-2"} {
			nfw := &fwv1.NodeFirewall{}
			if err := c.Client.Get(ctx, client.ObjectKey{Name: n}, nfw); err != nil {
				t.Fatal(err)
			}
			if !testbed.NodeFirewallReady(nfw) || resolve.GenerationOn(nfw, "worker") != p.Generation {
				t.Fatalf("NodeFirewall %s does not report worker generation %d applied: %+v %+v", n, p.Generation, nfw.Spec.Policies, nfw.Status)
			}
		}

		start = c.RestoreSample(t, "worker")
		c.Converge(t, "kubelet rule restored", concat(
			c.Checks("cp-1", "worker-1", accepted, kubelet),
			c.Checks("cp-1", "worker-2", accepted, kubelet),
		), start, changeWithin)
		c.WaitPolicy(t, "worker", "restore applied", suite.Matched(2))
	})

	t.Run("NodeRelabel", func(t *testing.T) {
		asControlPlane := concat(
			c.Checks("worker-1", "worker-2", accepted,
				testbed.Port{Proto: testbed.TCP, Port: 2379, Note: "etcd client"},
				testbed.Port{Proto: testbed.TCP, Port: 10251, Note: "kube-scheduler"},
				testbed.Port{Proto: testbed.TCP, Port: 10252, Note: "kube-controller-manager"},
				kubelet, vxlan),
			c.Checks("worker-1", "worker-2", dropped, inRange, unlisted),
			// worker-1 keeps the worker rules.
			c.Checks("worker-2", "worker-1", accepted, kubelet, vxlan),
		)
		asWorker := concat(
			c.Checks("worker-1", "worker-2", dropped,
				testbed.Port{Proto: testbed.TCP, Port: 2379, Note: "etcd client"},
				testbed.Port{Proto: testbed.TCP, Port: 10251, Note: "kube-scheduler"}),
			c.Checks("worker-1", "worker-2", accepted, vxlan, kubelet),
		)
		c.Expect(t, "worker-2 as a worker", asWorker)

		start := time.Now()
		if err := c.SetNodeLabel(ctx, "worker-2", testbed.LabelControlPlane, new(string)); err != nil {
			t.Fatal(err)
		}
		c.Converge(t, "worker-2 labelled control-plane", asControlPlane, start, changeWithin)
		c.WaitPolicy(t, "control-plane", "selects cp-1 and worker-2", suite.Matched(2))
		c.WaitPolicy(t, "worker", "selects worker-1 only", suite.Matched(1))

		start = time.Now()
		if err := c.SetNodeLabel(ctx, "worker-2", testbed.LabelControlPlane, nil); err != nil {
			t.Fatal(err)
		}
		c.Converge(t, "control-plane label removed from worker-2", asWorker, start, changeWithin)
		c.WaitPolicy(t, "control-plane", "selects cp-1 only", suite.Matched(1))
		c.WaitPolicy(t, "worker", "selects both workers", suite.Matched(2))
	})

	t.Run("PolicyDelete", func(t *testing.T) {
		// Without the worker policy nothing sets the workers' Input
		// default: it is Accept again.
		open := concat(
			c.Checks("cp-1", "worker-1", accepted, unlisted, below, kubelet),
			c.Checks("cp-1", "worker-2", accepted, unlisted, below),
		)
		start := time.Now()
		if err := c.DeletePolicy(ctx, "worker"); err != nil {
			t.Fatal(err)
		}
		c.Converge(t, "worker policy deleted", open, start, changeWithin)
		if err := c.WaitReady(ctx); err != nil {
			t.Fatalf("after the delete: %v", err)
		}
		for _, n := range []string{"worker-1", "worker-2"} {
			nfw := &fwv1.NodeFirewall{}
			if err := c.Client.Get(ctx, client.ObjectKey{Name: n}, nfw); err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(nfw.Spec.Policies, func(r fwv1.PolicyReference) bool { return r.Name == "worker" }) {
				t.Fatalf("NodeFirewall %s still lists the deleted policy: %+v", n, nfw.Spec.Policies)
			}
		}

		start = c.RestoreSample(t, "worker")
		c.Converge(t, "worker policy re-created", concat(
			c.Checks("cp-1", "worker-1", dropped, unlisted, below),
			c.Checks("cp-1", "worker-2", dropped, unlisted),
			c.Checks("cp-1", "worker-1", accepted, kubelet),
		), start, changeWithin)
		c.WaitPolicy(t, "worker", "re-created and applied on both workers", suite.Matched(2))
	})
}

// TestFailures: rules hold while an agent or the API server is down, an
// outside flush is repaired within the resync period, and everything
// converges again once the pieces are back.
func TestFailures(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()
	worker1 := concat(
		c.Checks("cp-1", "worker-1", accepted, testbed.WorkerAccepted...),
		c.Checks("cp-1", "worker-1", dropped, testbed.WorkerDropped...),
		[]testbed.Check{c.PodCheck("worker-2/pod", "worker-1/pod", accepted)},
	)

	t.Run("AgentKilled", func(t *testing.T) {
		agent := c.Node("worker-1").Agent
		agent.Kill()
		if agent.Running() {
			t.Fatal("the agent still runs after kill -9")
		}
		c.Hold(t, "worker-1's rules with its agent killed", worker1, 3*time.Second)

		if err := agent.Start(); err != nil {
			t.Fatalf("restarting the agent: %v", err)
		}
		// The restarted agent takes over: an edit reaches worker-1.
		start := c.Update(t, "worker", func(p *fwv1.NodeFirewallPolicy) { testbed.RemoveRules(p, "kubelet") })
		c.Converge(t, "edit after the agent restart", c.Checks("cp-1", "worker-1", dropped, kubelet), start, 30*time.Second)
		c.WaitPolicy(t, "worker", "applied by the restarted agent", suite.Matched(2))
		start = c.RestoreSample(t, "worker")
		c.Converge(t, "kubelet restored", c.Checks("cp-1", "worker-1", accepted, kubelet), start, changeWithin)
	})

	t.Run("RulesetFlushed", func(t *testing.T) {
		ns := c.Node("worker-1").NS
		start := time.Now()
		if _, err := ns.Exec("nft", "flush", "ruleset"); err != nil {
			t.Fatal(err)
		}
		if out, err := ns.Exec("nft", "list", "ruleset"); err == nil && !strings.Contains(out, "table inet nodefw") {
			t.Logf("ruleset of worker-1 right after the flush: empty")
		}
		took := c.Converge(t, "flushed ruleset repaired", worker1, start, resyncPeriod+3*time.Second)
		if took > resyncPeriod+time.Second {
			t.Errorf("repair took %s, more than the resync period %s", took.Round(10*time.Millisecond), resyncPeriod)
		}
		if _, err := c.Ruleset("worker-1"); err != nil {
			t.Fatalf("table inet nodefw after the repair: %v", err)
		}
	})

	t.Run("APIServerDown", func(t *testing.T) {
		if err := c.ControlPlane.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.Client.Get(short, client.ObjectKey{Name: "worker"}, &fwv1.NodeFirewallPolicy{})
		cancel()
		if err == nil {
			t.Fatal("the API server still answers after StopAPIServer")
		}
		c.Hold(t, "every node's rules with the API server down", c.SeedChecks(), 4*time.Second)

		start := time.Now()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := c.ControlPlane.StartAPIServer(sctx); err != nil {
			t.Fatalf("starting the API server again: %v", err)
		}
		t.Logf("API server serving again after %s", time.Since(start).Round(10*time.Millisecond))
		c.Expect(t, "every node's rules after the API server returned", c.SeedChecks())

		// The manager and the agents reconnect: an edit goes through.
		start = c.Update(t, "worker", func(p *fwv1.NodeFirewallPolicy) { testbed.RemoveRules(p, "kubelet") })
		c.Converge(t, "edit after the API server restart", concat(
			c.Checks("cp-1", "worker-1", dropped, kubelet),
			c.Checks("cp-1", "worker-2", dropped, kubelet),
		), start, 30*time.Second)
		c.WaitPolicy(t, "worker", "status after the API server restart", suite.Matched(2))
		start = c.RestoreSample(t, "worker")
		c.Converge(t, "kubelet restored", concat(
			c.Checks("cp-1", "worker-1", accepted, kubelet),
			c.Checks("cp-1", "worker-2", accepted, kubelet),
		), start, changeWithin)
	})
}

// TestNodePortPreRouting: with a NodePort as kube-proxy programs it (a
// DNAT at priority dstnat to the node's pod), the samples accept it from
// the nodes' LAN, which nodeports-from-cidr allows, and a restriction of
// that policy to one client reaches the kernel and drops the others before
// the DNAT, while the allowed client still connects to the pod.
func TestNodePortPreRouting(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	const port = 30080
	remove, err := c.EmulateNodePort("worker-1", port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Errorf("removing the emulated NodePort: %v", err)
		}
	})
	nodePort := testbed.Port{Proto: testbed.TCP, Port: port, Note: "NodePort, DNAT to worker-1/pod:8080"}
	open := concat(
		c.Checks("cp-1", "worker-1", accepted, nodePort),
		c.Checks("worker-2", "worker-1", accepted, nodePort),
		// The same port on the control-plane node, where nothing DNATs
		// it, is no NodePort: Input drops it.
		c.Checks("worker-2", "cp-1", dropped, testbed.Port{Proto: testbed.TCP, Port: port, Note: "no DNAT on cp-1"}),
	)
	c.Expect(t, "NodePort from the LAN", open)

	cp := netip.PrefixFrom(c.Node("cp-1").Addr, 32).String()
	start := c.Update(t, "nodeports-from-cidr", func(p *fwv1.NodeFirewallPolicy) {
		for i := range p.Spec.Rules {
			if len(p.Spec.Rules[i].Sources) > 0 {
				p.Spec.Rules[i].Sources = []string{cp}
			}
		}
	})
	c.Converge(t, "NodePort restricted to cp-1", concat(
		c.Checks("cp-1", "worker-1", accepted, nodePort),
		c.Checks("worker-2", "worker-1", dropped, nodePort),
	), start, changeWithin)
	c.WaitPolicy(t, "nodeports-from-cidr", "restriction applied on every node", suite.Matched(3))

	start = c.RestoreSample(t, "nodeports-from-cidr")
	c.Converge(t, "NodePort open to the LAN again", open, start, changeWithin)
}
