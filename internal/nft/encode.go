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

// maxElemChunk bounds the encoded set elements per netlink message: the
// element list is one netlink attribute, whose length is 16 bits.
const maxElemChunk = 60 << 10

// reg is the register every match loads into, as nft does.
const reg = 1

// kernelSet is an anonymous, constant set and its elements.
type kernelSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
	size  int // encoded size of the elements, in bytes
}

// kernelRule is one rule as sent to the kernel.
type kernelRule struct {
	exprs []expr.Any
	sets  []kernelSet
	udata []byte
	size  int // approximate encoded size, in bytes
}

// kernelChain is one base chain and its rules.
type kernelChain struct {
	name     string
	hook     nftables.ChainHook
	priority nftables.ChainPriority
	policy   nftables.ChainPolicy
	rules    []kernelRule
}

// namedSet is one of the ruleset's named sets: a concatenated interval
// set (the kernel's pipapo), or a hash set of exact keys, that lookup rules
// refer to by name. Its elements can change without touching the rules.
type namedSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
	size  int // encoded size of the elements, in bytes
	// loads fill consecutive registers with the key's fields, from
	// register 1 on, where the lookup reads the key.
	loads []expr.Any
	// family is the IP family of the packets the set is for.
	family compile.Family
}

// plan is a Ruleset encoded for the kernel.
type plan struct {
	table  string
	chains []kernelChain
	named  []namedSet
	byName map[string]int // index in named
	sets   int            // anonymous sets
	ids    uint32         // set IDs handed out in the batch
	msgs   int            // netlink messages in the batch
	bytes  int            // approximate batch size
}

// buildPlan encodes a ruleset for table.
func buildPlan(rs *compile.Ruleset, table string) (*plan, error) {
	if rs == nil {
		return nil, errors.New("nil ruleset")
	}
	p := &plan{table: table, msgs: 3, byName: map[string]int{}}
	for i := range rs.Sets {
		if err := p.addNamedSet(&rs.Sets[i]); err != nil {
			return nil, fmt.Errorf("set %q: %w", rs.Sets[i].Name, err)
		}
	}
	seen := map[string]bool{}
	for i := range rs.Chains {
		c := &rs.Chains[i]
		if c.Name == "" {
			return nil, fmt.Errorf("chain %d has no name", i)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("chain %q appears twice", c.Name)
		}
		seen[c.Name] = true
		kc := kernelChain{name: c.Name, priority: nftables.ChainPriority(c.Priority)}
		switch c.Hook {
		case compile.HookInput:
			kc.hook = *nftables.ChainHookInput
		case compile.HookForward:
			kc.hook = *nftables.ChainHookForward
		case compile.HookOutput:
			kc.hook = *nftables.ChainHookOutput
		default:
			return nil, fmt.Errorf("chain %q: unknown hook %q", c.Name, c.Hook)
		}
		switch c.Policy {
		case compile.VerdictAccept:
			kc.policy = nftables.ChainPolicyAccept
		case compile.VerdictDrop:
			kc.policy = nftables.ChainPolicyDrop
		default:
			return nil, fmt.Errorf("chain %q: policy must be accept or drop, not %q", c.Name, c.Policy)
		}
		p.msgs++
		for j := range c.Rules {
			rules, err := p.encodeRule(&c.Rules[j])
			if err != nil {
				return nil, fmt.Errorf("chain %q rule %d (%s): %w", c.Name, j, c.Rules[j].Comment, err)
			}
			kc.rules = append(kc.rules, rules...)
		}
		p.chains = append(p.chains, kc)
	}
	p.bytes += 1024 * len(p.chains)
	return p, nil
}

func (p *plan) has(name string) bool {
	_, ok := p.byName[name]
	return ok
}

// setFieldType is the kernel data type of set key fields, per family.
func setFieldType(f compile.SetField, fam compile.Family) (nftables.SetDatatype, error) {
	switch f {
	case compile.FieldL4Proto:
		return nftables.TypeInetProto, nil
	case compile.FieldDPort:
		return nftables.TypeInetService, nil
	case compile.FieldSAddr, compile.FieldDAddr:
		if fam == compile.FamilyIPv6 {
			return nftables.TypeIP6Addr, nil
		}
		return nftables.TypeIPAddr, nil
	}
	return nftables.SetDatatype{}, fmt.Errorf("unknown key field %d", f)
}

// addNamedSet encodes a named set: its key type, the expressions that
// load its key into consecutive registers, and its elements, each field
// padded to whole 32-bit registers as the kernel compares them.
func (p *plan) addNamedSet(s *compile.Set) error {
	switch {
	case s.Name == "" || len(s.Name) >= unix.NFT_SET_MAXNAMELEN || strings.HasPrefix(s.Name, "__"):
		return errors.New("invalid set name")
	case p.has(s.Name):
		return errors.New("set appears twice")
	case s.Family != compile.FamilyIPv4 && s.Family != compile.FamilyIPv6:
		return fmt.Errorf("set family must be IPv4 or IPv6, not %v", s.Family)
	case len(s.Fields) == 0:
		return errors.New("set has no key fields")
	}
	types := make([]nftables.SetDatatype, len(s.Fields))
	var loads []expr.Any
	word := 0 // offset of the field in 32-bit registers
	for i, f := range s.Fields {
		t, err := setFieldType(f, s.Family)
		if err != nil {
			return err
		}
		types[i] = t
		// The first field goes to register 1, as nft does; the others to
		// the 32-bit registers that follow it.
		r := uint32(unix.NFT_REG32_00 + word)
		if i == 0 {
			r = reg
		}
		switch f {
		case compile.FieldL4Proto:
			loads = append(loads, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r})
		case compile.FieldDPort:
			loads = append(loads, &expr.Payload{DestRegister: r, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		case compile.FieldSAddr, compile.FieldDAddr:
			offset := map[bool]uint32{true: 12, false: 16}[f == compile.FieldSAddr]
			if s.Family == compile.FamilyIPv6 {
				offset = map[bool]uint32{true: 8, false: 24}[f == compile.FieldSAddr]
			}
			loads = append(loads, &expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: t.Bytes})
			if bits := s.AddrBits(f); bits > 0 {
				if bits >= int(t.Bytes)*8 {
					return fmt.Errorf("%v masked to %d bits", f, bits)
				}
				loads = append(loads, &expr.Bitwise{SourceRegister: r, DestRegister: r, Len: t.Bytes,
					Mask: compile.AddrMask(s.Family, bits).AsSlice(), Xor: make([]byte, t.Bytes)})
			}
		}
		word += int(t.Bytes+3) / 4
	}
	if word > 16 {
		return errors.New("set key longer than the registers")
	}
	keyType, err := nftables.ConcatSetType(types...)
	if err != nil {
		return err
	}
	elems := make([]nftables.SetElement, len(s.Elements))
	keyLen := int(keyType.Bytes)
	// masks has, per key byte, the bits a packet's key keeps: all of them
	// but the host part of masked addresses.
	masks := make([]byte, 0, keyLen)
	for _, f := range s.Fields {
		t, _ := setFieldType(f, s.Family)
		m := bytes.Repeat([]byte{0xff}, int(t.Bytes))
		if bits := s.AddrBits(f); bits > 0 {
			m = compile.AddrMask(s.Family, bits).AsSlice()
		}
		masks = append(masks, m...)
		for len(masks)%4 != 0 {
			masks = append(masks, 0xff)
		}
	}
	// One array holds every key: an element each is a lot of garbage.
	keys := make([]byte, 2*keyLen*len(s.Elements))
	size := 0
	for i := range s.Elements {
		buf := keys[2*keyLen*i : 2*keyLen*(i+1)]
		key, end, err := elementKeys(&s.Elements[i], s.Fields, s.Family, buf[:0:keyLen], buf[keyLen:keyLen:2*keyLen])
		if err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
		if s.Exact {
			// The key is the element's firsts; its lasts must be where the
			// masks make every packet of the element land on that key.
			for j := range key {
				if key[j]&masks[j] != key[j] || end[j] != key[j]|^masks[j] {
					return fmt.Errorf("element %d: not one key of the set once masked", i)
				}
			}
			end = nil
		}
		elems[i] = nftables.SetElement{Key: key, KeyEnd: end}
		size += elemSize(elems[i])
	}
	p.ids++
	ns := namedSet{
		set: &nftables.Set{
			Name:          s.Name,
			ID:            p.ids,
			Interval:      !s.Exact,
			Concatenation: true,
			KeyType:       keyType,
		},
		elems:  elems,
		size:   size,
		loads:  loads,
		family: s.Family,
	}
	p.byName[s.Name] = len(p.named)
	p.named = append(p.named, ns)
	chunks := (size + maxElemChunk - 1) / maxElemChunk
	p.msgs += 1 + chunks
	p.bytes += 256 + size + 128*chunks
	return nil
}

// elementKeys appends an element's first and last key to key and end.
func elementKeys(e *compile.SetElement, fields []compile.SetField, fam compile.Family, key, end []byte) ([]byte, []byte, error) {
	pad := func() {
		for len(key)%4 != 0 {
			key, end = append(key, 0), append(end, 0)
		}
	}
	for _, f := range fields {
		switch f {
		case compile.FieldL4Proto:
			if e.L4Proto.First > e.L4Proto.Last {
				return nil, nil, errors.New("empty protocol range")
			}
			key, end = append(key, e.L4Proto.First), append(end, e.L4Proto.Last)
		case compile.FieldDPort:
			if e.DPort.First > e.DPort.Last {
				return nil, nil, errors.New("empty port range")
			}
			key, end = binary.BigEndian.AppendUint16(key, e.DPort.First), binary.BigEndian.AppendUint16(end, e.DPort.Last)
		case compile.FieldSAddr, compile.FieldDAddr:
			r := e.SAddr
			if f == compile.FieldDAddr {
				r = e.DAddr
			}
			// IPv4-mapped IPv6 addresses are IPv6 addresses here, as in the
			// rules: they match IPv6 packets that carry them.
			if !r.First.IsValid() || !r.Last.IsValid() || r.First.Is4() != (fam == compile.FamilyIPv4) ||
				r.Last.Is4() != (fam == compile.FamilyIPv4) || r.First.Zone() != "" || r.Last.Zone() != "" {
				return nil, nil, fmt.Errorf("address range %v-%v is not of the set's family", r.First, r.Last)
			}
			if r.Last.Less(r.First) {
				return nil, nil, errors.New("empty address range")
			}
			key, end = append(key, r.First.AsSlice()...), append(end, r.Last.AsSlice()...)
		}
		pad()
	}
	return key, end, nil
}

// ruleBuilder collects the expressions and sets of one kernel rule.
type ruleBuilder struct {
	p     *plan
	exprs []expr.Any
	sets  []kernelSet
}

func (b *ruleBuilder) add(e ...expr.Any) { b.exprs = append(b.exprs, e...) }

// lookup declares a new anonymous set for the rule and returns the lookup
// expression that matches the register against it.
func (b *ruleBuilder) lookup(keyType nftables.SetDatatype, interval bool, elems []nftables.SetElement) *expr.Lookup {
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
	b.sets = append(b.sets, kernelSet{set: s, elems: elems, size: size})
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID}
}

// elemSize is the encoded size of one set element.
func elemSize(e nftables.SetElement) int {
	n := 4 + 8 + align4(len(e.Key)) // element, key nest, key value
	if e.IntervalEnd {
		n += 8
	}
	if len(e.KeyEnd) > 0 {
		n += 8 + align4(len(e.KeyEnd))
	}
	return n
}

func align4(n int) int { return (n + 3) &^ 3 }

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
	var verdict expr.Any
	switch r.Verdict {
	case compile.VerdictNone:
	case compile.VerdictAccept:
		verdict = &expr.Verdict{Kind: expr.VerdictAccept}
	case compile.VerdictDrop:
		verdict = &expr.Verdict{Kind: expr.VerdictDrop}
	case compile.VerdictReject:
		verdict = &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}
	default:
		return nil, fmt.Errorf("unknown verdict %q", r.Verdict)
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
			if pt.log.RatePerMinute > 0 {
				b.add(&expr.Limit{
					Type:  expr.LimitTypePkts,
					Rate:  uint64(pt.log.RatePerMinute),
					Unit:  expr.LimitTimeMinute,
					Burst: pt.log.Burst,
				})
			}
			l := &expr.Log{}
			if pt.log.Prefix != "" {
				l.Key = 1 << unix.NFTA_LOG_PREFIX
				l.Data = []byte(pt.log.Prefix)
			}
			b.add(l)
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
	switch {
	case len(r.ICMPTypes) > 0 && r.L4Proto != unix.IPPROTO_ICMP && r.L4Proto != unix.IPPROTO_ICMPV6:
		return 0, errors.New("ICMP types need protocol ICMP or ICMPv6")
	case r.L4Proto == unix.IPPROTO_ICMP && fam == compile.FamilyIPv6,
		r.L4Proto == unix.IPPROTO_ICMPV6 && fam == compile.FamilyIPv4:
		return 0, errors.New("ICMP protocol does not match the rule's family")
	case r.L4Proto == unix.IPPROTO_ICMP && len(r.ICMPTypes) > 0:
		fam = compile.FamilyIPv4
	case r.L4Proto == unix.IPPROTO_ICMPV6 && len(r.ICMPTypes) > 0:
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

// match adds the rule's matches, in the order iptables users read them:
// interfaces, addresses, protocol and ports, then conntrack state.
func (b *ruleBuilder) match(r *compile.Rule, fam compile.Family) error {
	if err := b.ifname(expr.MetaKeyIIFNAME, r.IIfName); err != nil {
		return err
	}
	if err := b.ifname(expr.MetaKeyOIFNAME, r.OIfName); err != nil {
		return err
	}
	switch fam {
	case compile.FamilyIPv4:
		b.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg}, cmpEq([]byte{unix.NFPROTO_IPV4}))
	case compile.FamilyIPv6:
		b.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg}, cmpEq([]byte{unix.NFPROTO_IPV6}))
	}
	if err := b.addrs(r.SAddrs, fam, true); err != nil {
		return err
	}
	if err := b.addrs(r.DAddrs, fam, false); err != nil {
		return err
	}
	if r.L4Proto != 0 {
		b.add(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}, cmpEq([]byte{r.L4Proto}))
	}
	if len(r.DPorts) > 0 {
		b.add(&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		b.ports(r.DPorts)
	}
	if len(r.ICMPTypes) > 0 {
		b.add(&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1})
		types := slices.Clone(r.ICMPTypes)
		slices.Sort(types)
		types = slices.Compact(types)
		if len(types) == 1 {
			b.add(cmpEq([]byte{types[0]}))
		} else {
			kt := nftables.TypeICMPType
			if r.L4Proto == unix.IPPROTO_ICMPV6 {
				kt = nftables.TypeICMP6Type
			}
			elems := make([]nftables.SetElement, len(types))
			for i, t := range types {
				elems[i] = nftables.SetElement{Key: []byte{t}}
			}
			b.add(b.lookup(kt, false, elems))
		}
	}
	if r.Lookup != "" {
		i, ok := b.p.byName[r.Lookup]
		if !ok {
			return fmt.Errorf("lookup in unknown set %q", r.Lookup)
		}
		ns := &b.p.named[i]
		if fam == compile.FamilyAny {
			// The key loads addresses of one family: check it first.
			b.add(&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg}, cmpEq([]byte{nfproto(ns.family)}))
		} else if fam != ns.family {
			return fmt.Errorf("rule of family %v looks up set %q of the other family", fam, r.Lookup)
		}
		b.add(ns.loads...)
		b.add(&expr.Lookup{SourceRegister: reg, SetName: ns.set.Name, SetID: ns.set.ID})
	}
	if r.CtStates != 0 {
		b.add(
			&expr.Ct{Key: expr.CtKeySTATE, Register: reg},
			&expr.Bitwise{
				SourceRegister: reg,
				DestRegister:   reg,
				Len:            4,
				Mask:           binaryutil.NativeEndian.PutUint32(uint32(r.CtStates)),
				Xor:            make([]byte, 4),
			},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: make([]byte, 4)},
		)
	}
	return nil
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

// span is an inclusive range of big-endian keys of equal length.
type span struct{ lo, hi []byte }

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

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
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
		b.add(b.lookup(nftables.TypeInetService, true, intervalElems(spans)))
	}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

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
		b.add(b.lookup(kt, true, intervalElems(spans)))
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
