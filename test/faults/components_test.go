package faults

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/resolve"
	"github.com/nodefw/nodefw/internal/testbed"
	"github.com/nodefw/nodefw/internal/testbed/suite"
)

var (
	accepted, dropped = testbed.Accepted, testbed.Dropped
	kubelet           = testbed.Port{Proto: testbed.TCP, Port: 10250, Note: "kubelet"}
	unlisted          = testbed.Port{Proto: testbed.TCP, Port: 8080, Note: "not listed"}
)

// maxAgentCPU is the share of one core an agent may use on average while
// the API server is away: it has nothing to do but keep its table.
const maxAgentCPU = 0.05

// reconnectWithin bounds how long a policy change made once the API
// server is back from an outage takes to reach every kernel. client-go's
// reflector alone would retry a failed watch after a backoff capped at 30s
// plus up to 100% jitter; the manager's and agents' lists and watches wait
// for the API server instead (internal/reconnect), so their watches resume
// within a probe interval of its return, whatever the outage's length.
const reconnectWithin = 10 * time.Second

// TestAPIServerOutage stops the API server for a minute
// (NODEFW_FAULTS_OUTAGE sets another length; `make faults-long-outage` runs
// it for five): every node's rules hold, probed throughout; no agent spins
// (each uses under 5% of a core on average, from /proc/PID/stat); and once
// the API server is back a policy change reaches every kernel within
// reconnectWithin, every NodeFirewall and kernel then equal to the
// resolver's output for the stored policies (no update lost).
func TestAPIServerOutage(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	outage := time.Minute
	if s := os.Getenv(outageEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration", outageEnv, s)
		}
		outage = d
	}
	checks := c.SeedChecks()
	c.Expect(t, "before the outage", checks)

	type proc struct {
		name  string
		pid   int
		start time.Duration
	}
	var procs []*proc
	for _, n := range c.Nodes {
		pid, err := pidOf("agent", n.NS.Path())
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, &proc{name: "agent of " + n.Name, pid: pid})
	}
	if pid, err := pidOf("manager", c.Kubeconfig); err == nil {
		procs = append(procs, &proc{name: "manager", pid: pid})
	}
	for _, p := range procs {
		var err error
		if p.start, err = cpuTime(p.pid); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	if err := c.ControlPlane.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := getObject(c, "worker", &fwv1.NodeFirewallPolicy{}); err == nil {
		t.Fatal("the API server still answers after StopAPIServer")
	}
	c.Hold(t, "every node's rules with the API server down", checks, outage)
	elapsed := time.Since(start)

	for _, p := range procs {
		used, err := cpuTime(p.pid)
		if err != nil {
			t.Errorf("%s (pid %d) is gone during the outage: %v", p.name, p.pid, err)
			continue
		}
		share := (used - p.start).Seconds() / elapsed.Seconds()
		t.Logf("%s: %s of CPU in %s of outage (%.2f%% of a core)", p.name, used-p.start, elapsed.Round(time.Second), 100*share)
		if strings.HasPrefix(p.name, "agent") && share > maxAgentCPU {
			t.Errorf("%s used %.1f%% of a core while the API server was away; want under %.0f%%", p.name, 100*share, 100*maxAgentCPU)
		}
	}
	for _, p := range c.Agents() {
		if !p.Running() {
			t.Errorf("%s exited during the outage\n%s", p.Name, testbed.LogTail(p, 20))
		}
	}

	back := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.ControlPlane.StartAPIServer(ctx); err != nil {
		t.Fatalf("starting the API server again: %v", err)
	}
	serving := time.Now()
	t.Logf("API server serving again after %s", serving.Sub(back).Round(10*time.Millisecond))
	c.Expect(t, "every node's rules after the API server returned", checks)

	// The manager and the agents reconnect: an edit goes through.
	changed := c.Update(t, "worker", func(p *fwv1.NodeFirewallPolicy) { testbed.RemoveRules(p, "kubelet") })
	took := c.Converge(t, "an edit after the outage", slices.Concat(
		c.Checks("cp-1", "worker-1", dropped, kubelet),
		c.Checks("cp-1", "worker-2", dropped, kubelet),
	), changed, reconnectWithin)
	t.Logf("recovery: after a %s outage, the edit reached every kernel %s after it was made (%s after the API server served again)",
		elapsed.Round(time.Second), took.Round(10*time.Millisecond), time.Since(serving).Round(10*time.Millisecond))
	c.WaitFor(t, "every NodeFirewall and kernel equal to the resolver's output", reconnectWithin, func(ctx context.Context) (bool, error) {
		mismatches, err := c.KernelMismatches(ctx)
		return len(mismatches) == 0, err
	})
	c.WaitPolicy(t, "worker", "the edit after the outage applied", suite.Matched(2))
}

// TestNodeDeletedAndReAdded deletes a Node: the controller deletes its
// NodeFirewall, the agent removes its table (what the node dropped is
// accepted again) and releases its finalizer. Registering the node again
// brings a new NodeFirewall, programmed as before.
func TestNodeDeletedAndReAdded(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	const name = "worker-2"
	protected := c.Checks("cp-1", name, dropped, testbed.WorkerDropped...)
	open := c.Checks("cp-1", name, accepted, testbed.WorkerAccepted...)
	c.Expect(t, "before", slices.Concat(protected, open))

	ctx := context.Background()
	node := &corev1.Node{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
		t.Fatal(err)
	}
	old := &fwv1.NodeFirewall{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, old); err != nil {
		t.Fatal(err)
	}

	deleted := time.Now()
	if err := c.Client.Delete(ctx, node.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	// No table, no filtering: every port of the node answers.
	c.Converge(t, "node deleted: its table removed", c.Checks("cp-1", name, accepted, testbed.WorkerDropped...), deleted, statusWithin)
	c.WaitFor(t, "NodeFirewall "+name+" gone, the agent's finalizer released", statusWithin, func(ctx context.Context) (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &fwv1.NodeFirewall{})
		return isNotFound(err), client.IgnoreNotFound(err)
	})
	if tableExists(c, name) {
		t.Errorf("table inet nodefw is still in %s's kernel", name)
	}
	c.WaitPolicy(t, "worker", "one worker left", suite.Matched(1))
	// The other nodes keep their rules.
	c.Expect(t, "the other nodes", slices.Concat(
		c.Checks("cp-1", "worker-1", dropped, testbed.WorkerDropped...),
		c.Checks("worker-1", "cp-1", dropped, testbed.ControlPlaneDropped...),
	))

	// Registered again, as a kubelet would.
	readded := time.Now()
	again := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: node.Labels}, Spec: corev1.NodeSpec{
		PodCIDR: node.Spec.PodCIDR, PodCIDRs: node.Spec.PodCIDRs,
	}}
	if err := c.Client.Create(ctx, again); err != nil {
		t.Fatal(err)
	}
	again.Status = node.Status
	if err := c.Client.Status().Update(ctx, again); err != nil {
		t.Fatal(err)
	}
	c.Converge(t, "node re-added: programmed again", slices.Concat(protected, open), readded, statusWithin)
	c.WaitPolicy(t, "worker", "both workers again", suite.Matched(2))
	nfw := &fwv1.NodeFirewall{}
	if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, nfw); err != nil {
		t.Fatal(err)
	}
	if nfw.UID == old.UID {
		t.Errorf("NodeFirewall %s has the old UID: it was never deleted", name)
	}
	if !testbed.NodeFirewallReady(nfw) {
		t.Errorf("NodeFirewall %s is not Ready: %+v", name, nfw.Status)
	}
}

// TestSelectorMatchingNoNodes points a policy's selector at no node: its
// rules leave every node it selected, and it reads Ready with reason
// NoMatchingNodes.
func TestSelectorMatchingNoNodes(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	start := c.Update(t, "worker", func(p *fwv1.NodeFirewallPolicy) {
		p.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: map[string]string{"nodefw.example/no-such-node": "true"}}
	})
	// Without the worker policy nothing drops on the workers' Input.
	c.Converge(t, "the worker policy's rules gone", slices.Concat(
		c.Checks("cp-1", "worker-1", accepted, testbed.WorkerDropped...),
		c.Checks("cp-1", "worker-2", accepted, testbed.WorkerDropped...),
	), start, statusWithin)
	// The control plane keeps its own policy.
	c.Expect(t, "the control plane", c.Checks("worker-1", "cp-1", dropped, testbed.ControlPlaneDropped...))

	p := c.WaitPolicy(t, "worker", "matches no node", suite.Matched(0))
	ready := meta.FindStatusCondition(p.Status.Conditions, fwv1.ConditionReady)
	if ready.Reason != fwv1.ReasonNoMatchingNodes {
		t.Errorf("Ready reason %q, want %s", ready.Reason, fwv1.ReasonNoMatchingNodes)
	}
	nfws, err := nodeFirewalls(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	for name, nfw := range nfws {
		for _, r := range nfw.Spec.Rules {
			if r.Policy == "worker" {
				t.Errorf("NodeFirewall %s still holds rule %s of policy worker", name, r.Name)
				break
			}
		}
		if slices.ContainsFunc(nfw.Spec.Policies, func(ref fwv1.PolicyReference) bool { return ref.Name == "worker" }) {
			t.Errorf("NodeFirewall %s still lists policy worker", name)
		}
	}
}

// TestManagerRestartMidRollout kills the controller in the middle of a
// staged rollout (maxUnavailable 1) and starts it again. The workers'
// agents are down at the change, so the rollout stops with one node given
// the new generation and not applying it; the manager is killed there.
// Once everything runs again the rollout completes: the policy is Ready
// with every node at the new generation, and at no moment were two nodes
// taking it at once.
func TestManagerRestartMidRollout(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()
	const name = "fault-rollout"
	// Ahead of the samples; the first generation matches nothing real.
	p := &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{},
			Priority:     ptr.To[int32](10),
			Rollout:      &fwv1.RolloutStrategy{MaxUnavailable: 1},
			Rules: []fwv1.Rule{{Name: "test-net", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept,
				Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 9}}, Sources: []string{"192.0.2.1"}}},
		},
	}
	if err := c.ApplyPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	c.WaitPolicy(t, name, "first generation on every node", suite.Matched(int32(len(c.Nodes))))

	// Watch the rollout throughout: nodes given the new generation and not
	// (yet) reporting it applied may never exceed maxUnavailable.
	var (
		mu       sync.Mutex
		gen      int64
		worst    int
		worstAt  []string
		stopped  = make(chan struct{})
		watching sync.WaitGroup
	)
	watching.Add(1)
	go func() {
		defer watching.Done()
		for {
			select {
			case <-stopped:
				return
			case <-time.After(20 * time.Millisecond):
			}
			mu.Lock()
			g := gen
			mu.Unlock()
			if g == 0 {
				continue
			}
			lctx, cancel := context.WithTimeout(ctx, time.Second)
			nfws, err := nodeFirewalls(lctx, c)
			cancel()
			if err != nil {
				continue
			}
			var inflight []string
			for n, nfw := range nfws {
				if given(nfw, name, g) && resolve.PolicyOnNode(nfw, name, g) != resolve.StateApplied {
					inflight = append(inflight, n)
				}
			}
			mu.Lock()
			if len(inflight) > worst {
				worst, worstAt = len(inflight), inflight
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stopped); watching.Wait() })

	workers := []*testbed.Node{c.Node("worker-1"), c.Node("worker-2")}
	for _, n := range workers {
		n.Agent.Kill()
	}
	start := c.Update(t, name, func(p *fwv1.NodeFirewallPolicy) {
		p.Spec.Rules = append(p.Spec.Rules, fwv1.Rule{Name: "unlisted", Chain: fwv1.ChainInput, Action: fwv1.ActionAccept,
			Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 8080}}})
	})
	cur, err := c.Policy(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	gen = cur.Generation
	mu.Unlock()

	// Mid-rollout: a worker was given the new generation and, its agent
	// down, cannot apply it; the rollout waits for it.
	var have []string
	c.WaitFor(t, "a worker given generation "+itoa(cur.Generation), statusWithin, func(ctx context.Context) (bool, error) {
		nfws, err := nodeFirewalls(ctx, c)
		if err != nil {
			return false, err
		}
		have = have[:0]
		for _, n := range c.Nodes {
			if given(nfws[n.Name], name, cur.Generation) {
				have = append(have, n.Name)
			}
		}
		return slices.ContainsFunc(have, func(n string) bool { return strings.HasPrefix(n, "worker-") }), nil
	})
	if len(have) == len(c.Nodes) {
		t.Fatalf("every node was given generation %d at once: %v", cur.Generation, have)
	}
	c.Manager.Kill()
	t.Logf("manager killed %s after the change, with generation %d on %v", time.Since(start).Round(10*time.Millisecond), cur.Generation, have)
	if err := c.Manager.Start(); err != nil {
		t.Fatal(err)
	}
	// The restarted manager resumes the rollout where it stood: still
	// held by the worker that has not applied.
	time.Sleep(2 * time.Second)
	for _, n := range workers {
		if err := n.Agent.Start(); err != nil {
			t.Fatal(err)
		}
	}

	c.WaitPolicy(t, name, "rollout completed after the manager restart", suite.Matched(int32(len(c.Nodes))))
	nfws, err := nodeFirewalls(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if s := resolve.PolicyOnNode(nfws[n.Name], name, cur.Generation); s != resolve.StateApplied {
			t.Errorf("node %s: generation %d of %s is not applied (state %d)", n.Name, cur.Generation, name, s)
		}
	}
	c.Converge(t, "the new generation in every kernel", slices.Concat(
		c.Checks("worker-1", "cp-1", accepted, unlisted),
		c.Checks("cp-1", "worker-1", accepted, unlisted),
		c.Checks("cp-1", "worker-2", accepted, unlisted),
	), start, statusWithin)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("at most %d node(s) were taking the new generation at once (%v)", worst, worstAt)
	if worst > 1 {
		t.Errorf("%d nodes were taking the new generation at once (%v); maxUnavailable is 1", worst, worstAt)
	}
}

// given reports whether a NodeFirewall carries the generation of a policy.
func given(nfw *fwv1.NodeFirewall, policy string, gen int64) bool {
	return nfw != nil && resolve.GenerationOn(nfw, policy) == gen
}

// TestForeignRuleEditsRepaired has another actor edit nodefw's table: a
// rule of the worker policy replaced by an accept of an unlisted port
// (`nft replace rule`) on worker-1, one deleted by handle on worker-2.
// Each agent restores its table within the resync period and counts the
// repair (a DriftRepaired event; the testbed's agents serve no metrics).
func TestForeignRuleEditsRepaired(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()
	for _, tc := range []struct {
		node string
		edit []string
	}{
		{"worker-1", []string{"replace", "rule", "inet", "nodefw", "input", "handle", "HANDLE", "tcp", "dport", "8080", "accept"}},
		{"worker-2", []string{"delete", "rule", "inet", "nodefw", "input", "handle", "HANDLE"}},
	} {
		t.Run(tc.node, func(t *testing.T) {
			ns := c.Node(tc.node).NS
			table := slices.Concat(
				c.Checks("cp-1", tc.node, accepted, testbed.WorkerAccepted...),
				c.Checks("cp-1", tc.node, dropped, testbed.WorkerDropped...),
			)
			before, err := driftRepairs(ctx, c, tc.node)
			if err != nil {
				t.Fatal(err)
			}
			listing, err := c.Ruleset(tc.node)
			if err != nil {
				t.Fatal(err)
			}
			handle := ruleHandle(t, ns, "worker/")
			cmd := slices.Clone(tc.edit)
			cmd[slices.Index(cmd, "HANDLE")] = handle
			start := time.Now()
			if _, err := ns.Exec(append([]string{"nft"}, cmd...)...); err != nil {
				t.Fatal(err)
			}
			if now, err := c.Ruleset(tc.node); err == nil && now != listing {
				t.Logf("nft %s: the table changed", strings.Join(cmd, " "))
			}
			took := c.Converge(t, "the table repaired", table, start, resyncPeriod+5*time.Second)
			if took > resyncPeriod+1500*time.Millisecond {
				t.Errorf("repair took %s, more than the resync period %s", took.Round(10*time.Millisecond), resyncPeriod)
			}
			c.WaitFor(t, "a DriftRepaired event for "+tc.node, statusWithin, func(ctx context.Context) (bool, error) {
				n, err := driftRepairs(ctx, c, tc.node)
				return n > before, err
			})
			if now, err := c.Ruleset(tc.node); err != nil || withoutCounters(now) != withoutCounters(listing) {
				t.Errorf("the repaired table differs from the one before the edit:\n--- before\n%s\n--- after\n%s", listing, now)
			}
		})
	}
}

// counters are nft's packet and byte counts, which the probes move.
var counters = regexp.MustCompile(`counter packets [0-9]+ bytes [0-9]+`)

// alternateSet is the "-b" form of a set's name, which a full rewrite of
// the table alternates with the plain one.
var alternateSet = regexp.MustCompile(`((?:set |@)[a-z0-9-]+?)-b\b`)

// withoutCounters is a listing without its counts, its sets under their
// plain names and without trailing blank lines: what a repair restores.
func withoutCounters(listing string) string {
	listing = counters.ReplaceAllString(listing, "counter")
	return strings.TrimSpace(alternateSet.ReplaceAllString(listing, "$1"))
}

// ruleHandle returns the handle of the first input rule whose comment
// starts with prefix and that is not a log rule, from `nft -a list chain`.
func ruleHandle(t *testing.T, ns *testbed.NS, prefix string) string {
	t.Helper()
	out, err := ns.Exec("nft", "-a", "list", "chain", "inet", "nodefw", "input")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, `comment "`+prefix) || strings.Contains(line, " log ") {
			continue
		}
		if i := strings.LastIndex(line, "# handle "); i >= 0 {
			return strings.TrimSpace(line[i+len("# handle "):])
		}
	}
	t.Fatalf("no input rule with a comment starting %q in:\n%s", prefix, out)
	return ""
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
