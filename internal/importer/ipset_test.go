package importer

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

func addressSet(name string, addrs ...string) *v1alpha1.NodeFirewallAddressSet {
	s := &v1alpha1.NodeFirewallAddressSet{}
	s.APIVersion, s.Kind, s.Name = v1alpha1.GroupVersion.String(), "NodeFirewallAddressSet", name
	for _, a := range addrs {
		s.Spec.Addresses = append(s.Spec.Addresses, v1alpha1.AddressSetEntry(a))
	}
	return s
}

// TestImportMatchSet covers -m set --match-set on its own, without an
// ipset file: a set of addresses matched on one side is a peer, anything
// else is reported and skipped.
func TestImportMatchSet(t *testing.T) {
	const (
		in   = v1alpha1.ChainInput
		out  = v1alpha1.ChainOutput
		drop = v1alpha1.ActionDrop
	)
	needs := func(raw, name string) string {
		return "set " + raw + " imported as a reference to NodeFirewallAddressSet " + name + ", which must exist in the cluster and hold the set's addresses (give the ipset save output to import it)"
	}
	tests := []struct {
		name      string
		input     string
		wantRules []v1alpha1.Rule
		want      []Warning
	}{{
		name:      "src becomes from",
		input:     "-A INPUT -m set --match-set blocklist src -j DROP\n",
		wantRules: []v1alpha1.Rule{{Name: "input-from-blocklist-drop", Chain: in, Action: drop, From: []v1alpha1.Peer{{AddressSet: "blocklist"}}}},
		want:      []Warning{{Line: 1, Text: "-A INPUT -m set --match-set blocklist src -j DROP", Reason: needs("blocklist", "blocklist")}},
	}, {
		name:      "dst becomes to, with ports",
		input:     "-A OUTPUT -p tcp -m tcp --dport 443 -m set --match-set partners dst -j ACCEPT\n",
		wantRules: []v1alpha1.Rule{{Name: "output-tcp-443-to-partners", Chain: out, Action: v1alpha1.ActionAccept, Protocol: v1alpha1.ProtocolTCP, Ports: ports(443, 0), To: []v1alpha1.Peer{{AddressSet: "partners"}}}},
		want:      []Warning{{Line: 1, Text: "-A OUTPUT -p tcp -m tcp --dport 443 -m set --match-set partners dst -j ACCEPT", Reason: needs("partners", "partners")}},
	}, {
		name:      "both sides",
		input:     "-A OUTPUT -m set --match-set a src -m set --match-set b dst -j DROP\n",
		wantRules: []v1alpha1.Rule{{Name: "output-from-a-to-b-drop", Chain: out, Action: drop, From: []v1alpha1.Peer{{AddressSet: "a"}}, To: []v1alpha1.Peer{{AddressSet: "b"}}}},
		want: []Warning{
			{Line: 1, Text: "-A OUTPUT -m set --match-set a src -m set --match-set b dst -j DROP", Reason: needs("a", "a")},
			{Line: 1, Text: "-A OUTPUT -m set --match-set a src -m set --match-set b dst -j DROP", Reason: needs("b", "b")},
		},
	}, {
		name:      "upper case lowered when unambiguous",
		input:     "-A INPUT -m set --match-set Office src -j DROP\n",
		wantRules: []v1alpha1.Rule{{Name: "input-from-office-drop", Chain: in, Action: drop, From: []v1alpha1.Peer{{AddressSet: "office"}}}},
		want:      []Warning{{Line: 1, Text: "-A INPUT -m set --match-set Office src -j DROP", Reason: needs("Office", "office")}},
	}, {
		name:      "upper case ambiguous",
		input:     "-A INPUT -m set --match-set Office src -j DROP\n-A INPUT -m set --match-set office dst -j DROP\n",
		wantRules: []v1alpha1.Rule{{Name: "input-to-office-drop", Chain: in, Action: drop, To: []v1alpha1.Peer{{AddressSet: "office"}}}},
		want: []Warning{
			{Line: 1, Text: "-A INPUT -m set --match-set Office src -j DROP", Reason: "set name Office is not a valid Kubernetes name, and its lower-case office is also the lower-case of set office: rename one of them"},
			{Line: 2, Text: "-A INPUT -m set --match-set office dst -j DROP", Reason: needs("office", "office")},
		},
	}, {
		name:  "invalid name",
		input: "-A INPUT -m set --match-set bad_name src -j DROP\n",
		want:  []Warning{{Line: 1, Text: "-A INPUT -m set --match-set bad_name src -j DROP", Reason: "set name bad_name is not a valid Kubernetes name (a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')): rename the set"}},
	}, {
		name:  "negated",
		input: "-A INPUT -m set ! --match-set office src -j DROP\n",
		want:  []Warning{{Line: 1, Text: "-A INPUT -m set ! --match-set office src -j DROP", Reason: "! --match-set is not supported: a peer cannot match addresses outside an address set"}},
	}, {
		name:  "two dimensions",
		input: "-A INPUT -m set --match-set svc src,dst -j DROP\n",
		want:  []Warning{{Line: 1, Text: "-A INPUT -m set --match-set svc src,dst -j DROP", Reason: "--match-set svc src,dst is not supported: only sets of addresses matched by src or dst; a set of several dimensions (ports, interfaces) cannot be a peer"}},
	}, {
		name:  "two sets on one side",
		input: "-A INPUT -m set --match-set a src -m set --match-set b src -j DROP\n",
		want:  []Warning{{Line: 1, Text: "-A INPUT -m set --match-set a src -m set --match-set b src -j DROP", Reason: "option --match-set given twice"}},
	}, {
		name:  "with -s",
		input: "-A INPUT -s 10.0.0.0/8 -m set --match-set a src -j DROP\n",
		want:  []Warning{{Line: 1, Text: "-A INPUT -s 10.0.0.0/8 -m set --match-set a src -j DROP", Reason: "-s with --match-set src is not supported: a rule takes addresses or an address set, not both"}},
	}, {
		name:  "without -m set",
		input: "-A INPUT --match-set a src -j DROP\n",
		want:  []Warning{{Line: 1, Text: "-A INPUT --match-set a src -j DROP", Reason: "--match-set needs -m set"}},
	}, {
		name:  "set options",
		input: "-A INPUT -m set --match-set a src --return-nomatch -j DROP\n",
		want:  []Warning{{Line: 1, Text: "-A INPUT -m set --match-set a src --return-nomatch -j DROP", Reason: "option --return-nomatch is not supported"}},
	}, {
		name:  "jump and rule both on sets",
		input: "-N X\n-A INPUT -m set --match-set a src -j X\n-A X -m set --match-set b src -j DROP\n",
		want: []Warning{
			{Line: 2, Text: "-A INPUT -m set --match-set a src -j X", Reason: needs("a", "a")},
			{Line: 3, Text: "-A X -m set --match-set b src -j DROP", Reason: "the jump and the rule both match an address set on the same side: a rule has one"},
		},
	}, {
		name:      "jump on a set into a chain on ports",
		input:     "-N X\n-A INPUT -m set --match-set a src -j X\n-A X -p tcp --dport 22 -j DROP\n",
		wantRules: []v1alpha1.Rule{{Name: "input-tcp-22-from-a-drop", Chain: in, Action: drop, Protocol: v1alpha1.ProtocolTCP, Ports: ports(22, 0), From: []v1alpha1.Peer{{AddressSet: "a"}}}},
		want:      []Warning{{Line: 2, Text: "-A INPUT -m set --match-set a src -j X", Reason: needs("a", "a")}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Import(strings.NewReader(tt.input), Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, tt.input, res)
			if d := cmp.Diff(tt.wantRules, res.Policy.Spec.Rules); d != "" {
				t.Errorf("rules (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.want, withoutImplicitAcceptWarnings(res.Warnings)); d != "" {
				t.Errorf("warnings (-want +got):\n%s", d)
			}
			if res.AddressSets != nil {
				t.Errorf("address sets without an ipset file: %v", res.AddressSets)
			}
		})
	}
}

// TestImportIPSet covers the ipset file: its sets of addresses become
// NodeFirewallAddressSets, and the rules naming the others are skipped.
func TestImportIPSet(t *testing.T) {
	const rules = `-A INPUT -m set --match-set office src -j ACCEPT
-A INPUT -m set --match-set Blocklist6 src -j DROP
-A INPUT -m set --match-set svc dst -j DROP
-A INPUT -m set --match-set dynamic src -j DROP
-A OUTPUT -m set --match-set elsewhere dst -j DROP
`
	const ipsets = `create office hash:net family inet hashsize 1024 maxelem 65536
add office 192.0.2.0/24
add office 198.51.100.7
add office 203.0.113.9/16 comment "branch"
create Blocklist6 hash:ip family inet6 hashsize 1024 maxelem 65536 counters
add Blocklist6 2001:db8::1 packets 0 bytes 0
add Blocklist6 10.0.0.1
create svc hash:ip,port family inet hashsize 1024 maxelem 65536
add svc 10.0.0.1,tcp:80
create dynamic hash:ip family inet timeout 600
add dynamic 192.0.2.1 timeout 321
create excepts hash:net family inet
add excepts 10.0.0.0/8
add excepts 10.1.0.0/16 nomatch
add excepts 10.2.0.0-10.2.0.9
create masked hash:ip family inet netmask 24
add masked 192.0.2.0
add nowhere 192.0.2.1
flush office
`
	res, err := Import(strings.NewReader(rules), Options{IPSet: strings.NewReader(ipsets)})
	if err != nil {
		t.Fatal(err)
	}
	wantRules := []v1alpha1.Rule{
		{Name: "input-from-office", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionAccept, From: []v1alpha1.Peer{{AddressSet: "office"}}},
		{Name: "input-from-blocklist6-drop", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, From: []v1alpha1.Peer{{AddressSet: "blocklist6"}}},
		{Name: "input-from-dynamic-drop", Chain: v1alpha1.ChainInput, Action: v1alpha1.ActionDrop, From: []v1alpha1.Peer{{AddressSet: "dynamic"}}},
		{Name: "output-to-elsewhere-drop", Chain: v1alpha1.ChainOutput, Action: v1alpha1.ActionDrop, To: []v1alpha1.Peer{{AddressSet: "elsewhere"}}},
	}
	if d := cmp.Diff(wantRules, res.Policy.Spec.Rules); d != "" {
		t.Errorf("rules (-want +got):\n%s", d)
	}
	wantSets := []*v1alpha1.NodeFirewallAddressSet{
		addressSet("office", "192.0.2.0/24", "198.51.100.7", "203.0.0.0/16"),
		addressSet("blocklist6", "2001:db8::1"),
		addressSet("dynamic", "192.0.2.1"),
		addressSet("excepts", "10.0.0.0/8"),
	}
	if d := cmp.Diff(wantSets, res.AddressSets); d != "" {
		t.Errorf("address sets (-want +got):\n%s", d)
	}
	lines := strings.Split(rules, "\n")
	ilines := strings.Split(ipsets, "\n")
	timeout := "entries expire after 600s in ipset, and rules or daemons may add them at run time; nodefw keeps those saved, for good"
	svc := "of type hash:ip,port: only hash:ip and hash:net sets of addresses become NodeFirewallAddressSets"
	want := []Warning{
		{Line: 2, Text: lines[1], Reason: "set Blocklist6 is imported with a change: entries of the set were skipped (see the ipset warnings)"},
		{Line: 3, Text: lines[2], Reason: "set svc is not imported: " + svc},
		{Line: 4, Text: lines[3], Reason: "set dynamic is imported with a change: " + timeout},
		{Line: 5, Text: lines[4], Reason: "set elsewhere is not in the ipset file: NodeFirewallAddressSet elsewhere must exist in the cluster"},
		{Source: SourceIPSet, Line: 7, Text: ilines[6], Reason: "entry skipped: 10.0.0.1 is not of the set's family inet6"},
		{Source: SourceIPSet, Line: 8, Text: ilines[7], Reason: "set svc is " + svc},
		{Source: SourceIPSet, Line: 10, Text: ilines[9], Reason: "set dynamic has a timeout: " + timeout},
		{Source: SourceIPSet, Line: 12, Text: ilines[11], Reason: "set excepts has nomatch entries: the NodeFirewallAddressSet holds its other entries, and every rule naming it carves [10.1.0.0/16] out as the peer's except; a reference written by hand needs the same except", Exact: true},
		{Source: SourceIPSet, Line: 15, Text: ilines[14], Reason: "entry skipped: range 10.2.0.0-10.2.0.9 is not supported: only addresses and CIDRs"},
		{Source: SourceIPSet, Line: 16, Text: ilines[15], Reason: "set masked not imported: netmask 24: entries stand for networks of that size, not supported"},
		{Source: SourceIPSet, Line: 18, Text: ilines[17], Reason: "set nowhere is added to before it is created: skipped"},
		{Source: SourceIPSet, Line: 19, Text: ilines[18], Reason: "ipset command flush is not supported: only create and add, as ipset save prints them"},
	}
	if d := cmp.Diff(want, withoutImplicitAcceptWarnings(res.Warnings)); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
	if d := cmp.Diff(Summary{Rules: 5, Imported: 4, Changed: 3, Skipped: 1, Differences: 2}, res.Summary); d != "" {
		t.Errorf("summary (-want +got):\n%s", d)
	}
}

// TestIPSetTooLarge: a set larger than one NodeFirewallAddressSet holds
// is reported, and the rules naming it skipped.
func TestIPSetTooLarge(t *testing.T) {
	var b strings.Builder
	b.WriteString("create big hash:ip family inet\n")
	for i := range v1alpha1.MaxAddressSetEntries + 1 {
		b.WriteString("add big 10.")
		fmt.Fprintf(&b, "%d.%d.%d", i>>16, i>>8&255, i&255)
		b.WriteString("\n")
	}
	res, err := Import(strings.NewReader("-A INPUT -m set --match-set big src -j DROP\n"), Options{IPSet: strings.NewReader(b.String())})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Policy.Spec.Rules) != 0 || len(res.AddressSets) != 0 {
		t.Errorf("rules %v, sets %d: want none", res.Policy.Spec.Rules, len(res.AddressSets))
	}
	if res.Summary.Skipped != 1 {
		t.Errorf("summary %+v: want the rule skipped", res.Summary)
	}
}

// TestWriteAddressSetYAML checks the document written after the policy.
func TestWriteAddressSetYAML(t *testing.T) {
	var b bytes.Buffer
	if err := WriteAddressSetYAML(&b, addressSet("office", "192.0.2.0/24", "2001:db8::/32")); err != nil {
		t.Fatal(err)
	}
	want := `---
apiVersion: firewall.nodefw.io/v1alpha1
kind: NodeFirewallAddressSet
metadata:
  name: office
spec:
  addresses:
  - 192.0.2.0/24
  - 2001:db8::/32
`
	if d := cmp.Diff(want, b.String()); d != "" {
		t.Errorf("YAML (-want +got):\n%s", d)
	}
}

// FuzzIPSet checks that an ipset file never makes Import panic, and that
// every set written has a valid name and only addresses and CIDRs of its
// entries, each warning a line of the file.
//
//	go test ./internal/importer/ -run '^$' -fuzz FuzzIPSet -fuzztime 30s -fuzzminimizetime 5s
func FuzzIPSet(f *testing.F) {
	for _, s := range []string{
		"create office hash:net family inet hashsize 1024 maxelem 65536\nadd office 192.0.2.0/24\nadd office 10.1.0.0/16 nomatch\n",
		"create B6 hash:ip family inet6 timeout 60 counters\nadd B6 2001:db8::1 timeout 5 packets 1 bytes 2\nadd B6 10.0.0.1\n",
		"create p bitmap:port range 0-65535\nadd p 22\ncreate m hash:ip netmask 24\nadd x 1.2.3.4\nflush\n",
		"add office \"unterminated\ncreate a_b hash:net\nadd a_b 10.0.0.0-10.0.0.9\n",
	} {
		f.Add("-A INPUT -m set --match-set office src -j DROP\n-A INPUT -m set --match-set B6 dst -j DROP\n", s)
	}
	f.Fuzz(func(t *testing.T, rules, ipsets string) {
		res, err := Import(strings.NewReader(rules), Options{IPSet: strings.NewReader(ipsets)})
		if err != nil {
			return // an over-long line
		}
		nlines := strings.Count(ipsets, "\n") + 1
		for _, w := range res.Warnings {
			if w.Source == SourceIPSet && (w.Line < 1 || w.Line > nlines || w.Reason == "") {
				t.Errorf("bad warning %+v", w)
			}
		}
		for _, s := range res.AddressSets {
			if !namePattern.MatchString(strings.ReplaceAll(s.Name, ".", "-")) {
				t.Errorf("set name %q is not valid", s.Name)
			}
			for _, a := range s.Spec.Addresses {
				if _, reason := normalizeAddress(string(a)); reason != "" {
					t.Errorf("set %s: %s", s.Name, reason)
				}
			}
		}
	})
}
