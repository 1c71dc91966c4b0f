package controllers

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// eventHold holds back, once armed, the next watch event that modifies one
// named object, and every event behind it: the controller's cache lags
// the API server for that long, as an informer does under load or after
// a restart.
type eventHold struct {
	mu    sync.Mutex
	name  string
	delay time.Duration
	fired bool
}

// heldEvents is the suite manager's hold; NewInformer puts it on every watch.
var heldEvents = &eventHold{}

// arm holds the next modification of the object called name for delay.
func (h *eventHold) arm(name string, delay time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.name, h.delay, h.fired = name, delay, false
}

// take returns how long to hold ev, and disarms when it is the one.
func (h *eventHold) take(ev watch.Event) time.Duration {
	if ev.Type != watch.Modified {
		return 0
	}
	m, ok := ev.Object.(metav1.Object)
	if !ok {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.name == "" || m.GetName() != h.name {
		return 0
	}
	h.name, h.fired = "", true
	return h.delay
}

func (h *eventHold) hasFired() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fired
}

// newInformer is cache.Options.NewInformer: the default informer, its
// watches passed through the hold.
func (h *eventHold) newInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	if l, ok := lw.(*toolscache.ListWatch); ok && l.WatchFuncWithContext != nil {
		held := *l
		inner := l.WatchFuncWithContext
		held.WatchFuncWithContext = func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := inner(ctx, opts)
			if err != nil {
				return nil, err
			}
			return h.wrap(w), nil
		}
		lw = &held
	}
	return toolscache.NewSharedIndexInformer(lw, obj, resync, indexers)
}

// heldWatch forwards a watch's events in order, holding back the armed one.
type heldWatch struct {
	inner watch.Interface
	out   chan watch.Event
	stop  chan struct{}
	once  sync.Once
}

func (h *eventHold) wrap(inner watch.Interface) watch.Interface {
	w := &heldWatch{inner: inner, out: make(chan watch.Event), stop: make(chan struct{})}
	go func() {
		defer close(w.out)
		for {
			var ev watch.Event
			var ok bool
			select {
			case ev, ok = <-inner.ResultChan():
				if !ok {
					return
				}
			case <-w.stop:
				return
			}
			if d := h.take(ev); d > 0 {
				select {
				case <-time.After(d):
				case <-w.stop:
					return
				}
			}
			select {
			case w.out <- ev:
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

func (w *heldWatch) ResultChan() <-chan watch.Event { return w.out }

func (w *heldWatch) Stop() {
	w.once.Do(func() { close(w.stop) })
	w.inner.Stop()
}

// TestStatusWrittenWhileTheCacheLags reproduces the lost policy status:
// the controller writes a policy's status, and before its cache has seen
// that write the status to compute goes back to what the cache still
// holds. The resolve then finds nothing to write; the cache catching up
// must resolve again, or the stored status stays wrong (here "applied 0"
// with the node's kernel right) until the next periodic resolve.
//
// The node reports a failure and then success again; the policy's status
// write for the failure reaches the controller's cache only after the
// success was resolved (its watch event is held back for holdFor).
func TestStatusWrittenWhileTheCacheLags(t *testing.T) {
	const (
		node, policy = "t20-node", "t20-policy"
		holdFor      = 2 * time.Second
	)
	newNode(t, node, map[string]string{"t20": "yes"})
	newPolicy(t, &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policy},
		Spec: fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"t20": "yes"}},
			Rules:        []fwv1.Rule{tcpRule("ssh", 22)},
		},
	})
	expectRules(t, node, []string{policy + "/ssh"})
	ack(t, node, true)
	applied := wantStatus{matched: 1, applied: 1, ready: metav1.ConditionTrue, reason: fwv1.ReasonApplied}
	expectStatus(t, policy, applied)
	settle(t)

	heldEvents.arm(policy, holdFor)
	t.Cleanup(func() { heldEvents.arm("", 0) })
	ack(t, node, false)
	// The failure is in the stored status; the controller's cache has not
	// seen that write yet.
	start := time.Now()
	for {
		p, err := getPolicy(policy)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.FailedNodes == 1 {
			break
		}
		if time.Since(start) > timeout {
			t.Fatalf("the failure never reached the policy's status: %+v", p.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Its watch event reaches the hold a moment after the write.
	for !heldEvents.hasFired() {
		if time.Since(start) > holdFor/2 {
			t.Fatal("the status write's watch event was not held back: the fault was not injected")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if time.Since(start) > holdFor/2 {
		t.Fatalf("the failure took %s to show; the success must come while the event is held (%s)", time.Since(start), holdFor)
	}
	ack(t, node, true)
	took := envtesting.Eventually(t, timeout, func() error {
		p, err := getPolicy(policy)
		if err != nil {
			return err
		}
		got := wantStatus{matched: p.Status.MatchedNodes, applied: p.Status.AppliedNodes, failed: p.Status.FailedNodes}
		if diff := cmp.Diff(wantStatus{matched: 1, applied: 1}, got, cmp.AllowUnexported(wantStatus{})); diff != "" {
			return fmt.Errorf("policy %s still reads the failure (-want +got):\n%s", policy, diff)
		}
		return nil
	})
	t.Logf("status right again %s after the node's success (event held %s)", took.Round(time.Millisecond), holdFor)
	expectStatus(t, policy, applied)
}

// settle waits until no policy or NodeFirewall has changed for a second,
// so that other tests' leftovers trigger no resolve.
func settle(t *testing.T) {
	t.Helper()
	versions := func() map[string]string {
		out := map[string]string{}
		var ps fwv1.NodeFirewallPolicyList
		var ns fwv1.NodeFirewallList
		if err := k8sClient.List(context.Background(), &ps); err != nil {
			t.Fatal(err)
		}
		if err := k8sClient.List(context.Background(), &ns); err != nil {
			t.Fatal(err)
		}
		for _, p := range ps.Items {
			out["nfp/"+p.Name] = p.ResourceVersion
		}
		for _, n := range ns.Items {
			out["nfw/"+n.Name] = n.ResourceVersion
		}
		return out
	}
	envtesting.Eventually(t, timeout, func() error {
		before := versions()
		time.Sleep(time.Second)
		if diff := cmp.Diff(before, versions()); diff != "" {
			return fmt.Errorf("cluster still settling: %s", diff)
		}
		return nil
	})
}
