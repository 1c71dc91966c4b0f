package compile

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// TestParseAddressMatchesNetip checks that the fast path of parseAddress
// takes exactly what v1alpha1.ParseAddress, netip's parsers, takes, to the
// same prefix, and that errors stay its.
func TestParseAddressMatchesNetip(t *testing.T) {
	check := func(s string) {
		t.Helper()
		got, gotErr := parseAddress(s)
		want, wantErr := v1alpha1.ParseAddress(s)
		if got != want || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Fatalf("parseAddress(%q) = %v, %v; netip: %v, %v", s, got, gotErr, want, wantErr)
		}
	}
	for _, s := range []string{
		"", "/", "1", "1.2.3", "1.2.3.4", "1.2.3.4.", ".1.2.3.4", "1..2.3", "1.2.3.4.5", "01.2.3.4", "0.0.0.0",
		"255.255.255.255", "256.0.0.1", "1.2.3.4/", "1.2.3.4/0", "1.2.3.4/00", "1.2.3.4/08", "1.2.3.4/8",
		"1.2.3.4/32", "1.2.3.4/33", "1.2.3.4/+8", "1.2.3.4/-1", "1.2.3.4/8/8", "10.1.2.3/24", "1.2.3.4%eth0",
		"::", "::/0", ":::", "::1", "1::", "1:", ":1", "1:::2", "::1::2", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
		"1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7", "::1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8::", "12345::", "ffff::",
		"FFFF::", "fE80::1", "fe80::1%eth0", "fe80::1%", "::ffff:1.2.3.4", "::ffff:1.2.3.4/120", "1.2.3.4::",
		"2001:db8::/32", "2001:db8::1/128", "2001:db8::1/129", "2001:db8::/032", "2001:db8::/0", "2001:db8::/", "g::",
		"0:0:0:0:0:0:0:0", "0000:0000:0000:0000:0000:0000:0000:0000/64", "fd12:3456:789a::/48",
	} {
		check(s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "0123456789abcdefABCDEF:./%g"
	for range 200000 {
		b := make([]byte, r.IntN(24))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		check(string(b))
	}
	// Well-formed ones, which random strings seldom are.
	for range 20000 {
		var s string
		if r.IntN(2) == 0 {
			s = fmt.Sprintf("%d.%d.%d.%d", r.IntN(300), r.IntN(256), r.IntN(256), r.IntN(256))
		} else {
			a := make([]byte, 16)
			for i := range a {
				if r.IntN(3) > 0 {
					a[i] = byte(r.IntN(256))
				}
			}
			s = netip.AddrFrom16([16]byte(a)).String()
			if r.IntN(4) == 0 {
				s = strings.ToUpper(s)
			}
		}
		if r.IntN(2) == 0 {
			s += "/" + fmt.Sprint(r.IntN(140))
		}
		check(s)
	}
}
