package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// fanOutNodes is the cluster size of the fan-out test; `make bench` sets
// NODEFW_FANOUT_NODES=2000, so that the change touches 1,000 nodes.
func fanOutNodes() int {
	if n, err := strconv.Atoi(os.Getenv("NODEFW_FANOUT_NODES")); err == nil && n > 0 {
		return n
	}
	return 100
}

// simulateAgents acknowledges, as node agents do, every new generation of
// the NodeFirewalls of nodes whose names start with prefix, until ctx ends.
func simulateAgents(ctx context.Context, t *testing.T, prefix string) {
	t.Helper()
	agents := &envtesting.SimulatedAgents{Prefix: prefix, RevisionNamespace: revisionNamespace}
	if err := agents.Start(ctx, restConfig, k8sClient); err != nil {
		t.Fatal(err)
	}
}

// TestFanOut measures one policy change that touches half of the cluster's
// nodes: the time until the policy is Ready again with simulated agents, and
// the writes the controller made. Nodes whose rules did not change must not
// be written.
func TestFanOut(t *testing.T) {
	n := fanOutNodes()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prefix := "t10-"
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			half := "even"
			if i%2 == 1 {
				half = "odd"
			}
			newNode(t, fmt.Sprintf("%snode-%04d", prefix, i), map[string]string{"t10": "yes", "t10-half": half})
		}()
	}
	wg.Wait()
	simulateAgents(ctx, t, prefix)

	base := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t10-base"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t10": "yes"}},
			Rules:        []fwv1.Rule{tcpRule("ssh", 22)},
		},
	})
	odd := newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "t10-odd"},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "t10-half", Operator: metav1.LabelSelectorOpIn, Values: []string{"odd"}}}},
			Rules: fanOutRules("v1", 1000),
		},
	})
	ready := func(name string, timeout time.Duration) time.Duration {
		start := time.Now()
		envtesting.Eventually(t, timeout, func() error {
			p, err := getPolicy(name)
			if err != nil {
				return err
			}
			c := condition(p, fwv1.ConditionReady)
			if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != p.Generation {
				return fmt.Errorf("%s not Ready: applied %d of %d", name, p.Status.AppliedNodes, p.Status.MatchedNodes)
			}
			return nil
		})
		return time.Since(start)
	}
	ready(base.Name, 120*time.Second)
	ready(odd.Name, 120*time.Second)

	versions := map[string]string{}
	var list fwv1.NodeFirewallList
	if err := k8sClient.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	for _, nfw := range list.Items {
		versions[nfw.Name] = nfw.ResourceVersion
	}

	before, beforeBytes := writesSnapshot(), wireSnapshot()
	start := time.Now()
	var policyBytes []byte
	updatePolicy(t, odd.Name, func(p *fwv1.NodeFirewallPolicy) {
		p.Spec.Rules = fanOutRules("v2", 20000)
		policyBytes, _ = json.Marshal(p)
	})
	ready(odd.Name, 120*time.Second)
	elapsed := time.Since(start)
	after, afterBytes := writesSnapshot(), wireSnapshot()
	writes, written := map[string]int64{}, map[string]int64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			writes[k] = d
		}
	}
	for k, v := range afterBytes {
		if d := v - beforeBytes[k]; d > 0 {
			written[k] = d
		}
	}

	// Only the odd half's NodeFirewalls may have been written by the controller.
	if err := k8sClient.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	for _, nfw := range list.Items {
		var i int
		if _, err := fmt.Sscanf(nfw.Name, prefix+"node-%d", &i); err != nil {
			continue
		}
		if i%2 == 0 && versions[nfw.Name] != nfw.ResourceVersion {
			t.Errorf("NodeFirewall %s changed although its rules did not", nfw.Name)
		}
	}
	// The nodes follow the policy: an edit of its rules writes its
	// revision and moves the current label, and writes no NodeFirewall.
	nfwUpdates := writes["*v1alpha1.NodeFirewall/update"]
	if nfwUpdates != 0 {
		t.Errorf("controller updated %d NodeFirewalls, want none: the nodes follow the policy", nfwUpdates)
	}
	if perNode := written["nodefirewalls/update"] / int64(n/2); perNode > 1024 {
		t.Errorf("%d bytes written a node, want at most 1 KiB", perNode)
	}
	t.Logf("fan-out: %d nodes, one policy change touching %d: Ready after %v; controller writes %v", n, n/2, elapsed.Round(time.Millisecond), writes)
	var total, otherBytes int64
	for _, w := range writes {
		total += w
	}
	for k, b := range written {
		switch k {
		case "nodefirewalls/update", "controllerrevisions/create", "nodefirewallpolicies/status-patch":
		default:
			otherBytes += b
		}
	}
	// `make bench` reads this line into its report.
	t.Logf("fan-out: request bytes sent by resource and verb: %v; the policy is %d bytes", written, len(policyBytes))
	fmt.Printf("FANOUT nodes=%d touched=%d ready_ms=%d nfw_updates=%d policy_status_updates=%d writes=%d policy_bytes=%d nfw_bytes=%d revision_bytes=%d policy_status_bytes=%d other_bytes=%d\n", n, n/2,
		elapsed.Milliseconds(), nfwUpdates, writes["*v1alpha1.NodeFirewallPolicy/status-patch"], total,
		len(policyBytes), written["nodefirewalls/update"], written["controllerrevisions/create"], written["nodefirewallpolicies/status-patch"], otherBytes)
}

// fanOutRules are the 500 rules of the policy the fan-out test edits, one
// TCP port from one /32 source each, ports from firstPort on.
func fanOutRules(prefix string, firstPort int32) []fwv1.Rule {
	rules := make([]fwv1.Rule, 500)
	for i := range rules {
		r := tcpRule(fmt.Sprintf("%s-%03d", prefix, i), firstPort+int32(i))
		r.Sources = []string{fmt.Sprintf("192.0.2.%d/32", i%256)}
		rules[i] = r
	}
	return rules
}
