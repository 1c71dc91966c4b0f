package nft

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/text"
)

// encodingVersion is hashed into every rule fingerprint. Bump it whenever
// the kernel encoding of a rule changes, so that agents reprogram tables
// written by an older version.
const encodingVersion = "nodefw-nft/1"

// fingerprintType is the userdata TLV type that carries a rule's
// fingerprint. Type 0 is the comment `nft list` shows; nft and iptables-nft
// ignore types they do not know, and this one is far from the few they use.
const fingerprintType userdata.Type = 0xf7

// fingerprintLen is the number of bytes of SHA-256 kept per rule.
const fingerprintLen = 8

// maxCommentLen is the longest comment kept, in bytes, as nft allows.
const maxCommentLen = 127

// reg is the register every match loads into, as nft does.
const reg = 1

// ruleBuilder collects the expressions and anonymous sets of one kernel
// rule.
type ruleBuilder struct {
	p     *plan
	exprs []expr.Any
	sets  []anonSet
}

// encodeRule encodes one model rule as one kernel rule, or two when it both
// logs and has a verdict: a rate limit that is exceeded ends the evaluation
// of its rule, so the log (with its limit) gets a rule of its own, followed
// by the same match with the verdict.
func (p *plan) encodeRule(r *compile.Rule) ([]kernelRule, error) {
	fam, err := ruleFamily(r)
	if err != nil {
		return nil, err
	}
	if r.Log != nil && len(r.Log.Prefix) > 127 {
		return nil, fmt.Errorf("log prefix longer than 127 bytes")
	}
	verdict, err := verdictExpr(r.Verdict)
	if err != nil {
		return nil, err
	}
	type part struct {
		counter bool
		log     *compile.Log
		verdict expr.Any
	}
	parts := []part{{counter: r.Counter, log: r.Log, verdict: verdict}}
	if r.Log != nil && verdict != nil {
		parts = []part{{log: r.Log}, {counter: r.Counter, verdict: verdict}}
	}
	var out []kernelRule
	for _, pt := range parts {
		b := &ruleBuilder{p: p}
		if err := b.match(r, fam); err != nil {
			return nil, err
		}
		if pt.counter {
			b.add(&expr.Counter{})
		}
		if pt.log != nil {
			b.log(pt.log)
		}
		if pt.verdict != nil {
			b.add(pt.verdict)
		}
		kr, err := b.finish(r.Comment)
		if err != nil {
			return nil, err
		}
		out = append(out, kr)
	}
	return out, nil
}

// ruleFamily returns the family a rule is restricted to, inferring it from
// addresses or ICMP when the rule leaves it open.
func ruleFamily(r *compile.Rule) (compile.Family, error) {
	fam := r.Family
	if fam > compile.FamilyIPv6 {
		return 0, fmt.Errorf("unknown family %d", fam)
	}
	for _, p := range slices.Concat(r.SAddrs, r.DAddrs) {
		if !p.IsValid() {
			return 0, fmt.Errorf("invalid prefix %v", p)
		}
		pf := compile.FamilyIPv4
		if p.Addr().Is6() {
			pf = compile.FamilyIPv6
		}
		if fam == compile.FamilyAny {
			fam = pf
		} else if fam != pf {
			return 0, fmt.Errorf("address %v does not belong to the rule's family", p)
		}
	}
	if err := checkMatches(r, fam); err != nil {
		return 0, err
	}
	switch {
	case len(r.ICMPTypes) > 0 && len(r.ICMPTypeCodes) > 0:
		return 0, errors.New("ICMP types both with and without codes")
	case len(r.ICMPTypes)+len(r.ICMPTypeCodes) > 0 && r.L4Proto != unix.IPPROTO_ICMP && r.L4Proto != unix.IPPROTO_ICMPV6:
		return 0, errors.New("ICMP types need protocol ICMP or ICMPv6")
	case r.L4Proto == unix.IPPROTO_ICMP && fam == compile.FamilyIPv6,
		r.L4Proto == unix.IPPROTO_ICMPV6 && fam == compile.FamilyIPv4:
		return 0, errors.New("ICMP protocol does not match the rule's family")
	case r.L4Proto == unix.IPPROTO_ICMP && len(r.ICMPTypes)+len(r.ICMPTypeCodes) > 0:
		fam = compile.FamilyIPv4
	case r.L4Proto == unix.IPPROTO_ICMPV6 && len(r.ICMPTypes)+len(r.ICMPTypeCodes) > 0:
		fam = compile.FamilyIPv6
	}
	if len(r.DPorts) > 0 {
		switch r.L4Proto {
		case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP, unix.IPPROTO_UDPLITE, unix.IPPROTO_DCCP:
		case 0:
			// The port range in front of a lookup keyed on the port: the
			// set's elements carry the protocols.
			if r.Lookup == "" {
				return 0, errors.New("destination ports need a protocol")
			}
		default:
			return 0, fmt.Errorf("destination ports need a protocol with ports, not %d", r.L4Proto)
		}
	}
	return fam, nil
}

// verdictExpr is the expression of a verdict; nil for none.
func verdictExpr(v compile.Verdict) (expr.Any, error) {
	switch v {
	case compile.VerdictNone:
		return nil, nil
	case compile.VerdictAccept:
		return &expr.Verdict{Kind: expr.VerdictAccept}, nil
	case compile.VerdictDrop:
		return &expr.Verdict{Kind: expr.VerdictDrop}, nil
	case compile.VerdictReject:
		return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}, nil
	case compile.VerdictRejectTCPReset:
		return &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}, nil
	case compile.VerdictRejectHostUnreachable:
		return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_HOST_UNREACH}, nil
	case compile.VerdictRejectAdminProhibited:
		return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}, nil
	case compile.VerdictRejectNetUnreachable:
		return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_NO_ROUTE}, nil
	}
	return nil, fmt.Errorf("unknown verdict %q", v)
}

// match adds the rule's matches, in the order iptables users read them:
// the destination's address type, interfaces, addresses, protocol and
// ports, then conntrack state.
func (b *ruleBuilder) match(r *compile.Rule, fam compile.Family) error {
	if err := b.daddrType(r.DAddrType); err != nil {
		return err
	}
	if err := b.ifname(expr.MetaKeyIIFNAME, r.IIfName); err != nil {
		return err
	}
	if err := b.ifname(expr.MetaKeyOIFNAME, r.OIfName); err != nil {
		return err
	}
	if fam != compile.FamilyAny {
		b.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg}, cmpEq([]byte{nfproto(fam)}))
	}
	if err := b.addrs(r.SAddrs, fam, true); err != nil {
		return err
	}
	if err := b.addrs(r.DAddrs, fam, false); err != nil {
		return err
	}
	// Peers.
	for _, side := range []struct {
		set    string
		except []netip.Prefix
		source bool
	}{{r.SAddrSet, r.SAddrsExcept, true}, {r.DAddrSet, r.DAddrsExcept, false}} {
		if err := b.peerLookup(side.set, fam, side.source); err != nil {
			return err
		}
		if err := b.exceptAddrs(side.except, fam, side.source); err != nil {
			return err
		}
	}
	if r.L4Proto != 0 {
		b.add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}, cmpEq([]byte{r.L4Proto}))
	}
	if len(r.DPorts) > 0 {
		b.add(&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		b.ports(r.DPorts)
	}
	if len(r.SPorts) > 0 {
		b.add(&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2})
		b.ports(r.SPorts)
	}
	if len(r.ICMPTypes) > 0 {
		b.icmpTypes(r.ICMPTypes, r.L4Proto)
	}
	if len(r.ICMPTypeCodes) > 0 {
		b.icmpTypeCodes(r.ICMPTypeCodes, r.L4Proto)
	}
	if r.Lookup != "" {
		if err := b.namedLookup(r.Lookup, fam); err != nil {
			return err
		}
	}
	if r.CtStates != 0 {
		b.ctStates(r.CtStates)
	}
	return b.statefulMatches(r, fam)
}

// daddrType matches whether the destination address is one of the node's
// (fib daddr type local), as nft encodes it: the route type, a host-endian
// word, compared with RTN_LOCAL.
func (b *ruleBuilder) daddrType(t compile.DAddrType) error {
	op := expr.CmpOpEq
	switch t {
	case compile.DAddrTypeAny:
		return nil
	case compile.DAddrTypeLocal:
	case compile.DAddrTypeNotLocal:
		op = expr.CmpOpNeq
	default:
		return fmt.Errorf("unknown destination address type %d", t)
	}
	b.add(
		&expr.Fib{Register: reg, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: op, Register: reg, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	)
	return nil
}

// ifname matches an interface name: all 16 NUL-padded bytes for an exact
// name, only the bytes before a trailing "+" for a wildcard. A lone "+"
// matches every interface and adds nothing.
func (b *ruleBuilder) ifname(key expr.MetaKey, name string) error {
	if name == "" || name == "+" {
		return nil
	}
	base, wildcard := strings.CutSuffix(name, "+")
	if len(base) > unix.IFNAMSIZ-1 || strings.ContainsAny(base, "\x00/ +") {
		return fmt.Errorf("invalid interface name %q", name)
	}
	data := []byte(base)
	if !wildcard {
		data = make([]byte, unix.IFNAMSIZ)
		copy(data, base)
	}
	b.add(&expr.Meta{Key: key, Register: reg}, cmpEq(data))
	return nil
}

// addrs matches source or destination addresses against prefixes.
func (b *ruleBuilder) addrs(prefixes []netip.Prefix, fam compile.Family, source bool) error {
	if len(prefixes) == 0 {
		return nil
	}
	var offset uint32
	switch {
	case fam == compile.FamilyIPv4 && source:
		offset = 12
	case fam == compile.FamilyIPv4:
		offset = 16
	case source:
		offset = 8
	default:
		offset = 24
	}
	spans := make([]span, 0, len(prefixes))
	for _, p := range prefixes {
		lo, hi := prefixSpan(p.Masked())
		spans = append(spans, span{lo: lo, hi: hi})
	}
	spans = mergeSpans(spans)
	addrLen := uint32(len(spans[0].lo))
	if len(spans) > 1 {
		kt := nftables.TypeIPAddr
		if fam == compile.FamilyIPv6 {
			kt = nftables.TypeIP6Addr
		}
		b.add(&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: addrLen})
		b.add(b.anonLookup(kt, true, intervalElems(spans)))
		return nil
	}
	s := spans[0]
	bits, ok := spanPrefixLen(s)
	if !ok {
		b.add(
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: addrLen},
			&expr.Range{Op: expr.CmpOpEq, Register: reg, FromData: s.lo, ToData: s.hi},
		)
		return nil
	}
	switch {
	case bits == 0:
		// Every address of the family: the family match is enough.
	case bits%8 == 0:
		n := uint32(bits / 8)
		b.add(
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
			cmpEq(s.lo[:n]),
		)
	default:
		mask := make([]byte, addrLen)
		for i := 0; i < bits; i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		b.add(
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: addrLen},
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: addrLen, Mask: mask, Xor: make([]byte, addrLen)},
			cmpEq(s.lo),
		)
	}
	return nil
}

// ports matches the register against destination port intervals: a cmp
// for one port, a range for one interval, an interval set otherwise.
func (b *ruleBuilder) ports(ports []compile.PortInterval) {
	spans := make([]span, 0, len(ports))
	for _, p := range ports {
		lo, hi := p.First, p.Last
		if hi < lo {
			lo, hi = hi, lo
		}
		spans = append(spans, span{lo: be16(lo), hi: be16(hi)})
	}
	spans = mergeSpans(spans)
	switch {
	case len(spans) == 1 && bytes.Equal(spans[0].lo, spans[0].hi):
		b.add(cmpEq(spans[0].lo))
	case len(spans) == 1:
		b.add(&expr.Range{Op: expr.CmpOpEq, Register: reg, FromData: spans[0].lo, ToData: spans[0].hi})
	default:
		b.add(b.anonLookup(nftables.TypeInetService, true, intervalElems(spans)))
	}
}

// icmpTypes matches the ICMP or ICMPv6 type: a cmp for one, an anonymous
// set for several.
func (b *ruleBuilder) icmpTypes(icmpTypes []uint8, l4proto uint8) {
	b.add(&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1})
	types := slices.Clone(icmpTypes)
	slices.Sort(types)
	types = slices.Compact(types)
	if len(types) == 1 {
		b.add(cmpEq([]byte{types[0]}))
		return
	}
	kt := nftables.TypeICMPType
	if l4proto == unix.IPPROTO_ICMPV6 {
		kt = nftables.TypeICMP6Type
	}
	elems := make([]nftables.SetElement, len(types))
	for i, t := range types {
		elems[i] = nftables.SetElement{Key: []byte{t}}
	}
	b.add(b.anonLookup(kt, false, elems))
}

// namedLookup loads the key of the plan's named set called name and looks
// it up there.
func (b *ruleBuilder) namedLookup(name string, fam compile.Family) error {
	i, ok := b.p.byName[name]
	if !ok {
		return fmt.Errorf("lookup in unknown set %q", name)
	}
	ns := &b.p.named[i]
	if ns.meter {
		return fmt.Errorf("lookup in meter %q", name)
	}
	if fam == compile.FamilyAny {
		// The key loads addresses of one family: check it first.
		b.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg}, cmpEq([]byte{nfproto(ns.family)}))
	} else if fam != ns.family {
		return fmt.Errorf("rule of family %v looks up set %q of the other family", fam, name)
	}
	b.add(ns.loads...)
	b.add(&expr.Lookup{SourceRegister: reg, SetName: ns.set.Name, SetID: ns.set.ID})
	return nil
}

// ctStates matches any of the conntrack states.
func (b *ruleBuilder) ctStates(states compile.CtState) {
	b.add(
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg},
		&expr.Bitwise{
			SourceRegister: reg,
			DestRegister:   reg,
			Len:            4,
			Mask:           binaryutil.NativeEndian.PutUint32(uint32(states)),
			Xor:            make([]byte, 4),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: make([]byte, 4)},
	)
}

// log adds the rate limit, if any, and the log expression, to the rule's
// NFLOG group.
func (b *ruleBuilder) log(l *compile.Log) {
	if l.RatePerMinute > 0 {
		b.add(&expr.Limit{
			Type:  expr.LimitTypePkts,
			Rate:  uint64(l.RatePerMinute),
			Unit:  expr.LimitTimeMinute,
			Burst: l.Burst,
		})
	}
	// Always to an NFLOG group, which the agent reads (compile.LogPrefix).
	e := &expr.Log{Key: 1 << unix.NFTA_LOG_GROUP, Group: l.Group}
	if l.Prefix != "" {
		e.Key |= 1 << unix.NFTA_LOG_PREFIX
		e.Data = []byte(l.Prefix)
	}
	b.add(e)
}

func (b *ruleBuilder) add(e ...expr.Any) { b.exprs = append(b.exprs, e...) }

// anonLookup declares a new anonymous set for the rule and returns the
// lookup expression that matches the register against it.
func (b *ruleBuilder) anonLookup(keyType nftables.SetDatatype, interval bool, elems []nftables.SetElement) *expr.Lookup {
	b.p.sets++
	b.p.ids++
	id := b.p.ids
	s := &nftables.Set{
		// An explicit name spares the kernel from scanning every set of the
		// table to allocate one for the "__set%d" template.
		Name:      fmt.Sprintf("__set%d", b.p.sets-1),
		ID:        id,
		Anonymous: true,
		Constant:  true,
		Interval:  interval,
		KeyType:   keyType,
	}
	size := 0
	for _, e := range elems {
		size += elemSize(e)
	}
	b.sets = append(b.sets, anonSet{set: s, elems: elems, size: size})
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID}
}

// finish fingerprints the rule and accounts for its messages.
func (b *ruleBuilder) finish(comment string) (kernelRule, error) {
	h := sha256.New()
	h.Write([]byte(encodingVersion))
	size := 256
	for _, e := range b.exprs {
		enc, err := expr.Marshal(byte(nftables.TableFamilyINet), e)
		if err != nil {
			return kernelRule{}, err
		}
		writeChunk(h, enc)
		size += len(enc) + 4
	}
	for _, s := range b.sets {
		writeChunk(h, []byte(s.set.KeyType.Name))
		var flags byte
		if s.set.Interval {
			flags = 1
		}
		h.Write([]byte{flags})
		for _, e := range s.elems {
			writeChunk(h, e.Key)
			if e.IntervalEnd {
				h.Write([]byte{1})
			} else {
				h.Write([]byte{0})
			}
			// Only concatenated sets have ends of their own: the other
			// rules keep their fingerprints.
			if len(e.KeyEnd) > 0 {
				writeChunk(h, e.KeyEnd)
			}
		}
		chunks := (s.size + maxElemChunk - 1) / maxElemChunk
		b.p.msgs += 1 + max(chunks, 1)
		b.p.bytes += 256 + s.size + 128*chunks
	}
	var ud []byte
	if c := clipComment(comment); c != "" {
		ud = userdata.AppendString(ud, userdata.TypeComment, c)
	}
	ud = userdata.Append(ud, fingerprintType, h.Sum(nil)[:fingerprintLen])
	size += len(ud)
	b.p.msgs++
	b.p.bytes += size
	return kernelRule{exprs: b.exprs, sets: b.sets, udata: ud, size: size}, nil
}

func writeChunk(h interface{ Write([]byte) (int, error) }, b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	h.Write(n[:])
	h.Write(b)
}

// clipComment makes a comment fit userdata: no NUL, at most maxCommentLen
// bytes, cut at a character boundary.
func clipComment(s string) string {
	return text.Truncate(strings.ReplaceAll(s, "\x00", ""), maxCommentLen)
}

func nfproto(f compile.Family) byte {
	if f == compile.FamilyIPv6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

func cmpEq(data []byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: data}
}

// span is an inclusive range of big-endian keys of equal length.
type span struct{ lo, hi []byte }

// prefixSpan returns the first and last address of a masked prefix.
func prefixSpan(p netip.Prefix) (lo, hi []byte) {
	lo = p.Addr().AsSlice()
	hi = slices.Clone(lo)
	for i := p.Bits(); i < len(hi)*8; i++ {
		hi[i/8] |= 0x80 >> (i % 8)
	}
	return lo, hi
}

// spanPrefixLen returns the prefix length when a span is exactly a prefix.
func spanPrefixLen(s span) (int, bool) {
	bit := func(b []byte, i int) byte { return b[i/8] & (0x80 >> (i % 8)) }
	total := len(s.lo) * 8
	bits := 0
	for bits < total && bit(s.lo, bits) == bit(s.hi, bits) {
		bits++
	}
	for i := bits; i < total; i++ {
		if bit(s.lo, i) != 0 || bit(s.hi, i) == 0 {
			return 0, false
		}
	}
	return bits, true
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// mergeSpans sorts spans and joins overlapping and adjacent ones, since the
// kernel refuses overlapping intervals.
func mergeSpans(in []span) []span {
	s := slices.Clone(in)
	slices.SortFunc(s, func(a, b span) int { return bytes.Compare(a.lo, b.lo) })
	var out []span
	for _, x := range s {
		if n := len(out); n > 0 {
			last := &out[n-1]
			next, ok := increment(last.hi)
			if !ok || bytes.Compare(x.lo, next) <= 0 {
				if bytes.Compare(x.hi, last.hi) > 0 {
					last.hi = x.hi
				}
				continue
			}
		}
		out = append(out, span{lo: slices.Clone(x.lo), hi: slices.Clone(x.hi)})
	}
	return out
}

// intervalElems encodes merged spans as interval set elements the way nft
// does: a leading interval end at zero unless the first span starts there,
// each span's start, and an interval end one past its last key (omitted
// when the span runs to the largest key).
func intervalElems(spans []span) []nftables.SetElement {
	var elems []nftables.SetElement
	if len(spans) > 0 && !isZero(spans[0].lo) {
		elems = append(elems, nftables.SetElement{Key: make([]byte, len(spans[0].lo)), IntervalEnd: true})
	}
	for _, s := range spans {
		elems = append(elems, nftables.SetElement{Key: s.lo})
		if end, ok := increment(s.hi); ok {
			elems = append(elems, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return elems
}

// increment returns b+1, or false when b is all ones.
func increment(b []byte) ([]byte, bool) {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
