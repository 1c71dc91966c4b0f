package testbed

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodefw/nodefw/internal/envtesting"
)

// TestControlPlaneRestart checks that the API server can be stopped and
// started again with the same certificates, port and data.
func TestControlPlaneRestart(t *testing.T) {
	cp, err := StartControlPlane(envtesting.CRDDir(filepath.Join("..", "..")), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The written kubeconfig works for an outside client.
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := envtesting.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{}
	node.Name = "restart-node"
	if err := c.Create(ctx, node); err != nil {
		t.Fatal(err)
	}

	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if err := c.Get(short, client.ObjectKeyFromObject(node), &corev1.Node{}); err == nil {
		t.Fatal("the API server still answers after StopAPIServer")
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(node), &corev1.Node{}); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
