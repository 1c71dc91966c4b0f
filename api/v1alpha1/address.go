package v1alpha1

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParseAddress reads one entry of a rule's sources or destinations: an IP
// address, without a zone, or a CIDR. Host bits of a CIDR are masked off,
// as iptables does with -s 10.1.2.3/8; an address is its single-address
// prefix.
func ParseAddress(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
