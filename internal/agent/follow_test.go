package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/revision"
)

// TestFollowedPolicyAppliesItsCurrentRevision: a NodeFirewall that follows
// a policy gets the rules of the revision labelled current, reports the
// generation applied, and moves to the next revision labelled without a
// change of the NodeFirewall; a policy with none labelled is reported and
// leaves the kernel alone, and one whose label goes away keeps its rules.
func TestFollowedPolicyAppliesItsCurrentRevision(t *testing.T) {
	ctx := context.Background()
	const ns = "nodefw-system"
	r, fw, c := setup(t, fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{kubelet()},
		Policies: []fwv1.PolicyReference{{Name: "web", Follow: true}}})
	r.Revisions = &Revisions{Reader: c, Namespace: ns}

	// No revision marked yet: refused with a reason, the kernel untouched.
	err := reconcileOnce(t, r)
	if err == nil || !strings.Contains(err.Error(), "has no current revision") {
		t.Fatalf("error %v, want the policy without a current revision", err)
	}
	if fw.applies != 0 {
		t.Errorf("the kernel was written %d times", fw.applies)
	}
	if st := get(t, c).Status; !strings.Contains(st.LastError, "web") {
		t.Errorf("status %+v, want the followed policy in the last error", st)
	}

	rule := func(name string, port int32) fwv1.Rule {
		return fwv1.Rule{Name: name, Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: port}}}
	}
	web := &fwv1.NodeFirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	revisionOf := func(gen int64, rules ...fwv1.Rule) string {
		p := web.DeepCopy()
		p.Generation, p.Spec.Rules = gen, rules
		cr := revision.For(p, ns)
		if err := c.Create(ctx, cr); err != nil {
			t.Fatal(err)
		}
		return cr.Name
	}
	patch := func(name string, body []byte) {
		cr := revision.Metadata()
		cr.Name, cr.Namespace = name, ns
		if err := c.Patch(ctx, cr, client.RawPatch(types.MergePatchType, body)); err != nil {
			t.Fatal(err)
		}
	}
	first := revisionOf(1, rule("ssh", 22))
	second := revisionOf(2, rule("ssh", 22), rule("web", 443))
	// The failsafes come on top of the NodeFirewall's own rules.
	base := -1
	for _, step := range []struct {
		gen   int64
		mark  func()
		rules int
	}{
		{1, func() { patch(first, revision.MarkCurrent(1)) }, 2},
		// The next marked, then the last unmarked, as the controller does.
		{2, func() { patch(second, revision.MarkCurrent(2)); patch(first, revision.UnmarkCurrent()) }, 3},
	} {
		step.mark()
		if err := reconcileOnce(t, r); err != nil {
			t.Fatal(err)
		}
		nfw := get(t, c)
		if base < 0 {
			base = fw.committed.RuleCount() - step.rules
		}
		step.rules += base
		if d := cmp.Diff(map[string]int64{"web": step.gen}, nfw.Status.PolicyGenerations); d != "" {
			t.Errorf("generation %d: policy generations (-want +got):\n%s", step.gen, d)
		}
		if c := ready(nfw); c.Status != metav1.ConditionTrue || nfw.Status.RuleCount != int32(step.rules) {
			t.Errorf("generation %d: Ready %+v with %d rules, want True with %d", step.gen, c, nfw.Status.RuleCount, step.rules)
		}
		if got := fw.committed.RuleCount(); got != step.rules {
			t.Errorf("generation %d: %d rules committed, want %d", step.gen, got, step.rules)
		}
	}
	applies := fw.applies
	// Nothing new: nothing written.
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if fw.applies != applies {
		t.Errorf("an unchanged revision was applied again")
	}
	// No revision marked any more (the policy deleted, its NodeFirewall
	// not yet rewritten): the one last pinned stays.
	patch(second, revision.UnmarkCurrent())
	if err := reconcileOnce(t, r); err != nil {
		t.Fatal(err)
	}
	if st := get(t, c).Status; fw.applies != applies || st.PolicyGenerations["web"] != 2 {
		t.Errorf("a followed policy without a mark changed the ruleset or its status: %+v", st)
	}
}
