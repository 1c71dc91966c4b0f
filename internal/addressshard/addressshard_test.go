package addressshard

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	fwv1 "github.com/nodefw/nodefw/api/v1alpha1"
)

// entries are n distinct addresses of both families.
func entries(n int) []fwv1.AddressSetEntry {
	out := make([]fwv1.AddressSetEntry, n)
	for i := range out {
		if i%2 == 0 {
			out[i] = fwv1.AddressSetEntry(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		} else {
			out[i] = fwv1.AddressSetEntry(fmt.Sprintf("2001:db8::%x/128", i))
		}
	}
	return out
}

func set(name string, gen int64, addrs []fwv1.AddressSetEntry) *fwv1.NodeFirewallAddressSet {
	return &fwv1.NodeFirewallAddressSet{ObjectMeta: metav1.ObjectMeta{Name: name, UID: "uid-1", Generation: gen},
		Spec: fwv1.NodeFirewallAddressSetSpec{Addresses: addrs}}
}

func names(crs []*appsv1.ControllerRevision) []string {
	out := make([]string, len(crs))
	for i, cr := range crs {
		out[i] = cr.Name
	}
	return out
}

func refs(t *testing.T, crs []*appsv1.ControllerRevision) []Ref {
	t.Helper()
	out := make([]Ref, len(crs))
	for i, cr := range crs {
		r, ok := RefOf(cr)
		if !ok {
			t.Fatalf("RefOf(%s) is not a shard: %+v", cr.Name, cr.ObjectMeta)
		}
		out[i] = r
	}
	return out
}

// contents are the entries of shards, concatenated in order.
func contents(t *testing.T, crs []*appsv1.ControllerRevision) []fwv1.AddressSetEntry {
	t.Helper()
	var out []fwv1.AddressSetEntry
	for _, cr := range crs {
		e, err := Entries(cr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e...)
	}
	return out
}

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		n, current, want int
	}{
		{0, 0, 1},
		{1, 0, 1},
		{PerShard, 0, 1},
		{PerShard + 1, 0, 2},
		{50000, 0, 64},
		{60000, 0, 64},
		{64001, 0, 128},
		// Kept while each shard holds a quarter to twice PerShard.
		{PerShard + 1, 1, 1},
		{2 * PerShard, 1, 1},
		{2*PerShard + 1, 1, 4},
		{64001, 64, 64},
		{128000, 64, 64},
		{128001, 64, 256},
		{16001, 64, 64},
		{16000, 64, 16},
		{0, 2, 1},
		// Not a count For makes: computed afresh.
		{5000, 3, 8},
	} {
		if got := Count(tc.n, tc.current); got != tc.want {
			t.Errorf("Count(%d, %d) = %d, want %d", tc.n, tc.current, got, tc.want)
		}
	}
}

func TestForHoldsTheSet(t *testing.T) {
	all := entries(5000)
	crs := For(set("blocklist", 3, all), "nodefw-system", 0)
	if len(crs) != 8 {
		t.Fatalf("%d shards, want 8", len(crs))
	}
	got := contents(t, crs)
	if diff := cmp.Diff(slices.Sorted(slices.Values(all)), slices.Sorted(slices.Values(got))); diff != "" {
		t.Errorf("shards' entries (-want +got):\n%s", diff)
	}
	for i, cr := range crs {
		n := len(contents(t, crs[i:i+1]))
		if n < PerShard/2 || n > PerShard {
			t.Errorf("shard %d holds %d entries of 5,000 in 8", i, n)
		}
		want := Ref{Name: cr.Name, Set: "blocklist", UID: "uid-1", Generation: 3, K: 8, Index: i}
		if diff := cmp.Diff(want, refs(t, crs[i:i+1])[0]); diff != "" {
			t.Errorf("shard %d (-want +got):\n%s", i, diff)
		}
		if cr.Namespace != "nodefw-system" || cr.Revision != 3 || len(cr.OwnerReferences) != 1 || cr.OwnerReferences[0].UID != "uid-1" {
			t.Errorf("shard %d: %+v, revision %d", i, cr.ObjectMeta, cr.Revision)
		}
		if !Selector().Matches(labels.Set(cr.Labels)) {
			t.Errorf("the selector does not select shard %d", i)
		}
	}
}

// TestOneEntryChangesOneShard: adding or removing an entry rewrites the
// one shard it belongs to; the others keep their names.
func TestOneEntryChangesOneShard(t *testing.T) {
	all := entries(50000)
	before := For(set("blocklist", 1, all), "ns", 0)
	for _, tc := range []struct {
		name  string
		addrs []fwv1.AddressSetEntry
	}{
		{"added", append(slices.Clone(all), "203.0.113.7")},
		{"removed", slices.Delete(slices.Clone(all), 777, 778)},
		{"same address written otherwise", append(slices.Clone(all[:100]), append([]fwv1.AddressSetEntry{"10.0.0.100/32"}, all[101:]...)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after := For(set("blocklist", 2, tc.addrs), "ns", len(before))
			if len(after) != len(before) {
				t.Fatalf("%d shards, then %d", len(before), len(after))
			}
			var changed []int
			for i := range after {
				if after[i].Name != before[i].Name {
					changed = append(changed, i)
				}
			}
			if len(changed) != 1 {
				t.Fatalf("shards %v changed, want one", changed)
			}
			if got := after[changed[0]].Revision; got != 2 {
				t.Errorf("the new shard is of generation %d, want 2", got)
			}
		})
	}
}

func TestForNames(t *testing.T) {
	long := strings.Repeat("a", 300)
	a := For(set(long, 1, entries(10)), "ns", 0)
	if errs := validation.IsDNS1123Subdomain(a[0].Name); len(errs) > 0 {
		t.Errorf("name %q: %v", a[0].Name, errs)
	}
	if v := a[0].Labels[LabelSet]; len(validation.IsValidLabelValue(v)) > 0 {
		t.Errorf("label value %q is not valid", v)
	}
	// A set of another name or incarnation with the same entries has
	// shards of its own.
	other := set("b", 1, entries(10))
	b := For(other, "ns", 0)
	other.UID = "uid-2"
	c := For(other, "ns", 0)
	if a[0].Name == b[0].Name || b[0].Name == c[0].Name {
		t.Errorf("shared shard names: %s %s %s", a[0].Name, b[0].Name, c[0].Name)
	}
	if empty := For(set("empty", 1, nil), "ns", 0); len(empty) != 1 || len(contents(t, empty)) != 0 {
		t.Errorf("an empty set: %d shards", len(empty))
	}
}

func TestRefOfRefuses(t *testing.T) {
	good := For(set("s", 1, entries(1)), "ns", 0)[0]
	for _, tc := range []struct {
		name   string
		change func(cr *appsv1.ControllerRevision)
	}{
		{"no set annotation", func(cr *appsv1.ControllerRevision) { delete(cr.Annotations, AnnotationSet) }},
		{"label of another set", func(cr *appsv1.ControllerRevision) { cr.Labels[LabelSet] = SetHash("other") }},
		{"index past K", func(cr *appsv1.ControllerRevision) { cr.Labels[LabelShard] = "1" }},
		{"no K", func(cr *appsv1.ControllerRevision) { delete(cr.Labels, LabelShards) }},
		{"no generation", func(cr *appsv1.ControllerRevision) { delete(cr.Annotations, AnnotationGeneration) }},
	} {
		cr := good.DeepCopy()
		tc.change(cr)
		if r, ok := RefOf(cr); ok {
			t.Errorf("%s: RefOf = %+v, want not a shard", tc.name, r)
		}
	}
}

func ref(name string, gen int64, k, i int) Ref {
	return Ref{Name: name, Set: "s", Generation: gen, K: k, Index: i}
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		name string
		refs []Ref
		want []string
	}{
		{"none", nil, nil},
		{"one shard", []Ref{ref("a", 1, 1, 0)}, []string{"a"}},
		{"in index order", []Ref{ref("c", 1, 4, 2), ref("a", 1, 4, 0), ref("d", 1, 4, 3), ref("b", 1, 4, 1)}, []string{"a", "b", "c", "d"}},
		{"incomplete group ignored", []Ref{ref("a", 1, 4, 0), ref("b", 1, 4, 1), ref("d", 1, 4, 3)}, nil},
		{"mid-update: the newer of one index", []Ref{ref("a", 1, 2, 0), ref("b", 1, 2, 1), ref("b2", 2, 2, 1)}, []string{"a", "b2"}},
		{"mid-update, listed the other way", []Ref{ref("b2", 2, 2, 1), ref("b", 1, 2, 1), ref("a", 1, 2, 0)}, []string{"a", "b2"}},
		{"growing: the new group incomplete", []Ref{ref("a", 1, 1, 0), ref("n0", 2, 2, 0)}, []string{"a"}},
		{"growing: the new group complete", []Ref{ref("a", 1, 1, 0), ref("n1", 2, 2, 1), ref("n0", 2, 2, 0)}, []string{"n0", "n1"}},
		{"shrinking: the new group complete", []Ref{ref("o0", 1, 2, 0), ref("o1", 1, 2, 1), ref("a", 2, 1, 0)}, []string{"a"}},
		{"the newest complete group, by its newest shard", []Ref{ref("o0", 5, 2, 0), ref("o1", 3, 2, 1), ref("a", 4, 1, 0)}, []string{"o0", "o1"}},
		{"a tie of one index goes to the smaller name", []Ref{ref("y", 1, 1, 0), ref("x", 1, 1, 0)}, []string{"x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range Select(tc.refs) {
				got = append(got, r.Name)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Select (-want +got):\n%s", diff)
			}
		})
	}
}

// TestKTransition: a set growing past a boundary gets a new group, which
// Select prefers once complete, and holds the same entries.
func TestKTransition(t *testing.T) {
	small := For(set("s", 1, entries(1500)), "ns", 0)
	grown := For(set("s", 2, entries(4500)), "ns", len(small))
	if len(small) != 2 || len(grown) != 8 {
		t.Fatalf("%d shards, then %d; want 2 and 8", len(small), len(grown))
	}
	all := append(refs(t, small), refs(t, grown)...)
	got := Select(all)
	if len(got) != 8 || got[0].Name != grown[0].Name {
		t.Errorf("Select = %+v, want the grown group", got)
	}
	if diff := cmp.Diff(slices.Sorted(slices.Values(entries(4500))), slices.Sorted(slices.Values(contents(t, grown)))); diff != "" {
		t.Errorf("grown group (-want +got):\n%s", diff)
	}
}
