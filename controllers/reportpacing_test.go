package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestReportWait(t *testing.T) {
	var p passPacing
	now := time.Now()
	if w := p.reportWait(now); w != 0 {
		t.Errorf("before any pass: wait %v, want 0", w)
	}
	for _, tc := range []struct {
		took, after, want time.Duration
	}{
		{0, 0, reportPassGap},
		{time.Millisecond, reportPassGap / 4, reportPassGap * 3 / 4},
		{0, reportPassGap, 0},
		{0, 2 * reportPassGap, 0},
		// A longer pass: as long again.
		{3 * reportPassGap, reportPassGap, 2 * reportPassGap},
		{3 * reportPassGap, 3 * reportPassGap, 0},
	} {
		p.ended(now.Add(-tc.took), now)
		if w := p.reportWait(now.Add(tc.after)); w != tc.want {
			t.Errorf("a report %v after a pass of %v: wait %v, want %v", tc.after, tc.took, w, tc.want)
		}
	}
}

func TestOnlyStatusChanged(t *testing.T) {
	base := &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: "n1", Generation: 2, Finalizers: []string{fwv1.AgentFinalizer}}}
	for _, tc := range []struct {
		name   string
		change func(*fwv1.NodeFirewall)
		want   bool
	}{
		{"a report", func(n *fwv1.NodeFirewall) { n.Status.ObservedGeneration = 2 }, true},
		{"a new generation", func(n *fwv1.NodeFirewall) { n.Generation = 3 }, false},
		{"the agent's finalizer gone", func(n *fwv1.NodeFirewall) { n.Finalizers = nil }, false},
		{"deleted", func(n *fwv1.NodeFirewall) { n.DeletionTimestamp = &metav1.Time{Time: time.Now()} }, false},
		{"labelled", func(n *fwv1.NodeFirewall) { n.Labels = map[string]string{"a": "b"} }, false},
	} {
		cur := base.DeepCopy()
		tc.change(cur)
		if got := onlyStatusChanged(base, cur); got != tc.want {
			t.Errorf("%s: onlyStatusChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}
