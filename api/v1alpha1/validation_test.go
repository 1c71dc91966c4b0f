package v1alpha1_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// sshRule is a valid rule, the starting point of most cases.
func sshRule() v1alpha1.Rule {
	return v1alpha1.Rule{
		Name:     "ssh",
		Chain:    v1alpha1.ChainInput,
		Action:   v1alpha1.ActionAccept,
		Protocol: v1alpha1.ProtocolTCP,
		Ports:    []v1alpha1.PortRange{{Port: 22}},
	}
}

// basePolicy is a valid policy with one rule. Each case edits a copy.
func basePolicy(name string) *v1alpha1.NodeFirewallPolicy {
	return &v1alpha1.NodeFirewallPolicy{
		TypeMeta: metav1.TypeMeta{
			APIVersion: v1alpha1.GroupVersion.String(),
			Kind:       "NodeFirewallPolicy",
		},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.NodeFirewallPolicySpec{
			NodeSelector: metav1.LabelSelector{},
			Rules:        []v1alpha1.Rule{sshRule()},
		},
	}
}

// baseNodeFirewall is a valid NodeFirewall with one rule.
func baseNodeFirewall(name string) *v1alpha1.NodeFirewall {
	r := sshRule()
	return &v1alpha1.NodeFirewall{
		TypeMeta: metav1.TypeMeta{
			APIVersion: v1alpha1.GroupVersion.String(),
			Kind:       "NodeFirewall",
		},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.NodeFirewallSpec{
			Rules: []v1alpha1.NodeFirewallRule{{
				Policy:   "base",
				Mode:     v1alpha1.PolicyModeEnforce,
				Name:     r.Name,
				Chain:    r.Chain,
				Action:   r.Action,
				Protocol: r.Protocol,
				Ports:    r.Ports,
			}},
			DefaultActions: v1alpha1.DefaultActions{
				Input:   v1alpha1.ChainPolicyDrop,
				Forward: v1alpha1.ChainPolicyAccept,
				Output:  v1alpha1.ChainPolicyAccept,
			},
			Policies: []v1alpha1.PolicyReference{{Name: "base", Generation: 1}},
		},
	}
}

// rule returns the first rule of p, for edits.
func rule(p *v1alpha1.NodeFirewallPolicy) *v1alpha1.Rule { return &p.Spec.Rules[0] }

// rawRule returns the first rule of the JSON form of a policy, for edits the
// Go types cannot express, such as omitting a required field.
func rawRule(obj map[string]any) map[string]any {
	return rawSpec(obj)["rules"].([]any)[0].(map[string]any)
}

// rawSpec returns the spec of the JSON form of an object.
func rawSpec(obj map[string]any) map[string]any {
	return obj["spec"].(map[string]any)
}

// repeat returns n strings made by f.
func repeat(n int, f func(i int) string) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = f(i)
	}
	return s
}

// rules returns n valid, distinct rules.
func rules(n int) []v1alpha1.Rule {
	rs := make([]v1alpha1.Rule, n)
	for i := range rs {
		rs[i] = sshRule()
		rs[i].Name = fmt.Sprintf("rule-%d", i)
		rs[i].Ports = []v1alpha1.PortRange{{Port: int32(1 + i)}}
	}
	return rs
}

// ports returns n valid port ranges.
func ports(n int) []v1alpha1.PortRange {
	ps := make([]v1alpha1.PortRange, n)
	for i := range ps {
		ps[i] = v1alpha1.PortRange{Port: int32(1000 + 10*i), EndPort: int32(1005 + 10*i)}
	}
	return ps
}

// toUnstructured converts a typed object to the JSON form sent to the API
// server, without status, which create ignores.
func toUnstructured(t *testing.T, obj runtime.Object) map[string]any {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatalf("converting to unstructured: %v", err)
	}
	delete(m, "status")
	return m
}

// createRaw creates the JSON form of an object, deleting it when the test ends.
func createRaw(t *testing.T, obj map[string]any) error {
	t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	cleanup(t, u.DeepCopy())
	return k8sClient.Create(context.Background(), u)
}

// causeFields returns the field paths named by the causes of an API error.
func causeFields(err error) []string {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return nil
	}
	var fields []string
	for _, c := range status.Status().Details.Causes {
		fields = append(fields, c.Field)
	}
	return fields
}

// wantInvalid checks that err is an Invalid error naming field and whose
// message contains msg.
func wantInvalid(t *testing.T, err error, field, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want an Invalid error on %s", field)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("got %v; want an Invalid error on %s", err, field)
	}
	fields := causeFields(err)
	found := false
	for _, f := range fields {
		if f == field {
			found = true
		}
	}
	if !found {
		t.Errorf("causes name fields %q; want %s\nerror: %v", fields, field, err)
	}
	if !strings.Contains(err.Error(), field) {
		t.Errorf("message does not name %s: %v", field, err)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("message does not contain %q: %v", msg, err)
	}
}

func TestNodeFirewallPolicyRejectsInvalid(t *testing.T) {
	// Each case edits a copy of basePolicy, as a typed object (edit) and then
	// as JSON (raw), so that it has exactly one fault.
	cases := []struct {
		name  string
		edit  func(p *v1alpha1.NodeFirewallPolicy)
		raw   func(obj map[string]any)
		field string
		msg   string
	}{
		// Addresses.
		{
			name:  "source CIDR prefix too long",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Sources = []string{"10.0.0.0/33"} },
			field: "spec.rules[0].sources",
			msg:   "sources must be IP addresses or CIDRs",
		},
		{
			name:  "source IPv6 CIDR prefix too long",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Sources = []string{"fd00::/129"} },
			field: "spec.rules[0].sources",
			msg:   "sources must be IP addresses or CIDRs",
		},
		{
			name: "source not an address",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Sources = []string{"10.0.0.1", "example.com"}
			},
			field: "spec.rules[0].sources",
			msg:   "sources must be IP addresses or CIDRs",
		},
		{
			name:  "source octet out of range",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Sources = []string{"10.0.0.256"} },
			field: "spec.rules[0].sources",
			msg:   "sources must be IP addresses or CIDRs",
		},
		{
			name:  "source address with zone",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Sources = []string{"fe80::1%eth0"} },
			field: "spec.rules[0].sources",
			msg:   "sources must be IP addresses or CIDRs",
		},
		{
			name:  "source empty",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Sources = []string{""} },
			field: "spec.rules[0].sources",
			msg:   "sources must be IP addresses or CIDRs",
		},
		{
			name: "source too long",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Sources = []string{strings.Repeat("1", 44)}
			},
			field: "spec.rules[0].sources[0]",
			msg:   "may not be more than 43 bytes",
		},
		{
			name: "too many sources",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Sources = repeat(33, func(i int) string { return fmt.Sprintf("10.0.%d.0/24", i) })
			},
			field: "spec.rules[0].sources",
			msg:   "must have at most 32 items",
		},
		{
			name:  "destination CIDR prefix too long",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Destinations = []string{"192.168.0.0/40"} },
			field: "spec.rules[0].destinations",
			msg:   "destinations must be IP addresses or CIDRs",
		},
		{
			name:  "destination address incomplete",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Destinations = []string{"10.1.2"} },
			field: "spec.rules[0].destinations",
			msg:   "destinations must be IP addresses or CIDRs",
		},
		{
			name: "destination IPv6 malformed",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Destinations = []string{"2001:db8::1", "2001:db8:::1"}
			},
			field: "spec.rules[0].destinations",
			msg:   "destinations must be IP addresses or CIDRs",
		},
		{
			name: "too many destinations",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Destinations = repeat(33, func(i int) string { return fmt.Sprintf("fd00::%x", i) })
			},
			field: "spec.rules[0].destinations",
			msg:   "must have at most 32 items",
		},

		// Ports.
		{
			name:  "port 0",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = []v1alpha1.PortRange{{Port: 0}} },
			field: "spec.rules[0].ports[0].port",
			msg:   "should be greater than or equal to 1",
		},
		{
			name:  "port 65536",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = []v1alpha1.PortRange{{Port: 65536}} },
			field: "spec.rules[0].ports[0].port",
			msg:   "should be less than or equal to 65535",
		},
		{
			name: "endPort 65536",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Ports = []v1alpha1.PortRange{{Port: 30000, EndPort: 65536}}
			},
			field: "spec.rules[0].ports[0].endPort",
			msg:   "should be less than or equal to 65535",
		},
		{
			name: "endPort 0",
			raw: func(obj map[string]any) {
				rawRule(obj)["ports"] = []any{map[string]any{"port": int64(80), "endPort": int64(0)}}
			},
			field: "spec.rules[0].ports[0].endPort",
			msg:   "should be greater than or equal to 1",
		},
		{
			name: "endPort below port",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Ports = []v1alpha1.PortRange{{Port: 32767, EndPort: 30000}}
			},
			field: "spec.rules[0].ports[0].endPort",
			msg:   "endPort must not be below port",
		},
		{
			name: "endPort below port in a later range",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Ports = []v1alpha1.PortRange{{Port: 80}, {Port: 443}, {Port: 8443, EndPort: 8080}}
			},
			field: "spec.rules[0].ports[2].endPort",
			msg:   "endPort must not be below port",
		},
		{
			name:  "port missing",
			raw:   func(obj map[string]any) { rawRule(obj)["ports"] = []any{map[string]any{"endPort": int64(80)}} },
			field: "spec.rules[0].ports[0].port",
			msg:   "Required value",
		},
		{
			name:  "ports with ICMP",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Protocol = v1alpha1.ProtocolICMP },
			field: "spec.rules[0].ports",
			msg:   "ports require protocol TCP, UDP or SCTP",
		},
		{
			name:  "ports with ICMPv6",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Protocol = v1alpha1.ProtocolICMPv6 },
			field: "spec.rules[0].ports",
			msg:   "ports require protocol TCP, UDP or SCTP",
		},
		{
			name:  "ports without protocol",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Protocol = "" },
			field: "spec.rules[0].ports",
			msg:   "ports require protocol TCP, UDP or SCTP",
		},
		{
			name:  "too many ports",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = ports(33) },
			field: "spec.rules[0].ports",
			msg:   "must have at most 32 items",
		},

		// Enums.
		{
			name:  "unknown chain",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Chain = "INPUT" },
			field: "spec.rules[0].chain",
			msg:   "Unsupported value",
		},
		{
			name:  "unknown action",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Action = "Log" },
			field: "spec.rules[0].action",
			msg:   "Unsupported value",
		},
		{
			name:  "unknown action in iptables case",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Action = "ACCEPT" },
			field: "spec.rules[0].action",
			msg:   "Unsupported value",
		},
		{
			name:  "unknown protocol",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Protocol = "tcp" },
			field: "spec.rules[0].protocol",
			msg:   "protocol must be TCP, UDP, SCTP, ICMP, ICMPv6,",
		},
		{
			name:  "unknown protocol in iptables case",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = nil; rule(p).Protocol = "gre" },
			field: "spec.rules[0].protocol",
			msg:   "protocol must be TCP, UDP, SCTP, ICMP, ICMPv6, IGMP, GRE, ESP, AH, OSPF, PIM, VRRP, L2TP or the number (1-255) of another IP protocol",
		},
		{
			name:  "unknown protocol name",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = nil; rule(p).Protocol = "IPIP" },
			field: "spec.rules[0].protocol",
			msg:   "protocol must be TCP, UDP, SCTP, ICMP, ICMPv6, IGMP, GRE, ESP, AH, OSPF, PIM, VRRP, L2TP or the number",
		},
		{
			name:  "protocol number above 255",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = nil; rule(p).Protocol = "256" },
			field: "spec.rules[0].protocol",
			msg:   "the number (1-255) of another IP protocol",
		},
		{
			name:  "protocol number 0",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = nil; rule(p).Protocol = "0" },
			field: "spec.rules[0].protocol",
			msg:   "the number (1-255) of another IP protocol",
		},
		{
			name:  "protocol number with leading zero",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = nil; rule(p).Protocol = "047" },
			field: "spec.rules[0].protocol",
			msg:   "the number (1-255) of another IP protocol",
		},
		{
			name:  "number of a named protocol",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = nil; rule(p).Protocol = "50" },
			field: "spec.rules[0].protocol",
			msg:   "protocols with a name are written by name",
		},
		{
			name:  "number of TCP with ports",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Protocol = "6" },
			field: "spec.rules[0].protocol",
			msg:   "protocols with a name are written by name",
		},
		{
			name:  "ports with GRE",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Protocol = v1alpha1.ProtocolGRE },
			field: "spec.rules[0].ports",
			msg:   "ports require protocol TCP, UDP or SCTP",
		},
		{
			name:  "protocol too long",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Ports = nil; rule(p).Protocol = "Protocol1" },
			field: "spec.rules[0].protocol",
			msg:   "may not be more than 8 bytes",
		},
		{
			name: "unknown state",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).States = []v1alpha1.ConnState{v1alpha1.ConnStateEstablished, "NEW"}
			},
			field: "spec.rules[0].states[1]",
			msg:   "Unsupported value",
		},
		{
			name: "duplicate state",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).States = []v1alpha1.ConnState{v1alpha1.ConnStateNew, v1alpha1.ConnStateNew}
			},
			field: "spec.rules[0].states[1]",
			msg:   "Duplicate value",
		},
		{
			name: "unknown default action input",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.DefaultActions = &v1alpha1.DefaultActions{Input: "Reject"}
			},
			field: "spec.defaultActions.input",
			msg:   "Unsupported value",
		},
		{
			name: "unknown default action forward",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.DefaultActions = &v1alpha1.DefaultActions{Forward: "DROP"}
			},
			field: "spec.defaultActions.forward",
			msg:   "Unsupported value",
		},
		{
			name: "unknown default action output",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.DefaultActions = &v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, Output: "Log"}
			},
			field: "spec.defaultActions.output",
			msg:   "Unsupported value",
		},
		{
			name:  "unknown mode",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { p.Spec.Mode = "DryRun" },
			field: "spec.mode",
			msg:   "Unsupported value",
		},

		// Matches and answers of iptables' extensions.
		{
			name: "source ports without protocol",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol = ""
				rule(p).Ports = nil
				rule(p).SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}}
			},
			field: "spec.rules[0].sourcePorts",
			msg:   "sourcePorts require protocol TCP, UDP or SCTP",
		},
		{
			name: "source ports with ICMP",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol, rule(p).Ports = v1alpha1.ProtocolICMP, nil
				rule(p).SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}}
			},
			field: "spec.rules[0].sourcePorts",
			msg:   "sourcePorts require protocol TCP, UDP or SCTP",
		},
		{
			name: "source port range reversed",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).SourcePorts = []v1alpha1.SourcePortRange{{Port: 2000, EndPort: 1000}}
			},
			field: "spec.rules[0].sourcePorts[0].endPort",
			msg:   "endPort must not be below port",
		},
		{
			name:  "source port 0",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).SourcePorts = []v1alpha1.SourcePortRange{{Port: 0}} },
			field: "spec.rules[0].sourcePorts[0].port",
			msg:   "should be greater than or equal to 1",
		},
		{
			name: "too many source ports",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				for _, pr := range ports(33) {
					rule(p).SourcePorts = append(rule(p).SourcePorts, v1alpha1.SourcePortRange{Port: pr.Port, EndPort: pr.EndPort})
				}
			},
			field: "spec.rules[0].sourcePorts",
			msg:   "must have at most 32 items",
		},
		{
			name:  "ICMP types with TCP",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"} },
			field: "spec.rules[0].icmpTypes",
			msg:   "icmpTypes require protocol ICMP or ICMPv6",
		},
		{
			name: "ICMP types without protocol",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol, rule(p).Ports = "", nil
				rule(p).ICMPTypes = []v1alpha1.ICMPType{"8"}
			},
			field: "spec.rules[0].icmpTypes",
			msg:   "icmpTypes require protocol ICMP or ICMPv6",
		},
		{
			name: "ICMPv6 type name with ICMP",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol, rule(p).Ports = v1alpha1.ProtocolICMP, nil
				rule(p).ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "PacketTooBig"}
			},
			field: "spec.rules[0].icmpTypes",
			msg:   "icmpTypes of protocol ICMP must be numbers, type or type/code, or IPv4 type names as iptables --icmp-type spells them",
		},
		{
			name: "ICMP type name with ICMPv6",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol, rule(p).Ports = v1alpha1.ProtocolICMPv6, nil
				rule(p).ICMPTypes = []v1alpha1.ICMPType{"FragmentationNeeded"}
			},
			field: "spec.rules[0].icmpTypes",
			msg:   "icmpTypes of protocol ICMPv6 must be numbers, type or type/code, or ICMPv6 type names as ip6tables --icmpv6-type spells them",
		},
		{
			name: "ICMP type in iptables spelling",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol, rule(p).Ports = v1alpha1.ProtocolICMP, nil
				rule(p).ICMPTypes = []v1alpha1.ICMPType{"echo-request"}
			},
			field: "spec.rules[0].icmpTypes[0]",
			msg:   "should match",
		},
		{
			name: "ICMP type above 255",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol, rule(p).Ports = v1alpha1.ProtocolICMP, nil
				rule(p).ICMPTypes = []v1alpha1.ICMPType{"3/256"}
			},
			field: "spec.rules[0].icmpTypes[0]",
			msg:   "should match",
		},
		{
			name: "too many ICMP types",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol, rule(p).Ports = v1alpha1.ProtocolICMP, nil
				for i := range 17 {
					rule(p).ICMPTypes = append(rule(p).ICMPTypes, v1alpha1.ICMPType(fmt.Sprint(i)))
				}
			},
			field: "spec.rules[0].icmpTypes",
			msg:   "must have at most 16 items",
		},
		{
			name:  "rejectWith on Accept",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).RejectWith = v1alpha1.RejectWithAdminProhibited },
			field: "spec.rules[0].rejectWith",
			msg:   "rejectWith requires action Reject",
		},
		{
			name: "TCP reset on UDP",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Action, rule(p).Protocol = v1alpha1.ActionReject, v1alpha1.ProtocolUDP
				rule(p).RejectWith = v1alpha1.RejectWithTCPReset
			},
			field: "spec.rules[0].rejectWith",
			msg:   "rejectWith TCPReset requires protocol TCP",
		},
		{
			name: "unknown rejectWith in iptables spelling",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Action, rule(p).RejectWith = v1alpha1.ActionReject, "icmp-host-prohibited"
			},
			field: "spec.rules[0].rejectWith",
			msg:   "Unsupported value",
		},
		{
			name:  "limit without rate",
			raw:   func(obj map[string]any) { rawRule(obj)["limit"] = map[string]any{"per": "Second"} },
			field: "spec.rules[0].limit.rate",
			msg:   "Required value",
		},
		{
			name: "limit rate above 10000",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Limit = &v1alpha1.RateLimit{Rate: 10001, Per: v1alpha1.RateUnitSecond}
			},
			field: "spec.rules[0].limit.rate",
			msg:   "should be less than or equal to 10000",
		},
		{
			name: "limit rate 0",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Limit = &v1alpha1.RateLimit{Rate: 0, Per: v1alpha1.RateUnitSecond}
			},
			field: "spec.rules[0].limit.rate",
			msg:   "should be greater than or equal to 1",
		},
		{
			name:  "limit in iptables units",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Limit = &v1alpha1.RateLimit{Rate: 3, Per: "min"} },
			field: "spec.rules[0].limit.per",
			msg:   "Unsupported value",
		},
		{
			name: "limit burst above 10000",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Limit = &v1alpha1.RateLimit{Rate: 3, Per: v1alpha1.RateUnitMinute, Burst: 10001}
			},
			field: "spec.rules[0].limit.burst",
			msg:   "should be less than or equal to 10000",
		},
		{
			name: "limit with log",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Limit = &v1alpha1.RateLimit{Rate: 3, Per: v1alpha1.RateUnitMinute}
				rule(p).Log = true
			},
			field: "spec.rules[0].log",
			msg:   "log cannot be combined with limit",
		},
		{
			name:  "connLimit without above",
			raw:   func(obj map[string]any) { rawRule(obj)["connLimit"] = map[string]any{} },
			field: "spec.rules[0].connLimit.above",
			msg:   "Required value",
		},
		{
			name:  "connLimit above 65535",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).ConnLimit = &v1alpha1.ConnLimit{Above: 65536} },
			field: "spec.rules[0].connLimit.above",
			msg:   "should be less than or equal to 65535",
		},

		// Interfaces.
		{
			name: "inInterface on Output",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Chain = v1alpha1.ChainOutput
				rule(p).InInterface = "eth0"
			},
			field: "spec.rules[0].inInterface",
			msg:   "inInterface is not allowed on the Output chain",
		},
		{
			name:  "outInterface on Input",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).OutInterface = "eth0" },
			field: "spec.rules[0].outInterface",
			msg:   "outInterface is not allowed on the Input chain",
		},
		{
			name: "outInterface on PreRouting",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Chain = v1alpha1.ChainPreRouting
				rule(p).OutInterface = "eth0"
			},
			field: "spec.rules[0].outInterface",
			msg:   "outInterface is not allowed on the PreRouting chain: packets there are not routed yet",
		},
		{
			name:  "unknown chain PREROUTING",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Chain = "PREROUTING" },
			field: "spec.rules[0].chain",
			msg:   "Unsupported value",
		},
		{
			name: "unknown default action preRouting",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.DefaultActions = &v1alpha1.DefaultActions{PreRouting: "Reject"}
			},
			field: "spec.defaultActions.preRouting",
			msg:   "Unsupported value",
		},
		{
			name:  "logLabel without log",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).LogLabel = "scan" },
			field: "spec.rules[0].log",
			msg:   "logLabel, logRatePerMinute and logBurst require log: true",
		},
		{
			name:  "negative logRatePerMinute",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Log, rule(p).LogRatePerMinute = true, -1 },
			field: "spec.rules[0].logRatePerMinute",
			msg:   "should be greater than or equal to 1",
		},
		{
			name:  "logLabel with spaces",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Log, rule(p).LogLabel = true, "ssh scan" },
			field: "spec.rules[0].logLabel",
			msg:   "should match",
		},
		{
			name:  "interface name of 16 characters",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).InInterface = "abcdefghijklmnop" },
			field: "spec.rules[0].inInterface",
			msg:   "should match",
		},
		{
			name:  "interface name of 17 characters",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).InInterface = "abcdefghijklmnopq" },
			field: "spec.rules[0].inInterface",
			msg:   "may not be more than 16 bytes",
		},
		{
			name:  "interface name with space",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).InInterface = "eth 0" },
			field: "spec.rules[0].inInterface",
			msg:   "should match",
		},
		{
			name:  "interface name with slash",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).InInterface = "eth/0" },
			field: "spec.rules[0].inInterface",
			msg:   "should match",
		},
		{
			name: "interface wildcard in the middle",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Chain = v1alpha1.ChainOutput
				rule(p).OutInterface = "eth+0"
			},
			field: "spec.rules[0].outInterface",
			msg:   "should match",
		},
		{
			name: "interface wildcard doubled",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Chain = v1alpha1.ChainForward
				rule(p).OutInterface = "++"
			},
			field: "spec.rules[0].outInterface",
			msg:   "should match",
		},
		{
			name:  "interface name empty",
			raw:   func(obj map[string]any) { rawRule(obj)["inInterface"] = "" },
			field: "spec.rules[0].inInterface",
			msg:   "should match",
		},

		// Priority and size.
		{
			name: "priority -1",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.Priority = ptr.To[int32](-1)
			},
			field: "spec.priority",
			msg:   "should be greater than or equal to 0",
		},
		{
			name:  "priority 10001",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { p.Spec.Priority = ptr.To[int32](10001) },
			field: "spec.priority",
			msg:   "should be less than or equal to 10000",
		},
		{
			name:  "priority not a number",
			raw:   func(obj map[string]any) { rawSpec(obj)["priority"] = "high" },
			field: "spec.priority",
			msg:   "Invalid value",
		},
		{
			name:  "too many rules",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { p.Spec.Rules = rules(v1alpha1.MaxPolicyRules + 1) },
			field: "spec.rules",
			msg:   "must have at most 512 items",
		},

		// Required fields.
		{
			name:  "missing spec",
			raw:   func(obj map[string]any) { delete(obj, "spec") },
			field: "spec",
			msg:   "Required value",
		},
		{
			name:  "missing nodeSelector",
			raw:   func(obj map[string]any) { delete(rawSpec(obj), "nodeSelector") },
			field: "spec.nodeSelector",
			msg:   "Required value",
		},
		{
			name:  "missing chain",
			raw:   func(obj map[string]any) { delete(rawRule(obj), "chain") },
			field: "spec.rules[0].chain",
			msg:   "Required value",
		},
		{
			name:  "missing action",
			raw:   func(obj map[string]any) { delete(rawRule(obj), "action") },
			field: "spec.rules[0].action",
			msg:   "Required value",
		},
		{
			name:  "missing name",
			raw:   func(obj map[string]any) { delete(rawRule(obj), "name") },
			field: "spec.rules[0].name",
			msg:   "Required value",
		},

		// Rule names.
		{
			name:  "rule name uppercase",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Name = "SSH" },
			field: "spec.rules[0].name",
			msg:   "should match",
		},
		{
			name:  "rule name with trailing dash",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Name = "ssh-" },
			field: "spec.rules[0].name",
			msg:   "should match",
		},
		{
			name:  "rule name with dot",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Name = "ssh.v4" },
			field: "spec.rules[0].name",
			msg:   "should match",
		},
		{
			name:  "rule name empty",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Name = "" },
			field: "spec.rules[0].name",
			msg:   "should be at least 1 chars long",
		},
		{
			name:  "rule name too long",
			edit:  func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Name = strings.Repeat("a", 64) },
			field: "spec.rules[0].name",
			msg:   "may not be more than 63 bytes",
		},
		{
			name: "duplicate rule names",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				r := sshRule()
				r.Action = v1alpha1.ActionDrop
				p.Spec.Rules = append(p.Spec.Rules, r)
			},
			field: "spec.rules[1]",
			msg:   "Duplicate value",
		},
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := basePolicy(fmt.Sprintf("invalid-policy-%d", i))
			if tc.edit != nil {
				tc.edit(p)
			}
			obj := toUnstructured(t, p)
			if tc.raw != nil {
				tc.raw(obj)
			}
			wantInvalid(t, createRaw(t, obj), tc.field, tc.msg)
		})
	}
}

func TestNodeFirewallPolicyAcceptsValid(t *testing.T) {
	cases := []struct {
		name string
		edit func(p *v1alpha1.NodeFirewallPolicy)
		// dryRun validates without storing, for objects larger than
		// etcd stores.
		dryRun bool
	}{
		{
			name: "base",
			edit: func(*v1alpha1.NodeFirewallPolicy) {},
		},
		{
			name: "log with label and rate, logged default drops",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				r := rule(p)
				r.Log, r.LogLabel, r.LogRatePerMinute, r.LogBurst = true, "ssh-scan", 60000, 10000
				p.Spec.DefaultActions = &v1alpha1.DefaultActions{Input: v1alpha1.ChainPolicyDrop, LogDrops: true}
			},
		},
		{
			name: "IPv6 CIDRs and addresses",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Sources = []string{"fd00::/8", "2001:db8::1", "::/0", "2001:db8:0:0:0:0:0:1/128"}
				rule(p).Destinations = []string{"fe80::/10", "::1"}
			},
		},
		{
			name: "IPv4 CIDRs and addresses",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Sources = []string{"0.0.0.0/0", "10.244.0.0/16", "192.168.0.10"}
				rule(p).Destinations = []string{"192.168.0.10/32", "255.255.255.255"}
			},
		},
		{
			name: "longest IPv6 CIDR",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Sources = []string{"2001:0db8:0000:0000:0000:0000:0000:0001/128"}
			},
		},
		{
			name: "32 sources and destinations",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Sources = repeat(32, func(i int) string { return fmt.Sprintf("10.0.%d.0/24", i) })
				rule(p).Destinations = repeat(32, func(i int) string { return fmt.Sprintf("fd00::%x", i) })
			},
		},
		{
			name: "interface wildcard",
			edit: func(p *v1alpha1.NodeFirewallPolicy) { rule(p).InInterface = "eth+" },
		},
		{
			name: "interface wildcard alone",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Chain = v1alpha1.ChainOutput
				rule(p).OutInterface = "+"
			},
		},
		{
			name: "interface names on Forward",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Chain = v1alpha1.ChainForward
				rule(p).InInterface = "eth0.100"
				rule(p).OutInterface = "cni_0@if2:x-y"
			},
		},
		{
			name: "PreRouting rules of every action and a Drop default",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.DefaultActions = &v1alpha1.DefaultActions{PreRouting: v1alpha1.ChainPolicyDrop, Input: v1alpha1.ChainPolicyDrop}
				p.Spec.Rules = rules(3)
				for i, a := range []v1alpha1.Action{v1alpha1.ActionAccept, v1alpha1.ActionDrop, v1alpha1.ActionReject} {
					r := &p.Spec.Rules[i]
					r.Chain, r.Action = v1alpha1.ChainPreRouting, a
					r.Ports = []v1alpha1.PortRange{{Port: 30000 + int32(i), EndPort: 30100}}
					r.Sources = []string{"192.0.2.0/24", "2001:db8::/32"}
					r.Destinations = []string{"198.51.100.7"}
					r.InInterface = "eth+"
					r.States = []v1alpha1.ConnState{v1alpha1.ConnStateNew}
					r.Log = true
				}
			},
		},
		{
			name: "interface name of 15 characters and wildcard",
			edit: func(p *v1alpha1.NodeFirewallPolicy) { rule(p).InInterface = "abcdefghijklmno+" },
		},
		{
			name: "port range",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Ports = []v1alpha1.PortRange{{Port: 30000, EndPort: 32767}}
			},
		},
		{
			name: "port bounds",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol = v1alpha1.ProtocolUDP
				rule(p).Ports = []v1alpha1.PortRange{{Port: 1, EndPort: 65535}, {Port: 65535}, {Port: 53, EndPort: 53}}
			},
		},
		{
			name: "32 ports with SCTP",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol = v1alpha1.ProtocolSCTP
				rule(p).Ports = ports(32)
			},
		},
		{
			name: "ICMP without ports",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol = v1alpha1.ProtocolICMP
				rule(p).Ports = nil
				r := sshRule()
				r.Name = "icmpv6"
				r.Protocol = v1alpha1.ProtocolICMPv6
				r.Ports = nil
				p.Spec.Rules = append(p.Spec.Rules, r)
			},
		},
		{
			name: "any protocol",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol = ""
				rule(p).Ports = nil
				rule(p).Action = v1alpha1.ActionReject
			},
		},
		{
			name: "IP protocols by name and number",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Ports = nil
				for i, proto := range []v1alpha1.Protocol{"IGMP", "GRE", "ESP", "AH", "OSPF", "PIM", "VRRP", "L2TP", "4", "41", "255", "136"} {
					r := sshRule()
					r.Name, r.Protocol, r.Ports = fmt.Sprintf("proto-%d", i), proto, nil
					p.Spec.Rules = append(p.Spec.Rules, r)
				}
			},
		},
		{
			name: "source ports with and without destination ports",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).SourcePorts = []v1alpha1.SourcePortRange{{Port: 1024, EndPort: 65535}, {Port: 53}}
				r := sshRule()
				r.Name, r.Protocol, r.Ports = "dns-replies", v1alpha1.ProtocolUDP, nil
				r.SourcePorts = []v1alpha1.SourcePortRange{{Port: 53}}
				p.Spec.Rules = append(p.Spec.Rules, r)
			},
		},
		{
			name: "ICMP types by name, number and code",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Protocol, rule(p).Ports = v1alpha1.ProtocolICMP, nil
				rule(p).ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "FragmentationNeeded", "TimeExceeded", "TOSHostRedirect", "0", "3/4", "255/255"}
				r := sshRule()
				r.Name, r.Protocol, r.Ports = "icmpv6", v1alpha1.ProtocolICMPv6, nil
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest", "PacketTooBig", "NeighborSolicitation", "NeighbourAdvertisement", "1/4", "MLDListenerDone"}
				p.Spec.Rules = append(p.Spec.Rules, r)
			},
		},
		{
			name: "every ICMP and ICMPv6 type name",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.Rules = nil
				for _, proto := range []v1alpha1.Protocol{v1alpha1.ProtocolICMP, v1alpha1.ProtocolICMPv6} {
					names := v1alpha1.ICMPTypeNames(proto)
					for i := 0; i < len(names); i += 16 {
						r := sshRule()
						r.Name, r.Protocol, r.Ports = fmt.Sprintf("%s-%d", strings.ToLower(string(proto)), i), proto, nil
						for _, n := range names[i:min(i+16, len(names))] {
							r.ICMPTypes = append(r.ICMPTypes, v1alpha1.ICMPType(n))
						}
						p.Spec.Rules = append(p.Spec.Rules, r)
					}
				}
			},
		},
		{
			name: "every rejectWith",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.Rules = nil
				for _, rw := range []v1alpha1.RejectWith{"PortUnreachable", "TCPReset", "HostUnreachable", "AdminProhibited", "NetUnreachable"} {
					r := sshRule()
					r.Name, r.Action, r.RejectWith = strings.ToLower(string(rw)), v1alpha1.ActionReject, rw
					p.Spec.Rules = append(p.Spec.Rules, r)
				}
			},
		},
		{
			name: "limits",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).Limit = &v1alpha1.RateLimit{Rate: 10000, Per: v1alpha1.RateUnitSecond, Burst: 10000, PerSource: true}
				rule(p).ConnLimit = &v1alpha1.ConnLimit{Above: 3}
				r := sshRule()
				r.Name, r.Protocol, r.Ports = "ping", v1alpha1.ProtocolICMP, nil
				r.ICMPTypes = []v1alpha1.ICMPType{"EchoRequest"}
				r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: v1alpha1.RateUnitDay}
				p.Spec.Rules = append(p.Spec.Rules, r)
				r = sshRule()
				r.Name, r.Action, r.Log = "over", v1alpha1.ActionReject, true
				r.ConnLimit = &v1alpha1.ConnLimit{Above: 0}
				p.Spec.Rules = append(p.Spec.Rules, r)
			},
		},
		{
			name: "every state",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				rule(p).States = []v1alpha1.ConnState{
					v1alpha1.ConnStateNew, v1alpha1.ConnStateEstablished,
					v1alpha1.ConnStateRelated, v1alpha1.ConnStateInvalid,
				}
				rule(p).Log = true
			},
		},
		{
			name: "matchExpressions selector",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.NodeSelector = metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpDoesNotExist},
						{Key: "kubernetes.io/os", Operator: metav1.LabelSelectorOpIn, Values: []string{"linux"}},
					},
				}
			},
		},
		{
			name: "matchLabels selector",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/hostname": "node-1"}}
			},
		},
		{
			name: "no rules",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.Rules = nil
				p.Spec.DefaultActions = &v1alpha1.DefaultActions{
					Input:   v1alpha1.ChainPolicyDrop,
					Forward: v1alpha1.ChainPolicyDrop,
					Output:  v1alpha1.ChainPolicyAccept,
				}
			},
		},
		{
			name: "priority and mode bounds",
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.Priority = ptr.To[int32](10000)
				p.Spec.Mode = v1alpha1.PolicyModeAudit
			},
		},
		{
			name: "longest rule name",
			edit: func(p *v1alpha1.NodeFirewallPolicy) { rule(p).Name = strings.Repeat("a", 62) + "0" },
		},
		{
			name: "512 rules",
			edit: func(p *v1alpha1.NodeFirewallPolicy) { p.Spec.Rules = rules(v1alpha1.MaxPolicyRules) },
		},
		{
			// The largest policy the schema allows must also fit in the
			// CEL runtime cost budget of one request. At about 2 MB it
			// is more than etcd stores by default, so it is not stored.
			name:   "512 rules with every list full",
			dryRun: true,
			edit: func(p *v1alpha1.NodeFirewallPolicy) {
				p.Spec.Rules = rules(v1alpha1.MaxPolicyRules)
				for i := range p.Spec.Rules {
					r := &p.Spec.Rules[i]
					r.Chain = v1alpha1.ChainForward
					r.Ports = ports(32)
					r.Sources = repeat(32, func(j int) string { return fmt.Sprintf("2001:0db8:0000:0000:0000:0000:%04x:%04x/128", i, j) })
					r.Destinations = r.Sources
					r.InInterface = "abcdefghijklmno+"
					r.OutInterface = "abcdefghijklmno+"
					r.Action, r.RejectWith = v1alpha1.ActionReject, v1alpha1.RejectWithTCPReset
					r.Limit = &v1alpha1.RateLimit{Rate: 1, Per: v1alpha1.RateUnitSecond, PerSource: true}
					r.ConnLimit = &v1alpha1.ConnLimit{Above: 1}
					if i%2 == 0 {
						for _, pr := range ports(32) {
							r.SourcePorts = append(r.SourcePorts, v1alpha1.SourcePortRange{Port: pr.Port, EndPort: pr.EndPort})
						}
						continue
					}
					// ICMP rules carry the longest list CEL checks against names.
					r.Protocol, r.Ports, r.RejectWith = v1alpha1.ProtocolICMPv6, nil, v1alpha1.RejectWithAdminProhibited
					for _, n := range v1alpha1.ICMPTypeNames(v1alpha1.ProtocolICMPv6)[:16] {
						r.ICMPTypes = append(r.ICMPTypes, v1alpha1.ICMPType(n))
					}
				}
			},
		},
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := basePolicy(fmt.Sprintf("valid-policy-%d", i))
			tc.edit(p)
			want := p.Spec.DeepCopy()
			got := &v1alpha1.NodeFirewallPolicy{}
			if tc.dryRun {
				if err := k8sClient.Create(context.Background(), p, client.DryRunAll); err != nil {
					t.Fatalf("create: %v", err)
				}
				got = p
			} else {
				cleanup(t, p)
				if err := k8sClient.Create(context.Background(), p); err != nil {
					t.Fatalf("create: %v", err)
				}
				if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
					t.Fatalf("get: %v", err)
				}
			}
			// The API server keeps every field and fills in the defaults.
			if want.Priority == nil {
				want.Priority = ptr.To(v1alpha1.DefaultPriority)
			}
			if want.Mode == "" {
				want.Mode = v1alpha1.PolicyModeEnforce
			}
			if diff := cmp.Diff(*want, got.Spec); diff != "" {
				t.Errorf("stored spec differs (-sent +stored):\n%s", diff)
			}
		})
	}
}

func TestSamplesAreValid(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "firewall_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no samples in config/samples")
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			p := &v1alpha1.NodeFirewallPolicy{}
			if err := yaml.UnmarshalStrict(data, p); err != nil {
				t.Fatalf("parsing: %v", err)
			}
			if p.Kind != "NodeFirewallPolicy" || p.APIVersion != v1alpha1.GroupVersion.String() {
				t.Fatalf("sample is %s %s; want NodeFirewallPolicy %s", p.APIVersion, p.Kind, v1alpha1.GroupVersion)
			}
			want := p.Spec.DeepCopy()
			cleanup(t, p)
			if err := k8sClient.Create(context.Background(), p); err != nil {
				t.Fatalf("create: %v", err)
			}
			got := &v1alpha1.NodeFirewallPolicy{}
			if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), got); err != nil {
				t.Fatalf("get: %v", err)
			}
			if want.Mode == "" {
				want.Mode = v1alpha1.PolicyModeEnforce
			}
			if diff := cmp.Diff(*want, got.Spec); diff != "" {
				t.Errorf("stored spec differs (-sample +stored):\n%s", diff)
			}
		})
	}
}

func TestNodeFirewallPolicyDefaults(t *testing.T) {
	cases := []struct {
		name string
		spec map[string]any
		want v1alpha1.NodeFirewallPolicySpec
	}{
		{
			name: "omitted",
			spec: map[string]any{"nodeSelector": map[string]any{}},
			want: v1alpha1.NodeFirewallPolicySpec{Priority: ptr.To(v1alpha1.DefaultPriority), Mode: v1alpha1.PolicyModeEnforce},
		},
		{
			name: "explicit zero priority is kept",
			spec: map[string]any{"nodeSelector": map[string]any{}, "priority": int64(0), "mode": "Audit"},
			want: v1alpha1.NodeFirewallPolicySpec{Priority: ptr.To[int32](0), Mode: v1alpha1.PolicyModeAudit},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("defaults-%d", i)
			obj := map[string]any{
				"apiVersion": v1alpha1.GroupVersion.String(),
				"kind":       "NodeFirewallPolicy",
				"metadata":   map[string]any{"name": name},
				"spec":       tc.spec,
			}
			if err := createRaw(t, obj); err != nil {
				t.Fatalf("create: %v", err)
			}
			got := &v1alpha1.NodeFirewallPolicy{}
			if err := k8sClient.Get(context.Background(), types.NamespacedName{Name: name}, got); err != nil {
				t.Fatalf("get: %v", err)
			}
			if diff := cmp.Diff(tc.want, got.Spec); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPriorityFromTypedClient: a typed Go client sends priority 0 (the
// first place) and it is stored as 0, not dropped as an empty value and
// defaulted to 1000; leaving the field nil still gets the default.
func TestPriorityFromTypedClient(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		sent *int32
		want int32
	}{
		{"typed-priority-zero", ptr.To[int32](0), 0},
		{"typed-priority-unset", nil, v1alpha1.DefaultPriority},
		{"typed-priority-ten", ptr.To[int32](10), 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := basePolicy(tc.name)
			p.Spec.Priority = tc.sent
			cleanup(t, p)
			if err := k8sClient.Create(ctx, p); err != nil {
				t.Fatalf("create: %v", err)
			}
			got := &v1alpha1.NodeFirewallPolicy{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
				t.Fatalf("get: %v", err)
			}
			if got.Spec.Priority == nil || *got.Spec.Priority != tc.want {
				t.Errorf("stored priority %v, want %d", got.Spec.Priority, tc.want)
			}
			if got.Spec.EffectivePriority() != tc.want {
				t.Errorf("EffectivePriority() = %d, want %d", got.Spec.EffectivePriority(), tc.want)
			}
		})
	}
}

func TestNodeFirewallPolicyStatus(t *testing.T) {
	ctx := context.Background()
	p := basePolicy("status-policy")
	cleanup(t, p)
	if err := k8sClient.Create(ctx, p); err != nil {
		t.Fatalf("create: %v", err)
	}
	status := v1alpha1.NodeFirewallPolicyStatus{
		ObservedGeneration: p.Generation,
		MatchedNodes:       3,
		AppliedNodes:       2,
		FailedNodes:        1,
		Conditions: []metav1.Condition{{
			Type:               v1alpha1.ConditionReady,
			Status:             metav1.ConditionFalse,
			ObservedGeneration: p.Generation,
			LastTransitionTime: metav1.NewTime(time.Now().Truncate(time.Second)),
			Reason:             "ApplyFailed",
			Message:            "1 of 3 nodes failed",
		}},
	}
	p.Status = status
	if err := k8sClient.Status().Update(ctx, p); err != nil {
		t.Fatalf("status update: %v", err)
	}
	got := &v1alpha1.NodeFirewallPolicy{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	if diff := cmp.Diff(status, got.Status); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
}

func TestNodeFirewallStatusSubresource(t *testing.T) {
	ctx := context.Background()
	nf := baseNodeFirewall("node-1")
	nf.Status.RuleCount = 99 // ignored: status is a subresource
	spec := *nf.Spec.DeepCopy()
	cleanup(t, nf)
	if err := k8sClient.Create(ctx, nf); err != nil {
		t.Fatalf("create: %v", err)
	}
	got := &v1alpha1.NodeFirewall{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(nf), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	if diff := cmp.Diff(spec, got.Spec); diff != "" {
		t.Errorf("spec after create (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(v1alpha1.NodeFirewallStatus{}, got.Status); diff != "" {
		t.Errorf("status after create (-want +got):\n%s", diff)
	}
	generation := got.Generation

	applied := metav1.NewTime(time.Now().Truncate(time.Second))
	status := v1alpha1.NodeFirewallStatus{
		ObservedGeneration: generation,
		RuleCount:          1,
		LastAppliedTime:    &applied,
		Conditions: []metav1.Condition{{
			Type:               v1alpha1.ConditionReady,
			Status:             metav1.ConditionTrue,
			ObservedGeneration: generation,
			LastTransitionTime: applied,
			Reason:             "Applied",
			Message:            "ruleset applied",
		}},
	}
	got.Status = status
	got.Spec.Rules = nil // ignored: the status subresource does not write spec
	if err := k8sClient.Status().Update(ctx, got); err != nil {
		t.Fatalf("status update: %v", err)
	}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(nf), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	if diff := cmp.Diff(status, got.Status); diff != "" {
		t.Errorf("status after status update (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(spec, got.Spec); diff != "" {
		t.Errorf("spec after status update (-want +got):\n%s", diff)
	}
	if got.Generation != generation {
		t.Errorf("generation %d after status update; want %d", got.Generation, generation)
	}

	// A spec update does not write status, and bumps the generation.
	got.Spec.DefaultActions.Output = v1alpha1.ChainPolicyDrop
	got.Status.RuleCount = 7
	if err := k8sClient.Update(ctx, got); err != nil {
		t.Fatalf("update: %v", err)
	}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(nf), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	if diff := cmp.Diff(status, got.Status); diff != "" {
		t.Errorf("status after spec update (-want +got):\n%s", diff)
	}
	if got.Spec.DefaultActions.Output != v1alpha1.ChainPolicyDrop {
		t.Errorf("defaultActions.output %q after update; want Drop", got.Spec.DefaultActions.Output)
	}
	if got.Generation != generation+1 {
		t.Errorf("generation %d after spec update; want %d", got.Generation, generation+1)
	}

	// Status is validated too.
	bad := got.DeepCopy()
	bad.Status.Conditions[0].Status = "Maybe"
	wantInvalid(t, k8sClient.Status().Update(ctx, bad), "status.conditions[0].status", "Unsupported value")
}

func TestNodeFirewallRejectsInvalid(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(nf *v1alpha1.NodeFirewall)
		raw   func(obj map[string]any)
		field string
		msg   string
	}{
		{
			name: "endPort below port",
			edit: func(nf *v1alpha1.NodeFirewall) {
				nf.Spec.Rules[0].Ports = []v1alpha1.PortRange{{Port: 80}, {Port: 2380, EndPort: 2379}}
			},
			field: "spec.rules[0].ports[1].endPort",
			msg:   "endPort must not be below port",
		},
		{
			name:  "port 65536",
			edit:  func(nf *v1alpha1.NodeFirewall) { nf.Spec.Rules[0].Ports[0].Port = 65536 },
			field: "spec.rules[0].ports[0].port",
			msg:   "should be less than or equal to 65535",
		},
		{
			name:  "unknown chain",
			edit:  func(nf *v1alpha1.NodeFirewall) { nf.Spec.Rules[0].Chain = "Prerouting" },
			field: "spec.rules[0].chain",
			msg:   "Unsupported value",
		},
		{
			name:  "protocol with blanks",
			edit:  func(nf *v1alpha1.NodeFirewall) { nf.Spec.Rules[0].Protocol = "T CP" },
			field: "spec.rules[0].protocol",
			msg:   "should match",
		},
		{
			name: "source port 65536",
			edit: func(nf *v1alpha1.NodeFirewall) {
				nf.Spec.Rules[0].SourcePorts = []v1alpha1.SourcePortRange{{Port: 65536}}
			},
			field: "spec.rules[0].sourcePorts[0].port",
			msg:   "should be less than or equal to 65535",
		},
		{
			name: "ICMP type in iptables spelling",
			edit: func(nf *v1alpha1.NodeFirewall) {
				nf.Spec.Rules[0].Protocol, nf.Spec.Rules[0].Ports = v1alpha1.ProtocolICMP, nil
				nf.Spec.Rules[0].ICMPTypes = []v1alpha1.ICMPType{"echo-request"}
			},
			field: "spec.rules[0].icmpTypes[0]",
			msg:   "should match",
		},
		{
			name:  "unknown rejectWith",
			edit:  func(nf *v1alpha1.NodeFirewall) { nf.Spec.Rules[0].RejectWith = "tcp-reset" },
			field: "spec.rules[0].rejectWith",
			msg:   "Unsupported value",
		},
		{
			name:  "unknown limit unit",
			edit:  func(nf *v1alpha1.NodeFirewall) { nf.Spec.Rules[0].Limit = &v1alpha1.RateLimit{Rate: 1, Per: "sec"} },
			field: "spec.rules[0].limit.per",
			msg:   "Unsupported value",
		},
		{
			name:  "unknown mode",
			edit:  func(nf *v1alpha1.NodeFirewall) { nf.Spec.Rules[0].Mode = "enforce" },
			field: "spec.rules[0].mode",
			msg:   "Unsupported value",
		},
		{
			name:  "missing policy",
			raw:   func(obj map[string]any) { delete(rawRule(obj), "policy") },
			field: "spec.rules[0].policy",
			msg:   "Required value",
		},
		{
			name:  "unknown default action",
			edit:  func(nf *v1alpha1.NodeFirewall) { nf.Spec.DefaultActions.Forward = "Reject" },
			field: "spec.defaultActions.forward",
			msg:   "Unsupported value",
		},
		{
			name: "unknown audited chain",
			edit: func(nf *v1alpha1.NodeFirewall) {
				nf.Spec.AuditedChains = []v1alpha1.Chain{v1alpha1.ChainInput, "input"}
			},
			field: "spec.auditedChains[1]",
			msg:   "Unsupported value",
		},
		{
			name: "duplicate audited chain",
			edit: func(nf *v1alpha1.NodeFirewall) {
				nf.Spec.AuditedChains = []v1alpha1.Chain{v1alpha1.ChainOutput, v1alpha1.ChainOutput}
			},
			field: "spec.auditedChains[1]",
			msg:   "Duplicate value",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nf := baseNodeFirewall(fmt.Sprintf("invalid-node-%d", i))
			if tc.edit != nil {
				tc.edit(nf)
			}
			obj := toUnstructured(t, nf)
			if tc.raw != nil {
				tc.raw(obj)
			}
			wantInvalid(t, createRaw(t, obj), tc.field, tc.msg)
		})
	}
}

// TestNewPolicyReadsInProgress: a policy the controller has not written a
// status for yet is served with observedGeneration 0, which kstatus reads
// as InProgress, so that no status write is needed to say so.
func TestNewPolicyReadsInProgress(t *testing.T) {
	p := basePolicy("fresh-status")
	if err := k8sClient.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	cleanup(t, p)
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("NodeFirewallPolicy"))
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(p), u); err != nil {
		t.Fatal(err)
	}
	observed, found, err := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if err != nil || !found || observed != 0 {
		t.Fatalf("status.observedGeneration = %d (found %v, %v); want 0 served by default", observed, found, err)
	}
	res, err := kstatus.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != kstatus.InProgressStatus {
		t.Errorf("kstatus = %s (%q), want InProgress", res.Status, res.Message)
	}
}
