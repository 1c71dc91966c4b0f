package suite

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

// StatusWithin bounds waits for status, which follows the kernel.
const StatusWithin = 30 * time.Second

// Cluster is the shared cluster with the sample policies applied, and the
// expectations the tests make of it. Each method fails the test on a
// mismatch, with the probe matrix and the cluster's state.
type Cluster struct {
	*testbed.Cluster
	// Samples are the sample policies as applied at the start.
	Samples []*fwv1.NodeFirewallPolicy

	restartWhenUnsettled bool
}

// Expect probes once (re-probing slow answers) and fails the test with the
// probe matrix, the status and the involved nodes' rulesets on a mismatch.
func (c *Cluster) Expect(t testing.TB, what string, checks []testbed.Check) {
	t.Helper()
	if rs := testbed.VerifyChecks(checks); !rs.OK() {
		t.Fatalf("%s: %d of %d probes differ\n%s", what, len(rs.Failed()), len(rs), c.Diagnose(context.Background(), rs, nodesOf(checks)...))
	}
}

// Hold probes again and again for d: the verdicts must never change. It
// returns the number of probe rounds.
func (c *Cluster) Hold(t testing.TB, what string, checks []testbed.Check, d time.Duration) int {
	t.Helper()
	rounds := 0
	for end := time.Now().Add(d); rounds < 2 || time.Now().Before(end); rounds++ {
		c.Expect(t, what, checks)
	}
	t.Logf("%s: held for %d probe rounds of %d probes over %s", what, rounds, len(checks), d)
	return rounds
}

// Converge waits until the checks pass, at most within after start (when
// the change was made), logs how long it took, and returns that.
func (c *Cluster) Converge(t testing.TB, what string, checks []testbed.Check, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	took, rs, err := c.AwaitChecks(context.Background(), checks, start, within)
	if err != nil {
		t.Fatalf("%s: not in the kernel within %s: %v\n%s", what, within, err, c.Diagnose(context.Background(), rs, nodesOf(checks)...))
	}
	t.Logf("%s: converged in %s (change to packets in the kernel)", what, took.Round(10*time.Millisecond))
	return took
}

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

// WaitFor polls cond until it holds or within passes.
func (c *Cluster) WaitFor(t testing.TB, what string, within time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s (last error: %v)\n%s", what, within, last, c.Diagnose(context.Background(), nil))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Update changes a policy and returns when the change was made.
func (c *Cluster) Update(t testing.TB, name string, mutate func(*fwv1.NodeFirewallPolicy)) time.Time {
	t.Helper()
	start := time.Now()
	if err := c.UpdatePolicy(context.Background(), name, mutate); err != nil {
		t.Fatalf("updating policy %s: %v", name, err)
	}
	return start
}

// WaitPolicy waits until a policy is Ready for its current generation and
// cond (if any) holds, logs its status, and returns it.
func (c *Cluster) WaitPolicy(t testing.TB, name, what string, cond func(*fwv1.NodeFirewallPolicy) bool) *fwv1.NodeFirewallPolicy {
	t.Helper()
	var p *fwv1.NodeFirewallPolicy
	start := time.Now()
	c.WaitFor(t, "policy "+name+": "+what, StatusWithin, func(ctx context.Context) (bool, error) {
		var err error
		p, err = c.Policy(ctx, name)
		return err == nil && testbed.PolicyReady(p) && (cond == nil || cond(p)), err
	})
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

// Matched says a policy's status counts n matched and applied nodes.
func Matched(n int32) func(*fwv1.NodeFirewallPolicy) bool {
	return func(p *fwv1.NodeFirewallPolicy) bool {
		return p.Status.MatchedNodes == n && p.Status.AppliedNodes == n
	}
}

// Sample returns a copy of the sample policy called name.
func (c *Cluster) Sample(t testing.TB, name string) *fwv1.NodeFirewallPolicy {
	t.Helper()
	for _, p := range c.Samples {
		if p.Name == name {
			return p.DeepCopy()
		}
	}
	t.Fatalf("no sample policy %q", name)
	return nil
}

// RestoreSample puts a sample policy back as it was and returns when.
func (c *Cluster) RestoreSample(t testing.TB, name string) time.Time {
	t.Helper()
	start := time.Now()
	if err := c.ApplyPolicy(context.Background(), c.Sample(t, name)); err != nil {
		t.Fatalf("restoring policy %s: %v", name, err)
	}
	return start
}

// RestoreBaseline puts the cluster back as it started: the API server, the
// manager and every agent running, the original control-plane labels,
// exactly the sample policies, everything Ready; then checks the hardening
// table with packets.
func (c *Cluster) RestoreBaseline(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.ControlPlane.StartAPIServer(ctx); err != nil {
		t.Fatalf("restarting the API server: %v", err)
	}
	for _, p := range c.Processes() {
		if !p.Running() {
			if err := p.Start(); err != nil {
				t.Fatalf("restarting %s: %v", p.Name, err)
			}
		}
	}
	for _, n := range c.Nodes {
		var value *string
		if n.ControlPlane {
			value = new(string)
		}
		if err := c.SetNodeLabel(ctx, n.Name, testbed.LabelControlPlane, value); err != nil {
			t.Fatalf("resetting the labels of %s: %v", n.Name, err)
		}
	}
	var list fwv1.NodeFirewallPolicyList
	if err := c.Client.List(ctx, &list); err != nil {
		t.Fatalf("listing policies: %v", err)
	}
	for _, p := range list.Items {
		if !slices.ContainsFunc(c.Samples, func(s *fwv1.NodeFirewallPolicy) bool { return s.Name == p.Name }) {
			if err := c.DeletePolicy(ctx, p.Name); err != nil {
				t.Fatalf("deleting policy %s: %v", p.Name, err)
			}
		}
	}
	for _, p := range c.Samples {
		if err := c.ApplyPolicy(ctx, p); err != nil {
			t.Fatalf("restoring policy %s: %v", p.Name, err)
		}
	}
	c.settle(t, ctx)
	// Ready policies can still carry the status of before the deletions:
	// the probes wait until every kernel is the resolver's output.
	c.WaitFor(t, "every NodeFirewall and kernel equal to the resolver's output", time.Minute, func(ctx context.Context) (bool, error) {
		mismatches, err := c.KernelMismatches(ctx)
		return len(mismatches) == 0, err
	})
	c.Expect(t, "baseline restored", c.SeedChecks())
}

// settle waits until everything is Ready again; see
// Options.RestartWhenUnsettled.
func (c *Cluster) settle(t testing.TB, ctx context.Context) {
	t.Helper()
	if !c.restartWhenUnsettled {
		if err := c.WaitReady(ctx); err != nil {
			t.Fatalf("restoring the baseline: %v\n%s", err, c.Diagnose(context.Background(), nil))
		}
		return
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	err := c.WaitReady(wctx)
	if err == nil {
		return
	}
	t.Logf("the baseline did not settle within a minute, restarting the manager and agents: %v\n%s", err, c.Diagnose(ctx, nil))
	for _, p := range c.Processes() {
		p.Stop()
		if err := p.Start(); err != nil {
			t.Fatalf("restarting %s: %v", p.Name, err)
		}
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("restoring the baseline: %v\n%s", err, c.Diagnose(ctx, nil))
	}
}
