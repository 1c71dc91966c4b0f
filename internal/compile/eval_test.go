package compile

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

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
// so that runs form; some rules use interfaces, states, log or audit mode.
func genSpec(c chooser, maxRules int) v1alpha1.NodeFirewallSpec {
	var spec v1alpha1.NodeFirewallSpec
	action := map[v1alpha1.Chain]v1alpha1.Action{}
	n := c.intn(maxRules + 1)
	for i := range n {
		r := v1alpha1.NodeFirewallRule{
			Policy: pick(c, "a", "b"), Mode: v1alpha1.PolicyModeEnforce,
			Name:  fmt.Sprintf("r%d", i),
			Chain: pick(c, v1alpha1.ChainInput, v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput),
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
		if chance(c, 8) && r.Chain != v1alpha1.ChainInput {
			r.OutInterface = pick(c, ifPalette...)
		}
		if chance(c, 8) {
			for range 1 + c.intn(2) {
				r.States = append(r.States, pick(c, v1alpha1.ConnStateNew, v1alpha1.ConnStateEstablished,
					v1alpha1.ConnStateRelated, v1alpha1.ConnStateInvalid))
			}
		}
		r.Log = chance(c, 4)
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

// genOptions picks the agent's failsafes: the defaults, none, a few, or
// a few restricted to addresses.
func genOptions(c chooser) Options {
	switch c.intn(5) {
	case 0:
		return Options{}
	case 1:
		return Options{
			FailsafeInbound:  []Failsafe{{Protocol: v1alpha1.ProtocolTCP, Ports: PortInterval{1005, 1006}}},
			FailsafeOutbound: []Failsafe{{Protocol: v1alpha1.ProtocolSCTP, Ports: PortInterval{80, 80}}},
		}
	case 2:
		return Options{FailsafeInbound: genRestrictedFailsafes(c), FailsafeOutbound: genRestrictedFailsafes(c)}
	}
	return Options{FailsafeInbound: DefaultFailsafeInbound(), FailsafeOutbound: DefaultFailsafeOutbound()}
}

// genRestrictedFailsafes makes a few failsafes, most of them restricted to
// sources or destinations from the address palette, with an IP family in
// common when they have both.
func genRestrictedFailsafes(c chooser) []Failsafe {
	prefixes := func() []netip.Prefix {
		var out []netip.Prefix
		for range 1 + c.intn(3) {
			p, err := parseAddress(pick(c, addrPalette...))
			if err != nil {
				panic(err)
			}
			out = append(out, p)
		}
		return out
	}
	var out []Failsafe
	for range 1 + c.intn(4) {
		pr := pick(c, portPalette...)
		f := Failsafe{
			Protocol: pick(c, v1alpha1.ProtocolTCP, v1alpha1.ProtocolTCP, v1alpha1.ProtocolUDP, v1alpha1.ProtocolSCTP),
			Ports:    PortInterval{uint16(pr.Port), uint16(pr.Last())},
		}
		if chance(c, 70) {
			f.Sources = prefixes()
		}
		if chance(c, 40) {
			f.Destinations = prefixes()
		}
		if ValidateFailsafe(f) != nil {
			f.Destinations = nil // no family in common with the sources
		}
		out = append(out, f)
		if chance(c, 30) {
			// Another port range with the same addresses shares its rules.
			g := f
			g.Ports = PortInterval{uint16(pr.Port) / 2, uint16(pr.Port) / 2}
			if g.Ports.First == 0 {
				g.Ports = PortInterval{7, 7}
			}
			out = append(out, g)
		}
	}
	return out
}

// interesting are the addresses at and around the palette's edges.
var interesting = func() map[Family][]netip.Addr {
	out := map[Family][]netip.Addr{}
	for _, s := range addrPalette {
		p, err := parseAddress(s)
		if err != nil {
			panic(err)
		}
		f := prefixFamily(p)
		sp := prefixSpan(p)
		for _, v := range []u128{sp.lo, sp.hi, sp.lo.prev(), sp.hi.next(), {sp.lo.hi, sp.lo.lo | 0x55}} {
			if f == FamilyIPv4 && v.lo >= 1<<32 || f == FamilyIPv4 && v.hi != 0 {
				continue
			}
			out[f] = append(out[f], u128Addr(v, f))
		}
	}
	return out
}()

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
func genPacket(c chooser, chain v1alpha1.Chain) Packet {
	p := Packet{Family: pick(c, FamilyIPv4, FamilyIPv6)}
	addr := func() netip.Addr {
		if chance(c, 10) {
			if p.Family == FamilyIPv4 {
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
	p.Type = pick[uint8](c, 0, 3, 8, 128, 133, 135, 137)
	ifname := func() string { return pick(c, "eth0", "eth1", "lo", "cni0", "wg0", "e") }
	switch chain {
	case v1alpha1.ChainInput:
		p.IIfName = ifname()
	case v1alpha1.ChainOutput:
		p.OIfName = ifname()
	default:
		p.IIfName, p.OIfName = ifname(), ifname()
	}
	p.CtState = pick(c, CtStateNew, CtStateNew, CtStateNew, CtStateNew, CtStateEstablished, CtStateRelated, CtStateInvalid)
	return p
}

// variants compiles a spec three ways: with set lookups at the agent's run
// length, with every run in sets, and all linear (the agent's default).
func variants(t testing.TB, spec v1alpha1.NodeFirewallSpec, opts Options) map[string]*Ruleset {
	t.Helper()
	out := map[string]*Ruleset{}
	for name, minRun := range map[string]int{"default": 0, "sets": 1, "exact": 1, "linear": 1 << 30} {
		o := opts
		o.minRunLen, o.SetLookups = minRun, true
		if name == "exact" {
			// Every run's single keys in hash sets of their own.
			o.ExactSetMin = 1
		}
		rs, err := Compile(spec, o)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		checkSets(t, rs)
		out[name] = rs
	}
	return out
}

// checkSets checks what the kernel needs of every set: sorted, disjoint,
// well-formed elements of the set's family, and a lookup that uses it.
func checkSets(t testing.TB, rs *Ruleset) {
	t.Helper()
	used := map[string]int{}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if r.Lookup != "" {
				used[r.Lookup]++
				if s := rs.Set(r.Lookup); s == nil || s.Family != r.Family {
					t.Fatalf("rule %q looks up %q, which is not a set of family %v", r.Comment, r.Lookup, r.Family)
				}
			}
		}
	}
	for _, s := range rs.Sets {
		// Port blocks, exact sets and the interval set next to an exact
		// set may be empty.
		mayBeEmpty := isBlock(rs, s.Name) || s.Exact || rs.Set(s.Name+exactSuffix) != nil
		if used[s.Name] != 1 || (len(s.Elements) == 0 && !mayBeEmpty) {
			t.Fatalf("set %s: %d lookups, %d elements", s.Name, used[s.Name], len(s.Elements))
		}
		if s.Exact {
			for i, e := range s.Elements {
				if sbits, dbits, ok := exactKey(&e, s.Fields, s.Family); !ok || sbits != s.SAddrBits || dbits != s.DAddrBits {
					t.Fatalf("set %s (/%d, /%d): element %d is not one key of those prefix lengths: %+v", s.Name, s.SAddrBits, s.DAddrBits, i, e)
				}
			}
		}
		boxes := make([]box, len(s.Elements))
		for i, e := range s.Elements {
			boxes[i] = elementBox(e, s)
			for k := range s.Fields {
				if boxes[i][k].lo.cmp(boxes[i][k].hi) > 0 {
					t.Fatalf("set %s: element %d has an empty range", s.Name, i)
				}
			}
			for _, a := range []netip.Addr{e.SAddr.First, e.SAddr.Last, e.DAddr.First, e.DAddr.Last} {
				if (a.Is4() && s.Family != FamilyIPv4) || (a.Is6() && s.Family != FamilyIPv6) {
					t.Fatalf("set %s: element %d has address %v of the other family", s.Name, i, a)
				}
			}
			if i > 0 && slices.Compare(keyOf(boxes[i-1], len(s.Fields)), keyOf(boxes[i], len(s.Fields))) >= 0 {
				t.Fatalf("set %s: elements %d and %d are out of order", s.Name, i-1, i)
			}
		}
		if len(boxes) > 400 {
			continue
		}
		for i := range boxes {
			for j := i + 1; j < len(boxes); j++ {
				if overlap(boxes[i], boxes[j], len(s.Fields)) {
					t.Fatalf("set %s: elements %s and %s overlap", s.Name,
						formatElement(s.Elements[i], s.Fields), formatElement(s.Elements[j], s.Fields))
				}
			}
		}
	}
}

// isBlock reports whether a set is a port block: its lookup checks a port
// range first.
func isBlock(rs *Ruleset, name string) bool {
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			if r.Lookup == name {
				return len(r.DPorts) == 1
			}
		}
	}
	return false
}

func elementBox(e SetElement, s Set) box {
	var b box
	for k, f := range s.Fields {
		switch f {
		case FieldL4Proto:
			b[k] = span{u128{lo: uint64(e.L4Proto.First)}, u128{lo: uint64(e.L4Proto.Last)}}
		case FieldDPort:
			b[k] = span{u128{lo: uint64(e.DPort.First)}, u128{lo: uint64(e.DPort.Last)}}
		case FieldSAddr:
			b[k] = span{addrU128(e.SAddr.First), addrU128(e.SAddr.Last)}
		case FieldDAddr:
			b[k] = span{addrU128(e.DAddr.First), addrU128(e.DAddr.Last)}
		}
	}
	return b
}

func keyOf(b box, n int) []uint64 {
	var out []uint64
	for k := range n {
		out = append(out, b[k].lo.hi, b[k].lo.lo, b[k].hi.hi, b[k].hi.lo)
	}
	return out
}

func overlap(a, b box, n int) bool {
	for k := range n {
		if a[k].hi.cmp(b[k].lo) < 0 || b[k].hi.cmp(a[k].lo) < 0 {
			return false
		}
	}
	return true
}

// agree checks every compiled form against the reference on one packet.
func agree(t testing.TB, spec v1alpha1.NodeFirewallSpec, opts Options, forms map[string]*Ruleset, chain v1alpha1.Chain, p Packet) {
	t.Helper()
	want := EvalSpec(spec, opts, chain, p)
	for name, rs := range forms {
		if got := rs.Eval(chainName(chain), p); got != want {
			t.Fatalf("%s form, chain %s, packet %+v: compiled says %q, the rules say %q\nspec: %+v\nruleset:\n%s",
				name, chain, p, got, want, spec, Render(rs))
		}
	}
}

// checkFailsafes checks that traffic to a failsafe port is accepted on
// input (inbound) and output (outbound), whatever the rules say.
func checkFailsafes(t testing.TB, c chooser, spec v1alpha1.NodeFirewallSpec, opts Options, forms map[string]*Ruleset) {
	t.Helper()
	for chain, fs := range map[v1alpha1.Chain][]Failsafe{v1alpha1.ChainInput: opts.FailsafeInbound, v1alpha1.ChainOutput: opts.FailsafeOutbound} {
		for _, f := range fs {
			p := genPacket(c, chain)
			p.L4Proto, p.Transport = l4Proto(f.Protocol), true
			p.DPort = f.Ports.First + uint16(c.intn(int(f.Ports.Last-f.Ports.First)+1))
			// From and to addresses the failsafe lists, of a family both
			// lists have.
			var fams []Family
			for _, fam := range families {
				has := func(ps []netip.Prefix) bool {
					return len(ps) == 0 || slices.ContainsFunc(ps, func(p netip.Prefix) bool { return prefixFamily(p) == fam })
				}
				if has(f.Sources) && has(f.Destinations) {
					fams = append(fams, fam)
				}
			}
			p.Family = pick(c, fams...)
			within := func(ps []netip.Prefix, a netip.Addr) netip.Addr {
				var of []netip.Prefix
				for _, pfx := range ps {
					if prefixFamily(pfx) == p.Family {
						of = append(of, pfx)
					}
				}
				if len(of) == 0 {
					return a
				}
				return pick(c, of...).Addr()
			}
			if (p.Family == FamilyIPv4) != p.SAddr.Is4() {
				p.SAddr, p.DAddr = pick(c, interesting[p.Family]...), pick(c, interesting[p.Family]...)
			}
			p.SAddr, p.DAddr = within(f.Sources, p.SAddr), within(f.Destinations, p.DAddr)
			for name, rs := range forms {
				if got := rs.Eval(chainName(chain), p); got != VerdictAccept {
					t.Fatalf("%s form: failsafe %v packet %+v got %q\nruleset:\n%s", name, f, p, got, Render(rs))
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
				total++
				for name, rs := range forms {
					if r := decidingRule(rs, chainName(chain), p); r != nil && r.Lookup != "" {
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
	if byLookup["default"] < total/25 || byLookup["sets"] < total/10 || byLookup["exact (exact set)"] < total/1000 {
		t.Errorf("too few packets decided by lookups: %v of %d", byLookup, total)
	}
}

// decidingRule is the rule that decides a packet in a chain, if any.
func decidingRule(rs *Ruleset, chain string, p Packet) *Rule {
	for _, c := range rs.Chains {
		if c.Name == chain {
			for i := range c.Rules {
				if r := &c.Rules[i]; r.Verdict != VerdictNone && rs.ruleMatches(r, p) {
					return r
				}
			}
		}
	}
	return nil
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
			agree(t, spec, opts, forms, chain, genPacket(c, chain))
		}
		checkFailsafes(t, c, spec, opts, forms)
	})
}
