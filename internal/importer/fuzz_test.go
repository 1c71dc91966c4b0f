package importer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodefw/nodefw/api/v1alpha1"
)

// FuzzImport checks that Import never panics, accepts any input that has
// no over-long line, is deterministic, and produces a policy that passes
// the API's checks and survives a JSON round trip. New inputs are
// minimized before they are counted, so bound that when fuzzing briefly:
//
//	go test ./internal/importer/ -run '^$' -fuzz FuzzImport -fuzztime 30s -fuzzminimizetime 5s
func FuzzImport(f *testing.F) {
	for _, s := range []string{
		seedRules,
		seedNAT,
		saveFile,
		savedPreRouting,
		"-t raw -P PREROUTING DROP\n-t mangle -A PREROUTING -m addrtype ! --dst-type LOCAL -j ACCEPT\n-t mangle -F PREROUTING\n",
		"",
		"*filter\n:INPUT DROP [0:0]\nCOMMIT\n",
		"-I INPUT 1 -p tcp --dport 1 -j ACCEPT\n-I INPUT 3 -j DROP\n",
		"-A INPUT -p tcp -m multiport --dports 1:2,3,4:65535 -m comment --comment \"x\" -j REJECT --reject-with tcp-reset\n",
		"iptables -A INPUT \\\n -s 10.0.0.0/255.255.0.0 -i eth+ -j ACCEPT\n",
		"-A INPUT -s ! 1.2.3.4 -m state --state NEW,NEW,INVALID -j DROP\n",
		"-A FORWARD -i + -o cali+ -d ::1,fe80::/10 -p ipv6-icmp -j ACCEPT\n",
		"[1:2] -A OUTPUT -p sctp --dport :9 -j DROP\n-F\n-P OUTPUT DROP\n",
		"-A INPUT -m comment --comment '\\\"' -j ACCEPT \"\n",
		"-A INPUT -m set --match-set Office src -p tcp --dport 22 -j ACCEPT\n-A OUTPUT -m set --match-set office dst -j DROP\n",
		"-N X\n-A INPUT -m set --match-set a src -j X\n-A X -m set ! --match-set b dst -j DROP\n-A X -m set --match-set c src,dst -j DROP\n",
		"-A FORWARD -s 10.0.0.0/8 -m set --match-set a src -j DROP\n-A FORWARD -m set --match-set a_b dst --return-nomatch -j DROP\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, input string) {
		res, err := Import(strings.NewReader(input), Options{Name: "fuzz"})
		if err != nil {
			for _, l := range strings.Split(input, "\n") {
				if len(l) > maxLineBytes/2 {
					return
				}
			}
			t.Fatalf("Import: %v", err)
		}
		checkResult(t, input, res)
		if res.Policy.Name != "fuzz" {
			t.Errorf("policy name %q", res.Policy.Name)
		}

		again, err := Import(strings.NewReader(input), Options{Name: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(res, again); diff != "" {
			t.Fatalf("Import is not deterministic (-first +second):\n%s", diff)
		}

		// WriteYAML is JSON underneath; a JSON round trip checks that
		// nothing is lost, at a fraction of the cost (TestWriteYAML
		// covers the YAML itself).
		j, err := json.Marshal(res.Policy)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back v1alpha1.NodeFirewallPolicy
		if err := json.Unmarshal(j, &back); err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		if diff := cmp.Diff(res.Policy, &back); diff != "" {
			t.Fatalf("JSON round trip mismatch (-want +got):\n%s", diff)
		}
	})
}
