package nflog

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// lockedBuffer is a bytes.Buffer the writer and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDroppedProbeLogsOneLine programs a logged Drop rule and a logged
// default Drop in a namespace, sends real probes, and reads the group: each
// dropped probe is exactly one JSON line naming its policy and rule.
func TestDroppedProbeLogsOneLine(t *testing.T) {
	netnstest.RequireRoot(t)
	pair := netnstest.NewTestPair(t)
	drop := v1alpha1.ChainPolicyDrop
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			{Policy: "hardening", Name: "no-telnet", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop,
				Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 23}}, Log: true, LogLabel: "telnet"},
			{Policy: "hardening", Name: "web", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept,
				Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: 80}}},
		},
		DefaultActions: v1alpha1.DefaultActions{Input: drop, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
		Policies: []v1alpha1.PolicyReference{{Name: "hardening", Generation: 1,
			DefaultActions: &v1alpha1.DefaultActions{Input: drop, LogDrops: true}}},
	}
	rs, err := compile.Compile(spec, compile.Options{LogGroup: 7})
	if err != nil {
		t.Fatal(err)
	}
	f := t.TempDir() + "/ruleset.nft"
	if err := os.WriteFile(f, []byte(compile.Render(rs)), 0o600); err != nil {
		t.Fatal(err)
	}
	pair.Host.MustExec("nft", "-f", f)

	var r *Reader
	if err := pair.Host.Do(func() error {
		var err error
		r, err = Open(7, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	logged := &counts{}
	r.Out, r.Node, r.Logged, r.Dropped = &out, "node-a", logged, &counts{}
	r.IfName = func(int) string { return "eth0" }
	r.SetSources(rs.LogSources)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	// One SYN each: the timeout is shorter than TCP's first retransmission.
	netnstest.ExpectTCP(t, pair.Client, netnstest.HostV4, 23, netnstest.Dropped, netnstest.WithTimeout(600*time.Millisecond))
	netnstest.ExpectTCP(t, pair.Client, netnstest.HostV4, 8080, netnstest.Dropped, netnstest.WithTimeout(600*time.Millisecond))
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(out.String(), "\n") < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would have arrived by now
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (one per dropped probe):\n%s", len(lines), out.String())
	}
	want := []map[string]any{
		{"policy": "hardening", "rule": "no-telnet", "label": "telnet", "verdict": "drop", "destinationPort": float64(23)},
		{"policy": "hardening", "rule": "default", "verdict": "drop", "chain": "input", "destinationPort": float64(8080)},
	}
	for i, line := range lines {
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		for k, v := range want[i] {
			if got[k] != v {
				t.Errorf("line %d %s: %s = %v, want %v", i, line, k, got[k], v)
			}
		}
		for k, v := range map[string]any{"node": "node-a", "family": "ipv4", "protocol": "tcp",
			"source": netnstest.ClientV4.String(), "destination": netnstest.HostV4.String(), "inInterface": "eth0"} {
			if got[k] != v {
				t.Errorf("line %d %s: %s = %v, want %v", i, line, k, got[k], v)
			}
		}
	}
	if n := logged.get("hardening", "no-telnet", "drop"); n != 1 {
		t.Errorf("logged packets of hardening/no-telnet = %d, want 1", n)
	}
}
