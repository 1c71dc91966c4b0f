package compile

import (
	"strconv"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/text"
)

// Runs of simple rules.
//
// Linear rules cost a new flow one evaluation per rule before its match, as
// in iptables. Compile instead turns every run of consecutive simple rules
// of a chain with the same action (minRunRules or more) into lookups in
// concatenated interval sets: per IP family, one set keyed on destination
// port, addresses and protocol for the rules with ports, and one keyed on
// addresses and protocol for the rules without (keyOrder and keyFields say
// which fields, in which order). A rule is simple when it
// matches only on protocol, ports and addresses (no interfaces, conntrack
// states, log or audit). Within a run every rule has the same verdict, so a
// packet gets it when any of the run's rules matches, whatever their order:
// the union of the rules is all that matters, and first-match semantics
// hold because runs keep their place and every other rule stays linear
// between them. A new flow then pays for a lookup or two per change of
// verdict along the list, not for every rule.
//
// Rules without ports get a set of their own because `th dport` cannot be
// read from every packet (later fragments, headers cut short): a linear rule
// without ports still matches those, a lookup keyed on the port would not.
//
// The kernel refuses elements that overlap, so the rules' matches (boxes:
// a range per key field) are rewritten as disjoint elements covering
// exactly their union. The rewrite is canonical (it depends only on the
// union), so changing one rule changes only the elements near it.
//
// This file builds the runs and their lookups; the steps in between have
// a file each: spans.go and boxes.go turn the rules into boxes,
// decompose.go rewrites the boxes as disjoint elements, exact.go moves
// the elements that are one key to hash sets, and portblocks.go cuts
// large sets by port.

// minRunRules is the least number of rules a run needs to become sets.
// A run costs a packet up to two lookups of its family, each a rule that
// loads the key and walks the set's bitmaps; a few linear rules cost no
// more, and keep their own counters and comments, which small policies
// (the common case) are read by.
const minRunRules = 8

// maxRuleElements bounds the elements one rule may become (ports times
// sources times destinations): a rule with more stays linear, where its
// lists are separate small sets.
const maxRuleElements = 256

// simpleRule reports whether an API rule can join a run.
func simpleRule(r *v1alpha1.NodeFirewallRule) bool {
	if r.Log || len(r.States) > 0 || interfaceMatch(r.InInterface) != "" || interfaceMatch(r.OutInterface) != "" {
		return false
	}
	// The sets' keys hold neither source ports nor ICMP types; limits keep
	// state a rule of its own must keep; a TCP reset needs the protocol
	// matched in the rule that answers.
	if len(r.SourcePorts) > 0 || len(r.ICMPTypes) > 0 || r.Limit != nil || r.ConnLimit != nil ||
		r.RejectWith == v1alpha1.RejectWithTCPReset {
		return false
	}
	if r.Mode == v1alpha1.PolicyModeAudit && r.Action != v1alpha1.ActionAccept {
		return false
	}
	// Rules without addresses go to both families.
	return 2*max(len(r.Ports), 1)*max(len(r.Sources), 1)*max(len(r.Destinations), 1) <= maxRuleElements
}

// chainBuilder appends one chain's rules and sets.
type chainBuilder struct {
	rs     *Ruleset
	ch     *Chain
	runs   int
	minRun int
	// exactMin is the least size of a run's set whose single keys go to
	// a hash set of their own.
	exactMin int
	scratch  *runScratch
	logs     *logBook
	// meters declares the meters of rules that keep state per source.
	meters meterMaker
}

// addRules appends a chain's API rules, turning runs into set lookups.
func (b *chainBuilder) addRules(rules []parsedRule) {
	for i := 0; i < len(rules); {
		j := i
		if rules[i].simple {
			for j < len(rules) && rules[j].simple && rules[j].verdict == rules[i].verdict {
				j++
			}
		}
		if j-i >= b.minRun {
			b.addRun(rules[i:j])
			i = j
			continue
		}
		b.ch.Rules = append(b.ch.Rules, expandRule(rules[i], &b.meters, b.logs)...)
		i++
	}
}

// setKey is one of the four sets of a run.
type setKey struct {
	fam   Family
	ports bool
}

var setKeys = [...]setKey{{FamilyIPv4, true}, {FamilyIPv4, false}, {FamilyIPv6, true}, {FamilyIPv6, false}}

// setIndex is the index of a set's key in setKeys.
func setIndex(fam Family, ports bool) int {
	i := 0
	if fam == FamilyIPv6 {
		i = 2
	}
	if !ports {
		i++
	}
	return i
}

// runScratch is the working memory of a Compile's runs, reused from run to
// run: the boxes of a run's sets, the addresses of its IPv6 sets, and the
// decomposer's. Only the elements are kept.
type runScratch struct {
	boxes  [len(setKeys)][]box32
	owners [len(setKeys)][]int32
	// merged gives all of a run's boxes one owner: Options.MergedRunCounters.
	merged bool
	// addrs are the address spans of the IPv6 sets, which their boxes
	// number until rankAddrs ranks them.
	addrs  [len(setKeys)][]span
	ranked []span32
	ends   []addrEnd
	tmp    []addrEnd
	points []u128
	all    []int32
	d      decomposer
}

// addRun appends the lookups of one run. A run whose rewrite is over
// budget is split in two runs, which is still exact: each half keeps the
// verdict and the order of the halves does not matter.
func (b *chainBuilder) addRun(rules []parsedRule) {
	sets, err := b.scratch.runSets(rules, b.ch.Name)
	switch {
	case err == nil:
		b.runs++
		b.addLookups(rules, &sets)
	case len(rules) > 1:
		b.addRun(rules[:len(rules)/2])
		b.addRun(rules[len(rules)/2:])
	default:
		b.ch.Rules = append(b.ch.Rules, expandRule(rules[0], &b.meters, b.logs)...)
	}
}

// runSets are the elements of a run's sets, by setKeys, and, by position
// in the set's key order, which fields some element does not have whole.
type runSets struct {
	elems      [len(setKeys)][]SetElement
	restricted [len(setKeys)][4]bool
}

// runSets turns a run's rules into the boxes of its sets, and each set's
// boxes into disjoint elements covering exactly their union.
func (sc *runScratch) runSets(rules []parsedRule, chain string) (runSets, error) {
	var sets runSets
	sc.makeBoxes(rules, chain)
	var names []string
	var portless []bool
	if !sc.merged {
		names, portless = make([]string, len(rules)), make([]bool, len(rules))
		for i := range rules {
			names[i], portless[i] = ruleName(&rules[i]), len(rules[i].Ports) == 0
		}
	}
	for i, k := range setKeys {
		if len(sc.boxes[i]) == 0 {
			continue
		}
		var skip []bool
		if k.ports {
			// The boxes of rules without ports, there only to take their
			// place (see makeBoxes).
			skip = portless
		}
		e, err := sc.disjoint(i, k, keyOrder(chain, k.ports), names, skip, &sets.restricted[i])
		if err != nil {
			return sets, err
		}
		sets.elems[i] = e
	}
	return sets, nil
}

// addLookups appends the sets of a run and the rules that look them up:
// per set key, the hash sets of the keys that are one once masked, when
// the set is large, then the set of the other elements, cut into port
// blocks when large too.
func (b *chainBuilder) addLookups(rules []parsedRule, sets *runSets) {
	verdict, comment := rules[0].verdict, runComment(rules)
	for i, k := range setKeys {
		if len(sets.elems[i]) == 0 {
			continue
		}
		fields := keyFields(keyOrder(b.ch.Name, k.ports), sets.restricted[i])
		name := setName(b.ch.Name, b.runs, k.fam, k.ports)
		ranged := sets.elems[i]
		if len(ranged) >= b.exactMin {
			// The set of single keys exists even when empty, so that a
			// rule becoming one or ceasing to be one changes elements
			// only.
			var classes []exactClass
			classes, ranged = splitExact(ranged, fields, k.fam, max(1, b.exactMin/8))
			for _, c := range classes {
				b.addLookup(Set{Name: name + c.suffix(), Family: k.fam, Fields: fields, Elements: c.elems, Exact: true,
					SAddrBits: c.sbits, DAddrBits: c.dbits, Counter: !b.scratch.merged}, nil, verdict, comment)
			}
		}
		for _, blk := range portBlocks(ranged, k.ports, fields) {
			b.addLookup(Set{Name: name + blk.suffix, Family: k.fam, Fields: fields, Elements: blk.elems, Counter: !b.scratch.merged},
				blk.ports, verdict, comment)
		}
	}
}

// addLookup appends a set and the rule that looks it up, which first
// checks the destination port is in ports, if not nil. The rule counts
// only when its set's elements do not: their counters add up to its.
func (b *chainBuilder) addLookup(s Set, ports *PortInterval, verdict Verdict, comment string) {
	b.rs.Sets = append(b.rs.Sets, s)
	r := Rule{
		Family:  s.Family,
		Lookup:  s.Name,
		Counter: !s.Counter,
		Verdict: verdict,
		Comment: comment,
	}
	if ports != nil {
		r.DPorts = []PortInterval{*ports}
	}
	b.ch.Rules = append(b.ch.Rules, r)
}

// keyOrder orders a set's key fields. The kernel's lookup narrows the
// candidate elements field by field and pays, after each field, for every
// element still in the running, so the field that tells elements apart
// best goes first: the port in sets with ports; then the address the
// chain's rules usually name, the source on input and forward, the
// destination on output; the protocol, which has few values, goes last.
// Boxes and elements keep their fields in this order, so the elements come
// out of the rewrite sorted by key. The slices it returns are shared:
// callers must not change them.
func keyOrder(chain string, ports bool) []SetField {
	i := 0
	if chain == ChainOutput {
		i = 1
	}
	if ports {
		return keyOrders[i][:]
	}
	return keyOrders[i][1:]
}

// keyOrders are the key orders with ports, source first and destination
// first; without ports they lose the port.
var keyOrders = [2][4]SetField{
	{FieldDPort, FieldSAddr, FieldDAddr, FieldL4Proto},
	{FieldDPort, FieldDAddr, FieldSAddr, FieldL4Proto},
}

// keyFields drops from a key order the address fields that no element
// restricts (every element has the whole family there, as the destination
// of most input rules): such a field would match anything, yet cost the
// kernel a bit in every bucket of every one of its groups for each element,
// and every lookup a pass over them. A set without ports keeps at least
// one address field, since the kernel's concatenated interval sets need
// two fields. Dropping a field that is the same in every element keeps the
// elements sorted.
//
// restricted says, by position in the order, which fields some element
// does not have whole.
func keyFields(order []SetField, restricted [4]bool) []SetField {
	ports := order[0] == FieldDPort
	var fields []SetField
	for i, f := range order {
		switch {
		case f != FieldSAddr && f != FieldDAddr, restricted[i]:
		case !ports && i == 0 && !restricted[1]:
			// Keep the first address field when both are unused.
		default:
			continue
		}
		fields = append(fields, f)
	}
	return fields
}

// setName names the set that holds run n (counted from 1 per chain) of a
// chain for one IP family, as "<chain>-run-<n>-v4". Sets keyed on
// protocol, destination port and addresses take that name; sets keyed on
// protocol and addresses alone add "-noports". The sets of a large run
// add a suffix each: "-<first port>" for a port block of the interval set,
// "-exact" for the hash set of single keys, "-exact-s24" (or "-d24") for
// the hash set of /24 source (or destination) prefixes.
func setName(chain string, run int, fam Family, ports bool) string {
	name := chain + "-run-" + strconv.Itoa(run) + "-" + fam.String()
	if !ports {
		name += "-noports"
	}
	return name
}

// ruleName is what names a rule's counters: its nftables rules' comment
// when linear, its set elements' inside a run.
func ruleName(r *parsedRule) string {
	return text.Truncate(r.Policy+"/"+r.Name, maxComment)
}

// runComment names a run by its first rule. It leaves out what adding or
// removing a rule later in the run would change (the last rule, the
// count), so that such a change touches set elements only.
func runComment(rules []parsedRule) string {
	return text.Truncate("run from "+rules[0].Policy+"/"+rules[0].Name, maxComment)
}
