package agent

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// TestCommitConfirmedRevertsALockout programs, with failsafes set to none,
// a policy that drops the node's traffic to its API server: the agent must
// notice within its confirm window that the API server's port no longer
// answers, restore the previous ruleset and report Reverted. A listener in
// the peer namespace stands in for the API server endpoint.
func TestCommitConfirmedRevertsALockout(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	api, err := pair.Client.ServeTCP(6443)
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	const node = "confirm-node"
	createNFW(t, node, kubeletSpec())
	startAgent(t, node, pair.Host,
		"--failsafe-inbound", "none", "--failsafe-outbound", "none",
		"--confirm-endpoint", fmt.Sprintf("%s:6443", netnstest.ClientV4), "--confirm-timeout", "2s")
	waitReady(t, node, metav1.ConditionTrue, "Applied")
	before := pair.Host.MustExec("nft", "list", "table", "inet", "nodefw")

	nfw, err := envtesting.GetNodeFirewall(cp.Client, node)
	if err != nil {
		t.Fatal(err)
	}
	nfw.Spec.Rules = append(nfw.Spec.Rules, fwv1.NodeFirewallRule{Policy: "lockout", Mode: fwv1.PolicyModeEnforce, Name: "no-api",
		Chain: fwv1.ChainOutput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 6443}}})
	if err := cp.Client.Update(t.Context(), nfw); err != nil {
		t.Fatal(err)
	}
	waitReady(t, node, metav1.ConditionFalse, "Reverted")
	after := pair.Host.MustExec("nft", "list", "table", "inet", "nodefw")
	if strings.Contains(after, "lockout/no-api") {
		t.Fatalf("the lockout rule is still in the kernel:\n%s", after)
	}
	if stripCounters(before) != stripCounters(after) {
		t.Errorf("the previous ruleset was not restored:\n--- before\n%s\n--- after\n%s", before, after)
	}
	// The node reaches the API server endpoint again.
	netnstest.ExpectTCP(t, pair.Host, netnstest.ClientV4, 6443, netnstest.Accepted)
}

// stripCounters drops packet and byte counts, which traffic changes.
func stripCounters(s string) string {
	var b strings.Builder
	for _, f := range strings.Fields(s) {
		b.WriteString(f)
		b.WriteByte(' ')
	}
	out := b.String()
	for {
		i := strings.Index(out, "counter packets ")
		if i < 0 {
			return out
		}
		j := strings.Index(out[i:], " bytes ")
		k := strings.Index(out[i+j+7:], " ")
		out = out[:i] + "counter" + out[i+j+7+k:]
	}
}
