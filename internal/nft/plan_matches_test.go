package nft

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/nodefw/nodefw/internal/compile"
)

// meterRuleset has a rule of each family that fills a meter of its own,
// and an ICMP rule with codes.
func meterRuleset(timeout time.Duration) *compile.Ruleset {
	return &compile.Ruleset{
		Meters: []compile.Meter{
			{Name: "input-limit-1-v4", Family: compile.FamilyIPv4, Timeout: timeout},
			{Name: "input-connlimit-1-v6", Family: compile.FamilyIPv6},
		},
		Chains: []compile.Chain{{
			Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept,
			Rules: []compile.Rule{
				{Family: compile.FamilyIPv4, L4Proto: tcp, DPorts: ports(22), Verdict: compile.VerdictAccept,
					Limit: &compile.RateLimit{Rate: 3, Unit: compile.RateMinute, Burst: 5, Meter: "input-limit-1-v4"}},
				{Family: compile.FamilyIPv6, L4Proto: tcp, DPorts: ports(22), Verdict: compile.VerdictRejectTCPReset,
					ConnLimit: &compile.ConnLimit{Above: 3, Meter: "input-connlimit-1-v6"}},
				{Family: compile.FamilyIPv4, L4Proto: icmp, Verdict: compile.VerdictAccept,
					ICMPTypeCodes: []compile.ICMPTypeCode{{Type: 3, FirstCode: 4, LastCode: 4}, {Type: 8, LastCode: 255}}},
				{L4Proto: udp, SPorts: ports(53), Verdict: compile.VerdictRejectHostUnreachable,
					Limit: &compile.RateLimit{Rate: 1, Unit: compile.RateSecond, Burst: 1}},
			},
		}},
	}
}

func TestMeterEncoding(t *testing.T) {
	pl, err := buildPlan(meterRuleset(time.Minute), "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.named) != 2 || !pl.named[0].meter || !pl.named[1].meter {
		t.Fatalf("named sets %+v: want two meters", pl.named)
	}
	v4, v6 := pl.named[0].set, pl.named[1].set
	if !v4.Dynamic || !v4.HasTimeout || v4.Timeout != time.Minute || v4.Size != compile.MeterSize || v4.KeyType.Name != "ipv4_addr" ||
		v4.Interval || v4.Concatenation || v4.Constant {
		t.Errorf("limit meter %+v", v4)
	}
	if !v6.Dynamic || v6.HasTimeout || v6.KeyType.Name != "ipv6_addr" {
		t.Errorf("connection limit meter %+v", v6)
	}
	// Each stateful rule loads the source address and fills its meter.
	for i, want := range []struct {
		set string
		op  uint32
		e   expr.Any
	}{
		{"input-limit-1-v4", 1, &expr.Limit{Type: expr.LimitTypePkts, Rate: 3, Unit: expr.LimitTimeMinute, Burst: 5}},
		{"input-connlimit-1-v6", 0, &expr.Connlimit{Count: 3, Flags: expr.NFT_CONNLIMIT_F_INV}},
	} {
		exprs := pl.chains[0].rules[i].exprs
		var dyn *expr.Dynset
		for j, e := range exprs {
			if d, ok := e.(*expr.Dynset); ok {
				dyn = d
				load, ok := exprs[j-1].(*expr.Payload)
				if !ok || load.Base != expr.PayloadBaseNetworkHeader || (load.Len != 4 && load.Len != 16) {
					t.Errorf("rule %d: %T before the dynset, want the source address loaded", i, exprs[j-1])
				}
			}
		}
		if dyn == nil || dyn.SetName != want.set || dyn.Operation != want.op || len(dyn.Exprs) != 1 {
			t.Fatalf("rule %d: dynset %+v, want %s op %d", i, dyn, want.set, want.op)
		}
		if diff := cmp.Diff(want.e, dyn.Exprs[0]); diff != "" {
			t.Errorf("rule %d: stateful expression (-want +got):\n%s", i, diff)
		}
	}
	// A limit of the rule's own needs no meter.
	last := pl.chains[0].rules[3].exprs
	if l, ok := last[len(last)-2].(*expr.Limit); !ok || l.Rate != 1 || l.Burst != 1 {
		t.Errorf("plain limit: %T %+v", last[len(last)-2], last[len(last)-2])
	}
	if r, ok := last[len(last)-1].(*expr.Reject); !ok || r.Code != 2 {
		t.Errorf("host-unreachable reject: %+v", last[len(last)-1])
	}
	// ICMP types with codes: type and code in two registers, one lookup
	// in a concatenated interval set of both.
	icmpRule := pl.chains[0].rules[2]
	if len(icmpRule.sets) != 1 || !icmpRule.sets[0].set.Concatenation || !icmpRule.sets[0].set.Interval ||
		icmpRule.sets[0].set.KeyType.Name != "icmp_type . icmp_code" {
		t.Fatalf("ICMP rule sets %+v", icmpRule.sets)
	}
	elems := icmpRule.sets[0].elems
	if len(elems) != 2 || !bytes.Equal(elems[1].Key, []byte{8, 0, 0, 0, 0, 0, 0, 0}) || !bytes.Equal(elems[1].KeyEnd, []byte{8, 0, 0, 0, 255, 0, 0, 0}) {
		t.Errorf("ICMP elements %+v", elems)
	}
}

// TestMeterSlots checks that a rewrite into slot 1 renames the meters a
// rule fills, as it does the sets a rule looks up.
func TestMeterSlots(t *testing.T) {
	pl, err := buildPlan(meterRuleset(time.Minute), "t")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, kr := range pl.chains[0].rules {
		for _, e := range pl.ruleExprs(&kr, 1) {
			if d, ok := e.(*expr.Dynset); ok {
				names = append(names, fmt.Sprintf("%s/%d", d.SetName, d.SetID))
			}
		}
	}
	if diff := cmp.Diff([]string{"input-limit-1-v4-b/0", "input-connlimit-1-v6-b/0"}, names); diff != "" {
		t.Errorf("dynsets in slot 1 (-want +got):\n%s", diff)
	}
	dynsets := func(names ...string) map[string][]*nftables.Rule {
		var exprs []expr.Any
		for _, n := range names {
			exprs = append(exprs, &expr.Dynset{SetName: n})
		}
		return map[string][]*nftables.Rule{"input": {{Exprs: exprs}}}
	}
	if got := slotOf(pl, dynsets("input-limit-1-v4-b", "input-connlimit-1-v6-b")); got != 1 {
		t.Errorf("rules that fill the meters of slot 1: slot %d", got)
	}
	// Another timeout is another shape: the meter must be made anew.
	other, err := buildPlan(meterRuleset(time.Hour), "t")
	if err != nil {
		t.Fatal(err)
	}
	if sameShape(pl, other) {
		t.Error("meters with other timeouts have the same shape")
	}
	same, _ := buildPlan(meterRuleset(time.Minute), "t")
	if !sameShape(pl, same) || len(planSetUpdates(pl, same, 0)) != 0 {
		t.Error("the same meters are not the same shape, or have elements to update")
	}
}

func TestMeterErrors(t *testing.T) {
	for name, rs := range map[string]*compile.Ruleset{
		"meter without family":   {Meters: []compile.Meter{{Name: "m"}}},
		"meter named like anons": {Meters: []compile.Meter{{Name: "__m", Family: compile.FamilyIPv4}}},
		"meter twice": {Meters: []compile.Meter{
			{Name: "m", Family: compile.FamilyIPv4}, {Name: "m", Family: compile.FamilyIPv4},
		}},
		"timeout below a millisecond": {Meters: []compile.Meter{{Name: "m", Family: compile.FamilyIPv4, Timeout: time.Microsecond}}},
		"unknown meter": {Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
			{Family: compile.FamilyIPv4, ConnLimit: &compile.ConnLimit{Above: 1, Meter: "m"}},
		}}}},
		"meter of the other family": {Meters: []compile.Meter{{Name: "m", Family: compile.FamilyIPv6}},
			Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
				{Family: compile.FamilyIPv4, Limit: &compile.RateLimit{Rate: 1, Unit: compile.RateSecond, Meter: "m"}},
			}}}},
		"meter of a rule of both families": {Meters: []compile.Meter{{Name: "m", Family: compile.FamilyIPv4}},
			Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
				{ConnLimit: &compile.ConnLimit{Above: 1, Meter: "m"}},
			}}}},
		"lookup in a meter": {Meters: []compile.Meter{{Name: "m", Family: compile.FamilyIPv4}},
			Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
				{Family: compile.FamilyIPv4, Lookup: "m", Verdict: compile.VerdictAccept},
			}}}},
		"connection limit without meter": {Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
			{Family: compile.FamilyIPv4, ConnLimit: &compile.ConnLimit{Above: 1}},
		}}}},
		"rate of nothing": {Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
			{Limit: &compile.RateLimit{Unit: compile.RateSecond}},
		}}}},
		"source ports with icmp": {Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
			{L4Proto: icmp, SPorts: ports(53)},
		}}}},
		"empty code range": {Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
			{L4Proto: icmp, ICMPTypeCodes: []compile.ICMPTypeCode{{Type: 3, FirstCode: 5, LastCode: 4}}},
		}}}},
		"types with and without codes": {Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{
			{L4Proto: icmp, ICMPTypes: []uint8{8}, ICMPTypeCodes: []compile.ICMPTypeCode{{Type: 3, FirstCode: 4, LastCode: 4}}},
		}}}},
	} {
		if _, err := buildPlan(rs, "t"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestICMPCodesChangeTheFingerprint: two rules that differ only in the
// codes of an ICMP type are two rules to the kernel.
func TestICMPCodesChangeTheFingerprint(t *testing.T) {
	fp := func(last uint8) []byte {
		return encodeOne(t, compile.Rule{L4Proto: icmp, Family: compile.FamilyIPv4, Verdict: compile.VerdictAccept,
			ICMPTypeCodes: []compile.ICMPTypeCode{{Type: 3, FirstCode: 4, LastCode: last}}})[0].udata
	}
	if bytes.Equal(fp(4), fp(5)) {
		t.Error("codes 4 and 4-5 have one fingerprint")
	}
}
