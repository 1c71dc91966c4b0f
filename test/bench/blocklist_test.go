package bench

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/netnstest"
	"github.com/nodefw/nodefw/internal/nft"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// blocklistNames are the NodeFirewallAddressSets the blocklist rule names:
// the API holds up to 60,000 entries in one, so a larger blocklist is
// split in halves, both named in the rule's from.
var blocklistNames = []string{"blocklist-a", "blocklist-b"}

// blocklist returns n distinct prefixes, a quarter each of IPv4 /32s,
// IPv4 /24s, IPv6 /48s and IPv6 /64s, none inside or next to another and
// none holding an address of netnstest.Pair.
func blocklist(n int) []netip.Prefix {
	out := make([]netip.Prefix, 0, n)
	for i := range n {
		j := i / 4
		var s string
		// Every other address or prefix, so that none touch: the kernel
		// would merge neighbours into one interval.
		k := 2 * j
		switch i % 4 {
		case 0:
			s = fmt.Sprintf("10.%d.%d.%d/32", k/65536, k/256%256, k%256)
		case 1:
			s = fmt.Sprintf("20.%d.%d.0/24", k/256, k%256)
		case 2:
			s = fmt.Sprintf("fd00:%x::/48", k)
		default:
			s = fmt.Sprintf("fd01:0:0:%x::/64", k)
		}
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// blocklistSpec is benchSpec(1) behind one Drop rule from the blocklist:
// every probe looks its source up in the blocklist's set, misses, and is
// accepted by the next rule.
func blocklistSpec() v1alpha1.NodeFirewallSpec {
	spec := benchSpec(1)
	spec.Rules = append([]v1alpha1.NodeFirewallRule{{
		Policy: "bench", Mode: v1alpha1.PolicyModeEnforce, Name: "blocklist", Chain: v1alpha1.ChainInput,
		Action: v1alpha1.ActionDrop, From: []v1alpha1.Peer{{AddressSet: blocklistNames[0]}, {AddressSet: blocklistNames[1]}},
	}}, spec.Rules...)
	return spec
}

// blocklistOptions passes the first half of entries as the first set, the
// rest as the second.
func blocklistOptions(entries []netip.Prefix) compile.Options {
	o := options()
	half := len(entries) / 2
	o.AddressSets = compile.AddressSets{blocklistNames[0]: entries[:half], blocklistNames[1]: entries[half:]}
	return o
}

// benchBlocklist measures a blocklist of cfg.blocklist entries referenced
// by one Drop rule: the new-flow rate through it against no table at
// all, the full apply, and a one-element change of the set.
func benchBlocklist(t *testing.T, r *report) {
	n := r.cfg.blocklist
	entries := blocklist(n)
	spec := blocklistSpec()

	// Full apply, and one element added and removed in turn.
	ns := netnstest.NewNS(t, "blocklist")
	p := programmer(t, ns)
	var full []time.Duration
	var fullStats nft.ApplyStats
	for range r.cfg.reps {
		if err := p.Delete(); err != nil {
			t.Fatal(err)
		}
		d, st, err := oursApplyWith(p, spec, blocklistOptions(entries))
		if err != nil {
			t.Fatal(err)
		}
		full, fullStats = append(full, d), st
	}
	extra := netip.MustParsePrefix("203.0.113.7/32")
	with := append(entries[:len(entries):len(entries)], extra)
	var applyTimes, totals, flushTimes []time.Duration
	var oneStats nft.ApplyStats
	for i := range 2 * r.cfg.reps {
		set := with
		if i%2 == 1 {
			set = entries
		}
		start := time.Now()
		rs, err := compile.Compile(spec, blocklistOptions(set))
		if err != nil {
			t.Fatal(err)
		}
		compiled := time.Now()
		st, err := p.Apply(rs)
		if err != nil {
			t.Fatal(err)
		}
		done := time.Now()
		if !st.Incremental {
			t.Errorf("change %d was a full apply: %+v", i, st)
		}
		applyTimes, totals = append(applyTimes, done.Sub(compiled)), append(totals, done.Sub(start))
		flushTimes = append(flushTimes, st.Flush)
		if i == 0 {
			oneStats = st
		}
	}
	t.Logf("blocklist of %d: full %v %+v; one element: apply %v, compile + apply %v, %+v",
		n, median(full), fullStats, median(applyTimes), median(totals), oneStats)
	agentRuns := benchBlocklistAgent(t, r.cfg.reps, entries, extra)
	t.Logf("blocklist of %d: the agent's reconcile of one element: %v (kernel %v), %+v",
		n, median(agentRuns.reconcile), median(agentRuns.flush), agentRuns.stats)

	// The packet path: no table, one rule, and the blocklist in front of
	// it, taking turns in the same rounds.
	var setups []*flowSetup
	for _, c := range []struct {
		name string
		spec *v1alpha1.NodeFirewallSpec
		opts compile.Options
	}{
		{name: "none"},
		{name: "ours1", spec: new(benchSpec(1)), opts: options()},
		{name: "blocklist", spec: &spec, opts: blocklistOptions(entries)},
	} {
		pair := netnstest.NewTestPair(t)
		if _, err := pair.Host.ServeTCP(probePort); err != nil {
			t.Fatal(err)
		}
		if c.spec != nil {
			if _, _, err := oursApplyWith(programmer(t, pair.Host), *c.spec, c.opts); err != nil {
				t.Fatal(err)
			}
		}
		setups = append(setups, newFlowSetup(t, r.cfg, c.name, pair))
	}
	rate := medianRates(t, r.cfg, setups)
	t.Logf("blocklist rates: %v", rate)

	size := thousands(n)
	obj, patch, err := addressSetBytes(entries[n/2:], extra)
	if err != nil {
		t.Fatal(err)
	}
	r.add(row{
		figure: fmt.Sprintf("new TCP flows/s behind a Drop rule from a %s-entry blocklist in two sets (peer: no table)", size),
		ours:   fmt.Sprintf("%.0f", rate["blocklist"]), peer: fmt.Sprintf("%.0f", rate["none"]),
		ratio: fmt.Sprintf("%.2f", rate["blocklist"]/rate["none"]), goal: "—", result: "—",
	})
	r.add(row{
		figure: "new TCP flows/s, match at rule 1 (peer: no table)",
		ours:   fmt.Sprintf("%.0f", rate["ours1"]), peer: fmt.Sprintf("%.0f", rate["none"]),
		ratio: fmt.Sprintf("%.2f", rate["ours1"]/rate["none"]), goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("full apply, %s-entry blocklist in two sets and one Drop rule", size),
		ours: fmt.Sprintf("%s (%d elements, %d messages, %d bytes)", ms(median(full)),
			fullStats.ElementsAdded, fullStats.Messages, fullStats.Bytes),
		peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("one entry added to or removed from the %s-entry blocklist: apply", size),
		ours:   ms(median(applyTimes)), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("one entry added to or removed from the %s-entry blocklist: the kernel's transaction (within apply)", size),
		ours:   ms(median(flushTimes)), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("one entry added to or removed from the %s-entry blocklist: compile + apply", size),
		ours:   ms(median(totals)), peer: "—", ratio: "—", goal: "—", result: "—",
	})
	addBlocklistAgentRows(r, size, agentRuns)
	r.add(row{
		figure: fmt.Sprintf("one entry added to the %s-entry blocklist: netlink messages, bytes", size),
		ours: fmt.Sprintf("%d messages, %d bytes (%d elements added, %d deleted)",
			oneStats.Messages, oneStats.Bytes, oneStats.ElementsAdded, oneStats.ElementsDeleted),
		peer: "—", ratio: "—", goal: "—", result: "—",
	})
	r.add(row{
		figure: fmt.Sprintf("one entry added to a %s-entry NodeFirewallAddressSet: bytes of the object (update body, "+
			"stored object, each watch event) (peer: a JSON patch's body)", thousands(n-n/2)),
		ours: fmt.Sprintf("%s bytes", thousands(obj)), peer: fmt.Sprintf("%s bytes", thousands(patch)),
		ratio: "—", goal: "—", result: "—",
	})
	r.note("API bytes: computed in the benchmark by encoding, not measured at an API server: the JSON of the "+
		"second set with one entry added, which an update sends and the API server stores whole (addresses "+
		"is an atomic list, so a merge patch carries the whole list too); the peer is the body of a JSON "+
		"patch that appends the entry, which still makes the API server store and send the whole object. "+
		"Every agent watching NodeFirewallAddressSets receives the object in a watch event: at 1,000 nodes, "+
		"about %s MB per one-entry change, once for the edit and once for the status the controller writes. The "+
		"set fan-out rows measure that at an API server with 1,000 simulated agents.", thousands(obj*1000/1_000_000))
	r.note("Blocklist: a NodeFirewallAddressSet of %s entries, a quarter each of IPv4 /32s, IPv4 /24s, IPv6 /48s "+
		"and IPv6 /64s, none inside or next to another (so the kernel merges none), split in two NodeFirewallAddressSets of %s (the API takes up to 60,000 entries in one), both named by one "+
		"Drop rule (`from: [{addressSet: blocklist-a}, {addressSet: blocklist-b}]`) ahead of the rule that "+
		"accepts the probe; the agent compiles each into one interval set per family, four sets and four lookups. Flows as in the packet rows, "+
		"from a client outside the blocklist, so every SYN looks its source up in both IPv4 sets and misses; the "+
		"peer has no nodefw table at all; the three setups (no table, the probe's rule alone, the blocklist ahead "+
		"of it) take turns in windows of %s, %d rounds, medians. Full apply: compile and apply into a namespace "+
		"without the table. One entry: 203.0.113.7/32 added to the second set, then removed, in turn; each change is sent as set "+
		"elements alone (an interval element is its start and its end); apply times Apply, which diffs the sets' sorted prefixes, encodes the stretch that changed and splices it into the plan it committed last, before it sends the change; the kernel's transaction is the batch's send and acknowledgement alone (ApplyStats.Flush); compile + apply "+
		"adds compiling the spec with its %s entries, unsorted (the agent keeps them sorted, see the agent's reconcile).",
		size, thousands(n/2), r.cfg.flowTime/4, 4*r.cfg.reps, size)
}

// addressSetBytes returns the JSON size of a NodeFirewallAddressSet holding
// entries and extra, and that of a JSON patch appending extra to it.
func addressSetBytes(entries []netip.Prefix, extra netip.Prefix) (int, int, error) {
	set := v1alpha1.NodeFirewallAddressSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "NodeFirewallAddressSet"},
		ObjectMeta: metav1.ObjectMeta{Name: blocklistNames[1], ResourceVersion: "123456"},
	}
	for _, p := range append(entries[:len(entries):len(entries)], extra) {
		set.Spec.Addresses = append(set.Spec.Addresses, v1alpha1.AddressSetEntry(p.String()))
	}
	obj, err := json.Marshal(set)
	if err != nil {
		return 0, 0, err
	}
	patch, err := json.Marshal([]map[string]string{{"op": "add", "path": "/spec/addresses/-", "value": extra.String()}})
	if err != nil {
		return 0, 0, err
	}
	return len(obj), len(patch), nil
}
