package e2e

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed"
)

// changeWithin is how soon a change must show in the kernel of every node.
const changeWithin = 5 * time.Second

// statusWithin bounds waits for status, which follows the kernel.
const statusWithin = 30 * time.Second

// nodesOf lists the nodes a set of checks involves, for diagnostics.
func nodesOf(checks []testbed.Check) []string {
	var out []string
	for _, c := range checks {
		for _, h := range []*testbed.Host{c.From, c.To} {
			n, _ := strings.CutSuffix(h.Name, "/pod")
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// expect probes once (re-probing slow answers) and fails the test with the
// probe matrix, the status and the involved nodes' rulesets on a mismatch.
func expect(t *testing.T, what string, checks []testbed.Check) {
	t.Helper()
	rs := testbed.VerifyChecks(checks)
	if !rs.OK() {
		t.Fatalf("%s: %d of %d probes differ\n%s", what, len(rs.Failed()), len(rs), cluster.Diagnose(context.Background(), rs, nodesOf(checks)...))
	}
}

// hold probes again and again for d: the verdicts must never change.
func hold(t *testing.T, what string, checks []testbed.Check, d time.Duration) {
	t.Helper()
	rounds := 0
	for end := time.Now().Add(d); rounds < 2 || time.Now().Before(end); rounds++ {
		expect(t, what, checks)
	}
	t.Logf("%s: held for %d probe rounds (%d probes each)", what, rounds, len(checks))
}

// converge waits until the checks pass, at most within after start (when
// the change was made), logs how long it took, and returns that.
func converge(t *testing.T, what string, checks []testbed.Check, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	took, rs, err := cluster.AwaitChecks(context.Background(), checks, start, within)
	if err != nil {
		t.Fatalf("%s: not in the kernel within %s: %v\n%s", what, within, err, cluster.Diagnose(context.Background(), rs, nodesOf(checks)...))
	}
	t.Logf("%s: converged in %s (change to packets in the kernel)", what, took.Round(10*time.Millisecond))
	return took
}

// update changes a policy and returns when the change was made.
func update(t *testing.T, name string, mutate func(*fwv1.NodeFirewallPolicy)) time.Time {
	t.Helper()
	start := time.Now()
	if err := cluster.UpdatePolicy(context.Background(), name, mutate); err != nil {
		t.Fatalf("updating policy %s: %v", name, err)
	}
	return start
}

// sample returns a copy of the sample policy called name.
func sample(t *testing.T, name string) *fwv1.NodeFirewallPolicy {
	t.Helper()
	for _, p := range samples {
		if p.Name == name {
			return p.DeepCopy()
		}
	}
	t.Fatalf("no sample policy %q", name)
	return nil
}

// restoreSample puts a sample policy back as it was and returns when.
func restoreSample(t *testing.T, name string) time.Time {
	t.Helper()
	start := time.Now()
	if err := cluster.ApplyPolicy(context.Background(), sample(t, name)); err != nil {
		t.Fatalf("restoring policy %s: %v", name, err)
	}
	return start
}

// waitPolicy waits until a policy satisfies cond and is Ready for its
// current generation, and logs its status.
func waitPolicy(t *testing.T, name, what string, cond func(*fwv1.NodeFirewallPolicy) bool) *fwv1.NodeFirewallPolicy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), statusWithin)
	defer cancel()
	start := time.Now()
	var p *fwv1.NodeFirewallPolicy
	for {
		var err error
		p, err = cluster.Policy(ctx, name)
		if err == nil && testbed.PolicyReady(p) && (cond == nil || cond(p)) {
			break
		}
		select {
		case <-ctx.Done():
			desc := "not found"
			if p != nil {
				desc = statusLine(p)
			}
			t.Fatalf("policy %s: %s: not reported within %s: %s\n%s", name, what, statusWithin, desc, cluster.Diagnose(context.Background(), nil))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("policy %s: %s (%s, %s later)", name, what, statusLine(p), time.Since(start).Round(10*time.Millisecond))
	return p
}

func statusLine(p *fwv1.NodeFirewallPolicy) string {
	ready := "Ready unset"
	for _, c := range p.Status.Conditions {
		if c.Type == fwv1.ConditionReady {
			ready = "Ready=" + string(c.Status) + " " + c.Reason
		}
	}
	return strings.Join([]string{
		ready,
		"generation " + itoa(p.Generation) + ", observed " + itoa(p.Status.ObservedGeneration),
		"matched " + itoa(int64(p.Status.MatchedNodes)) + ", applied " + itoa(int64(p.Status.AppliedNodes)),
	}, ", ")
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// matched says a policy's status counts n matched and applied nodes.
func matched(n int32) func(*fwv1.NodeFirewallPolicy) bool {
	return func(p *fwv1.NodeFirewallPolicy) bool {
		return p.Status.MatchedNodes == n && p.Status.AppliedNodes == n
	}
}

// restoreBaseline puts the cluster back as the suite started it: the API
// server and every agent running, the original node labels, exactly the
// sample policies; then checks the hardening table with packets.
func restoreBaseline(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cluster.ControlPlane.StartAPIServer(ctx); err != nil {
		t.Fatalf("restarting the API server: %v", err)
	}
	for _, n := range cluster.Nodes {
		if !n.Agent.Running() {
			if err := n.Agent.Start(); err != nil {
				t.Fatalf("restarting the agent of %s: %v", n.Name, err)
			}
		}
		var value *string
		if n.ControlPlane {
			value = new(string)
		}
		if err := cluster.SetNodeLabel(ctx, n.Name, testbed.LabelControlPlane, value); err != nil {
			t.Fatalf("resetting the labels of %s: %v", n.Name, err)
		}
	}
	var list fwv1.NodeFirewallPolicyList
	if err := cluster.Client.List(ctx, &list); err != nil {
		t.Fatalf("listing policies: %v", err)
	}
	for _, p := range list.Items {
		if !slices.ContainsFunc(samples, func(s *fwv1.NodeFirewallPolicy) bool { return s.Name == p.Name }) {
			if err := cluster.DeletePolicy(ctx, p.Name); err != nil {
				t.Fatalf("deleting policy %s: %v", p.Name, err)
			}
		}
	}
	for _, p := range samples {
		if err := cluster.ApplyPolicy(ctx, p); err != nil {
			t.Fatalf("restoring policy %s: %v", p.Name, err)
		}
	}
	if err := cluster.WaitReady(ctx); err != nil {
		t.Fatalf("restoring the baseline: %v\n%s", err, cluster.Diagnose(context.Background(), nil))
	}
	expect(t, "baseline restored", cluster.SeedChecks())
}
