package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/nflog"
	"github.com/nodefw/nodefw/internal/testbed"
	"github.com/nodefw/nodefw/internal/testbed/suite"
)

// logWithin is how soon a logged packet must show in its agent's output;
// logQuiet is how long after that no second line may follow.
const (
	logWithin = 10 * time.Second
	logQuiet  = 1500 * time.Millisecond
)

// TestDropLogs: a probe dropped by a logged Drop rule, and one dropped by
// a logged default Drop, each appear as one JSON line in the output of the
// agent of the node that dropped it, with the node, the policy, the rule
// ("default" for the chain's default), the verdict and the packet's
// addresses and ports, and in no other node's. In Audit mode the rule's
// line says "audit", and so does an audited default's.
func TestDropLogs(t *testing.T) {
	c := bed.Cluster(t)
	t.Cleanup(func() { c.RestoreBaseline(t) })
	ctx := context.Background()
	const (
		policy = "e2e-drop-logs"
		rule   = "no-etcd-metrics"
		label  = "e2e-probe"
		// ruled is a port worker-1 listens on that the rule drops;
		// unruled one that only the chain's default drops.
		ruled, unruled = 2381, 29999
	)
	p := &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policy},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": "worker-1"}},
			// Ahead of the samples, so that its default Drop is the one
			// that logs (the first policy that sets a chain's default).
			Priority:       ptr.To[int32](50),
			Mode:           fwv1.PolicyModeEnforce,
			DefaultActions: &fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop, LogDrops: true},
			Rules: []fwv1.Rule{{
				Name: rule, Chain: fwv1.ChainInput, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: ruled}},
				Action: fwv1.ActionDrop,
				// A rate the three runs of -count=3 cannot exhaust.
				Log: true, LogLabel: label, LogRatePerMinute: 600, LogBurst: 50,
			}},
		},
	}
	if err := c.ApplyPolicy(ctx, p); err != nil {
		t.Fatalf("creating policy %s: %v", policy, err)
	}
	c.WaitPolicy(t, policy, "Ready on worker-1", suite.Matched(1))
	waitLogRules(t, c, "worker-1", "nfw drop "+policy+"/"+rule+" "+label, "nfw drop "+policy+":input")

	t.Run("Rule", func(t *testing.T) {
		got := dropProbe(t, c, "cp-1", "worker-1", ruled, "worker-1")
		want := nflog.Record{Node: "worker-1", Policy: policy, Rule: rule, Label: label, Verdict: "drop", Chain: "input"}
		checkLine(t, got, want, "cp-1", "worker-1", ruled, true)
	})
	t.Run("Default", func(t *testing.T) {
		got := dropProbe(t, c, "cp-1", "worker-1", unruled, "worker-1")
		want := nflog.Record{Node: "worker-1", Policy: policy, Rule: "default", Chain: "input", Verdict: "drop"}
		checkLine(t, got, want, "cp-1", "worker-1", unruled, true)
	})

	// In Audit mode the rule only logs; worker-1's Input default Drop,
	// now the worker sample's alone, drops the probe without a line. The
	// Output default Drop is audited, strict-output's being in Audit mode
	// too.
	c.Update(t, policy, func(p *fwv1.NodeFirewallPolicy) {
		p.Spec.Mode = fwv1.PolicyModeAudit
		p.Spec.DefaultActions = &fwv1.DefaultActions{Output: fwv1.ChainPolicyDrop}
	})
	c.WaitPolicy(t, policy, "Audit mode on worker-1", suite.Matched(1))
	waitLogRules(t, c, "worker-1", "nfw audit "+policy+"/"+rule+" "+label, "nfw audit "+policy+":output")

	t.Run("AuditRule", func(t *testing.T) {
		got := dropProbe(t, c, "cp-1", "worker-1", ruled, "worker-1")
		want := nflog.Record{Node: "worker-1", Policy: policy, Rule: rule, Label: label, Verdict: "audit", Chain: "input"}
		checkLine(t, got, want, "cp-1", "worker-1", ruled, true)
	})
	t.Run("AuditDefault", func(t *testing.T) {
		// worker-1's own connection to worker-2, whose Input drops it.
		got := dropProbe(t, c, "worker-1", "worker-2", ruled, "worker-1")
		want := nflog.Record{Node: "worker-1", Policy: policy, Rule: "default", Chain: "output", Verdict: "audit"}
		checkLine(t, got, want, "worker-1", "worker-2", ruled, false)
	})
}

// waitLogRules waits until node's ruleset has log statements with each of
// the prefixes.
func waitLogRules(t *testing.T, c *suite.Cluster, node string, prefixes ...string) {
	t.Helper()
	c.WaitFor(t, node+"'s ruleset logs "+strings.Join(prefixes, ", "), 30*time.Second, func(context.Context) (bool, error) {
		rs, err := c.Ruleset(node)
		if err != nil {
			return false, err
		}
		for _, p := range prefixes {
			if !strings.Contains(rs, `prefix "`+p+`"`) {
				return false, nil
			}
		}
		return true, nil
	})
}

// dropProbe sends a TCP probe from one node to a port of another, from a
// source port of its own, checks that it is dropped, and returns the
// drop-log lines about it: exactly one in the agent output of the node
// logger, none in the other nodes' but the lines the sender's Output chain
// writes in audit of the strict-output sample, which audits every node's
// outgoing connections.
func dropProbe(t *testing.T, c *suite.Cluster, from, to string, port uint16, logger string) nflog.Record {
	t.Helper()
	offsets := map[string]int64{}
	for _, n := range c.Nodes {
		off, err := n.Agent.LogOffset()
		if err != nil {
			t.Fatal(err)
		}
		offsets[n.Name] = off
	}
	src, dst := c.Node(from), c.Node(to)
	sport := uint16(40000 + rand.IntN(10000))
	v, err := netnstest.ProbeTCP(src.NS.NS, dst.Addr, port, netnstest.WithSourcePort(sport), netnstest.WithTimeout(testbed.ProbeTimeout))
	if err != nil {
		t.Fatalf("probe %s -> %s tcp/%d: %v", from, to, port, err)
	}
	if v != testbed.Dropped {
		t.Fatalf("probe %s -> %s tcp/%d from port %d: %v, want dropped", from, to, port, sport, v)
	}
	ofProbe := func(r nflog.Record) bool {
		return r.Protocol == "tcp" && r.Source != nil && *r.Source == src.Addr && r.Destination != nil && *r.Destination == dst.Addr &&
			r.SourcePort != nil && *r.SourcePort == sport && r.DestPort != nil && *r.DestPort == port
	}
	linesOf := func(node string) []nflog.Record {
		rs, err := c.Node(node).Agent.PacketLogs(offsets[node])
		if err != nil {
			t.Fatal(err)
		}
		var out []nflog.Record
		for _, r := range rs {
			if ofProbe(r) {
				out = append(out, r)
			}
		}
		return out
	}
	c.WaitFor(t, fmt.Sprintf("a drop-log line of %s -> %s tcp/%d from port %d in %s's agent output", from, to, port, sport, logger), logWithin,
		func(context.Context) (bool, error) { return len(linesOf(logger)) > 0, nil })
	// A second line would come at once: give it the time to.
	time.Sleep(logQuiet)
	got := linesOf(logger)
	if len(got) != 1 {
		t.Fatalf("%s's agent wrote %d lines about %s -> %s tcp/%d from port %d, want exactly one:\n%s", logger, len(got), from, to, port, sport, describe(got))
	}
	for _, n := range c.Nodes {
		if n.Name == logger {
			continue
		}
		for _, r := range linesOf(n.Name) {
			if n.Name == from && r.Policy == "strict-output" && r.Rule == "default" && r.Chain == "output" && r.Verdict == "audit" {
				continue
			}
			t.Errorf("%s's agent logged %s -> %s tcp/%d from port %d, which %s dropped: %s", n.Name, from, to, port, sport, logger, describe([]nflog.Record{r}))
		}
	}
	return got[0]
}

// checkLine compares a drop-log line with what it should say beyond the
// addresses and ports dropProbe matched it by: the fields of want, the
// family and protocol, and the interface the packet came in by (inbound)
// or went out by.
func checkLine(t *testing.T, got, want nflog.Record, from, to string, port uint16, inbound bool) {
	t.Helper()
	if got.Kind != "packet" || got.Node != want.Node || got.Policy != want.Policy || got.Rule != want.Rule ||
		got.Label != want.Label || got.Verdict != want.Verdict || got.Chain != want.Chain || got.Prefix != "" {
		t.Errorf("line %s\nwant kind packet, node %s, policy %s, rule %s, label %q, verdict %s, chain %q, no prefix",
			describe([]nflog.Record{got}), want.Node, want.Policy, want.Rule, want.Label, want.Verdict, want.Chain)
	}
	if got.Family != "ipv4" || got.Protocol != "tcp" {
		t.Errorf("family %q, protocol %q: want ipv4 and tcp", got.Family, got.Protocol)
	}
	if inbound && got.InInterface == "" {
		t.Errorf("no inInterface on a packet %s received: %s", to, describe([]nflog.Record{got}))
	}
	if !inbound && got.OutInterface == "" {
		t.Errorf("no outInterface on a packet %s sent: %s", from, describe([]nflog.Record{got}))
	}
	if got.Time.IsZero() || time.Since(got.Time) > time.Minute {
		t.Errorf("time %s: want the probe's", got.Time)
	}
	t.Logf("%s -> %s tcp/%d: %s", from, to, port, describe([]nflog.Record{got}))
}

// describe shows lines as the agent wrote them.
func describe(rs []nflog.Record) string {
	var b strings.Builder
	for _, r := range rs {
		src, dst := "-", "-"
		if r.Source != nil {
			src = r.Source.String()
		}
		if r.Destination != nil {
			dst = r.Destination.String()
		}
		fmt.Fprintf(&b, "{node %s policy %s rule %s label %q verdict %s chain %q %s %s %s", r.Node, r.Policy, r.Rule, r.Label, r.Verdict, r.Chain, r.Family, r.Protocol, src)
		if r.SourcePort != nil {
			fmt.Fprintf(&b, ":%d", *r.SourcePort)
		}
		b.WriteString(" -> " + dst)
		if r.DestPort != nil {
			fmt.Fprintf(&b, ":%d", *r.DestPort)
		}
		fmt.Fprintf(&b, " in %q out %q}\n", r.InInterface, r.OutInterface)
	}
	return b.String()
}
