package controllers

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/envtesting"
	"github.com/nodefw/nodefw/internal/resolve"
)

// TestConcurrentChurnConverges runs 1,000 concurrent creates, updates and
// deletes of policies and checks that every node's NodeFirewall ends equal
// to the resolver's output for the final objects: no update is lost.
func TestConcurrentChurnConverges(t *testing.T) {
	const (
		nodes    = 6
		policies = 20
		ops      = 1000
		workers  = 8
	)
	ctx := context.Background()
	label := "t9-churn"
	for i := range nodes {
		newNode(t, fmt.Sprintf("t9-node-%d", i), map[string]string{label: "yes", "t9-zone": fmt.Sprint(i % 3)})
	}
	name := func(i int) string { return fmt.Sprintf("t9-p%02d", i) }
	t.Cleanup(func() {
		for i := range policies {
			_ = k8sClient.Delete(ctx, &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: name(i)}})
		}
	})
	spec := func(r *rand.Rand) fwv1.NodeFirewallPolicySpec {
		s := fwv1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{label: "yes"}},
			Priority:     ptr.To(int32(1 + r.Intn(50))),
		}
		if r.Intn(2) == 0 {
			s.NodeSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "t9-zone", Operator: metav1.LabelSelectorOpIn, Values: []string{fmt.Sprint(r.Intn(3))}}}
		}
		for j := range 1 + r.Intn(4) {
			s.Rules = append(s.Rules, tcpRule(fmt.Sprintf("r%d", j), int32(1000+r.Intn(60000))))
		}
		if r.Intn(3) == 0 {
			s.DefaultActions = &fwv1.DefaultActions{Input: []fwv1.ChainPolicy{fwv1.ChainPolicyAccept, fwv1.ChainPolicyDrop}[r.Intn(2)]}
		}
		return s
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(w)))
			for range ops / workers {
				p := &fwv1.NodeFirewallPolicy{}
				key := client.ObjectKey{Name: name(r.Intn(policies))}
				err := k8sClient.Get(ctx, key, p)
				switch {
				case apierrors.IsNotFound(err):
					p = &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: key.Name}, Spec: spec(r)}
					err = k8sClient.Create(ctx, p)
				case err == nil && r.Intn(4) == 0:
					err = k8sClient.Delete(ctx, p)
				case err == nil:
					p.Spec = spec(r)
					err = k8sClient.Update(ctx, p)
				}
				// Conflicts and races between workers are part of the churn.
				if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && !apierrors.IsAlreadyExists(err) {
					t.Errorf("%s: %v", key.Name, err)
				}
			}
		}()
	}
	wg.Wait()

	envtesting.Eventually(t, 60*time.Second, func() error {
		var ps fwv1.NodeFirewallPolicyList
		var ns corev1.NodeList
		if err := k8sClient.List(ctx, &ps); err != nil {
			return err
		}
		if err := k8sClient.List(ctx, &ns); err != nil {
			return err
		}
		want := resolve.Resolve(resolve.Input{Policies: ps.Items, Nodes: ns.Items, RevisionNamespace: revisionNamespace})
		for i := range nodes {
			n := fmt.Sprintf("t9-node-%d", i)
			nfw, err := envtesting.GetNodeFirewall(k8sClient, n)
			if err != nil {
				return err
			}
			if diff := cmp.Diff(want.Nodes[n], nfw.Spec); diff != "" {
				return fmt.Errorf("NodeFirewall %s differs from the resolver (-want +got):\n%s", n, diff)
			}
		}
		return nil
	})
}
