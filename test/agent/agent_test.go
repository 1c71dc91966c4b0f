// Package agent tests the node agent binary against a real API server and
// real network namespaces: it needs root, and KUBEBUILDER_ASSETS (set by
// `make test`).
package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/testbed"
)

var (
	cp       *testbed.ControlPlane
	agentBin string
	workDir  string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "the agent tests need root for network namespaces and nftables")
		return 1
	}
	var err error
	workDir, err = os.MkdirTemp("", "nodefw-agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(workDir)
	agentBin = filepath.Join(workDir, "agent")
	build := exec.Command("go", "build", "-o", agentBin, "./cmd/agent")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the agent: %v\n%s", err, out)
		return 1
	}
	cp, err = testbed.StartControlPlane(envtesting.CRDDir(filepath.Join("..", "..")), workDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cp.Stop()
	return m.Run()
}

func startAgent(t *testing.T, node string, ns *netnstest.NS, extra ...string) *testbed.Process {
	t.Helper()
	args := append([]string{"--kubeconfig", cp.Kubeconfig, "--node-name", node, "--netns", ns.Path(),
		"--resync-period", "1s", "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--confirm-timeout", "0"}, extra...)
	p, err := testbed.StartProcess(workDir, node, agentBin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", testbed.LogTail(p, 40))
		}
	})
	return p
}

// updateNodeFirewall applies change to the stored NodeFirewall of node and
// writes it, again on a conflict: the agent's status writes move its
// resourceVersion at any time.
func updateNodeFirewall(t *testing.T, node string, change func(*fwv1.NodeFirewall)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := envtesting.GetNodeFirewall(cp.Client, node)
		if err != nil {
			return err
		}
		change(cur)
		return cp.Client.Update(context.Background(), cur)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func kubeletSpec() fwv1.NodeFirewallSpec {
	return fwv1.NodeFirewallSpec{
		DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept},
		Rules: []fwv1.NodeFirewallRule{{Policy: "worker", Mode: fwv1.PolicyModeEnforce, Name: "kubelet", Chain: fwv1.ChainInput,
			Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 10250}}}},
	}
}

func createNFW(t *testing.T, name string, spec fwv1.NodeFirewallSpec) {
	t.Helper()
	nfw := &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	if err := cp.Client.Create(context.Background(), nfw); err != nil {
		t.Fatal(err)
	}
}

// waitReady waits for the agent to report the current generation with the
// given Ready status and reason.
func waitReady(t *testing.T, name string, want metav1.ConditionStatus, reason string) {
	t.Helper()
	envtesting.Eventually(t, 30*time.Second, func() error {
		nfw, err := envtesting.GetNodeFirewall(cp.Client, name)
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(nfw.Status.Conditions, fwv1.ConditionReady)
		if c == nil || c.ObservedGeneration != nfw.Generation || c.Status != want || c.Reason != reason {
			return fmt.Errorf("Ready = %+v at generation %d, want %s/%s", c, nfw.Generation, want, reason)
		}
		return nil
	})
}

// foreignTables creates the tables that other software keeps in a node:
// iptables-nft's filter and nat (with a kube-proxy-style chain) and a
// kube-proxy nftables table. It returns a snapshot function.
func foreignTables(t *testing.T, ns *netnstest.NS) func() string {
	t.Helper()
	ns.MustExec("iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "5555", "-j", "ACCEPT")
	ns.MustExec("iptables-nft", "-t", "nat", "-N", "KUBE-SERVICES")
	ns.MustExec("iptables-nft", "-t", "nat", "-N", "KUBE-MARK-MASQ")
	ns.MustExec("iptables-nft", "-t", "nat", "-A", "KUBE-SERVICES", "!", "-s", "10.244.0.0/16", "-d", "10.103.228.172/32", "-p", "tcp",
		"-m", "comment", "--comment", "default/nginx-8080: cluster IP", "-m", "tcp", "--dport", "8088", "-j", "KUBE-MARK-MASQ")
	ns.MustExec("nft", "add table ip kube-proxy")
	ns.MustExec("nft", "add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }")
	ns.MustExec("nft", "add rule ip kube-proxy filter-input ct state invalid drop")
	return func() string {
		var b strings.Builder
		for _, tbl := range []string{"ip filter", "ip nat", "ip kube-proxy"} {
			b.WriteString(ns.MustExec(append([]string{"nft", "list", "table"}, strings.Fields(tbl)...)...))
		}
		return b.String()
	}
}

func hasTable(ns *netnstest.NS) bool {
	_, err := ns.Exec("nft", "list", "table", "inet", "nodefw")
	return err == nil
}

func expectProbes(t *testing.T, pair *netnstest.Pair, want map[uint16]netnstest.Verdict) {
	t.Helper()
	for port, v := range want {
		netnstest.ExpectTCP(t, pair.Client, netnstest.HostV4, port, v)
	}
}

func TestAgentLifecycle(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	srv, err := pair.Host.ServeTCP(10250, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	snapshot := foreignTables(t, pair.Host)
	before := snapshot()
	probes := map[uint16]netnstest.Verdict{10250: netnstest.Accepted, 8080: netnstest.Dropped}

	const node = "lifecycle-node"
	createNFW(t, node, kubeletSpec())
	agent := startAgent(t, node, pair.Host)
	waitReady(t, node, metav1.ConditionTrue, "Applied")
	expectProbes(t, pair, probes)
	nfw, _ := envtesting.GetNodeFirewall(cp.Client, node)
	if nfw.Status.RuleCount == 0 || nfw.Status.LastAppliedTime == nil {
		t.Errorf("status = %+v, want a rule count and a last-applied time", nfw.Status)
	}

	t.Run("kill -9 keeps the rules (fail-static)", func(t *testing.T) {
		agent.Kill()
		if !hasTable(pair.Host) {
			t.Fatal("the table went away with the agent")
		}
		expectProbes(t, pair, probes)
		applied := nfw.Status.LastAppliedTime
		if err := agent.Start(); err != nil {
			t.Fatal(err)
		}
		// The restarted agent adopts the table rather than rewriting it.
		time.Sleep(3 * time.Second)
		cur, _ := envtesting.GetNodeFirewall(cp.Client, node)
		if !cur.Status.LastAppliedTime.Equal(applied) {
			t.Errorf("restart re-applied an unchanged table: last applied %v -> %v", applied, cur.Status.LastAppliedTime)
		}
		expectProbes(t, pair, probes)
	})

	t.Run("drift is repaired within the resync period", func(t *testing.T) {
		for _, vandal := range [][]string{{"nft", "flush", "ruleset"}, {"nft", "delete", "table", "inet", "nodefw"}, {"nft", "flush", "chain", "inet", "nodefw", "input"}} {
			if vandal[1] == "flush" && vandal[2] == "ruleset" {
				// flush ruleset also empties the other tables; recreate them after.
				defer func() {
					pair.Host.MustExec("nft", "flush", "ruleset")
					snapshot = foreignTables(t, pair.Host)
					before = snapshot()
				}()
			}
			pair.Host.MustExec(vandal...)
			took := envtesting.Eventually(t, 10*time.Second, func() error {
				out, err := pair.Host.Exec("nft", "list", "table", "inet", "nodefw")
				if err != nil || !strings.Contains(out, "10250") {
					return fmt.Errorf("not repaired after %v", vandal)
				}
				return nil
			})
			t.Logf("%v repaired after %v", vandal, took.Round(time.Millisecond))
			expectProbes(t, pair, probes)
		}
		envtesting.Eventually(t, 10*time.Second, func() error {
			var evs eventsv1.EventList
			if err := cp.Client.List(context.Background(), &evs); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == "DriftRepaired" && e.Regarding.Name == node {
					return nil
				}
			}
			return fmt.Errorf("no DriftRepaired event for %s", node)
		})
	})

	t.Run("a hand-written invalid NodeFirewall is refused and the last good ruleset kept", func(t *testing.T) {
		updateNodeFirewall(t, node, func(nfw *fwv1.NodeFirewall) { nfw.Spec.Rules[0].Sources = []string{"10.0.0.300/8"} })
		waitReady(t, node, metav1.ConditionFalse, "InvalidSpec")
		expectProbes(t, pair, probes)
		updateNodeFirewall(t, node, func(nfw *fwv1.NodeFirewall) { nfw.Spec = kubeletSpec() })
		waitReady(t, node, metav1.ConditionTrue, "Applied")
	})

	t.Run("deleting the NodeFirewall removes only the agent's table", func(t *testing.T) {
		cur, _ := envtesting.GetNodeFirewall(cp.Client, node)
		if err := cp.Client.Delete(context.Background(), cur); err != nil {
			t.Fatal(err)
		}
		envtesting.Eventually(t, 15*time.Second, func() error {
			if _, err := envtesting.GetNodeFirewall(cp.Client, node); !apierrors.IsNotFound(err) {
				return fmt.Errorf("NodeFirewall still there (finalizer not released?): %v", err)
			}
			if hasTable(pair.Host) {
				return fmt.Errorf("table still there")
			}
			return nil
		})
		if after := snapshot(); after != before {
			t.Errorf("foreign tables changed:\n--- before\n%s\n--- after\n%s", before, after)
		}
	})

	t.Run("--cleanup removes only the agent's table", func(t *testing.T) {
		createNFW(t, node, kubeletSpec())
		waitReady(t, node, metav1.ConditionTrue, "Applied")
		agent.Stop()
		out, err := exec.Command(agentBin, "--cleanup", "--netns", pair.Host.Path()).CombinedOutput()
		if err != nil {
			t.Fatalf("agent --cleanup: %v\n%s", err, out)
		}
		if hasTable(pair.Host) {
			t.Error("the table survived --cleanup")
		}
		if after := snapshot(); after != before {
			t.Errorf("foreign tables changed:\n--- before\n%s\n--- after\n%s", before, after)
		}
	})
}
