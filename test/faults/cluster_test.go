package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed"
)

const (
	// prefix starts the name of every namespace of the package's cluster.
	prefix = "nfwf-"
	// resyncPeriod is the agents' drift-repair period.
	resyncPeriod = 2 * time.Second
	// statusWithin bounds waits for status and for convergence after a
	// component comes back.
	statusWithin = 30 * time.Second
	// outageEnv shortens the API server outage (a Go duration).
	outageEnv = "NODEFW_FAULTS_OUTAGE"
)

// The cluster the fault tests share, started by the first test that needs
// it, with the sample policies applied. Each test leaves it as it found it.
var (
	clusterMu  sync.Mutex
	cluster    *testbed.Cluster
	clusterErr error
	samples    []*fwv1.NodeFirewallPolicy
)

// runTests runs the tests and stops the shared cluster, also when
// interrupted.
func runTests(m *testing.M) int {
	ctrllog.SetLogger(logr.Discard())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		fmt.Fprintln(os.Stderr, "faults: interrupted: cleaning up")
		closeCluster()
		os.Exit(1)
	}()
	defer closeCluster()
	return m.Run()
}

func closeCluster() {
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if cluster != nil {
		if err := cluster.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "faults: cleaning up:", err)
		}
		cluster = nil
	}
}

// faultCluster returns the shared cluster, starting it on first use.
func faultCluster(t *testing.T) *testbed.Cluster {
	t.Helper()
	clusterMu.Lock()
	defer clusterMu.Unlock()
	if cluster == nil && clusterErr == nil {
		clusterErr = startCluster()
	}
	if clusterErr != nil {
		t.Fatalf("the fault cluster: %v", clusterErr)
	}
	return cluster
}

func startCluster() error {
	if os.Geteuid() != 0 {
		return errors.New("the fault tests must run as root: they create network namespaces and nftables tables")
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds kube-apiserver and etcd")
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "faults: "+format+"\n", args...) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := testbed.StartCluster(ctx, testbed.Options{
		Prefix:   prefix,
		RepoRoot: filepath.Join("..", ".."),
		// Empty: build the manager and the agent from this tree.
		BinDir:       os.Getenv("NODEFW_BIN_DIR"),
		ResyncPeriod: resyncPeriod,
		Logf:         logf,
	})
	if err != nil {
		return err
	}
	fail := func(err error) error {
		_ = c.Close()
		return err
	}
	if samples, err = c.SamplePolicies(); err != nil {
		return fail(err)
	}
	for _, p := range samples {
		if err := c.ApplyPolicy(ctx, p); err != nil {
			return fail(fmt.Errorf("applying %s: %w", p.Name, err))
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if err := c.WaitReady(wctx); err != nil {
		return fail(fmt.Errorf("%w\n%s", err, c.Diagnose(ctx, nil)))
	}
	logf("cluster up with the samples applied in %s", time.Since(start).Round(100*time.Millisecond))
	cluster = c
	return nil
}

// restoreBaseline puts the cluster back as it started: the API server, the
// manager and every agent running, every node registered, exactly the
// sample policies; then checks the hardening table with packets.
func restoreBaseline(t *testing.T, c *testbed.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.ControlPlane.StartAPIServer(ctx); err != nil {
		t.Fatalf("restarting the API server: %v", err)
	}
	for _, p := range append([]*testbed.Process{c.Manager}, agents(c)...) {
		if !p.Running() {
			if err := p.Start(); err != nil {
				t.Fatalf("restarting %s: %v", p.Name, err)
			}
		}
	}
	var policies fwv1.NodeFirewallPolicyList
	if err := c.Client.List(ctx, &policies); err != nil {
		t.Fatal(err)
	}
	for _, p := range policies.Items {
		if !slices.ContainsFunc(samples, func(s *fwv1.NodeFirewallPolicy) bool { return s.Name == p.Name }) {
			if err := c.DeletePolicy(ctx, p.Name); err != nil {
				t.Fatalf("deleting policy %s: %v", p.Name, err)
			}
		}
	}
	for _, p := range samples {
		if err := c.ApplyPolicy(ctx, p); err != nil {
			t.Fatalf("restoring policy %s: %v", p.Name, err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := c.WaitReady(wctx); err != nil {
		// Restoring is plumbing between tests, not what a test asserts: when
		// the cluster does not settle, log why and restart its processes.
		t.Logf("the baseline did not settle within a minute, restarting the manager and agents: %v\n%s", err, c.Diagnose(ctx, nil))
		for _, p := range append([]*testbed.Process{c.Manager}, agents(c)...) {
			p.Stop()
			if err := p.Start(); err != nil {
				t.Fatalf("restarting %s: %v", p.Name, err)
			}
		}
		if err := c.WaitReady(ctx); err != nil {
			t.Fatalf("restoring the baseline: %v\n%s", err, c.Diagnose(ctx, nil))
		}
	}
	expect(t, c, "the baseline", c.SeedChecks())
}

func agents(c *testbed.Cluster) []*testbed.Process {
	var out []*testbed.Process
	for _, n := range c.Nodes {
		out = append(out, n.Agent)
	}
	return out
}

// expect probes once (re-probing slow answers) and fails the test with the
// probe matrix and the cluster's state on a mismatch.
func expect(t *testing.T, c *testbed.Cluster, what string, checks []testbed.Check) {
	t.Helper()
	if rs := testbed.VerifyChecks(checks); !rs.OK() {
		t.Fatalf("%s: %d of %d probes differ\n%s", what, len(rs.Failed()), len(rs), c.Diagnose(context.Background(), rs))
	}
}

// hold probes again and again for d: the verdicts must never change. It
// returns the number of probe rounds.
func hold(t *testing.T, c *testbed.Cluster, what string, checks []testbed.Check, d time.Duration) int {
	t.Helper()
	rounds := 0
	for end := time.Now().Add(d); rounds < 2 || time.Now().Before(end); rounds++ {
		expect(t, c, what, checks)
	}
	t.Logf("%s: held for %d probe rounds of %d probes over %s", what, rounds, len(checks), d)
	return rounds
}

// converge waits until the checks pass, at most within after start (when
// the change was made), logs how long it took and returns it.
func converge(t *testing.T, c *testbed.Cluster, what string, checks []testbed.Check, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	took, rs, err := c.AwaitChecks(context.Background(), checks, start, within)
	if err != nil {
		t.Fatalf("%s: not in the kernel within %s: %v\n%s", what, within, err, c.Diagnose(context.Background(), rs))
	}
	t.Logf("%s: converged in %s", what, took.Round(10*time.Millisecond))
	return took
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, c *testbed.Cluster, what string, within time.Duration, cond func(ctx context.Context) (bool, error)) {
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

// policyReady waits until the policy is Ready for its current generation
// and cond holds, and returns it.
func policyReady(t *testing.T, c *testbed.Cluster, name, what string, cond func(*fwv1.NodeFirewallPolicy) bool) *fwv1.NodeFirewallPolicy {
	t.Helper()
	var p *fwv1.NodeFirewallPolicy
	start := time.Now()
	waitFor(t, c, "policy "+name+": "+what, statusWithin, func(ctx context.Context) (bool, error) {
		var err error
		p, err = c.Policy(ctx, name)
		return err == nil && testbed.PolicyReady(p) && (cond == nil || cond(p)), err
	})
	t.Logf("policy %s: %s (generation %d, matched %d, applied %d; %s later)", name, what, p.Generation,
		p.Status.MatchedNodes, p.Status.AppliedNodes, time.Since(start).Round(10*time.Millisecond))
	return p
}

func matched(n int32) func(*fwv1.NodeFirewallPolicy) bool {
	return func(p *fwv1.NodeFirewallPolicy) bool {
		return p.Status.MatchedNodes == n && p.Status.AppliedNodes == n
	}
}

// update changes a policy and returns when the change was made.
func update(t *testing.T, c *testbed.Cluster, name string, mutate func(*fwv1.NodeFirewallPolicy)) time.Time {
	t.Helper()
	start := time.Now()
	if err := c.UpdatePolicy(context.Background(), name, mutate); err != nil {
		t.Fatalf("updating policy %s: %v", name, err)
	}
	return start
}

// nodeFirewalls returns every NodeFirewall by name.
func nodeFirewalls(ctx context.Context, c *testbed.Cluster) (map[string]*fwv1.NodeFirewall, error) {
	var list fwv1.NodeFirewallList
	if err := c.Client.List(ctx, &list); err != nil {
		return nil, err
	}
	out := make(map[string]*fwv1.NodeFirewall, len(list.Items))
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out, nil
}

// tableExists reports whether a node's kernel holds nodefw's table.
func tableExists(c *testbed.Cluster, node string) bool {
	_, err := c.Ruleset(node)
	return err == nil
}

// driftRepairs counts the DriftRepaired events of a node's NodeFirewall,
// an event series counting as its number of occurrences.
func driftRepairs(ctx context.Context, c *testbed.Cluster, node string) (int32, error) {
	var list eventsv1.EventList
	if err := c.Client.List(ctx, &list); err != nil {
		return 0, err
	}
	var n int32
	for _, e := range list.Items {
		if e.Reason != "DriftRepaired" || e.Regarding.Kind != "NodeFirewall" || e.Regarding.Name != node {
			continue
		}
		if e.Series != nil {
			n += e.Series.Count
		} else {
			n++
		}
	}
	return n, nil
}

// pidOf finds the process of a testbed child by an argument only it has
// (a node's namespace path, the cluster's kubeconfig for the manager) and
// its executable's base name.
func pidOf(name, arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) == name && slices.Contains(args[1:], arg) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process with argument %s", name, arg)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture nodefw runs on.
const clockTicks = 100

// cpuTime is the user plus system CPU time a process has used.
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis. utime and stime are fields 14 and 15.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// isNotFound reports whether err says the object does not exist.
func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// getObject is Client.Get with a short timeout of its own.
func getObject(c *testbed.Cluster, name string, obj client.Object) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Client.Get(ctx, client.ObjectKey{Name: name}, obj)
}
