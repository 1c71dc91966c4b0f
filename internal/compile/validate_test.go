package compile

import (
	"strings"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// validRule is a rule that uses every field; cases break one thing each.
func validRule() v1alpha1.NodeFirewallRule {
	return v1alpha1.NodeFirewallRule{
		Policy:       "infra.example",
		Mode:         v1alpha1.PolicyModeEnforce,
		Name:         "web",
		Chain:        v1alpha1.ChainForward,
		Action:       v1alpha1.ActionAccept,
		Protocol:     v1alpha1.ProtocolTCP,
		Ports:        []v1alpha1.PortRange{{Port: 80}, {Port: 8000, EndPort: 8080}, {Port: 65535, EndPort: 65535}},
		Sources:      []string{"10.0.0.0/8", "10.1.2.3/8", "192.168.1.1", "2001:db8::/32", "::1"},
		Destinations: []string{"0.0.0.0/0", "::/0"},
		InInterface:  "eth+",
		OutInterface: "vlan.10@eth0",
		States:       []v1alpha1.ConnState{v1alpha1.ConnStateNew, v1alpha1.ConnStateEstablished, v1alpha1.ConnStateRelated, v1alpha1.ConnStateInvalid},
		Log:          true,
		SourcePorts:  []v1alpha1.SourcePortRange{{Port: 1024, EndPort: 65535}, {Port: 53}},
		ConnLimit:    &v1alpha1.ConnLimit{Above: 10},
	}
}

// validICMPRule is a rule that uses the fields validRule cannot.
func validICMPRule() v1alpha1.NodeFirewallRule {
	return v1alpha1.NodeFirewallRule{
		Policy:     "infra.example",
		Name:       "ping",
		Chain:      v1alpha1.ChainInput,
		Action:     v1alpha1.ActionReject,
		Protocol:   v1alpha1.ProtocolICMP,
		ICMPTypes:  []v1alpha1.ICMPType{"EchoRequest", "FragmentationNeeded", "3/13", "42"},
		RejectWith: v1alpha1.RejectWithAdminProhibited,
		Limit:      &v1alpha1.RateLimit{Rate: 10, Per: v1alpha1.RateUnitSecond, Burst: 20, PerSource: true},
	}
}

// validateSpec is validate's verdict alone.
func validateSpec(spec v1alpha1.NodeFirewallSpec) error {
	_, err := validate(spec)
	return err
}

func TestValidateAccepts(t *testing.T) {
	specs := map[string]v1alpha1.NodeFirewallSpec{
		"empty": {},
		"every field": {
			Rules: []v1alpha1.NodeFirewallRule{validRule(), validICMPRule()},
			DefaultActions: v1alpha1.DefaultActions{
				Input: v1alpha1.ChainPolicyDrop, Forward: v1alpha1.ChainPolicyAccept,
			},
			AuditedChains: []v1alpha1.Chain{v1alpha1.ChainInput, v1alpha1.ChainOutput},
		},
		"wildcards and bare names": {Rules: []v1alpha1.NodeFirewallRule{
			{Policy: "p", Name: "a", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, InInterface: "+"},
			{Policy: "p", Name: "b", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionReject, OutInterface: "abcdefghijklmno+"},
			{Policy: "p", Name: "c", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMPv6, Mode: v1alpha1.PolicyModeAudit},
		}},
		"protocols, answers and limits": {Rules: []v1alpha1.NodeFirewallRule{
			{Policy: "p", Name: "a", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolGRE},
			{Policy: "p", Name: "b", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: "41"},
			{Policy: "p", Name: "c", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionReject, Protocol: v1alpha1.ProtocolTCP, RejectWith: v1alpha1.RejectWithTCPReset},
			{Policy: "p", Name: "d", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionReject, RejectWith: v1alpha1.RejectWithNetUnreachable},
			{Policy: "p", Name: "e", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolICMPv6,
				ICMPTypes: []v1alpha1.ICMPType{"PacketTooBig", "NeighborSolicitation", "1/4"}},
			{Policy: "p", Name: "f", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, Limit: &v1alpha1.RateLimit{Rate: 1, Per: v1alpha1.RateUnitDay}},
			{Policy: "p", Name: "g", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, ConnLimit: &v1alpha1.ConnLimit{}, Log: true},
		}},
	}
	for name, spec := range specs {
		if err := validateSpec(spec); err != nil {
			t.Errorf("%s: validate: %v", name, err)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*v1alpha1.NodeFirewallSpec)
		want   string
	}{
		{"empty policy", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Policy = "" }, "rules[0].policy: "},
		{"bad policy", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Policy = `a"b` }, `rules[0].policy: "a\"b" is not a policy name`},
		{"bad mode", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Mode = "enforce" }, `rules[0].mode: "enforce" is not Enforce or Audit`},
		{"empty name", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Name = "" }, "rules[0].name: "},
		{"bad name", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Name = "Web" }, `rules[0].name: "Web" is not a rule name`},
		{"long name", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Name = strings.Repeat("a", 64) }, "rules[0].name: "},
		{"empty chain", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Chain = "" }, `rules[0].chain: "" is not PreRouting, Input, Forward or Output`},
		{"bad chain", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Chain = "INPUT" }, `rules[0].chain: "INPUT" is not`},
		{"empty action", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Action = "" }, `rules[0].action: "" is not Accept, Drop or Reject`},
		{"bad action", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Action = "Log" }, `rules[0].action: "Log" is not`},
		{"bad protocol", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol = "tcp" }, `rules[0].protocol: "tcp" is not TCP, UDP, SCTP, ICMP, ICMPv6, IGMP, GRE, ESP, AH, OSPF, PIM, VRRP, L2TP or the number of another IP protocol`},
		{"number of a named protocol", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol = "6" }, `rules[0].protocol: "6" is not TCP, UDP`},
		{"protocol 256", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol = "256" }, `rules[0].protocol: "256" is not TCP, UDP`},
		{"source ports without protocol", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol, s.Rules[0].Ports = "", nil },
			`rules[0].sourcePorts: sourcePorts require protocol TCP, UDP or SCTP, not ""`},
		{"source port zero", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].SourcePorts[1].Port = 0 }, "rules[0].sourcePorts[1].port: 0 is not in 1-65535"},
		{"source endPort below port", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].SourcePorts[0].EndPort = 1000 }, "rules[0].sourcePorts[0].endPort: 1000 is below port 1024"},
		{"source endPort too big", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].SourcePorts[0].EndPort = 65536 }, "rules[0].sourcePorts[0].endPort: 65536 is above 65535"},
		{"ICMP types with TCP", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].ICMPTypes = []v1alpha1.ICMPType{"8"} },
			`rules[0].icmpTypes: icmpTypes require protocol ICMP or ICMPv6, not "TCP"`},
		{"ICMPv6 name with ICMP", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules = append(s.Rules, validICMPRule())
			s.Rules[1].ICMPTypes[2] = "PacketTooBig"
		},
			`rules[1].icmpTypes[2]: "PacketTooBig" is not a type of protocol ICMP`},
		{"ICMP code above 255", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules = append(s.Rules, validICMPRule())
			s.Rules[1].ICMPTypes[0] = "3/256"
		},
			`rules[1].icmpTypes[0]: "3/256" is not a type of protocol ICMP`},
		{"unknown rejectWith", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules = append(s.Rules, validICMPRule())
			s.Rules[1].RejectWith = "tcp-reset"
		},
			`rules[1].rejectWith: "tcp-reset" is not PortUnreachable, TCPReset, HostUnreachable, AdminProhibited or NetUnreachable`},
		{"rejectWith on Accept", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].RejectWith = v1alpha1.RejectWithHostUnreachable },
			`rules[0].rejectWith: rejectWith requires action Reject, not "Accept"`},
		{"TCP reset on ICMP", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules = append(s.Rules, validICMPRule())
			s.Rules[1].RejectWith = v1alpha1.RejectWithTCPReset
		},
			`rules[1].rejectWith: rejectWith TCPReset requires protocol TCP, not "ICMP"`},
		{"limit rate zero", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules = append(s.Rules, validICMPRule())
			s.Rules[1].Limit.Rate = 0
		},
			"rules[1].limit.rate: 0 is not in 1-10000"},
		{"limit unit", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules = append(s.Rules, validICMPRule())
			s.Rules[1].Limit.Per = "sec"
		},
			`rules[1].limit.per: "sec" is not Second, Minute, Hour or Day`},
		{"limit burst", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules = append(s.Rules, validICMPRule())
			s.Rules[1].Limit.Burst = 10001
		},
			"rules[1].limit.burst: 10001 is not in 1-10000"},
		{"limit with log", func(s *v1alpha1.NodeFirewallSpec) { s.Rules = append(s.Rules, validICMPRule()); s.Rules[1].Log = true },
			"rules[1].log: log cannot be combined with limit"},
		{"connLimit negative", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].ConnLimit.Above = -1 }, "rules[0].connLimit.above: -1 is not in 0-65535"},
		{"ports without protocol", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol = "" }, `rules[0].ports: ports require protocol TCP, UDP or SCTP, not ""`},
		{"ports with ICMP", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol = v1alpha1.ProtocolICMP }, `rules[0].ports: ports require protocol TCP, UDP or SCTP, not "ICMP"`},
		{"port zero", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Ports[0].Port = 0 }, "rules[0].ports[0].port: 0 is not in 1-65535"},
		{"port negative", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Ports[1].Port = -1 }, "rules[0].ports[1].port: -1 is not in 1-65535"},
		{"port too big", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Ports[0].Port = 65536 }, "rules[0].ports[0].port: 65536 is not in 1-65535"},
		{"endPort below port", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Ports[1].EndPort = 7999 }, "rules[0].ports[1].endPort: 7999 is below port 8000"},
		{"endPort too big", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Ports[2].EndPort = 65536 }, "rules[0].ports[2].endPort: 65536 is above 65535"},
		{"endPort negative", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Ports[0].EndPort = -5 }, "rules[0].ports[0].endPort: -5 is below port 80"},
		{"bad source", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Sources[2] = "example.com" }, `rules[0].sources[2]: "example.com" is not an IP address or CIDR`},
		{"source bad bits", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Sources[0] = "10.0.0.0/33" }, `rules[0].sources[0]: "10.0.0.0/33" is not`},
		{"source zone", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Sources[4] = "fe80::1%eth0" }, `rules[0].sources[4]: "fe80::1%eth0" is not`},
		{"source empty", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Sources[1] = "" }, `rules[0].sources[1]: "" is not`},
		{"source range", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Sources[1] = "10.0.0.1-10.0.0.9" }, `rules[0].sources[1]: `},
		{"bad destination", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Destinations[1] = "::/129" }, `rules[0].destinations[1]: "::/129" is not`},
		{"inInterface too long", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].InInterface = strings.Repeat("e", 16) }, "rules[0].inInterface: "},
		{"inInterface bad char", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].InInterface = "eth 0" }, `rules[0].inInterface: "eth 0" is not an interface name`},
		{"inInterface star", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].InInterface = "eth*" }, `rules[0].inInterface: "eth*" is not`},
		{"inInterface inner plus", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].InInterface = "eth+0" }, `rules[0].inInterface: "eth+0" is not`},
		{"inInterface double plus", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].InInterface = "eth++" }, `rules[0].inInterface: "eth++" is not`},
		{"outInterface bad", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].OutInterface = "++" }, `rules[0].outInterface: "++" is not`},
		{"inInterface on Output", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Chain, s.Rules[0].OutInterface = v1alpha1.ChainOutput, ""
		}, "rules[0].inInterface: not allowed on the Output chain"},
		{"outInterface on Input", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Chain, s.Rules[0].InInterface = v1alpha1.ChainInput, ""
		}, "rules[0].outInterface: not allowed on the Input chain"},
		{"outInterface on PreRouting", func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Chain, s.Rules[0].InInterface = v1alpha1.ChainPreRouting, ""
		}, "rules[0].outInterface: not allowed on the PreRouting chain"},
		{"bad state", func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].States[3] = "Untracked" }, `rules[0].states[3]: "Untracked" is not New, Established, Related or Invalid`},
		{"second rule", func(s *v1alpha1.NodeFirewallSpec) {
			r := validRule()
			r.Ports[0].EndPort = 1
			s.Rules = append(s.Rules, validRule(), validRule(), r)
		}, "rules[3].ports[0].endPort: 1 is below port 80"},
		{"bad input policy", func(s *v1alpha1.NodeFirewallSpec) { s.DefaultActions.Input = "Reject" }, `defaultActions.input: "Reject" is not Accept or Drop`},
		{"bad forward policy", func(s *v1alpha1.NodeFirewallSpec) { s.DefaultActions.Forward = "drop" }, `defaultActions.forward: "drop" is not Accept or Drop`},
		{"bad output policy", func(s *v1alpha1.NodeFirewallSpec) { s.DefaultActions.Output = "x" }, `defaultActions.output: "x" is not Accept or Drop`},
		{"bad prerouting policy", func(s *v1alpha1.NodeFirewallSpec) { s.DefaultActions.PreRouting = "Reject" }, `defaultActions.preRouting: "Reject" is not Accept or Drop`},
		{"bad audited chain", func(s *v1alpha1.NodeFirewallSpec) {
			s.AuditedChains = []v1alpha1.Chain{v1alpha1.ChainInput, "PREROUTING"}
		}, `auditedChains[1]: "PREROUTING" is not PreRouting, Input, Forward or Output`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{validRule()}}
			tt.mutate(&spec)
			err := validateSpec(spec)
			if err == nil {
				t.Fatalf("validate accepted the spec, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate error:\n%v\nwant it to contain %q", err, tt.want)
			}
			if _, cerr := Compile(spec, Options{}); cerr == nil || cerr.Error() != err.Error() {
				t.Errorf("Compile error:\n%v\nwant validate's:\n%v", cerr, err)
			}
		})
	}
}

// TestValidateJoinsErrorsInOrder checks that every problem is reported, in
// field order, and that the message is stable.
func TestValidateJoinsErrorsInOrder(t *testing.T) {
	spec := v1alpha1.NodeFirewallSpec{
		Rules: []v1alpha1.NodeFirewallRule{
			validRule(),
			{Policy: "p", Name: "r", Chain: v1alpha1.ChainInput, Action: "Allow", Ports: []v1alpha1.PortRange{{Port: 0, EndPort: 70000}}, OutInterface: "eth0"},
		},
		DefaultActions: v1alpha1.DefaultActions{Output: "Reject"},
		AuditedChains:  []v1alpha1.Chain{"nat"},
	}
	want := strings.Join([]string{
		`rules[1].action: "Allow" is not Accept, Drop or Reject`,
		`rules[1].ports: ports require protocol TCP, UDP or SCTP, not ""`,
		`rules[1].ports[0].port: 0 is not in 1-65535`,
		`rules[1].ports[0].endPort: 70000 is above 65535`,
		`rules[1].outInterface: not allowed on the Input chain`,
		`defaultActions.output: "Reject" is not Accept or Drop`,
		`auditedChains[0]: "nat" is not PreRouting, Input, Forward or Output`,
	}, "\n")
	for range 3 {
		err := validateSpec(spec)
		if err == nil || err.Error() != want {
			t.Fatalf("validate error:\n%v\nwant:\n%s", err, want)
		}
	}
}
