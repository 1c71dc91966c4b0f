package diff

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/netnstest"
)

// Probes of one rule set must not see each other's conntrack entries: a
// probe's first packet is New to the trace, and a packet that conntrack
// takes for the answer of an earlier probe is Established, which every
// chain accepts. TCP, UDP, ICMP and ICMPv6 keep the probes apart by ports
// and identifiers: ephemeral source ports and the source ports probed lie
// outside the served ports, every query carries a fresh identifier, and
// an error quotes port 9, which no probe uses. A packet of any other
// protocol (GRE without keys among them) conntrack tracks by its
// addresses and protocol alone, so a probe from the client to the router
// of such a protocol, once accepted, makes the router's probe of it back
// to the client Established, and one from the client to the server the
// server's back to the client. Such probes run in rounds that share no
// entry, with conntrack flushed in between.

// flow is the conntrack entry that every packet of a protocol conntrack
// tracks by addresses alone shares, whichever way it goes between the two
// addresses.
type flow struct {
	protocol uint8
	a, b     netip.Addr
}

// flowOf is the flow of a probe, and whether it shares one with the
// probes of the same protocol between the same addresses.
func flowOf(p probe) (flow, bool) {
	if p.proto != "" || p.msg.Protocol == netnstest.ProtoICMP || p.msg.Protocol == netnstest.ProtoICMPv6 {
		return flow{}, false
	}
	a, b := p.src, p.dst
	if b.Less(a) {
		a, b = b, a
	}
	return flow{protocol: p.msg.Protocol, a: a, b: b}, true
}

// rounds are the indexes of probes, in order, in rounds in which no two
// probes share a flow: every probe without one, and the first of each
// flow, in the first round; the second of a flow in the second; and so on.
// The probes the router sends come first in their flow: their entry is
// made before the send returns, so none of them is still on its way when
// the next round starts.
func rounds(probes []probe) [][]int {
	var out [][]int
	seen := map[flow]int{}
	place := func(i, r int) {
		for len(out) <= r {
			out = append(out, nil)
		}
		out[r] = append(out[r], i)
	}
	for _, routerSent := range []bool{true, false} {
		for i, p := range probes {
			f, ok := flowOf(p)
			switch {
			case !ok && routerSent:
				place(i, 0)
			case ok && (p.from == router) == routerSent:
				place(i, seen[f])
				seen[f]++
			}
		}
	}
	for _, r := range out {
		slices.Sort(r)
	}
	return out
}

// pendingFlows are the flows of probes whose packet may still be on its
// way to the router: those that saw nothing before their timeout on
// either side. A probe the router sends passes its hooks, and gets or
// misses its entry, before the send returns.
func pendingFlows(rs []result) map[flow]bool {
	out := map[flow]bool{}
	for _, r := range rs {
		f, ok := flowOf(r.probe)
		if ok && r.from != router && (r.ipt == netnstest.Dropped || r.nfw == netnstest.Dropped) {
			out[f] = true
		}
	}
	return out
}

// stragglerWait is how long a packet that missed its probe's timeout may
// still take to reach the router: the timeout that tells a slow answer
// from a drop when a mismatch is checked again.
func stragglerWait() time.Duration { return *confirmFlag }

// forget flushes conntrack on both routers before the probes next, so
// that none of them meets an entry made by the probes before. When one of
// those may still be on its way and shares a flow with one of next, it
// waits for it first.
func (t *topology) forget(before []result, next []probe) error {
	pending := pendingFlows(before)
	for _, p := range next {
		if f, ok := flowOf(p); ok && pending[f] {
			time.Sleep(stragglerWait())
			break
		}
	}
	return t.flushConntrack()
}

func TestRounds(t *testing.T) {
	a := netip.MustParseAddr
	msg := func(c v1alpha1.Chain, proto uint8, from, to endpoint, src, dst string) probe {
		return probe{chain: c, msg: netnstest.IPMessage{Protocol: proto}, from: from, to: to, src: a(src), dst: a(dst)}
	}
	in, fwd, out := v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput
	probes := []probe{
		0: msg(in, 50, client, router, "10.77.1.10", "10.77.1.1"),
		1: msg(in, 50, client, router, "10.77.1.10", "10.77.2.1"),
		2: msg(in, 254, client, router, "10.77.1.10", "10.77.1.1"),
		3: msg(fwd, 50, client, server, "10.77.1.10", "10.77.2.10"),
		4: msg(fwd, 50, server, client, "10.77.2.10", "10.77.1.10"),
		5: msg(out, 50, router, client, "10.77.1.1", "10.77.1.10"),
		6: msg(out, 50, router, client, "10.77.1.1", "10.77.1.13"),
		7: msg(out, 254, router, client, "10.77.2.1", "10.77.1.10"),
		8: msg(in, 50, client, router, "fd77:1::10", "fd77:1::1"),
		9: msg(out, 50, router, client, "fd77:1::1", "fd77:1::10"),
		// TCP, UDP and ICMP keep apart by ports and identifiers.
		10: {chain: in, proto: v1alpha1.ProtocolUDP, from: client, to: router, src: a("10.77.1.10"), dst: a("10.77.1.1"), port: 4000},
		11: {chain: out, proto: v1alpha1.ProtocolUDP, from: router, to: client, src: a("10.77.1.1"), dst: a("10.77.1.10"), port: 4000},
		12: msg(in, netnstest.ProtoICMP, client, router, "10.77.1.10", "10.77.1.1"),
		13: msg(out, netnstest.ProtoICMP, router, client, "10.77.1.1", "10.77.1.10"),
		14: msg(fwd, 50, server, client, "10.77.2.10", "10.77.1.10"),
	}
	want := [][]int{
		// The router's probes before the client's of their flow, those
		// between client and server in their order.
		{1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13},
		{0, 4, 8},
		{14},
	}
	if diff := cmp.Diff(want, rounds(probes)); diff != "" {
		t.Errorf("rounds (-want +got):\n%s", diff)
	}
}

func TestPendingFlows(t *testing.T) {
	a := netip.MustParseAddr
	esp := netnstest.IPMessage{Protocol: 50}
	in := probe{chain: v1alpha1.ChainInput, msg: esp, from: client, to: router, src: a("10.77.1.10"), dst: a("10.77.1.1")}
	fwd := probe{chain: v1alpha1.ChainForward, msg: esp, from: server, to: client, src: a("10.77.2.10"), dst: a("10.77.1.10")}
	out := probe{chain: v1alpha1.ChainOutput, msg: esp, from: router, to: client, src: a("10.77.2.1"), dst: a("10.77.1.10")}
	udp := probe{chain: v1alpha1.ChainInput, proto: v1alpha1.ProtocolUDP, from: client, to: router, src: a("10.77.1.11"), dst: a("10.77.1.1"), port: 4000}
	inFlow, _ := flowOf(in)
	fwdFlow, _ := flowOf(fwd)
	got := pendingFlows([]result{
		{probe: in, ipt: netnstest.Accepted, nfw: netnstest.Dropped},
		{probe: fwd, ipt: netnstest.Dropped, nfw: netnstest.Dropped},
		// Sent by the router: its entry is made or not before the send
		// returns.
		{probe: out, ipt: netnstest.Dropped, nfw: netnstest.Dropped},
		{probe: udp, ipt: netnstest.Dropped, nfw: netnstest.Dropped},
	})
	want := map[flow]bool{inFlow: true, fwdFlow: true}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("pendingFlows (-want +got):\n%s", diff)
	}
}

// TestProbesShareNoEntry: a probe of a protocol conntrack tracks by
// addresses alone, sent back the way an accepted one came, is New to the
// router, whether probed in the first run or confirmed together with it:
// the router's own probes to the client are rejected on Output, the
// server's to the client dropped on Forward, while those of the client
// are accepted.
func TestProbesShareNoEntry(t *testing.T) {
	tp := env(t)
	spec := v1alpha1.NodeFirewallSpec{
		Rules: named([]v1alpha1.NodeFirewallRule{
			{Policy: "flows", Mode: v1alpha1.PolicyModeEnforce, Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionReject},
			{Policy: "flows", Mode: v1alpha1.PolicyModeEnforce, Chain: v1alpha1.ChainForward, Action: v1alpha1.ActionDrop,
				Sources: []string{"10.77.2.0/24", "fd77:2::/64"}},
		}),
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyAccept, Forward: v1alpha1.ChainPolicyAccept, Output: v1alpha1.ChainPolicyAccept},
	}
	c := newRuleCase("probes share no entry", spec)
	if err := tp.load(c); err != nil {
		t.Fatal(err)
	}
	var msgs []netnstest.IPMessage
	for _, p := range []uint8{47, 50, 253, 254} {
		msgs = append(msgs, netnstest.IPMessage{Protocol: p})
	}
	probes := messageMatrix(pairs(true), msgs)
	// Only the probes the rule set refuses tell: an entry left by another
	// probe would let them through. Those it accepts may time out under
	// load.
	refused := func(name string, rs []result) {
		t.Helper()
		for _, r := range rs {
			if want := traceVerdict(spec, nil, r.probe); want != netnstest.Accepted && (r.ipt != want || r.nfw != want) {
				t.Errorf("%s: %v: iptables %v, nodefw %v, want %v", name, r.probe, r.ipt, r.nfw, want)
			}
		}
	}
	for i := range 2 {
		rs, err := tp.runAll(probes, *timeoutFlag)
		if err != nil {
			t.Fatal(err)
		}
		refused(fmt.Sprintf("run %d", i+1), rs)
	}
	settled, err := tp.confirmAll(probes, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused("confirmed", settled)
}
