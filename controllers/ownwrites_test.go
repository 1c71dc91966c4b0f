package controllers

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestOwnWritesOverlay(t *testing.T) {
	nfw := func(name string, gen int64, rv string) fwv1.NodeFirewall {
		return fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: gen, ResourceVersion: rv}}
	}
	now := time.Unix(1700000000, 0)
	written := func() *ownWrites {
		o := &ownWrites{}
		updated, created := nfw("a", 3, "30"), nfw("new", 1, "31")
		o.record([]*fwv1.NodeFirewall{&updated, &created}, now)
		return o
	}
	versions := func(list []fwv1.NodeFirewall) []string {
		var out []string
		for _, n := range list {
			out = append(out, n.Name+"@"+n.ResourceVersion)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		cached []fwv1.NodeFirewall
		at     time.Time
		want   []string
	}{{
		name:   "the cache lags: the written copies stand in, a created one is added",
		cached: []fwv1.NodeFirewall{nfw("a", 2, "20"), nfw("b", 1, "21")},
		at:     now.Add(time.Second),
		want:   []string{"a@30", "b@21", "new@31"},
	}, {
		name:   "the cache caught up, with a newer status: its copy",
		cached: []fwv1.NodeFirewall{nfw("a", 3, "35"), nfw("b", 1, "21"), nfw("new", 1, "36")},
		at:     now.Add(time.Second),
		want:   []string{"a@35", "b@21", "new@36"},
	}, {
		name:   "too long without the watch: the cache is trusted",
		cached: []fwv1.NodeFirewall{nfw("a", 2, "20")},
		at:     now.Add(ownWritesTTL + time.Second),
		want:   []string{"a@20"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			o := written()
			if diff := cmp.Diff(tc.want, versions(o.overlay(tc.cached, tc.at))); diff != "" {
				t.Errorf("overlay (-want +got):\n%s", diff)
			}
		})
	}
	o := written()
	o.forget([]string{"new"})
	if diff := cmp.Diff([]string{"a@30"}, versions(o.overlay([]fwv1.NodeFirewall{nfw("a", 2, "20")}, now))); diff != "" {
		t.Errorf("after forgetting new (-want +got):\n%s", diff)
	}
}

func TestOwnStatusesOverlay(t *testing.T) {
	policy := func(uid string, gen int64, rv string, applied int32) fwv1.NodeFirewallPolicy {
		return fwv1.NodeFirewallPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "web", UID: types.UID(uid), Generation: gen, ResourceVersion: rv},
			Status:     fwv1.NodeFirewallPolicyStatus{ObservedGeneration: gen, AppliedNodes: applied},
		}
	}
	now := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		name   string
		cached fwv1.NodeFirewallPolicy
		at     time.Time
		want   string
	}{
		{"the cache lags: the written status stands in", policy("u1", 2, "40", 0), now.Add(time.Second), "50 applied 3"},
		{"the cache caught up: its copy", policy("u1", 2, "50", 3), now.Add(time.Second), "50 applied 3"},
		{"written after: the cache's copy", policy("u1", 2, "60", 1), now.Add(time.Second), "60 applied 1"},
		{"a new spec: the cache's copy", policy("u1", 3, "45", 0), now.Add(time.Second), "45 applied 0"},
		{"deleted and created again: the cache's copy", policy("u2", 2, "41", 0), now.Add(time.Second), "41 applied 0"},
		{"too long without the watch: the cache's copy", policy("u1", 2, "40", 0), now.Add(ownWritesTTL + time.Second), "40 applied 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &ownStatuses{}
			written := policy("u1", 2, "50", 3)
			o.record(&written, now)
			list := []fwv1.NodeFirewallPolicy{tc.cached}
			o.overlay(list, tc.at)
			got := fmt.Sprintf("%s applied %d", list[0].ResourceVersion, list[0].Status.AppliedNodes)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("overlay (-want +got):\n%s", diff)
			}
		})
	}
	o := &ownStatuses{}
	written := policy("u1", 2, "50", 3)
	o.record(&written, now)
	o.forget("web")
	list := []fwv1.NodeFirewallPolicy{policy("u1", 2, "40", 0)}
	o.overlay(list, now)
	if list[0].ResourceVersion != "40" {
		t.Errorf("after a refused write the overlay still stands in: resource version %s", list[0].ResourceVersion)
	}
}
