package compile_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/reference"
)

// The differential tests: every form Compile gives a spec, run packet by
// packet through reference.EvalRuleset, must give each packet the verdict
// reference.EvalSpec reads in the spec. They are a package of their own,
// compile_test, because internal/reference imports compile; export_test.go
// lends them the few insides they need.

// IP protocol numbers.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// protoNumber is the IP protocol number of a protocol, 0 for any.
func protoNumber(p v1alpha1.Protocol) uint8 {
	return map[v1alpha1.Protocol]uint8{
		v1alpha1.ProtocolTCP: protoTCP, v1alpha1.ProtocolUDP: protoUDP, v1alpha1.ProtocolSCTP: protoSCTP,
		v1alpha1.ProtocolICMP: protoICMP, v1alpha1.ProtocolICMPv6: protoICMPv6,
	}[p]
}

// nftChain is the ruleset's chain of an API chain.
func nftChain(c v1alpha1.Chain) string { return strings.ToLower(string(c)) }

// chooser makes the random choices of the generators: from a seeded
// source in the random test, from the fuzzer's bytes in the fuzz test.
type chooser interface {
	// intn returns a number in [0, n).
	intn(n int) int
}

type randChooser struct{ r *rand.Rand }

func (c randChooser) intn(n int) int { return c.r.IntN(n) }

// byteChooser reads choices from bytes, then zeros once they run out.
type byteChooser struct {
	b []byte
	i int
}

func (c *byteChooser) intn(n int) int {
	v := 0
	for need := n - 1; need > 0; need >>= 8 {
		v <<= 8
		if c.i < len(c.b) {
			v |= int(c.b[c.i])
			c.i++
		}
	}
	return v % n
}

func pick[T any](c chooser, xs ...T) T { return xs[c.intn(len(xs))] }

// chance is true with probability pct percent.
func chance(c chooser, pct int) bool { return c.intn(100) < pct }

// Palettes of values that overlap, nest and touch each other, so that
// random rules shadow, cover and border one another.
var (
	portPalette = []v1alpha1.PortRange{
		{Port: 1}, {Port: 22}, {Port: 53}, {Port: 80}, {Port: 443}, {Port: 1000, EndPort: 1010},
		{Port: 1005, EndPort: 1020}, {Port: 1011}, {Port: 6443}, {Port: 8000, EndPort: 9000},
		{Port: 8080}, {Port: 1, EndPort: 65535}, {Port: 65535}, {Port: 30000, EndPort: 32767}, {Port: 10250},
	}
	addrPalette = []string{
		"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "10.1.2.0/24", "10.1.3.0/24", "10.0.0.0/7", "192.0.2.0/24",
		"192.0.2.1", "0.0.0.0/0", "255.255.255.255", "0.0.0.0/1", "128.0.0.0/1", "0.0.0.0",
		"::/0", "2001:db8::/32", "2001:db8::1", "2001:db8:1::/48", "2001:db8::/31", "fe80::/10",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/1", "8000::/1", "::",
	}
	ifPalette = []string{"eth0", "eth+", "+", "cni0", "wg0", "lo"}
)

// genSpec makes a random valid spec. Actions change rarely along a chain,
// so that runs form; some rules use interfaces, states, log or audit mode,
// and in half the specs iptables' extensions.
func genSpec(c chooser, maxRules int) v1alpha1.NodeFirewallSpec {
	var spec v1alpha1.NodeFirewallSpec
	action := map[v1alpha1.Chain]v1alpha1.Action{}
	n := c.intn(maxRules + 1)
	// Half the specs use iptables' extensions, whose rules break runs.
	extensions := chance(c, 50)
	for i := range n {
		r := v1alpha1.NodeFirewallRule{
			Policy: pick(c, "a", "b"), Mode: v1alpha1.PolicyModeEnforce,
			Name:  fmt.Sprintf("r%d", i),
			Chain: pick(c, v1alpha1.ChainInput, v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput, v1alpha1.ChainPreRouting),
		}
		if a, ok := action[r.Chain]; !ok || chance(c, 8) {
			action[r.Chain] = pick(c, v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject)
		} else {
			r.Action = a
		}
		r.Action = action[r.Chain]
		if chance(c, 5) {
			r.Mode = v1alpha1.PolicyModeAudit
		}
		r.Protocol = pick(c, "", v1alpha1.ProtocolTCP, v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP,
			v1alpha1.ProtocolSCTP, v1alpha1.ProtocolICMP, v1alpha1.ProtocolICMPv6)
		if r.Protocol.HasPorts() && chance(c, 75) {
			for range 1 + c.intn(3) {
				r.Ports = append(r.Ports, pick(c, portPalette...))
			}
		}
		if chance(c, 40) {
			for range 1 + c.intn(3) {
				r.Sources = append(r.Sources, pick(c, addrPalette...))
			}
		}
		if chance(c, 30) {
			for range 1 + c.intn(2) {
				r.Destinations = append(r.Destinations, pick(c, addrPalette...))
			}
		}
		if chance(c, 8) && r.Chain != v1alpha1.ChainOutput {
			r.InInterface = pick(c, ifPalette...)
		}
		if chance(c, 8) && r.Chain != v1alpha1.ChainInput && r.Chain != v1alpha1.ChainPreRouting {
			r.OutInterface = pick(c, ifPalette...)
		}
		if chance(c, 8) {
			for range 1 + c.intn(2) {
				r.States = append(r.States, pick(c, v1alpha1.ConnStateNew, v1alpha1.ConnStateEstablished,
					v1alpha1.ConnStateRelated, v1alpha1.ConnStateInvalid))
			}
		}
		if extensions {
			genExtensions(c, &r)
		}
		r.Log = chance(c, 4) && r.Limit == nil
		spec.Rules = append(spec.Rules, r)
	}
	for _, ch := range v1alpha1.Chains {
		spec.DefaultActions.Set(ch, pick(c, "", v1alpha1.ChainPolicyAccept, v1alpha1.ChainPolicyDrop, v1alpha1.ChainPolicyDrop))
		if chance(c, 10) {
			spec.AuditedChains = append(spec.AuditedChains, ch)
		}
	}
	return spec
}

// genExtensions gives some rules the matches and answers of iptables'
// extensions: other IP protocols, source ports, ICMP types with and
// without codes, answers of Reject, and limits.
func genExtensions(c chooser, r *v1alpha1.NodeFirewallRule) {
	if r.Protocol == "" && len(r.Ports) == 0 && chance(c, 5) {
		r.Protocol = pick[v1alpha1.Protocol](c, v1alpha1.ProtocolGRE, v1alpha1.ProtocolESP, "255")
	}
	if r.Protocol.HasPorts() && chance(c, 4) {
		for range 1 + c.intn(2) {
			pr := pick(c, portPalette...)
			r.SourcePorts = append(r.SourcePorts, v1alpha1.SourcePortRange{Port: pr.Port, EndPort: pr.EndPort})
		}
	}
	if (r.Protocol == v1alpha1.ProtocolICMP || r.Protocol == v1alpha1.ProtocolICMPv6) && chance(c, 8) {
		types := map[v1alpha1.Protocol][]v1alpha1.ICMPType{
			v1alpha1.ProtocolICMP:   {"EchoRequest", "DestinationUnreachable", "FragmentationNeeded", "3/13", "PortUnreachable", "0", "TimeExceeded"},
			v1alpha1.ProtocolICMPv6: {"EchoRequest", "PacketTooBig", "DestinationUnreachable", "1/4", "NoRoute", "NeighbourSolicitation"},
		}[r.Protocol]
		for range 1 + c.intn(3) {
			r.ICMPTypes = append(r.ICMPTypes, pick(c, types...))
		}
	}
	if r.Action == v1alpha1.ActionReject && chance(c, 8) {
		r.RejectWith = pick[v1alpha1.RejectWith](c, v1alpha1.RejectWithHostUnreachable, v1alpha1.RejectWithAdminProhibited,
			v1alpha1.RejectWithNetUnreachable, v1alpha1.RejectWithPortUnreachable)
		if r.Protocol == v1alpha1.ProtocolTCP && chance(c, 50) {
			r.RejectWith = v1alpha1.RejectWithTCPReset
		}
	}
	switch c.intn(80) {
	case 0:
		r.Limit = &v1alpha1.RateLimit{Rate: 10, Per: v1alpha1.RateUnitSecond, PerSource: chance(c, 50)}
	case 1:
		r.ConnLimit = &v1alpha1.ConnLimit{Above: 5}
	}
}

// genOptions picks the agent's failsafes: the defaults, none, a few, or
// a few restricted to addresses.
func genOptions(c chooser) compile.Options {
	switch c.intn(5) {
	case 0:
		return compile.Options{}
	case 1:
		return compile.Options{
			FailsafeInbound:  []compile.Failsafe{{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{1005, 1006}}},
			FailsafeOutbound: []compile.Failsafe{{Protocol: v1alpha1.ProtocolSCTP, Ports: compile.PortInterval{80, 80}}},
		}
	case 2:
		return compile.Options{FailsafeInbound: genRestrictedFailsafes(c), FailsafeOutbound: genRestrictedFailsafes(c)}
	}
	return compile.Options{FailsafeInbound: compile.DefaultFailsafeInbound(), FailsafeOutbound: compile.DefaultFailsafeOutbound()}
}

// genRestrictedFailsafes makes a few failsafes, most of them restricted to
// sources or destinations from the address palette, with an IP family in
// common when they have both.
func genRestrictedFailsafes(c chooser) []compile.Failsafe {
	prefixes := func() []netip.Prefix {
		var out []netip.Prefix
		for range 1 + c.intn(3) {
			p, err := v1alpha1.ParseAddress(pick(c, addrPalette...))
			if err != nil {
				panic(err)
			}
			out = append(out, p)
		}
		return out
	}
	var out []compile.Failsafe
	for range 1 + c.intn(4) {
		pr := pick(c, portPalette...)
		f := compile.Failsafe{
			Protocol: pick(c, v1alpha1.ProtocolTCP, v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP),
			Ports:    compile.PortInterval{First: uint16(pr.Port), Last: uint16(pr.Last())},
		}
		if chance(c, 70) {
			f.Sources = prefixes()
		}
		if chance(c, 40) {
			f.Destinations = prefixes()
		}
		if compile.ValidateFailsafe(f) != nil {
			f.Destinations = nil // no family in common with the sources
		}
		out = append(out, f)
		if chance(c, 30) {
			// Another port range with the same addresses shares its rules.
			g := f
			g.Ports = compile.PortInterval{First: max(uint16(pr.Port)/2, 7), Last: max(uint16(pr.Port)/2, 7)}
			out = append(out, g)
		}
	}
	return out
}

// interesting are the addresses at and around the palette's edges.
var interesting = func() map[compile.Family][]netip.Addr {
	out := map[compile.Family][]netip.Addr{}
	for _, s := range addrPalette {
		p, err := v1alpha1.ParseAddress(s)
		if err != nil {
			panic(err)
		}
		f := compile.FamilyIPv4
		if p.Addr().Is6() {
			f = compile.FamilyIPv6
		}
		out[f] = append(out[f], edges(p)...)
	}
	return out
}()

// edges are the addresses at and around a prefix's edges: its first and
// last, the ones just outside it (an IPv6 prefix's wrap around the
// family's addresses, an IPv4 prefix's stop at them), and one inside with
// the low bits 0x55.
func edges(p netip.Prefix) []netip.Addr {
	first := p.Masked().Addr()
	last := lastAddr(p)
	out := []netip.Addr{first, last}
	before, after := first.Prev(), last.Next()
	if first.Is6() {
		if !before.IsValid() {
			before = lastAddr(netip.PrefixFrom(first, 0))
		}
		if !after.IsValid() {
			after = netip.IPv6Unspecified()
		}
	}
	for _, a := range []netip.Addr{before, after} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	b := first.AsSlice()
	b[len(b)-1] |= 0x55
	inside, _ := netip.AddrFromSlice(b)
	return append(out, inside)
}

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < 8*len(b); i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

var interestingPorts = func() []uint16 {
	out := []uint16{0, 1, 2, 65534, 65535, 67, 68, 2379, 2380, 2381}
	for _, p := range portPalette {
		for _, v := range []int32{p.Port - 1, p.Port, p.Last(), p.Last() + 1} {
			if v >= 0 && v <= 65535 {
				out = append(out, uint16(v))
			}
		}
	}
	return out
}()

// genPacket makes a packet for a chain, mostly from the values the
// palettes make interesting.
func genPacket(c chooser, chain v1alpha1.Chain) reference.Packet {
	p := reference.Packet{Family: pick(c, compile.FamilyIPv4, compile.FamilyIPv6)}
	addr := func() netip.Addr {
		if chance(c, 10) {
			if p.Family == compile.FamilyIPv4 {
				return netip.AddrFrom4([4]byte{byte(c.intn(256)), byte(c.intn(256)), byte(c.intn(256)), byte(c.intn(256))})
			}
			var b [16]byte
			for i := range b {
				b[i] = byte(c.intn(256))
			}
			return netip.AddrFrom16(b)
		}
		return pick(c, interesting[p.Family]...)
	}
	p.SAddr, p.DAddr = addr(), addr()
	p.L4Proto = pick[uint8](c, protoTCP, protoTCP, protoUDP, protoSCTP, protoICMP, protoICMPv6, 0, 47, 255)
	p.Transport = chance(c, 90)
	if chance(c, 90) {
		p.DPort = pick(c, interestingPorts...)
	} else {
		p.DPort = uint16(c.intn(65536))
	}
	p.Type = pick[uint8](c, 0, 2, 3, 8, 11, 128, 133, 135, 137)
	p.Code = pick[uint8](c, 0, 0, 1, 3, 4, 13, 255)
	if p.L4Proto == protoICMP || p.L4Proto == protoICMPv6 {
		// th sport reads an ICMP message's type and code.
		p.SPort = uint16(p.Type)<<8 | uint16(p.Code)
	} else if chance(c, 90) {
		p.SPort = pick(c, interestingPorts...)
	} else {
		p.SPort = uint16(c.intn(65536))
	}
	ifname := func() string { return pick(c, "eth0", "eth1", "lo", "cni0", "wg0", "e") }
	switch chain {
	case v1alpha1.ChainPreRouting:
		p.IIfName = ifname()
		p.DAddrLocal = chance(c, 75)
	case v1alpha1.ChainInput:
		p.IIfName = ifname()
	case v1alpha1.ChainOutput:
		p.OIfName = ifname()
	default:
		p.IIfName, p.OIfName = ifname(), ifname()
	}
	p.CtState = pick(c, compile.CtStateNew, compile.CtStateNew, compile.CtStateNew, compile.CtStateNew, compile.CtStateEstablished, compile.CtStateRelated, compile.CtStateInvalid)
	return p
}

// variants compiles a spec three ways: with set lookups at the agent's run
// length, with every run in sets, and all linear (the agent's default).
func variants(t testing.TB, spec v1alpha1.NodeFirewallSpec, opts compile.Options) map[string]*compile.Ruleset {
	t.Helper()
	out := map[string]*compile.Ruleset{}
	for name, minRun := range map[string]int{"default": 0, "sets": 1, "exact": 1, "linear": 1 << 30} {
		o := compile.WithMinRunLen(opts, minRun)
		o.SetLookups = true
		if name == "exact" {
			// Every run's single keys in hash sets of their own.
			o.ExactSetMin = 1
		}
		rs, err := compile.Compile(spec, o)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		compile.CheckSets(t, rs)
		out[name] = rs
	}
	return out
}

// agree checks every compiled form against the reference on one packet.
func agree(t testing.TB, spec v1alpha1.NodeFirewallSpec, opts compile.Options, forms map[string]*compile.Ruleset, chain v1alpha1.Chain, p reference.Packet) {
	t.Helper()
	trace := reference.TraceSpec(spec, opts, chain, p)
	want := trace.Verdict
	for name, rs := range forms {
		if got := reference.EvalRuleset(rs, nftChain(chain), p); got != want {
			t.Fatalf("%s form, chain %s, packet %+v: compiled says %q, the rules say %q\nspec: %+v\nruleset:\n%s",
				name, chain, p, got, want, spec, compile.Render(rs))
		}
		// The rule that decides is the rule whose counter counts the
		// packet, inside runs too.
		if d := trace.Decider(); d.Kind == reference.StepRule {
			if got, want := reference.CountingRule(rs, nftChain(chain), p), d.Policy+"/"+d.Rule; got != want {
				t.Fatalf("%s form, chain %s, packet %+v: counted by %q, decided by %q\nspec: %+v\nruleset:\n%s",
					name, chain, p, got, want, spec, compile.Render(rs))
			}
		}
	}
}

// agreeInbound checks every compiled form against the reference on one
// packet that arrives at the node, through prerouting and on to input or
// forward, translated on the way by dnat when it is not nil.
func agreeInbound(t testing.TB, spec v1alpha1.NodeFirewallSpec, opts compile.Options, forms map[string]*compile.Ruleset, p reference.Packet, dnat *reference.DNAT) {
	t.Helper()
	want, wantChain := reference.EvalInbound(spec, opts, p, dnat)
	for name, rs := range forms {
		if got, chain := reference.EvalRulesetInbound(rs, p, dnat); got != want || chain != wantChain {
			t.Fatalf("%s form, packet %+v, DNAT %+v: compiled says %q in %s, the rules say %q in %s\nspec: %+v\nruleset:\n%s",
				name, p, dnat, got, chain, want, wantChain, spec, compile.Render(rs))
		}
	}
}

// genDNAT makes, half the time, a DNAT as kube-proxy's: to a backend on
// the node or, more often, forwarded to a pod.
func genDNAT(c chooser, fam compile.Family) *reference.DNAT {
	if chance(c, 50) {
		return nil
	}
	d := &reference.DNAT{DAddr: pick(c, interesting[fam]...), DPort: pick(c, interestingPorts...), Local: chance(c, 30)}
	if !d.Local {
		d.OIfName = pick(c, "eth0", "cni0", "wg0")
	}
	return d
}

// checkFailsafes checks that traffic to a failsafe port is accepted on
// prerouting and input (inbound) and output (outbound), whatever the rules
// say.
func checkFailsafes(t testing.TB, c chooser, spec v1alpha1.NodeFirewallSpec, opts compile.Options, forms map[string]*compile.Ruleset) {
	t.Helper()
	// A slice, not a map: the packets draw from c, and the specs drawn
	// after them must not depend on a map's order.
	for _, cf := range []struct {
		chain v1alpha1.Chain
		fs    []compile.Failsafe
	}{
		{v1alpha1.ChainPreRouting, opts.FailsafeInbound}, {v1alpha1.ChainInput, opts.FailsafeInbound}, {v1alpha1.ChainOutput, opts.FailsafeOutbound},
	} {
		chain := cf.chain
		for _, f := range cf.fs {
			p := genPacket(c, chain)
			p.L4Proto, p.Transport = protoNumber(f.Protocol), true
			p.DPort = f.Ports.First + uint16(c.intn(int(f.Ports.Last-f.Ports.First)+1))
			// From and to addresses the failsafe lists, of a family both
			// of its lists have.
			var fams []compile.Family
			for _, fam := range []compile.Family{compile.FamilyIPv4, compile.FamilyIPv6} {
				has := func(ps []netip.Prefix) bool {
					return len(ps) == 0 || slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Addr().Is4() == (fam == compile.FamilyIPv4) })
				}
				if has(f.Sources) && has(f.Destinations) {
					fams = append(fams, fam)
				}
			}
			if fam := pick(c, fams...); fam != p.Family {
				p.Family = fam
				p.SAddr, p.DAddr = pick(c, interesting[fam]...), pick(c, interesting[fam]...)
			}
			within := func(ps []netip.Prefix, a netip.Addr) netip.Addr {
				var of []netip.Prefix
				for _, pfx := range ps {
					if pfx.Addr().Is4() == (p.Family == compile.FamilyIPv4) {
						of = append(of, pfx)
					}
				}
				if len(of) == 0 {
					return a
				}
				return pick(c, of...).Addr()
			}
			p.SAddr, p.DAddr = within(f.Sources, p.SAddr), within(f.Destinations, p.DAddr)
			for name, rs := range forms {
				if got := reference.EvalRuleset(rs, nftChain(chain), p); got != compile.VerdictAccept {
					t.Fatalf("%s form: failsafe %v packet %+v got %q\nruleset:\n%s", name, f, p, got, compile.Render(rs))
				}
			}
		}
	}
}

// TestCompiledMatchesLinearRandom runs random packets through random
// specs: every compiled form must give each packet the verdict the rules
// give it, and never drop a failsafe port.
func TestCompiledMatchesLinearRandom(t *testing.T) {
	specs, packets := 600, 12
	if testing.Short() {
		specs = 200
	}
	c := randChooser{rand.New(rand.NewPCG(1, 2))}
	total, byLookup, sets := 0, map[string]int{}, 0
	for range specs {
		spec := genSpec(c, 80)
		opts := genOptions(c)
		forms := variants(t, spec, opts)
		sets += len(forms["default"].Sets)
		for _, chain := range v1alpha1.Chains {
			for range packets {
				p := genPacket(c, chain)
				agree(t, spec, opts, forms, chain, p)
				if chain == v1alpha1.ChainPreRouting {
					agreeInbound(t, spec, opts, forms, p, genDNAT(c, p.Family))
				}
				total++
				for name, rs := range forms {
					if r := reference.DecidingRule(rs, nftChain(chain), p); r != nil && r.Lookup != "" {
						byLookup[name]++
						if rs.Set(r.Lookup).Exact {
							byLookup[name+" (exact set)"]++
						}
					}
				}
			}
		}
		checkFailsafes(t, c, spec, opts, forms)
	}
	t.Logf("%d packets over %d specs (%d sets as agents compile them); decided by a lookup: %v", total, specs, sets, byLookup)
	// The test means something only if lookups decide often.
	if byLookup["default"] < total/40 || byLookup["sets"] < total/10 || byLookup["exact (exact set)"] < total/1000 {
		t.Errorf("too few packets decided by lookups: %v of %d", byLookup, total)
	}
}

// FuzzCompiledMatchesLinear lets the fuzzer choose specs and packets.
func FuzzCompiledMatchesLinear(f *testing.F) {
	seeds := randChooser{rand.New(rand.NewPCG(3, 4))}
	for range 16 {
		b := make([]byte, 400)
		for i := range b {
			b[i] = byte(seeds.intn(256))
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &byteChooser{b: data}
		spec := genSpec(c, 24)
		opts := genOptions(c)
		forms := variants(t, spec, opts)
		for range 8 {
			chain := pick(c, v1alpha1.Chains...)
			p := genPacket(c, chain)
			agree(t, spec, opts, forms, chain, p)
			if chain == v1alpha1.ChainPreRouting {
				agreeInbound(t, spec, opts, forms, p, genDNAT(c, p.Family))
			}
		}
		checkFailsafes(t, c, spec, opts, forms)
	})
}

// TestIPv6RunsMatchLinear checks large IPv6 runs, whose addresses the
// decomposer numbers by rank, against the rules' semantics: nested,
// touching and overlapping prefixes, sources and destinations, rules of
// both families and ICMPv6, in sets large enough to be sorted by radix.
func TestIPv6RunsMatchLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 11))
	// Broad prefixes, seldom: they would cover the others.
	broad := []string{"::/0", "::/1", "8000::/1", "2001:db8::/32", "2001:db8::/33", "2001:db8:8000::/33", "fe80::/10"}
	prefixes := []string{"2001:db9::/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::", "::1"}
	for i := range 64 {
		prefixes = append(prefixes, fmt.Sprintf("2001:db8:%x::/48", i), fmt.Sprintf("2001:db8:%x::%x", i, r.IntN(4)),
			fmt.Sprintf("2001:db8:%x:%x::/64", i, r.IntN(3)))
	}
	pick := func() string {
		if r.IntN(100) == 0 {
			return broad[r.IntN(len(broad))]
		}
		return prefixes[r.IntN(len(prefixes))]
	}
	spec := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Output: v1alpha1.ChainPolicyDrop}}
	for i := range 3000 {
		rule := v1alpha1.NodeFirewallRule{
			Policy: "p", Name: fmt.Sprintf("r%d", i),
			Chain:    []v1alpha1.Chain{v1alpha1.ChainInput, v1alpha1.ChainOutput}[i/1500],
			Action:   []v1alpha1.Action{v1alpha1.ActionAccept, v1alpha1.ActionDrop}[i/750%2],
			Protocol: []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolICMPv6, ""}[r.IntN(4)],
		}
		if rule.Protocol.HasPorts() && r.IntN(3) > 0 {
			rule.Ports = []v1alpha1.PortRange{{Port: int32(1 + r.IntN(40))}}
			if r.IntN(4) == 0 {
				rule.Ports[0].EndPort = rule.Ports[0].Port + int32(r.IntN(30))
			}
		}
		if r.IntN(6) > 0 {
			rule.Sources = []string{pick()}
			if r.IntN(5) == 0 {
				rule.Sources = append(rule.Sources, pick(), "10.0.0.0/8")
			}
		}
		// Every rule names an address: one without would cover the rest.
		if r.IntN(3) == 0 || len(rule.Sources) == 0 {
			rule.Destinations = []string{pick()}
		}
		spec.Rules = append(spec.Rules, rule)
	}
	opts := compile.Options{SetLookups: true}
	rs, err := compile.Compile(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	compile.CheckSets(t, rs)
	// Addresses at and around an address's edges, ports at and around a
	// port range's.
	edge := func(s string, or netip.Addr) netip.Addr {
		p, err := v1alpha1.ParseAddress(s)
		if err != nil {
			t.Fatal(err)
		}
		if p.Addr().Is4() {
			return or
		}
		return edges(p)[r.IntN(4)]
	}
	somePrefix := func() string { return append(prefixes, broad...)[r.IntN(len(prefixes)+len(broad))] }
	for range 30000 {
		p := reference.Packet{
			Family: compile.FamilyIPv6, L4Proto: []uint8{protoTCP, protoUDP, protoICMPv6, protoSCTP}[r.IntN(4)],
			Transport: r.IntN(20) > 0, DPort: uint16(r.IntN(75)), Type: 128, CtState: compile.CtStateNew,
			SAddr: edge(somePrefix(), netip.IPv6Unspecified()), DAddr: edge(somePrefix(), netip.IPv6Unspecified()),
		}
		// Mostly packets near a rule, where a wrong edge shows.
		if rule := &spec.Rules[r.IntN(len(spec.Rules))]; r.IntN(4) > 0 {
			if l4 := protoNumber(rule.Protocol); l4 != 0 {
				p.L4Proto = l4
			}
			if len(rule.Ports) > 0 {
				p.DPort = uint16([]int32{rule.Ports[0].Port, rule.Ports[0].Last(), rule.Ports[0].Port - 1, rule.Ports[0].Last() + 1}[r.IntN(4)])
			}
			if len(rule.Sources) > 0 {
				p.SAddr = edge(rule.Sources[r.IntN(len(rule.Sources))], p.SAddr)
			}
			if len(rule.Destinations) > 0 {
				p.DAddr = edge(rule.Destinations[r.IntN(len(rule.Destinations))], p.DAddr)
			}
		}
		for _, c := range []v1alpha1.Chain{v1alpha1.ChainInput, v1alpha1.ChainOutput} {
			q := p
			if c == v1alpha1.ChainInput {
				q.IIfName = "eth0"
			} else {
				q.OIfName = "eth0"
			}
			if got, want := reference.EvalRuleset(rs, nftChain(c), q), reference.EvalSpec(spec, opts, c, q); got != want {
				t.Fatalf("chain %s, packet %+v: compiled %q, rules %q", c, q, got, want)
			}
		}
	}
}

// TestPathologicalRunIsSplit feeds a run whose disjoint rewrite would
// explode (nested port ranges from distinct sources): compile.Compile must split it
// into several runs, quickly, and stay exact.
func TestPathologicalRunIsSplit(t *testing.T) {
	spec := v1alpha1.NodeFirewallSpec{}
	for i := range 3000 {
		spec.Rules = append(spec.Rules, v1alpha1.NodeFirewallRule{
			Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop,
			Protocol: v1alpha1.ProtocolTCP, Ports: []v1alpha1.PortRange{{Port: int32(1 + i), EndPort: int32(60000 - i)}},
			Sources: []string{fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)},
		})
	}
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	compile.CheckSets(t, rs)
	if len(rs.Sets) < 2 || compile.ElementCount(rs) > 100*len(spec.Rules) {
		t.Errorf("%d sets, %d elements", len(rs.Sets), compile.ElementCount(rs))
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		i := r.IntN(3200)
		p := reference.Packet{
			Family: compile.FamilyIPv4, L4Proto: protoTCP, Transport: true, DPort: uint16(r.IntN(65536)), CtState: compile.CtStateNew,
			SAddr: netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 9}), DAddr: netip.MustParseAddr("192.0.2.2"),
			IIfName: "eth0",
		}
		if got, want := reference.EvalRuleset(rs, compile.ChainInput, p), reference.EvalSpec(spec, compile.Options{SetLookups: true}, v1alpha1.ChainInput, p); got != want {
			t.Fatalf("packet %+v: compiled %q, rules %q", p, got, want)
		}
	}
}

// TestPortBlocksMatchLinear checks runs big enough to be cut into port
// blocks, with ranges across the borders, against the rules' semantics.
func TestPortBlocksMatchLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	spec := v1alpha1.NodeFirewallSpec{DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop}}
	for i := range 3000 {
		first := int32(1 + r.IntN(65535))
		last := first
		switch r.IntN(10) {
		case 0:
			last = min(65535, first+int32(r.IntN(20000)))
		case 1:
			first = int32(compile.PortBlockWidth*(1+r.IntN(15)) - r.IntN(5))
			last = first + int32(r.IntN(10))
		}
		rule := v1alpha1.NodeFirewallRule{
			Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput,
			Action:   []v1alpha1.Action{v1alpha1.ActionAccept, v1alpha1.ActionDrop}[i/1500],
			Protocol: []v1alpha1.Protocol{v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP}[r.IntN(2)],
			Ports:    []v1alpha1.PortRange{{Port: first, EndPort: last}},
		}
		if r.IntN(5) > 0 {
			rule.Sources = []string{fmt.Sprintf("10.%d.%d.0/24", r.IntN(8), r.IntN(8))}
		}
		spec.Rules = append(spec.Rules, rule)
	}
	rs, err := compile.Compile(spec, compile.Options{SetLookups: true})
	if err != nil {
		t.Fatal(err)
	}
	compile.CheckSets(t, rs)
	blocks := 0
	for _, s := range rs.Sets {
		if strings.HasSuffix(s.Name, "-4096") {
			blocks++
		}
	}
	if blocks == 0 {
		t.Fatalf("no port blocks:\n%v", rs.Sets)
	}
	for range 20000 {
		p := reference.Packet{
			Family: compile.FamilyIPv4, L4Proto: []uint8{protoTCP, protoUDP, protoSCTP}[r.IntN(3)], Transport: r.IntN(20) > 0,
			DPort: uint16(r.IntN(65536)), CtState: compile.CtStateNew, IIfName: "eth0",
			SAddr: netip.AddrFrom4([4]byte{10, byte(r.IntN(9)), byte(r.IntN(9)), 1}), DAddr: netip.MustParseAddr("192.0.2.2"),
		}
		if r.IntN(4) == 0 {
			p.DPort = uint16(compile.PortBlockWidth*(1+r.IntN(15)) - 3 + r.IntN(6))
		}
		if got, want := reference.EvalRuleset(rs, compile.ChainInput, p), reference.EvalSpec(spec, compile.Options{SetLookups: true}, v1alpha1.ChainInput, p); got != want {
			t.Fatalf("packet %+v: compiled %q, rules %q", p, got, want)
		}
	}
}

// TestExtensionsMatchLinear checks the matches of iptables' extensions
// against the rules' semantics on every packet that tells them apart:
// ICMP and ICMPv6 types with and without codes, source ports and other IP
// protocols, in random specs of such rules, each packet of every type and
// code, port and protocol of interest.
func TestExtensionsMatchLinear(t *testing.T) {
	c := randChooser{rand.New(rand.NewPCG(7, 8))}
	v4Types := []v1alpha1.ICMPType{"EchoRequest", "EchoReply", "DestinationUnreachable", "FragmentationNeeded", "3/13",
		"PortUnreachable", "HostUnreachable", "TimeExceeded", "TTLZeroDuringTransit", "Redirect", "0", "3/0", "255/255"}
	v6Types := []v1alpha1.ICMPType{"EchoRequest", "PacketTooBig", "DestinationUnreachable", "1/4", "NoRoute",
		"AddressUnreachable", "TimeExceeded", "ParameterProblem", "NeighbourSolicitation", "128/1"}
	sports := []v1alpha1.SourcePortRange{{Port: 53}, {Port: 1024, EndPort: 65535}, {Port: 1, EndPort: 1023}, {Port: 123}, {Port: 5000, EndPort: 5001}}
	packets := 0
	for range 300 {
		var spec v1alpha1.NodeFirewallSpec
		for i := range 1 + c.intn(10) {
			r := v1alpha1.NodeFirewallRule{Policy: "p", Name: fmt.Sprintf("r%d", i), Chain: v1alpha1.ChainInput,
				Action: pick(c, v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject)}
			switch c.intn(4) {
			case 0:
				r.Protocol = v1alpha1.ProtocolICMP
				for range 1 + c.intn(4) {
					r.ICMPTypes = append(r.ICMPTypes, pick(c, v4Types...))
				}
			case 1:
				r.Protocol = v1alpha1.ProtocolICMPv6
				for range 1 + c.intn(4) {
					r.ICMPTypes = append(r.ICMPTypes, pick(c, v6Types...))
				}
			case 2:
				r.Protocol = pick(c, v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP)
				for range 1 + c.intn(2) {
					r.SourcePorts = append(r.SourcePorts, pick(c, sports...))
				}
				if chance(c, 30) {
					r.Ports = []v1alpha1.PortRange{pick(c, portPalette...)}
				}
			default:
				r.Protocol = pick[v1alpha1.Protocol](c, v1alpha1.ProtocolGRE, v1alpha1.ProtocolESP, "41", "255", v1alpha1.ProtocolVRRP)
			}
			if r.Action == v1alpha1.ActionReject && chance(c, 50) {
				r.RejectWith = pick[v1alpha1.RejectWith](c, v1alpha1.RejectWithHostUnreachable, v1alpha1.RejectWithAdminProhibited, v1alpha1.RejectWithNetUnreachable)
			}
			spec.Rules = append(spec.Rules, r)
		}
		spec.DefaultActions.Input = v1alpha1.ChainPolicyDrop
		forms := variants(t, spec, compile.Options{})
		for _, fam := range []compile.Family{compile.FamilyIPv4, compile.FamilyIPv6} {
			base := reference.Packet{Family: fam, SAddr: interesting[fam][0], DAddr: interesting[fam][1], Transport: true, CtState: compile.CtStateNew}
			icmpProto := uint8(protoICMP)
			if fam == compile.FamilyIPv6 {
				icmpProto = protoICMPv6
			}
			for _, typ := range []uint8{0, 1, 2, 3, 4, 5, 8, 11, 12, 128, 129, 135, 255} {
				for _, code := range []uint8{0, 1, 3, 4, 5, 13, 254, 255} {
					p := base
					p.L4Proto, p.Type, p.Code, p.SPort = icmpProto, typ, code, uint16(typ)<<8|uint16(code)
					agree(t, spec, compile.Options{}, forms, v1alpha1.ChainInput, p)
					packets++
				}
			}
			for _, proto := range []uint8{protoTCP, protoUDP, protoSCTP} {
				for _, sport := range []uint16{0, 1, 52, 53, 54, 122, 123, 1023, 1024, 4999, 5000, 5001, 5002, 65535} {
					for _, dport := range []uint16{22, 80, 1000, 8080} {
						p := base
						p.L4Proto, p.SPort, p.DPort = proto, sport, dport
						agree(t, spec, compile.Options{}, forms, v1alpha1.ChainInput, p)
						p.Transport = false
						agree(t, spec, compile.Options{}, forms, v1alpha1.ChainInput, p)
						packets += 2
					}
				}
			}
			for _, proto := range []uint8{0, 4, 41, 47, 50, 51, 112, 254, 255} {
				p := base
				p.L4Proto = proto
				agree(t, spec, compile.Options{}, forms, v1alpha1.ChainInput, p)
				packets++
			}
		}
	}
	t.Logf("%d packets", packets)
}
