package nft

import (
	"net/netip"
	"testing"
	"time"

	"github.com/nodefw/nodefw/internal/compile"
)

func TestScratchHeavy(t *testing.T) {
	_, p := target(t)
	var rules []compile.Rule
	for i := 0; i < 10000; i++ {
		rules = append(rules, compile.Rule{
			Family: compile.FamilyIPv4, L4Proto: tcp,
			DPorts:  []compile.PortInterval{{First: uint16(1000 + i%5000), Last: uint16(1000 + i%5000)}, {First: 30000, Last: 30010}},
			SAddrs:  []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), netip.MustParsePrefix("172.16.0.0/12")},
			Counter: true, Verdict: compile.VerdictAccept, Comment: "heavy/rule",
		})
	}
	rs := &compile.Ruleset{Chains: []compile.Chain{{Name: "input", Hook: compile.HookInput, Policy: compile.VerdictAccept, Rules: rules}}}
	start := time.Now()
	if err := p.Apply(rs); err != nil {
		t.Fatal(err)
	}
	t.Log("apply", time.Since(start))
	start = time.Now()
	ok, err := p.InSync(rs)
	t.Log("insync", ok, err, time.Since(start))
}
