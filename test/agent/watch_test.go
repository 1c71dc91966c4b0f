package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/agent"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// TestAgentWatchesOnlyItsNode proves that a change to node A's
// NodeFirewall produces no event at node B's agent: the API server filters
// the watch by name.
func TestAgentWatchesOnlyItsNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := agent.CacheOptions("watch-node-b", "nodefw-system")
	opts.Scheme = envtesting.Scheme
	c, err := cache.New(cp.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	inf, err := c.GetInformer(ctx, &fwv1.NodeFirewall{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	record := func(obj any) {
		if nfw, ok := obj.(*fwv1.NodeFirewall); ok {
			mu.Lock()
			seen[nfw.Name]++
			mu.Unlock()
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    record,
		UpdateFunc: func(_, obj any) { record(obj) },
		DeleteFunc: record,
	}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}

	createNFW(t, "watch-node-a", kubeletSpec())
	a, _ := envtesting.GetNodeFirewall(cp.Client, "watch-node-a")
	a.Spec.Rules = nil
	if err := cp.Client.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	createNFW(t, "watch-node-b", kubeletSpec())
	envtesting.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if seen["watch-node-b"] == 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	time.Sleep(time.Second) // time for a stray event to arrive
	mu.Lock()
	defer mu.Unlock()
	if seen["watch-node-a"] != 0 {
		t.Errorf("node B's agent received %d events for node A", seen["watch-node-a"])
	}
	for _, n := range []string{"watch-node-a", "watch-node-b"} {
		_ = cp.Client.Delete(ctx, &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
}
