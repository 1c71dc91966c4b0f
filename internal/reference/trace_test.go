package reference

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
	"github.com/nodefw/nodefw/internal/specgen"
)

// Steps that recur in the traces below.
var (
	notEstablished = Step{Kind: StepImplicit, Implicit: ImplicitEstablished, Action: v1alpha1.ActionAccept,
		Mismatch: &Mismatch{Field: "state", Want: "Established or Related", Got: "New"}}
	notLoopbackIn = Step{Kind: StepImplicit, Implicit: ImplicitLoopback, Action: v1alpha1.ActionAccept,
		Mismatch: &Mismatch{Field: "inInterface", Want: "lo", Got: "eth0"}}
	notNDTCP = Step{Kind: StepImplicit, Implicit: ImplicitNeighbourDiscovery, Action: v1alpha1.ActionAccept,
		Mismatch: &Mismatch{Field: "protocol", Want: "ICMPv6", Got: "tcp"}}
)

func TestTraceSpec(t *testing.T) {
	in, fwd, out := v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput
	rule := func(name string, action v1alpha1.Action, change func(r *v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallRule {
		r := v1alpha1.NodeFirewallRule{Policy: "p", Name: name, Chain: in, Action: action}
		if change != nil {
			change(&r)
		}
		return r
	}
	tcpPorts := func(ports ...v1alpha1.PortRange) func(r *v1alpha1.NodeFirewallRule) {
		return func(r *v1alpha1.NodeFirewallRule) { r.Protocol, r.Ports = v1alpha1.ProtocolTCP, ports }
	}
	dropAll := v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyDrop, Output: v1alpha1.ChainPolicyDrop}
	ssh := compile.Options{
		FailsafeInbound:  []compile.Failsafe{{Protocol: v1alpha1.ProtocolTCP, Ports: compile.PortInterval{First: 22, Last: 22}}},
		FailsafeOutbound: []compile.Failsafe{{Protocol: v1alpha1.ProtocolUDP, Ports: compile.PortInterval{First: 53, Last: 53}}},
	}
	notSSH := Step{Kind: StepImplicit, Implicit: ImplicitFailsafe, Action: v1alpha1.ActionAccept,
		Mismatch: &Mismatch{Field: "ports", Want: "tcp:22", Got: "tcp:80"}}
	dropped := Step{Kind: StepDefault, Action: v1alpha1.ActionDrop, Matched: true, Verdict: compile.VerdictDrop}
	ruleStep := func(name string, pos, index int, action v1alpha1.Action, mm *Mismatch) Step {
		return Step{Kind: StepRule, Policy: "p", Rule: name, Position: pos, Index: index, Action: action, Mismatch: mm}
	}
	tests := []struct {
		name  string
		spec  v1alpha1.NodeFirewallSpec
		opts  compile.Options
		chain v1alpha1.Chain
		p     Packet
		want  Trace
	}{
		{
			name: "every step, then the default",
			spec: v1alpha1.NodeFirewallSpec{DefaultActions: dropAll, Rules: []v1alpha1.NodeFirewallRule{
				rule("vxlan", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
					r.Protocol, r.Ports = v1alpha1.ProtocolUDP, []v1alpha1.PortRange{{Port: 8472}}
				}),
				rule("egress", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) { r.Chain = out }),
				rule("kubelet", v1alpha1.ActionAccept, tcpPorts(v1alpha1.PortRange{Port: 10250}, v1alpha1.PortRange{Port: 30000, EndPort: 32767})),
				rule("office", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) { r.Sources = []string{"192.0.2.0/24"} }),
				rule("to-pods", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) { r.Destinations = []string{"10.244.0.0/16", "fd00::/8"} }),
				rule("wg", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) { r.InInterface = "wg+" }),
				rule("invalid", v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) { r.States = []v1alpha1.ConnState{v1alpha1.ConnStateInvalid} }),
			}},
			opts: ssh, chain: in, p: tcpIn(nil),
			want: Trace{Chain: in, Verdict: compile.VerdictDrop, Steps: []Step{
				notEstablished, notLoopbackIn, notNDTCP, notSSH,
				ruleStep("vxlan", 1, 0, v1alpha1.ActionAccept, &Mismatch{Field: "protocol", Want: "UDP", Got: "tcp"}),
				ruleStep("kubelet", 2, 2, v1alpha1.ActionAccept, &Mismatch{Field: "ports", Want: "one of 10250, 30000-32767", Got: "80"}),
				ruleStep("office", 3, 3, v1alpha1.ActionAccept, &Mismatch{Field: "sources", Want: "192.0.2.0/24", Got: "10.1.2.3"}),
				ruleStep("to-pods", 4, 4, v1alpha1.ActionAccept, &Mismatch{Field: "destinations", Want: "one of 10.244.0.0/16, fd00::/8", Got: "192.0.2.2"}),
				ruleStep("wg", 5, 5, v1alpha1.ActionAccept, &Mismatch{Field: "inInterface", Want: "wg+", Got: "eth0"}),
				ruleStep("invalid", 6, 6, v1alpha1.ActionDrop, &Mismatch{Field: "states", Want: "Invalid", Got: "New"}),
				dropped,
			}},
		},
		{
			name:  "a rule decides",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll, Rules: []v1alpha1.NodeFirewallRule{rule("web", v1alpha1.ActionReject, tcpPorts(v1alpha1.PortRange{Port: 80}))}},
			chain: in, p: tcpIn(nil),
			want: Trace{Chain: in, Verdict: compile.VerdictReject, Steps: []Step{
				notEstablished, notLoopbackIn, notNDTCP,
				{Kind: StepRule, Policy: "p", Rule: "web", Position: 1, Action: v1alpha1.ActionReject, Matched: true, Verdict: compile.VerdictReject},
			}},
		},
		{
			name:  "established decides first",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll},
			chain: fwd, p: tcpIn(func(p *Packet) { p.CtState = compile.CtStateRelated }),
			want: Trace{Chain: fwd, Verdict: compile.VerdictAccept, Steps: []Step{
				{Kind: StepImplicit, Implicit: ImplicitEstablished, Action: v1alpha1.ActionAccept, Matched: true, Verdict: compile.VerdictAccept},
			}},
		},
		{
			name:  "forward has no loopback, neighbour discovery or failsafe steps",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll},
			opts:  ssh,
			chain: fwd, p: tcpIn(func(p *Packet) { p.IIfName, p.DPort = "lo", 22 }),
			want: Trace{Chain: fwd, Verdict: compile.VerdictDrop, Steps: []Step{notEstablished, dropped}},
		},
		{
			name:  "a failsafe decides, and says which",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll},
			opts:  ssh,
			chain: in, p: tcpIn(func(p *Packet) { p.DPort = 22 }),
			want: Trace{Chain: in, Verdict: compile.VerdictAccept, Steps: []Step{
				notEstablished, notLoopbackIn, notNDTCP,
				{Kind: StepImplicit, Implicit: ImplicitFailsafe, Action: v1alpha1.ActionAccept, Matched: true, Verdict: compile.VerdictAccept, Notes: []string{"failsafe tcp:22"}},
			}},
		},
		{
			name:  "neighbour discovery on output",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll},
			opts:  ssh,
			chain: out, p: Packet{Family: compile.FamilyIPv6, L4Proto: 58, Transport: true, Type: 135, OIfName: "eth0", CtState: compile.CtStateNew},
			want: Trace{Chain: out, Verdict: compile.VerdictAccept, Steps: []Step{
				notEstablished,
				{Kind: StepImplicit, Implicit: ImplicitLoopback, Action: v1alpha1.ActionAccept, Mismatch: &Mismatch{Field: "outInterface", Want: "lo", Got: "eth0"}},
				{Kind: StepImplicit, Implicit: ImplicitNeighbourDiscovery, Action: v1alpha1.ActionAccept, Matched: true, Verdict: compile.VerdictAccept},
			}},
		},
		{
			name: "an audited drop decides nothing, a log is noted",
			spec: v1alpha1.NodeFirewallSpec{DefaultActions: dropAll, Rules: []v1alpha1.NodeFirewallRule{
				rule("watch", v1alpha1.ActionDrop, func(r *v1alpha1.NodeFirewallRule) { r.Mode = v1alpha1.PolicyModeAudit }),
				rule("all", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) { r.Log = true }),
			}},
			chain: in, p: tcpIn(nil),
			want: Trace{Chain: in, Verdict: compile.VerdictAccept, Steps: []Step{
				notEstablished, notLoopbackIn, notNDTCP,
				{Kind: StepRule, Policy: "p", Rule: "watch", Position: 1, Action: v1alpha1.ActionDrop, Matched: true,
					Notes: []string{"policy p is in Audit mode: the Drop is only counted and logged, evaluation goes on"}},
				{Kind: StepRule, Policy: "p", Rule: "all", Position: 2, Index: 1, Action: v1alpha1.ActionAccept, Matched: true, Verdict: compile.VerdictAccept,
					Notes: []string{`logged with prefix "nodefw p/all: ", at most 10 a minute`}},
			}},
		},
		{
			name:  "an audited default accepts",
			spec:  v1alpha1.NodeFirewallSpec{DefaultActions: dropAll, AuditedChains: []v1alpha1.Chain{fwd}},
			chain: fwd, p: tcpIn(nil),
			want: Trace{Chain: fwd, Verdict: compile.VerdictAccept, Steps: []Step{notEstablished, {
				Kind: StepDefault, Action: v1alpha1.ActionDrop, Matched: true, Verdict: compile.VerdictAccept,
				Notes: []string{"the Drop comes from a policy in Audit mode: it is only counted and logged"},
			}}},
		},
		{
			name:  "an unset default accepts",
			chain: fwd, p: tcpIn(nil),
			want: Trace{Chain: fwd, Verdict: compile.VerdictAccept, Steps: []Step{notEstablished, {
				Kind: StepDefault, Action: v1alpha1.ActionAccept, Matched: true, Verdict: compile.VerdictAccept,
				Notes: []string{"no default action is set: Accept"},
			}}},
		},
		{
			name: "ICMP of the other family, ports without a transport header, no interface",
			spec: v1alpha1.NodeFirewallSpec{DefaultActions: dropAll, Rules: []v1alpha1.NodeFirewallRule{
				rule("ping", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) { r.Chain, r.Protocol = fwd, v1alpha1.ProtocolICMP }),
				rule("web", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) {
					r.Chain, r.Protocol, r.Ports = fwd, v1alpha1.ProtocolTCP, []v1alpha1.PortRange{{Port: 80}}
				}),
				rule("eth", v1alpha1.ActionAccept, func(r *v1alpha1.NodeFirewallRule) { r.Chain, r.OutInterface = fwd, "eth0" }),
			}},
			chain: fwd,
			p: Packet{
				Family: compile.FamilyIPv6, SAddr: netip.MustParseAddr("fd00::1"), DAddr: netip.MustParseAddr("fd00::2"),
				L4Proto: 1, IIfName: "eth0", CtState: compile.CtStateNew,
			},
			want: Trace{Chain: fwd, Verdict: compile.VerdictDrop, Steps: []Step{
				notEstablished,
				{Kind: StepRule, Policy: "p", Rule: "ping", Position: 1, Action: v1alpha1.ActionAccept,
					Mismatch: &Mismatch{Field: "protocol", Want: "ICMP over IPv4", Got: "icmp over IPv6"}},
				{Kind: StepRule, Policy: "p", Rule: "web", Position: 2, Index: 1, Action: v1alpha1.ActionAccept,
					Mismatch: &Mismatch{Field: "protocol", Want: "TCP", Got: "icmp over IPv6"}},
				{Kind: StepRule, Policy: "p", Rule: "eth", Position: 3, Index: 2, Action: v1alpha1.ActionAccept,
					Mismatch: &Mismatch{Field: "outInterface", Want: "eth0", Got: "none"}},
				dropped,
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := TraceSpec(tt.spec, tt.opts, tt.chain, tt.p)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("TraceSpec (-want +got):\n%s", diff)
			}
			if v := EvalSpec(tt.spec, tt.opts, tt.chain, tt.p); v != got.Verdict {
				t.Errorf("EvalSpec = %q, the trace's verdict %q", v, got.Verdict)
			}
		})
	}
}

func TestStepName(t *testing.T) {
	for _, tt := range []struct {
		step Step
		want string
	}{
		{Step{Kind: StepRule, Policy: "worker", Rule: "kubelet"}, "worker/kubelet"},
		{Step{Kind: StepImplicit, Implicit: ImplicitFailsafe}, "failsafe"},
		{Step{Kind: StepDefault}, "default"},
	} {
		if got := tt.step.Name(); got != tt.want {
			t.Errorf("%+v: Name = %q, want %q", tt.step, got, tt.want)
		}
	}
}

// TestStatefulMatchesAreTakenUnderTheLimit gives the evaluator two
// stateful matches, as a rate limit would add: a packet is taken to be
// under every limit, which a limit on the excess does not match, and the
// trace notes what it assumed.
func TestStatefulMatchesAreTakenUnderTheLimit(t *testing.T) {
	saved := statefulMatches
	t.Cleanup(func() { statefulMatches = saved })
	statefulMatches = []statefulMatch{
		{"rate", func(r *v1alpha1.NodeFirewallRule) (bool, bool, string) {
			return r.Name == "limited", true, "10/second"
		}},
		{"rateOver", func(r *v1alpha1.NodeFirewallRule) (bool, bool, string) {
			return r.Name == "flood", false, "over 100/second"
		}},
	}
	spec := v1alpha1.NodeFirewallSpec{
		DefaultActions: v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop},
		Rules: []v1alpha1.NodeFirewallRule{
			{Policy: "p", Name: "flood", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop},
			{Policy: "p", Name: "limited", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept},
		},
	}
	got := TraceSpec(spec, compile.Options{}, v1alpha1.ChainInput, tcpIn(nil))
	want := Trace{Chain: v1alpha1.ChainInput, Verdict: compile.VerdictAccept, Steps: []Step{
		notEstablished, notLoopbackIn, notNDTCP,
		{Kind: StepRule, Policy: "p", Rule: "flood", Position: 1, Action: v1alpha1.ActionDrop,
			Mismatch: &Mismatch{Field: "rateOver", Want: "over the limit", Got: "under the limit (assumed: over 100/second)"}},
		{Kind: StepRule, Policy: "p", Rule: "limited", Position: 2, Index: 1, Action: v1alpha1.ActionAccept, Matched: true,
			Verdict: compile.VerdictAccept, Notes: []string{"assumed under the limit: 10/second"}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TraceSpec (-want +got):\n%s", diff)
	}
	if v := EvalSpec(spec, compile.Options{}, v1alpha1.ChainInput, tcpIn(nil)); v != compile.VerdictAccept {
		t.Errorf("EvalSpec = %q, want accept", v)
	}
}

// nftChains are the compiled ruleset's chains.
var nftChains = map[v1alpha1.Chain]string{
	v1alpha1.ChainInput: compile.ChainInput, v1alpha1.ChainForward: compile.ChainForward, v1alpha1.ChainOutput: compile.ChainOutput,
}

// TestTraceShape checks, on random rule sets and packets, what every
// trace promises: EvalSpec's verdict, the last step decides and no other
// does, every step the packet failed says why, the rule steps are the
// chain's rules in order up to the decider, and the verdict is the one the
// compiled ruleset gives.
func TestTraceShape(t *testing.T) {
	universe := specgen.Universe{
		Policy:        "p",
		Sources:       []string{"10.0.0.0/8", "10.1.2.3", "192.0.2.0/24", "fd00::/8", "fd00::1"},
		Destinations:  []string{"192.0.2.2", "10.0.0.0/16", "fd00::2/128"},
		InInterfaces:  []string{"eth0", "eth+", "lo", "wg0", "+"},
		OutInterfaces: []string{"eth1", "eth+", "lo", "+"},
		FirstPort:     20, LastPort: 40,
	}
	rng := rand.New(rand.NewPCG(16, 1))
	opts := compile.Options{FailsafeInbound: compile.DefaultFailsafeInbound(), FailsafeOutbound: compile.DefaultFailsafeOutbound(), SetLookups: true}
	addrs := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")}
	for range 300 {
		spec := specgen.Random(rng, universe)
		rs, err := compile.Compile(spec, opts)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			chain := v1alpha1.Chains[rng.IntN(len(v1alpha1.Chains))]
			p := Packet{
				SAddr: addrs[rng.IntN(2)], DAddr: addrs[rng.IntN(2)], Family: compile.FamilyIPv4,
				L4Proto: []uint8{6, 17, 1, 58}[rng.IntN(4)], Transport: rng.IntN(8) > 0,
				DPort: uint16(18 + rng.IntN(25)), Type: uint8(rng.IntN(256)),
				CtState: []compile.CtState{compile.CtStateNew, compile.CtStateInvalid, compile.CtStateEstablished}[rng.IntN(3)],
			}
			if rng.IntN(2) == 0 {
				p.Family, p.SAddr, p.DAddr = compile.FamilyIPv6, addrs[2+rng.IntN(2)], addrs[2+rng.IntN(2)]
			}
			if chain != v1alpha1.ChainOutput {
				p.IIfName = []string{"eth0", "wg0", "lo"}[rng.IntN(3)]
			}
			if chain != v1alpha1.ChainInput {
				p.OIfName = []string{"eth1", "eth0", "lo"}[rng.IntN(3)]
			}
			tr := TraceSpec(spec, opts, chain, p)
			if v := EvalSpec(spec, opts, chain, p); v != tr.Verdict {
				t.Fatalf("EvalSpec %q, trace %q: %+v", v, tr.Verdict, tr)
			}
			if v := EvalRuleset(rs, nftChains[chain], p); v != tr.Verdict {
				t.Fatalf("the compiled ruleset says %q, the trace %q: %+v", v, tr.Verdict, tr)
			}
			last := len(tr.Steps) - 1
			if d := tr.Decider(); d.Verdict != tr.Verdict || !d.Matched {
				t.Fatalf("the last step does not decide the verdict %q: %+v", tr.Verdict, d)
			}
			wantPos := 1
			for i, s := range tr.Steps {
				if i < last && s.Verdict != compile.VerdictNone {
					t.Fatalf("step %d has verdict %q but is not the last: %+v", i, s.Verdict, tr)
				}
				if s.Matched == (s.Mismatch != nil) {
					t.Fatalf("step %d: matched %v with mismatch %v", i, s.Matched, s.Mismatch)
				}
				if m := s.Mismatch; m != nil && (m.Field == "" || m.Want == "" || m.Got == "") {
					t.Fatalf("step %d: mismatch without an explanation: %+v", i, m)
				}
				if s.Kind == StepRule {
					if r := spec.Rules[s.Index]; r.Chain != chain || r.Name != s.Rule || s.Position != wantPos {
						t.Fatalf("step %d is rule %d (%s, position %d), want the chain's rule at position %d", i, s.Index, r.Name, s.Position, wantPos)
					}
					wantPos++
				}
			}
		}
	}
}
