package nft

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/compile"
)

// The encoding of the matches of iptables' extensions: source ports, ICMP
// types with codes, rate and connection limits, and the meters, dynamic
// sets of source addresses, that per-source limits fill.

// encodeMeter adds a meter to the plan: a dynamic set of one family's
// addresses, with the meter's timeout, that rules fill and read through
// their dynset expressions.
func (p *plan) encodeMeter(m compile.Meter) error {
	switch {
	case m.Name == "" || len(m.Name) >= unix.NFT_SET_MAXNAMELEN || strings.HasPrefix(m.Name, "__"):
		return errors.New("invalid meter name")
	case p.hasSet(m.Name):
		return errors.New("set appears twice")
	case m.Family != compile.FamilyIPv4 && m.Family != compile.FamilyIPv6:
		return fmt.Errorf("meter family must be IPv4 or IPv6, not %v", m.Family)
	case m.Timeout < 0 || (m.Timeout > 0 && m.Timeout.Milliseconds() == 0):
		return fmt.Errorf("timeout %v is not a number of milliseconds", m.Timeout)
	}
	keyType := nftables.TypeIPAddr
	if m.Family == compile.FamilyIPv6 {
		keyType = nftables.TypeIP6Addr
	}
	p.ids++
	ns := namedSet{
		set: &nftables.Set{
			Name:       m.Name,
			ID:         p.ids,
			Dynamic:    true,
			HasTimeout: m.Timeout > 0,
			Timeout:    m.Timeout,
			Size:       compile.MeterSize,
			KeyType:    keyType,
		},
		family: m.Family,
		meter:  true,
	}
	p.byName[m.Name] = len(p.named)
	p.named = append(p.named, ns)
	p.msgs++
	p.bytes += 256
	return nil
}

// diffMeter describes how a live set differs from a planned meter, or
// returns "".
func diffMeter(s, want *nftables.Set) string {
	switch {
	case !s.Dynamic || s.Interval || s.Concatenation || s.Constant || s.IsMap || s.KeyType.Name != want.KeyType.Name:
		return "has the wrong type or flags"
	case s.HasTimeout != want.HasTimeout || s.Timeout != want.Timeout:
		return fmt.Sprintf("has timeout %v, want %v", s.Timeout, want.Timeout)
	}
	return ""
}

// checkMatches checks what the kernel needs of a rule's matches of
// iptables' extensions; fam is the rule's family, as far as it is known.
func checkMatches(r *compile.Rule, fam compile.Family) error {
	if len(r.SPorts) > 0 {
		switch r.L4Proto {
		case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP, unix.IPPROTO_UDPLITE, unix.IPPROTO_DCCP:
		default:
			return fmt.Errorf("source ports need a protocol with ports, not %d", r.L4Proto)
		}
	}
	for _, c := range r.ICMPTypeCodes {
		if c.LastCode < c.FirstCode {
			return fmt.Errorf("empty range of codes of ICMP type %d", c.Type)
		}
	}
	if l := r.Limit; l != nil {
		if _, ok := limitUnits[l.Unit]; !ok || l.Rate == 0 {
			return fmt.Errorf("rate %d/%s is not a rate", l.Rate, l.Unit)
		}
	}
	if (r.ConnLimit != nil || (r.Limit != nil && r.Limit.Meter != "")) && fam == compile.FamilyAny {
		return errors.New("a meter needs a rule of one family")
	}
	if r.ConnLimit != nil && r.ConnLimit.Meter == "" {
		return errors.New("a connection limit needs a meter")
	}
	return nil
}

var limitUnits = map[compile.RateUnit]expr.LimitTime{
	compile.RateSecond: expr.LimitTimeSecond,
	compile.RateMinute: expr.LimitTimeMinute,
	compile.RateHour:   expr.LimitTimeHour,
	compile.RateDay:    expr.LimitTimeDay,
}

// icmpTypeCodes matches the ICMP or ICMPv6 type and code against ranges
// of codes per type, as nft does for "icmp type . icmp code { ... }": the
// type into register 1, the code into the 32-bit register after it, and
// a lookup in an anonymous concatenated interval set.
func (b *ruleBuilder) icmpTypeCodes(codes []compile.ICMPTypeCode, l4proto uint8) {
	b.add(
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Payload{DestRegister: unix.NFT_REG32_01, Base: expr.PayloadBaseTransportHeader, Offset: 1, Len: 1},
	)
	types := []nftables.SetDatatype{nftables.TypeICMPType, nftables.TypeICMPCode}
	if l4proto == unix.IPPROTO_ICMPV6 {
		types = []nftables.SetDatatype{nftables.TypeICMP6Type, nftables.TypeICMPV6Code}
	}
	keyType, _ := nftables.ConcatSetType(types...)
	elems := make([]nftables.SetElement, len(codes))
	for i, c := range codes {
		elems[i] = nftables.SetElement{
			Key:    []byte{c.Type, 0, 0, 0, c.FirstCode, 0, 0, 0},
			KeyEnd: []byte{c.Type, 0, 0, 0, c.LastCode, 0, 0, 0},
		}
	}
	b.add(b.anonConcatLookup(keyType, elems))
}

// anonConcatLookup declares an anonymous concatenated interval set and
// returns the lookup of the registers from register 1 on in it.
func (b *ruleBuilder) anonConcatLookup(keyType nftables.SetDatatype, elems []nftables.SetElement) *expr.Lookup {
	l := b.anonLookup(keyType, true, elems)
	b.sets[len(b.sets)-1].set.Concatenation = true
	return l
}

// statefulMatches adds the rule's connection limit and rate limit, in
// that order: a meter's dynset keyed on the source address, or a plain
// limit.
func (b *ruleBuilder) statefulMatches(r *compile.Rule, fam compile.Family) error {
	if c := r.ConnLimit; c != nil {
		if err := b.dynset(c.Meter, fam, unix.NFT_DYNSET_OP_ADD,
			&expr.Connlimit{Count: c.Above, Flags: expr.NFT_CONNLIMIT_F_INV}); err != nil {
			return err
		}
	}
	if l := r.Limit; l != nil {
		limit := &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(l.Rate), Unit: limitUnits[l.Unit], Burst: l.Burst}
		if l.Meter == "" {
			b.add(limit)
			return nil
		}
		return b.dynset(l.Meter, fam, unix.NFT_DYNSET_OP_UPDATE, limit)
	}
	return nil
}

// dynset loads the packet's source address and adds it to, or updates it
// in, the named meter with a stateful expression, which decides whether
// the rule goes on.
func (b *ruleBuilder) dynset(meter string, fam compile.Family, op uint32, e expr.Any) error {
	i, ok := b.p.byName[meter]
	if !ok || !b.p.named[i].meter {
		return fmt.Errorf("unknown meter %q", meter)
	}
	ns := &b.p.named[i]
	if ns.family != fam {
		return fmt.Errorf("rule of family %v fills meter %q of the other family", fam, meter)
	}
	offset, n := uint32(12), uint32(4)
	if fam == compile.FamilyIPv6 {
		offset, n = 8, 16
	}
	b.add(
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
		&expr.Dynset{SrcRegKey: reg, SetName: ns.set.Name, SetID: ns.set.ID, Operation: op, Exprs: []expr.Any{e}},
	)
	return nil
}
