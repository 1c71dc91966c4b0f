package resolve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func TestHoldTooLarge(t *testing.T) {
	spec := func(rules int) fwv1.NodeFirewallSpec {
		s := fwv1.NodeFirewallSpec{Policies: []fwv1.PolicyReference{ref("worker", fwv1.PolicyModeEnforce, nil)}}
		for range rules {
			s.Rules = append(s.Rules, resolved("worker", tcp("kubelet", 10250)))
		}
		return s
	}
	obj := func(name string, rules int) *fwv1.NodeFirewall {
		return &fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec(rules)}
	}
	limit := SerializedSize(obj("at", 40))
	tests := []struct {
		name      string
		w         Writes
		wantNames [2][]string // creates, updates kept
		wantHeld  []TooLarge
	}{{
		name:      "exactly at the limit is written",
		w:         Writes{Create: []*fwv1.NodeFirewall{obj("at", 40)}, Update: []*fwv1.NodeFirewall{obj("at", 40)}},
		wantNames: [2][]string{{"at"}, {"at"}},
	}, {
		name: "one byte over is held, the others are written",
		w: Writes{
			Create: []*fwv1.NodeFirewall{obj("at", 40), obj("ove", 40)},
			Update: []*fwv1.NodeFirewall{obj("big", 41), obj("small", 1)},
		},
		wantNames: [2][]string{{"at"}, {"small"}},
		wantHeld: []TooLarge{
			{Node: "ove", Bytes: limit + 1, Limit: limit, Policies: []string{"worker"}},
			{Node: "big", Bytes: SerializedSize(obj("big", 41)), Limit: limit, Policies: []string{"worker"}},
		},
	}}
	names := func(list []*fwv1.NodeFirewall) []string {
		var out []string
		for _, nfw := range list {
			out = append(out, nfw.Name)
		}
		return out
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			held := tc.w.HoldTooLarge(limit)
			if diff := cmp.Diff(tc.wantHeld, held); diff != "" {
				t.Errorf("held (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantNames, [2][]string{names(tc.w.Create), names(tc.w.Update)}); diff != "" {
				t.Errorf("kept creates and updates (-want +got):\n%s", diff)
			}
		})
	}
}
