package nft

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/compile"
)

func addrRange(first, last string) compile.AddrRange {
	return compile.AddrRange{First: netip.MustParseAddr(first), Last: netip.MustParseAddr(last)}
}

func lookupRuleset(s compile.Set, r compile.Rule) *compile.Ruleset {
	return &compile.Ruleset{
		Sets:   []compile.Set{s},
		Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{r}}},
	}
}

// TestNamedSetEncoding checks the encoding of a concatenated interval set
// and of its lookup: every field padded to whole 32-bit registers, first
// and last keys per element, the key loaded into consecutive registers from
// register 1.
func TestNamedSetEncoding(t *testing.T) {
	s := compile.Set{
		Name: "input-run-1-v4", Family: compile.FamilyIPv4,
		Fields: []compile.SetField{compile.FieldDPort, compile.FieldSAddr, compile.FieldL4Proto},
		Elements: []compile.SetElement{{
			L4Proto: compile.ProtoRange{First: tcp, Last: tcp},
			DPort:   compile.PortInterval{First: 80, Last: 90},
			SAddr:   addrRange("10.0.0.0", "10.255.255.255"),
		}},
	}
	pl, err := buildPlan(lookupRuleset(s, compile.Rule{
		Family: compile.FamilyIPv4, Lookup: s.Name, Counter: true, Verdict: compile.VerdictAccept,
	}), "t")
	if err != nil {
		t.Fatal(err)
	}
	ns := pl.named[0]
	if ns.set.KeyType.Name != "inet_service . ipv4_addr . inet_proto" || ns.set.KeyType.Bytes != 12 ||
		!ns.set.Interval || !ns.set.Concatenation || ns.set.Anonymous || ns.set.Constant {
		t.Errorf("set: %+v", ns.set)
	}
	e := ns.elems[0]
	if want := []byte{0, 80, 0, 0, 10, 0, 0, 0, tcp, 0, 0, 0}; !bytes.Equal(e.Key, want) {
		t.Errorf("key %v, want %v", e.Key, want)
	}
	if want := []byte{0, 90, 0, 0, 10, 255, 255, 255, tcp, 0, 0, 0}; !bytes.Equal(e.KeyEnd, want) {
		t.Errorf("key end %v, want %v", e.KeyEnd, want)
	}

	exprs := pl.chains[0].rules[0].exprs
	var regs []uint32
	var lookup *expr.Lookup
	for _, x := range exprs {
		switch x := x.(type) {
		case *expr.Payload:
			regs = append(regs, x.DestRegister)
		case *expr.Meta:
			if x.Key == expr.MetaKeyL4PROTO {
				regs = append(regs, x.Register)
			}
		case *expr.Lookup:
			lookup = x
		}
	}
	// Port in register 1 (32-bit register 0), the address in 32-bit
	// register 1, the protocol in 32-bit register 2.
	if want := []uint32{1, unix.NFT_REG32_01, unix.NFT_REG32_02}; !equalUint32(regs, want) {
		t.Errorf("registers %v, want %v", regs, want)
	}
	if lookup == nil || lookup.SourceRegister != 1 || lookup.SetName != s.Name || lookup.SetID != ns.set.ID {
		t.Errorf("lookup %+v", lookup)
	}
	// The family is checked before the key is loaded.
	if m, ok := exprs[0].(*expr.Meta); !ok || m.Key != expr.MetaKeyNFPROTO {
		t.Errorf("first expression %T %+v, want the family check", exprs[0], exprs[0])
	}
}

func equalUint32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNamedSetErrors(t *testing.T) {
	good := compile.Set{
		Name: "s", Family: compile.FamilyIPv6,
		Fields: []compile.SetField{compile.FieldSAddr, compile.FieldL4Proto},
		Elements: []compile.SetElement{{
			L4Proto: compile.ProtoRange{First: 0, Last: 255},
			SAddr:   addrRange("2001:db8::", "2001:db8::ffff"),
		}},
	}
	rule := compile.Rule{Family: compile.FamilyIPv6, Lookup: "s", Verdict: compile.VerdictDrop}
	if _, err := buildPlan(lookupRuleset(good, rule), "t"); err != nil {
		t.Fatalf("good set: %v", err)
	}
	for name, tc := range map[string]struct {
		mutate func(*compile.Set, *compile.Rule)
	}{
		"unknown set":          {func(s *compile.Set, r *compile.Rule) { r.Lookup = "other" }},
		"other family":         {func(s *compile.Set, r *compile.Rule) { r.Family = compile.FamilyIPv4 }},
		"no fields":            {func(s *compile.Set, r *compile.Rule) { s.Fields = nil }},
		"no family":            {func(s *compile.Set, r *compile.Rule) { s.Family = compile.FamilyAny }},
		"reserved name":        {func(s *compile.Set, r *compile.Rule) { s.Name, r.Lookup = "__set0", "__set0" }},
		"address of v4":        {func(s *compile.Set, r *compile.Rule) { s.Elements[0].SAddr = addrRange("10.0.0.0", "10.0.0.1") }},
		"empty address range":  {func(s *compile.Set, r *compile.Rule) { s.Elements[0].SAddr = addrRange("2001:db8::2", "2001:db8::1") }},
		"empty protocol range": {func(s *compile.Set, r *compile.Rule) { s.Elements[0].L4Proto = compile.ProtoRange{First: 7, Last: 6} }},
	} {
		s, r := good, rule
		s.Elements = append([]compile.SetElement(nil), good.Elements...)
		tc.mutate(&s, &r)
		if _, err := buildPlan(lookupRuleset(s, r), "t"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	dup := lookupRuleset(good, rule)
	dup.Sets = append(dup.Sets, good)
	if _, err := buildPlan(dup, "t"); err == nil {
		t.Error("duplicate set: no error")
	}
}

// TestFamilyOfSetsWithoutAddresses: a set keyed on port and protocol alone
// says nothing of the family in its key; its lookup checks the family.
func TestFamilyOfSetsWithoutAddresses(t *testing.T) {
	s := compile.Set{
		Name: "s6", Family: compile.FamilyIPv6,
		Fields: []compile.SetField{compile.FieldDPort, compile.FieldL4Proto},
		Elements: []compile.SetElement{{
			L4Proto: compile.ProtoRange{First: udp, Last: udp}, DPort: compile.PortInterval{First: 53, Last: 53},
		}},
	}
	pl, err := buildPlan(lookupRuleset(s, compile.Rule{Family: compile.FamilyIPv6, Lookup: "s6", Verdict: compile.VerdictAccept}), "t")
	if err != nil {
		t.Fatal(err)
	}
	exprs := pl.chains[0].rules[0].exprs
	m, ok := exprs[0].(*expr.Meta)
	c, ok2 := exprs[1].(*expr.Cmp)
	if !ok || !ok2 || m.Key != expr.MetaKeyNFPROTO || !bytes.Equal(c.Data, []byte{unix.NFPROTO_IPV6}) {
		t.Errorf("no IPv6 check first: %v", exprs)
	}
}

// TestCountingSetEncoding checks that a counting set asks the kernel for a
// counter per element, that each element carries its rule as its comment,
// and that an element which changes rule is replaced while its key stays.
func TestCountingSetEncoding(t *testing.T) {
	elem := compile.SetElement{
		L4Proto: compile.ProtoRange{First: tcp, Last: tcp},
		DPort:   compile.PortInterval{First: 80, Last: 80},
		SAddr:   addrRange("10.0.0.0", "10.255.255.255"),
		Rule:    "web/http",
	}
	s := compile.Set{
		Name: "input-run-1-v4", Family: compile.FamilyIPv4, Counter: true,
		Fields:   []compile.SetField{compile.FieldDPort, compile.FieldSAddr, compile.FieldL4Proto},
		Elements: []compile.SetElement{elem},
	}
	rule := compile.Rule{Family: compile.FamilyIPv4, Lookup: s.Name, Verdict: compile.VerdictAccept}
	pl, err := buildPlan(lookupRuleset(s, rule), "t")
	if err != nil {
		t.Fatal(err)
	}
	if ns := pl.named[0]; !ns.set.Counter || ns.elems[0].Comment != "web/http" {
		t.Fatalf("set %+v, element %+v: want element counters and the rule as comment", ns.set, ns.elems[0])
	}
	for _, e := range pl.chains[0].rules[0].exprs {
		if _, ok := e.(*expr.Counter); ok {
			t.Error("the lookup of a counting set has a counter of its own")
		}
	}
	s.Elements[0].Rule = "web/http-again"
	moved, err := buildPlan(lookupRuleset(s, rule), "t")
	if err != nil {
		t.Fatal(err)
	}
	if !sameShape(pl, moved) || samePlan(pl, moved) {
		t.Fatal("an element that changes rule must be an element change")
	}
	ups := planSetUpdates(pl, moved, 0)
	if len(ups) != 1 || len(ups[0].add) != 1 || len(ups[0].del) != 1 || ups[0].add[0].Comment != "web/http-again" {
		t.Fatalf("updates: %+v", ups)
	}
	// Counted packets are no change.
	counted := pl.named[0].elems[0]
	counted.Counter = &expr.Counter{Packets: 5, Bytes: 300}
	if add, del := diffElements([]nftables.SetElement{counted}, pl.named[0].elems); len(add)+len(del) != 0 {
		t.Errorf("a counted element differs: add %v, del %v", add, del)
	}
	s.Counter = false
	plain, err := buildPlan(lookupRuleset(s, rule), "t")
	if err != nil {
		t.Fatal(err)
	}
	if sameShape(pl, plain) {
		t.Error("a set that stops counting per element must be a new set")
	}
}
