package faults

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// TestPolicyChurnReachesTheKernel churns policies concurrently — 1,000
// creates, updates and deletes — and then checks every node's kernel: its
// table must be exactly what the resolver computes from the final objects,
// compiled as the node's agent compiles. No update is lost on the way.
func TestPolicyChurnReachesTheKernel(t *testing.T) {
	c := bed.Cluster(t)
	defer c.RestoreBaseline(t)
	ctx := context.Background()
	const (
		policies = 12
		ops      = 1000
		workers  = 8
	)
	name := func(i int) string { return fmt.Sprintf("churn-%02d", i) }
	selectors := []metav1.LabelSelector{
		{},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpExists}}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpDoesNotExist}}},
	}
	// Rules on ports no probe of the baseline uses, so the cluster keeps
	// working while it churns.
	spec := func(r *rand.Rand) fwv1.NodeFirewallPolicySpec {
		s := fwv1.NodeFirewallPolicySpec{NodeSelector: selectors[r.Intn(len(selectors))], Priority: ptr.To(int32(500 + r.Intn(100)))}
		for j := range 1 + r.Intn(5) {
			s.Rules = append(s.Rules, fwv1.Rule{
				Name: fmt.Sprintf("r%d", j), Chain: fwv1.ChainInput, Action: []fwv1.Action{fwv1.ActionAccept, fwv1.ActionDrop, fwv1.ActionReject}[r.Intn(3)],
				Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: int32(40000 + r.Intn(500))}},
			})
		}
		return s
	}
	t.Cleanup(func() {
		for i := range policies {
			_ = c.Client.Delete(ctx, &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: name(i)}})
		}
	})

	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(w)))
			for range ops / workers {
				key := client.ObjectKey{Name: name(r.Intn(policies))}
				p := &fwv1.NodeFirewallPolicy{}
				err := c.Client.Get(ctx, key, p)
				switch {
				case apierrors.IsNotFound(err):
					err = c.Client.Create(ctx, &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: key.Name}, Spec: spec(r)})
				case err == nil && r.Intn(4) == 0:
					err = c.Client.Delete(ctx, p)
				case err == nil:
					p.Spec = spec(r)
					err = c.Client.Update(ctx, p)
				}
				if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && !apierrors.IsAlreadyExists(err) {
					t.Errorf("%s: %v", key.Name, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d operations in %v", ops, time.Since(start).Round(time.Millisecond))

	settled := time.Now()
	c.WaitFor(t, "every kernel holding the resolver's output for the final policies", 90*time.Second, func(ctx context.Context) (bool, error) {
		mismatches, err := c.KernelMismatches(ctx)
		return len(mismatches) == 0, err
	})
	t.Logf("kernels matched the resolver %v after the last operation", time.Since(settled).Round(time.Millisecond))
}
