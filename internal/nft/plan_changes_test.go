package nft

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/nodefw/nodefw/internal/compile"
)

// TestElementsOnlyChangeKeepsShape checks what lets Apply send elements
// alone: a ruleset whose sets differ only in elements has the same shape,
// and different content.
func TestElementsOnlyChangeKeepsShape(t *testing.T) {
	s := compile.Set{
		Name: "s", Family: compile.FamilyIPv4,
		Fields: []compile.SetField{compile.FieldDPort, compile.FieldL4Proto},
		Elements: []compile.SetElement{{
			L4Proto: compile.ProtoRange{First: tcp, Last: tcp}, DPort: compile.PortInterval{First: 80, Last: 80},
			SAddr: addrRange("0.0.0.0", "255.255.255.255"), DAddr: addrRange("0.0.0.0", "255.255.255.255"),
		}},
	}
	rule := compile.Rule{Family: compile.FamilyIPv4, Lookup: "s", Counter: true, Verdict: compile.VerdictAccept, Comment: "run from a/b"}
	a, err := buildPlan(lookupRuleset(s, rule), "t")
	if err != nil {
		t.Fatal(err)
	}
	s2 := s
	s2.Elements = append([]compile.SetElement(nil), s.Elements...)
	s2.Elements[0].DPort = compile.PortInterval{First: 81, Last: 81}
	b, err := buildPlan(lookupRuleset(s2, rule), "t")
	if err != nil {
		t.Fatal(err)
	}
	if !sameShape(a, b) || samePlan(a, b) || !samePlan(a, a) {
		t.Errorf("same shape %v, same plan %v", sameShape(a, b), samePlan(a, b))
	}
	add, del := diffElements(a.named[0].elems, b.named[0].elems)
	if len(add) != 1 || len(del) != 1 || !bytes.Equal(add[0].Key, b.named[0].elems[0].Key) {
		t.Errorf("diff: add %v, del %v", add, del)
	}
	s3 := s
	s3.Fields = []compile.SetField{compile.FieldDPort, compile.FieldSAddr, compile.FieldL4Proto}
	c, err := buildPlan(lookupRuleset(s3, rule), "t")
	if err != nil {
		t.Fatal(err)
	}
	if sameShape(a, c) {
		t.Error("a new key field kept the shape")
	}
}

func TestDiffElements(t *testing.T) {
	el := func(k ...byte) nftables.SetElement { return nftables.SetElement{Key: k, KeyEnd: k} }
	for _, tc := range []struct {
		have, want, add, del []nftables.SetElement
	}{
		{have: nil, want: []nftables.SetElement{el(1), el(2)}, add: []nftables.SetElement{el(1), el(2)}},
		{have: []nftables.SetElement{el(1), el(2)}, want: nil, del: []nftables.SetElement{el(1), el(2)}},
		{have: []nftables.SetElement{el(1), el(3), el(5)}, want: []nftables.SetElement{el(1), el(4), el(5), el(6)},
			add: []nftables.SetElement{el(4), el(6)}, del: []nftables.SetElement{el(3)}},
		// Unsorted: through the map.
		{have: []nftables.SetElement{el(5), el(1), el(3)}, want: []nftables.SetElement{el(6), el(1), el(4), el(5)},
			add: []nftables.SetElement{el(6), el(4)}, del: []nftables.SetElement{el(3)}},
	} {
		add, del := diffElements(tc.have, tc.want)
		if fmt.Sprint(add) != fmt.Sprint(tc.add) || fmt.Sprint(del) != fmt.Sprint(tc.del) {
			t.Errorf("diff(%v, %v) = %v, %v; want %v, %v", tc.have, tc.want, add, del, tc.add, tc.del)
		}
	}
}

// twoSets is a ruleset with the named sets "s" and "t", keyed on port and
// protocol, each looked up by a rule of the input chain; the output chain
// is empty.
func twoSets(t *testing.T, sPorts, tPorts []uint16) *plan {
	t.Helper()
	set := func(name string, ports []uint16) compile.Set {
		s := compile.Set{Name: name, Family: compile.FamilyIPv4, Fields: []compile.SetField{compile.FieldDPort, compile.FieldL4Proto}}
		for _, p := range ports {
			s.Elements = append(s.Elements, compile.SetElement{
				L4Proto: compile.ProtoRange{First: tcp, Last: tcp}, DPort: compile.PortInterval{First: p, Last: p},
			})
		}
		return s
	}
	rs := &compile.Ruleset{
		Sets: []compile.Set{set("s", sPorts), set("t", tPorts)},
		Chains: []compile.Chain{
			{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictDrop, Rules: []compile.Rule{
				{Family: compile.FamilyIPv4, Lookup: "s", Verdict: compile.VerdictAccept},
				{Family: compile.FamilyIPv4, Lookup: "t", Verdict: compile.VerdictDrop},
			}},
			{Name: "output", Hook: compile.HookOutput, Policy: compile.VerdictAccept},
		},
	}
	pl, err := buildPlan(rs, "t")
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// portKey is the key of a port-and-protocol element.
func portKey(port uint16) []byte { return []byte{byte(port >> 8), byte(port), 0, 0, tcp, 0, 0, 0} }

func TestPlanSetUpdates(t *testing.T) {
	type update struct {
		Name     string
		Add, Del [][]byte
	}
	keys := func(es []nftables.SetElement) [][]byte {
		var out [][]byte
		for _, e := range es {
			out = append(out, e.Key)
		}
		return out
	}
	from := twoSets(t, []uint16{80, 443}, []uint16{53})
	for _, tc := range []struct {
		name string
		to   *plan
		slot int
		want []update
	}{
		{name: "unchanged", to: twoSets(t, []uint16{80, 443}, []uint16{53})},
		{name: "one set, slot 0", to: twoSets(t, []uint16{81, 443}, []uint16{53}),
			want: []update{{Name: "s", Add: [][]byte{portKey(81)}, Del: [][]byte{portKey(80)}}}},
		{name: "one set, slot 1", to: twoSets(t, []uint16{80, 443}, []uint16{53, 54}), slot: 1,
			want: []update{{Name: "t-b", Add: [][]byte{portKey(54)}}}},
		{name: "both sets", to: twoSets(t, []uint16{443}, nil),
			want: []update{{Name: "s", Del: [][]byte{portKey(80)}}, {Name: "t", Del: [][]byte{portKey(53)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []update
			for _, u := range planSetUpdates(from, tc.to, tc.slot) {
				got = append(got, update{Name: u.name, Add: keys(u.add), Del: keys(u.del)})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("updates (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStagingSlot(t *testing.T) {
	pl := twoSets(t, []uint16{80}, []uint16{53})
	for _, tc := range []struct {
		live    []string
		slot    int
		decided bool
	}{
		{live: nil, slot: 0, decided: true},
		{live: []string{"s", "t"}, slot: 1, decided: true},
		{live: []string{"s-b", "t-b", "other"}, slot: 0, decided: true},
		{live: []string{"s", "t", "t-b"}, slot: 1, decided: true},
		// As many of each slot: only the live rules tell.
		{live: []string{"s", "s-b"}, decided: false},
		{live: []string{"s", "t", "s-b", "t-b"}, decided: false},
	} {
		live := &liveObjects{exists: true}
		for _, name := range tc.live {
			live.sets = append(live.sets, &nftables.Set{Name: name})
		}
		slot, decided := stagingSlot(pl, live)
		if decided != tc.decided || (decided && slot != tc.slot) {
			t.Errorf("live sets %v: slot %d, decided %v; want %d, %v", tc.live, slot, decided, tc.slot, tc.decided)
		}
	}
}

func TestSlotOf(t *testing.T) {
	pl := twoSets(t, []uint16{80}, []uint16{53})
	lookups := func(names ...string) map[string][]*nftables.Rule {
		var rules []*nftables.Rule
		for _, n := range names {
			rules = append(rules, &nftables.Rule{Exprs: []expr.Any{&expr.Lookup{SetName: n}}})
		}
		return map[string][]*nftables.Rule{"input": rules}
	}
	for _, tc := range []struct {
		names []string
		want  int
	}{
		{nil, 0},
		{[]string{"s", "t"}, 0},
		{[]string{"s-b", "t-b"}, 1},
		{[]string{"s-b", "t-b", "s"}, 1},
		// Lookups of anonymous or unknown sets do not count.
		{[]string{"__set0", "x-b", "s"}, 0},
	} {
		if got := slotOf(pl, lookups(tc.names...)); got != tc.want {
			t.Errorf("lookups of %v: slot %d, want %d", tc.names, got, tc.want)
		}
	}
}

func TestRuleExprsPointAtTheSlot(t *testing.T) {
	pl := twoSets(t, []uint16{80}, []uint16{53})
	kr := &pl.chains[0].rules[0]
	if got := pl.ruleExprs(kr, 0); &got[0] != &kr.exprs[0] {
		t.Error("slot 0 copied the expressions")
	}
	got := pl.ruleExprs(kr, 1)
	var names []string
	for _, e := range got {
		if l, ok := e.(*expr.Lookup); ok {
			names = append(names, fmt.Sprintf("%s/%d", l.SetName, l.SetID))
		}
	}
	if diff := cmp.Diff([]string{"s-b/0"}, names); diff != "" {
		t.Errorf("lookups (-want +got):\n%s", diff)
	}
	for _, e := range kr.exprs {
		if l, ok := e.(*expr.Lookup); ok && l.SetName != "s" {
			t.Errorf("the plan's own lookup was renamed to %s", l.SetName)
		}
	}
}

func TestPlanStagedRewrite(t *testing.T) {
	pl := twoSets(t, []uint16{80}, []uint16{53})
	chain := func(name string, h *nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Type: nftables.ChainTypeFilter, Hooknum: h, Priority: &prio}
	}
	live := &liveObjects{
		exists: true,
		chains: []*nftables.Chain{
			chain("input", nftables.ChainHookInput, 0),     // kept
			chain("output", nftables.ChainHookOutput, 100), // another priority
			chain("forward", nftables.ChainHookForward, 0), // not planned
		},
		sets: []*nftables.Set{{Name: "s"}, {Name: "t-b"}, {Name: "extra"}},
	}
	type summary struct {
		Leftovers, Flush, DeleteChains, DeleteSets []string
	}
	for _, tc := range []struct {
		slot int
		want summary
	}{
		{slot: 0, want: summary{
			Leftovers: []string{"s"}, Flush: []string{"input", "output", "forward"},
			DeleteChains: []string{"output", "forward"}, DeleteSets: []string{"t-b", "extra"},
		}},
		{slot: 1, want: summary{
			Leftovers: []string{"t-b"}, Flush: []string{"input", "output", "forward"},
			DeleteChains: []string{"output", "forward"}, DeleteSets: []string{"s", "extra"},
		}},
	} {
		rw := planStagedRewrite(pl, live, tc.slot)
		chainNames := func(chs []*nftables.Chain) []string {
			var out []string
			for _, ch := range chs {
				out = append(out, ch.Name)
			}
			return out
		}
		got := summary{
			Flush: chainNames(rw.flushChains), DeleteChains: chainNames(rw.deleteChains), DeleteSets: rw.deleteSets,
		}
		for name := range rw.leftovers {
			got.Leftovers = append(got.Leftovers, name)
		}
		slices.Sort(got.Leftovers)
		if rw.slot != tc.slot {
			t.Errorf("slot %d: planned slot %d", tc.slot, rw.slot)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("slot %d (-want +got):\n%s", tc.slot, diff)
		}
	}
}
