// Package soak runs nodefw for a long time under random changes and
// faults and checks its invariants throughout: failsafe ports never drop,
// and after every quiet period each node's kernel is the resolver's
// output. `make soak SOAK_DURATION=30m` runs it for as long as asked; `make
// test` runs it for three minutes.
package soak

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed"
	"github.com/nodefw/nodefw/internal/testbed/suite"
)

const (
	// durationEnv sets how long the soak runs (a Go duration).
	durationEnv = "NODEFW_SOAK_DURATION"
	// seedEnv sets the random seed, to replay a run.
	seedEnv = "NODEFW_SOAK_SEED"
	// defaultDuration is the bounded run of `make test`.
	defaultDuration = 3 * time.Minute
	// convergeWithin bounds each quiet period: the time from the last
	// change or fault of a round until every kernel is the resolver's
	// output and every policy and NodeFirewall is Ready. Past it, the
	// round counts as an invariant violation.
	convergeWithin = 60 * time.Second
	// probeEvery is the failsafe prober's period.
	probeEvery = time.Second
	// policies is how many soak policies exist at most.
	policies = 8
	// groupLabel is the node label the soak changes; soak policies select
	// on it.
	groupLabel = "soak.nodefw.io/group"
	// maxRSSGrowth is the largest RSS growth accepted over the second
	// half of a run, in which no process is restarted (see TestSoak).
	maxRSSGrowth = 0.10
	// rssCheckedFrom is the shortest run whose RSS growth is checked
	// rather than only reported: over a few minutes the heap's warm-up
	// and the garbage collector's timing are larger than any leak.
	rssCheckedFrom = 10 * time.Minute
)

var bed = suite.New(suite.Options{
	Name:                 "soak",
	Prefix:               "nfws-",
	ResyncPeriod:         2 * time.Second,
	RestartWhenUnsettled: true,
})

func TestMain(m *testing.M) { os.Exit(bed.Main(m)) }

// stats are the soak's counts.
type stats struct {
	mu       sync.Mutex
	ops      map[string]int
	faults   map[string]int
	converge []time.Duration
	// slowest is the longest convergence after each kind of round: its
	// fault, or "changes only".
	slowest     map[string]time.Duration
	probes      int
	violations  []string
	rssStart    map[string]int64
	rssEnd      map[string]int64
	restarted   map[string]bool
	rounds      int
	failedCalls int
}

func (s *stats) op(kind string)    { s.mu.Lock(); s.ops[kind]++; s.mu.Unlock() }
func (s *stats) fault(kind string) { s.mu.Lock(); s.faults[kind]++; s.mu.Unlock() }
func (s *stats) violation(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, time.Now().UTC().Format("15:04:05")+" "+fmt.Sprintf(format, args...))
}

// TestSoak drives random policy creates, edits and deletes, node label
// changes, agent kill -9, manager restarts, API server restarts and `nft
// flush ruleset` in node namespaces, in rounds: a few changes, perhaps a
// fault, then a quiet period until every kernel holds the resolver's
// output. A prober checks every second that no failsafe port drops.
//
// The faults that restart the manager or an agent happen in the first 40%
// of the run; the manager's and agents' RSS is read at half time and at
// the end, so that the same processes, warmed up, are compared over the
// second half, which still has every change, API server restarts and
// flushed rulesets.
func TestSoak(t *testing.T) {
	duration := defaultDuration
	if s := os.Getenv(durationEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration", durationEnv, s)
		}
		duration = d
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv(seedEnv); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", seedEnv, s, err)
		}
		seed = v
	}
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()
	r := rand.New(rand.NewSource(seed))
	t.Logf("soak for %s, seed %d (%s=%d replays it)", duration, seed, seedEnv, seed)

	st := &stats{ops: map[string]int{}, faults: map[string]int{}, rssStart: map[string]int64{}, rssEnd: map[string]int64{}, restarted: map[string]bool{}, slowest: map[string]time.Duration{}}
	t.Cleanup(func() {
		for i := range policies {
			_ = c.Client.Delete(ctx, &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: policyName(i)}})
		}
		for _, n := range c.Nodes {
			_ = c.SetNodeLabel(ctx, n.Name, groupLabel, nil)
		}
	})
	stop := make(chan struct{})
	var probing sync.WaitGroup
	probing.Add(1)
	go func() {
		defer probing.Done()
		probeFailsafes(c, st, stop)
	}()

	begin := time.Now()
	deadline := begin.Add(duration)
	restartsUntil := begin.Add(duration * 4 / 10)
	half := begin.Add(duration / 2)
	for time.Now().Before(deadline) {
		if len(st.rssStart) == 0 && time.Now().After(half) {
			for name, pid := range pids(c) {
				if rss, err := rssOf(pid); err == nil {
					st.rssStart[name] = rss
				}
			}
		}
		st.rounds++
		for range 1 + r.Intn(3) {
			if err := randomOp(ctx, c, r, st); err != nil {
				st.mu.Lock()
				st.failedCalls++
				st.mu.Unlock()
				t.Logf("round %d: %v", st.rounds, err)
			}
		}
		kind := "changes only"
		if r.Intn(2) == 0 {
			var err error
			if kind, err = randomFault(ctx, c, r, st, time.Now().Before(restartsUntil)); err != nil {
				t.Fatalf("round %d: %v", st.rounds, err)
			}
		}
		took, why := converge(ctx, c)
		if why != "" {
			st.violation("round %d: not converged within %s: %s", st.rounds, convergeWithin, why)
			// Start the next round from a settled cluster.
			restartAll(c, st, len(st.rssStart) > 0)
			if _, why := converge(ctx, c); why != "" {
				t.Fatalf("round %d: not converged after restarting the manager and agents: %s", st.rounds, why)
			}
			continue
		}
		st.mu.Lock()
		st.converge = append(st.converge, took)
		st.slowest[kind] = max(st.slowest[kind], took)
		st.mu.Unlock()
		// A short quiet time, so that the prober also sees settled nodes.
		time.Sleep(time.Duration(500+r.Intn(1500)) * time.Millisecond)
	}
	close(stop)
	probing.Wait()
	for name, pid := range pids(c) {
		if rss, err := rssOf(pid); err == nil {
			st.rssEnd[name] = rss
		}
	}
	report(t, st, duration)
}

func policyName(i int) string { return fmt.Sprintf("soak-%02d", i) }

var groups = []string{"a", "b"}

// selectors are those a soak policy picks from: every node, the control
// plane, the workers, and the soak groups.
var selectors = []metav1.LabelSelector{
	{},
	{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: testbed.LabelControlPlane, Operator: metav1.LabelSelectorOpExists}}},
	{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: testbed.LabelControlPlane, Operator: metav1.LabelSelectorOpDoesNotExist}}},
	{MatchLabels: map[string]string{groupLabel: "a"}},
	{MatchLabels: map[string]string{groupLabel: "b"}},
}

// randomSpec makes a soak policy: rules on ports no baseline probe uses,
// so the hardening table keeps its verdicts; some of them Drop, one may
// cover the failsafe SSH port, which must stay open.
func randomSpec(r *rand.Rand) fwv1.NodeFirewallPolicySpec {
	s := fwv1.NodeFirewallPolicySpec{NodeSelector: selectors[r.Intn(len(selectors))], Priority: ptr.To(int32(500 + r.Intn(100)))}
	for j := range 1 + r.Intn(6) {
		rule := fwv1.Rule{
			Name: fmt.Sprintf("r%d", j), Chain: fwv1.ChainInput,
			Action:   []fwv1.Action{fwv1.ActionAccept, fwv1.ActionDrop, fwv1.ActionReject}[r.Intn(3)],
			Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: int32(40000 + r.Intn(500))}},
		}
		if r.Intn(20) == 0 {
			rule.Action, rule.Ports = fwv1.ActionDrop, []fwv1.PortRange{{Port: 22}}
		}
		s.Rules = append(s.Rules, rule)
	}
	return s
}

// randomOp makes one change: a policy created, edited or deleted, or a
// node's soak group changed.
func randomOp(ctx context.Context, c *suite.Cluster, r *rand.Rand, st *stats) error {
	if r.Intn(4) == 0 {
		n := c.Nodes[r.Intn(len(c.Nodes))]
		var value *string
		if k := r.Intn(len(groups) + 1); k < len(groups) {
			value = &groups[k]
		}
		st.op("node label")
		return c.SetNodeLabel(ctx, n.Name, groupLabel, value)
	}
	key := client.ObjectKey{Name: policyName(r.Intn(policies))}
	p := &fwv1.NodeFirewallPolicy{}
	err := c.Client.Get(ctx, key, p)
	switch {
	case apierrors.IsNotFound(err):
		st.op("policy create")
		err = c.Client.Create(ctx, &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: key.Name}, Spec: randomSpec(r)})
	case err == nil && r.Intn(3) == 0:
		st.op("policy delete")
		err = c.Client.Delete(ctx, p)
	case err == nil:
		st.op("policy edit")
		p.Spec = randomSpec(r)
		err = c.Client.Update(ctx, p)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", key.Name, err)
	}
	return nil
}

// randomFault injects one fault and, where the fault stops a process,
// starts it again; without restarts, only API server restarts and
// flushed rulesets.
func randomFault(ctx context.Context, c *suite.Cluster, r *rand.Rand, st *stats, restarts bool) (string, error) {
	kind := r.Intn(4)
	if !restarts {
		kind = 2 + r.Intn(2)
	}
	switch kind {
	case 0:
		n := c.Nodes[r.Intn(len(c.Nodes))]
		const kind = "agent kill -9"
		st.fault(kind)
		n.Agent.Kill()
		time.Sleep(time.Duration(r.Intn(3000)) * time.Millisecond)
		return kind, n.Agent.Start()
	case 1:
		const kind = "manager restart"
		st.fault(kind)
		c.Manager.Kill()
		time.Sleep(time.Duration(r.Intn(3000)) * time.Millisecond)
		return kind, c.Manager.Start()
	case 2:
		const kind = "API server restart"
		st.fault(kind)
		if err := c.ControlPlane.StopAPIServer(); err != nil {
			return kind, err
		}
		time.Sleep(time.Duration(1000+r.Intn(9000)) * time.Millisecond)
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		return kind, c.ControlPlane.StartAPIServer(sctx)
	default:
		n := c.Nodes[r.Intn(len(c.Nodes))]
		const kind = "nft flush ruleset"
		st.fault(kind)
		_, err := n.NS.Exec("nft", "flush", "ruleset")
		return kind, err
	}
}

// converge waits for the quiet period's end: every kernel the resolver's
// output for the stored objects, everything Ready. It returns how long
// that took, or why it did not happen within convergeWithin.
func converge(ctx context.Context, c *suite.Cluster) (time.Duration, string) {
	start := time.Now()
	var why string
	for time.Since(start) < convergeWithin {
		mismatches, err := c.KernelMismatches(ctx)
		switch {
		case err != nil:
			why = err.Error()
		case len(mismatches) > 0:
			why = strings.Join(mismatches, "; ")
		default:
			pending, err := c.NotReady(ctx)
			switch {
			case err != nil:
				why = err.Error()
			case len(pending) > 0:
				why = strings.Join(pending, "; ")
			default:
				return time.Since(start), ""
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, why
}

// restartAll restarts the manager and the agents after a violation;
// measured tells whether their RSS has been read already.
func restartAll(c *suite.Cluster, st *stats, measured bool) {
	for _, p := range c.Processes() {
		if measured {
			st.mu.Lock()
			st.restarted[p.Name] = true
			st.mu.Unlock()
		}
		p.Stop()
		_ = p.Start()
	}
}

// probeFailsafes probes every second, until stop, the failsafe ports:
// SSH into every node (no listener: a reset when it gets through) and
// the API server from every worker (the workers' outbound failsafe).
// A probe that is dropped, and dropped again with a long timeout, is a
// violation.
func probeFailsafes(c *suite.Cluster, st *stats, stop <-chan struct{}) {
	ssh := testbed.Port{Proto: testbed.TCP, Port: 22, Note: "SSH failsafe"}
	api := testbed.Port{Proto: testbed.TCP, Port: testbed.APIServerPort, Note: "API server failsafe out"}
	var checks []testbed.Check
	for _, to := range c.Nodes {
		from := c.Nodes[0]
		if from == to {
			from = c.Nodes[1]
		}
		checks = append(checks, c.Checks(from.Name, to.Name, testbed.Rejected, ssh)...)
		if !to.ControlPlane {
			checks = append(checks, c.Checks(to.Name, "cp-1", testbed.Accepted, api)...)
		}
	}
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		for _, res := range testbed.VerifyChecks(checks) {
			st.mu.Lock()
			st.probes++
			st.mu.Unlock()
			if res.Got == testbed.Dropped {
				st.violation("failsafe dropped: %s", res.Check)
			}
		}
	}
}

// pids are the manager's and agents' process ids by name.
func pids(c *suite.Cluster) map[string]int {
	out := map[string]int{}
	for _, p := range c.Processes() {
		if pid := p.PID(); pid != 0 {
			out[p.Name] = pid
		}
	}
	return out
}

// rssOf is a process's resident set size in bytes, from /proc/PID/status.
func rssOf(pid int) (int64, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// percentile is the p-th percentile (0-100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func counts(m map[string]int) (string, int) {
	keys := make([]string, 0, len(m))
	total := 0
	for k, v := range m {
		keys = append(keys, k)
		total += v
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", "), total
}

// report prints the counts and fails the test on any violation and, in a
// run of rssCheckedFrom or longer, on a process whose RSS grew more than
// maxRSSGrowth over the second half.
func report(t *testing.T, st *stats, duration time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	sorted := slices.Clone(st.converge)
	slices.Sort(sorted)
	ops, nops := counts(st.ops)
	faults, nfaults := counts(st.faults)
	var b strings.Builder
	fmt.Fprintf(&b, "soak of %s: %d rounds\n", duration, st.rounds)
	fmt.Fprintf(&b, "operations: %d (%s); %d refused by the API server\n", nops, ops, st.failedCalls)
	fmt.Fprintf(&b, "faults injected: %d (%s)\n", nfaults, faults)
	fmt.Fprintf(&b, "convergence after each round: p50 %s, p99 %s, max %s (%d quiet periods)\n",
		percentile(sorted, 50).Round(time.Millisecond), percentile(sorted, 99).Round(time.Millisecond),
		percentile(sorted, 100).Round(time.Millisecond), len(sorted))
	kinds := make([]string, 0, len(st.slowest))
	for k := range st.slowest {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var slow []string
	for _, k := range kinds {
		slow = append(slow, fmt.Sprintf("%s %s", k, st.slowest[k].Round(time.Millisecond)))
	}
	fmt.Fprintf(&b, "slowest convergence by round: %s\n", strings.Join(slow, ", "))
	fmt.Fprintf(&b, "failsafe probes: %d\n", st.probes)
	fmt.Fprintf(&b, "invariant violations: %d\n", len(st.violations))
	for _, v := range st.violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	names := make([]string, 0, len(st.rssEnd))
	for n := range st.rssEnd {
		names = append(names, n)
	}
	sort.Strings(names)
	b.WriteString("RSS at half time -> end:\n")
	var grew []string
	for _, n := range names {
		start, end := st.rssStart[n], st.rssEnd[n]
		note := "the same process"
		if st.restarted[n] {
			note = "restarted after a violation: not the same process"
		}
		growth := 0.0
		if start > 0 {
			growth = float64(end-start) / float64(start)
		}
		fmt.Fprintf(&b, "  %-16s %6.1f MiB -> %6.1f MiB (%+.1f%%, %s)\n", n, mib(start), mib(end), 100*growth, note)
		if duration >= rssCheckedFrom && !st.restarted[n] && start > 0 && growth > maxRSSGrowth {
			grew = append(grew, fmt.Sprintf("%s grew %.1f%%", n, 100*growth))
		}
	}
	if duration < rssCheckedFrom {
		fmt.Fprintf(&b, "(RSS growth is checked in runs of %s or longer)\n", rssCheckedFrom)
	}
	t.Log("\n" + b.String())
	if len(st.violations) > 0 {
		t.Errorf("%d invariant violations", len(st.violations))
	}
	if len(grew) > 0 {
		t.Errorf("RSS grew more than %.0f%%: %s", 100*maxRSSGrowth, strings.Join(grew, ", "))
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
