package v1alpha1_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

func TestProtocolNumber(t *testing.T) {
	tests := []struct {
		p    v1alpha1.Protocol
		n    uint8
		want bool
	}{
		{"TCP", 6, true}, {"ICMPv6", 58, true}, {"GRE", 47, true}, {"ESP", 50, true},
		{"VRRP", 112, true}, {"SCTP", 132, true}, {"4", 4, true}, {"41", 41, true},
		{"255", 255, true}, {"136", 136, true},
		{"", 0, false}, {"0", 0, false}, {"256", 0, false}, {"6", 0, false}, {"50", 0, false},
		{"041", 0, false}, {"tcp", 0, false}, {"-1", 0, false}, {"1000", 0, false},
	}
	for _, tt := range tests {
		n, ok := tt.p.Number()
		if n != tt.n || ok != tt.want {
			t.Errorf("%q.Number() = %d, %v; want %d, %v", tt.p, n, ok, tt.n, tt.want)
		}
	}
	for n := 1; n <= 255; n++ {
		p := v1alpha1.ProtocolFor(uint8(n))
		if got, ok := p.Number(); !ok || got != uint8(n) {
			t.Errorf("ProtocolFor(%d) = %q, whose number is %d, %v", n, p, got, ok)
		}
	}
}

func TestICMPTypeMessage(t *testing.T) {
	icmp, icmpv6 := v1alpha1.ProtocolICMP, v1alpha1.ProtocolICMPv6
	tests := []struct {
		p    v1alpha1.Protocol
		t    v1alpha1.ICMPType
		want v1alpha1.ICMPMessage
		ok   bool
	}{
		{icmp, "EchoRequest", v1alpha1.ICMPMessage{Type: 8, AnyCode: true}, true},
		{icmp, "FragmentationNeeded", v1alpha1.ICMPMessage{Type: 3, Code: 4}, true},
		{icmp, "TOSHostRedirect", v1alpha1.ICMPMessage{Type: 5, Code: 3}, true},
		{icmp, "NetworkUnreachable", v1alpha1.ICMPMessage{Type: 3, Code: 0}, true},
		{icmpv6, "EchoRequest", v1alpha1.ICMPMessage{Type: 128, AnyCode: true}, true},
		{icmpv6, "PacketTooBig", v1alpha1.ICMPMessage{Type: 2, AnyCode: true}, true},
		{icmpv6, "NeighborSolicitation", v1alpha1.ICMPMessage{Type: 135, AnyCode: true}, true},
		{icmpv6, "NoRoute", v1alpha1.ICMPMessage{Type: 1, Code: 0}, true},
		{icmp, "0", v1alpha1.ICMPMessage{Type: 0, AnyCode: true}, true},
		{icmp, "3/4", v1alpha1.ICMPMessage{Type: 3, Code: 4}, true},
		{icmpv6, "255/255", v1alpha1.ICMPMessage{Type: 255, Code: 255}, true},
		{icmp, "PacketTooBig", v1alpha1.ICMPMessage{}, false},
		{icmpv6, "FragmentationNeeded", v1alpha1.ICMPMessage{}, false},
		{icmp, "256", v1alpha1.ICMPMessage{}, false},
		{icmp, "03", v1alpha1.ICMPMessage{}, false},
		{icmp, "3/", v1alpha1.ICMPMessage{}, false},
		{icmp, "echo-request", v1alpha1.ICMPMessage{}, false},
		{v1alpha1.ProtocolTCP, "8", v1alpha1.ICMPMessage{}, false},
	}
	for _, tt := range tests {
		got, ok := tt.t.Message(tt.p)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%q.Message(%s) = %+v, %v; want %+v, %v", tt.t, tt.p, got, ok, tt.want, tt.ok)
		}
	}
	// Every name reads back, and a message is spelt by its first name.
	for _, p := range []v1alpha1.Protocol{icmp, icmpv6} {
		for _, name := range v1alpha1.ICMPTypeNames(p) {
			m, ok := v1alpha1.ICMPType(name).Message(p)
			if !ok {
				t.Fatalf("%s %s does not read", p, name)
			}
			back := v1alpha1.ICMPTypeFor(p, m)
			if m2, _ := back.Message(p); m2 != m {
				t.Errorf("%s %s: spelt %s, which is %+v", p, name, back, m2)
			}
		}
	}
	if got := v1alpha1.ICMPTypeFor(icmp, v1alpha1.ICMPMessage{Type: 3, Code: 8}); got != "3/8" {
		t.Errorf("ICMPTypeFor(3/8) = %s", got)
	}
	if got := v1alpha1.ICMPTypeFor(icmpv6, v1alpha1.ICMPMessage{Type: 200, AnyCode: true}); got != "200" {
		t.Errorf("ICMPTypeFor(200) = %s", got)
	}
}

// TestCELListsMatchTheTables reads the policy CRD's CEL rules of a rule and
// of its protocol: their lists
// of protocol names and numbers and of ICMP type names must be those of
// the Go tables the compiler and the importer read.
func TestCELListsMatchTheTables(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "firewall.nodefw.io_nodefirewallpolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &crd); err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, v := range crd.Spec.Versions {
		spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
		rule := spec.Properties["rules"].Items.Schema
		for _, r := range append(rule.XValidations, rule.Properties["protocol"].XValidations...) {
			rules = append(rules, r.Rule)
		}
	}
	cel := strings.Join(rules, "\n")
	list := func(re string) []string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(cel)
		if m == nil {
			t.Fatalf("no CEL list matching %s in the CRD", re)
		}
		var out []string
		for _, item := range strings.Split(m[1], ",") {
			out = append(out, strings.Trim(strings.TrimSpace(item), "'"))
		}
		return out
	}
	var names, numbers []string
	for p, n := range v1alpha1.ProtocolNumbers {
		names = append(names, string(p))
		numbers = append(numbers, strconv.Itoa(int(n)))
	}
	sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	if diff := cmp.Diff(sorted(names), sorted(list(`(?m)^self in \[([^\]]*)\]`))); diff != "" {
		t.Errorf("protocol names (-Go +CEL):\n%s", diff)
	}
	if diff := cmp.Diff(sorted(numbers), sorted(list(`int\(self\) in \[([0-9, ]*)\]`))); diff != "" {
		t.Errorf("protocol numbers (-Go +CEL):\n%s", diff)
	}
	for p, re := range map[v1alpha1.Protocol]string{
		v1alpha1.ProtocolICMP:   `orValue\(""\) == 'ICMP' && self\.icmpTypes\.all\(t, t\.matches\('\^\[0-9\]'\) \|\| t in \[([^\]]*)\]`,
		v1alpha1.ProtocolICMPv6: `orValue\(""\) == 'ICMPv6' && self\.icmpTypes\.all\(t, t\.matches\('\^\[0-9\]'\) \|\| t in \[([^\]]*)\]`,
	} {
		got := list(re)
		if diff := cmp.Diff(v1alpha1.ICMPTypeNames(p), got); diff != "" {
			t.Errorf("%s type names (-Go +CEL):\n%s", p, diff)
		}
	}
}
