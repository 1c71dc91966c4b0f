package compile

import (
	"cmp"
	"encoding/binary"
	"net/netip"
)

// Spans. A key field's values, a protocol, a port or an address, are
// numbers up to 128 bits (u128), and a rule's match on a field is an
// inclusive range of them (span). The decomposer works on the same in 32
// bits (span32, box32).

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
