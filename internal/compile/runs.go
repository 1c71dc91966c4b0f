package compile

import (
	"cmp"
	"encoding/binary"
	"errors"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"

	"github.com/nodefw/nodefw/api/v1alpha1"
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

// errBudget reports a set whose disjoint rewrite would take too long.
var errBudget = errors.New("disjoint rewrite over budget")

// simpleRule reports whether an API rule can join a run.
func simpleRule(r *v1alpha1.NodeFirewallRule) bool {
	if r.Log || len(r.States) > 0 || interfaceMatch(r.InInterface) != "" || interfaceMatch(r.OutInterface) != "" {
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
}

// addRules appends a chain's API rules, turning runs into set lookups.
func (b *chainBuilder) addRules(rules []parsedRule) {
	for i := 0; i < len(rules); {
		j := i
		if rules[i].simple {
			for j < len(rules) && rules[j].Action == rules[i].Action && rules[j].simple {
				j++
			}
		}
		if j-i >= b.minRun {
			b.addRun(rules[i:j])
			i = j
			continue
		}
		b.ch.Rules = append(b.ch.Rules, expandRule(rules[i])...)
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
	boxes [len(setKeys)][]box32
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
	sc := b.scratch
	sc.reserveBoxes(rules)
	bm := boxMaker{boxes: sc.boxes, addrs: sc.addrs}
	at := boxLayouts[layoutIndex(b.ch.Name, true)]
	atNoPorts := boxLayouts[layoutIndex(b.ch.Name, false)]
	for i := range rules {
		if len(rules[i].Ports) > 0 {
			bm.add(&rules[i], at)
		} else {
			bm.add(&rules[i], atNoPorts)
		}
	}
	sc.boxes, sc.addrs = bm.boxes, bm.addrs
	var elems [len(setKeys)][]SetElement
	var restricted [len(setKeys)][4]bool
	for i, k := range setKeys {
		if len(sc.boxes[i]) == 0 {
			continue
		}
		e, err := sc.disjoint(i, k, keyOrder(b.ch.Name, k.ports), &restricted[i])
		if err != nil {
			if len(rules) > 1 {
				b.addRun(rules[:len(rules)/2])
				b.addRun(rules[len(rules)/2:])
			} else {
				b.ch.Rules = append(b.ch.Rules, expandRule(rules[0])...)
			}
			return
		}
		elems[i] = e
	}
	b.runs++
	comment := runComment(rules)
	for i, k := range setKeys {
		if len(elems[i]) == 0 {
			continue
		}
		fields := keyFields(keyOrder(b.ch.Name, k.ports), restricted[i])
		name := SetName(b.ch.Name, b.runs, k.fam, k.ports)
		lookup := func(s Set, ports *PortInterval) {
			b.rs.Sets = append(b.rs.Sets, s)
			r := Rule{
				Family:  k.fam,
				Lookup:  s.Name,
				Counter: true,
				Verdict: verdicts[rules[0].Action],
				Comment: comment,
			}
			if ports != nil {
				r.DPorts = []PortInterval{*ports}
			}
			b.ch.Rules = append(b.ch.Rules, r)
		}
		ranged := elems[i]
		if len(ranged) >= b.exactMin {
			// Every element of a run has the run's verdict, so elements
			// that are one key once the addresses are masked can live in
			// hash sets of their own, one per pair of prefix lengths. The
			// set of single keys exists even when empty, so that a rule
			// becoming one or ceasing to be one changes elements only.
			var classes []exactClass
			classes, ranged = splitExact(ranged, fields, k.fam, max(1, b.exactMin/8))
			for _, c := range classes {
				lookup(Set{Name: name + c.suffix(), Family: k.fam, Fields: fields, Elements: c.elems, Exact: true,
					SAddrBits: c.sbits, DAddrBits: c.dbits}, nil)
			}
		}
		for _, blk := range portBlocks(ranged, k.ports, fields) {
			lookup(Set{Name: name + blk.suffix, Family: k.fam, Fields: fields, Elements: blk.elems}, blk.ports)
		}
	}
}

// exactSuffix starts the suffix of the name of a run's hash sets.
const exactSuffix = "-exact"

// exactClass is the elements of a run's set that are one key once the
// addresses are masked to sbits and dbits (0: not masked).
type exactClass struct {
	sbits, dbits int
	elems        []SetElement
}

// suffix names the class's set: "-exact", then "-s<bits>" and "-d<bits>"
// for masked addresses.
func (c exactClass) suffix() string {
	s := exactSuffix
	if c.sbits > 0 {
		s += "-s" + strconv.Itoa(c.sbits)
	}
	if c.dbits > 0 {
		s += "-d" + strconv.Itoa(c.dbits)
	}
	return s
}

// exactKey tells whether an element is one protocol, one port and
// address prefixes, and the prefix lengths, 0 for a single address.
func exactKey(e *SetElement, fields []SetField, fam Family) (sbits, dbits int, ok bool) {
	full := 32
	if fam == FamilyIPv6 {
		full = 128
	}
	for _, f := range fields {
		switch f {
		case FieldL4Proto:
			if e.L4Proto.First != e.L4Proto.Last {
				return 0, 0, false
			}
		case FieldDPort:
			if e.DPort.First != e.DPort.Last {
				return 0, 0, false
			}
		case FieldSAddr, FieldDAddr:
			r := e.SAddr
			if f == FieldDAddr {
				r = e.DAddr
			}
			bits, isPrefix := prefixBits(r)
			if !isPrefix || bits == 0 {
				return 0, 0, false
			}
			if bits == full {
				bits = 0
			}
			if f == FieldSAddr {
				sbits = bits
			} else {
				dbits = bits
			}
		}
	}
	return sbits, dbits, true
}

// prefixBits returns the length of the prefix that is exactly r, if any.
func prefixBits(r AddrRange) (int, bool) {
	lo, hi := addrU128(r.First), addrU128(r.Last)
	// lo ^ hi must be the host part: ones after the prefix, and lo zero
	// there.
	x := u128{hi: lo.hi ^ hi.hi, lo: lo.lo ^ hi.lo}
	if x.hi&(x.hi+1) != 0 || (x.hi != 0 && x.lo != ^uint64(0)) || x.lo&(x.lo+1) != 0 ||
		lo.hi&x.hi != 0 || lo.lo&x.lo != 0 {
		return 0, false
	}
	host := bits.OnesCount64(x.hi) + bits.OnesCount64(x.lo)
	return r.First.BitLen() - host, true
}

// splitExact takes the elements that are one key once the addresses are
// masked out of elems: into the class of single keys, which it always
// returns (first), and into classes of masked prefixes that have at least
// classMin elements. It compacts the others in place. Every class and the
// rest keep their order.
func splitExact(elems []SetElement, fields []SetField, fam Family, classMin int) (classes []exactClass, ranged []SetElement) {
	type class struct{ sbits, dbits int }
	count := map[class]int{}
	for i := range elems {
		if s, d, ok := exactKey(&elems[i], fields, fam); ok {
			count[class{s, d}]++
		}
	}
	keep := []class{{0, 0}}
	for c, n := range count {
		if c != (class{}) && n >= classMin {
			keep = append(keep, c)
		}
	}
	slices.SortFunc(keep[1:], func(a, b class) int { return cmp.Or(cmp.Compare(a.sbits, b.sbits), cmp.Compare(a.dbits, b.dbits)) })
	index := make(map[class]int, len(keep))
	classes = make([]exactClass, len(keep))
	for i, c := range keep {
		index[c] = i
		classes[i] = exactClass{sbits: c.sbits, dbits: c.dbits, elems: make([]SetElement, 0, count[c])}
	}
	w := 0
	for i := range elems {
		if s, d, ok := exactKey(&elems[i], fields, fam); ok {
			if j, kept := index[class{s, d}]; kept {
				classes[j].elems = append(classes[j].elems, elems[i])
				continue
			}
		}
		elems[w] = elems[i]
		w++
	}
	return classes, elems[:w:w]
}

// Port blocks. The kernel deletes an element from a concatenated interval
// set by walking the set's elements from the first to it, so changing one
// rule in a set of n elements costs O(n). A set with ports and more than
// portBlockMin elements is therefore cut by destination port into blocks
// of portBlockWidth ports (an element across a border is cut in two), each
// block a set of its own, empty or not, behind a rule that first checks
// the port range: a packet walks a few cheap port comparisons and still
// makes one lookup, in a smaller set, and a change walks one block. The
// borders are fixed, so a change moves no element but its own from one
// block to another.
const (
	portBlockMin    = 1024
	portBlockWidth  = 4096
	portBlocksCount = 65536 / portBlockWidth
)

// block is the elements of one set and the ports its lookup is for, if
// the set is one block of a run's set.
type block struct {
	suffix string
	ports  *PortInterval
	elems  []SetElement
}

func portBlocks(elems []SetElement, ports bool, fields []SetField) []block {
	if !ports || len(elems) <= portBlockMin {
		return []block{{elems: elems}}
	}
	if out, ok := stretchBlocks(elems); ok {
		return out
	}
	byBlock := map[int][]SetElement{}
	cut := map[int]bool{}
	for _, e := range elems {
		first, last := int(e.DPort.First)/portBlockWidth, int(e.DPort.Last)/portBlockWidth
		for i := first; i <= last; i++ {
			piece := e
			piece.DPort = PortInterval{
				First: uint16(max(int(e.DPort.First), i*portBlockWidth)),
				Last:  uint16(min(int(e.DPort.Last), (i+1)*portBlockWidth-1)),
			}
			byBlock[i] = append(byBlock[i], piece)
			cut[i] = cut[i] || first != last
		}
	}
	// Every block, even an empty one: a rule moving to an empty block
	// then changes elements only.
	var out []block
	for i := range portBlocksCount {
		if cut[i] {
			// A cut piece starts at the border, maybe before elements
			// that were ahead of it.
			sortElements(byBlock[i], fields)
		}
		out = append(out, blockOf(i, byBlock[i]))
	}
	return out
}

// stretchBlocks cuts elements sorted by port first into the port blocks,
// each a stretch of them, unless an element is across a border (ok false).
func stretchBlocks(elems []SetElement) (out []block, ok bool) {
	out = make([]block, 0, portBlocksCount)
	start := 0
	for i := range elems {
		p := &elems[i].DPort
		b := int(p.First) / portBlockWidth
		if int(p.Last)/portBlockWidth != b {
			return nil, false
		}
		for len(out) < b {
			out = append(out, blockOf(len(out), elems[start:i:i]))
			start = i
		}
	}
	for len(out) < portBlocksCount {
		out = append(out, blockOf(len(out), elems[start:]))
		start = len(elems)
	}
	return out, true
}

func blockOf(i int, elems []SetElement) block {
	return block{
		suffix: "-" + strconv.Itoa(i*portBlockWidth),
		ports:  &PortInterval{uint16(i * portBlockWidth), uint16((i+1)*portBlockWidth - 1)},
		elems:  elems,
	}
}

// sortElements sorts elements by key: the first value of each field in
// key order, then the last ones.
func sortElements(elems []SetElement, fields []SetField) {
	rangeOf := func(e *SetElement, f SetField) (span, bool) {
		switch f {
		case FieldL4Proto:
			return span{u128{lo: uint64(e.L4Proto.First)}, u128{lo: uint64(e.L4Proto.Last)}}, true
		case FieldDPort:
			return span{u128{lo: uint64(e.DPort.First)}, u128{lo: uint64(e.DPort.Last)}}, true
		case FieldSAddr:
			return span{addrU128(e.SAddr.First), addrU128(e.SAddr.Last)}, true
		case FieldDAddr:
			return span{addrU128(e.DAddr.First), addrU128(e.DAddr.Last)}, true
		}
		return span{}, false
	}
	slices.SortFunc(elems, func(a, b SetElement) int {
		for _, byLast := range []bool{false, true} {
			for _, f := range fields {
				x, _ := rangeOf(&a, f)
				y, _ := rangeOf(&b, f)
				c := x.lo.cmp(y.lo)
				if byLast {
					c = x.hi.cmp(y.hi)
				}
				if c != 0 {
					return c
				}
			}
		}
		return 0
	})
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

// boxLayout is where each field goes in a box: its place in a key order;
// port is -1 in an order without the port.
type boxLayout struct{ proto, port, src, dst int }

func layoutOf(order []SetField) boxLayout {
	l := boxLayout{port: -1}
	for k, f := range order {
		switch f {
		case FieldL4Proto:
			l.proto = k
		case FieldDPort:
			l.port = k
		case FieldSAddr:
			l.src = k
		case FieldDAddr:
			l.dst = k
		}
	}
	return l
}

// boxLayouts are the layouts of the key orders, as layoutIndex numbers
// them.
var boxLayouts = func() (out [4]boxLayout) {
	for _, chain := range [...]string{ChainInput, ChainOutput} {
		for _, ports := range [...]bool{true, false} {
			out[layoutIndex(chain, ports)] = layoutOf(keyOrder(chain, ports))
		}
	}
	return out
}()

// layoutIndex numbers the key orders of a chain's sets, with ports and
// without.
func layoutIndex(chain string, ports bool) int {
	i := 0
	if chain == ChainOutput {
		i = 2
	}
	if !ports {
		i++
	}
	return i
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

// runComment names a run by its first rule. It leaves out what adding or
// removing a rule later in the run would change (the last rule, the
// count), so that such a change touches set elements only.
func runComment(rules []parsedRule) string {
	return truncate("run from "+rules[0].Policy+"/"+rules[0].Name, maxComment)
}

// u128 is a key field's value: a protocol, a port or an address.
type u128 struct{ hi, lo uint64 }

// less and cmp are small enough to inline: the decomposer compares a lot.
func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) cmp(b u128) int {
	if a.less(b) {
		return -1
	}
	if a == b {
		return 0
	}
	return 1
}

// next returns a+1 (wrapping at the top, which callers rule out).
func (a u128) next() u128 {
	if a.lo == ^uint64(0) {
		return u128{a.hi + 1, 0}
	}
	return u128{a.hi, a.lo + 1}
}

func (a u128) prev() u128 {
	if a.lo == 0 {
		return u128{a.hi - 1, ^uint64(0)}
	}
	return u128{a.hi, a.lo - 1}
}

// addr4 is the IPv4 address of the low 32 bits of v.
func addr4(v uint64) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func addrU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func u128Addr(v u128, fam Family) netip.Addr {
	if fam == FamilyIPv4 {
		return addr4(v.lo)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

// span is an inclusive range of one key field.
type span struct{ lo, hi u128 }

// box is a match in one set, or an element: a span per key field, in key
// order.
type box [4]span

func prefixSpan(p netip.Prefix) span {
	a := addrU128(p.Addr())
	host := p.Addr().BitLen() - p.Bits()
	var mask u128
	switch {
	case host >= 128:
		mask = u128{^uint64(0), ^uint64(0)}
	case host >= 64:
		mask = u128{^uint64(0) >> (128 - host), ^uint64(0)}
	case host > 0:
		mask = u128{0, ^uint64(0) >> (64 - host)}
	}
	return span{u128{a.hi &^ mask.hi, a.lo &^ mask.lo}, u128{a.hi | mask.hi, a.lo | mask.lo}}
}

// familyAll is the span of every address of a family.
func familyAll(fam Family) span {
	if fam == FamilyIPv4 {
		return span{u128{}, u128{lo: 1<<32 - 1}}
	}
	return span{u128{}, u128{^uint64(0), ^uint64(0)}}
}

// Boxes in 32 bits. The decomposer works on boxes whose fields are 32-bit
// numbers: a quarter of the memory of 128-bit ones, for as many boxes as
// rules, and cheaper to compare. Protocols, ports and IPv4 addresses are
// numbers as they are. An IPv6 address is numbered by the rank of the
// stretch of addresses it falls in, between two consecutive addresses at
// which a span of its set starts or after which one ends (see rankAddrs).
// The renumbering keeps order, and spans that touch keep touching, which
// is all the decomposer looks at: its result, numbered back, is the same.

// span32 is an inclusive range of one key field, in 32-bit numbers.
type span32 struct{ lo, hi uint32 }

func (s span32) cmp(o span32) int {
	if s.lo != o.lo {
		return cmp.Compare(s.lo, o.lo)
	}
	return cmp.Compare(s.hi, o.hi)
}

// box32 is a rule's match in one set: a span32 per key field, in key
// order.
type box32 [4]span32

// reserveBoxes empties the boxes and makes room for a run's.
func (sc *runScratch) reserveBoxes(rules []parsedRule) {
	var count [len(setKeys)]int
	for i := range rules {
		r := &rules[i]
		for j, fam := range families {
			count[setIndex(fam, len(r.Ports) > 0)] += int(r.boxes[j])
		}
	}
	for i, n := range count {
		if cap(sc.boxes[i]) < n {
			sc.boxes[i] = make([]box32, 0, n)
		}
		sc.boxes[i] = sc.boxes[i][:0]
		// Mostly an address a box, and all addresses.
		if setKeys[i].fam == FamilyIPv6 && n > 0 && cap(sc.addrs[i]) < n+1 {
			sc.addrs[i] = make([]span, 0, n+1)
		}
		sc.addrs[i] = sc.addrs[i][:0]
	}
}

// boxMaker turns a run's rules into the boxes of its sets.
type boxMaker struct {
	boxes      [len(setKeys)][]box32
	addrs      [len(setKeys)][]span
	whole      [len(setKeys)]uint32 // number of all addresses, plus one; 0: none yet
	ports      []PortInterval
	portSpans  []span32
	srcs, dsts [len(families)][]span // a rule's, by family
	srcFields  []span32              // of one family, as box fields
	dstFields  []span32
}

// familyAllSpans are the whole of each family's addresses, for rules
// without sources or destinations; not to be changed.
var familyAllSpans = [len(families)][]span{{familyAll(FamilyIPv4)}, {familyAll(FamilyIPv6)}}

// add appends the boxes of one simple rule to the sets of its run, their
// fields where at says: per family it matches in (see familyMatches), a
// box per canonical port range, source and destination.
func (bm *boxMaker) add(r *parsedRule, at boxLayout) {
	proto := span32{0, 255}
	if r.proto != 0 {
		proto = span32{uint32(r.proto), uint32(r.proto)}
	}
	ports := len(r.Ports) > 0
	bm.portSpans = bm.portSpans[:0]
	switch len(r.Ports) {
	case 0:
		// One box per address pair, its port field unused.
		bm.portSpans = append(bm.portSpans, span32{})
	case 1:
		p := r.Ports[0]
		bm.portSpans = append(bm.portSpans, span32{uint32(p.Port), uint32(p.Last())})
	default:
		bm.ports = bm.ports[:0]
		for _, p := range r.Ports {
			bm.ports = append(bm.ports, PortInterval{First: uint16(p.Port), Last: uint16(p.Last())})
		}
		for _, p := range compactPorts(bm.ports) {
			bm.portSpans = append(bm.portSpans, span32{uint32(p.First), uint32(p.Last)})
		}
	}
	if len(r.addrs) == 1 {
		// The common rule, one source or one destination: one family, one
		// box per port.
		a := r.addrs[0]
		fam := prefixFamily(a)
		if pf := protoFamily(r.proto); pf != FamilyAny && pf != fam {
			return
		}
		set := setIndex(fam, ports)
		s, all := bm.field(set, fam, prefixSpan(a)), bm.field(set, fam, familyAll(fam))
		if r.nsrc == 1 {
			bm.emit(set, at, proto, s, all)
		} else {
			bm.emit(set, at, proto, all, s)
		}
		return
	}
	addrSpans(&bm.srcs, r.src())
	addrSpans(&bm.dsts, r.dst())
	for i, fam := range families {
		srcs, dsts := bm.srcs[i], bm.dsts[i]
		if !r.inFamily(fam, len(srcs), len(dsts)) {
			continue
		}
		if len(srcs) == 0 {
			srcs = familyAllSpans[i]
		}
		if len(dsts) == 0 {
			dsts = familyAllSpans[i]
		}
		set := setIndex(fam, ports)
		bm.srcFields, bm.dstFields = bm.srcFields[:0], bm.dstFields[:0]
		for _, s := range srcs {
			bm.srcFields = append(bm.srcFields, bm.field(set, fam, s))
		}
		for _, s := range dsts {
			bm.dstFields = append(bm.dstFields, bm.field(set, fam, s))
		}
		for _, src := range bm.srcFields {
			for _, dst := range bm.dstFields {
				bm.emit(set, at, proto, src, dst)
			}
		}
	}
}

// emit appends to a set the boxes of a source and destination, one per
// port span.
func (bm *boxMaker) emit(set int, at boxLayout, proto, src, dst span32) {
	out := &bm.boxes[set]
	for _, p := range bm.portSpans {
		*out = append(*out, box32{})
		b := &(*out)[len(*out)-1]
		b[at.proto], b[at.src], b[at.dst] = proto, src, dst
		if at.port >= 0 {
			b[at.port] = p
		}
	}
}

// field is an address span as a box field of a set: as it is for IPv4;
// for IPv6, numbered by its place among the set's addresses, where it
// adds it, until rankAddrs ranks them. All addresses, the most common
// span, have one number per set.
func (bm *boxMaker) field(set int, fam Family, s span) span32 {
	if fam == FamilyIPv4 {
		return span32{uint32(s.lo.lo), uint32(s.hi.lo)}
	}
	whole := s == familyAll(FamilyIPv6)
	if whole && bm.whole[set] > 0 {
		return span32{bm.whole[set] - 1, bm.whole[set] - 1}
	}
	n := uint32(len(bm.addrs[set]))
	bm.addrs[set] = append(bm.addrs[set], s)
	if whole {
		bm.whole[set] = n + 1
	}
	return span32{n, n}
}

// addrSpans sets out, by family, to the spans of addrs, canonical as
// compactPrefixes makes them: sorted, without those another covers.
func addrSpans(out *[len(families)][]span, addrs []netip.Prefix) {
	for i := range out {
		out[i] = out[i][:0]
	}
	for _, p := range addrs {
		i := 0
		if !p.Addr().Is4() {
			i = 1
		}
		out[i] = append(out[i], prefixSpan(p))
	}
	for i, spans := range out {
		if len(spans) < 2 {
			continue
		}
		// Prefixes nest or are disjoint. Sorted by first address, the
		// larger first, one is covered only by the last one kept before
		// it.
		slices.SortFunc(spans, func(a, b span) int {
			if c := a.lo.cmp(b.lo); c != 0 {
				return c
			}
			return b.hi.cmp(a.hi)
		})
		kept := spans[:1]
		for _, s := range spans[1:] {
			if kept[len(kept)-1].hi.less(s.lo) {
				kept = append(kept, s)
			}
		}
		out[i] = kept
	}
}

// addrEnd is where an address span starts, or the address after its
// last: ref is twice the span's index, plus one for the end.
type addrEnd struct {
	addr u128
	ref  int32
}

// rankAddrs numbers the address fields of an IPv6 set's boxes, which hold
// indices into spans, by rank. The points are the addresses at which a
// span starts or after which one ends, sorted; a span becomes the ranks of
// its first point and of the last point before its end. Rank r stands for
// the addresses from point r to the one before point r+1, or to the last
// address. It returns the points, to number the elements back.
func (sc *runScratch) rankAddrs(boxes []box32, spans []span, at boxLayout) []u128 {
	last := familyAll(FamilyIPv6).hi
	ends := slices.Grow(sc.ends[:0], 2*len(spans))
	for i, s := range spans {
		ends = append(ends, addrEnd{s.lo, int32(2 * i)})
		if s.hi != last {
			ends = append(ends, addrEnd{s.hi.next(), int32(2*i + 1)})
		}
	}
	ends, sc.tmp = sortAddrEnds(ends, sc.tmp)
	sc.ends = ends
	ranked := slices.Grow(sc.ranked[:0], len(spans))[:len(spans)]
	sc.ranked = ranked
	points := slices.Grow(sc.points[:0], len(ends))
	for _, e := range ends {
		if len(points) == 0 || points[len(points)-1] != e.addr {
			points = append(points, e.addr)
		}
		r := uint32(len(points) - 1)
		if e.ref%2 == 0 {
			ranked[e.ref/2].lo = r
		} else {
			ranked[e.ref/2].hi = r - 1
		}
	}
	sc.points = points
	for i, s := range spans {
		if s.hi == last {
			ranked[i].hi = uint32(len(points) - 1)
		}
	}
	for i := range boxes {
		b := &boxes[i]
		b[at.src], b[at.dst] = ranked[b[at.src].lo], ranked[b[at.dst].lo]
	}
	return points
}

// sortAddrEnds sorts ends by address, using tmp (which it returns too,
// maybe grown) as room; see sortStarts.
func sortAddrEnds(s, tmp []addrEnd) (sorted, room []addrEnd) {
	if len(s) < 256 {
		slices.SortFunc(s, func(a, b addrEnd) int { return a.addr.cmp(b.addr) })
		return s, tmp
	}
	var or, and u128 = u128{}, u128{^uint64(0), ^uint64(0)}
	for _, e := range s {
		or.hi, or.lo = or.hi|e.addr.hi, or.lo|e.addr.lo
		and.hi, and.lo = and.hi&e.addr.hi, and.lo&e.addr.lo
	}
	tmp = slices.Grow(tmp[:0], len(s))[:len(s)]
	for i := range 16 {
		word, shift := or.lo^and.lo, 8*i
		if i >= 8 {
			word, shift = or.hi^and.hi, 8*(i-8)
		}
		if (word>>shift)&0xff == 0 {
			continue
		}
		byteOf := func(e *addrEnd) int {
			if i >= 8 {
				return int(e.addr.hi>>shift) & 0xff
			}
			return int(e.addr.lo>>shift) & 0xff
		}
		var count [257]int
		for j := range s {
			count[byteOf(&s[j])+1]++
		}
		for j := 1; j < len(count); j++ {
			count[j] += count[j-1]
		}
		for j := range s {
			v := byteOf(&s[j])
			tmp[count[v]] = s[j]
			count[v]++
		}
		s, tmp = tmp, s
	}
	return s, tmp
}

// disjoint rewrites the boxes of a set, setKeys[set], their fields in
// order, as disjoint set elements covering exactly their union, sorted by
// key. It sets restricted[i] when some element does not have the whole of
// field order[i].
func (sc *runScratch) disjoint(set int, k setKey, order []SetField, restricted *[4]bool) ([]SetElement, error) {
	boxes := sc.boxes[set]
	at := layoutOf(order)
	w := elementWriter{at: at, fam: k.fam}
	d := &sc.d
	d.dims, d.work, d.budget = len(order), 0, 1<<16+16*len(boxes)
	d.boxes = boxes
	d.pieces = d.pieces[:0]
	for i, f := range order {
		switch f {
		case FieldL4Proto:
			d.max[i] = 255
		case FieldDPort:
			d.max[i] = 65535
		default:
			d.max[i] = 1<<32 - 1
		}
	}
	if k.fam == FamilyIPv6 {
		w.points = sc.rankAddrs(boxes, sc.addrs[set], at)
		d.max[at.src] = uint32(len(w.points) - 1)
		d.max[at.dst] = d.max[at.src]
	}
	all := slices.Grow(sc.all[:0], len(boxes))
	for i := range boxes {
		all = append(all, int32(i))
	}
	sc.all = all
	// The first field is cut once, for all boxes: its pieces, about one
	// per box, go to a slice of their own rather than to d.pieces (the
	// first level's, which no other call uses).
	root, err := d.cut(all, 0, slices.Grow(d.levels[0].out[:0], len(boxes)))
	d.levels[0].out = root
	if err != nil {
		return nil, err
	}
	n := 0
	for _, p := range root {
		n += d.leaves(p.sub, 1)
	}
	w.out = make([]SetElement, 0, n)
	// Most pieces have one box over them, read out of order. Copying a
	// few at a time first lets the reads overlap.
	var batch [64]box32
	for len(root) > 0 {
		ps := root[:min(len(root), len(batch))]
		root = root[len(ps):]
		for i, p := range ps {
			if p.sub.n < 0 {
				batch[i] = d.boxes[p.sub.start]
			}
		}
		for i, p := range ps {
			if p.sub.n < 0 {
				batch[i][0] = p.s
				w.leaf(&batch[i])
				continue
			}
			w.path[0] = p.s
			d.walk(p.sub, 1, &w)
		}
	}
	*restricted = w.restricted
	return w.out, nil
}

// elementWriter turns the paths of a tree into set elements.
type elementWriter struct {
	at         boxLayout
	fam        Family
	points     []u128  // of an IPv6 set, see rankAddrs
	restricted [4]bool // by field, whether some element does not have it whole
	path       box32
	out        []SetElement
}

// leaf appends the element of a path. It sets the element's fields one
// by one, in place: building it aside and copying it costs more.
func (w *elementWriter) leaf(b *box32) {
	at := &w.at
	// out has room for every leaf.
	w.out = w.out[:len(w.out)+1]
	e := &w.out[len(w.out)-1]
	e.L4Proto.First, e.L4Proto.Last = uint8(b[at.proto].lo), uint8(b[at.proto].hi)
	if at.port >= 0 {
		e.DPort.First, e.DPort.Last = uint16(b[at.port].lo), uint16(b[at.port].hi)
	} else {
		// A set without the port field matches any.
		e.DPort.Last = 65535
	}
	if !w.setAddrRange(&e.SAddr, b[at.src]) {
		w.restricted[at.src] = true
	}
	if !w.setAddrRange(&e.DAddr, b[at.dst]) {
		w.restricted[at.dst] = true
	}
}

// setAddrRange sets r to the addresses of an address field's span, and
// reports whether they are all the family's.
func (w *elementWriter) setAddrRange(r *AddrRange, s span32) (whole bool) {
	if w.fam == FamilyIPv4 {
		r.First, r.Last = addr4(uint64(s.lo)), addr4(uint64(s.hi))
		return s == span32{0, 1<<32 - 1}
	}
	lo, hi := w.points[s.lo], familyAll(FamilyIPv6).hi
	if int(s.hi)+1 < len(w.points) {
		hi = w.points[s.hi+1].prev()
	}
	r.First, r.Last = u128Addr(lo, FamilyIPv6), u128Addr(hi, FamilyIPv6)
	return span{lo, hi} == familyAll(FamilyIPv6)
}

// walk writes the elements of a union over the fields from depth on, in
// order, below the path to it.
func (d *decomposer) walk(ps pieces, depth int, w *elementWriter) {
	if ps.n < 0 {
		copy(w.path[depth:d.dims], d.boxes[ps.start][depth:d.dims])
		w.leaf(&w.path)
		return
	}
	for _, p := range d.pieces[ps.start : ps.start+ps.n] {
		w.path[depth] = p.s
		if depth == d.dims-1 {
			w.leaf(&w.path)
			continue
		}
		d.walk(p.sub, depth+1, w)
	}
}

// leaves counts the leaves of a union over the fields from depth on: the
// elements it becomes.
func (d *decomposer) leaves(ps pieces, depth int) int {
	if ps.n < 0 {
		return 1
	}
	if depth == d.dims-1 {
		return int(ps.n)
	}
	n := 0
	for _, p := range d.pieces[ps.start : ps.start+ps.n] {
		n += d.leaves(p.sub, depth+1)
	}
	return n
}

// piece is a span of one field and, below the last field, the union of
// the boxes' remaining fields over it.
type piece struct {
	s   span32
	sub pieces
}

// pieces is a union of boxes over their fields from some depth on: a
// stretch of a decomposer's pieces, one per span of the field at that
// depth, or, when n is -1, the fields of the one box numbered start (which
// is its own union, and common: most spans of the first field have a
// single box over them).
type pieces struct{ start, n int32 }

// equalPieces reports whether two unions over the fields from depth on are
// the same.
func (d *decomposer) equalPieces(a, b pieces, depth int) bool {
	switch {
	case a.n < 0 && b.n < 0:
		return slices.Equal(d.boxes[a.start][depth:d.dims], d.boxes[b.start][depth:d.dims])
	case a.n < 0:
		a, b = b, a
		fallthrough
	case b.n < 0:
		// A tree equals a box when it is the box's chain of spans.
		if a.n != 1 || d.pieces[a.start].s != d.boxes[b.start][depth] {
			return false
		}
		return depth == d.dims-1 || d.equalPieces(d.pieces[a.start].sub, b, depth+1)
	}
	if a.n != b.n {
		return false
	}
	for i := range a.n {
		x, y := &d.pieces[a.start+i], &d.pieces[b.start+i]
		if x.s != y.s || depth < d.dims-1 && !d.equalPieces(x.sub, y.sub, depth+1) {
			return false
		}
	}
	return true
}

// decomposer computes the union of boxes field by field: it cuts field k
// at every box boundary, takes the union of the remaining fields of the
// boxes over each cut, and joins neighbouring cuts whose unions are equal.
// The result is the union's canonical partition: maximal spans of field k
// over which the rest is the same.
//
// Boxes are numbered, and trees live in one slice, pieces, so that neither
// costs an allocation apiece nor holds pointers for the collector to
// chase; each field's calls have working memory of their own, reused from
// call to call.
type decomposer struct {
	dims   int
	max    [4]uint32 // each field's largest value
	work   int
	budget int
	boxes  []box32
	pieces []piece
	levels [4]level
}

// level is the working memory of the decomposer's calls for one field.
type level struct {
	sorted   []boxStart
	tmp      []boxStart
	active   []int32
	activeHi []uint32 // where each active box ends
	out      []piece
	spans    []span32
}

// boxStart is a box and its span in the field being cut, kept with it so
// that the sweep reads the boxes in the order it meets them.
type boxStart struct {
	span32
	box int32
}

// union returns the union of boxes over the fields from k on.
func (d *decomposer) union(boxes []int32, k int) (pieces, error) {
	if len(boxes) == 1 {
		return pieces{boxes[0], -1}, nil
	}
	if k == d.dims-1 {
		spans := append(d.levels[k].spans[:0], make([]span32, len(boxes))...)
		d.levels[k].spans = spans
		for i, b := range boxes {
			spans[i] = d.boxes[b][k]
		}
		slices.SortFunc(spans, span32.cmp)
		start := len(d.pieces)
		for _, s := range spans {
			if n := len(d.pieces); n > start {
				last := &d.pieces[n-1].s
				if last.hi == d.max[k] || s.lo <= last.hi+1 {
					last.hi = max(last.hi, s.hi)
					continue
				}
			}
			d.pieces = append(d.pieces, piece{s: s})
		}
		return pieces{int32(start), int32(len(d.pieces) - start)}, nil
	}
	lv := &d.levels[k]
	out, err := d.cut(boxes, k, lv.out[:0])
	lv.out = out
	if err != nil {
		return pieces{}, err
	}
	start := len(d.pieces)
	d.pieces = append(d.pieces, out...)
	return pieces{int32(start), int32(len(out))}, nil
}

// cut appends to out the pieces of field k of the union of boxes (k is not
// the last field), and returns it.
func (d *decomposer) cut(boxes []int32, k int, out []piece) ([]piece, error) {
	lv := &d.levels[k]
	sorted := slices.Grow(lv.sorted[:0], len(boxes))
	for _, b := range boxes {
		sorted = append(sorted, boxStart{d.boxes[b][k], b})
	}
	lv.sorted, lv.tmp = sortStarts(sorted, lv.tmp)
	sorted = lv.sorted

	// Sweep the field from cut to cut: a cut is where a box starts or
	// where one ends, the value after its last.
	active, activeHi := lv.active[:0], lv.activeHi[:0]
	defer func() { lv.active, lv.activeHi = active, activeHi }()
	next := 0
	c := sorted[0].lo
	for {
		for next < len(sorted) && sorted[next].lo <= c {
			active = append(active, sorted[next].box)
			activeHi = append(activeHi, sorted[next].hi)
			next++
		}
		// Drop the boxes that ended before c. The next cut is the
		// nearest start or end after c: every box boundary is a cut, so
		// each active box covers the whole span up to it, or to the
		// field's end.
		hi := d.max[k]
		kept := 0
		for i, h := range activeHi {
			if h >= c {
				active[kept], activeHi[kept] = active[i], h
				kept++
				hi = min(hi, h)
			}
		}
		active, activeHi = active[:kept], activeHi[:kept]
		if len(active) == 0 {
			if next == len(sorted) {
				break
			}
			c = sorted[next].lo
			continue
		}
		if next < len(sorted) {
			hi = min(hi, sorted[next].lo-1)
		}
		d.work += len(active)
		if d.work > d.budget {
			return out, errBudget
		}
		mark := len(d.pieces)
		sub, err := d.union(active, k+1)
		if err != nil {
			return out, err
		}
		if n := len(out); n > 0 && out[n-1].s.hi+1 == c && d.equalPieces(out[n-1].sub, sub, k+1) {
			// The same union as the span before: join them, and drop the
			// copy just built (nothing else was added since).
			out[n-1].s.hi = hi
			d.pieces = d.pieces[:mark]
		} else {
			out = append(out, piece{s: span32{c, hi}, sub: sub})
		}
		if hi == d.max[k] {
			break
		}
		c = hi + 1
	}
	return out, nil
}

// sortStarts sorts boxes by where they start, using tmp (which it returns
// too, maybe grown) as room. Many boxes are sorted by radix, a byte at a
// time from the last, skipping the bytes in which all starts agree: a few
// passes over them, where comparisons would take many.
func sortStarts(s, tmp []boxStart) (sorted, room []boxStart) {
	if len(s) < 256 {
		slices.SortFunc(s, func(a, b boxStart) int { return cmp.Compare(a.lo, b.lo) })
		return s, tmp
	}
	var or, and uint32 = 0, ^uint32(0)
	for _, b := range s {
		or, and = or|b.lo, and&b.lo
	}
	tmp = slices.Grow(tmp[:0], len(s))[:len(s)]
	for shift := 0; shift < 32; shift += 8 {
		if ((or^and)>>shift)&0xff == 0 {
			continue
		}
		var count [257]int
		for j := range s {
			count[int(s[j].lo>>shift)&0xff+1]++
		}
		for j := 1; j < len(count); j++ {
			count[j] += count[j-1]
		}
		for j := range s {
			v := int(s[j].lo>>shift) & 0xff
			tmp[count[v]] = s[j]
			count[v]++
		}
		s, tmp = tmp, s
	}
	return s, tmp
}
