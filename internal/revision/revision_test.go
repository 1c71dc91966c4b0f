package revision

import (
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

func tcp(name string, port int32) fwv1.Rule {
	return fwv1.Rule{Name: name, Chain: fwv1.ChainInput, Action: fwv1.ActionAccept, Protocol: fwv1.ProtocolTCP, Ports: []fwv1.PortRange{{Port: port}}}
}

func policy(name string, generation int64, rules ...fwv1.Rule) *fwv1.NodeFirewallPolicy {
	return &fwv1.NodeFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: generation},
		Spec:       fwv1.NodeFirewallPolicySpec{Rules: rules},
	}
}

func TestForNamesByPolicyAndHash(t *testing.T) {
	ssh := policy("ssh", 1, tcp("ssh", 22))
	a := For(ssh, "nodefw-system")
	if !strings.HasPrefix(a.Name, "ssh-") || len(a.Name) != len("ssh-")+hashLen {
		t.Errorf("name %q, want ssh- and %d hex digits", a.Name, hashLen)
	}
	want := map[string]string{LabelManagedBy: ManagedBy, LabelPolicy: "ssh", LabelHash: a.Name[len("ssh-"):]}
	if d := cmp.Diff(want, a.Labels); d != "" {
		t.Errorf("labels (-want +got):\n%s", d)
	}
	if a.Namespace != "nodefw-system" || a.Revision != 1 || Policy(a) != "ssh" {
		t.Errorf("namespace %q, revision %d, policy %q", a.Namespace, a.Revision, Policy(a))
	}
	rules, err := Rules(a)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ssh.Spec.Rules, rules); d != "" {
		t.Errorf("rules read back (-want +got):\n%s", d)
	}

	// Another generation with the same rules reuses the revision; other
	// rules, or another policy with the same rules, do not.
	if b := For(policy("ssh", 2, tcp("ssh", 22)), "nodefw-system"); b.Name != a.Name {
		t.Errorf("generation 2 with the same rules is %s, want %s", b.Name, a.Name)
	}
	if b := For(policy("ssh", 3, tcp("ssh", 2222)), "nodefw-system"); b.Name == a.Name {
		t.Errorf("other rules got the same revision %s", b.Name)
	}
	if b := For(policy("ssh2", 1, tcp("ssh", 22)), "nodefw-system"); b.Name[len("ssh2-"):] == a.Name[len("ssh-"):] {
		t.Errorf("another policy got the same hash: %s and %s", b.Name, a.Name)
	}
}

func TestNameOfALongPolicy(t *testing.T) {
	for _, name := range []string{
		strings.Repeat("a", 253),
		strings.Repeat("a", 241) + ".b" + strings.Repeat("c", 10),
		strings.Repeat("a", 241) + "-" + strings.Repeat("c", 11),
	} {
		cr := For(policy(name, 1, tcp("ssh", 22)), "ns")
		if errs := validation.IsDNS1123Subdomain(cr.Name); len(errs) > 0 {
			t.Errorf("name %q: %v", cr.Name, errs)
		}
		if _, ok := cr.Labels[LabelPolicy]; ok {
			t.Errorf("a %d-character policy name is a label value", len(name))
		}
		if Policy(cr) != name {
			t.Errorf("annotation %q, want the policy's name", Policy(cr))
		}
	}
}

func TestExpand(t *testing.T) {
	ssh, web := tcp("ssh", 22), tcp("web", 443)
	revs := map[string][]fwv1.Rule{"a-1": {ssh}, "b-1": {web, ssh}}
	inline := web.NodeRule("c", fwv1.PolicyModeEnforce)
	tests := []struct {
		name    string
		spec    fwv1.NodeFirewallSpec
		want    fwv1.NodeFirewallSpec
		wantErr string
	}{{
		name: "rules inline are left as they are",
		spec: fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{inline}, Policies: []fwv1.PolicyReference{{Name: "c"}}},
		want: fwv1.NodeFirewallSpec{Rules: []fwv1.NodeFirewallRule{inline}, Policies: []fwv1.PolicyReference{{Name: "c"}}},
	}, {
		name: "revisions in the references' order, with their modes",
		spec: fwv1.NodeFirewallSpec{
			DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop},
			Policies: []fwv1.PolicyReference{
				{Name: "b", Generation: 2, Mode: fwv1.PolicyModeAudit, Revision: "b-1"},
				{Name: "a", Generation: 1, Revision: "a-1"},
			},
		},
		want: fwv1.NodeFirewallSpec{
			DefaultActions: fwv1.DefaultActions{Input: fwv1.ChainPolicyDrop},
			Policies: []fwv1.PolicyReference{
				{Name: "b", Generation: 2, Mode: fwv1.PolicyModeAudit, Revision: "b-1"},
				{Name: "a", Generation: 1, Revision: "a-1"},
			},
			Rules: []fwv1.NodeFirewallRule{
				web.NodeRule("b", fwv1.PolicyModeAudit), ssh.NodeRule("b", fwv1.PolicyModeAudit),
				ssh.NodeRule("a", fwv1.PolicyModeEnforce),
			},
		},
	}, {
		name: "a reference without a revision keeps its inline rules in its place",
		spec: fwv1.NodeFirewallSpec{
			Policies: []fwv1.PolicyReference{{Name: "a", Revision: "a-1"}, {Name: "c"}, {Name: "b", Revision: "b-1"}},
			Rules:    []fwv1.NodeFirewallRule{inline},
		},
		want: fwv1.NodeFirewallSpec{
			Policies: []fwv1.PolicyReference{{Name: "a", Revision: "a-1"}, {Name: "c"}, {Name: "b", Revision: "b-1"}},
			Rules: []fwv1.NodeFirewallRule{
				ssh.NodeRule("a", fwv1.PolicyModeEnforce), inline,
				web.NodeRule("b", fwv1.PolicyModeEnforce), ssh.NodeRule("b", fwv1.PolicyModeEnforce),
			},
		},
	}, {
		name:    "a missing revision",
		spec:    fwv1.NodeFirewallSpec{Policies: []fwv1.PolicyReference{{Name: "a", Revision: "a-2"}}},
		wantErr: "ControllerRevision a-2 of policy a is missing",
	}, {
		name: "rules both inline and in a revision",
		spec: fwv1.NodeFirewallSpec{
			Policies: []fwv1.PolicyReference{{Name: "c", Revision: "a-1"}},
			Rules:    []fwv1.NodeFirewallRule{inline},
		},
		wantErr: "policy c names revision a-1 and also has rules in spec.rules",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Expand(tt.spec, revs)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestNames(t *testing.T) {
	spec := fwv1.NodeFirewallSpec{Policies: []fwv1.PolicyReference{{Name: "b", Revision: "b-1"}, {Name: "c"}, {Name: "a", Revision: "a-1"}}}
	if d := cmp.Diff([]string{"b-1", "a-1"}, Names(&spec)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// TestPinFollowedReferences: Pin gives each followed reference the
// generation and revision marked current, keeps the
// others, and refuses a followed policy without a current revision or one
// that also names a generation.
func TestPinFollowedReferences(t *testing.T) {
	cur := Current{Revision: "web-0123456789", Generation: 3}
	staged := fwv1.PolicyReference{Name: "db", Generation: 1, Revision: "db-9876543210"}
	spec := fwv1.NodeFirewallSpec{Policies: []fwv1.PolicyReference{staged, {Name: "web", Follow: true, Mode: fwv1.PolicyModeAudit}}}
	got, err := Pin(spec, map[string]Current{"web": cur})
	if err != nil {
		t.Fatal(err)
	}
	want := []fwv1.PolicyReference{staged, {Name: "web", Follow: true, Mode: fwv1.PolicyModeAudit, Generation: 3, Revision: "web-0123456789"}}
	if d := cmp.Diff(want, got.Policies); d != "" {
		t.Errorf("pinned (-want +got):\n%s", d)
	}
	if !spec.Policies[1].Follow || spec.Policies[1].Revision != "" {
		t.Errorf("Pin changed the spec it was given: %+v", spec.Policies)
	}
	if d := cmp.Diff(map[string]int64{"web": 3}, FollowedGenerations(&got)); d != "" {
		t.Errorf("followed generations (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"db-9876543210", "web-0123456789"}, Names(&got)); d != "" {
		t.Errorf("names (-want +got):\n%s", d)
	}
	if _, err := Pin(spec, nil); err == nil || !strings.Contains(err.Error(), "web") {
		t.Errorf("Pin without a current revision: %v, want an error naming web", err)
	}
	spec.Policies[1].Generation = 2
	if _, err := Pin(spec, map[string]Current{"web": cur}); err == nil {
		t.Errorf("Pin of a followed reference naming a generation: no error")
	}
}

// TestCurrentsMarked: the mark and its removal, as merge patches of a
// revision's metadata, and of two revisions marked for one policy the one
// of the newer generation.
func TestCurrentsMarked(t *testing.T) {
	revisionOf := func(policy, name string, patches ...[]byte) metav1.PartialObjectMetadata {
		cr := metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{LabelManagedBy: ManagedBy}, Annotations: map[string]string{AnnotationPolicy: policy}}}
		for _, p := range patches {
			raw, err := json.Marshal(cr)
			if err != nil {
				t.Fatal(err)
			}
			if raw, err = jsonpatch.MergePatch(raw, p); err != nil {
				t.Fatal(err)
			}
			cr = metav1.PartialObjectMetadata{}
			if err := json.Unmarshal(raw, &cr); err != nil {
				t.Fatal(err)
			}
		}
		return cr
	}
	got := Currents([]metav1.PartialObjectMetadata{
		revisionOf("web", "web-1", MarkCurrent(1)),
		revisionOf("web", "web-2", MarkCurrent(2)),
		revisionOf("db", "db-1", MarkCurrent(4), UnmarkCurrent()),
		revisionOf("dns", "dns-1"),
		revisionOf("ntp", "ntp-1", MarkCurrent(1), UnmarkCurrent(), MarkCurrent(5)),
	})
	want := map[string]Current{"web": {Revision: "web-2", Generation: 2}, "ntp": {Revision: "ntp-1", Generation: 5}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("currents (-want +got):\n%s", d)
	}
	cr := revisionOf("web", "web-2", MarkCurrent(2))
	if d := cmp.Diff(CurrentSelector(), map[string]string{LabelCurrent: cr.Labels[LabelCurrent], LabelManagedBy: cr.Labels[LabelManagedBy]}); d != "" {
		t.Errorf("the selector does not select a marked revision (-selector +labels):\n%s", d)
	}
}
