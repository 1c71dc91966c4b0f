package compile

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmpopts.EquateEmpty(),
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, a := range s {
		out[i] = netip.MustParsePrefix(a)
	}
	return out
}

func ports(first, last uint16) PortInterval { return PortInterval{First: first, Last: last} }

func rule(name string, chain v1alpha1.Chain, action v1alpha1.Action) v1alpha1.NodeFirewallRule {
	return v1alpha1.NodeFirewallRule{Policy: "pol", Mode: v1alpha1.PolicyModeEnforce, Name: name, Chain: chain, Action: action}
}

func logOf(prefix string) *Log {
	return &Log{Prefix: prefix, Group: DefaultLogGroup, RatePerMinute: LogRatePerMinute, Burst: LogBurst}
}

// chainOf returns the named chain of a compiled ruleset.
func chainOf(t *testing.T, rs *Ruleset, name string) Chain {
	t.Helper()
	for _, c := range rs.Chains {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no chain %q", name)
	return Chain{}
}

// policyRules are a chain's rules after the implicit accepts.
func policyRules(t *testing.T, rs *Ruleset, c v1alpha1.Chain, opts Options) []Rule {
	t.Helper()
	return chainOf(t, rs, chainName(c)).Rules[len(implicitRules(c, opts)):]
}

func TestCompileExpandsRules(t *testing.T) {
	in, fwd, out := v1alpha1.ChainInput, v1alpha1.ChainForward, v1alpha1.ChainOutput
	accept, drop, reject := v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject
	with := func(r v1alpha1.NodeFirewallRule, f func(*v1alpha1.NodeFirewallRule)) v1alpha1.NodeFirewallRule {
		f(&r)
		return r
	}
	tests := []struct {
		name  string
		rules []v1alpha1.NodeFirewallRule
		chain v1alpha1.Chain
		want  []Rule
	}{
		{
			name:  "any",
			rules: []v1alpha1.NodeFirewallRule{rule("all", in, drop)},
			chain: in,
			want:  []Rule{{Counter: true, Verdict: VerdictDrop, Comment: "pol/all"}},
		},
		{
			name: "ports are sorted and merged",
			rules: []v1alpha1.NodeFirewallRule{with(rule("web", in, accept), func(r *v1alpha1.NodeFirewallRule) {
				r.Protocol = v1alpha1.ProtocolTCP
				r.Ports = []v1alpha1.PortRange{{Port: 443}, {Port: 8000, EndPort: 8080}, {Port: 8081, EndPort: 8090}, {Port: 80}, {Port: 8005}, {Port: 65535}}
			})},
			chain: in,
			want: []Rule{{
				L4Proto: 6, DPorts: []PortInterval{ports(80, 80), ports(443, 443), ports(8000, 8090), ports(65535, 65535)},
				Counter: true, Verdict: VerdictAccept, Comment: "pol/web",
			}},
		},
		{
			name: "protocol numbers",
			rules: []v1alpha1.NodeFirewallRule{
				with(rule("u", in, accept), func(r *v1alpha1.NodeFirewallRule) { r.Protocol = v1alpha1.ProtocolUDP }),
				with(rule("s", in, accept), func(r *v1alpha1.NodeFirewallRule) {
					r.Protocol = v1alpha1.ProtocolSCTP
					r.Ports = []v1alpha1.PortRange{{Port: 9, EndPort: 10}}
				}),
			},
			chain: in,
			want: []Rule{
				{L4Proto: 17, Counter: true, Verdict: VerdictAccept, Comment: "pol/u"},
				{L4Proto: 132, DPorts: []PortInterval{ports(9, 10)}, Counter: true, Verdict: VerdictAccept, Comment: "pol/s"},
			},
		},
		{
			name: "mixed sources split by family, host bits masked, covered prefixes dropped",
			rules: []v1alpha1.NodeFirewallRule{with(rule("mixed", in, accept), func(r *v1alpha1.NodeFirewallRule) {
				r.Sources = []string{"192.168.1.7", "2001:db8::/32", "10.1.2.3/8", "10.2.0.0/16", "2001:db8:1::1", "::ffff:10.0.0.1"}
			})},
			chain: in,
			want: []Rule{
				{Family: FamilyIPv4, SAddrs: prefixes("10.0.0.0/8", "192.168.1.7/32"), Counter: true, Verdict: VerdictAccept, Comment: "pol/mixed"},
				{Family: FamilyIPv6, SAddrs: prefixes("::ffff:10.0.0.1/128", "2001:db8::/32"), Counter: true, Verdict: VerdictAccept, Comment: "pol/mixed"},
			},
		},
		{
			name: "IPv4 sources with IPv6 destinations never match",
			rules: []v1alpha1.NodeFirewallRule{with(rule("never", fwd, drop), func(r *v1alpha1.NodeFirewallRule) {
				r.Sources = []string{"10.0.0.0/8"}
				r.Destinations = []string{"fd00::/8"}
			})},
			chain: fwd,
			want:  nil,
		},
		{
			name: "only the family both sides share",
			rules: []v1alpha1.NodeFirewallRule{with(rule("v4", fwd, accept), func(r *v1alpha1.NodeFirewallRule) {
				r.Sources = []string{"10.244.0.0/16"}
				r.Destinations = []string{"fd00::/8", "10.96.0.0/12"}
			})},
			chain: fwd,
			want: []Rule{{
				Family: FamilyIPv4, SAddrs: prefixes("10.244.0.0/16"), DAddrs: prefixes("10.96.0.0/12"),
				Counter: true, Verdict: VerdictAccept, Comment: "pol/v4",
			}},
		},
		{
			name: "destinations only, both families",
			rules: []v1alpha1.NodeFirewallRule{with(rule("dst", out, reject), func(r *v1alpha1.NodeFirewallRule) {
				r.Destinations = []string{"::/0", "0.0.0.0/0"}
			})},
			chain: out,
			want: []Rule{
				{Family: FamilyIPv4, DAddrs: prefixes("0.0.0.0/0"), Counter: true, Verdict: VerdictReject, Comment: "pol/dst"},
				{Family: FamilyIPv6, DAddrs: prefixes("::/0"), Counter: true, Verdict: VerdictReject, Comment: "pol/dst"},
			},
		},
		{
			name: "ICMP implies IPv4, ICMPv6 implies IPv6",
			rules: []v1alpha1.NodeFirewallRule{
				with(rule("ping", in, accept), func(r *v1alpha1.NodeFirewallRule) { r.Protocol = v1alpha1.ProtocolICMP }),
				with(rule("ping6", in, accept), func(r *v1alpha1.NodeFirewallRule) { r.Protocol = v1alpha1.ProtocolICMPv6 }),
			},
			chain: in,
			want: []Rule{
				{Family: FamilyIPv4, L4Proto: 1, Counter: true, Verdict: VerdictAccept, Comment: "pol/ping"},
				{Family: FamilyIPv6, L4Proto: 58, Counter: true, Verdict: VerdictAccept, Comment: "pol/ping6"},
			},
		},
		{
			name: "ICMP keeps only its family's addresses",
			rules: []v1alpha1.NodeFirewallRule{
				with(rule("ping", in, accept), func(r *v1alpha1.NodeFirewallRule) {
					r.Protocol = v1alpha1.ProtocolICMP
					r.Sources = []string{"fd00::/8", "10.0.0.0/8"}
				}),
				with(rule("ping6-from-v4", in, accept), func(r *v1alpha1.NodeFirewallRule) {
					r.Protocol = v1alpha1.ProtocolICMPv6
					r.Sources = []string{"10.0.0.0/8"}
				}),
			},
			chain: in,
			want: []Rule{
				{Family: FamilyIPv4, L4Proto: 1, SAddrs: prefixes("10.0.0.0/8"), Counter: true, Verdict: VerdictAccept, Comment: "pol/ping"},
			},
		},
		{
			name: "interface wildcards",
			rules: []v1alpha1.NodeFirewallRule{
				with(rule("any-if", fwd, accept), func(r *v1alpha1.NodeFirewallRule) { r.InInterface, r.OutInterface = "+", "+" }),
				with(rule("prefix", fwd, accept), func(r *v1alpha1.NodeFirewallRule) { r.InInterface, r.OutInterface = "eth+", "cni0" }),
			},
			chain: fwd,
			want: []Rule{
				{Counter: true, Verdict: VerdictAccept, Comment: "pol/any-if"},
				{IIfName: "eth+", OIfName: "cni0", Counter: true, Verdict: VerdictAccept, Comment: "pol/prefix"},
			},
		},
		{
			name: "states",
			rules: []v1alpha1.NodeFirewallRule{
				with(rule("new", in, accept), func(r *v1alpha1.NodeFirewallRule) {
					r.States = []v1alpha1.ConnState{v1alpha1.ConnStateNew, v1alpha1.ConnStateEstablished}
				}),
				with(rule("invalid", in, drop), func(r *v1alpha1.NodeFirewallRule) {
					r.States = []v1alpha1.ConnState{v1alpha1.ConnStateInvalid, v1alpha1.ConnStateRelated}
				}),
			},
			chain: in,
			want: []Rule{
				{CtStates: CtStateNew | CtStateEstablished, Counter: true, Verdict: VerdictAccept, Comment: "pol/new"},
				{CtStates: CtStateInvalid | CtStateRelated, Counter: true, Verdict: VerdictDrop, Comment: "pol/invalid"},
			},
		},
		{
			name: "log adds a rule before the verdict, per family",
			rules: []v1alpha1.NodeFirewallRule{with(rule("logged", in, drop), func(r *v1alpha1.NodeFirewallRule) {
				r.Protocol = v1alpha1.ProtocolTCP
				r.Ports = []v1alpha1.PortRange{{Port: 23}}
				r.Sources = []string{"10.0.0.0/8", "fd00::/8"}
				r.Log = true
			})},
			chain: in,
			want: []Rule{
				{Family: FamilyIPv4, L4Proto: 6, DPorts: []PortInterval{ports(23, 23)}, SAddrs: prefixes("10.0.0.0/8"), Log: logOf("nfw drop pol/logged"), Comment: "pol/logged"},
				{Family: FamilyIPv4, L4Proto: 6, DPorts: []PortInterval{ports(23, 23)}, SAddrs: prefixes("10.0.0.0/8"), Counter: true, Verdict: VerdictDrop, Comment: "pol/logged"},
				{Family: FamilyIPv6, L4Proto: 6, DPorts: []PortInterval{ports(23, 23)}, SAddrs: prefixes("fd00::/8"), Log: logOf("nfw drop pol/logged"), Comment: "pol/logged"},
				{Family: FamilyIPv6, L4Proto: 6, DPorts: []PortInterval{ports(23, 23)}, SAddrs: prefixes("fd00::/8"), Counter: true, Verdict: VerdictDrop, Comment: "pol/logged"},
			},
		},
		{
			name: "audit: drop and reject only count and log, accept accepts",
			rules: []v1alpha1.NodeFirewallRule{
				with(rule("a-drop", out, drop), func(r *v1alpha1.NodeFirewallRule) { r.Mode = v1alpha1.PolicyModeAudit }),
				with(rule("a-reject", out, reject), func(r *v1alpha1.NodeFirewallRule) {
					r.Mode, r.Log, r.Protocol = v1alpha1.PolicyModeAudit, true, v1alpha1.ProtocolUDP
				}),
				with(rule("a-accept", out, accept), func(r *v1alpha1.NodeFirewallRule) { r.Mode = v1alpha1.PolicyModeAudit }),
				with(rule("a-accept-log", out, accept), func(r *v1alpha1.NodeFirewallRule) { r.Mode, r.Log = v1alpha1.PolicyModeAudit, true }),
				with(rule("no-mode", out, drop), func(r *v1alpha1.NodeFirewallRule) { r.Mode = "" }),
			},
			chain: out,
			want: []Rule{
				{Counter: true, Log: logOf("nfw audit pol/a-drop"), Comment: "pol/a-drop"},
				{L4Proto: 17, Counter: true, Log: logOf("nfw audit pol/a-reject"), Comment: "pol/a-reject"},
				{Counter: true, Verdict: VerdictAccept, Comment: "pol/a-accept"},
				{Log: logOf("nfw accept pol/a-accept-log"), Comment: "pol/a-accept-log"},
				{Counter: true, Verdict: VerdictAccept, Comment: "pol/a-accept-log"},
				{Counter: true, Verdict: VerdictDrop, Comment: "pol/no-mode"},
			},
		},
		{
			name: "only the chain's rules, in order across policies",
			rules: []v1alpha1.NodeFirewallRule{
				rule("one", in, accept),
				rule("two", out, accept),
				with(rule("three", in, drop), func(r *v1alpha1.NodeFirewallRule) { r.Policy = "later" }),
				rule("four", fwd, drop),
				rule("five", in, reject),
			},
			chain: in,
			want: []Rule{
				{Counter: true, Verdict: VerdictAccept, Comment: "pol/one"},
				{Counter: true, Verdict: VerdictDrop, Comment: "later/three"},
				{Counter: true, Verdict: VerdictReject, Comment: "pol/five"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := v1alpha1.NodeFirewallSpec{Rules: tt.rules}
			rs, err := Compile(spec, Options{})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			checkInvariants(t, rs)
			if diff := cmp.Diff(tt.want, policyRules(t, rs, tt.chain, Options{}), cmpOpts); diff != "" {
				t.Errorf("%s rules (-want +got):\n%s", tt.chain, diff)
			}
			nftCheck(t, Render(rs))
		})
	}
}

func TestCompileLongNames(t *testing.T) {
	policy := strings.Repeat("p", 200) + "." + strings.Repeat("q", 52)
	r := rule(strings.Repeat("r", 63), v1alpha1.ChainInput, v1alpha1.ActionDrop)
	r.Policy, r.Log = policy, true
	rs, err := Compile(v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{r}}, Options{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	got := policyRules(t, rs, v1alpha1.ChainInput, Options{})
	if len(got) != 2 {
		t.Fatalf("got %d rules, want 2", len(got))
	}
	if c := got[1].Comment; len(c) != maxComment || !strings.HasPrefix(policy, c) {
		t.Errorf("comment %q (%d bytes), want the first %d bytes of the policy name", c, len(c), maxComment)
	}
	// Too long to name the rule: a hash that the ruleset maps back.
	p := got[0].Log.Prefix
	if !strings.HasPrefix(p, "nfw drop #") || len(p) > maxLogPrefix {
		t.Errorf("log prefix %q, want a hashed one", p)
	}
	if src := rs.LogSources[p]; src.Policy != policy || src.Rule != r.Name || src.Verdict != LogVerdictDrop {
		t.Errorf("LogSources[%q] = %+v", p, src)
	}
	checkInvariants(t, rs)
	nftCheck(t, Render(rs))
}

func TestCompileChains(t *testing.T) {
	opts := Options{FailsafeInbound: DefaultFailsafeInbound(), FailsafeOutbound: DefaultFailsafeOutbound()}
	established := Rule{CtStates: CtStateEstablished | CtStateRelated, Verdict: VerdictAccept, Comment: "nodefw: established,related"}
	nd := Rule{Family: FamilyIPv6, L4Proto: 58, ICMPTypes: []uint8{133, 134, 135, 136, 137}, Verdict: VerdictAccept, Comment: "nodefw: icmpv6 neighbour discovery"}
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{rule("web", v1alpha1.ChainInput, v1alpha1.ActionAccept)},
		DefaultActions: v1alpha1.DefaultActions{
			Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyDrop, Output: v1alpha1.ChainPolicyDrop,
		},
		AuditedChains: []v1alpha1.Chain{v1alpha1.ChainOutput},
	}
	want := &Ruleset{
		Table: "nodefw",
		Chains: []Chain{
			{
				Name: "input", Hook: HookInput, Priority: 10, Policy: VerdictDrop,
				Rules: []Rule{
					established,
					{IIfName: "lo", Verdict: VerdictAccept, Comment: "nodefw: loopback"},
					nd,
					{L4Proto: 6, DPorts: []PortInterval{ports(22, 22), ports(2379, 2380), ports(6443, 6443), ports(10250, 10250)}, Counter: true, Verdict: VerdictAccept, Comment: "nodefw: failsafe tcp"},
					{L4Proto: 17, DPorts: []PortInterval{ports(67, 68)}, Counter: true, Verdict: VerdictAccept, Comment: "nodefw: failsafe udp"},
					{Counter: true, Verdict: VerdictAccept, Comment: "pol/web"},
				},
			},
			{
				Name: "forward", Hook: HookForward, Priority: 10, Policy: VerdictDrop,
				Rules: []Rule{established},
			},
			{
				Name: "output", Hook: HookOutput, Priority: 10, Policy: VerdictAccept,
				Rules: []Rule{
					established,
					{OIfName: "lo", Verdict: VerdictAccept, Comment: "nodefw: loopback"},
					nd,
					{L4Proto: 6, DPorts: []PortInterval{ports(53, 53), ports(6443, 6443)}, Counter: true, Verdict: VerdictAccept, Comment: "nodefw: failsafe tcp"},
					{L4Proto: 17, DPorts: []PortInterval{ports(53, 53), ports(67, 68)}, Counter: true, Verdict: VerdictAccept, Comment: "nodefw: failsafe udp"},
					{Counter: true, Log: logOf("nfw audit :output"), Comment: "nodefw: audit default-drop"},
				},
			},
		},
		LogSources: map[string]LogSource{"nfw audit :output": {Rule: LogRuleDefault, Verdict: LogVerdictAudit, Chain: "output"}},
	}
	got, err := Compile(spec, opts)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("Compile (-want +got):\n%s", diff)
	}
	if n := got.RuleCount(); n != 13 {
		t.Errorf("RuleCount = %d, want 13", n)
	}
	checkInvariants(t, got)
	nftCheck(t, Render(got))
}

func TestCompilePolicies(t *testing.T) {
	drop, accept := v1alpha1.ChainPolicyDrop, v1alpha1.ChainPolicyAccept
	tests := []struct {
		name    string
		actions v1alpha1.DefaultActions
		audited []v1alpha1.Chain
		want    [3]Verdict
		audits  [3]bool
	}{
		{name: "unset means accept", want: [3]Verdict{"accept", "accept", "accept"}},
		{name: "set", actions: v1alpha1.DefaultActions{Input: drop, Forward: accept, Output: drop}, want: [3]Verdict{"drop", "accept", "drop"}},
		{
			name:    "audited drop accepts and logs",
			actions: v1alpha1.DefaultActions{Input: drop, Forward: drop, Output: drop},
			audited: []v1alpha1.Chain{v1alpha1.ChainForward, v1alpha1.ChainInput},
			want:    [3]Verdict{"accept", "accept", "drop"},
			audits:  [3]bool{true, true, false},
		},
		{
			name:    "audited accept changes nothing",
			actions: v1alpha1.DefaultActions{Input: accept},
			audited: []v1alpha1.Chain{v1alpha1.ChainInput, v1alpha1.ChainOutput},
			want:    [3]Verdict{"accept", "accept", "accept"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := v1alpha1.NodeFirewallSpec{DefaultActions: tt.actions, AuditedChains: tt.audited}
			rs, err := Compile(spec, Options{})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			for i, c := range v1alpha1.Chains {
				ch := chainOf(t, rs, chainName(c))
				if ch.Policy != tt.want[i] {
					t.Errorf("%s policy = %q, want %q", ch.Name, ch.Policy, tt.want[i])
				}
				last := ch.Rules[len(ch.Rules)-1]
				audit := last.Comment == "nodefw: audit default-drop"
				if audit != tt.audits[i] {
					t.Errorf("%s ends with %+v, want audit rule: %v", ch.Name, last, tt.audits[i])
				}
				if audit && (last.Log == nil || last.Log.Prefix != "nfw audit :"+ch.Name || !last.Counter) {
					t.Errorf("%s audit rule = %+v", ch.Name, last)
				}
			}
			checkInvariants(t, rs)
		})
	}
}

func TestCompileOptions(t *testing.T) {
	rs, err := Compile(v1alpha1.NodeFirewallSpec{}, Options{Table: "custom_fw"})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if rs.Table != "custom_fw" {
		t.Errorf("Table = %q, want custom_fw", rs.Table)
	}
	if n := rs.RuleCount(); n != 7 {
		t.Errorf("RuleCount without failsafes = %d, want 7", n)
	}
	nftCheck(t, Render(rs))

	// Failsafes of one protocol share a rule, in a fixed protocol order.
	opts := Options{FailsafeInbound: []Failsafe{
		{Protocol: v1alpha1.ProtocolSCTP, Ports: ports(9, 9)},
		{Protocol: v1alpha1.ProtocolUDP, Ports: ports(53, 53)},
		{Protocol: v1alpha1.ProtocolTCP, Ports: ports(22, 22)},
		{Protocol: v1alpha1.ProtocolUDP, Ports: ports(50, 60)},
	}}
	rs, err = Compile(v1alpha1.NodeFirewallSpec{}, opts)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	want := []Rule{
		{L4Proto: 6, DPorts: []PortInterval{ports(22, 22)}, Counter: true, Verdict: VerdictAccept, Comment: "nodefw: failsafe tcp"},
		{L4Proto: 17, DPorts: []PortInterval{ports(50, 60)}, Counter: true, Verdict: VerdictAccept, Comment: "nodefw: failsafe udp"},
		{L4Proto: 132, DPorts: []PortInterval{ports(9, 9)}, Counter: true, Verdict: VerdictAccept, Comment: "nodefw: failsafe sctp"},
	}
	if diff := cmp.Diff(want, chainOf(t, rs, "input").Rules[3:], cmpOpts); diff != "" {
		t.Errorf("failsafe rules (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Rule(nil), chainOf(t, rs, "output").Rules[3:], cmpOpts); diff != "" {
		t.Errorf("output gets no inbound failsafes (-want +got):\n%s", diff)
	}
	nftCheck(t, Render(rs))

	bad := []struct {
		opts Options
		want string
	}{
		{Options{Table: "no spaces"}, `table: "no spaces" is not a table name`},
		{Options{Table: "9lives"}, `table: "9lives" is not a table name`},
		{Options{FailsafeInbound: []Failsafe{{Protocol: v1alpha1.ProtocolICMP, Ports: ports(1, 1)}}}, `failsafeInbound[0]: protocol "ICMP" must be TCP, UDP or SCTP`},
		{Options{FailsafeOutbound: []Failsafe{{Protocol: v1alpha1.ProtocolTCP}}}, `failsafeOutbound[0]: ports 0-0 are not a range`},
		{Options{FailsafeOutbound: []Failsafe{{}, {Protocol: v1alpha1.ProtocolUDP, Ports: ports(5, 4)}}}, `failsafeOutbound[1]: ports 5-4`},
	}
	for _, b := range bad {
		if _, err := Compile(v1alpha1.NodeFirewallSpec{}, b.opts); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Compile(%+v) error = %v, want it to contain %q", b.opts, err, b.want)
		}
	}
}

// TestCompileIsDeterministic guards against map order leaking into output.
func TestCompileIsDeterministic(t *testing.T) {
	for name, spec := range goldenSpecs() {
		first := Render(mustCompile(t, spec))
		for range 20 {
			if got := Render(mustCompile(t, spec)); got != first {
				t.Fatalf("%s: two compilations differ:\n%s\n---\n%s", name, first, got)
			}
		}
	}
}

func mustCompile(t *testing.T, spec v1alpha1.NodeFirewallSpec) *Ruleset {
	t.Helper()
	rs, err := Compile(spec, Options{FailsafeInbound: DefaultFailsafeInbound(), FailsafeOutbound: DefaultFailsafeOutbound(), SetLookups: true})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return rs
}

// checkInvariants checks what the model promises consumers.
func checkInvariants(t *testing.T, rs *Ruleset) {
	t.Helper()
	for _, c := range rs.Chains {
		for i, r := range c.Rules {
			where := c.Name + " rule " + r.Comment
			if r.Log != nil && r.Verdict != VerdictNone {
				t.Errorf("%s (#%d): has Log and verdict %q", where, i, r.Verdict)
			}
			if r.Log != nil && len(r.Log.Prefix) > maxLogPrefix {
				t.Errorf("%s: log prefix is %d bytes", where, len(r.Log.Prefix))
			}
			if len(r.Comment) > maxComment {
				t.Errorf("%s: comment is %d bytes", where, len(r.Comment))
			}
			if len(r.DPorts) > 0 && r.L4Proto == 0 {
				t.Errorf("%s: ports without a protocol", where)
			}
			for j := 1; j < len(r.DPorts); j++ {
				if uint32(r.DPorts[j].First) <= uint32(r.DPorts[j-1].Last)+1 {
					t.Errorf("%s: ports %v not canonical", where, r.DPorts)
				}
			}
			for _, ps := range [][]netip.Prefix{r.SAddrs, r.DAddrs} {
				for j, p := range ps {
					if p != p.Masked() || prefixFamily(p) != r.Family {
						t.Errorf("%s: prefix %v is unmasked or not of family %d", where, p, r.Family)
					}
					if j > 0 && (ps[j-1].Overlaps(p) || ps[j-1].Addr().Compare(p.Addr()) > 0) {
						t.Errorf("%s: prefixes %v not canonical", where, ps)
					}
				}
			}
			if !slices.IsSorted(r.ICMPTypes) {
				t.Errorf("%s: ICMP types %v unsorted", where, r.ICMPTypes)
			}
		}
	}
}
