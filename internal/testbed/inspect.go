package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// Kubectl runs kubectl against the cluster and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// GetPolicies prints the policies and node firewalls as
// `kubectl get nfp,nfw` does, through kubectl when it is installed and
// with the same columns otherwise.
func (c *Cluster) GetPolicies(ctx context.Context) (string, error) {
	if _, err := exec.LookPath("kubectl"); err == nil {
		return c.Kubectl(ctx, "get", "nfp,nfw")
	}
	var policies fwv1.NodeFirewallPolicyList
	if err := c.Client.List(ctx, &policies); err != nil {
		return "", err
	}
	var nfws fwv1.NodeFirewallList
	if err := c.Client.List(ctx, &nfws); err != nil {
		return "", err
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tPRIORITY\tMODE\tMATCHED\tAPPLIED\tREADY\tAGE")
	for _, p := range policies.Items {
		fmt.Fprintf(w, "nodefirewallpolicy.firewall.nodefw.io/%s\t%d\t%s\t%d\t%d\t%s\t%s\n", p.Name, p.Spec.EffectivePriority(), p.Spec.Mode,
			p.Status.MatchedNodes, p.Status.AppliedNodes, conditionStatus(p.Status.Conditions), age(p.CreationTimestamp.Time))
	}
	w.Flush()
	b.WriteString("\n")
	w = tabwriter.NewWriter(&b, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tRULES\tREADY\tREASON\tAPPLIED\tAGE")
	for _, n := range nfws.Items {
		applied := "<none>"
		if n.Status.LastAppliedTime != nil {
			applied = age(n.Status.LastAppliedTime.Time)
		}
		reason := ""
		if r := meta.FindStatusCondition(n.Status.Conditions, fwv1.ConditionReady); r != nil {
			reason = r.Reason
		}
		fmt.Fprintf(w, "nodefirewall.firewall.nodefw.io/%s\t%d\t%s\t%s\t%s\t%s\n", n.Name, n.Status.RuleCount,
			conditionStatus(n.Status.Conditions), reason, applied, age(n.CreationTimestamp.Time))
	}
	w.Flush()
	return b.String(), nil
}

func conditionStatus(conds []metav1.Condition) string {
	if r := meta.FindStatusCondition(conds, fwv1.ConditionReady); r != nil {
		return string(r.Status)
	}
	return ""
}

func age(t time.Time) string { return duration.HumanDuration(time.Since(t)) }

// Ruleset returns nodefw's table in a node, as `nft list table inet nodefw`
// prints it there.
func (c *Cluster) Ruleset(node string) (string, error) {
	n := c.Node(node)
	if n == nil {
		return "", fmt.Errorf("no node %q", node)
	}
	return n.NS.Exec("nft", "list", "table", "inet", "nodefw")
}

// ProcessLogTails returns the last lines of the manager's and every
// agent's log, and kube-proxy's and flanneld's where they run.
func (c *Cluster) ProcessLogTails(lines int) string {
	var b strings.Builder
	procs := []*Process{c.Manager}
	for _, n := range c.Nodes {
		procs = append(procs, n.Agent, n.KubeProxy, n.Flanneld)
	}
	for _, p := range procs {
		if p != nil {
			b.WriteString(LogTail(p, lines))
		}
	}
	return b.String()
}

// LogTail returns the last lines of a process's log under a heading.
func LogTail(p *Process, lines int) string {
	raw, err := os.ReadFile(p.Log)
	if err != nil {
		return fmt.Sprintf("--- %s: %v\n", p.Name, err)
	}
	all := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return fmt.Sprintf("--- last %d lines of %s's log (%s)\n%s\n", len(all), p.Name, p.Log, strings.Join(all, "\n"))
}

// Diagnose describes the cluster for a failure message: the probe results,
// what is not ready, `kubectl get nfp,nfw`, the named nodes' rulesets and
// the processes' recent logs.
func (c *Cluster) Diagnose(ctx context.Context, rs Results, nodes ...string) string {
	var b strings.Builder
	if len(rs) > 0 {
		b.WriteString("probes:\n" + rs.Table() + "\n")
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if pending, err := c.notReady(sctx); err != nil {
		fmt.Fprintf(&b, "status: %v\n", err)
	} else if len(pending) > 0 {
		b.WriteString("not ready:\n  " + strings.Join(pending, "\n  ") + "\n")
	}
	if out, err := c.GetPolicies(sctx); err == nil {
		b.WriteString("kubectl get nfp,nfw:\n" + out + "\n")
	}
	if len(nodes) == 0 {
		for _, n := range c.Nodes {
			nodes = append(nodes, n.Name)
		}
	}
	for _, n := range nodes {
		out, err := c.Ruleset(n)
		if err != nil {
			fmt.Fprintf(&b, "ruleset of %s: %v\n", n, err)
			continue
		}
		fmt.Fprintf(&b, "ruleset of %s:\n%s\n", n, out)
	}
	b.WriteString(c.ProcessLogTails(15))
	return b.String()
}

// awaitInterval is how often AwaitChecks starts a probe round. Rounds
// overlap, so a change is seen within about this long even when a round
// waits for a probe's timeout.
const awaitInterval = 100 * time.Millisecond

// AwaitChecks probes until every check gets its expected verdict, and
// returns how long that took since start (when the change was made): the
// start of the earliest probe round that saw the new state. Rounds start
// every awaitInterval and overlap. A round that looks converged is
// confirmed with VerifyChecks, so a slow answer is not taken for a drop. It
// gives up within of start.
func (c *Cluster) AwaitChecks(ctx context.Context, checks []Check, start time.Time, within time.Duration) (time.Duration, Results, error) {
	type round struct {
		started time.Time
		done    chan struct{}
		rs      Results
	}
	deadline := start.Add(within)
	var rounds []*round
	// The earliest round that passed, once every round before it is done.
	converged := func() (*round, *round) {
		var last *round
		for _, r := range rounds {
			select {
			case <-r.done:
			default:
				return nil, last
			}
			last = r
			if r.rs.OK() {
				return r, last
			}
		}
		return nil, last
	}
	tick := time.NewTicker(awaitInterval)
	defer tick.Stop()
	launch := func() {
		r := &round{started: time.Now(), done: make(chan struct{})}
		rounds = append(rounds, r)
		go func() {
			r.rs = RunChecks(checks, 0)
			close(r.done)
		}()
	}
	// Every round is waited for before returning: no probe outlives the call.
	wait := func() {
		for _, r := range rounds {
			<-r.done
		}
	}
	launch()
	for {
		select {
		case <-ctx.Done():
			wait()
			return time.Since(start), nil, ctx.Err()
		case <-tick.C:
		}
		late := time.Now().After(deadline)
		if late {
			wait()
		}
		ok, last := converged()
		if ok != nil {
			wait()
			if rs := VerifyChecks(checks); rs.OK() {
				return ok.started.Sub(start), rs, nil
			}
			// A slow answer fooled the round: keep polling.
			rounds, last = nil, nil
		}
		if late {
			var rs Results
			if last != nil {
				rs = last.rs
			} else {
				rs = RunChecks(checks, 0)
			}
			return time.Since(start), rs, fmt.Errorf("%d of %d probes still differ %s after the change", len(rs.Failed()), len(rs), since(start))
		}
		launch()
	}
}
