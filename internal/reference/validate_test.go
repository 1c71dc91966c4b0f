package reference

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/nodefw/nodefw/api/v1alpha1"
	"github.com/nodefw/nodefw/internal/compile"
)

// compileError is the error Compile gives a spec, as text; "" for none.
func compileError(spec v1alpha1.NodeFirewallSpec) string {
	if _, err := compile.Compile(spec, compile.Options{}); err != nil {
		return err.Error()
	}
	return ""
}

func validateError(spec v1alpha1.NodeFirewallSpec) string {
	if err := Validate(spec); err != nil {
		return err.Error()
	}
	return ""
}

// TestValidateAgreesWithCompile checks Validate against Compile, word for
// word, on specs that break one thing each or several at once.
func TestValidateAgreesWithCompile(t *testing.T) {
	valid := func() v1alpha1.NodeFirewallRule {
		return v1alpha1.NodeFirewallRule{
			Policy: "infra.example", Mode: v1alpha1.PolicyModeEnforce, Name: "web", Chain: v1alpha1.ChainForward,
			Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP,
			Ports:        []v1alpha1.PortRange{{Port: 80}, {Port: 8000, EndPort: 8080}},
			Sources:      []string{"10.0.0.0/8", "10.1.2.3/8", "2001:db8::/32"},
			Destinations: []string{"0.0.0.0/0"},
			InInterface:  "eth+", OutInterface: "vlan.10@eth0",
			States: []v1alpha1.ConnState{v1alpha1.ConnStateNew},
			Log:    true,
		}
	}
	tests := map[string]func(*v1alpha1.NodeFirewallSpec){
		"valid":                    func(*v1alpha1.NodeFirewallSpec) {},
		"bad policy":               func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Policy = "Infra" },
		"empty policy":             func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Policy = "" },
		"long policy":              func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Policy = strings.Repeat("a.", 127) + "a" },
		"policy empty label":       func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Policy = "a..b" },
		"bad mode":                 func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Mode = "Dry" },
		"bad name":                 func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Name = "-web" },
		"long name":                func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Name = strings.Repeat("a", 64) },
		"bad chain":                func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Chain = "INPUT" },
		"bad action":               func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Action = "Log" },
		"bad protocol":             func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol = "gre" },
		"valid protocol by number": func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol, s.Rules[0].Ports = "41", nil },
		"number of a name":         func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol, s.Rules[0].Ports = "47", nil },
		"leading zero":             func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol, s.Rules[0].Ports = "041", nil },
		"protocol 256":             func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol, s.Rules[0].Ports = "256", nil },
		"valid named protocol":     func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol, s.Rules[0].Ports = v1alpha1.ProtocolVRRP, nil },
		"valid source ports": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}, {Port: 1024, EndPort: 65535}}
		},
		"bad source ports": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].SourcePorts = []v1alpha1.SourcePortRange{{Port: 0, EndPort: 70000}, {Port: 9, EndPort: 8}}
		},
		"source ports without protocol": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Protocol, s.Rules[0].Ports = "", nil
			s.Rules[0].SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}}
		},
		"valid ICMP types": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Protocol, s.Rules[0].Ports = v1alpha1.ProtocolICMP, nil
			s.Rules[0].ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "3/4", "200"}
		},
		"bad ICMP types": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Protocol, s.Rules[0].Ports = v1alpha1.ProtocolICMPv6, nil
			s.Rules[0].ICMPTypes = []v1alpha1.ICMPType{"FragmentationNeeded", "PacketTooBig", "300", "1/", "echo-request"}
		},
		"ICMP types with TCP": func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].ICMPTypes = []v1alpha1.ICMPType{"nonsense"} },
		"valid reject answers": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Action, s.Rules[0].RejectWith = v1alpha1.ActionReject, v1alpha1.RejectWithTCPReset
		},
		"bad reject answers": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].RejectWith = "icmp-host-prohibited"
			r := s.Rules[0]
			r.Name, r.Protocol, r.Ports, r.RejectWith = "udp", v1alpha1.ProtocolUDP, nil, v1alpha1.RejectWithTCPReset
			s.Rules = append(s.Rules, r)
		},
		"valid limits": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Log = false
			s.Rules[0].Limit = &v1alpha1.RateLimit{Rate: 10000, Per: v1alpha1.RateUnitDay, Burst: 10000, PerSource: true}
			s.Rules[0].ConnLimit = &v1alpha1.ConnLimit{Above: 65535}
		},
		"bad limits": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Limit = &v1alpha1.RateLimit{Rate: 0, Per: "sec", Burst: -1}
			s.Rules[0].ConnLimit = &v1alpha1.ConnLimit{Above: 65536}
		},
		"ports with ICMP": func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Protocol = v1alpha1.ProtocolICMP },
		"bad ports": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Ports = []v1alpha1.PortRange{{Port: 0, EndPort: 70000}, {Port: 9, EndPort: 8}}
		},
		"bad addresses": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Sources = []string{"10.0.0.0/33", "fe80::1%eth0", "01.2.3.4", ""}
		},
		"bad destination": func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Destinations = []string{"::/129", "1.2.3.4/08"} },
		"bad interfaces": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].InInterface, s.Rules[0].OutInterface = "eth++", "averylonginterface"
		},
		"inInterface output": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Chain, s.Rules[0].OutInterface = v1alpha1.ChainOutput, ""
		},
		"outInterface input": func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].Chain, s.Rules[0].InInterface = v1alpha1.ChainInput, "" },
		"bad state":          func(s *v1alpha1.NodeFirewallSpec) { s.Rules[0].States = []v1alpha1.ConnState{"Untracked"} },
		"bad default actions": func(s *v1alpha1.NodeFirewallSpec) {
			s.DefaultActions = v1alpha1.DefaultActions{Input: "Reject", Output: "drop"}
		},
		"bad audited chain": func(s *v1alpha1.NodeFirewallSpec) { s.AuditedChains = []v1alpha1.Chain{v1alpha1.ChainInput, "nat"} },
		"same bad policy twice": func(s *v1alpha1.NodeFirewallSpec) {
			s.Rules[0].Policy = "P"
			s.Rules = append(s.Rules, s.Rules[0])
		},
	}
	for name, mutate := range tests {
		spec := v1alpha1.NodeFirewallSpec{Rules: []v1alpha1.NodeFirewallRule{valid()}}
		mutate(&spec)
		got, want := validateError(spec), compileError(spec)
		if got != want {
			t.Errorf("%s: Validate says\n%s\nCompile says\n%s", name, got, want)
		}
		if (want == "") != strings.HasPrefix(name, "valid") {
			t.Errorf("%s: Compile error %q", name, want)
		}
	}
}

// TestValidateAgreesWithCompileRandom draws specs whose every field is
// valid but for a few near misses: each field misses one time in 40.
func TestValidateAgreesWithCompileRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// field picks a valid value, or rarely one of the near misses.
	field := func(valid, bad []string) string {
		if r.IntN(40) == 0 {
			return bad[r.IntN(len(bad))]
		}
		return valid[r.IntN(len(valid))]
	}
	var (
		policies    = []string{"p", "p.q", "infra.example"}
		badPolicies = []string{"P", "p..q", "p-", "", strings.Repeat("a.", 127) + "a"}
		names       = []string{"a", "web", "a-b", strings.Repeat("x", 63)}
		badNames    = []string{"A", "-a", "a-", "a.b", "", strings.Repeat("x", 64)}
		addrs       = []string{"10.0.0.1", "10.0.0.0/8", "10.1.2.3/8", "::1", "2001:db8::/32", "::ffff:1.2.3.4", "0.0.0.0/0"}
		badAddrs    = []string{"1.2.3", "01.2.3.4", "1.2.3.4/33", "1.2.3.4/08", "fe80::1%eth0", "::/129", "example.com", ""}
		ifaces      = []string{"", "", "+", "eth0", "eth+", "abcdefghijklmno", "vlan.10@eth0"}
		badIfaces   = []string{"eth++", "++", "eth 0", "abcdefghijklmnop", "eth*"}
	)
	specs, invalid := 5000, 0
	for i := range specs {
		var spec v1alpha1.NodeFirewallSpec
		for range 1 + r.IntN(3) {
			rule := v1alpha1.NodeFirewallRule{
				Policy:   field(policies, badPolicies),
				Mode:     v1alpha1.PolicyMode(field([]string{"", "Enforce", "Audit"}, []string{"enforce", "Dry"})),
				Name:     field(names, badNames),
				Chain:    v1alpha1.Chain(field([]string{"Input", "Forward", "Output"}, []string{"", "input"})),
				Action:   v1alpha1.Action(field([]string{"Accept", "Drop", "Reject"}, []string{"", "Log"})),
				Protocol: v1alpha1.Protocol(field([]string{"", "TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "GRE", "41"}, []string{"tcp", "47", "256"})),
			}
			if rule.Action == v1alpha1.ActionReject || r.IntN(40) == 0 {
				rule.RejectWith = v1alpha1.RejectWith(field([]string{"", "PortUnreachable", "HostUnreachable", "TCPReset"}, []string{"tcp-reset"}))
			}
			if rule.Protocol.HasPorts() || r.IntN(40) == 0 {
				for range r.IntN(2) {
					rule.SourcePorts = append(rule.SourcePorts, v1alpha1.SourcePortRange{Port: int32(r.IntN(70000)) - 1, EndPort: int32(r.IntN(3)) * int32(r.IntN(70000))})
				}
			}
			if rule.Protocol == v1alpha1.ProtocolICMP || rule.Protocol == v1alpha1.ProtocolICMPv6 || r.IntN(40) == 0 {
				for range r.IntN(3) {
					rule.ICMPTypes = append(rule.ICMPTypes, v1alpha1.ICMPType(field([]string{"EchoRequest", "PacketTooBig", "3/4", "8", "DestinationUnreachable"}, []string{"echo-request", "256"})))
				}
			}
			switch r.IntN(8) {
			case 0:
				rule.Limit = &v1alpha1.RateLimit{Rate: int32(r.IntN(10002)), Per: v1alpha1.RateUnit(field([]string{"Second", "Day"}, []string{"sec"})), PerSource: r.IntN(2) == 0}
			case 1:
				rule.ConnLimit = &v1alpha1.ConnLimit{Above: int32(r.IntN(70000)) - 1}
			}
			// Interfaces only where the chain has them, but for near misses.
			if rule.Chain != v1alpha1.ChainOutput || r.IntN(40) == 0 {
				rule.InInterface = field(ifaces, badIfaces)
			}
			if rule.Chain != v1alpha1.ChainInput || r.IntN(40) == 0 {
				rule.OutInterface = field(ifaces, badIfaces)
			}
			if rule.Protocol.HasPorts() || r.IntN(40) == 0 {
				for range r.IntN(3) {
					p := v1alpha1.PortRange{Port: int32(1 + r.IntN(65535))}
					if r.IntN(3) == 0 {
						p.EndPort = p.Port + int32(r.IntN(100))
					}
					if r.IntN(40) == 0 {
						p = v1alpha1.PortRange{Port: int32(r.IntN(70000)) - 1, EndPort: int32(r.IntN(70000)) - 1}
					}
					rule.Ports = append(rule.Ports, p)
				}
			}
			for range r.IntN(3) {
				rule.Sources = append(rule.Sources, field(addrs, badAddrs))
			}
			for range r.IntN(2) {
				rule.Destinations = append(rule.Destinations, field(addrs, badAddrs))
			}
			for range r.IntN(2) {
				rule.States = append(rule.States, v1alpha1.ConnState(field([]string{"New", "Established", "Related", "Invalid"}, []string{"Untracked"})))
			}
			spec.Rules = append(spec.Rules, rule)
		}
		spec.DefaultActions.Input = v1alpha1.ChainPolicy(field([]string{"", "Accept", "Drop"}, []string{"Reject", "drop"}))
		if r.IntN(4) == 0 {
			spec.AuditedChains = []v1alpha1.Chain{v1alpha1.Chain(field([]string{"Input", "Output"}, []string{"nat"}))}
		}
		got, want := validateError(spec), compileError(spec)
		if got != want {
			t.Fatalf("spec %d: %+v\nValidate says\n%s\nCompile says\n%s", i, spec, got, want)
		}
		if want != "" {
			invalid++
		}
	}
	// Both kinds must be common for the agreement to mean something.
	t.Logf("%d specs, %d invalid", specs, invalid)
	if invalid < specs/10 || invalid > specs*9/10 {
		t.Errorf("%d of %d specs invalid", invalid, specs)
	}
}
