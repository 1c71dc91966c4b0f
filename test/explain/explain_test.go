// Package explain checks the CRDs' OpenAPI descriptions, which is what
// `kubectl explain` prints: every field a user writes is described, and
// each rule field names the iptables option it stands for, so that users
// who know iptables find their way from `kubectl explain
// nodefirewallpolicy.spec.rules`.
package explain

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/nodefw/nodefw/internal/envtesting"
)

// crdDir holds the generated CRDs.
var crdDir = envtesting.CRDDir(filepath.Join("..", ".."))

// loadCRDs reads every CRD in config/crd/bases, by kind.
func loadCRDs(t *testing.T) map[string]*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	crds := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		crds[crd.Spec.Names.Kind] = crd
	}
	for _, kind := range []string{"NodeFirewallPolicy", "NodeFirewall"} {
		if crds[kind] == nil {
			t.Fatalf("no CRD for %s in %s", kind, crdDir)
		}
	}
	return crds
}

// schemas returns the OpenAPI schema of every version of a CRD.
func schemas(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition) map[string]*apiextensionsv1.JSONSchemaProps {
	t.Helper()
	out := map[string]*apiextensionsv1.JSONSchemaProps{}
	for _, v := range crd.Spec.Versions {
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			t.Fatalf("%s %s: no schema", crd.Name, v.Name)
		}
		out[v.Name] = v.Schema.OpenAPIV3Schema
	}
	return out
}

// walk calls f for every named property under s, with its path as
// `kubectl explain` spells it (array items are transparent).
func walk(path string, s *apiextensionsv1.JSONSchemaProps, f func(path string, s *apiextensionsv1.JSONSchemaProps)) {
	names := make([]string, 0, len(s.Properties))
	for n := range s.Properties {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := s.Properties[n]
		f(path+"."+n, &p)
		walk(path+"."+n, &p, f)
	}
	if s.Items != nil && s.Items.Schema != nil {
		walk(path, s.Items.Schema, f)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		walk(path, s.AdditionalProperties.Schema, f)
	}
}

func TestEverySpecFieldIsDescribed(t *testing.T) {
	for kind, crd := range loadCRDs(t) {
		for version, root := range schemas(t, crd) {
			spec, ok := root.Properties["spec"]
			if !ok {
				t.Errorf("%s %s: no spec", kind, version)
				continue
			}
			prefix := strings.ToLower(kind)
			if strings.TrimSpace(spec.Description) == "" {
				t.Errorf("%s.spec (%s): no description", prefix, version)
			}
			n := 0
			walk(prefix+".spec", &spec, func(path string, s *apiextensionsv1.JSONSchemaProps) {
				n++
				if strings.TrimSpace(s.Description) == "" {
					t.Errorf("%s (%s): no description", path, version)
				}
			})
			// An address set's spec is its one list; the other kinds have many fields.
			least := 5
			if kind == "NodeFirewallAddressSet" {
				least = 1
			}
			if n < least {
				t.Errorf("%s %s: only %d fields under spec: is the schema complete?", kind, version, n)
			}
		}
	}
}

func TestEveryStatusFieldIsDescribed(t *testing.T) {
	for kind, crd := range loadCRDs(t) {
		for version, root := range schemas(t, crd) {
			st, ok := root.Properties["status"]
			if !ok {
				t.Errorf("%s %s: no status", kind, version)
				continue
			}
			walk(strings.ToLower(kind)+".status", &st, func(path string, s *apiextensionsv1.JSONSchemaProps) {
				if strings.TrimSpace(s.Description) == "" {
					t.Errorf("%s (%s): no description", path, version)
				}
			})
		}
	}
}

// mentions reports whether desc names tok as a whole word or option: "-s"
// matches "(`-s`)" but not "--sport" or "rules-s".
func mentions(desc, tok string) bool {
	re := regexp.MustCompile(`(^|[^A-Za-z0-9-])` + regexp.QuoteMeta(tok) + `([^A-Za-z0-9-]|$)`)
	return re.MatchString(desc)
}

// counterparts are the iptables options and targets each field stands for;
// a description must mention at least one of a field's.
var counterparts = map[string][]string{
	"protocol":     {"-p"},
	"ports":        {"--dport"},
	"sources":      {"-s"},
	"destinations": {"-d"},
	"inInterface":  {"-i"},
	"outInterface": {"-o"},
	"states":       {"--ctstate"},
	"chain":        {"INPUT"},
	"action":       {"ACCEPT", "REJECT"},
	"sourcePorts":  {"--sport"},
	"icmpTypes":    {"--icmp-type"},
	"rejectWith":   {"--reject-with"},
	"limit":        {"hashlimit"},
	"connLimit":    {"--connlimit-above"},
}

// field returns the schema at a dotted path below root; array items are
// transparent, as in `kubectl explain`.
func field(t *testing.T, root *apiextensionsv1.JSONSchemaProps, path string) *apiextensionsv1.JSONSchemaProps {
	t.Helper()
	s := root
	for _, name := range strings.Split(path, ".") {
		for s.Items != nil && s.Items.Schema != nil {
			s = s.Items.Schema
		}
		p, ok := s.Properties[name]
		if !ok {
			t.Fatalf("no field %s (missing %q)", path, name)
		}
		s = &p
	}
	return s
}

func TestPolicyRuleFieldsNameTheirIptablesCounterparts(t *testing.T) {
	crd := loadCRDs(t)["NodeFirewallPolicy"]
	for version, root := range schemas(t, crd) {
		rules := field(t, root, "spec.rules")
		for name, toks := range counterparts {
			checkMentions(t, version, "nodefirewallpolicy.spec.rules."+name, field(t, rules, name).Description, toks)
		}
		// Each of several counterparts, where a field has more than one.
		for _, c := range []struct{ path, tok string }{
			{"ports.port", "--dport"},
			{"ports.endPort", "--dport"},
			{"states", "conntrack"},
			{"chain", "FORWARD"},
			{"chain", "OUTPUT"},
			{"chain", "PREROUTING"},
			{"action", "DROP"},
			{"action", "REJECT"},
			{"sourcePorts.port", "--sport"},
			{"sourcePorts.endPort", "--sport"},
			{"icmpTypes", "--icmpv6-type"},
			{"limit", "-m limit"},
			{"limit.rate", "--limit"},
			{"limit.burst", "--limit-burst"},
			{"limit.perSource", "srcip"},
		} {
			checkMentions(t, version, "nodefirewallpolicy.spec.rules."+c.path, field(t, rules, c.path).Description, []string{c.tok})
		}
		for path, toks := range map[string][]string{
			"spec.defaultActions":            {"-P"},
			"spec.defaultActions.input":      {"INPUT"},
			"spec.defaultActions.forward":    {"FORWARD"},
			"spec.defaultActions.output":     {"OUTPUT"},
			"spec.defaultActions.preRouting": {"PREROUTING"},
		} {
			checkMentions(t, version, "nodefirewallpolicy."+path, field(t, root, path).Description, toks)
		}
	}
}

// TestNodeFirewallRuleFieldsNameTheirIptablesCounterparts covers the match
// fields of the resolved rules in NodeFirewall, which users read when they
// debug a node (`kubectl explain nodefirewall.spec.rules`).
func TestNodeFirewallRuleFieldsNameTheirIptablesCounterparts(t *testing.T) {
	crd := loadCRDs(t)["NodeFirewall"]
	for version, root := range schemas(t, crd) {
		rules := field(t, root, "spec.rules")
		for _, name := range []string{"protocol", "ports", "sources", "destinations", "inInterface", "outInterface", "states",
			"sourcePorts", "icmpTypes", "rejectWith", "limit", "connLimit"} {
			checkMentions(t, version, "nodefirewall.spec.rules."+name, field(t, rules, name).Description, counterparts[name])
		}
	}
}

func checkMentions(t *testing.T, version, path, desc string, toks []string) {
	t.Helper()
	for _, tok := range toks {
		if mentions(desc, tok) {
			return
		}
	}
	t.Errorf("%s (%s): description does not mention %s:\n%s", path, version, strings.Join(toks, " or "), desc)
}

func TestMentions(t *testing.T) {
	for _, tt := range []struct {
		desc, tok string
		want      bool
	}{
		{"source addresses (`-s`), IPv4", "-s", true},
		{"-s at the start", "-s", true},
		{"destination ports (`--dport`, or", "--dport", true},
		{"(`--dport port:endPort`)", "--dport", true},
		{"source port (`--sport`)", "-s", false},
		{"rules-s", "-s", false},
		{"Accept (ACCEPT), Drop (DROP)", "ACCEPT", true},
		{"ACCEPTED", "ACCEPT", false},
	} {
		if got := mentions(tt.desc, tt.tok); got != tt.want {
			t.Errorf("mentions(%q, %q) = %v, want %v", tt.desc, tt.tok, got, tt.want)
		}
	}
}

// TestFailsafeFieldsNameTheirIptablesCounterparts: the failsafes of the
// NodeFirewallConfig read like policy rules (`kubectl explain
// nodefirewallconfig.spec.failsafes.inbound`).
func TestFailsafeFieldsNameTheirIptablesCounterparts(t *testing.T) {
	crd := loadCRDs(t)["NodeFirewallConfig"]
	if crd == nil {
		t.Fatal("no CRD for NodeFirewallConfig")
	}
	for version, root := range schemas(t, crd) {
		for _, list := range []string{"inbound", "outbound"} {
			entries := field(t, root, "spec.failsafes."+list)
			for name, toks := range map[string][]string{"protocol": {"-p"}, "ports": {"--dport"}, "sources": {"-s"}, "destinations": {"-d"}} {
				checkMentions(t, version, "nodefirewallconfig.spec.failsafes."+list+"."+name, field(t, entries, name).Description, toks)
			}
		}
	}
}
