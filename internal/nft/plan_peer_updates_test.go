package nft

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// peerUpdateSpec drops what comes from the address set "s".
func peerUpdateSpec() v1alpha1.NodeFirewallSpec {
	return v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{{Policy: "p", Name: "block", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop,
			From: []v1alpha1.Peer{{AddressSet: "s"}}}},
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyAccept, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}
}

// randomPeerPrefix is a prefix from a small space of both families, so
// that random sets hold prefixes that touch, nest and repeat, and some at
// the ends of the address space.
func randomPeerPrefix(r *rand.Rand) netip.Prefix {
	var p netip.Prefix
	switch r.IntN(5) {
	case 0:
		p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(64))}), 29+r.IntN(4))
	case 1:
		p = netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, byte(240 + r.IntN(16))}), 28+r.IntN(5))
	case 2:
		p = netip.PrefixFrom(netip.AddrFrom4([4]byte{0, 0, 0, byte(r.IntN(16))}), 29+r.IntN(4))
	case 3:
		p = netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", r.IntN(64))), 125+r.IntN(4))
	default:
		p = netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff%02x", 0xf0+r.IntN(16))), 124+r.IntN(5))
	}
	return p.Masked()
}

func compileWithSet(t *testing.T, prefixes []netip.Prefix) *compile.Ruleset {
	t.Helper()
	rs, err := compile.Compile(peerUpdateSpec(), compile.Options{SetLookups: true, AddressSets: compile.AddressSets{"s": prefixes}})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func mustPlan(t *testing.T, rs *compile.Ruleset) *plan {
	t.Helper()
	pl, err := buildPlan(rs, "t")
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// elemStrings describes elements for comparison, in their order.
func elemStrings(es []nftables.SetElement) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = fmt.Sprintf("%x end=%v", e.Key, e.IntervalEnd)
	}
	return out
}

func sortedElemStrings(es []nftables.SetElement) []string {
	out := elemStrings(es)
	slices.Sort(out)
	return out
}

// TestPlanPeerUpdatesIsTheWholePlan: for random sets and random edits of
// them, from one prefix to many, the plan spliced from the prefixes that
// changed is the plan built whole, and its updates are the diff of the
// whole plans' intervals.
func TestPlanPeerUpdatesIsTheWholePlan(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 3))
	for i := range 2000 {
		var set []netip.Prefix
		for range r.IntN(40) {
			set = append(set, randomPeerPrefix(r))
		}
		edited := slices.Clone(set)
		for range 1 + r.IntN(3)*r.IntN(6) {
			if len(edited) > 0 && r.IntN(2) == 0 {
				j := r.IntN(len(edited))
				edited = slices.Delete(edited, j, j+1)
			} else {
				edited = append(edited, randomPeerPrefix(r))
			}
		}
		from, to := compileWithSet(t, set), compileWithSet(t, edited)
		fromPlan, wantPlan := mustPlan(t, from), mustPlan(t, to)
		var committed [][]string
		for k := range fromPlan.named {
			committed = append(committed, elemStrings(fromPlan.named[k].elems))
		}
		next, updates, ok := planPeerUpdates(from, fromPlan, to, 1)
		if !ok {
			t.Fatalf("case %d: %v -> %v: not planned from the prefixes", i, set, edited)
		}
		if next.msgs != wantPlan.msgs || next.bytes != wantPlan.bytes {
			t.Errorf("case %d: %d messages, %d bytes, want %d, %d", i, next.msgs, next.bytes, wantPlan.msgs, wantPlan.bytes)
		}
		want := planSetUpdates(fromPlan, wantPlan, 1)
		for k := range wantPlan.named {
			if diff := cmp.Diff(elemStrings(wantPlan.named[k].elems), elemStrings(next.named[k].elems)); diff != "" {
				t.Fatalf("case %d: %v -> %v: set %s (-whole +spliced):\n%s", i, set, edited, wantPlan.named[k].set.Name, diff)
			}
			if next.named[k].size != wantPlan.named[k].size {
				t.Errorf("case %d: set %s size %d, want %d", i, wantPlan.named[k].set.Name, next.named[k].size, wantPlan.named[k].size)
			}
		}
		if len(updates) != len(want) {
			t.Fatalf("case %d: %d updates, want %d", i, len(updates), len(want))
		}
		for k := range want {
			if updates[k].name != want[k].name {
				t.Errorf("case %d: update of %s, want %s", i, updates[k].name, want[k].name)
			}
			if diff := cmp.Diff(sortedElemStrings(want[k].add), sortedElemStrings(updates[k].add)); diff != "" {
				t.Errorf("case %d: %s added (-whole +spliced):\n%s", i, want[k].name, diff)
			}
			if diff := cmp.Diff(sortedElemStrings(want[k].del), sortedElemStrings(updates[k].del)); diff != "" {
				t.Errorf("case %d: %s deleted (-whole +spliced):\n%s", i, want[k].name, diff)
			}
		}
		for k := range fromPlan.named {
			if diff := cmp.Diff(committed[k], elemStrings(fromPlan.named[k].elems)); diff != "" {
				t.Fatalf("case %d: the committed plan's set %s changed:\n%s", i, fromPlan.named[k].set.Name, diff)
			}
		}
	}
}

// TestPlanPeerUpdatesLeavesTheRest: anything but a change of peer sets'
// sorted prefixes is left to the whole plan.
func TestPlanPeerUpdatesLeavesTheRest(t *testing.T) {
	a := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.2.0/24")}
	from := compileWithSet(t, a)
	fromPlan := mustPlan(t, from)
	otherRule := peerUpdateSpec()
	otherRule.Rules[0].Action = v1alpha1.ActionReject
	changedRule, err := compile.Compile(otherRule, compile.Options{SetLookups: true, AddressSets: compile.AddressSets{"s": a}})
	if err != nil {
		t.Fatal(err)
	}
	unsorted := compileWithSet(t, append(slices.Clone(a), netip.MustParsePrefix("10.0.1.0/24")))
	unsorted.PeerSets[0].Prefixes = []netip.Prefix{a[1], a[0]}
	for name, to := range map[string]*compile.Ruleset{"rule changed": changedRule, "prefixes unsorted": unsorted} {
		if _, _, ok := planPeerUpdates(from, fromPlan, to, 0); ok {
			t.Errorf("%s: planned from the prefixes", name)
		}
	}
	if _, updates, ok := planPeerUpdates(from, fromPlan, compileWithSet(t, a), 0); !ok || len(updates) != 0 {
		t.Errorf("the same sets: ok %v, updates %v; want ok and none", ok, updates)
	}
}

func TestLastAddr(t *testing.T) {
	for _, c := range []struct {
		prefix, last string
		end          bool
	}{
		{"10.0.0.0/8", "10.255.255.255", false},
		{"10.0.0.7/32", "10.0.0.7", false},
		{"0.0.0.0/0", "255.255.255.255", true},
		{"255.255.255.254/31", "255.255.255.255", true},
		{"2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", false},
		{"2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff", false},
		{"2001:db8::/65", "2001:db8::7fff:ffff:ffff:ffff", false},
		{"2001:db8::1/128", "2001:db8::1", false},
		{"::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"ffff:ffff:ffff:ffff::/64", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
	} {
		last, end := lastAddr(netip.MustParsePrefix(c.prefix))
		if last.String() != c.last || end != c.end {
			t.Errorf("lastAddr(%s) = %v, %v; want %s, %v", c.prefix, last, end, c.last, c.end)
		}
	}
}
