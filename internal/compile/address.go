package compile

import (
	"net/netip"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// parseAddress is v1alpha1.ParseAddress with a fast path for the common
// forms, a dotted quad with or without a prefix length: Compile parses
// every address of every rule.
func parseAddress(s string) (netip.Prefix, error) {
	if p, ok := parseIPv4Prefix(s); ok {
		return p, nil
	}
	return v1alpha1.ParseAddress(s)
}

// parseIPv4Prefix parses the common forms, a dotted quad with or without a
// prefix length, in one pass. It takes only what netip takes, to the same
// prefix, and leaves anything else, errors included, to netip (ok false).
func parseIPv4Prefix(s string) (p netip.Prefix, ok bool) {
	var ip [4]byte
	field, val, digits := 0, 0, 0
	i := 0
	for ; i < len(s) && s[i] != '/'; i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			if digits == 1 && val == 0 {
				return p, false // a leading zero
			}
			val, digits = val*10+int(c-'0'), digits+1
			if val > 255 {
				return p, false
			}
		case c == '.' && digits > 0 && field < 3:
			ip[field] = byte(val)
			field, val, digits = field+1, 0, 0
		default:
			return p, false
		}
	}
	if field != 3 || digits == 0 {
		return p, false
	}
	ip[3] = byte(val)
	return prefixOf(netip.AddrFrom4(ip), s[i:])
}

// prefixOf is the masked prefix of an address and what follows it in the
// string it was parsed from: nothing, or "/" and a length without sign or
// leading zero, at most the address's (ok false otherwise), as
// netip.ParsePrefix takes it.
func prefixOf(addr netip.Addr, rest string) (p netip.Prefix, ok bool) {
	if rest == "" {
		return netip.PrefixFrom(addr, addr.BitLen()), true
	}
	if rest[0] != '/' || len(rest) < 2 || len(rest) > 4 || len(rest) > 2 && rest[1] == '0' {
		return p, false
	}
	n := 0
	for _, c := range []byte(rest[1:]) {
		if c < '0' || c > '9' {
			return p, false
		}
		n = n*10 + int(c-'0')
	}
	if n > addr.BitLen() {
		return p, false
	}
	return netip.PrefixFrom(addr, n).Masked(), true
}
