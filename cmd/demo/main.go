// Command demo runs the whole of nodefw on one machine and shows what it
// does with real packets: a control plane (etcd and kube-apiserver), the
// manager, and three nodes — network namespaces on one LAN, each with its
// own agent, kube-proxy and flanneld (VXLAN) and a pod behind it. It
// applies config/samples, probes the hardening table from node to node, a
// NodePort through kube-proxy's DNAT and pods over VXLAN, changes a policy
// live, restricts NodePorts live in PreRouting, and cleans up on exit or
// Ctrl-C. It needs root; `make demo` builds what it needs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/testbed"
)

// Prefix starts the name of every namespace the demo creates.
const Prefix = "nfwd-"

// The demo's NodePort Service: its one backend is worker-2's pod, so
// through cp-1 and worker-1 a NodePort connection is DNATed by their
// kube-proxy and crosses flannel's VXLAN to worker-2.
const (
	nodePortService = "demo"
	nodePort        = 31080
	nodePortBackend = "worker-2"
	// nodePortsSample is applied live, after the others.
	nodePortsSample = "nodeports-from-cidr"
)

func main() {
	os.Exit(run())
}

type demo struct {
	c        *testbed.Cluster
	failures int
	step     int
}

func run() int {
	var (
		keep     bool
		binDir   string
		repoRoot string
		resync   time.Duration
		netDir   string
	)
	flag.BoolVar(&keep, "keep", false, "Leave everything running at the end and wait for Ctrl-C.")
	flag.StringVar(&binDir, "bin-dir", "bin", "Directory holding the manager and agent binaries; empty builds them.")
	flag.StringVar(&repoRoot, "repo-root", ".", "The repository's root: CRDs and samples are read from there.")
	flag.DurationVar(&resync, "resync-period", 2*time.Second, "The agents' drift-repair period.")
	flag.StringVar(&netDir, "cluster-bin-dir", "bin/cluster/bin", "Directory holding kube-proxy and flanneld (`make cluster-tools`).")
	flag.Parse()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (network namespaces and nftables): run `sudo make demo`")
		return 1
	}

	// The demo's own client logs nothing: it prints what it does.
	ctrllog.SetLogger(logr.Discard())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first Ctrl-C, a second one ends the demo at once.
	go func() {
		<-ctx.Done()
		stop()
	}()

	d := &demo{}
	start := time.Now()
	err := d.run(ctx, testbed.Options{
		Prefix:       Prefix,
		RepoRoot:     repoRoot,
		BinDir:       binDir,
		ResyncPeriod: resync,
		// kube-proxy and flanneld on every node.
		KubeNetworkBinDir: netDir,
		Logf:              func(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) },
	}, keep)
	if d.c != nil {
		fmt.Printf("\n==> Cleaning up: agents, kube-proxy, flanneld, manager, control plane, namespaces %s*, files\n", Prefix)
		if cerr := d.c.Close(); cerr != nil {
			fmt.Fprintf(os.Stderr, "demo: cleaning up: %v\n", cerr)
		}
	}
	switch {
	case err != nil && errors.Is(err, context.Canceled):
		fmt.Println("Interrupted.")
		return 130
	case err != nil:
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	case d.failures > 0:
		fmt.Printf("FAILED: %d probes did not get the expected verdict (%s).\n", d.failures, time.Since(start).Round(time.Second))
		return 1
	}
	fmt.Printf("Done: every probe got the expected verdict (%s).\n", time.Since(start).Round(time.Second))
	return 0
}

func (d *demo) header(format string, args ...any) {
	d.step++
	fmt.Printf("\n==> %d. %s\n", d.step, fmt.Sprintf(format, args...))
}

func (d *demo) run(ctx context.Context, opts testbed.Options, keep bool) error {
	d.header("Starting nodefw: control plane, manager, three nodes with their agents, kube-proxy and flanneld")
	var err error
	d.c, err = testbed.StartCluster(ctx, opts)
	if err != nil {
		return err
	}
	c := d.c
	for _, n := range c.Nodes {
		role := "worker"
		if n.ControlPlane {
			role = "control plane"
		}
		fmt.Printf("    node %-9s %-13s namespace %-15s address %-12s pods %s (pod %s), kube-proxy %s\n",
			n.Name, role, n.NS.Name, n.Addr, n.PodCIDR, n.Pod.Addr, n.ProxyMode)
	}
	if err := d.startNodePort(ctx); err != nil {
		return err
	}

	d.header("Applying the policies in config/samples (%s comes live, later)", nodePortsSample)
	policies, err := c.SamplePolicies()
	if err != nil {
		return err
	}
	var nodePorts *fwv1.NodeFirewallPolicy
	for _, p := range policies {
		if p.Name == nodePortsSample {
			nodePorts = p
			continue
		}
		if err := c.ApplyPolicy(ctx, p); err != nil {
			return fmt.Errorf("applying %s: %w", p.Name, err)
		}
		fmt.Printf("    %-19s %s, priority %d, %d rules, nodes: %s\n", p.Name, modeOf(p), p.Spec.EffectivePriority(), len(p.Spec.Rules), selectorText(p))
	}
	fmt.Printf("    (the samples' control-plane and pod CIDR peers resolve from the Nodes, cp-1 at %s;\n", c.Node("cp-1").Addr)
	fmt.Printf("    nodeports-from-cidr's placeholder %s is replaced by the nodes' LAN %s)\n", testbed.SampleNodePortClients, testbed.LANPrefix)
	if nodePorts == nil {
		return fmt.Errorf("config/samples has no %s policy", nodePortsSample)
	}
	applied := time.Now()
	if err := d.waitReady(ctx); err != nil {
		return err
	}
	fmt.Printf("    every policy Ready and programmed on its nodes after %s\n", round(time.Since(applied)))

	d.header("kubectl get nfp,nfw")
	if err := d.kubectlGet(ctx); err != nil {
		return err
	}

	d.header("Probing the hardening table with real connections between the nodes")
	fmt.Println("    Most ports probed are sockets on the node itself: a port in the NodePort range without a")
	fmt.Printf("    Service is no NodePort (the workers accept it on Input, a rule only kube-proxy's IPVS mode\n")
	fmt.Printf("    needs). NodePort %d is one: kube-proxy DNATs it to %s's pod, across VXLAN. Pods on other\n", nodePort, nodePortBackend)
	fmt.Println("    nodes are reached over flannel's VXLAN, which the receiving node sees as udp/8472.")
	rs := testbed.VerifyChecks(append(c.SeedChecks(), d.nodePortChecks(testbed.Accepted, testbed.Accepted)...))
	d.printResults(rs)

	if err := d.liveChange(ctx); err != nil {
		return err
	}
	if err := d.restrictNodePorts(ctx, nodePorts); err != nil {
		return err
	}

	d.header("The nftables ruleset the agent programmed in worker-1 (ip netns exec %sworker-1 nft list table inet nodefw)", Prefix)
	out, err := c.Ruleset("worker-1")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))

	if keep {
		d.header("Left running (--keep); Ctrl-C stops and cleans up")
		fmt.Printf("    export KUBECONFIG=%s\n", c.Kubeconfig)
		fmt.Printf("    kubectl get nfp,nfw\n")
		fmt.Printf("    ip netns exec %sworker-1 nft list ruleset\n", Prefix)
		fmt.Printf("    ip netns exec %sworker-1 timeout 1 bash -c '</dev/tcp/%s/10250' && echo accepted || echo dropped   # worker-1 -> cp-1 kubelet\n",
			Prefix, c.Node("cp-1").Addr)
		fmt.Printf("    logs: %s\n", filepath.Join(c.Dir, "*.log"))
		<-ctx.Done()
	}
	return nil
}

func (d *demo) waitReady(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := d.c.WaitReady(wctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w\n%s", err, d.c.Diagnose(ctx, nil))
	}
	return nil
}

func (d *demo) kubectlGet(ctx context.Context) error {
	out, err := d.c.GetPolicies(ctx)
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	return nil
}

func (d *demo) printResults(rs testbed.Results) {
	fmt.Print(indent(rs.Table()))
	if failed := rs.Failed(); len(failed) > 0 {
		d.failures += len(failed)
		fmt.Printf("    ✗ %d of %d probes differ from the expectation\n", len(failed), len(rs))
		fmt.Print(indent(d.c.Diagnose(context.Background(), nil)))
		return
	}
	fmt.Printf("    ✓ all %d probes as expected\n", len(rs))
}

// liveChange removes the kubelet rule from the worker policy, as a
// mistaken edit would (kubectl exec and logs stop working), shows the
// probes change, and restores it.
func (d *demo) liveChange(ctx context.Context) error {
	c := d.c
	d.header("Changing a policy live: removing the kubelet rule (tcp/10250) from the worker policy, as if `kubectl exec` broke")
	original, err := c.Policy(ctx, "worker")
	if err != nil {
		return err
	}
	kubelet := []testbed.Port{{Proto: testbed.TCP, Port: 10250, Note: "kubelet"}}
	var dropped, accepted []testbed.Check
	for _, w := range []string{"worker-1", "worker-2"} {
		dropped = append(dropped, c.Checks("cp-1", w, testbed.Dropped, kubelet...)...)
		accepted = append(accepted, c.Checks("cp-1", w, testbed.Accepted, kubelet...)...)
	}
	// The control plane's own kubelet rule is in another policy: untouched.
	dropped = append(dropped, c.Checks("worker-1", "cp-1", testbed.Accepted, kubelet...)...)
	accepted = append(accepted, c.Checks("worker-1", "cp-1", testbed.Accepted, kubelet...)...)

	start := time.Now()
	if err := c.UpdatePolicy(ctx, "worker", func(p *fwv1.NodeFirewallPolicy) { testbed.RemoveRules(p, "kubelet") }); err != nil {
		return err
	}
	fmt.Println("    kubectl edit nfp worker   # deletes rule \"kubelet\"")
	if err := d.await(ctx, "the kubelet is unreachable on both workers", dropped, start); err != nil {
		return err
	}
	if err := d.waitReady(ctx); err != nil {
		return err
	}
	if out, err := c.Kubectl(ctx, "get", "nfp", "worker"); err == nil {
		fmt.Print(indent(out))
	}

	d.header("Restoring the kubelet rule")
	start = time.Now()
	if err := c.UpdatePolicy(ctx, "worker", func(p *fwv1.NodeFirewallPolicy) { p.Spec = original.Spec }); err != nil {
		return err
	}
	fmt.Println("    kubectl apply -f config/samples/firewall_v1alpha1_nodefirewallpolicy_worker.yaml")
	if err := d.await(ctx, "the kubelet is reachable again", accepted, start); err != nil {
		return err
	}
	return d.waitReady(ctx)
}

func (d *demo) await(ctx context.Context, what string, checks []testbed.Check, start time.Time) error {
	took, rs, err := d.c.AwaitChecks(ctx, checks, start, 30*time.Second)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		d.printResults(rs)
		fmt.Printf("    ✗ %s: %v\n", what, err)
		return nil
	}
	fmt.Print(indent(rs.Table()))
	fmt.Printf("    ✓ %s %s after the change (policy edit to packets in the kernel)\n", what, round(took))
	return nil
}

func modeOf(p *fwv1.NodeFirewallPolicy) string {
	switch p.Spec.Mode {
	case fwv1.PolicyModeAudit:
		return "Audit (drops only counted and logged)"
	default:
		return "Enforce"
	}
}

func selectorText(p *fwv1.NodeFirewallPolicy) string {
	sel := p.Spec.NodeSelector
	var parts []string
	for k, v := range sel.MatchLabels {
		parts = append(parts, k+"="+v)
	}
	for _, e := range sel.MatchExpressions {
		parts = append(parts, fmt.Sprintf("%s %s", e.Key, e.Operator))
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ", ")
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n") + "\n"
}
