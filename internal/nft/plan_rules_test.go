package nft

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/nodefw/nodefw/internal/compile"
)

func b16(v uint16) []byte { return be16(v) }

func TestIntervalElems(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spans []span
		want  []nftables.SetElement
	}{
		{
			name:  "leading zero end and one-past ends",
			spans: []span{{b16(8000), b16(8100)}, {b16(22), b16(22)}, {b16(8050), b16(8200)}, {b16(23), b16(24)}},
			want: []nftables.SetElement{
				{Key: b16(0), IntervalEnd: true},
				{Key: b16(22)}, {Key: b16(25), IntervalEnd: true},
				{Key: b16(8000)}, {Key: b16(8201), IntervalEnd: true},
			},
		},
		{
			name:  "from zero to the top",
			spans: []span{{b16(65530), b16(65535)}, {b16(0), b16(5)}},
			want:  []nftables.SetElement{{Key: b16(0)}, {Key: b16(6), IntervalEnd: true}, {Key: b16(65530)}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := intervalElems(mergeSpans(tc.spans))
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if !bytes.Equal(got[i].Key, tc.want[i].Key) || got[i].IntervalEnd != tc.want[i].IntervalEnd {
					t.Errorf("element %d = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestSpanPrefixLen(t *testing.T) {
	for _, tc := range []struct {
		p    string
		bits int
	}{{"10.0.0.0/8", 8}, {"0.0.0.0/0", 0}, {"10.1.2.3/32", 32}, {"2001:db8::/33", 33}} {
		lo, hi := prefixSpan(netip.MustParsePrefix(tc.p))
		if bits, ok := spanPrefixLen(span{lo, hi}); !ok || bits != tc.bits {
			t.Errorf("%s: %d, %v", tc.p, bits, ok)
		}
	}
	if _, ok := spanPrefixLen(span{[]byte{10, 0, 0, 1}, []byte{10, 0, 0, 3}}); ok {
		t.Error("10.0.0.1-10.0.0.3 taken for a prefix")
	}
}

func TestClipComment(t *testing.T) {
	long := strings.Repeat("é", 100)
	got := clipComment(long)
	if len(got) > maxCommentLen || !strings.HasPrefix(long, got) || len(got) != 126 {
		t.Errorf("clipped to %d bytes: %q", len(got), got)
	}
	if clipComment("a\x00b") != "ab" {
		t.Error("NUL kept")
	}
}

func TestEncodeErrors(t *testing.T) {
	for name, r := range map[string]compile.Rule{
		"ports without protocol":   {DPorts: ports(80)},
		"ports with icmp":          {L4Proto: icmp, DPorts: ports(80)},
		"icmp types without icmp":  {L4Proto: tcp, ICMPTypes: []uint8{8}},
		"mixed families":           {SAddrs: pfx("10.0.0.0/8", "2001:db8::/32")},
		"family mismatch":          {Family: compile.FamilyIPv6, DAddrs: pfx("10.0.0.1")},
		"icmp in ipv6":             {Family: compile.FamilyIPv6, L4Proto: icmp, ICMPTypes: []uint8{8}},
		"interface name too long":  {IIfName: "abcdefghijklmnop"},
		"interface name with plus": {OIfName: "a+b"},
		"log prefix too long":      {Log: &compile.Log{Prefix: strings.Repeat("x", 128)}},
		"unknown verdict":          {Verdict: "continue"},
	} {
		rs := &compile.Ruleset{Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{r}}}}
		if _, err := buildPlan(rs, "t"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for name, c := range map[string]compile.Chain{
		"no name":     {Hook: compile.HookInput, Policy: compile.VerdictAccept},
		"bad hook":    {Name: "c", Hook: "ingress", Policy: compile.VerdictAccept},
		"bad policy":  {Name: "c", Hook: compile.HookInput, Policy: compile.VerdictReject},
		"none policy": {Name: "c", Hook: compile.HookInput},
	} {
		rs := &compile.Ruleset{Chains: []compile.Chain{c}}
		if _, err := buildPlan(rs, "t"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	dup := &compile.Ruleset{Chains: []compile.Chain{
		{Name: "c", Hook: compile.HookInput, Policy: compile.VerdictAccept},
		{Name: "c", Hook: compile.HookOutput, Policy: compile.VerdictAccept},
	}}
	if _, err := buildPlan(dup, "t"); err == nil {
		t.Error("duplicate chain: no error")
	}
}

func encodeOne(t *testing.T, r compile.Rule) []kernelRule {
	t.Helper()
	rs := &compile.Ruleset{Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: []compile.Rule{r}}}}
	pl, err := buildPlan(rs, "t")
	if err != nil {
		t.Fatal(err)
	}
	return pl.chains[0].rules
}

func TestInterfaceNames(t *testing.T) {
	cmpData := func(rs []kernelRule) [][]byte {
		var out [][]byte
		for _, e := range rs[0].exprs {
			if c, ok := e.(*expr.Cmp); ok {
				out = append(out, c.Data)
			}
		}
		return out
	}
	exact := cmpData(encodeOne(t, compile.Rule{IIfName: "eth0"}))
	if len(exact) != 1 || !bytes.Equal(exact[0], append([]byte("eth0"), make([]byte, 12)...)) {
		t.Errorf("exact name: %q", exact)
	}
	wild := cmpData(encodeOne(t, compile.Rule{OIfName: "eth+"}))
	if len(wild) != 1 || string(wild[0]) != "eth" {
		t.Errorf("wildcard: %q", wild)
	}
	if any := encodeOne(t, compile.Rule{IIfName: "+"}); len(any[0].exprs) != 0 {
		t.Errorf("lone +: %d expressions", len(any[0].exprs))
	}
}

func TestFingerprints(t *testing.T) {
	base := compile.Rule{L4Proto: tcp, DPorts: ports(22, 80), Verdict: compile.VerdictAccept, Comment: "p/r"}
	a := encodeOne(t, base)
	b := encodeOne(t, base)
	if !bytes.Equal(a[0].udata, b[0].udata) {
		t.Fatal("fingerprint not stable")
	}
	if c, ok := userdata.GetString(a[0].udata, userdata.TypeComment); !ok || c != "p/r" {
		t.Errorf("comment = %q, %v", c, ok)
	}
	if fp := userdata.Get(a[0].udata, fingerprintType); len(fp) != fingerprintLen {
		t.Errorf("fingerprint = %x", fp)
	}
	for name, r := range map[string]compile.Rule{
		"port":    {L4Proto: tcp, DPorts: ports(22, 81), Verdict: compile.VerdictAccept, Comment: "p/r"},
		"verdict": {L4Proto: tcp, DPorts: ports(22, 80), Verdict: compile.VerdictDrop, Comment: "p/r"},
		"counter": {L4Proto: tcp, DPorts: ports(22, 80), Verdict: compile.VerdictAccept, Counter: true, Comment: "p/r"},
	} {
		if bytes.Equal(encodeOne(t, r)[0].udata, a[0].udata) {
			t.Errorf("%s change keeps the fingerprint", name)
		}
	}
}

func TestLogSplit(t *testing.T) {
	log := &compile.Log{Prefix: "x ", RatePerMinute: 5, Burst: 2}
	rs := encodeOne(t, compile.Rule{L4Proto: udp, Log: log, Counter: true, Verdict: compile.VerdictDrop, Comment: "c"})
	if len(rs) != 2 {
		t.Fatalf("%d kernel rules, want 2", len(rs))
	}
	last := func(r kernelRule) expr.Any { return r.exprs[len(r.exprs)-1] }
	if _, ok := last(rs[0]).(*expr.Log); !ok {
		t.Errorf("first rule ends with %T, want a log", last(rs[0]))
	}
	if v, ok := last(rs[1]).(*expr.Verdict); !ok || v.Kind != expr.VerdictDrop {
		t.Errorf("second rule ends with %#v, want drop", last(rs[1]))
	}
	if bytes.Equal(rs[0].udata, rs[1].udata) {
		t.Error("both halves share a fingerprint")
	}
	if rs := encodeOne(t, compile.Rule{Log: log, Counter: true}); len(rs) != 1 {
		t.Errorf("log-only rule split in %d", len(rs))
	}
}

func TestSetsAndChunks(t *testing.T) {
	r := compile.Rule{Family: compile.FamilyIPv6}
	for i := 0; i < 5000; i++ {
		// Every other /48, so that nothing merges.
		r.SAddrs = append(r.SAddrs, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 7), byte(i << 1)}), 48))
	}
	kr := encodeOne(t, r)
	if len(kr[0].sets) != 1 {
		t.Fatalf("%d sets", len(kr[0].sets))
	}
	s := kr[0].sets[0]
	if !s.set.Anonymous || !s.set.Constant || !s.set.Interval || s.set.KeyType.Name != "ipv6_addr" || s.size <= maxElemChunk {
		t.Errorf("set %+v, %d bytes", s.set, s.size)
	}
	// Adjacent prefixes merge into one range; one prefix needs no set.
	kr = encodeOne(t, compile.Rule{SAddrs: pfx("10.0.0.0/9", "10.128.0.0/9")})
	if len(kr[0].sets) != 0 {
		t.Errorf("adjacent prefixes use a set")
	}
}
