package agent

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/netnstest"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// metric returns the value of the first sample of a metric whose line
// matches pattern (a regexp over `name{labels}`).
func metric(t *testing.T, url, pattern string) (float64, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^` + pattern + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0, fmt.Errorf("no sample matching %s", pattern)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// TestAgentMetrics scrapes a running agent serving plain HTTP, as it does
// only with --metrics-secure=false: applies, drift repairs and the
// per-rule packet counters of an audit-mode rule, whose would-be drops are
// only counted.
func TestAgentMetrics(t *testing.T) {
	pair := netnstest.NewTestPair(t)
	srv, err := pair.Host.ServeTCP(8080)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const node = "metrics-node"
	spec := kubeletSpec()
	spec.Rules = append(spec.Rules, fwv1.NodeFirewallRule{Policy: "audit", Mode: fwv1.PolicyModeAudit, Name: "drop-web",
		Chain: fwv1.ChainInput, Action: fwv1.ActionDrop, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: 8080}}})
	spec.DefaultActions.Input = fwv1.ChainPolicyAccept
	createNFW(t, node, spec)
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", freePort(t))
	startAgent(t, node, pair.Host, "--metrics-bind-address", url[len("http://"):len(url)-len("/metrics")], "--metrics-secure=false")
	waitReady(t, node, metav1.ConditionTrue, "Applied")

	if v, err := metric(t, url, `nodefw_agent_applies_total`); err != nil || v < 1 {
		t.Errorf("nodefw_agent_applies_total = %v (%v), want >= 1", v, err)
	}
	if v, err := metric(t, url, `nodefw_agent_rules_programmed`); err != nil || v < 2 {
		t.Errorf("nodefw_agent_rules_programmed = %v (%v), want >= 2", v, err)
	}
	// Audit mode: the connections go through, and the rule counts them.
	for range 3 {
		netnstest.ExpectTCP(t, pair.Client, netnstest.HostV4, 8080, netnstest.Accepted)
	}
	envtesting.Eventually(t, 10*time.Second, func() error {
		v, err := metric(t, url, `nodefw_agent_rule_packets_total\{chain="input",rule="audit/drop-web"\}`)
		if err != nil {
			return err
		}
		if v < 3 {
			return fmt.Errorf("audit rule counted %v packets, want >= 3", v)
		}
		return nil
	})

	pair.Host.MustExec("nft", "delete", "table", "inet", "nodefw")
	envtesting.Eventually(t, 10*time.Second, func() error {
		v, err := metric(t, url, `nodefw_agent_drift_repairs_total`)
		if err != nil {
			return err
		}
		if v < 1 {
			return fmt.Errorf("nodefw_agent_drift_repairs_total = %v", v)
		}
		return nil
	})
	if v, err := metric(t, url, `nodefw_agent_apply_duration_seconds_count`); err != nil || v < 2 {
		t.Errorf("nodefw_agent_apply_duration_seconds_count = %v (%v), want >= 2", v, err)
	}
}
