package main

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/policytest"
	"github.com/nodefw/nodefw/internal/resolve"
)

// TestTraceLive traces on the NodeFirewall an API server holds: the
// samples resolved for a worker, written as the controller writes them.
func TestTraceLive(t *testing.T) {
	env, cfg, err := envtesting.Start("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := envtesting.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	policies, err := policytest.ReadPolicies([]string{samplesDir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}
	nfw := &fwv1.NodeFirewall{
		ObjectMeta: metav1.ObjectMeta{Name: node.Name},
		Spec:       resolve.Resolve(resolve.Input{Policies: policies, Nodes: []corev1.Node{node}}).Nodes[node.Name],
	}
	if err := c.Create(context.Background(), nfw); err != nil {
		t.Fatal(err)
	}
	kubeconfig := writeTemp(t, "kubeconfig", string(env.KubeConfig))
	// clusterClient sets $KUBECONFIG from --kubeconfig; restore it afterwards.
	t.Setenv("KUBECONFIG", "")

	live := []string{"--live", "worker-1", "--kubeconfig", kubeconfig, "--failsafe-inbound", "none"}
	code, tr, stderr := traceJSON(t, "", append(live, "--proto", "tcp", "--from", "192.0.2.1", "--to", "10.0.0.2:31000")...)
	if code != exitAccept || tr.Node != "worker-1" || tr.DecidedBy != "worker/nodeports" || strings.Join(tr.Policies, ",") != "worker,strict-output" {
		t.Errorf("a NodePort: exit code %d, node %q, policies %v, decided by %q\nstderr: %s", code, tr.Node, tr.Policies, tr.DecidedBy, stderr)
	}
	code, tr, stderr = traceJSON(t, "", append(live, "--proto", "tcp", "--from", "192.0.2.1", "--to", "10.0.0.2:6443")...)
	if code != exitDrop || tr.DecidedBy != "default" {
		t.Errorf("the API server port: exit code %d, decided by %q\nstderr: %s", code, tr.DecidedBy, stderr)
	}
	code, _, stderr = traceJSON(t, "", "--live", "worker-9", "--kubeconfig", kubeconfig, "--proto", "tcp", "--from", "192.0.2.1", "--to", "10.0.0.2:22")
	if code != exitError || !strings.Contains(stderr, "reading the NodeFirewall of node worker-9") || !strings.Contains(stderr, "not found") {
		t.Errorf("an unknown node: exit code %d, stderr %q", code, stderr)
	}
}
