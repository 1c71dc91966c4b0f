package resolve

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// TestOversizedRevisionHoldsItsPolicy: a policy whose revision is over the
// limit, or was refused by the API server, is not given a revision; every
// node keeps the generation of it that it has (none if it has none), the
// other policies move on, and the policy is told why with the byte count
// and the limit.
func TestOversizedRevisionHoldsItsPolicy(t *testing.T) {
	const ns = "nodefw-system"
	many := make([]fwv1.Rule, 200)
	for i := range many {
		many[i] = tcp(fmt.Sprintf("r%03d", i), int32(1000+i))
	}
	big := func(gen int64, rules ...fwv1.Rule) fwv1.NodeFirewallPolicy {
		p := policy("big", 100, metav1.LabelSelector{}, withRules(rules...))
		p.Generation = gen
		return p
	}
	other := policy("other", 200, metav1.LabelSelector{}, withRules(tcp("web", 443)))
	nodes := []corev1.Node{node("w1", nil), node("w2", nil)}
	// w1 has generation 1 of big; w2 is new.
	first := Resolve(Input{Policies: []fwv1.NodeFirewallPolicy{big(1, tcp("ssh", 22))}, Nodes: nodes[:1], RevisionNamespace: ns})
	w1 := fwv1.NodeFirewall{ObjectMeta: metav1.ObjectMeta{Name: "w1"}, Spec: first.Nodes["w1"]}
	kept := first.Nodes["w1"].Policies[0]
	small := RevisionSize(first.Revisions[0])
	// The nodes follow big, its generation 1 marked current.
	held := first.Current["big"]

	for _, tc := range []struct {
		name    string
		limit   int
		refused func(rev string) map[string]int
		message string
	}{{
		name:    "over the controller's limit",
		limit:   4096,
		message: "bytes, over the limit of 4096 bytes; every node keeps the generation of the policy it has",
	}, {
		name:    "refused by the API server",
		limit:   DefaultRequestLimit,
		refused: func(rev string) map[string]int { return map[string]int{rev: 123456} },
		message: fmt.Sprintf("is 123456 bytes, refused by the API server as too large (the controller's limit is %d bytes)", DefaultRequestLimit),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Policies: []fwv1.NodeFirewallPolicy{big(2, many...), other}, Nodes: nodes, Current: []fwv1.NodeFirewall{w1},
				RevisionNamespace: ns, RevisionLimit: tc.limit, CurrentRevisions: first.Current}
			if tc.refused != nil {
				in.RefusedRevisions = tc.refused(Resolve(in).Revisions[0].Name)
			}
			got := Resolve(in)
			var names []string
			for _, cr := range got.Revisions {
				names = append(names, cr.Name)
			}
			if len(names) != 1 || !strings.HasPrefix(names[0], "other-") {
				t.Errorf("revisions to write %v, want other's alone", names)
			}
			if diff := cmp.Diff([]fwv1.PolicyReference{kept, got.Nodes["w2"].Policies[0]}, got.Nodes["w1"].Policies); diff != "" {
				t.Errorf("w1 keeps generation 1 of big, and gets other (-want +got):\n%s", diff)
			}
			if cur := got.Current["big"]; cur != held {
				t.Errorf("big's current revision %+v, want %+v, which its nodes keep following", cur, held)
			}
			if ps := got.Nodes["w2"].Policies; len(ps) != 1 || ps[0].Name != "other" {
				t.Errorf("w2 lists %+v, want other alone", ps)
			}
			var problems []Problem
			for _, pr := range got.Problems {
				if pr.Reason == fwv1.ReasonRevisionTooLarge {
					problems = append(problems, pr)
				}
			}
			if len(problems) != 1 || problems[0].Policy != "big" || !strings.Contains(problems[0].Message, tc.message) {
				t.Errorf("problems %+v, want one on big saying %q", problems, tc.message)
			}
		})
	}
	// Under the limit nothing is held.
	got := Resolve(Input{Policies: []fwv1.NodeFirewallPolicy{big(1, tcp("ssh", 22))}, Nodes: nodes, RevisionNamespace: ns, RevisionLimit: small})
	if len(got.Problems) != 0 || len(got.Revisions) != 1 {
		t.Errorf("a revision of exactly the limit: problems %+v, %d revisions", got.Problems, len(got.Revisions))
	}
}
