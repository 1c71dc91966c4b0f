package policytest

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// sgr matches an ANSI colour escape.
var sgr = regexp.MustCompile("\x1b\\[[0-9;]*m")

func webResults(t *testing.T) []Result {
	t.Helper()
	f, err := ParseFile([]byte(webTests))
	if err != nil {
		t.Fatal(err)
	}
	results, _, err := Run(f, webPolicies(), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	return results
}

func TestWriteTrace(t *testing.T) {
	results := webResults(t)
	tests := []struct {
		name  string
		trace Trace
		want  string
	}{
		{
			name:  "a rule decides",
			trace: results[2].Trace,
			want: `node      node (role=web)
policies  lockdown, web
packet    Input tcp 192.0.2.1 -> 10.0.0.3:8080 new

#  STEP                  ACTION  RESULT
   established           Accept  no match on state: New, wants Established or Related
   loopback              Accept  no match on inInterface: none, wants lo
   neighbour-discovery   Accept  no match on protocol: tcp, wants ICMPv6
   failsafe              Accept  no match on ports: tcp:8080, wants one of tcp:22, tcp:6443, tcp:2379-2380, tcp:10250, udp:67-68
1  lockdown/no-alt-http  Reject  decides: reject

verdict: reject, decided by rule lockdown/no-alt-http
`,
		},
		{
			name:  "the default decides",
			trace: results[4].Trace,
			want: `node      web-1 (role=web)
policies  lockdown, web
packet    Input udp 192.0.2.1 -> 10.0.0.1:443 new

#  STEP                  ACTION  RESULT
   established           Accept  no match on state: New, wants Established or Related
   loopback              Accept  no match on inInterface: none, wants lo
   neighbour-discovery   Accept  no match on protocol: udp, wants ICMPv6
   failsafe              Accept  no match on ports: udp:443, wants one of tcp:22, tcp:6443, tcp:2379-2380, tcp:10250, udp:67-68
1  lockdown/no-alt-http  Reject  no match on protocol: udp, wants TCP
2  lockdown/no-ssh       Drop    no match on protocol: udp, wants TCP
3  web/https             Accept  no match on protocol: udp, wants TCP
   default               Drop    decides: drop

verdict: drop, decided by the Input chain's default action (Drop)
`,
		},
		{
			name:  "an implicit accept decides",
			trace: results[3].Trace,
			want: `node      web-1 (role=web)
policies  lockdown, web
packet    Input tcp 192.0.2.1 -> 10.0.0.1:22 new

#  STEP                 ACTION  RESULT
   established          Accept  no match on state: New, wants Established or Related
   loopback             Accept  no match on inInterface: none, wants lo
   neighbour-discovery  Accept  no match on protocol: tcp, wants ICMPv6
   failsafe             Accept  decides: accept; failsafe tcp:22

verdict: accept, decided by the implicit accept failsafe
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var plain, colored bytes.Buffer
			if err := WriteTrace(&plain, tt.trace, Style{}); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, plain.String()); diff != "" {
				t.Errorf("WriteTrace (-want +got):\n%s", diff)
			}
			if err := WriteTrace(&colored, tt.trace, Style{Color: true}); err != nil {
				t.Fatal(err)
			}
			if !sgr.Match(colored.Bytes()) {
				t.Errorf("no colour with Color:\n%s", colored.String())
			}
			// Colour changes nothing but the escapes: the columns stay
			// where they are.
			if diff := cmp.Diff(plain.String(), sgr.ReplaceAllString(colored.String(), "")); diff != "" {
				t.Errorf("coloured output without its escapes (-plain +colored):\n%s", diff)
			}
		})
	}
}

func TestWriteResults(t *testing.T) {
	results := webResults(t)[1:4]
	var out bytes.Buffer
	if err := WriteResults(&out, results, false, Style{}); err != nil {
		t.Fatal(err)
	}
	want := `RESULT  CASE                                       NODE        PACKET                                    WANT    GOT     DECIDED BY
PASS    https on db                                db-1        Input tcp 192.0.2.1 -> 10.0.0.2:443 new   accept  accept  default
PASS    alt http on a labelled node                {role=web}  Input tcp 192.0.2.1 -> 10.0.0.3:8080 new  reject  reject  lockdown/no-alt-http
FAIL    ssh, wrongly expected dropped by the rule  web-1       Input tcp 192.0.2.1 -> 10.0.0.1:22 new    drop    accept  failsafe (want lockdown/no-ssh)

--- FAIL: ssh, wrongly expected dropped by the rule
verdict accept, want drop
decided by failsafe, want lockdown/no-ssh
`
	got := out.String()
	if !strings.HasPrefix(got, want) {
		t.Errorf("WriteResults starts:\n%s\nwant:\n%s", got, want)
	}
	if !strings.HasSuffix(got, "verdict: accept, decided by the implicit accept failsafe\n\n3 cases: 2 passed, 1 failed\n") {
		t.Errorf("WriteResults does not end with the failed case's trace and the summary:\n%s", got)
	}
	if strings.Contains(got, "--- PASS") {
		t.Errorf("traces of passed cases without verbose:\n%s", got)
	}

	out.Reset()
	if err := WriteResults(&out, results, true, Style{}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n--- PASS: "); n != 2 {
		t.Errorf("verbose: %d traces of passed cases, want 2:\n%s", n, out.String())
	}
}
