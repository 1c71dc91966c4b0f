package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
