// Package faults holds fault-injection tests with real processes and real
// packets: they need root for network namespaces and nftables. Besides the
// kill-mid-apply loop, a whole nodefw (control plane, manager, one agent per
// namespace node, see internal/testbed) goes through an API server outage,
// a node deleted and registered again, a selector that matches nothing, a
// manager restart mid-rollout and foreign edits of nodefw's table.
// NODEFW_FAULTS_OUTAGE shortens the outage from its default minute.
package faults

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/nft"
)

const (
	applyLoopEnv = "NODEFW_FAULTS_APPLY_LOOP_NETNS"
	// applyLoopLinearEnv makes the apply loop compile linear rules.
	applyLoopLinearEnv = "NODEFW_FAULTS_APPLY_LOOP_LINEAR"
	openPort           = 10250
	closedPort         = 9999
)

// ruleset is a node firewall with an input default Drop that accepts
// openPort, padded with filler rules so that each apply is a large batch.
// Both variants accept openPort and drop closedPort: any moment with an
// empty or partial table shows as a probe failure. With set lookups the
// filler rules and the kubelet rule share the sets of one run, and the
// variants cut them into different port blocks, so each apply after the
// first rewrites the table and creates new sets.
func ruleset(variant int, setLookups bool) *compile.Ruleset {
	spec := fwv1.NodeFirewallSpec{DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop, Forward: fwv1.ChainPolicyAccept, Output: fwv1.ChainPolicyAccept}}
	for i := range 2000 {
		spec.Rules = append(spec.Rules, fwv1.NodeFirewallRule{
			Policy: "filler", Mode: fwv1.PolicyModeEnforce, Name: fmt.Sprintf("r%d", i), Chain: fwv1.ChainInput,
			Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolUDP, Ports: []fwv1.PortRange{{Port: int32(20000 + i + variant*3000)}},
			Sources: []string{fmt.Sprintf("10.%d.%d.0/24", variant, i%250)},
		})
	}
	spec.Rules = append(spec.Rules, fwv1.NodeFirewallRule{Policy: "kubelet", Mode: fwv1.PolicyModeEnforce, Name: "kubelet",
		Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: openPort}}})
	rs, err := compile.Compile(spec, compile.Options{SetLookups: setLookups})
	if err != nil {
		panic(err)
	}
	return rs
}

// TestMain lets the test binary double as the process that gets killed:
// with applyLoopEnv set it applies the two variants alternately forever.
// Otherwise it runs the tests and then stops the cluster that the tests
// with a whole nodefw share (bed, see cluster_test.go).
func TestMain(m *testing.M) {
	if ns := os.Getenv(applyLoopEnv); ns != "" {
		p, err := nft.New(ns, compile.DefaultTable)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		lookups := os.Getenv(applyLoopLinearEnv) == ""
		rulesets := []*compile.Ruleset{ruleset(0, lookups), ruleset(1, lookups)}
		for i := 0; ; i++ {
			if _, err := p.Apply(rulesets[i%2]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
		}
	}
	os.Exit(bed.Main(m))
}

// TestKillMidApplyLeavesOldOrNewRuleset kills a process in the middle of
// applying large rulesets, again and again, while probes run: the kernel
// must always hold one whole ruleset, never an empty or partial table, and
// no packet may meet anything else, with linear rules and with set lookups.
func TestKillMidApplyLeavesOldOrNewRuleset(t *testing.T) {
	netnstest.RequireRoot(t)
	t.Run("set-lookups", func(t *testing.T) { killMidApply(t, true) })
	t.Run("linear", func(t *testing.T) { killMidApply(t, false) })
}

// oldOrNew reports whether the kernel holds one of two rulesets. A kill
// between the two transactions of a rewrite leaves the new named sets
// unused next to the old rules; they change no verdict, and the next
// Apply deletes them. The check reads the table through a Programmer of
// its own, with nothing committed: one that applied either ruleset would
// take the table for what it committed, which the killed process changed.
func oldOrNew(nsPath string, old, next *compile.Ruleset) (bool, error) {
	prog, err := nft.New(nsPath, compile.DefaultTable)
	if err != nil {
		return false, err
	}
	defer prog.Close()
	for _, rs := range []*compile.Ruleset{old, next} {
		d, err := prog.Drift(rs)
		if err != nil {
			return false, err
		}
		if d == "" || strings.HasPrefix(d, "unexpected set ") {
			return true, nil
		}
	}
	return false, nil
}

func killMidApply(t *testing.T, setLookups bool) {
	pair := netnstest.NewTestPair(t)
	srv, err := pair.Host.ServeTCP(openPort, closedPort)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	old, next := ruleset(0, setLookups), ruleset(1, setLookups)
	prog, err := nft.New(pair.Host.Path(), compile.DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if _, err := prog.Apply(old); err != nil {
		t.Fatal(err)
	}

	// Probe throughout: openPort must always connect, closedPort never.
	var probes, gaps atomic.Int64
	var firstGap atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range []struct {
		port uint16
		want netnstest.Verdict
	}{{openPort, netnstest.Accepted}, {closedPort, netnstest.Dropped}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := netnstest.ProbeTCP(pair.Client, netnstest.HostV4, c.port, netnstest.WithTimeout(300*time.Millisecond))
				probes.Add(1)
				if err != nil || got != c.want {
					gaps.Add(1)
					firstGap.CompareAndSwap(nil, fmt.Sprintf("port %d: got %v (%v), want %v", c.port, got, err, c.want))
				}
			}
		}()
	}

	r := rand.New(rand.NewSource(1))
	const kills = 15
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), applyLoopEnv+"="+pair.Host.Path())
		if !setLookups {
			cmd.Env = append(cmd.Env, applyLoopLinearEnv+"=1")
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(100+r.Intn(400)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !st.Signaled() {
			t.Fatalf("kill %d: the apply loop exited on its own: %v", i, cmd.ProcessState)
		}
		ok, err := oldOrNew(pair.Host.Path(), old, next)
		if err != nil {
			t.Fatalf("kill %d: reading the table: %v", i, err)
		}
		if !ok {
			t.Fatalf("kill %d: the kernel holds neither the old nor the new ruleset", i)
		}
	}
	close(stop)
	wg.Wait()
	if gaps.Load() > 0 {
		t.Fatalf("%d of %d probes saw a gap; first: %v", gaps.Load(), probes.Load(), firstGap.Load())
	}
	t.Logf("%d kills mid-apply, %d probes, no gap", kills, probes.Load())
}
