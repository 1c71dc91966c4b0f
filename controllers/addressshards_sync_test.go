package controllers

import (
	"context"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/addressshard"
	"github.com/nodefw/nodefw/internal/envtesting"
)

// TestShardSync: what the shard reconciler's Write does with the shards
// there are, for a set as the cache gives it.
func TestShardSync(t *testing.T) {
	const ns = "nodefw-system"
	set := func(name string, uid types.UID, gen int64, n int) *fwv1.NodeFirewallAddressSet {
		return &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: name, UID: uid, Generation: gen},
			Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: setFanOutEntries(n)}}
	}
	names := func(crs []*appsv1.ControllerRevision) []string {
		var out []string
		for _, cr := range crs {
			out = append(out, cr.Name)
		}
		return out
	}
	v1 := set("s", "u1", 1, 3000)
	v2 := set("s", "u1", 2, 3001)
	other := set("other", "u9", 1, 10)
	for _, tc := range []struct {
		name     string
		existing []*appsv1.ControllerRevision
		// cached is the set as the cache has it; nil when it is gone.
		cached *fwv1.NodeFirewallAddressSet
		want   []*appsv1.ControllerRevision
	}{
		{"none yet", nil, v1, addressshard.For(v1, ns, 0)},
		{"one entry more: the one shard replaced", addressshard.For(v1, ns, 0), v2, addressshard.For(v2, ns, 4)},
		{"the cache behind the shards: left alone", addressshard.For(v2, ns, 0), v1, addressshard.For(v2, ns, 0)},
		{"created again: the old incarnation's shards replaced",
			addressshard.For(set("s", "u0", 7, 3000), ns, 0), v1, addressshard.For(v1, ns, 0)},
		{"deleted: its shards go, another set's stay",
			slices.Concat(addressshard.For(v1, ns, 0), addressshard.For(other, ns, 0)), nil, addressshard.For(other, ns, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fake.NewClientBuilder().WithScheme(envtesting.Scheme)
			for _, cr := range tc.existing {
				b = b.WithObjects(cr.DeepCopy())
			}
			c := b.Build()
			r := &AddressSetShardReconciler{Client: c, APIReader: c, Namespace: ns, WriteConcurrency: 2}
			if err := r.Write(context.Background(), "s", tc.cached); err != nil {
				t.Fatal(err)
			}
			var list appsv1.ControllerRevisionList
			if err := c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, cr := range list.Items {
				got = append(got, cr.Name)
			}
			slices.Sort(got)
			want := names(tc.want)
			slices.Sort(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("shards (-want +got):\n%s", diff)
			}
		})
	}
}
